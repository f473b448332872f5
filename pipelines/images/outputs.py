"""Saving generated images the way AUTOMATIC1111 does.

Layout: ``<root>/<kind>/<YYYY-MM-DD>/<NNNNN>-<pattern>.<ext>`` (``kind`` is e.g.
``txt2img-images``, ``img2img-images``, ``txt2img-grids``), where ``NNNNN`` is one more than
the highest leading number of the files already in the folder (the first file is ``00000``,
as in A1111). Grids are ``grid-NNNN.<ext>`` (A1111 numbers grids with four digits).

Every file appears complete or not at all: it is written to a hidden temporary file
(``.<random>.tmp``) in the destination folder, flushed and fsynced, then hard-linked to its
final name, which fails instead of replacing an existing file; on a collision the next number
is taken. When anything fails, the temporary file is removed and nothing partial remains.
"""

from __future__ import annotations

import errno
import math
import os
import re
import secrets
import threading
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from PIL import Image

from . import metadata as image_metadata
from ..params.infotext import format_value

__all__ = [
    "OutputSaver",
    "grid_layout",
    "image_grid",
    "next_sequence_number",
    "prompt_words",
    "sanitize_filename_part",
]

MAX_FILENAME_CHARS = 128
# Most file systems limit a name to 255 bytes; CJK text is 3 bytes a character in UTF-8.
MAX_FILENAME_BYTES = 200
MAX_PROMPT_WORDS = 8  # A1111 opts.directories_max_prompt_words default
DEFAULT_DATETIME_FORMAT = "%Y%m%d%H%M%S"

_INVALID_FILENAME_CHARS = frozenset('<>:"/\\|?*')
_RE_TOKEN = re.compile(r"\[([^\[\]]+)\]")
_RE_TOKEN_ARG = re.compile(r"^(.*?)<([^>]*)>$")
# A1111: re_nonletters = r'[\s' + string.punctuation + ']+'
_RE_NONLETTERS = re.compile(r"[\s!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]+")
_RE_KIND = re.compile(r"[\w][\w .-]*")
_EDGE_CHARS = " ._-"


def sanitize_filename_part(text: Any, replace_spaces: bool = False) -> str:
    """Make ``text`` safe inside a file name on Linux, macOS and Windows.

    Path separators and characters Windows forbids (``<>:"/\\|?*``) become ``_``; control
    characters and line breaks become spaces; invisible format/unassigned characters are
    dropped; whitespace runs collapse to one space (``_`` when ``replace_spaces``).
    """
    if text is None:
        return ""
    out = []
    for ch in str(text):
        if ch in _INVALID_FILENAME_CHARS:
            out.append("_")
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif category in ("Cf", "Cs", "Co", "Cn"):
            continue
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    return cleaned.replace(" ", "_") if replace_spaces else cleaned


def prompt_words(prompt: str | None, max_words: int = MAX_PROMPT_WORDS) -> str:
    """A1111's ``[prompt_words]``: the first words of the prompt, punctuation removed."""
    words = [w for w in _RE_NONLETTERS.split(prompt or "") if w]
    if not words:
        words = ["empty"]
    return sanitize_filename_part(" ".join(words[:max_words]))


def _cap_name(decoration: str, fixed: str) -> str:
    """Shorten ``decoration`` so that ``decoration + fixed`` fits the name limits."""
    decoration = decoration.strip(_EDGE_CHARS)
    budget_chars = MAX_FILENAME_CHARS - len(fixed)
    budget_bytes = MAX_FILENAME_BYTES - len(fixed.encode("utf-8"))
    decoration = decoration[: max(budget_chars, 0)]
    while decoration and len(decoration.encode("utf-8")) > budget_bytes:
        decoration = decoration[:-1]
    return decoration.strip(_EDGE_CHARS)


def _leading_number(name: str, basename: str) -> int | None:
    prefix = f"{basename}-" if basename else ""
    if not name.startswith(prefix):
        return None
    first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
    if first.isascii() and first.isdigit():
        return int(first)
    return None


def next_sequence_number(folder: str | os.PathLike[str], basename: str = "") -> int:
    """A1111's ``get_next_sequence_number``: 1 + the highest leading number of the names in
    ``folder`` (after ``<basename>-`` when a basename is given); 0 for an empty folder."""
    result = -1
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        number = _leading_number(name, basename)
        if number is not None:
            result = max(result, number)
    return result + 1


