"""Cheap live previews: latents → RGB with a linear map, no extra weights, no VAE pass.

The 4x3 factors are the widely used least-squares fits of each latent space to RGB (the same ones
A1111's "Approx cheap" and ComfyUI's latent previews use); they are data, not code to import.
"""
from __future__ import annotations

import torch

_SD1_FACTORS = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
]
_SDXL_FACTORS = [
    [0.3448, 0.4168, 0.4395],
    [-0.1953, -0.0290, 0.0250],
    [0.1074, 0.0886, -0.0163],
    [-0.3730, -0.2499, -0.2088],
]


def approx_rgb(latents: torch.Tensor, sdxl: bool = False):
    """First image of a latent batch as a small PIL image (1/8 of the output size)."""
    from PIL import Image

    factors = torch.tensor(_SDXL_FACTORS if sdxl else _SD1_FACTORS, dtype=torch.float32)
    lat = latents[0].detach().float().cpu()
    if lat.shape[0] != 4:
        lat = lat[:4]
    rgb = torch.einsum("chw,cr->hwr", lat, factors)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(rgb, "RGB")
