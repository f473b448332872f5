"""`Interrogator`: image → prompt with a caption model and CLIP-ranked label lists.

Modes (after clip-interrogator's algorithm, own implementation):

- `caption`  the caption model's sentence only.
- `fast`     caption + the `max_flavors` best phrases of all prompt tables merged, cut to 77 tokens.
- `classic`  "caption, medium by artist, trending, movement, 3 flavors" — readable, A1111-like.
- `best`     caption, then a greedy chain: from the `candidates` best-ranked phrases, keep adding the
             one that most raises the prompt's CLIP similarity (at least `min_flavors`, at most
             `max_flavors`, never past the 77-token context, stop when nothing raises it); the most
             similar of caption / classic / fast / chain is returned.
- `negative` the same chain run backwards over the least similar flavors + the negative list.

Every mode returns a prompt that fits the CLIP context (77 tokens with start/end, counted with the
model's own tokenizer).

Memory: models load on first use onto `device` and stay (`keep_on_device`) until `release_device()`
(the generation side calls it: models go to the CPU, or are dropped with `unload=True`) or
`unload()`. On a GPU, `offload_diffusion` (a callable given by the app) is called before each job to
move the diffusion checkpoint off the device; if it returns a callable, that is called after the job.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from ..core.errors import ParameterError, UserError
from . import labels as L
from .sources import DEFAULT_CAPTION, DEFAULT_CLIP, ModelSources

log = logging.getLogger(__name__)

MODES = ("caption", "fast", "classic", "best", "negative")
Progress = Callable[[str, float], None]
OffloadHook = Callable[[], "Callable[[], None] | None"]

_MODE_TABLES = {
    "caption": (),
    "fast": L.PROMPT_TABLES,
    "classic": ("mediums", "artists", "trendings", "movements", "flavors"),
    "best": L.PROMPT_TABLES,
    "negative": ("flavors", "negative"),
}


@dataclass
class InterrogateOptions:
    """Per-request settings; defaults are clip-interrogator's."""

    min_flavors: int = 8            # best: phrases the chain always adds
    max_flavors: int = 32           # best/negative: chain length; fast: phrases added
    classic_flavors: int = 3        # classic: flavors after the artist/movement
    candidates: int | None = None   # best/negative: top-ranked phrases the chain chooses from;
    #                                 None → 2048 on a GPU, 256 on the CPU (each chain step encodes them all)
    caption_max_tokens: int = 32
    caption_min_tokens: int = 0
    caption_num_beams: int = 1
    top_k: int = 5                  # best matches reported per table (InterrogationResult.tops)

    def validate(self) -> "InterrogateOptions":
        for name, lo, hi in (("min_flavors", 0, 200), ("max_flavors", 0, 200), ("classic_flavors", 0, 200),
                             ("caption_max_tokens", 1, 512), ("caption_min_tokens", 0, 512),
                             ("caption_num_beams", 1, 16), ("top_k", 0, 1000)):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ParameterError(name, f"must be an integer from {lo} to {hi} (got {v!r})")
        if self.candidates is not None and (not isinstance(self.candidates, int) or not 1 <= self.candidates <= 100_000):
            raise ParameterError("candidates", f"must be an integer from 1 to 100000 (got {self.candidates!r})")
        return self


@dataclass
class InterrogationResult:
    prompt: str
    mode: str
    caption: str | None
    clip_model: str | None
    caption_model: str | None
    similarity: float | None        # cosine similarity of `prompt` to the image (None in caption mode)
    tops: dict[str, list[tuple[str, float]]] = field(default_factory=dict)   # table → [(phrase, cosine)]
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tops"] = {k: [[p, s] for p, s in v] for k, v in self.tops.items()}
        return d


