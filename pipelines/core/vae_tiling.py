"""When the VAE works in tiles: large images on a machine without the memory for one pass.

diffusers' AutoencoderKL/AutoencoderTiny encode and decode in overlapping, blended tiles when `use_tiling`
is set (and the image is larger than one tile). Tiles bound the memory of a pass but cost time: measured
on a 2-core CPU (bench/vae.py, SD1.5 VAE, bf16), a 1024x1024 decode takes 1.66 GB extra and 16.7 s in one
pass, 0.45 GB and 21.2 s in tiles (1.27x slower). So "auto" tiles only when one pass would not fit in the
free memory of the device, and on CUDA also retries in tiles after an out-of-memory error (ComfyUI's
behaviour); "on" always tiles, "off" never does.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import psutil

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")

# Peak extra memory of one untiled SD1.5 VAE decode, per output pixel and per byte of the VAE's dtype:
# 1.61-1.66 GB at 1024x1024 in bf16 (bench/vae.py) = 770-790 elements per pixel; the encoder peaks lower. SD1, SD2
# and SDXL VAEs share the 128/256/512/512 decoder, so one figure serves all; wider decoders scale with it.
_ELEMENTS_PER_PIXEL = 770
_REFERENCE_WIDTH = 512
# One pass may use this share of the free memory: the rest stays for the allocator's slack and the OS.
_FREE_SHARE = 0.5


def pass_bytes(vae, width: int, height: int, batch: int = 1) -> int:
    """Estimated peak extra memory of one untiled encode/decode of `batch` images of width x height."""
    widest = max(getattr(vae.config, "block_out_channels", [_REFERENCE_WIDTH]))
    return int(width * height * batch * _ELEMENTS_PER_PIXEL * vae.dtype.itemsize * widest / _REFERENCE_WIDTH)


def free_bytes(device: str) -> int:
    """Memory a VAE pass can use now on `device`: free RAM for the CPU (and MPS, which shares it);
    free VRAM plus what PyTorch's caching allocator holds unused on CUDA."""
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return psutil.virtual_memory().available


def wants_tiling(mode: str, vae, width: int, height: int, batch: int, device: str) -> bool:
    if mode != "auto":
        return mode == "on"
    # The pipelines encode/decode a batch one image at a time only under tiling/slicing, so the whole
    # batch's pass is what has to fit.
    need, free = pass_bytes(vae, width, height, batch), free_bytes(device)
    if need > _FREE_SHARE * free:
        log.info("VAE in tiles: one pass at %dx%d (batch %d) needs ~%.1f GB, %.1f GB free", width, height, batch,
                 need / 1e9, free / 1e9)
        return True
    return False


@contextmanager
def vae_tiling(vae, mode: str, width: int, height: int, batch: int, device: str) -> Iterator[bool]:
    """Sets the VAE's tiling (and one-image-at-a-time slicing) for one job; restores it after. Yields
    whether it tiles."""
    if vae is None or not hasattr(vae, "use_tiling"):
        yield False
        return
    before = vae.use_tiling, getattr(vae, "use_slicing", False)
    tile = wants_tiling(mode, vae, width, height, batch, device)
    vae.use_tiling = tile
    if hasattr(vae, "use_slicing"):
        vae.use_slicing = tile and batch > 1
    try:
        yield tile
    finally:
        vae.use_tiling = before[0]
        if hasattr(vae, "use_slicing"):
            vae.use_slicing = before[1]


def decode(vae, latents):
    """vae.decode(latents) -> decoded tensor; on a CUDA out-of-memory error, again in tiles."""
    import torch

    try:
        return vae.decode(latents, return_dict=False)[0]
    except torch.OutOfMemoryError:
        if getattr(vae, "use_tiling", True):
            raise
        log.warning("VAE decode ran out of memory at %s; decoding in tiles", tuple(latents.shape))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        slicing = getattr(vae, "use_slicing", False)
        vae.use_tiling, vae.use_slicing = True, True
        try:
            return vae.decode(latents, return_dict=False)[0]
        finally:
            vae.use_tiling, vae.use_slicing = False, slicing
