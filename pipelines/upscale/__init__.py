"""Upscalers (A1111's names and folders, models through spandrel, tiled) and the Extras postprocessing.

- `models`: finding upscaler files in models/ESRGAN, RealESRGAN, SwinIR, DAT; loading without pickled code.
- `tiles`: running a model in overlapping, blended tiles sized from free memory.
- `upscalers`: the named set (None, Lanczos, Nearest, latent modes, models) with A1111's upscale/resize rules.
- `extras`: the Extras tab / API: upscale by or to a size, a second upscaler blended in, `postprocessing` infotext.
"""
from __future__ import annotations

from .upscalers import LATENT_MODES, Upscalers, UpscalerEntry, dest_size, latent_resize


def from_paths(paths, policy) -> Upscalers:
    """The upscalers of a ModelPaths (this app's models/ and every --models-dir) on a DevicePolicy's device."""
    return Upscalers([paths.models_dir, *paths.extra_models_dirs], device=policy.device, dtype=policy.dtype)


__all__ = ["LATENT_MODES", "Upscalers", "UpscalerEntry", "dest_size", "from_paths", "latent_resize"]
