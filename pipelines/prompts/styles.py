"""Prompt styles, read from and written to AUTOMATIC1111's `styles.csv`.

A style is (name, prompt, negative prompt). Applying it follows A1111's `modules/styles.py` exactly:

- a style text containing `{prompt}` has every `{prompt}` replaced by the prompt;
- otherwise the style text is appended: `", ".join` of the stripped prompt and the stripped style text,
  leaving out whichever is empty;
- several styles apply in the order given, each to the result of the previous one; the negative prompt
  gets the styles' negative texts the same way.

The file format is A1111's: UTF-8 with a BOM (`utf-8-sig`), header `name,prompt,negative_prompt`
(an old `name,text` file is read too), rows whose name starts with `#` are dividers/comments and are
not styles. Unlike A1111, which drops them when it saves, the `#` rows are written back where they were,
so a user's file keeps its layout. Writes are atomic (temporary file + rename) and, like A1111, leave the
previous file as `styles.csv.bak`.

A generation request names styles in its `styles` field (A1111 API: `styles: list[str]`);
`apply_to_request` turns it into the final prompts, which are what the infotext records (A1111 writes no
style names; `StyleDatabase.extract_styles_from_prompt` recovers them when an infotext is pasted).
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..core.errors import UserError
from ..core.fileio import atomic_write

FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """One style text applied to a prompt (A1111 `merge_prompts`)."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, style_prompts: Iterable[str]) -> str:
    """Style texts applied in order (A1111 `apply_styles_to_prompt`)."""
    for style_prompt in style_prompts:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


def extract_style_text_from_prompt(style_text: str, prompt: str) -> tuple[bool, str]:
    """Undo one `merge_prompts`: (True, prompt without the style) when the style's text is there.

    A1111's rule: with `{prompt}` the prompt must start and end with the text around the placeholder;
    without it the prompt must end with the style text (a ", " before it goes too).
    """
    stripped_prompt = prompt.strip()
    stripped_style = style_text.strip()
    if PLACEHOLDER in stripped_style:
        left, _, right = stripped_style.partition(PLACEHOLDER)
        if stripped_prompt.startswith(left) and stripped_prompt.endswith(right) \
                and len(stripped_prompt) >= len(left) + len(right):
            return True, stripped_prompt[len(left):len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style):
        rest = stripped_prompt[:len(stripped_prompt) - len(stripped_style)]
        if rest.endswith(", "):
            rest = rest[:-2]
        return True, rest
    return False, prompt


