""""Stealth" metadata: parameters hidden in the least significant bits of the alpha channel, which survive
sites that strip PNG text chunks. NovelAI writes every image this way (its public nai_meta scripts), as does
A1111's stealth-pnginfo extension: the bits run down each column, left to right, most significant bit
first: a magic word, the payload length in bits (32-bit big-endian), then the payload, gzip-compressed
for the "...comp" magic. NovelAI's payload is JSON of its PNG chunks (`Comment` etc.); the extension's
is an A1111 infotext.
"""
from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
from PIL import Image

_MAGICS = {b"stealth_pnginfo": False, b"stealth_pngcomp": True}
_MAGIC_LEN = 15
_MAX_PAYLOAD = 1 << 20   # bytes: a hostile length field must not make us read the whole image as text


def read_alpha_payload(image: Image.Image) -> str | None:
    """The text hidden in `image`'s alpha channel, or None."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return None
    source = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    alpha = np.asarray(source.getchannel("A"))
    header = _read_bytes(alpha, _MAGIC_LEN + 4)
    compressed = _MAGICS.get(header[:_MAGIC_LEN])
    if compressed is None:
        return None
    length = min(int.from_bytes(header[_MAGIC_LEN:], "big") // 8, _MAX_PAYLOAD)
    payload = _read_bytes(alpha, _MAGIC_LEN + 4 + length)[_MAGIC_LEN + 4:]
    try:
        if compressed:
            payload = gzip.decompress(payload)
        return payload.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None


def _read_bytes(alpha: np.ndarray, count: int) -> bytes:
    """The first `count` bytes of the alpha LSBs, reading only the columns that hold them."""
    height = max(alpha.shape[0], 1)
    columns = -(-count * 8 // height)
    bits = np.ascontiguousarray(alpha[:, :columns].T & 1).ravel()   # column by column, top to bottom
    return np.packbits(bits[: min(len(bits), count * 8) // 8 * 8]).tobytes()


def stealth_items(image: Image.Image) -> dict[str, Any] | None:
    """The hidden metadata as PNG-chunk-like items: NovelAI's JSON object as is, an infotext as `parameters`."""
    text = read_alpha_payload(image)
    if not text:
        return None
    try:
        value = json.loads(text) if text.lstrip().startswith("{") else None
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    return {"parameters": text}
