"""Embedding and reading the infotext in image files, the way AUTOMATIC1111 does.

* PNG: a text chunk named ``parameters`` (tEXt when the text is latin-1, iTXt otherwise).
* JPEG and WEBP: EXIF ``UserComment`` in the "unicode" form A1111 writes
  (``piexif.helper.UserComment.dump(text, encoding="unicode")``: ``UNICODE\\0`` + UTF-16-BE).

Reading also understands what A1111 falls back to (a GIF/JPEG ``comment``) and the metadata of other
tools (ComfyUI, InvokeAI, NovelAI, Fooocus), converted to an infotext by :mod:`pipelines.images.foreign`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

import piexif
import piexif.helper
from PIL import Image, PngImagePlugin

from .foreign import read_foreign
from .foreign.stealth import stealth_items

__all__ = [
    "FORMATS",
    "ImageParameters",
    "PIL_FORMATS",
    "MAX_JPEG_SIDE",
    "MAX_WEBP_SIDE",
    "normalize_format",
    "read_image_parameters",
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


@dataclass
class ImageParameters:
    """What an image says about how it was made.

    ``infotext``: the A1111 infotext (read as is, or converted from another tool's metadata), or None.
    ``items``: every metadata item as a string (see :func:`read_infotext`).
    ``source``: the tool whose metadata was converted (``"ComfyUI"``...), None for A1111/Forge infotext.
    ``notes``: what the infotext cannot carry about that tool's generation (see ``foreign``).
    """

    infotext: str | None
    items: dict[str, str]
    source: str | None = None
    notes: list[str] = field(default_factory=list)


def _png_items(image: Image.Image) -> dict[str, Any]:
    raw: dict[str, Any] = dict(image.info or {})
    if image.format == "PNG":
        try:
            # Text chunks after the image data are only read once the image is loaded.
            raw.update(image.text)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - truncated files: keep what was read
            pass
    return raw


def _exif_items(raw: dict[str, Any]) -> dict[str, str]:
    extra: dict[str, str] = {}
    exif_data = raw.get("exif")
    if not (isinstance(exif_data, (bytes, bytearray)) and exif_data):
        return extra
    exif = _load_exif(bytes(exif_data)) or {}
    comment = exif.get("Exif", {}).get(piexif.ExifIFD.UserComment)
    if isinstance(comment, bytes) and comment:
        text = _decode_user_comment(comment).strip("\x00")
        if text:
            extra["exif comment"] = text
    for label, ifd, tag in (
        ("exif ImageDescription", "0th", piexif.ImageIFD.ImageDescription),
        ("exif Software", "0th", piexif.ImageIFD.Software),
        # Fooocus names its metadata scheme here in JPEG/WebP files.
        ("exif MakerNote", "Exif", piexif.ExifIFD.MakerNote),
    ):
        value = _exif_text(exif.get(ifd, {}).get(tag))
        if value:
            extra[label] = value
    # Fooocus puts UserComment and MakerNote in the first IFD (Pillow's `Image.Exif()` top level), where
    # piexif does not look; Pillow reads them.
    top = Image.Exif()
    try:
        top.load(bytes(exif_data))
    except Exception:  # noqa: BLE001 - corrupt EXIF is common; the rest still reads
        return extra
    for label, tag in (("exif comment", piexif.ExifIFD.UserComment), ("exif MakerNote", piexif.ExifIFD.MakerNote)):
        value = _exif_text(top.get(tag))
        if value and label not in extra:
            extra[label] = value
    return extra


def _as_text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value) if isinstance(value, str) and value else None


def _read_from_image(image: Image.Image) -> ImageParameters:
    raw = _png_items(image)
    extra = _exif_items(raw)
    # A1111's order of places: the PNG chunk, then EXIF UserComment, then a GIF/JPEG comment.
    geninfo = _as_text(raw.get("parameters")) or extra.get("exif comment") or _as_text(raw.get("comment"))
    items = {str(k): _describe(v) for k, v in raw.items()}
    items.update(extra)

    foreign = None
    if geninfo is None or geninfo.lstrip().startswith("{"):
        # Another tool's metadata (JSON where A1111 has text, or chunks of its own).
        found = {k: v for k, v in raw.items() if isinstance(v, str)}
        found["parameters"] = geninfo
        found.setdefault("fooocus_scheme", extra.get("exif MakerNote"))
        foreign = read_foreign(found, image.size)
        geninfo = None
    if geninfo is None and foreign is None:
        hidden = stealth_items(image)   # in the alpha channel: NovelAI, A1111's stealth-pnginfo extension
        if hidden:
            items.update({f"stealth {k}": _describe(v) for k, v in hidden.items()})
            geninfo = _as_text(hidden.get("parameters"))
            foreign = None if geninfo else read_foreign(hidden, image.size)
    if foreign is not None:
        return ImageParameters(foreign.infotext(), items, foreign.source, list(foreign.notes))
    return ImageParameters(geninfo, items)


def _open(image_or_path: Image.Image | str | os.PathLike[str] | bytes | IO[bytes]) -> ImageParameters:
    if isinstance(image_or_path, Image.Image):
        return _read_from_image(image_or_path)
    if isinstance(image_or_path, (bytes, bytearray)):
        image_or_path = io.BytesIO(bytes(image_or_path))
    if isinstance(image_or_path, (str, os.PathLike)):
        image_or_path = Path(image_or_path)
    with Image.open(image_or_path) as image:
        return _read_from_image(image)


def read_image_parameters(
    image_or_path: Image.Image | str | os.PathLike[str] | bytes | IO[bytes],
) -> ImageParameters:
    """An image's generation parameters as an A1111 infotext, from its own infotext or from the metadata
    of ComfyUI, InvokeAI, NovelAI or Fooocus (:mod:`pipelines.images.foreign`), with the raw items."""
    return _open(image_or_path)


def read_infotext(
    image_or_path: Image.Image | str | os.PathLike[str] | bytes | IO[bytes],
) -> tuple[str | None, dict[str, str]]:
    """Return ``(parameters text or None, raw metadata)`` for an image, a path, the file's
    bytes or a binary file object.

    The raw metadata maps every item Pillow read (``parameters`` included) to a string:
    bytes are decoded when they are short printable UTF-8 and summarised as
    ``<N bytes>`` otherwise; a decoded EXIF UserComment is added as ``exif comment``.
    Other tools' metadata comes back converted to an infotext (see :func:`read_image_parameters`).

    The ``parameters`` PNG chunk wins over an EXIF UserComment (A1111 prefers the EXIF
    comment when both exist; files with both are rare and not written by A1111).
    """
    found = _open(image_or_path)
    return found.infotext, found.items
