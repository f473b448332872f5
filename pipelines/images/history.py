"""History: every image in the outputs folders, indexed by its infotext, searchable and paged.

    index = HistoryIndex(outputs_root, data_dir / "cache" / "history")
    index.refresh()                                     # incremental: only folders whose mtime changed
    page = index.search(HistoryQuery(text="astronaut", sampler="Euler a", limit=48))
    index.thumbnail(page.items[0].path)                 # made once, cached on disk
    index.delete(page.items[0].path)                    # moved to <outputs>/.trash/, never unlinked

The index is a SQLite file (the standard library's, with its FTS5 full-text index for prompts) beside a
folder of WebP thumbnails. It stays current without a file watcher: a folder's mtime changes whenever a
file is added, renamed or removed in it, so `refresh()` stats every folder but reads only the folders
that changed, and in them only the files whose size or mtime changed (A1111-style saving never rewrites
a file in place). Paths are stored relative to the outputs root, so the index survives moving the root.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path

from PIL import Image

from ..core.errors import UserError
from ..core.fileio import atomic_write
from ..params.infotext import parse_infotext
from .metadata import read_image_parameters

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
TRASH = ".trash"
THUMB_SIDE = 256
MAX_PAGE = 500
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, folder TEXT NOT NULL, kind TEXT, day TEXT,
    mtime_ns INTEGER, size INTEGER, prompt TEXT, negative_prompt TEXT, model TEXT, sampler TEXT,
    seed INTEGER, steps INTEGER, cfg REAL, width INTEGER, height INTEGER, infotext TEXT,
    favourite INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS images_recent ON images(mtime_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS images_folder ON images(folder);
CREATE INDEX IF NOT EXISTS images_seed ON images(seed);
CREATE INDEX IF NOT EXISTS images_model ON images(model);
CREATE INDEX IF NOT EXISTS images_day ON images(day);
CREATE TABLE IF NOT EXISTS folders(folder TEXT PRIMARY KEY, mtime_ns INTEGER, subdirs TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS prompt_text USING fts5(prompt, negative_prompt);
"""


@dataclass(frozen=True)
class HistoryItem:
    path: str            # relative to the outputs root, "/"-separated
    kind: str            # txt2img-images, img2img-grids, extras-images, ...
    day: str             # YYYY-MM-DD (the date folder, else the file's mtime)
    prompt: str
    negative_prompt: str
    model: str
    sampler: str
    seed: int | None
    steps: int | None
    cfg: float | None
    width: int | None
    height: int | None
    infotext: str
    favourite: bool


@dataclass
class HistoryQuery:
    text: str = ""                 # words that must all appear in the prompt or negative prompt
    model: str = ""                # substring of the model name (case-insensitive)
    sampler: str = ""              # exact sampler name
    seed: int | None = None
    day_from: str = ""             # YYYY-MM-DD, inclusive
    day_to: str = ""
    kind: str = ""                 # e.g. "txt2img-images"
    favourites_only: bool = False
    offset: int = 0
    limit: int = 48


@dataclass
class HistoryPage:
    items: list[HistoryItem] = field(default_factory=list)
    total: int = 0


@dataclass
class RefreshStats:
    folders_read: int = 0
    added: int = 0
    removed: int = 0


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _fields_of(file: Path) -> dict:
    """What the index keeps of one image: its infotext (A1111's, or another tool's converted) parsed."""
    try:
        infotext = read_image_parameters(file).infotext or ""
    except Exception:   # an unreadable or foreign file is still listed, with no parameters
        infotext = ""
    parsed = parse_infotext(infotext)
    p = parsed.params
    sampler = p.get("Sampler", "")
    return dict(prompt=parsed.prompt, negative_prompt=parsed.negative_prompt, model=p.get("Model", ""),
                sampler=sampler, seed=_int(p.get("Seed")), steps=_int(p.get("Steps")), cfg=_float(p.get("CFG scale")),
                width=_int(p.get("Size-1")), height=_int(p.get("Size-2")), infotext=infotext)


def _fts_query(text: str) -> str:
    """Every word as a quoted FTS5 string (quotes doubled), so user text is never FTS syntax."""
    words = [w.replace('"', '""') for w in text.split() if w.strip('"')]
    return " ".join(f'"{w}"' for w in words)


