"""Seeds and initial noise, reproducible across devices (A1111's "RNG: CPU").

Noise is drawn on the CPU from one generator per image (seed + i), then moved to the device, so a
seed gives the same picture on any GPU or on the CPU. The same generators keep drawing the
sampler's per-step noise (ancestral/SDE samplers), as in A1111.
"""
from __future__ import annotations

import torch


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed blend (`modules/rng.py` slerp), so a variation seed gives A1111's noise.

    For one image's noise [C, H, W], A1111 normalises along dim 1 and interpolates each of those
    vectors spherically; nearly parallel noises fall back to a linear blend.
    """
    a_n = a / torch.norm(a, dim=1, keepdim=True)
    b_n = b / torch.norm(b, dim=1, keepdim=True)
    dot = (a_n * b_n).sum(1)
    if dot.mean() > 0.9995:
        return (1 - t) * a + t * b  # (A1111 swaps the weights here, a typo that only shows when a ~ b)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * a + (torch.sin(t * omega) / so).unsqueeze(1) * b


def image_noise(shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                subseed_strength: float = 0.0) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Noise of `shape` (batch first, one row per seed) and the per-image CPU generators to continue with."""
    rows, gens = [], []
    for i, seed in enumerate(seeds):
        if subseeds is not None and subseed_strength > 0:
            sub_gen = torch.Generator("cpu").manual_seed(int(subseeds[i]))
            sub = torch.randn(shape[1:], generator=sub_gen)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn(shape[1:], generator=gen)
        if subseeds is not None and subseed_strength > 0:
            noise = slerp(subseed_strength, noise, sub)
        rows.append(noise)
        gens.append(gen)
    return torch.stack(rows), gens