class StyleDatabase:
    """The styles of one `styles.csv` (missing file = no styles; it is created on the first save)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.RLock()
        self.styles: dict[str, PromptStyle] = {}
        # The file's rows in order: a style name, or ("#", raw row) for a divider/comment row.
        self._rows: list[str | tuple[str, dict]] = []
        self.load_error: str | None = None
        self.reload()

    # ------------------------------------------------------------------ reading
    def reload(self) -> None:
        with self._lock:
            self.styles, self._rows, self.load_error = {}, [], None
            if not self.path.is_file():
                return
            try:
                text = self.path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as err:
                self.load_error = f"{self.path}: cannot read styles ({err}); no styles loaded"
                return
            self._parse(text)

    def _parse(self, text: str) -> None:
        reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
        if not reader.fieldnames or "name" not in reader.fieldnames:
            self.load_error = f"{self.path}: no 'name' column in the header; expected {','.join(FIELDS)}"
            return
        for row in reader:
            name = row.get("name") or ""
            if not name.strip() and not any((v or "").strip() for k, v in row.items() if k):
                continue  # blank line
            if name.startswith("#"):
                self._rows.append(("#", {k: v for k, v in row.items() if k in FIELDS}))
                continue
            # Old A1111 files have a "text" column instead of "prompt".
            prompt = row.get("prompt") if "prompt" in row else row.get("text")
            style = PromptStyle(name, prompt or "", row.get("negative_prompt") or "")
            if name not in self.styles:
                self._rows.append(name)
            self.styles[name] = style  # a repeated name: the last row wins, as in A1111

    # ------------------------------------------------------------------ queries
    def names(self) -> list[str]:
        """Style names in file order (what a style picker lists)."""
        with self._lock:
            return [r for r in self._rows if isinstance(r, str)]

    def get(self, name: str) -> PromptStyle | None:
        return self.styles.get(name)

    def apply(self, prompt: str, negative_prompt: str, names: Iterable[str]) -> tuple[str, str, list[str]]:
        """(prompt, negative prompt, warnings) with the named styles applied in order.

        An unknown name is skipped with a warning (A1111 skips it silently)."""
        found, warnings = [], []
        for name in names:
            style = self.styles.get(name)
            if style is None:
                warnings.append(f"style {name!r} not found in {self.path.name}; it was skipped")
            else:
                found.append(style)
        return (apply_styles_to_prompt(prompt, [s.prompt for s in found]),
                apply_styles_to_prompt(negative_prompt, [s.negative_prompt for s in found]), warnings)

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """Styles whose texts a (pasted) prompt pair contains, and the prompts without them (A1111's
        infotext paste): returns (style names in application order, prompt, negative prompt)."""
        extracted: list[str] = []
        candidates = [s for s in self.styles.values() if s.prompt or s.negative_prompt]
        while True:
            for style in candidates:
                ok_pos, new_pos = extract_style_text_from_prompt(style.prompt, prompt)
                if not ok_pos:
                    continue
                ok_neg, new_neg = extract_style_text_from_prompt(style.negative_prompt, negative_prompt)
                if not ok_neg:
                    continue
                prompt, negative_prompt = new_pos, new_neg
                candidates.remove(style)
                extracted.append(style.name)
                break
            else:
                break
        return list(reversed(extracted)), prompt, negative_prompt

    # ------------------------------------------------------------------ editing
    def set(self, style: PromptStyle) -> None:
        """Add or replace a style (in memory; `save()` writes the file)."""
        name = (style.name or "").strip()
        if not name:
            raise UserError("a style needs a name")
        if name.startswith("#"):
            raise UserError(f"style names cannot start with '#' ({name!r}): such rows are comments in styles.csv")
        with self._lock:
            if name not in self.styles:
                self._rows.append(name)
            self.styles[name] = PromptStyle(name, style.prompt or "", style.negative_prompt or "")

    def delete(self, name: str) -> None:
        with self._lock:
            if name not in self.styles:
                raise UserError(f"style {name!r} not found in {self.path.name}")
            del self.styles[name]
            self._rows = [r for r in self._rows if r != name]

    def to_csv(self) -> str:
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=list(FIELDS))
        writer.writeheader()
        for row in self._rows:
            if isinstance(row, tuple):
                writer.writerow({k: row[1].get(k) or "" for k in FIELDS})
            else:
                s = self.styles[row]
                writer.writerow({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt})
        return out.getvalue()

    def save(self) -> Path:
        """Write the file (utf-8-sig, A1111 columns) atomically; the previous one stays as `.bak`."""
        with self._lock:
            data = self.to_csv().encode("utf-8-sig")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                shutil.copy2(self.path, str(self.path) + ".bak")
            atomic_write(self.path, data)
            return self.path


def apply_to_request(db: StyleDatabase | None, req):
    """The request with its `styles` applied to the prompts (and `styles` emptied, so applying twice is
    harmless); returns (request, warnings)."""
    names = tuple(getattr(req, "styles", ()) or ())
    if not names:
        return req, []
    if db is None:
        return req.replace(styles=()), [f"styles {', '.join(map(repr, names))} ignored: no styles file is configured"]
    prompt, negative, warnings = db.apply(req.prompt, req.negative_prompt, names)
    return req.replace(prompt=prompt, negative_prompt=negative, styles=()), warnings
