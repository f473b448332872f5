"""Input images for img2img and inpainting: decoding, validation, A1111's resize modes and mask processing.

Everything here is plain Pillow/numpy work on the CPU (no torch, no model): the engine
(`pipelines.generate.img2img`) calls `load_image` / `load_mask` on what the user uploaded, then `prepare` to get
exactly what the sampler sees, and `composite` to put the result back over the original.

Behaviour follows AUTOMATIC1111 (modules/processing.py, masking.py, images.py):

- Init images are flattened onto white (alpha), turned RGB, EXIF-rotated; animated images give their
  first frame; 16-bit greyscale is scaled (not clipped) to 8 bits; CMYK/palette/LA convert correctly.
- Masks: white = repaint. An RGBA mask whose alpha is not fully opaque uses its alpha (a painted layer);
  otherwise its luminance. Then invert, Gaussian blur (A1111's kernel size), and either
  "whole picture" (mask resized like the image; the overlay mask is doubled so the blurred edge still
  reaches full strength inside the mask) or "only masked" (crop around the mask bbox + padding,
  grown to the target aspect ratio, worked on at full width x height, pasted back).
- Final composite: where the overlay mask is 0 the original pixels are copied exactly.
- Huge inputs are refused above `max_input_pixels()` with a clear message, before decoding; Pillow's
  decompression-bomb guard is kept on (`Image.MAX_IMAGE_PIXELS` follows the same limit) and its
  error becomes a `UserError`.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from ..core.errors import UserError

# The formats uploads may be in. Pillow would open many more (EPS hands the file to Ghostscript where it
# is installed; others are rarely audited decoders), so every uploaded image is opened with this list.
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
from ..params.declarations import MASKED_CONTENT, RESIZE_MODES

__all__ = [
    "RESIZE_MODES", "MASKED_CONTENT", "ImageSource", "PreparedImage",
    "max_input_pixels", "set_max_input_pixels", "load_image", "load_mask", "to_rgb",
    "resize_image", "blur_mask", "crop_region", "expand_crop_region", "fill_masked",
    "prepare", "composite", "merge_layers", "sketch_to_init", "inpaint_sketch", "strokes_mask", "size_for_scale",
]


DEFAULT_MAX_INPUT_PIXELS = 100_000_000   # 100 MP: a 12000x8000 photo passes; far larger is refused
BACKGROUND = (255, 255, 255)             # A1111's img2img_background_color: transparency becomes white
# The VAE encodes the whole image in "latent upscale" mode; larger inputs are scaled down to this first.
LATENT_UPSCALE_MAX_PIXELS = 2048 * 2048

ImageSource = Union[Image.Image, np.ndarray, bytes, bytearray, str, os.PathLike, IO[bytes]]

_max_pixels = DEFAULT_MAX_INPUT_PIXELS


def max_input_pixels() -> int:
    return _max_pixels


def set_max_input_pixels(pixels: int) -> None:
    """Configure the largest accepted input (width x height); Pillow's bomb guard follows it."""
    global _max_pixels
    if int(pixels) < 64 * 64:
        raise ValueError(f"max input pixels {pixels} is too small")
    _max_pixels = int(pixels)
    Image.MAX_IMAGE_PIXELS = _max_pixels


# ---------------------------------------------------------------------------------------- decoding

def _describe(source: Any, what: str) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"{what} {Path(source).name!r}"
    name = getattr(source, "name", None)
    return f"{what} {Path(name).name!r}" if isinstance(name, str) else what


def _too_large(what: str, size: tuple[int, int], limit: int) -> UserError:
    w, h = size
    return UserError(f"{what} is {w}x{h} ({w * h / 1e6:.1f} MP), above the {limit / 1e6:g} MP limit for input "
                     f"images; scale it down first (or raise the limit in the settings)")


