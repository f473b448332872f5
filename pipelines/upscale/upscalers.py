"""The upscalers by A1111's names: None, Lanczos, Nearest, the latent modes, and every model file.

    ups = Upscalers([models_dir, *extra_models_dirs], device="cpu")
    ups.upscale(image, 4, "R-ESRGAN 4x+")         # A1111's Upscaler.upscale: model passes, then Lanczos to size
    ups.resize(image, 1024, 768, "4x-UltraSharp")  # A1111's images.resize_image with an upscaler (hires fix)

One model is kept loaded (the last used): upscaling a batch, or hires fix over a batch, loads it once.
`release()` drops it. Model passes run in tiles (see tiles.py) with A1111's ESRGAN_tile/ESRGAN_tile_overlap,
which the caller passes in (`tile`, `overlap`; the API's options store holds them).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from PIL import Image

from ..core.errors import ParameterError, UserError
from ..params import declarations
from . import models, tiles

log = logging.getLogger(__name__)

LATENT_MODES = {"Latent": "bilinear", "Latent (antialiased)": "bilinear-antialiased",
                "Latent (bicubic)": "bicubic", "Latent (bicubic antialiased)": "bicubic-antialiased",
                "Latent (nearest)": "nearest", "Latent (nearest-exact)": "nearest-exact"}
PIXEL_BUILTINS = ("None", "Lanczos", "Nearest")
# /sdapi/v1/upscalers' model_name is A1111's per-class default model name (its upscaler classes set it for ESRGAN
# and SwinIR only), not the file's.
CLASS_MODEL_NAMES = {"ESRGAN": "ESRGAN_4x", "SwinIR": "SwinIR 4x"}
# A pass may grow the image at most this many times (A1111's loop bound: 3 passes).
MAX_PASSES = 3
# Plain convolution networks run in channels_last on the CPU: oneDNN's bf16 convolutions are about 1.8x faster
# that way (measured on RealESRGAN_x4plus, 64x64 input, 2-core CPU); attention networks (SwinIR, DAT, HAT) reshape
# their activations and stay as they are.
CHANNELS_LAST_ARCHS = {"ESRGAN", "Compact", "SPAN", "RealCUGAN", "PLKSR"}
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class UpscalerEntry:
    """One row of /sdapi/v1/upscalers."""

    name: str
    model_name: str | None
    model_path: str | None
    scale: float | None
    model: models.UpscalerModel | None = None


def dest_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's target size for upscaling by `scale`: rounded down to a multiple of 8."""
    return int((width * scale) // 8 * 8), int((height * scale) // 8 * 8)


class Upscalers:
    def __init__(self, models_dirs: Iterable[Path], device: str = "cpu", dtype=None):
        self.models_dirs = [Path(d) for d in models_dirs]
        self.device = str(device)
        self.dtype = dtype                     # preferred torch dtype (the device policy's); fp32 when unsupported
        # A1111's ESRGAN_tile and ESRGAN_tile_overlap, in input pixels: the app's options store replaces this with a
        # reader of its values. 0 (the default here, A1111's is 192): one pass when it fits in free memory, since
        # tiles cost 2.1-2.7x the time of one pass (bench/upscale.py, CPU and GPU), else tiles sized from memory.
        self.tile_options: Callable[[], tuple[int, int]] = lambda: (0, tiles.DEFAULT_OVERLAP)
        self._lock = threading.RLock()
        self._models: list[models.UpscalerModel] = []
        self._loaded: tuple[Path, object] | None = None
        self.refresh()
        declarations.register_upscaler_names(self.hires_names)

    # ------------------------------------------------------------------ listing
    def refresh(self) -> None:
        with self._lock:
            self._models = sorted(models.discover(self.models_dirs), key=lambda m: m.name.lower())

    def entries(self) -> list[UpscalerEntry]:
        """A1111's order: None, Lanczos, Nearest, then the models by name."""
        out = [UpscalerEntry(n, None, None, 4) for n in PIXEL_BUILTINS]
        return out + [UpscalerEntry(m.name, CLASS_MODEL_NAMES.get(m.folder), m.model_path, m.scale, m)
                      for m in self._models]

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def hires_names(self) -> list[str]:
        """hr_upscaler choices: the latent modes, then the pixel upscalers."""
        return list(LATENT_MODES) + self.names()

    def find(self, name: str, field: str = "upscaler") -> UpscalerEntry:
        for e in self.entries():
            if e.name == name:
                return e
        low = (name or "").strip().lower()
        for e in self.entries():
            if e.name.lower() == low or (e.model is not None and e.model.path is not None
                                         and e.model.path.name.lower() == low):
                return e
        raise ParameterError(field, f"upscaler {name!r} not found; choose one of: {', '.join(self.names())}")

    # ------------------------------------------------------------------ loading
    def _model_path(self, model: models.UpscalerModel, progress: Progress | None) -> Path:
        if model.path is not None:
            return model.path
        from ..core.download import download_file

        target = self.models_dirs[0] / model.folder / models.known_model(model.name).filename
        log.info("downloading upscaler %s from %s", model.name, model.url)
        path = download_file(model.url, target, progress=progress)
        self.refresh()
        return path

    def load(self, model: models.UpscalerModel, progress: Progress | None = None):
        """The spandrel descriptor of `model`, on the device (kept until another model is asked for)."""
        with self._lock:
            path = self._model_path(model, progress)
            if self._loaded is not None and self._loaded[0] == path:
                return self._loaded[1]
            self._loaded = None
            descriptor = models.load_descriptor(path, self.device)
            descriptor = descriptor.to(self._dtype_for(descriptor))
            if descriptor.architecture.id in CHANNELS_LAST_ARCHS and self.device == "cpu":
                import torch

                descriptor.model.to(memory_format=torch.channels_last)
            self._loaded = (path, descriptor)
            return descriptor

    def _dtype_for(self, descriptor):
        import torch

        wanted = self.dtype
        if wanted == torch.bfloat16 and descriptor.supports_bfloat16:
            return wanted
        if wanted == torch.float16 and descriptor.supports_half and self.device != "cpu":
            return wanted
        return torch.float32

    def release(self) -> None:
        with self._lock:
            self._loaded = None

    # ------------------------------------------------------------------ running
    def model_pass(self, image: Image.Image, model: models.UpscalerModel, *, tile: int | None = None,
                   overlap: int | None = None, progress: Progress | None = None) -> Image.Image:
        """One pass of the model over `image` (its own scale), in tiles (None: the ESRGAN_tile options; tile -1:
        sized from free memory alone)."""
        option_tile, option_overlap = self.tile_options()
        tile = option_tile if tile is None else (None if tile < 0 else tile)
        overlap = option_overlap if overlap is None else overlap
        from ..core.vae_tiling import free_bytes

        descriptor = self.load(model)
        dtype = next(descriptor.model.parameters()).dtype
        tile_px = tiles.choose_tile(tile, image.width, image.height, descriptor.scale, dtype.itemsize,
                                    free_bytes(self.device))
        x = tiles.to_tensor(image, dtype, self.device)
        run = descriptor
        if descriptor.architecture.id in CHANNELS_LAST_ARCHS and self.device == "cpu":
            import torch

            def run(t):
                return descriptor(t.contiguous(memory_format=torch.channels_last))
        out = tiles.run_tiled(run, x, descriptor.scale, tile_px, overlap, progress)
        return tiles.to_image(out)

    def upscale(self, image: Image.Image, scale: float, name: str, *, tile: int | None = None,
                overlap: int | None = None, progress: Progress | None = None,
                field: str = "upscaler") -> Image.Image:
        """A1111's Upscaler.upscale: repeat the model until the image reaches `scale` (at most 3 passes), then
        Lanczos to the size rounded down to a multiple of 8. "None" returns the image unchanged."""
        entry = self.find("Lanczos" if name in LATENT_MODES else name, field)
        if entry.name == "None":
            return image
        image = image.convert("RGB")
        dest_w, dest_h = dest_size(image.width, image.height, scale)
        if dest_w < 8 or dest_h < 8:
            raise ParameterError(field, f"scale {scale:g} makes the {image.width}x{image.height} image too small")
        if entry.model is None:
            resample = Image.NEAREST if entry.name == "Nearest" else Image.LANCZOS
            return image.resize((dest_w, dest_h), resample)
        for i in range(MAX_PASSES):
            if image.width >= dest_w and image.height >= dest_h and (i > 0 or scale != 1):
                break
            before = image.size
            image = self.model_pass(image, entry.model, tile=tile, overlap=overlap, progress=progress)
            if image.size == before:
                break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), Image.LANCZOS)
        return image

    def resize(self, image: Image.Image, width: int, height: int, name: str, **kw) -> Image.Image:
        """A1111's images.resize_image(0, ...) with an upscaler: upscale to cover width x height, then Lanczos to
        exactly that size (hires fix's pixel upscale)."""
        scale = max(width / image.width, height / image.height)
        if name not in ("None", "") and scale > 1.0:
            image = self.upscale(image, scale, name, **kw)
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        return image


def latent_resize(latents, width: int, height: int, name: str):
    """Hires fix's latent upscale by A1111's mode name ("Latent (bicubic antialiased)" ...) to width x height latents."""
    import torch

    mode = LATENT_MODES[name]
    antialias = mode.endswith("-antialiased")
    mode = mode.removesuffix("-antialiased")
    return torch.nn.functional.interpolate(latents.float(), size=(height, width), mode=mode,
                                           antialias=antialias).to(latents.dtype)


def check_name(upscalers: Upscalers | None, name: str, field: str) -> None:
    """Raise a ParameterError naming `field` when `name` is no upscaler (a UserError when there is no set)."""
    if upscalers is None:
        if name not in PIXEL_BUILTINS:
            raise UserError(f"{field}: upscaler models are not available in this build")
        return
    upscalers.find(name, field)
