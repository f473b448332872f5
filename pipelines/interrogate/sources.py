"""Where interrogation models come from: `models/interrogate/` first, else the Hugging Face Hub.

On-disk layout (every folder is one model; the name a user picks is the folder name):

    models/interrogate/
      blip-base/                         transformers `save_pretrained` folder of
      blip-large/                          Salesforce/blip-image-captioning-{base,large}: config.json,
                                           model.safetensors (or pytorch_model.bin),
                                           preprocessor_config.json, tokenizer files
      <other name>/                      any other BLIP caption model in the same layout
                                           (config.json with "model_type": "blip")
      ViT-L-14-openai/                   OpenCLIP weights of a built-in model, the name with "/" → "-":
        open_clip_model.safetensors        (or open_clip_pytorch_model.bin, or one *.safetensors/*.bin)
      ViT-H-14-laion2b_s32b_b79k/
      ViT-bigG-14-laion2b_s39b_b160k/
      <other name>/                      any other OpenCLIP model in its Hub layout:
        open_clip_config.json              {"model_cfg": ..., "preprocess_cfg": ...}
        open_clip_model.safetensors

A built-in model that is missing is downloaded into that same folder (through a temporary
`.download-<folder>` beside it, renamed when complete, so an interrupted download never looks like
a model). Offline (HF_HUB_OFFLINE=1, downloads disabled, or no network) the error says which
file to put where.

Names in requests are only matched against this module's tables and the folders found on disk:
a name never becomes a path on its own.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..core.download import HF_URL, fetch_from_hub, hub_offline, hub_reachable
from ..core.errors import UserError

Progress = Callable[[str, float], None]

CLIP_CONFIG_FILE = "open_clip_config.json"
CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CAPTION_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CAPTION_REQUIRED_FILES = ("config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class ClipSpec:
    """A built-in OpenCLIP model: open_clip architecture + pretrained tag, and where the Hub has it."""

    name: str            # "ViT-L-14/openai": what users and the API pick
    arch: str            # open_clip architecture name
    pretrained: str      # open_clip pretrained tag
    hf_repo: str         # Hub repo holding open_clip_model.safetensors
    quick_gelu: bool     # OpenAI weights were trained with QuickGELU
    family: str          # the Stable Diffusion family whose text encoder it matches

    @property
    def folder(self) -> str:
        return self.name.replace("/", "-")


@dataclass(frozen=True)
class CaptionSpec:
    name: str
    hf_repo: str
    size: str


# Values as in open_clip's pretrained table (open_clip.get_pretrained_cfg); written out so that the
# table is explicit and lookups never depend on open_clip internals.
CLIP_MODELS: dict[str, ClipSpec] = {s.name: s for s in (
    ClipSpec("ViT-L-14/openai", "ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", True, "sd1"),
    ClipSpec("ViT-H-14/laion2b_s32b_b79k", "ViT-H-14", "laion2b_s32b_b79k",
             "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", False, "sd2"),
    ClipSpec("ViT-bigG-14/laion2b_s39b_b160k", "ViT-bigG-14", "laion2b_s39b_b160k",
             "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", False, "sdxl"),
)}
CAPTION_MODELS: dict[str, CaptionSpec] = {s.name: s for s in (
    CaptionSpec("blip-base", "Salesforce/blip-image-captioning-base", "990 MB"),
    CaptionSpec("blip-large", "Salesforce/blip-image-captioning-large", "1.9 GB"),
)}
DEFAULT_CLIP = "ViT-L-14/openai"
DEFAULT_CAPTION = "blip-large"
_FAMILY_CLIP = {"sd1": "ViT-L-14/openai", "sd2": "ViT-H-14/laion2b_s32b_b79k", "sdxl": "ViT-bigG-14/laion2b_s39b_b160k",
                "sdxl_refiner": "ViT-bigG-14/laion2b_s39b_b160k"}


def clip_for_family(family: str | None) -> str:
    """The CLIP model matching a checkpoint family ("sd1", "sd2", "sdxl"); ViT-L-14 when unknown."""
    return _FAMILY_CLIP.get((family or "").lower(), DEFAULT_CLIP)


@dataclass(frozen=True)
class ClipSource:
    """A CLIP model found on disk, ready for open_clip."""

    name: str
    folder: Path
    weights: Path
    spec: ClipSpec | None        # built-in: architecture from open_clip's own configs
    # Custom (spec is None): folder holds open_clip_config.json and loads as open_clip "local-dir:".

    def fingerprint(self) -> str:
        return file_fingerprint(self.weights)


@dataclass(frozen=True)
class CaptionSource:
    name: str
    folder: Path

    def fingerprint(self) -> str:
        return file_fingerprint(_first_existing(self.folder, CAPTION_WEIGHT_FILES) or self.folder / "config.json")


def file_fingerprint(path: Path, span: int = 1 << 20) -> str:
    """Cheap identity of a weights file: size + sha256 of its first and last MiB (not a full hash)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return f"{size}-{h.hexdigest()[:16]}"