class HistoryIndex:
    """The index of one outputs root. Thread-safe: one connection behind a lock (queries take milliseconds)."""

    def __init__(self, outputs_root: Path, state_dir: Path):
        self.root = Path(outputs_root)
        self.state_dir = Path(state_dir)
        self.thumbs = self.state_dir / "thumbs"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.state_dir / "history.sqlite", check_same_thread=False)
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(folders)")]
        if columns and "subdirs" not in columns:   # an index from before sub-folder lists: re-list folders once
            self._db.execute("DROP TABLE folders")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ keeping the index current
    def refresh(self) -> RefreshStats:
        stats = RefreshStats()
        with self._lock, self._db:
            known = {folder: (mtime, subdirs) for folder, mtime, subdirs in
                     self._db.execute("SELECT folder, mtime_ns, subdirs FROM folders")}
            seen: set[str] = set()
            pending = ["."] if self.root.is_dir() else []
            while pending:
                folder = pending.pop()
                path = self.root if folder == "." else self.root / folder
                try:
                    mtime = os.stat(path).st_mtime_ns
                except OSError:        # removed while we walked
                    continue
                seen.add(folder)
                old = known.get(folder)
                if old is not None and old[0] == mtime and old[1] is not None:
                    # Unchanged: no file came or went, nor a sub-folder (that would change this folder's
                    # mtime too), so it is not even listed. This keeps a refresh of 100k images cheap.
                    subdirs = json.loads(old[1])
                else:
                    files, subdirs = self._list(path)
                    self._sync_folder(folder, path, files, stats)
                    self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?, ?)",
                                     (folder, mtime, json.dumps(subdirs)))
                    stats.folders_read += 1
                pending += [d if folder == "." else f"{folder}/{d}" for d in subdirs]
            for folder in set(known) - seen:
                stats.removed += self._forget(self._db.execute(
                    "SELECT id FROM images WHERE folder = ?", (folder,)).fetchall())
                self._db.execute("DELETE FROM folders WHERE folder = ?", (folder,))
        return stats

    @staticmethod
    def _list(path: Path) -> tuple[list[str], list[str]]:
        """(file names, sub-folder names) of a folder; hidden ones (.trash, temporary files) left out."""
        files, subdirs = [], []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                (subdirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
        return files, sorted(subdirs)

    def _sync_folder(self, folder: str, path: Path, filenames: list[str], stats: RefreshStats) -> None:
        rows = {name.rpartition("/")[2]: (rid, mtime, size) for rid, name, mtime, size in self._db.execute(
            "SELECT id, path, mtime_ns, size FROM images WHERE folder = ?", (folder,))}
        present = set()
        for name in filenames:
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            present.add(name)
            try:
                st = os.stat(path / name)
            except OSError:   # removed while we walked
                continue
            old = rows.get(name)
            if old is not None and old[1:] == (st.st_mtime_ns, st.st_size):
                continue
            if old is not None:
                self._forget([(old[0],)])
            self._add(folder, name, path / name, st)
            stats.added += 1
        stats.removed += self._forget([(rid,) for name, (rid, _, _) in rows.items() if name not in present])

    def _add(self, folder: str, name: str, file: Path, st: os.stat_result) -> None:
        fields = _fields_of(file)
        day = next((part for part in reversed(folder.split("/")) if _DAY.fullmatch(part)), "")
        day = day or datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d")
        kind = folder.split("/")[0] if folder != "." else ""
        rel = name if folder == "." else f"{folder}/{name}"
        cur = self._db.execute(
            "INSERT INTO images(path, folder, kind, day, mtime_ns, size, prompt, negative_prompt, model, sampler,"
            " seed, steps, cfg, width, height, infotext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (rel, folder, kind, day, st.st_mtime_ns, st.st_size, fields["prompt"], fields["negative_prompt"],
             fields["model"], fields["sampler"], fields["seed"], fields["steps"], fields["cfg"], fields["width"],
             fields["height"], fields["infotext"]))
        self._db.execute("INSERT INTO prompt_text(rowid, prompt, negative_prompt) VALUES (?, ?, ?)",
                         (cur.lastrowid, fields["prompt"], fields["negative_prompt"]))

    def _forget(self, ids: list[tuple[int]]) -> int:
        self._db.executemany("DELETE FROM images WHERE id = ?", ids)
        self._db.executemany("DELETE FROM prompt_text WHERE rowid = ?", ids)
        return len(ids)

    # ------------------------------------------------------------------ reading
    def search(self, query: HistoryQuery) -> HistoryPage:
        where, args = [], []
        if query.text.strip():
            where.append("id IN (SELECT rowid FROM prompt_text WHERE prompt_text MATCH ?)")
            args.append(_fts_query(query.text))
        if query.model:
            # A substring of the model name: matched against the few distinct names (read from the index),
            # then an indexed IN, instead of a LIKE '%...%' over every row.
            with self._lock:
                names = [m for (m,) in self._db.execute("SELECT DISTINCT model FROM images")
                         if m and query.model.lower() in m.lower()]
            where.append(f"model IN ({','.join('?' * len(names))})" if names else "0")
            args.extend(names)
        for column, value in (("sampler", query.sampler), ("kind", query.kind), ("seed", query.seed)):
            if value not in ("", None):
                where.append(f"{column} = ?")
                args.append(value)
        if query.day_from:
            where.append("day >= ?")
            args.append(query.day_from)
        if query.day_to:
            where.append("day <= ?")
            args.append(query.day_to)
        if query.favourites_only:
            where.append("favourite = 1")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        limit = max(1, min(int(query.limit), MAX_PAGE))
        # Newest first: walking the recency index and filtering stops after one page, unless a filter picks
        # few rows out of many (a seed, a day range): then its own index and a small sort are faster.
        selective = query.seed is not None or query.day_from or query.day_to
        order = "" if selective else " INDEXED BY images_recent"
        with self._lock:
            if len(where) == 1 and query.text.strip():   # words alone: the full-text index counts them
                total = self._db.execute("SELECT count(*) FROM prompt_text WHERE prompt_text MATCH ?",
                                         args).fetchone()[0]
            else:
                total = self._db.execute(f"SELECT count(*) FROM images{clause}", args).fetchone()[0]
            rows = self._db.execute(
                "SELECT path, kind, day, prompt, negative_prompt, model, sampler, seed, steps, cfg, width, height,"
                f" infotext, favourite FROM images{order}{clause} ORDER BY mtime_ns DESC, id DESC LIMIT ? OFFSET ?",
                [*args, limit, max(0, int(query.offset))]).fetchall()
        return HistoryPage([HistoryItem(*row[:-1], favourite=bool(row[-1])) for row in rows], total)

    def file(self, rel_path: str) -> Path:
        """The file of an indexed image; a path outside the outputs root (or not indexed) is refused."""
        with self._lock:
            known = self._db.execute("SELECT 1 FROM images WHERE path = ?", (rel_path,)).fetchone()
        path = (self.root / rel_path).resolve()
        if known is None or not path.is_relative_to(self.root.resolve()):
            raise UserError(f"{rel_path!r} is not an image of the history")
        return path

    def thumbnail(self, rel_path: str) -> Path:
        """A WebP of at most THUMB_SIDE pixels a side, made once per file version and kept."""
        path = self.file(rel_path)
        st = path.stat()
        key = hashlib.sha1(f"{rel_path}\0{st.st_mtime_ns}\0{st.st_size}".encode()).hexdigest()[:24]
        thumb = self.thumbs / key[:2] / f"{key}.webp"
        if not thumb.exists():
            with Image.open(path) as im:
                im.thumbnail((THUMB_SIDE, THUMB_SIDE))
                buf = BytesIO()
                im.convert("RGB").save(buf, "WEBP", quality=80)
            atomic_write(thumb, buf.getvalue())
        return thumb

    # ------------------------------------------------------------------ changing
    def set_favourite(self, rel_path: str, favourite: bool = True) -> None:
        self.file(rel_path)
        with self._lock, self._db:
            self._db.execute("UPDATE images SET favourite = ? WHERE path = ?", (int(favourite), rel_path))

    def delete(self, rel_path: str) -> Path:
        """Move the image to `<outputs>/.trash/<same relative path>` (a free name if taken); returns where."""
        path = self.file(rel_path)
        target = self.root / TRASH / rel_path
        target.parent.mkdir(parents=True, exist_ok=True)
        stem, n = target.stem, 1
        while target.exists():
            target = target.with_name(f"{stem}-{n}{target.suffix}")
            n += 1
        os.replace(path, target)
        with self._lock, self._db:
            ids = self._db.execute("SELECT id FROM images WHERE path = ?", (rel_path,)).fetchall()
            self._forget(ids)
        return target
