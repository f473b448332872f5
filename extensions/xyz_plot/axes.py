"""Axis values of the X/Y/Z plot: AUTOMATIC1111's syntax, checked against the parameter declarations.

    1, 2, 5            a list (CSV: "a, b", "c" keeps a comma inside quotes)
    1-5                integers 1..5;   1-10 (+3)   step 3;   10-1 (-3)   counting down
    1-10 [4]           4 values evenly spaced from 1 to 10 (rounded for integers)
    0.5-2.5 (+0.5)     floats work the same way;   -1 (seed) stays random per value unless fixed
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from pipelines.core.errors import ParameterError
from pipelines.params.infotext import format_value
from pipelines.params.declarations import Param, resolve_seed

NOTHING = "Nothing"
PROMPT_SR = "Prompt S/R"
MAX_VALUES = 64

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
RE_INT_RANGE = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(\s*({_INT})\s*\))?\s*")
RE_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*")
RE_FLOAT_RANGE = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*({_FLOAT})\s*\))?\s*")
RE_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


@dataclass(frozen=True)
class Axis:
    kind: str                    # "param", "sr" (prompt search/replace) or "none"
    title: str                   # what the grid labels say before the value
    values: tuple[Any, ...]      # converted values (one None for an unused axis)
    labels: tuple[str, ...]
    param: Param | None = None

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def __len__(self) -> int:
        return len(self.values)


UNUSED = Axis("none", "", (None,), ("",))


def split_values(text: str) -> list[str]:
    """CSV items, stripped; empty items dropped."""
    rows = list(csv.reader(io.StringIO(text or ""), skipinitialspace=True))
    return [item.strip() for row in rows for item in row if item.strip()]


def quote_values(items: list[str]) -> str:
    """The CSV line `split_values` reads back as `items` (a value with a comma is quoted)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(items)
    return buf.getvalue()


def _num(text: str, kind: type) -> Any:
    return kind(text.replace(" ", ""))


def _spaced(start: float, stop: float, count: int) -> list[float]:
    if count < 1:
        return []
    if count == 1:
        return [start]
    return [start + (stop - start) * i / (count - 1) for i in range(count)]


def expand(items: list[str], kind: type, field: str) -> list[Any]:
    """Number ranges (`a-b`, `a-b (+s)`, `a-b [n]`) expanded; other items returned as they are."""
    out: list[Any] = []
    for item in items:
        if kind is int and (m := RE_INT_COUNT.fullmatch(item)):
            a, b, n = _num(m[1], int), _num(m[2], int), min(int(m[3]), MAX_VALUES + 1)
            out += [int(round(x)) for x in _spaced(a, b, n)]
        elif kind is int and (m := RE_INT_RANGE.fullmatch(item)):
            a, b = _num(m[1], int), _num(m[2], int)
            step = _num(m[3], int) if m[3] else (1 if b >= a else -1)
            if step == 0 or (b - a) * step < 0:
                raise ParameterError(field, f"{item!r}: the step goes away from the end")
            if (b - a) // step + 1 > MAX_VALUES:
                raise ParameterError(field, f"{item!r} makes {(b - a) // step + 1} values; at most {MAX_VALUES}")
            out += list(range(a, b + (1 if step > 0 else -1), step))
        elif kind is float and (m := RE_FLOAT_COUNT.fullmatch(item)):
            a, b, n = _num(m[1], float), _num(m[2], float), min(int(m[3]), MAX_VALUES + 1)
            out += [round(x, 6) for x in _spaced(a, b, n)]
        elif kind is float and (m := RE_FLOAT_RANGE.fullmatch(item)):
            a, b = _num(m[1], float), _num(m[2], float)
            step = _num(m[3], float) if m[3] else (1.0 if b >= a else -1.0)
            if step == 0 or (b - a) * step < 0:
                raise ParameterError(field, f"{item!r}: the step goes away from the end")
            count = int((b - a) / step + 1e-9) + 1
            if count > MAX_VALUES:
                raise ParameterError(field, f"{item!r} makes {count} values; at most {MAX_VALUES}")
            out += [round(a + i * step, 6) for i in range(count)]
        else:
            out.append(item)
        if len(out) > MAX_VALUES:
            raise ParameterError(field, f"more than {MAX_VALUES} values")
    return out


def title_of(p: Param) -> str:
    """Short grid label: the infotext key ("Steps", "CFG scale", "Sampler") unless it is a split key."""
    key = p.infotext
    if key and not key.endswith(("-1", "-2")):
        return key
    return p.label


def convert(p: Param, raw: Any, field: str) -> Any:
    value = raw
    choices = p.choice_list()
    if isinstance(raw, str) and choices and raw not in choices:
        lower = {str(c).lower(): c for c in choices}
        value = lower.get(raw.lower(), raw)               # "euler a" → "Euler a"
    if p.labels is not None and isinstance(raw, str) and raw in p.labels:
        value = p.labels.index(raw)                       # radio parameters by their label
    try:
        return p.convert(value)
    except ParameterError as err:
        raise ParameterError(field, f"{raw!r}: {str(err).split(': ', 1)[-1]}") from None


def parse_axis(type_name: str, text: str, params: dict[str, Param], field: str, *, prompt: str = "",
               negative: str = "", keep_random: bool = False) -> Axis:
    if not type_name or type_name == NOTHING:
        return UNUSED
    items = split_values(text)
    if not items:
        raise ParameterError(field, f"give the values for {type_name} (comma separated; ranges like 1-5 work)")
    if type_name == PROMPT_SR:
        search = items[0]
        if search not in prompt and search not in negative:
            raise ParameterError(field, f"Prompt S/R: {search!r} is in neither the prompt nor the negative prompt")
        if len(items) > MAX_VALUES:
            raise ParameterError(field, f"more than {MAX_VALUES} values")
        return Axis("sr", "", tuple(items), tuple(items))
    p = params.get(type_name)
    if p is None:
        raise ParameterError(field, f"{type_name!r} cannot be plotted")
    raw = expand(items, p.type, field) if p.type in (int, float) else items
    values = [convert(p, r, field) for r in raw]
    if p.name in ("seed", "subseed") and not keep_random:
        values = [resolve_seed(v) if v == -1 else v for v in values]
    labels = [f"{title_of(p)}: {format_value(p.label_of(v))}" for v in values]
    return Axis("param", title_of(p), tuple(values), tuple(labels), p)
