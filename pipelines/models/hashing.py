"""A1111-compatible model hashes with a persistent cache.

- full hash: sha256 of the whole file; A1111 shows its first 10 hex chars as the short hash.
- legacy hash (A1111 "model hash" before 2023): sha256 of 64 KiB at offset 1 MiB, first 8 hex chars.
- addnet hash (LoRA .safetensors): sha256 of the data after the header; A1111 shows its first 12 hex chars.
The full hash of a multi-GB file takes tens of seconds, so results are cached in a JSON file keyed by
path + size + mtime; a file that did not change is never hashed twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from ..core.fileio import atomic_write

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def addnet_hash_safetensors(path: str | os.PathLike) -> str:
    """sha256 of a .safetensors file's tensor data, after its JSON header (kohya-ss / sd-webui-additional-
    networks; A1111 hashes LoRA files this way, so editing their metadata does not change the hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_len)
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def legacy_hash(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


class HashCache:
    """sha256 per file, persisted as JSON (`cache.json`-style), safe across threads."""

    def __init__(self, cache_file: Path | None):
        self.cache_file = Path(cache_file) if cache_file else None
        self._lock = threading.Lock()
        self._data: dict[str, dict] | None = None
        self.computed = 0  # number of full hashes actually computed (tests check the cache hits)

    def _load(self) -> dict[str, dict]:
        if self._data is None:
            self._data = {}
            if self.cache_file and self.cache_file.exists():
                try:
                    self._data = json.loads(self.cache_file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    self._data = {}  # a corrupt cache only costs re-hashing
        return self._data

    def _save(self) -> None:
        if not self.cache_file:
            return
        atomic_write(self.cache_file, json.dumps(self._data, indent=1).encode("utf-8"))

    def sha256(self, path: str | os.PathLike, *, compute: bool = True) -> str | None:
        """Cached sha256 of `path`; None when not cached and `compute` is False."""
        return self._cached(path, "sha256", sha256_file, compute)

    def addnet(self, path: str | os.PathLike, *, compute: bool = True) -> str | None:
        """Cached kohya/"addnet" hash of a .safetensors file (what A1111 shows for LoRAs)."""
        return self._cached(path, "addnet", addnet_hash_safetensors, compute)

    def _cached(self, path, kind: str, fn, compute: bool) -> str | None:
        path = str(Path(path).resolve())
        st = os.stat(path)
        with self._lock:
            entry = self._load().get(path)
            fresh = bool(entry) and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime
            if fresh and entry.get(kind):
                return entry[kind]
        if not compute:
            return None
        digest = fn(path)
        with self._lock:
            self.computed += 1
            entry = self._load().get(path)
            if not (entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime):
                entry = {"size": st.st_size, "mtime": st.st_mtime}
            entry[kind] = digest
            self._load()[path] = entry
            self._save()
        return digest