def _open(source: ImageSource, what: str, limit: int) -> Image.Image:
    """Open (header only, not decoded) and check the size; Pillow errors become UserErrors."""
    if isinstance(source, np.ndarray):
        try:
            source = Image.fromarray(source)
        except (TypeError, ValueError) as err:
            raise UserError(f"{what}: an array of shape {source.shape} is not an image ({err})") from None
    if isinstance(source, Image.Image):
        if source.width * source.height > limit:
            raise _too_large(what, source.size, limit)
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise UserError(f"{what} is empty (0 bytes): upload a PNG, JPEG or WebP image")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not Path(source).is_file():
            raise UserError(f"{what}: no such file")
    # The bomb guard must be on, at this limit: Pillow raises above twice it, we refuse above it. A one-off
    # limit (max_pixels=) is put back afterwards; the configured one stays.
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
    try:
        with warnings.catch_warnings():   # between the limit and twice it: refused below, with our message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=READABLE_FORMATS)
    except Image.DecompressionBombError:
        raise UserError(f"{what} declares more than {2 * limit / 1e6:g} MP of pixels (a decompression bomb or a "
                        f"far too large image); it was not decoded") from None
    except UnidentifiedImageError:
        raise UserError(f"{what} is not an image this app can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF "
                        f"file") from None
    except OSError as err:
        raise UserError(f"{what} could not be read: {err}") from None
    finally:
        if limit != _max_pixels:
            Image.MAX_IMAGE_PIXELS = previous
    if image.width * image.height > limit:
        image.close()
        raise _too_large(what, image.size, limit)
    return image


def _decode(image: Image.Image, what: str, notices: list[str] | None) -> Image.Image:
    """First frame, EXIF orientation applied, pixels loaded (truncated files fail here)."""
    try:
        frames = getattr(image, "n_frames", 1)
        if getattr(image, "is_animated", False) or frames > 1:
            image.seek(0)
            if notices is not None:
                notices.append(f"{what} is animated ({frames} frames): the first frame is used")
        image.load()
        rotated = ImageOps.exif_transpose(image)
        if rotated is not None and rotated is not image:
            image = rotated
        image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"{what} could not be decoded ({err}); the file may be truncated or damaged") from None
    return image


def _high_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale → 8-bit "L", scaled rather than clipped."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        top = arr.max() if arr.size else 0
        arr = arr * 255.0 if top <= 1.0 else arr
    else:
        arr = arr.astype(np.float64)
        if image.mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _with_alpha(image: Image.Image) -> Image.Image:
    """Any mode → "RGBA" when the image carries transparency, else "RGB" (or "L" for greyscale)."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _high_bit_to_l(image)
    if mode == "P":
        return image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBa", "RGBA"):
        return image.convert("RGBA")
    if mode in ("L", "RGB"):
        if "transparency" in image.info:  # tRNS colour key in an L/RGB PNG
            return image.convert("RGBA")
        return image
    try:
        return image.convert("RGB")   # CMYK, YCbCr, 1, LAB, HSV...
    except (ValueError, OSError) as err:
        raise UserError(f"images in colour mode {mode} are not supported ({err}); save it as RGB") from None


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """An RGB copy, transparency flattened onto `background` (A1111's images.flatten)."""
    image = _with_alpha(image)
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, background)
        flat.paste(image, mask=image.getchannel("A"))
        return flat
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


