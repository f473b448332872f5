"""A1111's `/sdapi/v1/options`: each option declared once here (type, default, range, what it does).

Values set through the API persist in `<data dir>/config/options.json` (written atomically). Two
options are live device state owned by the PipelineManager and are changed through the job queue by the
API: `sd_model_checkpoint` (the active checkpoint) and `sd_vae`. The others shape API generations:
output format and folders (always inside --outdir), live preview rate, the default clip skip.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import ConfigDict, Field, create_model

from pipelines.core.fileio import atomic_write
from pipelines.core.errors import ParameterError
from pipelines.params.declarations import Param
from pipelines.images.metadata import FORMATS

log = logging.getLogger(__name__)

OPTIONS_FILE = Path("config") / "options.json"
_KIND = re.compile(r"[\w][\w .-]*")


@dataclass(frozen=True)
class Option:
    key: str
    type: type
    default: Any
    label: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = 1000
    readonly: bool = False
    outdir: str | None = None        # output kind (folder under --outdir) this option redirects

    @functools.cached_property
    def param(self) -> Param:
        """The option as a parameter declaration: checked by the same code as a generation parameter."""
        return Param(self.key, self.type, self.default, self.label, minimum=self.minimum, maximum=self.maximum,
                     choices=self.choices, max_length=self.max_length if self.type is str else None)

    def convert(self, value: Any) -> Any:
        return self.param.convert(value, strict=True)   # a settings file holds JSON values, never "1" for 1


def _outdir(key: str, kind: str, label: str) -> Option:
    return Option(key, str, "", label, outdir=kind)


OPTIONS: tuple[Option, ...] = (
    Option("sd_model_checkpoint", str, "", "Stable Diffusion checkpoint (title, name or hash); setting it "
                                           "switches the active checkpoint", max_length=500),
    Option("sd_checkpoint_hash", str, "", "SHA256 of the active checkpoint", readonly=True),
    Option("sd_vae", str, "Automatic", "SD VAE: Automatic, None or a file in models/VAE", max_length=500),
    Option("CLIP_stop_at_last_layers", int, 1, "Clip skip (used when a request does not give clip_skip)", 1, 12),
    Option("send_seed", bool, True, "Send seed when sending prompt or image to other interface"),
    Option("send_size", bool, True, "Send size when sending prompt or image to another interface"),
    Option("samples_save", bool, True, "Always save all generated images (the API saves only with save_images)"),
    Option("samples_format", str, "png", "File format for images (also of the images the API returns)",
           choices=FORMATS),
    Option("samples_filename_pattern", str, "[seed]", "Images filename pattern", max_length=200),
    Option("save_txt", bool, False, "Create a text file next to every image with generation parameters"),
    Option("jpeg_quality", int, 95, "Quality for saved jpeg and webp images", 1, 100),
    Option("grid_save", bool, False, "Always save all generated image grids"),
    Option("live_previews_enable", bool, True, "Show live previews of the created image (progress current_image)"),
    Option("show_progress_every_n_steps", int, 5, "Live preview display period, in sampling steps (0: off)", -1, 1000),
    Option("ESRGAN_tile", int, 0, "Tile size for upscaler models, input pixels (0 = one pass when it fits in free "
                                  "memory, else tiles sized from it; A1111's default is 192)", 0, 512),
    Option("ESRGAN_tile_overlap", int, 8, "Tile overlap for upscaler models, pixels (the seams are blended)", 0, 48),
    _outdir("outdir_samples", "", "Output directory for images; if empty, defaults to the per-mode folders"),
    _outdir("outdir_txt2img_samples", "txt2img-images", "Output directory for txt2img images"),
    _outdir("outdir_img2img_samples", "img2img-images", "Output directory for img2img images"),
    _outdir("outdir_grids", "", "Output directory for grids; if empty, defaults to the per-mode folders"),
    _outdir("outdir_txt2img_grids", "txt2img-grids", "Output directory for txt2img grids"),
    _outdir("outdir_img2img_grids", "img2img-grids", "Output directory for img2img grids"),
)
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


def _annotation(o: Option):
    return Optional[o.type]


OptionsRequest = create_model(
    "OptionsRequest", __config__=ConfigDict(extra="ignore"),
    **{o.key: (_annotation(o), Field(default=None, description=o.label + (" (read-only)" if o.readonly else "")))
       for o in OPTIONS})
OptionsResponse = create_model(
    "Options", __config__=ConfigDict(extra="allow"),
    **{o.key: (_annotation(o), Field(default=None, description=o.label)) for o in OPTIONS})


class OptionsStore:
    """The persisted option values (only those set differ from the declared defaults)."""

    def __init__(self, path: Path, output_root: Path):
        self.path = Path(path)
        self.output_root = Path(output_root)
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable options file %s: %s", self.path, err)
            return
        if not isinstance(data, dict):
            return
        for key, value in data.items():
            opt = BY_KEY.get(key)
            if opt is None or opt.readonly:
                continue
            try:
                self._values[key] = self._check(opt, value)
            except ParameterError as err:
                log.warning("options file %s: %s (default kept)", self.path, err)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._values.get(key, BY_KEY[key].default)

    def values(self) -> dict[str, Any]:
        with self._lock:
            return {o.key: self._values.get(o.key, o.default) for o in OPTIONS}

    # ------------------------------------------------------------------ validation
    def _check(self, opt: Option, value: Any) -> Any:
        value = opt.convert(value)
        if opt.outdir is not None:
            value = self.output_kind(opt.key, value)
        return value

    def check(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Validate known, writable keys (ParameterError names the first bad one); others are left out."""
        out = {}
        for key, value in updates.items():
            opt = BY_KEY.get(key)
            if opt is None or opt.readonly:
                continue
            out[key] = self._check(opt, value)
        return out

    def output_kind(self, key: str, value: str) -> str:
        """An output folder option → the folder name under --outdir ('' = the default one).

        Accepted: a folder name, or a path (absolute or relative to --outdir) of a folder directly inside
        --outdir. Anything else would let an API client write files elsewhere on the server.
        """
        text = value.strip()
        if not text:
            return ""
        root = self.output_root.resolve()
        try:
            p = Path(text)
            target = (p if p.is_absolute() else root / p).resolve()
        except (ValueError, OSError):   # NUL bytes, names too long for the OS
            target = None
        if target is not None and target.parent == root and _KIND.fullmatch(target.name) and ".." not in target.name:
            return target.name
        raise ParameterError(key, f"{value!r} must be a folder directly inside the outputs folder {root} "
                                  f"(e.g. 'txt2img-images'); the API does not write elsewhere")

    def output_path(self, key: str) -> str:
        opt = BY_KEY[key]
        kind = self.get(key) or opt.outdir
        return str(self.output_root / kind) if kind else ""

    def kind_map(self, mode: str) -> dict[str, str]:
        """Output kind the engine asks for → folder the options say (for a saver wrapper)."""
        samples = self.get("outdir_samples") or self.get(f"outdir_{mode}_samples") or f"{mode}-images"
        grids = self.get("outdir_grids") or self.get(f"outdir_{mode}_grids") or f"{mode}-grids"
        return {f"{mode}-images": samples, f"{mode}-grids": grids}

    # ------------------------------------------------------------------ writing
    def update(self, values: dict[str, Any]) -> None:
        """Store already checked values and write the file."""
        with self._lock:
            for key, value in values.items():
                if value == BY_KEY[key].default:
                    self._values.pop(key, None)
                else:
                    self._values[key] = value
            # written under the lock: two concurrent updates can otherwise persist the older one
            self._write(dict(self._values))

    def _write(self, data: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
        except OSError as err:
            log.warning("could not save options to %s: %s", self.path, err)


class KindSaver:
    """An OutputSaver for one API request: the options' format/pattern, folders mapped by kind."""

    def __init__(self, base, store: OptionsStore, mode: str):
        saver = copy.copy(base)
        saver.fmt = store.get("samples_format")
        saver.filename_pattern = store.get("samples_filename_pattern")
        saver.save_txt = store.get("save_txt")
        saver.jpeg_quality = store.get("jpeg_quality")
        self._saver = saver
        self._kinds = store.kind_map(mode)

    def save(self, image, infotext, *, kind: str = "txt2img-images", **kw):
        kind = self._kinds.get(kind, kind)
        try:
            return self._saver.save(image, infotext, kind=kind, **kw)
        except ValueError:
            if self._saver.fmt not in ("jpg", "jpeg"):
                raise
            # JPEG's EXIF holds at most ~32k characters of parameters: keep the image, as PNG
            log.warning("parameters too long for JPEG EXIF: saving this image as PNG")
            png = copy.copy(self._saver)
            png.fmt = "png"
            return png.save(image, infotext, kind=kind, **kw)

    def save_grid(self, images, infotext, *, kind: str = "txt2img-grids", **kw):
        return self._saver.save_grid(images, infotext, kind=self._kinds.get(kind, kind), **kw)

    def __getattr__(self, name):
        return getattr(self._saver, name)
