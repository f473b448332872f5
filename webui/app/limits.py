"""Bounds on what one client can ask of the app, set from the command line, with safe defaults.

- queue: jobs waiting in total (--queue-max) and per client address (--queue-max-per-client): 429;
- one generation request: images (batch_size x n_iter, --max-images) and output pixels of all of them
  together, the hires target included (--max-request-megapixels): 422 naming the field;
- ControlNet units per request (--max-controlnet-units): 422;
- uploads through the UI (--max-upload-mb; the API's body limit is webui.api.routes.MAX_BODY_BYTES): 413;
- Gradio's cache (every image shown is copied there) is cleaned every hour of files older than a day.
Pillow opens only the formats of pipelines.images.inputs.READABLE_FORMATS, process-wide (Gradio decodes
uploads itself, before our code sees them).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from pipelines.core.errors import ParameterError

GRADIO_CACHE_CLEANUP = (3600, 24 * 3600)   # (every N seconds, delete files older than M seconds)


def add_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("limits (per request and per client)")
    g.add_argument("--queue-max", type=int, default=64, help="jobs waiting in the queue in total (429 beyond)")
    g.add_argument("--queue-max-per-client", type=int, default=24,
                   help="jobs one client address may have waiting (429 beyond)")
    g.add_argument("--max-images", type=int, default=32, help="images per request (batch size x batch count)")
    g.add_argument("--max-request-megapixels", type=float, default=64.0,
                   help="output megapixels of one request, all images and the hires pass together")
    g.add_argument("--max-controlnet-units", type=int, default=4, help="ControlNet units per request")
    g.add_argument("--max-upload-mb", type=int, default=50, help="size of one file uploaded through the UI")


@dataclass(frozen=True)
class Limits:
    queue_max: int = 64
    queue_max_per_client: int = 24
    max_images: int = 32
    max_request_pixels: int = 64 * 1024 * 1024
    max_controlnet_units: int = 4
    max_upload_bytes: int = 50 * 1024 * 1024

    @classmethod
    def from_args(cls, args) -> "Limits":
        d = cls()
        pick = lambda name, default: getattr(args, name, None) or default   # noqa: E731 - flags may be absent
        return cls(queue_max=int(pick("queue_max", d.queue_max)),
                   queue_max_per_client=int(pick("queue_max_per_client", d.queue_max_per_client)),
                   max_images=int(pick("max_images", d.max_images)),
                   max_request_pixels=int(float(pick("max_request_megapixels", 0) or 0) * 1024 * 1024
                                          or d.max_request_pixels),
                   max_controlnet_units=int(pick("max_controlnet_units", d.max_controlnet_units)),
                   max_upload_bytes=int(pick("max_upload_mb", 0) or 0) * 1024 * 1024 or d.max_upload_bytes)

    def check_request(self, req, mode: str = "txt2img") -> None:
        """Refuse a generation request over the bounds (ParameterError naming the field)."""
        count = int(req.batch_size) * int(req.n_iter)
        if count > self.max_images:
            raise ParameterError("n_iter", f"batch_size x n_iter = {count} images; the limit per request is "
                                           f"{self.max_images} (--max-images): send several requests")
        width, height = hires_target(req) if mode == "txt2img" and getattr(req, "enable_hr", False) \
            else (int(req.width), int(req.height))
        if width < 8 or height < 8:
            raise ParameterError("hr_resize_y" if height < 8 else "hr_resize_x",
                                 f"the hires target would be {width}x{height}: both sides must be at least 8")
        pixels = count * width * height
        if pixels > self.max_request_pixels:
            raise ParameterError("batch_size", f"{count} image(s) of {width}x{height} = {pixels / 1e6:.1f} MP; the "
                                               f"limit per request is {self.max_request_pixels / 1e6:.1f} MP "
                                               "(--max-request-megapixels)")

    def check_units(self, count: int, field: str = "alwayson_scripts.controlnet.args") -> None:
        if count > self.max_controlnet_units:
            raise ParameterError(field, f"{count} ControlNet units; the limit is {self.max_controlnet_units} "
                                        "(--max-controlnet-units)")


def hires_target(req) -> tuple[int, int]:
    """The size of the hires pass (A1111: both resize sides, one side keeping the aspect, or the scale)."""
    width, height = int(req.width), int(req.height)
    rx, ry = int(getattr(req, "hr_resize_x", 0) or 0), int(getattr(req, "hr_resize_y", 0) or 0)
    if rx and ry:
        return rx, ry
    if rx:
        return rx, (rx * height // width) // 8 * 8
    if ry:
        return (ry * width // height) // 8 * 8, ry
    scale = float(getattr(req, "hr_scale", 1.0) or 1.0)
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def restrict_pillow_formats() -> None:
    """Pillow decodes only READABLE_FORMATS in this process (Image.open without `formats=` included)."""
    from PIL import Image

    from pipelines.images.inputs import READABLE_FORMATS

    Image.init()   # registers every plugin once; later init() calls return early, so the trimmed list stays
    Image.ID[:] = [fmt for fmt in Image.ID if fmt in READABLE_FORMATS]
