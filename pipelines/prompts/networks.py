"""LoRA and textual-inversion embeddings with AUTOMATIC1111's prompt syntax, on diffusers + peft.

LoRA (`models/Lora/`)
    `<lora:name:weight>` in the positive prompt (`<lora:name>` = 1.0; `<lora:name:te:unet>` or
    `te=`/`unet=` give the text-encoder and UNet weights separately; `<lyco:...>` is an alias). Tags are
    taken out of the prompt before it is encoded (every `<word:...>` tag, as A1111 does; kinds other than
    lora/lyco are reported and ignored). Files are A1111/kohya `.safetensors` (or `.pt`/`.ckpt`) LoRAs,
    or diffusers/peft-format ones, found by file name without extension (or `sub/name`).
    They are loaded with diffusers' `load_lora_weights(state_dict, adapter_name=...)`, several at once via
    `set_adapters(names, weights)`, and stay loaded (disabled) after a job, up to `max_loaded` per
    checkpoint, so naming one again costs nothing. Between jobs nothing leaks: a job that names no LoRA
    runs with every adapter disabled, which is bit-identical to the model without them.
    `fuse=True` (the app's default; `--no-lora-merge` turns it off) merges the active LoRAs into the
    weights, as A1111 and ComfyUI do, and keeps them merged while the next jobs name the same LoRAs at the
    same weights: no per-layer overhead while sampling (Fast LCM preset, 512x512 CPU: 10.4 s -> 8.3 s).
    The original weights are backed up first and copied back when a job wants other LoRAs or none, so
    unmerging is exact (peft's own unmerge subtracts and leaves rounding differences). The backup costs
    RAM while merged.
    A tag naming a missing or unloadable file is a warning in the result; generation goes on without it.
    Infotext: `Lora hashes: "name: hash"` (A1111: the first 12 hex digits of the kohya/addnet sha256).

Textual inversion (`models/embeddings/`)
    An embedding is used by writing its file name (without extension) in a prompt, positive or negative.
    Matching is A1111's: on tokens, so `easynegative` matches `EasyNegative,` but not inside another
    word. Formats: A1111 `.pt` (`string_to_param`), `.safetensors` with `emb_params`, diffusers files
    (`{token: vector}`), and SDXL files with `clip_l`/`clip_g`. An embedding occupies one token position
    per vector. Nothing is added to the shared tokenizer or the text encoder's vocabulary: the name's
    tokens are replaced by placeholder ids (negative, so CLIP's end-of-text pooling is unaffected) and a
    hook on the text encoder's token-embedding layer puts the vectors in their place during the job.
    Infotext: `TI hashes: "name: hash"` (first 12 hex digits of the file's sha256).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import ParameterError, UserError

log = logging.getLogger(__name__)

# A1111 modules/extra_networks.py: re_extra_net
TAG_RE = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")
LORA_EXTS = (".safetensors", ".pt", ".ckpt")
EMBEDDING_EXTS = (".safetensors", ".pt", ".bin")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
HASH_LEN = 12  # A1111's shorthash for LoRAs and embeddings


# =====================================================================================  prompt tags

@dataclass
class NetworkTag:
    kind: str            # "lora", "lyco", "hypernet", ...
    name: str
    te: float = 1.0      # text-encoder weight
    unet: float = 1.0    # UNet weight
    text: str = ""       # the tag as written
    error: str | None = None


def parse_prompt(prompt: str) -> tuple[str, list[NetworkTag]]:
    """(prompt without `<kind:...>` tags, the tags in order), A1111's `extra_networks.parse_prompt`."""
    tags: list[NetworkTag] = []

    def found(m: re.Match) -> str:
        tags.append(_parse_tag(m.group(1), m.group(2), m.group(0)))
        return ""

    return TAG_RE.sub(found, prompt or ""), tags


