"""Prompt text to conditioning: A1111 syntax, styles, LoRA and embeddings, the text encoders' calls."""
