"""Running an upscaler model over an image in overlapping tiles, blended where they overlap.

spandrel loads the models but runs them on whole images only, so the tiling is ours. The output is the
weighted sum of the tiles' outputs: inside a tile the weight is 1, across the overlap with a neighbour it
ramps linearly, so a seam becomes a cross-fade (A1111 also tiles with an overlap, but splits the image into a
grid of equal tiles; ours are at most `tile` pixels with a fixed step, the last one moved in to end at the
border, which keeps every tile full-sized). Tiles far enough from their borders see exactly what the whole
image run would see, so away from the seams the result equals an untiled run.

The tile size: A1111's `ESRGAN_tile` option in input pixels, made smaller when one tile would not fit in the
free memory of the device; 0 (our default) or no option: the whole image at once when it fits, else the
largest square that fits. Tiles cost time (bench/upscale.py, 4x of 512x512 with RealESRGAN_x4plus: 2.7x one pass on
a 2-core CPU, 2.1x on an H200) and save memory (1073 -> 239 MB on the CPU, 2149 -> 380 MB on the GPU).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_TILE = 192        # A1111's ESRGAN_tile default
DEFAULT_OVERLAP = 8       # A1111's ESRGAN_tile_overlap default
MIN_TILE = 32
# Peak extra memory of a model pass, in elements per output pixel (bench/upscale.py: a full-size RealESRGAN x4plus,
# 64 features and 23 blocks, 512x512 -> 2048x2048 in fp16 on an H200 peaked at 2149 MB = 256 per output pixel).
# Architectures with wider features (SwinIR-L, DAT, HAT) are heavier per pixel: the share of free memory below
# leaves room for that.
_ELEMENTS_PER_OUTPUT_PIXEL = 256
_FREE_SHARE = 0.25


def pass_bytes(width: int, height: int, scale: int, itemsize: int) -> int:
    return int(width * height * scale * scale * _ELEMENTS_PER_OUTPUT_PIXEL * itemsize)


def fitting_tile(scale: int, itemsize: int, free: int) -> int:
    """The largest square tile (input pixels) whose pass fits in the usable share of `free` bytes."""
    side = math.isqrt(max(1, int(free * _FREE_SHARE / (scale * scale * _ELEMENTS_PER_OUTPUT_PIXEL * itemsize))))
    return max(MIN_TILE, side // 8 * 8)


def choose_tile(requested: int | None, width: int, height: int, scale: int, itemsize: int, free: int) -> int:
    """Tile side in input pixels; 0 means one pass over the whole image.

    `requested` is A1111's ESRGAN_tile (0: no tiling), None: decide from memory alone."""
    fits = fitting_tile(scale, itemsize, free)
    whole_fits = pass_bytes(width, height, scale, itemsize) <= free * _FREE_SHARE
    if requested is None or requested <= 0:
        if whole_fits:
            return 0
        log.info("upscale in %dpx tiles: the whole %dx%d image does not fit in %.1f GB free", fits, width, height,
                 free / 1e9)
        return fits
    return min(int(requested), fits)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(length: int, fade_in: int, fade_out: int) -> np.ndarray:
    """1 in the middle, rising over the first `fade_in` and falling over the last `fade_out` samples."""
    w = np.ones(length, dtype=np.float32)
    if fade_in > 0:
        w[:fade_in] = np.minimum(w[:fade_in], (np.arange(fade_in, dtype=np.float32) + 0.5) / fade_in)
    if fade_out > 0:
        w[length - fade_out:] = np.minimum(w[length - fade_out:], (fade_out - np.arange(fade_out) - 0.5) / fade_out)
    return w


def to_tensor(image: Image.Image, dtype: torch.dtype, device: str) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)


def to_image(tensor: torch.Tensor) -> Image.Image:
    arr = tensor.squeeze(0).float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.round(arr * 255.0).astype(np.uint8))


@torch.inference_mode()
def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
              overlap: int, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`model` over `image` (1, C, H, W in [0, 1]) in tiles of `tile` input pixels overlapping by `overlap`;
    `tile` 0 runs the whole image at once. `on_tile(done, total)` after each tile (progress, interrupt)."""
    _, _, height, width = image.shape
    if tile <= 0 or (width <= tile and height <= tile):
        out = model(image)
        if on_tile:
            on_tile(1, 1)
        return out
    overlap = max(0, min(overlap, tile // 2))
    ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
    out = torch.zeros((1, 3, height * scale, width * scale), dtype=torch.float32, device=image.device)
    weight = torch.zeros((1, 1, height * scale, width * scale), dtype=torch.float32, device=image.device)
    total, done = len(ys) * len(xs), 0
    for iy, y in enumerate(ys):
        th = min(tile, height - y)
        for ix, x in enumerate(xs):
            tw = min(tile, width - x)
            piece = model(image[:, :, y:y + th, x:x + tw]).float()
            # fade over the part shared with the previous / next tile (none at the image borders)
            fy = _ramp(th * scale, (ys[iy - 1] + tile - y) * scale if iy else 0,
                       (y + th - ys[iy + 1]) * scale if iy + 1 < len(ys) else 0)
            fx = _ramp(tw * scale, (xs[ix - 1] + tile - x) * scale if ix else 0,
                       (x + tw - xs[ix + 1]) * scale if ix + 1 < len(xs) else 0)
            w = torch.from_numpy(np.outer(fy, fx)).to(out.device)[None, None]
            region = (slice(None), slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[region] += piece * w
            weight[region] += w
            done += 1
            if on_tile:
                on_tile(done, total)
    return (out / weight.clamp_min(1e-8)).to(image.dtype)