def _parse_tag(kind: str, args: str, text: str) -> NetworkTag:
    items = args.split(":")
    positional = [x for x in items if "=" not in x]
    named = dict(x.split("=", 1) for x in items if "=" in x)
    tag = NetworkTag(kind.lower(), (positional[0] if positional else "").strip(), text=text)
    try:
        tag.te = float(positional[1]) if len(positional) > 1 else 1.0
        tag.te = float(named.get("te", tag.te))
        tag.unet = float(positional[2]) if len(positional) > 2 else tag.te
        tag.unet = float(named.get("unet", tag.unet))
    except ValueError:
        tag.error = f"{text}: the weight is not a number"
    if not (math.isfinite(tag.te) and math.isfinite(tag.unet)):
        # nan/inf would be merged into the weights and make every later image of this LoRA black
        raise ParameterError("prompt", f"{text}: the weight must be a finite number")
    return tag


def lora_tag(name: str, weight: float = 1.0) -> str:
    """The tag that names a LoRA in a prompt (what an extra-networks picker inserts)."""
    w = f"{weight:g}"
    return f"<lora:{name}:{w}>"


def set_lora_tags(prompt: str, wanted: dict[str, float], managed: set[str] = frozenset()) -> str:
    """`prompt` with the LoRA tags of `managed` names taken out and one tag per `wanted` name appended
    (used by presets: switching preset swaps its LoRA, the user's own tags stay)."""
    drop = {n.lower() for n in managed} | {n.lower() for n in wanted}
    removed = 0

    def keep(m: re.Match) -> str:
        nonlocal removed
        tag = _parse_tag(m.group(1), m.group(2), m.group(0))
        if tag.kind in LORA_KINDS and tag.name.lower() in drop:
            removed += 1
            return ""
        return m.group(0)

    out = TAG_RE.sub(keep, prompt or "")
    if removed:  # tidy the separators the removed tags leave behind
        out = re.sub(r",[ \t]*(?:,[ \t]*)+", ", ", out)
        out = re.sub(r"[ \t]{2,}", " ", out).strip().strip(",").strip()
    tags = ", ".join(lora_tag(n, w) for n, w in wanted.items())
    if not tags:
        return out
    return f"{out}, {tags}" if out else tags


# =====================================================================================  files

@dataclass(frozen=True)
class NetworkFile:
    name: str            # file name without extension: what a prompt names
    path: Path
    rel: str             # path relative to its models folder, with extension

    @property
    def alias(self) -> str:
        return os.path.splitext(self.rel)[0]


def _scan(folders: list[Path], exts: tuple[str, ...]) -> list[NetworkFile]:
    found: dict[str, NetworkFile] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.lower().endswith(exts) and not f.startswith("."):
                    p = Path(root) / f
                    rel = p.relative_to(folder).as_posix()
                    found.setdefault(rel, NetworkFile(os.path.splitext(f)[0], p, rel))
    return sorted(found.values(), key=lambda n: n.rel.lower())


def _find(items: list[NetworkFile], name: str) -> NetworkFile | None:
    name = name.strip()
    for nf in items:
        if nf.name == name or nf.alias == name or nf.rel == name:
            return nf
    low = name.lower()
    for nf in items:
        if nf.name.lower() == low or nf.alias.lower() == low:
            return nf
    return None


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """diffusers/transformers/peft report every key they map while loading an adapter; the result is
    checked here instead, so their chatter stays out of the console."""
    levels = []
    for name in ("diffusers", "transformers", "peft"):
        logger = logging.getLogger(name)
        levels.append((logger, logger.level))
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in levels:
            logger.setLevel(level)


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a LoRA or embedding file; pickles load with `weights_only=True` (never run code)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - SafetensorError and friends: a damaged or partial file
            raise UserError(f"{path.name}: not a readable .safetensors file ({str(err)[:120]})") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the same message to the user
        raise UserError(f"{path.name}: cannot be read safely ({str(err).splitlines()[0][:120]}); "
                        "convert it to .safetensors") from None


# =====================================================================================  LoRA state per pipe

@dataclass
class _Adapter:
    adapter: str         # peft adapter name in the pipe's modules
    file: NetworkFile
    stamp: tuple         # (size, mtime) when loaded: a changed file is reloaded
    components: tuple[str, ...]


