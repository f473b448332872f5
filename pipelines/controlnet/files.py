"""ControlNet models on disk: the registry of `models/ControlNet/` and what each file holds.

`ControlNetRegistry` lists `models/ControlNet/` (and A1111 `--models-dir` layouts): single files
(`.safetensors`, `.pth`/`.pt`/`.ckpt` through the safe loader) in the original layout
(`control_model.*`, lllyasviel's SD1.5 files) or with diffusers keys (SDXL files such as
`diffusers_xl_canny_full.safetensors`), and diffusers folders (`config.json` + weights). Titles are
sd-webui-controlnet's `name [legacy hash]`. The architecture is read from the header: cross-attention
width of the first `attn2.to_k` and the SDXL `label_emb` / `add_embedding`; `incompatibility` says why a
model cannot steer the active checkpoint.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ModelLoadError, UserError
from ..models import detect
from ..models.hashing import legacy_hash
from ..models.loading import read_ckpt_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from ..models.files import ModelPaths

MODEL_EXTS = (".safetensors", ".pth", ".pt", ".ckpt")


@dataclass
class ControlNetFile:
    """One ControlNet on disk."""

    path: Path
    name: str                  # relative to its models folder, with extension
    kind: str                  # "safetensors", "ckpt" (.pth/.pt/.ckpt) or "diffusers"
    hash: str | None = None    # A1111 legacy hash (8 hex) as sd-webui-controlnet shows it

    @property
    def model_name(self) -> str:
        stem = Path(self.name).name
        return stem if self.kind == "diffusers" else os.path.splitext(stem)[0]

    @property
    def title(self) -> str:
        return f"{self.model_name} [{self.hash}]" if self.hash else self.model_name


@dataclass(frozen=True)
class ControlNetArch:
    layout: str                # "ldm" (control_model.*), "diffusers" (single file) or "folder"
    prefix: str                # key prefix of the ControlNet weights in the file
    context_dim: int           # cross-attention width: 768 SD1, 1024 SD2, 2048 SDXL
    sdxl: bool

    @property
    def family(self) -> str:
        if self.sdxl:
            return detect.SDXL
        return detect.SD2 if self.context_dim == 1024 else detect.SD1

    @property
    def label(self) -> str:
        return detect.FAMILY_LABELS[self.family]


def detect_controlnet(shapes: dict[str, Any], name: str = "ControlNet") -> ControlNetArch:
    """Layout and architecture of a ControlNet from key → shape (no tensor data needed)."""
    if "lora_controlnet" in shapes:
        raise ModelLoadError(f"{name}: a Control-LoRA; only full ControlNets are supported")
    hint = sorted(k for k in shapes if k.endswith("input_hint_block.0.weight"))
    if hint:
        layout, prefix = "ldm", hint[0][: -len("input_hint_block.0.weight")]
    elif "controlnet_cond_embedding.conv_in.weight" in shapes:
        layout, prefix = "diffusers", ""
    else:
        if any(k.startswith("model.diffusion_model.") for k in shapes):
            raise ModelLoadError(f"{name}: a Stable Diffusion checkpoint, not a ControlNet; put it in "
                                 "models/Stable-diffusion")
        raise ModelLoadError(f"{name}: not a ControlNet (no input_hint_block / controlnet_cond_embedding weights); "
                             "T2I-Adapter, Control-LoRA and ControlLLLite files are not supported")
    to_k = sorted(k for k in shapes if k.startswith(prefix) and k.endswith("attn2.to_k.weight"))
    if not to_k:
        raise ModelLoadError(f"{name}: ControlNet without cross-attention layers; unsupported variant")
    context = int(list(shapes[to_k[0]])[1])
    sdxl = (prefix + "label_emb.0.0.weight") in shapes if layout == "ldm" else "add_embedding.linear_1.weight" in shapes
    return ControlNetArch(layout, prefix, context, sdxl)


def read_state(path: Path) -> dict:
    """All tensors of a single-file ControlNet (safetensors, or a pickle through the safe loader)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ModelLoadError(f"{path.name}: cannot read ({type(err).__name__}: {err})") from None
    return read_ckpt_state_dict(path)


def _file_shapes(path: Path) -> dict[str, list[int]]:
    if path.suffix.lower() == ".safetensors":
        return detect.shapes_from_header(detect.read_safetensors_header(path))
    return {k: list(v.shape) for k, v in read_state(path).items() if hasattr(v, "shape")}


