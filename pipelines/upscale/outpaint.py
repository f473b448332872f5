"""Outpainting: the canvas grows left/right/up/down by N pixels, the new area becomes the inpainting mask.

    canvas, mask = extend(image, mask, left=64, right=0, up=0, down=64, mask_blur=4)

Used by img2img when a request sets `outpaint_left/right/up/down` (the API's A1111 script names
"poor man's outpainting" and "outpainting mk2" map onto them). The new area starts as the image's edge pixels
stretched outwards (so "original" masked content has plausible colours; "fill" and "latent noise" replace
them as in inpainting); the mask covers it and reaches `2 * mask_blur` pixels into the original along each
extended side (A1111's poor man's outpainting does the same), so after the mask blur the seam is a blend and,
beyond that band, the original pixels are kept exactly by inpainting's composite.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.errors import ParameterError

SIDES = ("left", "right", "up", "down")
FIELDS = tuple(f"outpaint_{s}" for s in SIDES)


def requested(req) -> bool:
    return any(getattr(req, f, 0) for f in FIELDS)


def _padding(req, width: int, height: int) -> dict[str, int]:
    """Pixels per side; the canvas is rounded up to a multiple of 8 on the extended sides (right/down first)."""
    pad = {s: int(getattr(req, f"outpaint_{s}", 0) or 0) for s in SIDES}
    for a, b, size in (("left", "right", width), ("up", "down", height)):
        extra = -(size + pad[a] + pad[b]) % 8
        if extra:
            pad[b if pad[b] or not pad[a] else a] += extra
    return pad


def extend(image: Image.Image, mask: Image.Image | None, *, left: int = 0, right: int = 0, up: int = 0,
           down: int = 0, mask_blur: int = 4) -> tuple[Image.Image, Image.Image]:
    """The grown canvas (edges stretched into the new area) and its mask (white = paint)."""
    arr = np.asarray(image.convert("RGB"))
    canvas = Image.fromarray(np.pad(arr, ((up, down), (left, right), (0, 0)), mode="edge"))
    band = 2 * max(0, int(mask_blur))
    out = np.zeros((canvas.height, canvas.width), dtype=np.uint8)
    if mask is not None:   # a mask drawn on the original keeps its meaning at its place in the canvas
        out[up:up + image.height, left:left + image.width] = np.asarray(mask.convert("L").resize(image.size))
    keep_x0 = left + (band if left else 0)
    keep_x1 = left + image.width - (band if right else 0)
    keep_y0 = up + (band if up else 0)
    keep_y1 = up + image.height - (band if down else 0)
    paint = np.ones_like(out, dtype=bool)
    paint[max(0, keep_y0):max(0, keep_y1), max(0, keep_x0):max(0, keep_x1)] = False
    out[paint] = 255
    return canvas, Image.fromarray(out, "L")


def apply(sources: list[Image.Image], mask: Image.Image | None, req, notices: list[str]):
    """(canvases, mask, request) for img2img: each init image grown as the request says, the request's size set
    to the canvas (no resize), the mask made. Every init image must have the first one's size."""
    first = sources[0]
    if any(s.size != first.size for s in sources):
        raise ParameterError("outpaint_left", "outpainting needs init images of one size")
    pad = _padding(req, first.width, first.height)
    width, height = first.width + pad["left"] + pad["right"], first.height + pad["up"] + pad["down"]
    asked = {s: int(getattr(req, f"outpaint_{s}", 0) or 0) for s in SIDES}
    if pad != asked:
        notices.append(f"outpainting: the canvas was grown to {width}x{height} (a multiple of 8)")
    canvases, new_mask = [], None
    for src in sources:
        canvas, new_mask = extend(src, mask, mask_blur=req.mask_blur, **pad)
        canvases.append(canvas)
    changes = dict(width=width, height=height, resize_mode=0, inpaint_full_res=False, inpainting_mask_invert=0)
    return canvases, new_mask, req.replace(**changes)


# ---------------------------------------------------------------------------------------------- A1111 scripts

def _directions(value) -> dict[str, bool]:
    names = [value] if isinstance(value, str) else list(value or [])
    unknown = [n for n in names if str(n).lower() not in SIDES]
    if unknown:
        raise ParameterError("script_args", f"unknown outpainting direction {unknown[0]!r}; use left, right, up, down")
    return {s: s in {str(n).lower() for n in names} for s in SIDES}


def _values(pixels, mask_blur, directions, inpainting_fill=None) -> dict:
    pixels = int(pixels)
    if not 8 <= pixels <= 1024:
        raise ParameterError("script_args", f"pixels to expand {pixels} is not between 8 and 1024")
    out = {f"outpaint_{s}": pixels if on else 0 for s, on in _directions(directions).items()}
    out["mask_blur"] = int(mask_blur)
    if inpainting_fill is not None:
        out["inpainting_fill"] = int(inpainting_fill)
    return out


def poor_mans_values(args: list, _mode: str) -> dict:
    """A1111's "Poor man's outpainting": [pixels, mask_blur, inpainting_fill, direction]."""
    pixels, mask_blur, fill, direction = (list(args) + [128, 4, 1, ["left", "right", "up", "down"]][len(args):])[:4]
    if isinstance(fill, str):
        fill = ("fill", "original", "latent noise", "latent nothing").index(fill)
    return _values(pixels, mask_blur, direction, fill)


def mk2_values(args: list, _mode: str) -> dict:
    """A1111's "Outpainting mk2": [info, pixels, mask_blur, direction, noise_q, color_variation]; its own noise
    fill is replaced by inpainting's "fill" masked content."""
    _info, pixels, mask_blur, direction = (list(args) + [None, 128, 8, ["left", "right", "up", "down"]][len(args):])[:4]
    return {**_values(pixels, mask_blur, direction), "inpainting_fill": 0}


def register_scripts(hooks) -> None:
    """A1111's outpainting script names for /sdapi/v1/img2img's script_name (built in, not an extension)."""
    hooks.add_script("Poor man's outpainting", poor_mans_values, "built-in", modes=("img2img",),
                     args=("Pixels to expand", "Mask blur", "Masked content", "Outpainting direction"))
    hooks.add_script("Outpainting mk2", mk2_values, "built-in", modes=("img2img",),
                     args=("info", "Pixels to expand", "Mask blur", "Outpainting direction", "Fall-off exponent",
                           "Color variation"))
