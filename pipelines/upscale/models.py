"""Upscaler model files: found in AUTOMATIC1111's folders, named as A1111 names them, loaded by spandrel.

Folders (this app's `models/` first, then every `--models-dir`): `ESRGAN/`, `RealESRGAN/`, `SwinIR/`, `DAT/`,
subfolders included. Any architecture spandrel detects works from any of them (ESRGAN old and new arch,
Real-ESRGAN, 4x-UltraSharp, SwinIR, DAT, HAT, ...). A file is listed under its file name without extension
(A1111's "friendly name"); the well-known release files take A1111's names instead ("R-ESRGAN 4x+" for
`RealESRGAN_x4plus.pth`, "DAT x4" for `DAT_x4.pth`, ...). A1111's two default Real-ESRGAN models are listed even
when not on disk (with their URL as model_path, as A1111 does) and are downloaded into `models/RealESRGAN/`
on first use.

Loading never runs pickled code: `.pth`/`.pt`/`.ckpt` go through `torch.load(weights_only=True)` (spandrel's
own loader uses a restricted unpickler instead; we read the state dict ourselves and hand it to spandrel's
architecture detection), `.safetensors` through safetensors.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..core.errors import ModelLoadError

FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT")
MODEL_EXTS = (".pth", ".pt", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class KnownModel:
    """An upscaler A1111 names itself: its file name, where it downloads it from, and its scale."""

    name: str
    filename: str
    url: str
    scale: int
    folder: str
    listed_without_file: bool = False     # A1111 lists it (and downloads on use) even when absent


_REALESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("R-ESRGAN General 4xV3", "realesr-general-x4v3.pth",
               _REALESRGAN + "v0.2.5.0/realesr-general-x4v3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN General WDN 4xV3", "realesr-general-wdn-x4v3.pth",
               _REALESRGAN + "v0.2.5.0/realesr-general-wdn-x4v3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN AnimeVideo", "realesr-animevideov3.pth",
               _REALESRGAN + "v0.2.5.0/realesr-animevideov3.pth", 4, "RealESRGAN"),
    KnownModel("R-ESRGAN 4x+", "RealESRGAN_x4plus.pth",
               _REALESRGAN + "v0.1.0/RealESRGAN_x4plus.pth", 4, "RealESRGAN", True),
    KnownModel("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B.pth",
               _REALESRGAN + "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4, "RealESRGAN", True),
    KnownModel("R-ESRGAN 2x+", "RealESRGAN_x2plus.pth",
               _REALESRGAN + "v0.2.1/RealESRGAN_x2plus.pth", 2, "RealESRGAN"),
    KnownModel("ESRGAN_4x", "ESRGAN_4x.pth", "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth",
               4, "ESRGAN"),
    KnownModel("SwinIR 4x", "SwinIR_4x.pth", "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
               "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", 4, "SwinIR"),
    *(KnownModel(f"DAT x{s}", f"DAT_x{s}.pth", f"https://github.com/n0kovo/dat_upscaler_models/raw/main/DAT/DAT_x{s}.pth",
                 s, "DAT") for s in (2, 3, 4)),
)
_KNOWN_BY_FILE = {k.filename.lower(): k for k in KNOWN_MODELS}
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:x(\d)|(\d)x)(?:[^a-z0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class UpscalerModel:
    """One upscaler model: a file on disk, or a known A1111 model still to be downloaded (`path` None)."""

    name: str                 # what requests and infotext use ("R-ESRGAN 4x+", "4x-UltraSharp")
    path: Path | None
    scale: int                # what the listing says; the loaded model's own scale is what runs
    folder: str               # A1111 folder it belongs to (ESRGAN, RealESRGAN, SwinIR, DAT)
    url: str | None = None

    @property
    def model_path(self) -> str:
        return str(self.path) if self.path is not None else (self.url or "")


def scale_from_name(filename: str, default: int = 4) -> int:
    """'4x-UltraSharp' -> 4, 'RealESRGAN_x2plus' -> 2; A1111 assumes 4 for ESRGAN files it cannot tell."""
    stem = os.path.splitext(os.path.basename(filename))[0].replace("_", "-")
    m = _SCALE_IN_NAME.search(stem) or re.search(r"x(\d)", stem, re.IGNORECASE)
    if m:
        value = int(next(g for g in m.groups() if g))
        if 1 <= value <= 8:
            return value
    return default


def _files(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(MODEL_EXTS)]
    return found


def discover(models_dirs: Iterable[Path]) -> list[UpscalerModel]:
    """The upscaler models in the A1111 folders under each of `models_dirs` (first folder wins a name), plus the
    known models A1111 lists without a file. Reads no model data."""
    by_name: dict[str, UpscalerModel] = {}
    for base in models_dirs:
        for folder in FOLDERS:
            for path in _files(Path(base) / folder):
                known = _KNOWN_BY_FILE.get(path.name.lower())
                if known is not None:
                    model = UpscalerModel(known.name, path, known.scale, folder, known.url)
                else:
                    model = UpscalerModel(path.stem, path, scale_from_name(path.name), folder)
                by_name.setdefault(model.name, model)
    for known in KNOWN_MODELS:
        if known.listed_without_file and known.name not in by_name:
            by_name[known.name] = UpscalerModel(known.name, None, known.scale, known.folder, known.url)
    return list(by_name.values())


def known_model(name: str) -> KnownModel | None:
    return next((k for k in KNOWN_MODELS if k.name == name), None)


def read_state_dict(path: Path) -> dict:
    """The tensors of an upscaler file, never running pickled code."""
    import torch

    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one message naming it
        if suffix != ".safetensors" and "weights_only" in str(err):
            raise ModelLoadError(f"{path.name} needs to run pickled code to load, which is refused; use a "
                                 f".safetensors version of this upscaler") from None
        raise ModelLoadError(f"could not read upscaler {path.name}: {type(err).__name__}: {str(err)[:200]}") from None


def load_descriptor(path: Path, device: str = "cpu"):
    """A spandrel ImageModelDescriptor for the file (architecture detected from its keys), in eval mode."""
    import spandrel

    state = read_state_dict(path)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(f"{path.name}: not an upscaler architecture spandrel knows (ESRGAN, Real-ESRGAN, "
                             f"SwinIR, DAT, HAT, ...)") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose not in ("SR", "Restoration"):
        raise ModelLoadError(f"{path.name} is a {descriptor.architecture.name} model, not an image upscaler")
    return descriptor.to(device).eval()
