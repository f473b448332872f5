"""Embedding and reading the infotext in image files, the way AUTOMATIC1111 does.

* PNG: a text chunk named ``parameters`` (tEXt when the text is latin-1, iTXt otherwise).
* JPEG and WEBP: EXIF ``UserComment`` in the "unicode" form A1111 writes
  (``piexif.helper.UserComment.dump(text, encoding="unicode")``: ``UNICODE\\0`` + UTF-16-BE).

Reading also understands what A1111 falls back to: a GIF/JPEG ``comment`` and NovelAI PNGs
(``Software: NovelAI`` with a JSON ``Comment``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import IO, Any, Union

import piexif
import piexif.helper
from PIL import Image, PngImagePlugin

from ..params.infotext import build_infotext

__all__ = [
    "FORMATS",
    "PIL_FORMATS",
    "MAX_JPEG_SIDE",
    "MAX_WEBP_SIDE",
    "normalize_format",
    "read_infotext",
    "write_image",
]

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]

# Accepted format names (also the file extensions) -> Pillow format.
PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
FORMATS = tuple(PIL_FORMATS)
MAX_JPEG_SIDE = 65535
MAX_WEBP_SIDE = 16383
# A JPEG APP1 segment holds at most 65533 bytes of EXIF.
_MAX_JPEG_EXIF = 65533
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}

# NovelAI sampler names -> A1111 sampler names (A1111 maps them through its sampler aliases).
_NOVELAI_SAMPLERS = {
    "k_euler_ancestral": "Euler a",
    "k_euler": "Euler",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "k_dpm_2": "DPM2",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpm_fast": "DPM fast",
    "k_dpm_adaptive": "DPM adaptive",
    "ddim": "DDIM",
    "plms": "PLMS",
}


def normalize_format(fmt: str) -> str:
    """Lower-case format name, with a leading dot removed; ``ValueError`` when unsupported."""
    name = str(fmt or "").strip().lower().lstrip(".")
    if name not in PIL_FORMATS:
        raise ValueError(
            f"unsupported image format {fmt!r}: choose one of {', '.join(FORMATS)}"
        )
    return name


def _exif_bytes(infotext: str) -> bytes:
    comment = piexif.helper.UserComment.dump(infotext, encoding="unicode")
    return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})


def write_image(
    image: Image.Image,
    path: PathOrFile,
    infotext: str | None,
    fmt: str,
    quality: int = 95,
) -> None:
    """Write ``image`` to ``path`` (a path or a binary file object) in ``fmt`` with the
    infotext embedded. ``infotext`` ``None`` or empty writes no metadata.

    JPEG is written as RGB; WEBP keeps an alpha channel. This writes directly to ``path``:
    atomic, never-overwriting saving is :mod:`pipelines.images.outputs`' job.
    """
    name = normalize_format(fmt)
    pil_format = PIL_FORMATS[name]
    text = infotext or ""

    if pil_format == "PNG":
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        pnginfo = PngImagePlugin.PngInfo()
        if text:
            try:
                text.encode("latin-1")
            except UnicodeEncodeError:
                pnginfo.add_itxt("parameters", text)
            else:
                pnginfo.add_text("parameters", text)
        image.save(path, format="PNG", pnginfo=pnginfo)
        return

    kwargs: dict[str, Any] = {"quality": int(quality)}
    if text:
        exif = _exif_bytes(text)
        if pil_format == "JPEG" and len(exif) > _MAX_JPEG_EXIF:
            raise ValueError(
                f"the generation parameters ({len(text)} characters) are too long for JPEG EXIF "
                f"(at most about {_MAX_JPEG_EXIF // 2 - 40} characters): save as PNG or WEBP"
            )
        kwargs["exif"] = exif

    if pil_format == "JPEG":
        if image.mode != "RGB":
            image = image.convert("RGB")
    else:  # WEBP
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.save(path, format=pil_format, **kwargs)


def _decode_user_comment(data: bytes) -> str:
    """Decode an EXIF UserComment: piexif's decoder, with fallbacks for UTF-16-LE written
    under the UNICODE prefix by some tools, and for undefined/unknown prefixes."""
    prefix, body = data[:8], data[8:]
    if prefix == piexif.helper.UserComment._UNICODE_PREFIX:
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", errors="replace")
        # Count zero bytes at even (high byte in BE) and odd (high byte in LE) offsets:
        # infotexts are mostly ASCII, so the high bytes are the zero ones.
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        if odd_zeros > even_zeros:
            return body[: len(body) // 2 * 2].decode("utf-16-le", errors="replace")
    try:
        return piexif.helper.UserComment.load(data)
    except ValueError:
        raw = body if len(data) >= 8 else data
        return raw.decode("utf-8", errors="replace").strip("\x00")


def _load_exif(data: bytes) -> dict | None:
    # piexif.load treats bytes it does not recognise as a file name: only hand it EXIF.
    if not (data[:4] == b"Exif" or data[:2] in (b"II", b"MM")):
        return None
    try:
        return piexif.load(data)
    except Exception:  # noqa: BLE001 - corrupt EXIF is common; the rest still reads
        return None


def _exif_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00").strip() or None
    if isinstance(value, str):
        return value.strip("\x00").strip() or None
    return None


def _describe(value: Any) -> str:
    """A string for the raw metadata view."""
    if isinstance(value, str):
        return str(value)  # PngImagePlugin.iTXt -> plain str
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if len(raw) <= 4096:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None and all(c.isprintable() or c in "\n\r\t" for c in text):
                return text
        return f"<{len(raw)} bytes>"
    return str(value)


def _novelai_infotext(items: dict[str, Any], size: tuple[int, int]) -> str | None:
    try:
        info = json.loads(items["Comment"])
        sampler = _NOVELAI_SAMPLERS.get(info.get("sampler"), "Euler a")
        return build_infotext(
            str(items.get("Description", "")),
            str(info.get("uc", "")),
            {
                "Steps": info["steps"],
                "Sampler": sampler,
                "CFG scale": info["scale"],
                "Seed": info["seed"],
                "Size": f"{size[0]}x{size[1]}",
                "Clip skip": 2,
                "ENSD": 31337,
            },
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _read_from_image(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    raw: dict[str, Any] = dict(image.info or {})
    if image.format == "PNG" and "parameters" not in raw:
        try:
            # Text chunks after the image data are only read once the image is loaded.
            raw.update(image.text)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - truncated files: keep what was read
            pass

    geninfo: str | None = None
    params = raw.get("parameters")
    if isinstance(params, str) and params:
        geninfo = str(params)
    elif isinstance(params, bytes) and params:
        geninfo = params.decode("utf-8", errors="replace")

    extra: dict[str, str] = {}
    exif_data = raw.get("exif")
    if isinstance(exif_data, (bytes, bytearray)) and exif_data:
        exif = _load_exif(bytes(exif_data)) or {}
        comment = exif.get("Exif", {}).get(piexif.ExifIFD.UserComment)
        if isinstance(comment, bytes) and comment:
            text = _decode_user_comment(comment).strip("\x00")
            if text:
                extra["exif comment"] = text
                if geninfo is None:
                    geninfo = text
        for label, ifd, tag in (
            ("exif ImageDescription", "0th", piexif.ImageIFD.ImageDescription),
            ("exif Software", "0th", piexif.ImageIFD.Software),
        ):
            value = _exif_text(exif.get(ifd, {}).get(tag))
            if value:
                extra[label] = value

    if geninfo is None and raw.get("comment"):
        comment = raw["comment"]
        if isinstance(comment, (bytes, bytearray)):
            comment = bytes(comment).decode("utf-8", errors="replace")
        geninfo = str(comment)

    if geninfo is None and raw.get("Software") == "NovelAI" and "Comment" in raw:
        geninfo = _novelai_infotext(raw, image.size)

    items = {str(k): _describe(v) for k, v in raw.items()}
    items.update(extra)
    return geninfo, items


def read_infotext(
    image_or_path: Image.Image | str | os.PathLike[str] | bytes | IO[bytes],
) -> tuple[str | None, dict[str, str]]:
    """Return ``(parameters text or None, raw metadata)`` for an image, a path, the file's
    bytes or a binary file object.

    The raw metadata maps every item Pillow read (``parameters`` included) to a string:
    bytes are decoded when they are short printable UTF-8 and summarised as
    ``<N bytes>`` otherwise; a decoded EXIF UserComment is added as ``exif comment``.

    The ``parameters`` PNG chunk wins over an EXIF UserComment (A1111 prefers the EXIF
    comment when both exist; files with both are rare and not written by A1111).
    """
    if isinstance(image_or_path, Image.Image):
        return _read_from_image(image_or_path)
    if isinstance(image_or_path, (bytes, bytearray)):
        image_or_path = io.BytesIO(bytes(image_or_path))
    if isinstance(image_or_path, (str, os.PathLike)):
        image_or_path = Path(image_or_path)
    with Image.open(image_or_path) as image:
        return _read_from_image(image)
