"""AUTOMATIC1111 "infotext": the generation-parameters text stored in images.

The format, as written by A1111's ``processing.create_infotext`` and read by
``infotext_utils.parse_generation_parameters`` (Forge and SD.Next write the
same format with extra keys)::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 45dee52b

* The ``Negative prompt:`` line is present only when the negative prompt is not empty.
* The last line is the parameters line, ``key: value`` pairs joined by ``", "``, in the
  caller's order. When parsing, the last line counts as the parameters line only if the
  A1111 regex finds at least three pairs in it; otherwise it belongs to the prompt.
* A value containing ``,``, ``:`` or a newline is written as a JSON string (A1111's
  ``quote``); quoted values are decoded with JSON when read (``unquote``).
* ``WxH`` values (``Size: 512x768``) are additionally split into ``Size-1``/``Size-2``.

This module is generic: it knows nothing of which keys exist. The parameter declarations
map request fields to infotext keys and convert the string values read back.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "RE_PARAM",
    "RE_IMAGESIZE",
    "ParsedInfotext",
    "build_infotext",
    "format_value",
    "parse_infotext",
    "quote",
    "unquote",
]

# A1111 modules/infotext_utils.py: re_param_code. Key: a word character followed by one or
# more word characters, spaces, dashes or slashes; value: a JSON string or anything up to
# the next comma.
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"(\d+)x(\d+)")
# Keys the parser can read back: the A1111 key pattern, not ending in whitespace (trailing
# spaces would become part of the parsed key).
_RE_VALID_KEY = re.compile(r"\w[\w \-/]*[\w\-/]")

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"


def quote(text: str) -> str:
    """A1111's ``quote()``: JSON-encode a value that the parameters line could not carry.

    A1111 quotes when the value contains ``,``, ``:`` or a newline. This also quotes values
    that start or end with a double quote (they would be mistaken for quoted values), that
    contain a carriage return, or that have leading/trailing whitespace (the parser would
    drop it); A1111 reads all of these back correctly.
    """
    text = str(text)
    if (
        "," in text
        or ":" in text
        or "\n" in text
        or "\r" in text
        or text.startswith('"')
        or text.endswith('"')
        or text != text.strip()
    ):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """A1111's ``unquote()``: decode a JSON-quoted value; anything else is returned unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def format_value(value: Any) -> str:
    """Render one parameter value the way A1111 prints it (before quoting).

    bool -> ``True``/``False``; integers as is; floats without a trailing ``.0``
    (7.0 -> ``7``, 0.7 -> ``0.7``); dicts/lists/tuples as JSON; anything else ``str()``.
    """
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        text = str(value)
        if text.endswith(".0"):
            text = text[:-2]
        return text
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _params_line(params: Mapping[str, object]) -> str:
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if not isinstance(key, str) or not _RE_VALID_KEY.fullmatch(key):
            raise ValueError(
                f"infotext key {key!r} cannot be read back: use letters, digits, '_', spaces, "
                "'-' or '/', at least two characters, not ending in a space"
            )
        text = format_value(value)
        if text == key:
            # A1111 writes a parameter whose value equals its name as the bare name.
            parts.append(key)
        else:
            parts.append(f"{key}: {quote(text)}")
    return ", ".join(parts)


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Build an A1111 infotext.

    ``params`` is written in its own order; ``None`` values are left out. Raises
    ``ValueError`` for a key the parser could not read back.
    """
    params_text = _params_line(params)
    negative_text = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt or ''}{negative_text}\n{params_text}".strip()


@dataclass
class ParsedInfotext:
    """Result of :func:`parse_infotext`. ``params`` keeps the text's order and unknown keys;
    values stay strings (the caller converts them by declaration)."""

    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)


def parse_infotext(text: str) -> ParsedInfotext:
    """Parse an infotext following A1111's ``parse_generation_parameters``.

    Differences from A1111, all additive: no defaults are filled in for missing keys (A1111
    adds ``Clip skip: 1``, ``RNG: GPU``...; the declarations do that), ``WxH`` values are kept
    under their own key as well as split into ``key-1``/``key-2``, and empty values are kept
    (A1111 skips them with an error message).
    """
    text = (text or "").replace("\r\n", "\n").strip()
    *lines, lastline = text.split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    done_with_prompt = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            done_with_prompt = True
            line = line[len(NEGATIVE_PROMPT_PREFIX):].strip()
        (negative_lines if done_with_prompt else prompt_lines).append(line)

    params: dict[str, str] = {}
    for key, value in RE_PARAM.findall(lastline):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        params[key] = value
        match = RE_IMAGESIZE.fullmatch(value)
        if match is not None:
            params[f"{key}-1"] = match.group(1)
            params[f"{key}-2"] = match.group(2)

    return ParsedInfotext(
        prompt="\n".join(prompt_lines),
        negative_prompt="\n".join(negative_lines),
        params=params,
    )