class ControlNetRegistry:
    """ControlNet models found under ModelPaths' `controlnet` folders. `refresh()` rescans."""

    def __init__(self, paths: ModelPaths):
        self.paths = paths
        self._lock = threading.Lock()
        self._arch: dict[tuple[str, int, float], ControlNetArch] = {}
        self._hash: dict[tuple[str, int, float], str] = {}
        self.models: list[ControlNetFile] = []
        self.refresh()

    def refresh(self) -> None:
        items: dict[str, ControlNetFile] = {}
        for folder in self.paths.dirs("controlnet"):
            for cf in _scan(folder):
                items.setdefault(cf.name, cf)  # the first folder wins, like the checkpoint list
        models = sorted(items.values(), key=lambda m: m.name.lower())
        for cf in models:
            if cf.kind != "diffusers":
                cf.hash = self._legacy_hash(cf.path)
        with self._lock:
            self.models = models

    def _key(self, path: Path) -> tuple[str, int, float]:
        st = path.stat() if path.is_file() else (path / "config.json").stat()
        return str(path.resolve()), st.st_size, st.st_mtime

    def _legacy_hash(self, path: Path) -> str | None:
        try:
            key = self._key(path)
            if key not in self._hash:
                self._hash[key] = legacy_hash(path)
            return self._hash[key]
        except OSError:
            return None

    def arch(self, cf: ControlNetFile) -> ControlNetArch:
        """Architecture from the header (cached per file size + mtime); ModelLoadError if unusable."""
        if not cf.path.exists():
            raise ModelLoadError(f"{cf.name}: file not found ({cf.path}); press refresh to update the list")
        key = self._key(cf.path)
        with self._lock:
            hit = self._arch.get(key)
        if hit is not None:
            return hit
        if cf.kind == "diffusers":
            try:
                cfg = json.loads((cf.path / "config.json").read_text())
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"{cf.name}: unreadable config.json ({err})") from None
            arch = ControlNetArch("folder", "", int(cfg.get("cross_attention_dim") or 0),
                                  cfg.get("addition_embed_type") == "text_time")
        else:
            arch = detect_controlnet(_file_shapes(cf.path), cf.name)
        with self._lock:
            self._arch[key] = arch
        return arch

    def find(self, query: str) -> ControlNetFile:
        """By title, name, file name or stem (case-insensitive; a different [hash] still finds the name,
        as sd-webui-controlnet does)."""
        q = (query or "").strip()
        if not q or q.lower() == "none":
            raise UserError("no ControlNet model given")
        bare = q.rsplit(" [", 1)[0] if q.endswith("]") else q
        for cf in self.models:
            if q in (cf.title, cf.name) or bare in (cf.name, cf.model_name):
                return cf
        low = bare.lower()
        for cf in self.models:
            if low in (cf.model_name.lower(), cf.name.lower(), Path(cf.name).name.lower()):
                return cf
        where = ", ".join(str(d) for d in self.paths.dirs("controlnet"))
        raise UserError(f"ControlNet model {query!r} not found; put it in {where} and press refresh")


def _scan(folder: Path) -> list[ControlNetFile]:
    found: list[ControlNetFile] = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_p = Path(root)
        if (root_p / "config.json").is_file() and _is_controlnet_folder(root_p):
            found.append(ControlNetFile(root_p, root_p.relative_to(folder).as_posix(), "diffusers"))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            low = f.lower()
            if low.endswith(MODEL_EXTS) and not low.startswith("."):
                kind = "safetensors" if low.endswith(".safetensors") else "ckpt"
                if os.path.splitext(f)[0] == "None":
                    continue  # would be confused with "no model"
                found.append(ControlNetFile(root_p / f, (root_p / f).relative_to(folder).as_posix(), kind))
    return found


def _is_controlnet_folder(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = any((folder / n).is_file() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                                                    "diffusion_pytorch_model.fp16.safetensors"))
    return cfg.get("_class_name") == "ControlNetModel" and weights


def incompatibility(arch: ControlNetArch, cf: ControlNetFile, loaded) -> str | None:
    """Why ControlNet `cf` cannot steer the active checkpoint, or None when it can."""
    if loaded.arch.family == detect.SDXL_REFINER:
        return f"{loaded.info.name} is an SDXL refiner; ControlNets work with SD 1.x, SD 2.x and SDXL base models"
    unet = loaded.pipe.unet.config
    ck_sdxl = unet.get("addition_embed_type") == "text_time"
    if arch.sdxl != ck_sdxl or arch.context_dim != int(unet.get("cross_attention_dim") or 0):
        return (f"ControlNet {cf.model_name} is for {arch.label} (cross-attention {arch.context_dim}) but the active "
                f"checkpoint {loaded.info.name} is {loaded.arch.label} (cross-attention "
                f"{unet.get('cross_attention_dim')}); choose a ControlNet for {loaded.arch.label} or another checkpoint")
    return None