def load_image(source: ImageSource, *, what: str = "init image", notices: list[str] | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Decode an uploaded image (PIL image, HxWxC uint8 array, bytes, path or binary file) into RGB.

    Raises UserError for non-images, damaged files and images above the pixel limit.
    Notices (e.g. "animated: first frame used") are appended to `notices`.
    """
    limit = int(max_pixels or _max_pixels)
    label = _describe(source, what)
    image = _decode(_open(source, label, limit), label, notices)
    return to_rgb(image)


def load_mask(source: ImageSource, *, what: str = "mask", notices: list[str] | None = None,
              max_pixels: int | None = None) -> Image.Image:
    """Decode a mask into "L" (white = repaint), A1111's create_binary_mask semantics:
    an RGBA mask whose alpha is not fully opaque → its alpha, thresholded at 128; otherwise its luminance."""
    limit = int(max_pixels or _max_pixels)
    label = _describe(source, what)
    image = _with_alpha(_decode(_open(source, label, limit), label, notices))
    if image.mode == "RGBA":
        alpha = image.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


# ---------------------------------------------------------------------------------------- resize modes

def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image.copy()
    return image.resize((max(1, width), max(1, height)), Image.LANCZOS)


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes to exactly width x height: 0 just resize (stretch), 1 crop and resize (cover,
    centre crop), 2 resize and fill (fit, the empty bands filled with the stretched edge rows/columns).
    Mode 3 (latent upscale) resizes pixels like 0; the engine scales the latents instead."""
    if mode in (0, 3):
        return _resize(image, width, height)
    target, source = width / height, image.width / image.height
    if mode == 1:   # cover
        if target > source:
            w, h = width, max(1, round(image.height * width / image.width))
        else:
            w, h = max(1, round(image.width * height / image.height)), height
        resized = _resize(image, w, h)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode == 2:   # fit + fill
        if target < source:
            w, h = width, max(1, round(image.height * width / image.width))
        else:
            w, h = max(1, round(image.width * height / image.height)), height
        resized = _resize(image, w, h)
        out = Image.new(image.mode, (width, height))
        x, y = (width - w) // 2, (height - h) // 2
        out.paste(resized, (x, y))
        if h < height:      # bands above and below: the first/last row stretched
            if y > 0:
                out.paste(resized.crop((0, 0, w, 1)).resize((width, y)), (0, 0))
            bottom = height - (y + h)
            if bottom > 0:
                out.paste(resized.crop((0, h - 1, w, h)).resize((width, bottom)), (0, y + h))
        elif w < width:     # bands left and right: the first/last column stretched
            if x > 0:
                out.paste(resized.crop((0, 0, 1, h)).resize((x, height)), (0, 0))
            right = width - (x + w)
            if right > 0:
                out.paste(resized.crop((w - 1, 0, w, h)).resize((right, height)), (x + w, 0))
        return out
    raise UserError(f"resize_mode {mode} is not one of 0-3 ({', '.join(RESIZE_MODES)})")


def size_for_scale(image: Image.Image, scale: float) -> tuple[int, int]:
    """A1111's "Resize by" tab: the image size times `scale`, as multiples of 8 (at least 64)."""
    return tuple(max(64, int(round(v * scale / 8)) * 8) for v in image.size)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- masks

def _gaussian_kernel(sigma: float) -> np.ndarray:
    size = 2 * int(2.5 * sigma + 0.5) + 1            # A1111's kernel size for cv2.GaussianBlur
    x = np.arange(size, dtype=np.float64) - size // 2
    k = np.exp(-(x ** 2) / (2 * sigma * sigma))
    return k / k.sum()


def _blur_axis(arr: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    r = len(kernel) // 2
    n = arr.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    mode = "reflect" if n > r else "symmetric"        # reflect = OpenCV's default BORDER_REFLECT_101
    padded = np.pad(arr, pad, mode=mode) if n > 1 else np.pad(arr, pad, mode="edge")
    out = np.zeros_like(arr, dtype=np.float64)
    for i, w in enumerate(kernel):
        out += w * (padded[i:i + n, :] if axis == 0 else padded[:, i:i + n])
    return out


def blur_mask(mask: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur of an "L" mask (sigma = radius, A1111's kernel); only the mask's neighbourhood is
    computed, so a small mask on a huge image stays cheap."""
    if radius <= 0:
        return mask.copy()
    box = mask.getbbox()
    if box is None:
        return mask.copy()
    kernel = _gaussian_kernel(float(radius))
    r = len(kernel) // 2
    x1, y1 = max(0, box[0] - 2 * r), max(0, box[1] - 2 * r)
    x2, y2 = min(mask.width, box[2] + 2 * r), min(mask.height, box[3] + 2 * r)
    arr = np.asarray(mask.crop((x1, y1, x2, y2)), dtype=np.float64)
    arr = _blur_axis(_blur_axis(arr, kernel, 1), kernel, 0)
    out = Image.new("L", mask.size, 0)
    out.paste(Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L"), (x1, y1))
    return out


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """Bounding box of the non-zero mask pixels grown by `padding`, inside the image; None if empty."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(0, x1 - padding), max(0, y1 - padding), min(mask.width, x2 + padding), min(mask.height, y2 + padding)


def _grow(a: int, b: int, size: int, limit: int) -> tuple[int, int]:
    """Grow [a, b) to `size` around its centre, shifted to stay inside [0, limit)."""
    size = min(size, limit)
    a -= (size - (b - a)) // 2
    b = a + size
    if b > limit:
        a, b = a - (b - limit), limit
    if a < 0:
        a, b = 0, b - a
    return a, min(b, limit)


def expand_crop_region(region: tuple[int, int, int, int], width: int, height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """Grow the crop so its aspect ratio is width:height (as far as the image allows)."""
    x1, y1, x2, y2 = region
    cw, ch = x2 - x1, y2 - y1
    if cw / ch > width / height:
        y1, y2 = _grow(y1, y2, round(cw * height / width), image_height)
    else:
        x1, x2 = _grow(x1, x2, round(ch * width / height), image_width)
    return x1, y1, x2, y2


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area painted with colours diffused in from its
    surroundings (blurred copies of the unmasked pixels, coarse to fine)."""
    keep = ImageOps.invert(mask.convert("L"))
    premultiplied = Image.new("RGBa", image.size)
    premultiplied.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, times in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA") if radius else \
            premultiplied.convert("RGBA")
        for _ in range(times):
            out.alpha_composite(layer)
    return out.convert("RGB")


# ---------------------------------------------------------------------------------------- prepare / composite

@dataclass
class PreparedImage:
    """One init image made ready for the sampler, and what is needed to put the result back."""

    init: Image.Image                 # RGB, what the VAE encodes (width x height, or native size for mode 3)
    mask: Image.Image | None          # "L", width x height: the sampler's mask (white = repaint); None: img2img
    original: Image.Image             # RGB: the result is composited onto this (the output's size)
    overlay: Image.Image | None       # "L", original's size: 255 = generated pixel, 0 = original pixel kept
    paste_to: tuple[int, int, int, int] | None = None   # "only masked": x, y, w, h of the crop in `original`
    latent_upscale: bool = False      # resize mode 3: the engine scales the latents to width x height
    control: Image.Image | None = None  # RGB width x height: what is worked on, before masked-content fill
                                        # (the image a ControlNet unit without its own image sees)

    def __post_init__(self):
        if self.control is None:
            self.control = self.init if self.paste_to is not None or self.mask is None else self.original


def prepare(image: Image.Image, mask: Image.Image | None, *, width: int, height: int, resize_mode: int = 0,
            mask_blur: int = 4, inpainting_fill: int = 1, inpaint_full_res: bool = False,
            inpaint_full_res_padding: int = 32, inpainting_mask_invert: int = 0,
            notices: list[str] | None = None) -> PreparedImage:
    """Apply resize mode and mask processing to one RGB image (A1111's StableDiffusionProcessingImg2Img.init)."""
    notices = notices if notices is not None else []
    if mask is not None and mask.size != image.size:
        notices.append(f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}: "
                       f"the mask was resized to the image")
        mask = mask.resize(image.size, Image.LANCZOS)
    if mask is not None:
        mask = mask.convert("L")
        if inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        mask = blur_mask(mask, mask_blur)
        if inpaint_full_res:
            region = crop_region(mask, inpaint_full_res_padding)
            if region is None:
                notices.append('"Only masked" needs a mask with something in it; the mask is empty, so the whole '
                               "picture was processed as img2img without a mask")
                mask = None
            else:
                x1, y1, x2, y2 = expand_crop_region(region, width, height, image.width, image.height)
                work_mask = resize_image(2, mask.crop((x1, y1, x2, y2)), width, height)
                crop = resize_image(2, image.crop((x1, y1, x2, y2)), width, height)
                init = fill_masked(crop, work_mask) if inpainting_fill == 0 else crop
                return PreparedImage(init, work_mask, image, mask, (x1, y1, x2 - x1, y2 - y1), control=crop)
        elif mask.getbbox() is None:
            notices.append("the mask is empty (all black): nothing is repainted")

    pixel_mode = 0 if resize_mode == 3 else resize_mode
    original = resize_image(pixel_mode, image, width, height)
    if resize_mode == 3:
        init = _latent_upscale_source(image, notices)
    else:
        init = original
    if mask is None:
        return PreparedImage(init, None, original, None, None, resize_mode == 3, control=original)
    work_mask = resize_image(pixel_mode, mask, width, height)
    overlay = Image.fromarray(np.clip(np.asarray(work_mask, dtype=np.uint16) * 2, 0, 255).astype(np.uint8), "L")
    if inpainting_fill == 0:
        fill_mask = work_mask if init.size == work_mask.size else work_mask.resize(init.size, Image.LANCZOS)
        init = fill_masked(init, fill_mask)
    return PreparedImage(init, work_mask, original, overlay, None, resize_mode == 3, control=original)


def _latent_upscale_source(image: Image.Image, notices: list[str]) -> Image.Image:
    """Mode 3 encodes the image at its own size (a multiple of 8), scaled down when very large."""
    w, h = image.size
    if w * h > LATENT_UPSCALE_MAX_PIXELS:
        scale = (LATENT_UPSCALE_MAX_PIXELS / (w * h)) ** 0.5
        w, h = int(w * scale), int(h * scale)
        notices.append(f"latent upscale: the {image.width}x{image.height} image was first scaled to about {w}x{h}")
    w, h = max(8, w - w % 8), max(8, h - h % 8)
    return _resize(image, w, h)


def composite(generated: Image.Image, prepared: PreparedImage) -> Image.Image:
    """The final image: for inpainting, the generated pixels where the overlay mask is set, pasted back
    into place for "only masked", and the original pixels, exactly, where the overlay mask is 0."""
    generated = generated.convert("RGB")
    if prepared.overlay is None:
        return generated
    original = prepared.original
    if prepared.paste_to is not None:
        x, y, w, h = prepared.paste_to
        base = original.copy()
        base.paste(resize_image(1, generated, w, h), (x, y))
        generated = base
    elif generated.size != original.size:
        generated = _resize(generated, *original.size)
    out = original.copy()
    box = prepared.overlay.getbbox()
    if box is None:
        return out
    a = np.asarray(prepared.overlay.crop(box), dtype=np.float32)[..., None] / 255.0
    o = np.asarray(original.crop(box), dtype=np.float32)
    g = np.asarray(generated.crop(box), dtype=np.float32)
    blended = np.clip(np.rint(o + (g - o) * a), 0, 255).astype(np.uint8)
    out.paste(Image.fromarray(blended, "RGB"), box[:2])
    return out


# ---------------------------------------------------------------------------------------- sketch helpers

def merge_layers(layers: Iterable[Image.Image | None], size: tuple[int, int] | None = None) -> Image.Image | None:
    """Alpha-composite painted layers (bottom first) into one RGBA layer of `size` (the first layer's)."""
    merged: Image.Image | None = None
    for layer in layers:
        if layer is None:
            continue
        layer = layer.convert("RGBA")
        if merged is None:
            merged = Image.new("RGBA", size or layer.size, (0, 0, 0, 0))
        if layer.size != merged.size:
            layer = layer.resize(merged.size, Image.LANCZOS)
        merged.alpha_composite(layer)
    return merged


def _layer(strokes: Image.Image | Sequence[Image.Image | None] | None, size: tuple[int, int] | None
           ) -> Image.Image | None:
    """One RGBA strokes layer from a layer or a list of them (None when nothing was given)."""
    return merge_layers(strokes if isinstance(strokes, (list, tuple)) else [strokes], size)


def _strokes(image: Image.Image, strokes) -> Image.Image:
    return _layer(strokes, image.size) or Image.new("RGBA", image.size, (0, 0, 0, 0))


def strokes_mask(strokes: Image.Image | Sequence[Image.Image | None], size: tuple[int, int] | None = None,
                 ) -> Image.Image:
    """White where anything was painted (alpha > 0): the mask of an inpaint brush layer (or layers), scaled
    to `size` when given."""
    layer = _layer(strokes, size)
    if layer is None:
        raise UserError("no painted layer given: paint the area to repaint")
    return layer.getchannel("A").point(lambda v: 255 if v > 0 else 0)


def sketch_to_init(image: Image.Image, strokes: Image.Image | Sequence[Image.Image | None]) -> Image.Image:
    """img2img "Sketch": the painted strokes (RGBA layer or layers) composited into the init image."""
    base = to_rgb(image).convert("RGBA")
    base.alpha_composite(_strokes(base, strokes))
    return base.convert("RGB")


def inpaint_sketch(image: Image.Image, strokes: Image.Image | Sequence[Image.Image | None], *,
                   mask_blur: int = 0) -> tuple[Image.Image, Image.Image]:
    """"Inpaint sketch": (init, mask) = strokes composited into the image, and white where painted.

    With `mask_blur` the stroke edges are softened into the image the way A1111 does (the blurred sketch
    blended over the original with the blurred mask)."""
    original = to_rgb(image)
    layer = _strokes(original, strokes)
    init = sketch_to_init(original, [layer])
    mask = layer.getchannel("A").point(lambda v: 255 if v > 0 else 0)
    if mask_blur > 0:
        blur = ImageFilter.GaussianBlur(mask_blur)
        init = Image.composite(init.filter(blur), original, mask.filter(blur))
    return init, mask
