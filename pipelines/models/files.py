"""Finding the user's models on disk, in AUTOMATIC1111's folder layout.

`ModelPaths` says where to look (`models/` of this app, an existing A1111 `models/` via --models-dir,
extra checkpoint folders via --ckpt-dir). `ModelRegistry` lists checkpoints and VAEs with A1111-style
titles (`name [shorthash]`) and looks them up by title, name, short/full hash or legacy hash.
Listing never reads model data: hashes come from the cache, or are computed when a model is loaded.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from .hashing import HashCache, legacy_hash

CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".gguf")   # .gguf: quantized Flux transformers
VAE_EXTS = (".safetensors", ".pt", ".ckpt")
SUBDIRS = {
    "checkpoints": "Stable-diffusion",
    "vae": "VAE",
    "text_encoder": "text_encoder",   # Flux / SD 3.5 text encoders (clip_l, clip_g, t5xxl) and the T5 tokenizer
    "vae_approx": "VAE-approx",
    "lora": "Lora",
    "controlnet": "ControlNet",
    "embeddings": "embeddings",
    "annotators": "annotators",
    "interrogate": "interrogate",
}


@dataclass
class ModelPaths:
    models_dir: Path
    ckpt_dirs: list[Path] = field(default_factory=list)
    extra_models_dirs: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None   # hash cache, derived configs

    def dirs(self, kind: str) -> list[Path]:
        """All folders to search for `kind` (see SUBDIRS), first the app's own, then A1111 ones."""
        sub = SUBDIRS[kind]
        out = [self.models_dir / sub] + [d / sub for d in self.extra_models_dirs]
        if kind == "checkpoints":
            out += list(self.ckpt_dirs)
        seen, unique = set(), []
        for d in out:
            r = Path(d).resolve()
            if r not in seen:
                seen.add(r)
                unique.append(Path(d))
        return unique

    @property
    def hash_cache_file(self) -> Path:
        return (self.cache_dir or self.models_dir) / "hashes.json"


@dataclass
class ModelFile:
    """One checkpoint or VAE on disk."""

    path: Path
    name: str           # path relative to its models folder, with extension (A1111's "name")
    kind: str           # "safetensors", "ckpt", "gguf" or "diffusers"
    sha256: str | None = None

    @property
    def model_name(self) -> str:
        """What infotext's `Model:` holds: the file name without folder or extension."""
        stem = Path(self.name).name
        return stem if self.kind == "diffusers" else os.path.splitext(stem)[0]

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name



def _scan(folder: Path, exts: tuple[str, ...], allow_diffusers: bool) -> list[tuple[Path, str, str]]:
    found = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_p = Path(root)
        if allow_diffusers and (root_p / "model_index.json").is_file():
            found.append((root_p, root_p.relative_to(folder).as_posix(), "diffusers"))
            dirs[:] = []  # a diffusers folder's subfolders are its components
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            low = f.lower()
            if low.endswith(exts) and not low.endswith((".vae.safetensors", ".vae.pt", ".vae.ckpt")):
                kind = "safetensors" if low.endswith(".safetensors") else "gguf" if low.endswith(".gguf") else "ckpt"
                found.append((root_p / f, (root_p / f).relative_to(folder).as_posix(), kind))
    return found


class ModelRegistry:
    """Checkpoints and VAEs found under ModelPaths. `refresh()` rescans without restart."""

    def __init__(self, paths: ModelPaths, *, hashing: bool = True):
        self.paths = paths
        self.hashing = hashing
        self.hashes = HashCache(paths.hash_cache_file)
        self._lock = threading.Lock()
        self.checkpoints: list[ModelFile] = []
        self.vaes: list[ModelFile] = []
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            self.checkpoints = self._list("checkpoints", CHECKPOINT_EXTS, True)
            self.vaes = self._list("vae", VAE_EXTS, False)

    def _list(self, kind: str, exts: tuple[str, ...], allow_diffusers: bool) -> list[ModelFile]:
        items: dict[str, ModelFile] = {}
        for folder in self.paths.dirs(kind):
            for path, name, k in _scan(folder, exts, allow_diffusers):
                if name in items:
                    continue  # the first folder wins, like A1111's model list
                mf = ModelFile(path, name, k)
                if k != "diffusers":
                    mf.sha256 = self.hashes.sha256(path, compute=False)
                items[name] = mf
        return sorted(items.values(), key=lambda m: m.name.lower())

    def ensure_hash(self, mf: ModelFile) -> str | None:
        """Compute (or read from cache) the full sha256 of a single-file model unless hashing is off."""
        if mf.kind != "diffusers" and mf.sha256 is None and self.hashing:
            mf.sha256 = self.hashes.sha256(mf.path)
        return mf.sha256

    def find_checkpoint(self, query: str) -> ModelFile:
        return self._find(self.checkpoints, query, "checkpoint", "Stable-diffusion")

    def find_vae(self, query: str) -> ModelFile:
        return self._find(self.vaes, query, "VAE", "VAE")

    def _find(self, items: list[ModelFile], query: str, what: str, folder: str) -> ModelFile:
        q = (query or "").strip()
        if not q:
            raise UserError(f"no {what} name given")
        # Names are looked up among discovered files only: a path in a request never reaches the disk.
        bare = q.rsplit(" [", 1)[0] if q.endswith("]") else q
        for mf in items:
            if q in (mf.title, mf.name) or bare == mf.name:
                return mf
        for mf in items:
            if bare in (mf.model_name, os.path.splitext(mf.name)[0], Path(mf.name).name):
                return mf
        low = q.lower().strip("[]")
        if len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
            for mf in items:
                if mf.sha256 and mf.sha256.startswith(low):
                    return mf
            if len(low) == 8:
                for mf in items:
                    if mf.kind != "diffusers" and legacy_hash(mf.path) == low:
                        return mf
        where = ", ".join(str(d) for d in self.paths.dirs("checkpoints" if folder == "Stable-diffusion" else "vae"))
        raise UserError(f"{what} {query!r} not found; put it in {where} and press refresh")

    def sidecar_vae(self, ckpt: ModelFile) -> Path | None:
        """A1111's per-checkpoint VAE: `model.vae.safetensors` (or .pt/.ckpt) beside `model.safetensors`."""
        if ckpt.kind == "diffusers":
            return None
        base = ckpt.path.with_suffix("")
        for ext in VAE_EXTS:
            cand = Path(str(base) + ".vae" + ext)
            if cand.is_file():
                return cand
        return None
