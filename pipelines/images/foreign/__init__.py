"""Reading the generation parameters other tools embed in their images, as an A1111 infotext.

One small reader per tool, all registered in READERS: each takes the image's metadata items (PNG text
chunks, EXIF fields) and its size, and returns `ForeignParameters` or None when the metadata is not its
format. The first reader that recognises the image wins; A1111/Forge infotext itself is read by
`pipelines.images.metadata`, before these.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from . import comfyui, fooocus, invokeai, novelai, swarmui
from .common import ForeignParameters

__all__ = ["READERS", "ForeignParameters", "read_foreign"]

log = logging.getLogger(__name__)

Reader = Callable[[dict[str, Any], tuple[int, int]], "ForeignParameters | None"]

# Readers of a JSON `parameters` chunk first: like an A1111 infotext, it is what the tool means to share
# (a SwarmUI image may also carry the ComfyUI graph it ran).
READERS: tuple[tuple[str, Reader], ...] = (
    ("Fooocus", fooocus.read),
    ("SwarmUI", swarmui.read),
    ("ComfyUI", comfyui.read),
    ("InvokeAI", invokeai.read),
    ("NovelAI", novelai.read),
)


def read_foreign(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    """The parameters of the first registered format found in `items`, or None."""
    for name, reader in READERS:
        try:
            found = reader(items, size)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            # Metadata is user data: a malformed file of one tool must not stop the image from opening.
            log.warning("could not read %s metadata: %s", name, err)
            continue
        if found is not None:
            return found
    return None
