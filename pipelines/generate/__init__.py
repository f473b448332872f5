"""Sampling: txt2img and img2img/inpaint on the loaded checkpoint, samplers, noise, previews."""