@dataclass
class _PipeState:
    adapters: "OrderedDict[str, _Adapter]" = field(default_factory=OrderedDict)   # by file rel, LRU order
    counter: int = 0
    backup: list | None = None        # [(base layer, original weight)] while fused
    fused_key: tuple = ()             # the LoRAs (files, stamps, weights) fused into the weights now


@dataclass
class AppliedLora:
    name: str
    file: NetworkFile
    te: float
    unet: float
    hash: str | None = None


def _lora_components(pipe) -> list[str]:
    names = list(getattr(pipe, "_lora_loadable_modules", ("unet", "text_encoder")))
    return [n for n in names if getattr(pipe, n, None) is not None]


def _tuner_layers(module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def _set_adapters_enabled(pipe, enabled: bool) -> None:
    for comp in _lora_components(pipe):
        for layer in _tuner_layers(getattr(pipe, comp)):
            layer.enable_adapters(enabled)


_LYCORIS_MARKERS = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "oft_blocks": "OFT", "oft_diag": "OFT",
                    ".on_input": "IA3", "b_norm": "GLoRA", "a1.weight": "GLoRA"}


def _lycoris_kind(state_dict: dict) -> str | None:
    for key in state_dict:
        for marker, kind in _LYCORIS_MARKERS.items():
            if marker in key:
                return kind
    return None


# =====================================================================================  embeddings

@dataclass
class Embedding:
    name: str
    file: NetworkFile
    vectors: dict[str, Any]    # "single" or "clip_l"/"clip_g" → tensor [n, dim]
    stamp: tuple
    info: dict = field(default_factory=dict)   # A1111 .pt extras: step, sd_checkpoint, sd_checkpoint_name

    @property
    def count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def for_encoders(self, encoders: list[tuple[str, Any]]) -> dict[str, Any] | None:
        """{encoder name: [n, dim] vectors} for a pipe's text encoders, or None when it does not fit
        (A1111 skips such embeddings: an SD1 file on SDXL, an SDXL file on SD1, ...)."""
        out = {}
        for comp, model in encoders:
            dim = model.get_input_embeddings().embedding_dim
            if "single" in self.vectors:
                vec = self.vectors["single"] if len(encoders) == 1 else None
            else:
                vec = self.vectors.get("clip_l" if comp == "text_encoder" else "clip_g")
            if vec is None or vec.shape[-1] != dim:
                return None
            out[comp] = vec
        if len({v.shape[0] for v in out.values()}) > 1:
            return None
        return out

    def describe(self) -> str:
        return ", ".join(f"{k} {tuple(v.shape)}" for k, v in self.vectors.items())


def load_embedding(nf: NetworkFile) -> Embedding:
    """Read an A1111/diffusers embedding file; UserError for a format it is not."""
    import torch

    data = read_state_dict(nf.path)
    if not isinstance(data, dict):
        raise UserError(f"{nf.rel}: not an embedding file")
    vectors: dict[str, Any] = {}
    if "clip_l" in data or "clip_g" in data:
        vectors = {k: data[k] for k in ("clip_l", "clip_g") if k in data}
    elif "string_to_param" in data:
        params = data["string_to_param"]
        values = list(params.values()) if isinstance(params, dict) else []
        if values:
            vectors = {"single": values[0]}
    elif "emb_params" in data:
        vectors = {"single": data["emb_params"]}
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            vectors = {"single": tensors[0]}
    if not vectors or not all(isinstance(v, torch.Tensor) and v.dim() >= 1 for v in vectors.values()):
        keys = ", ".join(list(map(str, data))[:6])
        raise UserError(f"{nf.rel}: unknown embedding format (keys: {keys})")
    vectors = {k: v.detach().float().reshape(-1, v.shape[-1]) for k, v in vectors.items()}
    st = nf.path.stat()
    info = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")
            if isinstance(data.get(k), (int, str))}
    return Embedding(nf.name, nf, vectors, (st.st_size, st.st_mtime), info)