@dataclass
class InterrogatorCounters:
    """What happened, for tests, the benchmark and the UI's status line."""

    clip_loads: int = 0
    caption_loads: int = 0
    table_cache_hits: int = 0       # label tables read from the on-disk cache
    table_computes: int = 0         # label tables embedded with the text encoder (and written)
    labels_embedded: int = 0        # phrases run through the text encoder for tables
    chain_steps: int = 0
    chain_texts: int = 0            # "<prompt>, <phrase>" texts scored by the chains
    unloads: int = 0
    releases: int = 0


class Interrogator:
    """Caption + CLIP interrogation. Thread-safe: one job at a time (`lock`).

    model_dirs         folders in the `models/interrogate` layout (first one receives downloads)
    cache_dir          where label-table embeddings are cached (safetensors)
    device, dtype      "cpu"/"cuda"/...; dtype None: float16 on CUDA, float32 elsewhere
    clip_model, caption_model   defaults when a call names none (see `clip_models()`, `caption_models()`)
    allow_download     False: a missing model is an error naming the file to put where
    lists_dir          folder of `<table>.txt` files replacing shipped lists; label_lists: final phrases
                       per table (tests, custom lists)
    offload_diffusion  on a GPU: called before each job to move the diffusion checkpoint off the device;
                       a callable it returns is called after the job
    keep_on_device     False: models go back to the CPU after each job
    low_vram           only one of the two models on the device at a time
    batch_size         texts per text-encoder batch (default 256 on the CPU, 1024 on a GPU)
    progress           (stage, fraction) listener; raising in it (e.g. `Interrupted`) stops the job
    """

    def __init__(self, model_dirs: Sequence[Path | str] | Path | str, *, cache_dir: Path | str,
                 device: str = "cpu", dtype: str | None = None,
                 clip_model: str = DEFAULT_CLIP, caption_model: str = DEFAULT_CAPTION,
                 allow_download: bool = True, lists_dir: Path | str | None = None,
                 label_lists: Mapping[str, Sequence[str]] | None = None,
                 offload_diffusion: OffloadHook | None = None, keep_on_device: bool = True,
                 low_vram: bool = False, batch_size: int | None = None, progress: Progress | None = None):
        if isinstance(model_dirs, (str, Path)):
            model_dirs = [model_dirs]
        self._listeners: list[Progress] = [progress] if progress else []
        self.sources = ModelSources(list(model_dirs), allow_download=allow_download, progress=self._progress)
        self.cache = L.EmbeddingCache(cache_dir)
        self.device = device
        self.dtype = dtype
        self.default_clip = clip_model
        self.default_caption = caption_model
        self.lists_dir = Path(lists_dir) if lists_dir else None
        self.label_overrides = {k: list(v) for k, v in (label_lists or {}).items()}
        for k in self.label_overrides:
            if k not in L.TABLES:
                raise ValueError(f"label_lists: unknown table {k!r} (one of {', '.join(L.TABLES)})")
        self.offload_diffusion = offload_diffusion
        self.keep_on_device = keep_on_device
        self.low_vram = low_vram
        self.batch_size = batch_size or (1024 if not device.startswith("cpu") else 256)
        self.lock = threading.RLock()
        self.counters = InterrogatorCounters()
        self.clip = None         # ClipModel | None
        self.captioner = None    # CaptionModel | None
        self._tables: dict[str, L.LabelTable] = {}
        self._merged: L.LabelTable | None = None
        self._lists: dict[str, list[str]] = {}
        self.status = "idle"

    @classmethod
    def from_paths(cls, paths, **kwargs) -> "Interrogator":
        """From the app's `pipelines.models.files.ModelPaths`: models in `models/interrogate` (+ the A1111
        folders given); label embeddings cached in `<cache_dir>/interrogate`, or without a cache dir in
        `models/interrogate/.cache`. kwargs go to the constructor."""
        if "cache_dir" not in kwargs:
            kwargs["cache_dir"] = (Path(paths.cache_dir) / "interrogate" if paths.cache_dir
                                   else Path(paths.models_dir) / "interrogate" / ".cache")
        return cls(paths.dirs("interrogate"), **kwargs)

    # ------------------------------------------------------------------ progress
    def add_listener(self, fn: Progress) -> None:
        self._listeners.append(fn)

    def _progress(self, stage: str, fraction: float) -> None:
        """Report to listeners. A listener may raise (e.g. `Interrupted`) to stop the job."""
        self.status = f"{stage} ({fraction:.0%})" if fraction < 1 else stage
        for fn in list(self._listeners):
            fn(stage, fraction)

    # ------------------------------------------------------------------ models
    def clip_models(self) -> list[str]:
        return self.sources.clip_names()

    def caption_models(self) -> list[str]:
        return self.sources.caption_names()

    def load_clip(self, name: str | None = None):
        """The CLIP model `name` (default: the constructor's), loading it and dropping another."""
        from .clip_model import ClipModel

        name = name or self.default_clip
        with self.lock:
            if self.clip is not None and self.clip.name == name:
                return self.clip
            source = self.sources.clip(name)
            self._drop_clip()
            self._progress(f"loading CLIP model {name}", 0.0)
            self.clip = ClipModel(source, device="cpu" if self.low_vram else self.device, dtype=self.dtype)
            self.counters.clip_loads += 1
            log.info("interrogate: loaded CLIP %s in %.1fs", name, self.clip.load_seconds)
            self._progress(f"CLIP model {name} loaded", 1.0)
            return self.clip

    def load_caption(self, name: str | None = None):
        from .caption import CaptionModel

        name = name or self.default_caption
        with self.lock:
            if self.captioner is not None and self.captioner.name == name:
                return self.captioner
            source = self.sources.caption(name)
            self._drop_caption()
            self._progress(f"loading caption model {name}", 0.0)
            self.captioner = CaptionModel(source, device="cpu" if self.low_vram else self.device, dtype=self.dtype)
            self.counters.caption_loads += 1
            log.info("interrogate: loaded caption model %s in %.1fs", name, self.captioner.load_seconds)
            self._progress(f"caption model {name} loaded", 1.0)
            return self.captioner

    def _drop_clip(self) -> None:
        self.clip = None
        self._tables.clear()
        self._merged = None

    def _drop_caption(self) -> None:
        self.captioner = None

    def _use(self, model):
        """Put `model` on the device (in low-VRAM mode the other model leaves it first)."""
        if model.device != self.device:
            if self.low_vram:
                for other in (self.clip, self.captioner):
                    if other is not None and other is not model and other.device != "cpu":
                        other.to("cpu")
            model.to(self.device)
        return model

    @property
    def _on_gpu(self) -> bool:
        return not self.device.startswith("cpu")

    def to(self, device: str) -> "Interrogator":
        """Move loaded models to `device`; later loads go there too."""
        with self.lock:
            self.device = device
            for m in (self.clip, self.captioner):
                if m is not None and not self.low_vram:
                    m.to(device)
            self._free()
        return self

    def release_device(self, unload: bool = False) -> bool:
        """Free the accelerator for generation: models to the CPU (or dropped with `unload`).

        Waits for a running interrogation, except on a CPU-only setup without `unload` (nothing to
        free: returns at once). Returns True when anything was moved or dropped.
        """
        if not unload and not self._on_gpu and all(
                m is None or m.device.startswith("cpu") for m in (self.clip, self.captioner)):
            return False
        with self.lock:
            self.counters.releases += 1
            if unload:
                had = self.clip is not None or self.captioner is not None
                self.unload()
                return had
            moved = False
            for m in (self.clip, self.captioner):
                if m is not None and m.device != "cpu":
                    m.to("cpu")
                    moved = True
            if moved:
                self._free()
            return moved

    def unload(self) -> None:
        """Drop both models and the in-memory label tables (the disk cache stays)."""
        with self.lock:
            self._drop_clip()
            self._drop_caption()
            self.counters.unloads += 1
            self._free()
            self.status = "unloaded"

    def _free(self) -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def loaded(self) -> dict:
        return {
            "clip_model": self.clip.name if self.clip else None,
            "clip_device": self.clip.device if self.clip else None,
            "caption_model": self.captioner.name if self.captioner else None,
            "caption_device": self.captioner.device if self.captioner else None,
            "tables": {k: len(v) for k, v in self._tables.items()},
            "device": self.device,
            "status": self.status,
        }

    @contextmanager
    def _job(self) -> Iterator[None]:
        """Hold the lock; on a GPU make room (offload_diffusion) and tidy up after."""
        with self.lock:
            restore = None
            if self._on_gpu and self.offload_diffusion is not None:
                restore = self.offload_diffusion()
            try:
                yield
            finally:
                try:
                    if self._on_gpu and (not self.keep_on_device or self.low_vram):
                        for m in (self.clip, self.captioner):
                            if m is not None and m.device != "cpu":
                                m.to("cpu")
                        self._free()
                finally:
                    if callable(restore):
                        restore()

    # ------------------------------------------------------------------ label tables
    def label_lists(self, names: Sequence[str] = L.TABLES) -> dict[str, list[str]]:
        """The phrases of each table (shipped lists, `lists_dir` files, `label_lists` overrides)."""
        missing = [n for n in names if n not in self._lists]
        if missing:
            from_files = [n for n in missing if n not in self.label_overrides]
            loaded = L.load_label_lists(self.lists_dir, only=from_files) if from_files else {}
            for n in missing:
                self._lists[n] = _dedupe(self.label_overrides[n] if n in self.label_overrides else loaded[n])
        return {n: self._lists[n] for n in names}

    def tables(self, names: Sequence[str] = L.TABLES, clip_model: str | None = None) -> dict[str, L.LabelTable]:
        """Label tables with embeddings for the CLIP model: from memory, the disk cache, or computed."""
        with self.lock:
            clip = self.load_clip(clip_model)
            lists = self.label_lists([n for n in names if n not in self._tables])
            for name, phrases in lists.items():
                stage = f"embedding {name} ({len(phrases)} phrases) for {clip.name}"

                def encode(texts, stage=stage):
                    self._progress(stage, 0.0)
                    self._use(clip)
                    out = clip.encode_texts(texts, batch_size=self.batch_size, progress=self._progress, stage=stage)
                    self.counters.labels_embedded += len(texts)
                    return out

                table, hit = L.build_table(name, phrases, model_name=clip.name, fingerprint=clip.fingerprint,
                                           encode=encode, cache=self.cache)
                if hit:
                    self.counters.table_cache_hits += 1
                else:
                    self.counters.table_computes += 1
                self._tables[name] = table
            return {n: self._tables[n] for n in names}

    def _prompt_table(self) -> L.LabelTable:
        """All prompt tables of the loaded CLIP model as one (built once per model)."""
        if self._merged is None:
            self._merged = L.merge_tables(self.tables(L.PROMPT_TABLES, self.clip.name), L.PROMPT_TABLES)
        return self._merged

    # ------------------------------------------------------------------ primitives
    def caption(self, image, *, caption_model: str | None = None, options: InterrogateOptions | None = None) -> str:
        image = _as_pil(image)
        opts = (options or InterrogateOptions()).validate()
        with self._job():
            return self._caption(image, caption_model, opts)

    def _caption(self, image, caption_model: str | None, opts: InterrogateOptions) -> str:
        model = self._use(self.load_caption(caption_model))
        self._progress("captioning", 0.0)
        return model.caption(image, max_tokens=opts.caption_max_tokens, min_tokens=opts.caption_min_tokens,
                             num_beams=opts.caption_num_beams)

    def image_features(self, image, clip_model: str | None = None):
        """(1, D) unit-norm float32 CLIP image features on the CPU."""
        image = _as_pil(image)
        with self._job():
            return self._image_features(image, clip_model)

    def _image_features(self, image, clip_model: str | None):
        clip = self._use(self.load_clip(clip_model))
        return clip.encode_image(image)

    def similarities(self, image, texts: Sequence[str], clip_model: str | None = None) -> list[float]:
        """Cosine similarity of the image to each text (texts over 77 tokens are truncated)."""
        image = _as_pil(image)
        with self._job():
            feats = self._image_features(image, clip_model)
            return self._sims(feats, texts)

    def _sims(self, feats, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        clip = self._use(self.clip)
        return (clip.encode_texts(list(texts), batch_size=self.batch_size) @ feats.reshape(-1)).tolist()

    def clip_score(self, image, prompt: str, clip_model: str | None = None) -> float:
        """CLIP score as commonly reported: 100 × max(cosine similarity, 0)."""
        return 100.0 * max(self.similarities(image, [prompt], clip_model)[0], 0.0)

    def rank(self, image, table: str, top_k: int = 5, clip_model: str | None = None,
             reverse: bool = False) -> list[tuple[str, float]]:
        """The `top_k` phrases of one table closest to the image (A1111's per-category view)."""
        if table not in L.TABLES:
            raise ParameterError("table", f"unknown label list {table!r}; one of {', '.join(L.TABLES)}")
        image = _as_pil(image)
        with self._job():
            feats = self._image_features(image, clip_model)
            return self.tables([table], clip_model)[table].rank(feats, top_k, reverse=reverse)

    # ------------------------------------------------------------------ interrogation
    def interrogate(self, image, mode: str = "best", *, clip_model: str | None = None,
                    caption_model: str | None = None, caption: str | None = None,
                    options: InterrogateOptions | None = None) -> InterrogationResult:
        """Image (PIL) → prompt. `caption` skips the caption model when given."""
        if mode not in MODES:
            raise ParameterError("mode", f"unknown interrogation mode {mode!r}; one of {', '.join(MODES)}")
        image = _as_pil(image)
        opts = (options or InterrogateOptions()).validate()
        t0 = time.perf_counter()
        with self._job():
            needs_caption = mode != "negative" and caption is None
            cap = self._caption(image, caption_model, opts) if needs_caption else caption
            if mode == "caption":
                return InterrogationResult(cap or "", mode, cap, None,
                                           self.captioner.name if needs_caption else None, None,
                                           seconds=time.perf_counter() - t0)
            tables = self.tables(_MODE_TABLES[mode], clip_model)
            feats = self._image_features(image, clip_model)
            clip = self.clip
            cap = (cap or "").strip()
            self._progress(f"interrogating ({mode})", 0.0)
            if mode == "fast":
                prompt = self._fast(feats, cap, opts.max_flavors)
            elif mode == "classic":
                prompt = self._classic(feats, cap, opts.classic_flavors)
            elif mode == "best":
                prompt = self._best(feats, cap, opts)
            else:
                prompt = self._negative(feats, opts)
            prompt = clip.truncate_to_fit(prompt)
            sim = self._sims(feats, [prompt])[0] if prompt else None
            reverse = mode == "negative"
            tops = {n: t.rank(feats, opts.top_k, reverse=reverse) for n, t in tables.items()} if opts.top_k else {}
            self._progress(f"interrogation done ({mode})", 1.0)
            return InterrogationResult(prompt, mode, cap if mode != "negative" else None, clip.name,
                                       self.captioner.name if needs_caption else None, sim, tops,
                                       time.perf_counter() - t0)

    def _fast(self, feats, caption: str, count: int) -> str:
        tops = [p for p, _ in self._prompt_table().rank(feats, count)]
        return self.clip.truncate_to_fit(_join([caption, *tops]))

    def _classic(self, feats, caption: str, flavors: int) -> str:
        t = self._tables
        medium = _top1(t["mediums"], feats)
        artist = _top1(t["artists"], feats)
        trending = _top1(t["trendings"], feats)
        movement = _top1(t["movements"], feats)
        flaves = [p for p, _ in t["flavors"].rank(feats, flavors)]
        if caption and medium and caption.startswith(medium):
            head = f"{caption} {artist}".strip()
        else:
            head = _join([caption, f"{medium} {artist}".strip()])
        return self.clip.truncate_to_fit(_join([head, trending, movement, *flaves]))

    def _candidates(self, opts: InterrogateOptions) -> int:
        return opts.candidates or (2048 if self._on_gpu else 256)

    def _best(self, feats, caption: str, opts: InterrogateOptions) -> str:
        phrases = [p for p, _ in self._prompt_table().rank(feats, self._candidates(opts))]
        start = self.clip.truncate_to_fit(caption) if caption else ""
        start_sim = self._sims(feats, [start])[0] if start else 0.0
        chained = self._chain(feats, phrases, start, start_sim, min_count=opts.min_flavors,
                              max_count=opts.max_flavors, stage="best: flavor chain")
        candidates = _dedupe([c for c in (start, self._classic(feats, caption, opts.max_flavors),
                                          self._fast(feats, caption, opts.max_flavors), chained) if c])
        sims = self._sims(feats, candidates)
        return candidates[max(range(len(candidates)), key=sims.__getitem__)]

    def _negative(self, feats, opts: InterrogateOptions) -> str:
        worst = [p for p, _ in self._tables["flavors"].rank(feats, self._candidates(opts), reverse=True)]
        phrases = _dedupe(worst + self._tables["negative"].labels)
        return self._chain(feats, phrases, "", 0.0, min_count=opts.min_flavors, max_count=opts.max_flavors,
                           reverse=True, stage="negative: flavor chain")

    def _chain(self, feats, phrases: Sequence[str], best_prompt: str, best_sim: float, *, min_count: int,
               max_count: int, reverse: bool = False, stage: str = "chain") -> str:
        """Greedy: add the phrase that most raises (reverse: lowers) similarity, within the context."""
        clip = self._use(self.clip)
        img = feats.reshape(-1)
        sign = -1.0 if reverse else 1.0
        remaining = _dedupe(phrases)
        if not remaining:
            return best_prompt
        if not best_prompt:
            fitting = [p for p in remaining if clip.fits(p)]
            if not fitting:
                return ""
            sims = clip.encode_texts(fitting, batch_size=self.batch_size) @ img * sign
            i = int(sims.argmax())
            best_prompt, best_sim = fitting[i], float(sims[i])
            remaining.remove(best_prompt)
        else:
            best_sim = best_sim * sign
        curr, curr_sim = best_prompt, best_sim
        for step in range(max_count):
            self._progress(stage, step / max(1, max_count))
            cont = clip.continuations(curr, remaining)
            keep = [i for i, n in enumerate(cont.lengths()) if n <= clip.context_length]
            if not keep:
                break
            cont = cont.select(keep)
            sims = clip.encode_continuations(cont, batch_size=self.batch_size) @ img * sign
            self.counters.chain_steps += 1
            self.counters.chain_texts += len(keep)
            j = int(sims.argmax())
            sim, phrase = float(sims[j]), cont.additions[j]
            prompt = f"{curr}, {phrase}"
            if sim > best_sim:
                best_prompt, best_sim = prompt, sim
            if sim > curr_sim or step < min_count:
                curr, curr_sim = prompt, sim
                remaining.remove(phrase)
            else:
                break
        return best_prompt


def _as_pil(image):
    """A PIL image (RGB) from a PIL image or an HxWxC uint8 array; a clear error otherwise."""
    if image is None:
        raise UserError("no image to interrogate: drop an image first")
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        import numpy as np

        arr = np.asarray(image)
        if arr.ndim in (2, 3) and arr.size:
            if arr.dtype != np.uint8:
                arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
            return Image.fromarray(arr).convert("RGB")
    except (TypeError, ValueError):
        pass
    raise UserError(f"cannot interrogate a {type(image).__name__}: give a PIL image or an HxWxC array")


def _dedupe(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for x in items:
        if x and x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _join(parts: Sequence[str]) -> str:
    return ", ".join(p for p in (s.strip() for s in parts) if p)


def _top1(table: L.LabelTable, feats) -> str:
    r = table.rank(feats, 1)
    return r[0][0] if r else ""
