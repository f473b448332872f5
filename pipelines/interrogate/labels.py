"""Label lists (mediums, artists, movements, trendings, flavors, negative) and their CLIP embeddings.

The lists are the data files shipped by the `clip-interrogator` package (MIT, pharmapsychotic); only
its data folder is read, its code is never imported. A folder given as `lists_dir` may override any
list with a `<name>.txt` of its own (one phrase a line, like A1111's `interrogate/` folder).

Embeddings are computed once per CLIP model and kept in `cache_dir` as
`<model>__<table>.safetensors`, fp16, with metadata naming the model, a fingerprint of its weights
and the sha256 of the list: any change recomputes, and the file is replaced atomically.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..core.errors import UserError

log = logging.getLogger(__name__)

TABLES = ("mediums", "artists", "movements", "trendings", "flavors", "negative")
PROMPT_TABLES = ("artists", "flavors", "mediums", "movements", "trendings")   # what fast/best draw from
CACHE_FORMAT = "1"

# clip-interrogator's trending list: sites × four phrasings.
SITES = ("Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram",
         "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr", "unsplash",
         "zbrush central")


def shipped_data_dir() -> Path:
    """The `data/` folder of the installed clip-interrogator package, found without importing it."""
    spec = importlib.util.find_spec("clip_interrogator")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the interrogation label lists come from the clip-interrogator package, which is not "
                        "installed: run `pip install --no-deps clip-interrogator` (it is in requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_list(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def trending_labels(sites: Sequence[str] = SITES) -> list[str]:
    return (list(sites) + [f"trending on {s}" for s in sites] + [f"featured on {s}" for s in sites]
            + [f"{s} contest winner" for s in sites])


def artist_labels(names: Sequence[str]) -> list[str]:
    return [f"by {a}" for a in names] + [f"inspired by {a}" for a in names]


def load_label_lists(lists_dir: Path | None = None, only: Sequence[str] = TABLES) -> dict[str, list[str]]:
    """The final phrases of each table, as ranked: artists expanded to "by X" / "inspired by X".

    `lists_dir/<name>.txt` replaces a shipped list (for artists: raw names; for trendings: site names).
    """
    data = None
    out: dict[str, list[str]] = {}
    for name in only:
        if name not in TABLES:
            raise UserError(f"unknown label list {name!r}; one of {', '.join(TABLES)}")
        override = Path(lists_dir) / f"{name}.txt" if lists_dir else None
        if override is not None and override.is_file():
            raw = read_list(override)
        elif name == "trendings":
            raw = list(SITES)
        else:
            data = data or shipped_data_dir()
            raw = read_list(data / f"{name}.txt")
        if name == "artists":
            out[name] = artist_labels(raw)
        elif name == "trendings":
            out[name] = trending_labels(raw)
        else:
            out[name] = raw
    return out


def labels_hash(labels: Sequence[str]) -> str:
    """sha256 of the list as clip-interrogator computes it (comma-joined)."""
    return hashlib.sha256(",".join(labels).encode("utf-8")).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@dataclass
class LabelTable:
    """Phrases and their unit-norm CLIP text embeddings (fp16, on the CPU)."""

    name: str
    labels: list[str]
    embeds: object          # torch.Tensor (N, D) float16
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def scores(self, image_features, chunk: int = 32768):
        """Cosine similarity of every label to the (1, D) unit image features, float32 (N,)."""
        import torch

        feats = image_features.reshape(-1).float().cpu()
        out = torch.empty(len(self.labels), dtype=torch.float32)
        for start in range(0, len(self.labels), chunk):
            out[start:start + chunk] = self.embeds[start:start + chunk].float() @ feats
        return out

    def rank(self, image_features, top_count: int = 1, reverse: bool = False) -> list[tuple[str, float]]:
        """The `top_count` best (or, `reverse`, worst) labels with their cosine similarity."""
        import torch

        if not self.labels or top_count <= 0:
            return []
        s = self.scores(image_features)
        k = min(top_count, len(self.labels))
        _, idx = torch.topk(-s if reverse else s, k)
        return [(self.labels[i], float(s[i])) for i in idx.tolist()]


class EmbeddingCache:
    """Label-table embeddings on disk, keyed by model name + weights fingerprint + list hash."""

    def __init__(self, cache_dir: Path | str):
        self.dir = Path(cache_dir)

    def path(self, model_name: str, table: str) -> Path:
        return self.dir / f"{_slug(model_name)}__{_slug(table)}.safetensors"

    def load(self, model_name: str, fingerprint: str, table: str, labels: Sequence[str]):
        """The cached (N, D) fp16 embeddings, or None when absent or stale."""
        from safetensors import safe_open

        p = self.path(model_name, table)
        if not p.is_file():
            return None
        want = {"format": CACHE_FORMAT, "model": model_name, "weights": fingerprint,
                "labels_sha256": labels_hash(labels), "count": str(len(labels))}
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                if any(meta.get(k) != v for k, v in want.items()):
                    log.info("label cache %s is stale (%s); recomputing", p.name,
                             ", ".join(k for k, v in want.items() if meta.get(k) != v))
                    return None
                embeds = f.get_tensor("embeds")
        except Exception as err:   # a damaged cache file is recomputed, not fatal
            log.warning("label cache %s unreadable (%s); recomputing", p, err)
            return None
        if embeds.ndim != 2 or embeds.shape[0] != len(labels):
            return None
        return embeds

    def save(self, model_name: str, fingerprint: str, table: str, labels: Sequence[str], embeds) -> Path:
        from safetensors.torch import save_file

        p = self.path(model_name, table)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": CACHE_FORMAT, "model": model_name, "weights": fingerprint,
                "labels_sha256": labels_hash(labels), "count": str(len(labels)), "table": table}
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        try:
            save_file({"embeds": embeds.contiguous()}, str(tmp), metadata=meta)
            os.replace(tmp, p)
        finally:
            if tmp.exists():
                tmp.unlink()
        return p


def build_table(name: str, labels: Sequence[str], *, model_name: str, fingerprint: str,
                encode: Callable[[Sequence[str]], object], cache: EmbeddingCache | None) -> tuple[LabelTable, bool]:
    """The table from the cache, else encoded (and cached). Returns (table, hit)."""
    labels = list(labels)
    if cache is not None:
        embeds = cache.load(model_name, fingerprint, name, labels)
        if embeds is not None:
            return LabelTable(name, labels, embeds, from_cache=True), True
    embeds = encode(labels).to("cpu").half()
    if cache is not None:
        cache.save(model_name, fingerprint, name, labels, embeds)
    return LabelTable(name, labels, embeds), False


def merge_tables(tables: Mapping[str, LabelTable], names: Sequence[str] = PROMPT_TABLES) -> LabelTable:
    import torch

    parts = [tables[n] for n in names if n in tables and len(tables[n])]
    labels = [label for t in parts for label in t.labels]
    embeds = torch.cat([t.embeds for t in parts]) if parts else torch.empty(0, 0, dtype=torch.float16)
    return LabelTable("+".join(names), labels, embeds)