class _TokenizerWithEmbeddings:
    """Wraps a CLIP tokenizer for `prompt_parser.tokenize_weighted`: embedding names' token runs become
    placeholder ids (-1 - slot); everything else is the wrapped tokenizer."""

    def __init__(self, tokenizer, session: "EmbeddingSession"):
        self._tokenizer = tokenizer
        self._session = session

    def __call__(self, texts, **kw):
        ids = self._tokenizer(texts, **kw)["input_ids"]
        return {"input_ids": [self._session.substitute(self._tokenizer, list(row)) for row in ids]}

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class EmbeddingSession:
    """Textual inversion for one job on one pipe: tokenizer wrappers + token-embedding hooks."""

    def __init__(self, manager: "NetworkManager", pipe):
        self.manager = manager
        self.encoders = [(n, getattr(pipe, n)) for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None]
        self.slots: list[tuple[Embedding, int]] = []
        self._slot_of: dict[tuple[str, int], int] = {}
        self.used: dict[str, Embedding] = {}
        self.skipped: dict[str, str] = {}
        self._vectors: dict[str, dict[str, Any]] = {}       # embedding name → per-encoder vectors
        self._name_ids: dict[int, dict] = {}                 # id(tokenizer) → {first id: [(ids, file)]}
        self._handles: list = []
        self._pending: dict[str, Any] = {}

    # ------------------------------------------------------------------ tokens
    def wrap(self, tokenizer):
        return _TokenizerWithEmbeddings(tokenizer, self)

    def _candidates(self, tokenizer) -> dict[int, list[tuple[list[int], NetworkFile]]]:
        key = id(tokenizer)
        table = self._name_ids.get(key)
        if table is None:
            files = self.manager.embedding_files()
            table = {}
            if files:
                rows = tokenizer([f.name for f in files], add_special_tokens=False, truncation=False)["input_ids"]
                for f, ids in zip(files, rows):
                    if ids:
                        table.setdefault(ids[0], []).append((list(ids), f))
                for cands in table.values():
                    cands.sort(key=lambda c: -len(c[0]))
            self._name_ids[key] = table
        return table

    def substitute(self, tokenizer, ids: list[int]) -> list[int]:
        table = self._candidates(tokenizer)
        if not table:
            return ids
        out: list[int] = []
        i = 0
        while i < len(ids):
            for cand, nf in table.get(ids[i], ()):
                if ids[i:i + len(cand)] == cand:
                    vectors = self._vectors_for(nf)
                    if vectors is None:
                        continue
                    emb = self.used[nf.name]
                    out.extend(-1 - self._slot(emb, k) for k in range(emb.count))
                    i += len(cand)
                    break
            else:
                out.append(ids[i])
                i += 1
        return out

    def _vectors_for(self, nf: NetworkFile):
        if nf.name in self._vectors:
            return self._vectors[nf.name]
        if nf.name in self.skipped:
            return None
        try:
            emb = self.manager.embedding(nf)
        except UserError as err:
            self.skipped[nf.name] = str(err)
            return None
        vectors = emb.for_encoders(self.encoders)
        if vectors is None:
            dims = ", ".join(f"{n} {m.get_input_embeddings().embedding_dim}" for n, m in self.encoders)
            self.skipped[nf.name] = (f"embedding {nf.name} ({emb.describe()}) does not fit this checkpoint's "
                                     f"text encoders ({dims}); its name was used as plain text")
            return None
        self._vectors[nf.name] = vectors
        self.used[nf.name] = emb
        return vectors

    def _slot(self, emb: Embedding, k: int) -> int:
        key = (emb.name, k)
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._slot_of[key] = len(self.slots)
            self.slots.append((emb, k))
        return slot

    # ------------------------------------------------------------------ hooks
    def install(self) -> None:
        for comp, model in self.encoders:
            layer = model.get_input_embeddings()
            self._handles.append(layer.register_forward_pre_hook(self._pre_hook(comp)))
            self._handles.append(layer.register_forward_hook(self._post_hook(comp)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pending.clear()

    def _pre_hook(self, comp: str):
        def hook(module, args):
            ids = args[0]
            placeholders = ids < 0
            if not bool(placeholders.any()):
                self._pending.pop(comp, None)
                return None
            self._pending[comp] = (placeholders, (-ids[placeholders] - 1).tolist())
            return (ids.masked_fill(placeholders, 0),) + tuple(args[1:])
        return hook

    def _post_hook(self, comp: str):
        import torch

        def hook(module, args, output):
            pending = self._pending.pop(comp, None)
            if pending is None:
                return None
            mask, slots = pending
            vecs = torch.stack([self._vectors[self.slots[s][0].name][comp][self.slots[s][1]] for s in slots])
            output = output.clone()
            output[mask] = vecs.to(output.device, output.dtype)
            return output
        return hook

    def infotext(self) -> dict[str, str]:
        if not self.used:
            return {}
        parts = []
        for name, emb in self.used.items():
            h = self.manager.file_hash(emb.file, addnet=False)
            if h:
                parts.append(f"{_clean_alias(name)}: {h}")
        return {"TI hashes": ", ".join(parts)} if parts else {}


def _clean_alias(name: str) -> str:
    return name.replace(":", "").replace(",", "")


# =====================================================================================  the job

@dataclass
class NetworkJob:
    """What `NetworkManager.apply` did for one job: the prompt to encode, LoRAs, embeddings, warnings."""

    prompt: str                                   # positive prompt without network tags (to encode)
    loras: list[AppliedLora] = field(default_factory=list)
    embeddings: EmbeddingSession | None = None
    warnings: list[str] = field(default_factory=list)
    fused: bool = False
    pipe: Any = None
    released: bool = False

    def infotext(self) -> dict[str, str]:
        """`Lora hashes` / `TI hashes` for the infotext (A1111 keys and format)."""
        out: dict[str, str] = {}
        hashes = [f"{_clean_alias(a.file.name)}: {a.hash}" for a in self.loras if a.hash]
        if hashes:
            out["Lora hashes"] = ", ".join(hashes)
        if self.embeddings is not None:
            out.update(self.embeddings.infotext())
        return out

    def all_warnings(self) -> list[str]:
        """Warnings so far, with embeddings that did not fit (known once the prompts were tokenized)."""
        skipped = list(self.embeddings.skipped.values()) if self.embeddings is not None else []
        return list(dict.fromkeys(self.warnings + skipped))


class NetworkManager:
    """LoRAs and embeddings of one ModelPaths (models/Lora, models/embeddings and A1111 folders)."""

    def __init__(self, paths, *, fuse: bool = False, max_loaded: int = 4, hashes=None, hashing: bool = True):
        self.paths = paths
        # Setting: merge the active LoRAs into the weights (A1111's and ComfyUI's way) and keep them merged
        # while the next jobs ask for the same ones; the originals wait in a backup and come back exactly.
        self.fuse = bool(fuse)
        self.max_loaded = max(1, int(max_loaded))
        self.hashes = hashes
        self.hashing = hashing
        self._lock = threading.RLock()
        self._loras: list[NetworkFile] | None = None
        self._embedding_files: list[NetworkFile] | None = None
        self._embeddings: dict[str, Embedding] = {}
        self._states: "weakref.WeakKeyDictionary[Any, _PipeState]" = weakref.WeakKeyDictionary()
        self.lora_loads = 0                    # files actually loaded into a pipe (tests check the cache)

    # ------------------------------------------------------------------ listing
    def refresh(self) -> None:
        with self._lock:
            self._loras = None
            self._embedding_files = None
            self._embeddings.clear()

    def lora_files(self) -> list[NetworkFile]:
        with self._lock:
            if self._loras is None:
                self._loras = _scan(self.paths.dirs("lora"), LORA_EXTS)
            return list(self._loras)

    def embedding_files(self) -> list[NetworkFile]:
        with self._lock:
            if self._embedding_files is None:
                self._embedding_files = _scan(self.paths.dirs("embeddings"), EMBEDDING_EXTS)
            return list(self._embedding_files)

    @staticmethod
    def lora_tags(prompt: str) -> list[NetworkTag]:
        """The `<lora:...>` / `<lyco:...>` tags of a prompt, in order (for code below this layer, e.g. the
        reproduce summary of pipelines.images, which is handed a NetworkManager)."""
        return [tag for tag in parse_prompt(prompt)[1] if tag.kind in LORA_KINDS and tag.name]

    def find_lora(self, name: str) -> NetworkFile | None:
        nf = _find(self.lora_files(), name)
        if nf is None:  # a file added since the last listing is found without pressing refresh
            with self._lock:
                self._loras = None
            nf = _find(self.lora_files(), name)
        return nf

    def embedding(self, nf: NetworkFile) -> Embedding:
        st = nf.path.stat()
        with self._lock:
            emb = self._embeddings.get(nf.rel)
            if emb is None or emb.stamp != (st.st_size, st.st_mtime):
                emb = self._embeddings[nf.rel] = load_embedding(nf)
            return emb

    def file_hash(self, nf: NetworkFile, *, addnet: bool) -> str | None:
        if not self.hashing or self.hashes is None:
            return None
        try:
            if addnet and nf.path.suffix.lower() == ".safetensors":
                digest = self.hashes.addnet(nf.path)
            else:
                digest = self.hashes.sha256(nf.path)
        except OSError:
            return None
        return digest[:HASH_LEN] if digest else None

    def lora_list(self) -> list[dict[str, Any]]:
        """LoRA files as A1111's `GET /sdapi/v1/loras` lists them (name, alias, path, metadata)."""
        out = []
        for nf in self.lora_files():
            metadata: dict[str, Any] = {}
            if nf.path.suffix.lower() == ".safetensors":
                try:
                    from safetensors import safe_open

                    with safe_open(str(nf.path), framework="pt") as f:
                        metadata = dict(f.metadata() or {})
                except Exception:  # noqa: BLE001 - a damaged file is listed without metadata
                    metadata = {}
            out.append({"name": nf.name, "alias": nf.alias, "path": str(nf.path), "metadata": metadata})
        return out

    def embedding_list(self, pipe=None) -> dict[str, dict[str, Any]]:
        """Embeddings as A1111's `GET /sdapi/v1/embeddings` lists them: {"loaded": {...}, "skipped": {...}},
        loaded = usable with `pipe`'s text encoders (every readable file when no pipe is given)."""
        encoders = [(n, getattr(pipe, n)) for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None] if pipe else []
        loaded, skipped = {}, {}
        for nf in self.embedding_files():
            try:
                emb = self.embedding(nf)
            except (UserError, OSError) as err:  # a broken file is left out of the list
                log.warning("embedding %s: %s", nf.rel, err)
                continue
            entry = {"step": emb.info.get("step"), "sd_checkpoint": emb.info.get("sd_checkpoint"),
                     "sd_checkpoint_name": emb.info.get("sd_checkpoint_name"),
                     "shape": sum(v.shape[-1] for v in emb.vectors.values()), "vectors": emb.count}
            fits = emb.for_encoders(encoders) is not None if encoders else True
            (loaded if fits else skipped)[nf.name] = entry
        return {"loaded": loaded, "skipped": skipped}

    def loaded_adapters(self, pipe) -> list[str]:
        """Files whose adapters are loaded in this pipe's modules (active or not)."""
        state = self._states.get(pipe.unet)
        return [a.file.rel for a in state.adapters.values()] if state else []

    def merge_backup_bytes(self, pipe) -> int:
        """RAM held by the backup of the original weights while LoRAs are merged into this pipe."""
        state = self._states.get(pipe.unet)
        backup = state.backup if state else None
        return sum(w.numel() * w.element_size() for _, w in backup or [])

    # ------------------------------------------------------------------ jobs
    @contextlib.contextmanager
    def activate(self, pipe, prompt: str) -> Iterator[NetworkJob]:
        job = self.apply(pipe, prompt)
        try:
            yield job
        finally:
            self.release(job)

    def apply(self, pipe, prompt: str) -> NetworkJob:
        """Make `pipe` run with exactly the LoRAs `prompt` names; returns the prompt to encode, the
        embedding session (pass `job.embeddings` to PromptEncoder), infotext extras and warnings.
        Call `release(job)` when the job ends (or use `activate`)."""
        cleaned, tags = parse_prompt(prompt)
        job = NetworkJob(prompt=cleaned, pipe=pipe)
        wanted: "OrderedDict[str, AppliedLora]" = OrderedDict()
        for tag in tags:
            if tag.kind not in LORA_KINDS:
                job.warnings.append(f"{tag.text}: '{tag.kind}' networks are not supported; the tag was ignored")
                continue
            if tag.error:
                job.warnings.append(tag.error + "; the tag was ignored")
                continue
            nf = self.find_lora(tag.name) if tag.name else None
            if nf is None:
                where = ", ".join(str(d) for d in self.paths.dirs("lora"))
                job.warnings.append(f"LoRA '{tag.name}' not found in {where}; generation continued without it")
                continue
            if nf.rel in wanted:  # named twice: the weights add up
                wanted[nf.rel].te += tag.te
                wanted[nf.rel].unet += tag.unet
            else:
                wanted[nf.rel] = AppliedLora(tag.name, nf, tag.te, tag.unet)
        try:
            with self._lock:
                self._apply_loras(pipe, job, list(wanted.values()))
            job.embeddings = EmbeddingSession(self, pipe)
            job.embeddings.install()
        except BaseException:
            self.release(job)   # nothing half-applied stays behind
            raise
        return job

    def release(self, job: NetworkJob) -> None:
        """Back to the checkpoint's own behaviour: embeddings hooks removed, LoRAs unfused and disabled
        (kept loaded for the next job that names them, up to `max_loaded`)."""
        if job.released:
            return
        job.released = True
        if job.embeddings is not None:
            job.embeddings.remove()
        pipe = job.pipe
        with self._lock:
            state = self._states.get(pipe.unet)
            if state is None:
                return
            if state.backup is not None and self.fuse:
                return   # stays merged for a next job with the same LoRAs; `_apply_loras` restores otherwise
            self._unfuse(pipe, state)
            if state.adapters:
                _set_adapters_enabled(pipe, False)
            while len(state.adapters) > self.max_loaded:
                _, old = state.adapters.popitem(last=False)
                self._delete(pipe, state, old)

    # ------------------------------------------------------------------ LoRA internals
    def _apply_loras(self, pipe, job: NetworkJob, wanted: list[AppliedLora]) -> None:
        state = self._states.get(pipe.unet)
        if state is None:
            state = self._states[pipe.unet] = _PipeState()
        key = self._fuse_key(wanted)
        if not (self.fuse and key and key == state.fused_key):
            self._unfuse(pipe, state)  # other LoRAs (or none) now, or a crashed job: back to the originals
        active: list[tuple[_Adapter, AppliedLora]] = []
        for lora in wanted:
            if lora.te == 0 and lora.unet == 0:
                continue
            adapter = self._ensure_loaded(pipe, state, lora.file, job)
            if adapter is not None:
                lora.hash = self.file_hash(lora.file, addnet=True)
                active.append((adapter, lora))
                job.loras.append(lora)
        if not active:
            if state.adapters:
                _set_adapters_enabled(pipe, False)
            return
        if state.backup is not None:   # the same LoRAs are still merged from the previous job
            job.fused = True
            return
        names = [a.adapter for a, _ in active]
        weights = [{c: (lora.unet if c in ("unet", "transformer") else lora.te) for c in a.components}
                   for a, lora in active]
        _set_adapters_enabled(pipe, True)
        with _quiet_loading():
            pipe.set_adapters(names, weights)
        # A UNet compiled with frozen weights (CPU --compile) would not see weights fused in place.
        if self.fuse and not getattr(pipe.unet, "_weights_frozen", False):
            self._fuse(pipe, state, names, sorted({c for a, _ in active for c in a.components}))
            state.fused_key = key
            job.fused = True

    @staticmethod
    def _fuse_key(wanted: list[AppliedLora]) -> tuple:
        """What a merge depends on: each LoRA's file (and its size/mtime: an edited file is reloaded) and
        weights."""
        out = []
        for lora in wanted:
            if lora.te == 0 and lora.unet == 0:
                continue
            try:
                st = lora.file.path.stat()
            except OSError:
                return ()
            out.append((lora.file.rel, st.st_size, st.st_mtime, lora.te, lora.unet))
        return tuple(out)

    def _ensure_loaded(self, pipe, state: _PipeState, nf: NetworkFile, job: NetworkJob) -> _Adapter | None:
        st = nf.path.stat()
        stamp = (st.st_size, st.st_mtime)
        adapter = state.adapters.get(nf.rel)
        if adapter is not None:
            if adapter.stamp == stamp:
                state.adapters.move_to_end(nf.rel)
                return adapter
            state.adapters.pop(nf.rel)
            self._delete(pipe, state, adapter)   # the file changed on disk: load it again
        try:
            sd = read_state_dict(nf.path)
        except (UserError, OSError) as err:
            job.warnings.append(f"LoRA '{nf.name}': {err}; generation continued without it")
            return None
        kind = _lycoris_kind(sd)
        if kind:
            job.warnings.append(f"LoRA '{nf.name}' is a LyCORIS {kind} network, which diffusers cannot load; "
                                "generation continued without it")
            return None
        state.counter += 1
        name = f"{re.sub(r'[^0-9A-Za-z_]', '_', nf.name)[:40]}_{state.counter}"
        before = {c: set(v) for c, v in pipe.get_list_adapters().items()} if state.adapters else {}
        try:
            with _quiet_loading():
                pipe.load_lora_weights(sd, adapter_name=name)
        except Exception as err:  # noqa: BLE001 - diffusers raises many kinds; all mean "does not fit"
            self._delete(pipe, state, _Adapter(name, nf, stamp, tuple(_lora_components(pipe))))
            msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            job.warnings.append(f"LoRA '{nf.name}' could not be loaded into this checkpoint ({msg}); "
                                "generation continued without it")
            return None
        components = tuple(c for c, names in pipe.get_list_adapters().items()
                           if name in names and name not in before.get(c, ()))
        if not components:
            job.warnings.append(f"LoRA '{nf.name}' matched no layer of this checkpoint (made for another "
                                "architecture?); generation continued without it")
            return None
        adapter = _Adapter(name, nf, stamp, components)
        state.adapters[nf.rel] = adapter
        self.lora_loads += 1
        log.info("loaded LoRA %s into %s", nf.rel, ", ".join(components))
        return adapter

    def _delete(self, pipe, state: _PipeState, adapter: _Adapter) -> None:
        with _quiet_loading():
            for comp in _lora_components(pipe):
                model = getattr(pipe, comp)
                present = any(adapter.adapter in getattr(layer, "lora_A", {}) or
                              adapter.adapter in getattr(layer, "lora_B", {}) for layer in _tuner_layers(model))
                if not present:
                    continue
                try:
                    if hasattr(model, "delete_adapters"):
                        model.delete_adapters([adapter.adapter])
                    else:
                        from diffusers.utils.peft_utils import delete_adapter_layers

                        delete_adapter_layers(model, adapter.adapter)
                except Exception:  # noqa: BLE001
                    log.exception("could not delete adapter %s from %s", adapter.adapter, comp)
            if not state.adapters:
                # Nothing left: take the peft wrappers out so the modules are the checkpoint's own again.
                try:
                    pipe.unload_lora_weights()
                except Exception:  # noqa: BLE001
                    log.exception("could not unload LoRA layers")

    def _fuse(self, pipe, state: _PipeState, names: list[str], components: list[str]) -> None:
        import torch

        layers = []
        for comp in components:
            for layer in _tuner_layers(getattr(pipe, comp)):
                if any(n in getattr(layer, "lora_A", {}) for n in names):
                    layers.append(layer)
        with torch.no_grad():
            state.backup = [(layer.get_base_layer(), layer.get_base_layer().weight.detach().to("cpu", copy=True))
                            for layer in layers]
        with _quiet_loading():
            pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=names)

    def _unfuse(self, pipe, state: _PipeState) -> None:
        import torch

        if state.backup is None:
            return
        with _quiet_loading():
            pipe.unfuse_lora(components=_lora_components(pipe))
        with torch.no_grad():
            for base, weight in state.backup:
                base.weight.copy_(weight)
        state.backup = None
        state.fused_key = ()