def _first_existing(folder: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _clip_weights_in(folder: Path) -> Path | None:
    found = _first_existing(folder, CLIP_WEIGHT_FILES)
    if found:
        return found
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth"):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files[0]
    return None


def _subfolders(dirs: Sequence[Path]) -> Iterable[Path]:
    for d in dirs:
        if Path(d).is_dir():
            for sub in sorted(Path(d).iterdir()):
                if sub.is_dir() and not sub.name.startswith("."):
                    yield sub


def _is_blip_folder(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(cfg.get("model_type", "")).startswith("blip") and "blip-2" not in str(cfg.get("model_type"))


class ModelSources:
    """Finds interrogation models in `dirs` (first wins) and downloads built-in ones into `dirs[0]`."""

    def __init__(self, dirs: Sequence[Path | str], *, allow_download: bool = True, progress: Progress | None = None):
        if not dirs:
            raise ValueError("ModelSources needs at least one folder")
        self.dirs = [Path(d) for d in dirs]
        self.allow_download = allow_download
        self.progress = progress or (lambda stage, fraction: None)
        self.downloads = 0

    # ------------------------------------------------------------------ listing
    def clip_names(self) -> list[str]:
        """Built-in CLIP models (present or downloadable) then custom folders found on disk."""
        names = list(CLIP_MODELS)
        builtin_folders = {s.folder for s in CLIP_MODELS.values()}
        for sub in _subfolders(self.dirs):
            if sub.name not in builtin_folders and (sub / CLIP_CONFIG_FILE).is_file() and _clip_weights_in(sub):
                if sub.name not in names:
                    names.append(sub.name)
        return names

    def caption_names(self) -> list[str]:
        names = list(CAPTION_MODELS)
        for sub in _subfolders(self.dirs):
            if sub.name not in names and _is_blip_folder(sub):
                names.append(sub.name)
        return names

    def available_locally(self, name: str) -> bool:
        """True when the CLIP or caption model `name` is on disk (using it needs no download)."""
        try:
            if name in CLIP_MODELS or name in self.clip_names():
                return self._local_clip(name) is not None
            return self._local_caption(name) is not None
        except UserError:   # an incomplete caption folder is not usable either
            return False

    # ------------------------------------------------------------------ CLIP
    def _local_clip(self, name: str) -> ClipSource | None:
        spec = CLIP_MODELS.get(name)
        folder_name = spec.folder if spec else name
        for d in self.dirs:
            folder = d / folder_name
            if not folder.is_dir():
                continue
            weights = _clip_weights_in(folder)
            if weights is None:
                continue
            if spec is None and not (folder / CLIP_CONFIG_FILE).is_file():
                continue
            return ClipSource(name, folder, weights, spec)
        return None

    def clip(self, name: str) -> ClipSource:
        """The CLIP model `name` on disk, downloading a built-in one when allowed."""
        if name not in CLIP_MODELS and name not in self.clip_names():
            raise UserError(f"unknown CLIP model {name!r}; choose one of: {', '.join(self.clip_names())}")
        found = self._local_clip(name)
        if found:
            return found
        spec = CLIP_MODELS[name]   # custom names only exist when found on disk
        target = self.dirs[0] / spec.folder
        self._download(
            what=f"CLIP model {name}",
            repo=spec.hf_repo,
            target=target,
            files=[CLIP_WEIGHT_FILES],
            hint=f"download {CLIP_WEIGHT_FILES[0]} from {HF_URL}/{spec.hf_repo} and put it at "
                 f"{target / CLIP_WEIGHT_FILES[0]}",
        )
        found = self._local_clip(name)
        if found is None:  # pragma: no cover - the download checked its files
            raise UserError(f"CLIP model {name}: download finished but no weights in {target}")
        return found

    # ------------------------------------------------------------------ caption
    def _local_caption(self, name: str) -> CaptionSource | None:
        for d in self.dirs:
            folder = d / name
            if not (folder / "config.json").is_file():
                continue
            missing = [f for f in CAPTION_REQUIRED_FILES if not (folder / f).is_file()]
            if not _first_existing(folder, CAPTION_WEIGHT_FILES):
                missing.append(" or ".join(CAPTION_WEIGHT_FILES))
            if missing:
                raise UserError(f"caption model folder {folder} is incomplete: missing {', '.join(missing)}; "
                                f"it needs the files of a transformers BLIP model (config.json, "
                                f"model.safetensors, preprocessor_config.json, tokenizer files)")
            return CaptionSource(name, folder)
        return None

    def caption(self, name: str) -> CaptionSource:
        if name not in CAPTION_MODELS and name not in self.caption_names():
            raise UserError(f"unknown caption model {name!r}; choose one of: {', '.join(self.caption_names())}")
        found = self._local_caption(name)
        if found:
            return found
        spec = CAPTION_MODELS[name]
        target = self.dirs[0] / name
        self._download(
            what=f"caption model {name} ({spec.size})",
            repo=spec.hf_repo,
            target=target,
            files=[("config.json",), ("preprocessor_config.json",), ("tokenizer_config.json",),
                   ("tokenizer.json", "vocab.txt"), CAPTION_WEIGHT_FILES],
            optional=("special_tokens_map.json", "vocab.txt", "tokenizer.json", "generation_config.json"),
            hint=f"download config.json, model.safetensors, preprocessor_config.json and the tokenizer files "
                 f"(tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json) from "
                 f"{HF_URL}/{spec.hf_repo} into {target}",
        )
        found = self._local_caption(name)
        if found is None:  # pragma: no cover
            raise UserError(f"caption model {name}: download finished but {target} is not a model folder")
        return found

    # ------------------------------------------------------------------ download
    def _download(self, *, what: str, repo: str, target: Path, files: list[Sequence[str]],
                  hint: str, optional: Sequence[str] = ()) -> None:
        """Fetch `files` (each entry: alternatives, first that exists wins) of `repo` into `target`."""
        searched = ", ".join(str(d) for d in self.dirs)
        if not self.allow_download or hub_offline():
            why = "downloads are disabled" if not self.allow_download else "offline mode (HF_HUB_OFFLINE=1)"
            raise UserError(f"{what} is not on disk ({searched}) and {why}: {hint}")
        unreachable = hub_reachable()
        if unreachable:
            raise UserError(f"{what} is not on disk ({searched}) and cannot be downloaded ({unreachable}): {hint}")
        fetch_from_hub(repo, files, target, what=what, hint=hint, progress=self.progress, optional=optional)
        self.downloads += 1
        self.progress(f"downloaded {what}", 1.0)
