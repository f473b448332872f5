"""Generation parameters declared once, and what is derived from them: infotext, presets."""