def grid_layout(count: int, rows: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of A1111's automatic grid: ``rows = round(sqrt(n))``,
    ``cols = ceil(n / rows)`` (the same as ``cols = ceil(sqrt(n))``, ``rows = ceil(n / cols)``)."""
    if count < 1:
        raise ValueError("a grid needs at least one image")
    if rows is None or rows <= 0:
        rows = round(math.sqrt(count))
    rows = max(1, min(rows, count))
    return rows, math.ceil(count / rows)


def image_grid(images: Sequence[Image.Image], rows: int | None = None) -> Image.Image:
    """Paste ``images`` row by row onto a black RGB canvas; cells take the first image's size."""
    images = list(images)
    rows, cols = grid_layout(len(images), rows)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height), color="black")
    for i, img in enumerate(images):
        if img.mode != "RGB":
            img = img.convert("RGB")
        grid.paste(img, box=(i % cols * width, i // cols * height))
    return grid


# --- atomic file creation -------------------------------------------------------------------

_O_BINARY = getattr(os, "O_BINARY", 0)
_LINK_UNSUPPORTED = {
    getattr(errno, name)
    for name in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "EMLINK", "ENOSYS", "EACCES")
    if hasattr(errno, name)
}


def _unlink_quiet(path: Path | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _write_temp(folder: Path, write: Callable[[Any], None]) -> Path:
    """Write a hidden ``.<random>.tmp`` file in ``folder`` with ``write(fileobj)``, fsynced.
    On any failure the file is removed and the exception propagates."""
    while True:
        tmp = folder / f".{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quiet(tmp)
        raise
    return tmp


def _place(tmp: Path, target: Path) -> str | None:
    """Give ``tmp``'s content the name ``target`` without ever replacing an existing file.

    Returns ``"linked"`` (hard link made; ``tmp`` still exists), ``"moved"`` (file systems
    without hard links: ``target`` reserved with ``O_EXCL`` then replaced by ``tmp``) or
    ``None`` when ``target`` already exists.
    """
    try:
        os.link(tmp, target)
        return "linked"
    except FileExistsError:
        return None
    except OSError as exc:
        if not isinstance(exc, NotImplementedError) and exc.errno not in _LINK_UNSUPPORTED:
            raise
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
    except FileExistsError:
        return None
    os.close(fd)
    try:
        os.replace(tmp, target)
    except BaseException:
        _unlink_quiet(target)
        raise
    return "moved"


def _unplace(tmp: Path, target: Path, how: str) -> None:
    """Undo :func:`_place`."""
    if how == "moved":
        os.replace(target, tmp)
    else:
        _unlink_quiet(target)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputSaver:
    """Saves images (and optional ``.txt`` sidecars) into A1111's dated folder layout.

    Thread-safe: number allocation and the final rename happen under one lock shared by
    all savers in the process; between processes the exclusive link keeps names unique.
    """

    _lock = threading.Lock()
    MAX_ATTEMPTS = 10_000

    def __init__(
        self,
        root: str | os.PathLike[str],
        fmt: str = "png",
        filename_pattern: str = "[seed]",
        save_txt: bool = False,
        jpeg_quality: int = 95,
        grid_extended_filename: bool = False,
    ) -> None:
        self.root = Path(root)
        self.fmt = image_metadata.normalize_format(fmt)
        self.filename_pattern = filename_pattern or ""
        self.save_txt = bool(save_txt)
        self.jpeg_quality = int(jpeg_quality)
        self.grid_extended_filename = bool(grid_extended_filename)

    # --- names ----------------------------------------------------------------------------

    def folder(self, kind: str, when: datetime | None = None) -> Path:
        """``<root>/<kind>/<YYYY-MM-DD>`` (not created)."""
        if not isinstance(kind, str) or not _RE_KIND.fullmatch(kind) or ".." in kind:
            raise ValueError(f"invalid output kind {kind!r}: use a simple folder name")
        when = when or datetime.now()
        return self.root / kind / when.strftime("%Y-%m-%d")

    def filename_decoration(
        self,
        *,
        seed: int | None = None,
        prompt: str | None = "",
        model_name: str | None = "",
        when: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
        pattern: str | None = None,
    ) -> str:
        """Expand the filename pattern (sanitised, not yet length-capped).

        Tokens: ``[seed]``, ``[prompt]`` (spaces as ``_``), ``[prompt_spaces]``,
        ``[prompt_words]``, ``[model_name]``, ``[date]``, ``[datetime]`` /
        ``[datetime<strftime format>]``, and any key of ``extra`` (``[steps]``, ``[cfg]``,
        ``[sampler]``...). Unknown tokens are left out.
        """
        when = when or datetime.now()
        extra_lower = {str(k).lower(): v for k, v in (extra or {}).items()}

        def resolve(name: str, arg: str | None) -> str:
            name = name.strip().lower()
            if name == "seed":
                return "" if seed is None else sanitize_filename_part(format_value(seed))
            if name == "prompt":
                return sanitize_filename_part(prompt, replace_spaces=True)
            if name == "prompt_spaces":
                return sanitize_filename_part(prompt)
            if name == "prompt_words":
                return prompt_words(prompt)
            if name == "model_name":
                return sanitize_filename_part(model_name)
            if name == "date":
                return when.strftime("%Y-%m-%d")
            if name == "datetime":
                try:
                    text = when.strftime(arg or DEFAULT_DATETIME_FORMAT)
                except (ValueError, TypeError):
                    text = when.strftime(DEFAULT_DATETIME_FORMAT)
                return sanitize_filename_part(text)
            value = extra_lower.get(name)
            if value is None:
                return ""
            return sanitize_filename_part(format_value(value))

        pattern = self.filename_pattern if pattern is None else pattern
        parts: list[str] = []
        pos = 0
        for match in _RE_TOKEN.finditer(pattern):
            parts.append(sanitize_filename_part(pattern[pos:match.start()]))
            token = match.group(1)
            arg_match = _RE_TOKEN_ARG.match(token)
            name, arg = (arg_match.group(1), arg_match.group(2)) if arg_match else (token, None)
            parts.append(resolve(name, arg))
            pos = match.end()
        parts.append(sanitize_filename_part(pattern[pos:]))
        return "".join(parts).strip(_EDGE_CHARS)

    # --- saving ---------------------------------------------------------------------------

    def _format_for(self, image: Image.Image) -> str:
        fmt = self.fmt
        if fmt in ("jpg", "jpeg") and max(image.size) > image_metadata.MAX_JPEG_SIDE:
            return "png"  # as A1111: too large for JPEG
        if fmt == "webp" and max(image.size) > image_metadata.MAX_WEBP_SIDE:
            return "png"
        return fmt

    def _commit(
        self,
        folder: Path,
        basename: str,
        digits: int,
        decoration: str,
        ext: str,
        image_tmp: Path,
        txt_tmp: Path | None,
    ) -> Path:
        with self._lock:
            number = next_sequence_number(folder, basename)
            for _ in range(self.MAX_ATTEMPTS):
                num = f"{number:0{digits}d}"
                head = f"{basename}-{num}" if basename else num
                fixed = f"{head}-.{ext}"
                deco = _cap_name(decoration, fixed)
                stem = f"{head}-{deco}" if deco else head
                target = folder / f"{stem}.{ext}"
                txt_target = folder / f"{stem}.txt"
                if txt_tmp is not None and os.path.lexists(txt_target):
                    number += 1
                    continue
                how = _place(image_tmp, target)
                if how is None:
                    number += 1
                    continue
                if txt_tmp is not None:
                    try:
                        txt_how = _place(txt_tmp, txt_target)
                    except BaseException:
                        _unplace(image_tmp, target, how)
                        raise
                    if txt_how is None:
                        _unplace(image_tmp, target, how)
                        number += 1
                        continue
                _fsync_dir(folder)
                return target
        raise FileExistsError(f"could not find a free file name in {folder}")

    def _save(
        self,
        image: Image.Image,
        infotext: str | None,
        folder: Path,
        basename: str,
        digits: int,
        decoration: str,
    ) -> Path:
        fmt = self._format_for(image)
        folder.mkdir(parents=True, exist_ok=True)
        image_tmp: Path | None = None
        txt_tmp: Path | None = None
        try:
            image_tmp = _write_temp(
                folder,
                lambda handle: image_metadata.write_image(
                    image, handle, infotext, fmt, quality=self.jpeg_quality
                ),
            )
            if self.save_txt and infotext is not None:
                data = f"{infotext}\n".encode("utf-8")
                txt_tmp = _write_temp(folder, lambda handle: handle.write(data))
            return self._commit(folder, basename, digits, decoration, fmt, image_tmp, txt_tmp)
        finally:
            _unlink_quiet(image_tmp)
            _unlink_quiet(txt_tmp)

    def save(
        self,
        image: Image.Image,
        infotext: str | None,
        *,
        kind: str = "txt2img-images",
        seed: int | None = None,
        prompt: str | None = "",
        model_name: str | None = "",
        when: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save one image; returns its path. The ``.txt`` sidecar (when ``save_txt``) has the
        same name with ``.txt``. Raises ``ValueError`` for bad input, ``OSError`` for disk
        errors; in both cases no file is left behind."""
        when = when or datetime.now()
        folder = self.folder(kind, when)
        decoration = self.filename_decoration(
            seed=seed, prompt=prompt, model_name=model_name, when=when, extra=extra
        )
        return self._save(image, infotext, folder, "", 5, decoration)

    def save_grid(
        self,
        images: Iterable[Image.Image],
        infotext: str | None,
        *,
        kind: str = "txt2img-grids",
        seed: int | None = None,
        prompt: str | None = "",
        model_name: str | None = "",
        when: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
        rows: int | None = None,
    ) -> Path:
        """Save an A1111 grid of ``images`` as ``<root>/<kind>/<date>/grid-NNNN.<ext>``
        (``grid-NNNN-<pattern>.<ext>`` when ``grid_extended_filename`` is set, like A1111's
        option of that name; ``seed``/``prompt``/``model_name``/``extra`` feed the pattern)."""
        images = list(images)
        if not images:
            raise ValueError("no images to put in a grid")
        when = when or datetime.now()
        folder = self.folder(kind, when)
        decoration = ""
        if self.grid_extended_filename:
            decoration = self.filename_decoration(
                seed=seed, prompt=prompt, model_name=model_name, when=when, extra=extra
            )
        grid = image_grid(images, rows)
        return self._save(grid, infotext, folder, "grid", 4, decoration)
