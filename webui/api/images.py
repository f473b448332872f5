"""Images in the /sdapi/v1 API: base64 in (bounded), base64 out with the infotext embedded.

Decoding never fetches URLs (no server-side requests on a client's behalf) and refuses images whose
header announces more than MAX_IMAGE_PIXELS before any pixel is decoded.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from pipelines.images import metadata as image_metadata
from pipelines.images.inputs import READABLE_FORMATS
from pipelines.core.errors import UserError

# 4096 x 4096: any init image or mask a generation can use (the output limit is 2048 x 2048), with room
# for photos that are resized first; about 64 MB once decoded as RGBA.
MAX_IMAGE_PIXELS = 4096 * 4096

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.+-]+)*,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


class ImageInputError(UserError):
    """A request image that cannot be used; `status` is the HTTP status to answer with."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def decode_base64(data: str, field: str = "image") -> bytes:
    """Base64 (optionally a `data:image/...;base64,` URL) → bytes; ImageInputError when it is not."""
    if not isinstance(data, str) or not data.strip():
        raise ImageInputError(field, "no image given: send the image as a base64 string")
    text = data.strip()
    if text[:8].lower().startswith(("http://", "https://")):
        raise ImageInputError(field, "image URLs are not fetched by this server; send the image itself as base64")
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end():]
    text = _WHITESPACE.sub("", text)
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ImageInputError(field, "not valid base64") from None
    if not raw:
        raise ImageInputError(field, "the base64 string decodes to nothing")
    return raw


def open_image(raw: bytes, field: str = "image", *, max_pixels: int = MAX_IMAGE_PIXELS,
               budget: int | None = None) -> Image.Image:
    """Bytes → a loaded PIL image (first frame); size checked from the header before decoding.

    `budget`: pixels left for this request's images together (413 when this one does not fit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=READABLE_FORMATS)
            w, h = image.size
            if w <= 0 or h <= 0:
                raise ImageInputError(field, f"the image has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise ImageInputError(field, f"the image is {w}x{h} ({w * h:,} pixels); the limit is "
                                             f"{max_pixels:,} pixels: resize it first", status=413)
            if budget is not None and w * h > budget:
                raise ImageInputError(field, f"this {w}x{h} image does not fit in what is left ({max(budget, 0):,} "
                                             f"pixels) of the pixel limit for all images of one request: send "
                                             f"fewer or smaller images", status=413)
            image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(field, "the image is too large to decode safely", status=413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        detail = "not a readable image (PNG, JPEG or WEBP expected)" if isinstance(err, UnidentifiedImageError) \
            else f"the image could not be decoded ({type(err).__name__}: {str(err)[:120]})"
        raise ImageInputError(field, detail) from None
    return image


def decode_image(data: str, field: str = "image", *, max_pixels: int = MAX_IMAGE_PIXELS,
                 budget: int | None = None) -> Image.Image:
    return open_image(decode_base64(data, field), field, max_pixels=max_pixels, budget=budget)


def encode_image(image: Image.Image, infotext: str | None = None, fmt: str = "png", quality: int = 95) -> str:
    """A PIL image → base64 (no data: prefix, as A1111 answers) in `fmt`, infotext embedded."""
    buf = io.BytesIO()
    fmt = image_metadata.normalize_format(fmt)
    if fmt in ("jpg", "jpeg") and max(image.size) > image_metadata.MAX_JPEG_SIDE:
        fmt = "png"
    try:
        image_metadata.write_image(image, buf, infotext, fmt, quality=quality)
    except ValueError:  # infotext too long for JPEG EXIF: PNG keeps it
        buf = io.BytesIO()
        image_metadata.write_image(image, buf, infotext, "png")
    return base64.b64encode(buf.getvalue()).decode("ascii")
