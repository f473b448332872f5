"""AUTOMATIC1111 prompt syntax: emphasis, BREAK, prompt editing, alternation, 75-token chunks.

Pure Python (no torch). The encoder calls, per prompt::

    check_supported(prompt)                          # AND is refused with a clear message
    for end_step, text in get_schedule(prompt, steps):
        parsed = parse_attention(text)               # [(text, weight)], BREAK -> ("BREAK", -1.0)
        tokens, breaks = tokenize_weighted(tokenizer, parsed)
        chunks = chunk_tokens(tokens, breaks, pad_id=tokenizer.eos_token_id,
                              comma_id=comma_token_id(tokenizer))
        rows = [frame_chunk(ids, w, tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id) for ids, w in chunks]   # 77 tokens each

Why hand-written and not a library: A1111 builds its schedule parser with lark, which is not a
dependency here, and the prompt library diffusers users reach for (compel) has a different syntax
(`word++`, `(word)1.3`, `.and()`, `.blend()`), so it would weight the same prompt differently.
The grammar is small; a recursive-descent parser reproduces A1111's results, including how it
treats malformed text (as literal text, never an exception).

Semantics follow A1111's `modules/prompt_parser.py` (current version, "new" prompt-editing
timeline) and the chunking in `modules/sd_hijack_clip.py`. Known, deliberate differences:

- A BREAK inside brackets stays a BREAK. A1111 multiplies its -1 marker by the bracket weight,
  after which its encoder no longer recognises it and encodes the word "BREAK" with a negative
  weight - a bug, not a feature anybody relies on.
- A weight that is not a number (`(a:1.2.3)`) is kept as literal text instead of crashing.
- A step number too large for a float (`[a:b:1e999]`) means "never switch" instead of crashing.
- Prompts nested deeper than `_MAX_NESTING` brackets are not scheduled (taken literally).
- `get_schedule` merges adjacent entries whose text is equal (A1111 lists every boundary); the
  prompt in force at every step is the same.
- Some prompts with stray brackets before or after an editing construct (`[a:b:2][ x`) are
  ambiguous in A1111's grammar, and which reading lark picks changes from one A1111 process to
  the next (it depends on Python's per-process string hashing). Here the construct always wins,
  which is the reading A1111 gives in the unambiguous cases.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.core.errors import UserError

__all__ = [
    "BREAK",
    "COMMA_TOKEN_ID",
    "PromptSyntaxError",
    "check_supported",
    "chunk_tokens",
    "comma_token_id",
    "frame_chunk",
    "get_schedule",
    "is_break",
    "parse_attention",
    "prompt_at_step",
    "tokenize_weighted",
]


class PromptSyntaxError(UserError, ValueError):
    """The prompt uses syntax this program does not support; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Composable diffusion (AND)
# --------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")  # same test A1111 uses to split sub-prompts


def check_supported(prompt: str) -> None:
    """Raise `PromptSyntaxError` for syntax that would otherwise be silently misread.

    Today that is only `AND` (uppercase, as a word: A1111's composable diffusion).
    """
    if _AND.search(prompt or ""):
        raise PromptSyntaxError(
            "AND (composable diffusion) is not supported yet; remove ' AND ' or write 'and'"
        )


# --------------------------------------------------------------------------------------------
# Emphasis: (a) (a:1.3) [a] \( \) \[ \] \\ BREAK
# --------------------------------------------------------------------------------------------

BREAK: tuple[str, float] = ("BREAK", -1.0)
"""The item `parse_attention` emits for the word BREAK: it ends the current 75-token chunk."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

_ESCAPABLE = "()[]\\"
# A run of ordinary characters (anything but the five specials).
_PLAIN_RUN = re.compile(r"[^\\()\[\]:]+")
# ":1.3)" closes a round bracket with an explicit weight. [.\d] like A1111 (float() decides).
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# BREAK as a standalone uppercase word, eating the whitespace around it.
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")


def is_break(item: Sequence[Any]) -> bool:
    """True for the BREAK marker item of `parse_attention`'s output."""
    return len(item) == 2 and item[0] == "BREAK" and item[1] == -1


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split `text` into (fragment, weight) pairs with A1111's emphasis rules.

    >>> parse_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_attention('a [b] (c:1.5) BREAK \\\\(d\\\\)')
    [('a ', 1.0), ('b', 0.9090909090909091), (' ', 1.0), ('c', 1.5), ('', 1.0), ('BREAK', -1.0), ('(d)', 1.0)]

    Unclosed brackets are closed at the end; unmatched closers are literal text; adjacent
    fragments of equal weight are merged. Never raises.
    """
    # Parallel lists: fragment, weight, is-BREAK. Weights are multiplied in place, range by
    # range, in A1111's order, so floating point results are bit-identical (1.3 * 1.1 * 1.1 =
    # 1.5730000000000004). Like A1111 this is O(fragments x open brackets); a BREAK's weight is
    # multiplied too but ignored at the end.
    frags: list[str] = []
    weights: list[float] = []
    breaks: list[bool] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        weights[start:] = [w * factor for w in weights[start:]]

    def add_text(fragment: str) -> None:
        parts = _BREAK_WORD.split(fragment)
        for k, part in enumerate(parts):
            if k:
                frags.append("BREAK")
                weights.append(-1.0)
                breaks.append(True)
            frags.append(part)
            weights.append(1.0)
            breaks.append(False)

    text = text or ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 < n and text[i + 1] in _ESCAPABLE:
                add_text(text[i + 1])
                i += 2
            else:  # a lone backslash disappears, as in A1111
                add_text("")
                i += 1
        elif c == "(":
            open_round.append(len(frags))
            i += 1
        elif c == "[":
            open_square.append(len(frags))
            i += 1
        elif c == ":":
            m = _WEIGHT_CLOSE.match(text, i)
            if m is None:
                add_text(":")
                i += 1
            elif not open_round:
                add_text(m.group(0))
                i = m.end()
            else:
                try:
                    weight = float(m.group(1))
                except ValueError:  # "(a:1.2.3)": keep ":1.2.3" as text, let ")" close normally
                    add_text(m.group(0)[:-1])
                    i = m.end() - 1
                else:
                    scale(open_round.pop(), weight)
                    i = m.end()
        elif c == ")" and open_round:
            scale(open_round.pop(), ROUND_MULTIPLIER)
            i += 1
        elif c == "]" and open_square:
            scale(open_square.pop(), SQUARE_MULTIPLIER)
            i += 1
        elif c in ")]":
            add_text(c)
            i += 1
        else:
            m = _PLAIN_RUN.match(text, i)
            add_text(m.group(0))
            i = m.end()

    for start in open_round:
        scale(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale(start, SQUARE_MULTIPLIER)

    if not frags:
        return [("", 1.0)]

    runs: list[tuple[list[str], float] | None] = []  # None: BREAK
    for frag, weight, brk in zip(frags, weights, breaks):
        if brk:
            runs.append(None)
        elif runs and runs[-1] is not None and runs[-1][1] == weight:
            runs[-1][0].append(frag)
        else:
            runs.append(([frag], weight))
    return [BREAK if run is None else ("".join(run[0]), run[1]) for run in runs]


# --------------------------------------------------------------------------------------------
# Prompt editing [from:to:when] and alternation [a|b]
# --------------------------------------------------------------------------------------------
#
# The grammar (A1111's, written as the parser below reads it):
#
#   top       := (construct | stray | plain)*          stray: one of  [ ] ( ) :
#   prompt    := (construct | plain)*                  inside brackets nothing is stray
#   construct := "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"     (emphasis: kept)
#              | "[" [prompt ":"] prompt ":" NUMBER "]"                          (editing)
#              | "[" prompt ("|" prompt)+ "]"                                     (alternation)
#   plain     := (any char but \ [ ] ( ) : |   or   "\" + any char but newline)+
#   NUMBER    := optional whitespace, [+-]? (digits[.digits] | .digits) [e[+-]digits], whitespace
#
# At top level a "[" or "(" is read as a construct when one parses, otherwise as a literal
# character. A "|" outside any alternation, or a trailing "\", makes A1111's parser fail, and it
# then uses the whole prompt unscheduled; so does this one.

_NUMBER_CLOSE = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*\]")
_MAX_NESTING = 100


@dataclass
class _Edit:
    before: list | None  # None: "[to:when]" (nothing before)
    after: list
    number: str
    when: int = 0


@dataclass
class _Alternate:
    options: list


class _Unparsable(Exception):
    pass


class _ScheduleParser:
    def __init__(self, text: str):
        self.s = text
        self.n = len(text)
        self.memo: dict[int, tuple[list, int] | None] = {}

    def _at(self, i: int) -> str:
        return self.s[i] if i < self.n else ""

    def parse(self) -> list:
        s, n = self.s, self.n
        out: list = []
        i = 0
        while i < n:
            c = s[i]
            if c in "([":
                got = self._construct(i, 1)
                if got is None:
                    out.append(c)
                    i += 1
                else:
                    out.extend(got[0])
                    i = got[1]
            elif c in "]):":
                out.append(c)
                i += 1
            elif c == "|":
                raise _Unparsable
            elif c == "\\":
                if i + 1 < n and s[i + 1] != "\n":
                    out.append(s[i : i + 2])
                    i += 2
                else:
                    raise _Unparsable
            else:
                j = self._plain_end(i)
                out.append(s[i:j])
                i = j
        return out

    def _plain_end(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n:
            c = s[i]
            if c == "\\":
                if i + 1 < n and s[i + 1] != "\n":
                    i += 2
                    continue
                return i
            if c in "[]():|":
                return i
            i += 1
        return i

    def _prompt(self, i: int, depth: int) -> tuple[list, int]:
        """Read a prompt from i; stop at the first character that cannot continue it."""
        out: list = []
        while i < self.n:
            c = self.s[i]
            if c in "([":
                got = self._construct(i, depth + 1)
                if got is None:
                    break
                out.extend(got[0])
                i = got[1]
            else:
                j = self._plain_end(i)
                if j == i:
                    break
                out.append(self.s[i:j])
                i = j
        return out, i

    def _construct(self, i: int, depth: int) -> tuple[list, int] | None:
        if i in self.memo:
            return self.memo[i]
        if depth > _MAX_NESTING:
            raise _Unparsable
        result = self._construct_uncached(i, depth)
        self.memo[i] = result
        return result

    def _construct_uncached(self, i: int, depth: int) -> tuple[list, int] | None:
        first, j = self._prompt(i + 1, depth)
        sep = self._at(j)
        if self.s[i] == "(":
            if sep == ")":
                return ["(", *first, ")"], j + 1
            if sep == ":":
                second, k = self._prompt(j + 1, depth)
                if self._at(k) == ")":
                    return ["(", *first, ":", *second, ")"], k + 1
            return None
        if sep == "]":
            return ["[", *first, "]"], j + 1
        if sep == "|":
            options = [first]
            while self._at(j) == "|":
                option, j = self._prompt(j + 1, depth)
                options.append(option)
            if self._at(j) == "]":
                return [_Alternate(options)], j + 1
            return None
        if sep == ":":
            m = _NUMBER_CLOSE.match(self.s, j + 1)
            if m:  # [to:when]
                return [_Edit(None, first, m.group(1))], m.end()
            second, k = self._prompt(j + 1, depth)
            if self._at(k) == ":":
                m = _NUMBER_CLOSE.match(self.s, k + 1)
                if m:  # [from:to:when]
                    return [_Edit(first, second, m.group(1))], m.end()
        return None


def _walk(nodes: list):
    """Every node, depth first, including branches not taken at a given step."""
    for node in nodes:
        yield node
        if isinstance(node, _Edit):
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            for option in node.options:
                yield from _walk(option)


def _render(nodes: list, step: int, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            if step <= node.when:
                _render(node.before or [], step, out)
            else:
                _render(node.after, step, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, out)


def _edit_step(number: str, steps: int, int_offset: int, float_offset: float) -> int:
    """A1111's current ("new") timeline: a number with a '.' is a fraction of the pass, an
    integer is an absolute step; for the hires pass both are counted from the start of the
    first pass (1.5 = halfway through hires; base_steps + 3 = hires step 3)."""
    v = float(number)
    v = (v - float_offset) * steps if "." in number else v - int_offset
    if math.isnan(v):
        return 0
    if v >= steps:
        return steps
    return int(v) if math.isfinite(v) else -1


def get_schedule(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """The prompt's texts over the sampling steps: [(end_step, text), ...], last end_step == steps.

    `[from:to:when]` switches from `from` to `to` after step `when`; `[to:when]` adds and
    `[from::when]` removes text. `when` with a decimal point is a fraction of `steps` (0.25 of 20
    = 5, truncated like A1111), an integer is a step number. `[a|b|c]` cycles every step. Other
    bracket text (emphasis, escapes, unbalanced brackets) is passed through for
    `parse_attention`. Malformed prompts come back whole: [(steps, prompt)]. Never raises on
    any prompt.

    With `hires_steps`, `steps` is the first pass's step count and the schedule is for the
    hires-fix pass of `hires_steps` steps (A1111: 1.5 = halfway through hires, and an integer
    counts on from the first pass's steps).

    Which entry is in force at a sampler step: see `prompt_at_step`.

    >>> get_schedule("a [cat:dog:0.5] photo", 10)
    [(5, 'a cat photo'), (10, 'a dog photo')]
    """
    base = _check_steps("steps", steps)
    if hires_steps is None:
        total, int_offset, float_offset = base, 0, 0.0
    else:
        total, int_offset, float_offset = _check_steps("hires_steps", hires_steps), base, 1.0
    prompt = prompt or ""

    try:
        tree = _ScheduleParser(prompt).parse()
    except (_Unparsable, RecursionError):
        return [(total, prompt)]

    ends = {total}
    alternates = False
    for node in _walk(tree):
        if isinstance(node, _Edit):
            node.when = _edit_step(node.number, total, int_offset, float_offset)
            if node.when >= 1:
                ends.add(node.when)
        elif isinstance(node, _Alternate):
            alternates = True
    if alternates:
        ends.update(range(1, total + 1))

    schedule: list[tuple[int, str]] = []
    for end in sorted(ends):
        parts: list[str] = []
        _render(tree, end, parts)
        text = "".join(parts)
        if schedule and schedule[-1][1] == text:
            schedule[-1] = (end, text)
        else:
            schedule.append((end, text))
    return schedule


def _check_steps(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def prompt_at_step(schedule: Sequence[tuple[int, str]], step: int) -> str:
    """The text in force at 0-based sampler step `step`, chosen exactly as A1111 does: the first
    entry whose end_step >= step. (So with [(5, a), (20, b)] steps 0-5 use a, 6-19 use b, and
    an alternation [a|b] gives a, a, b, a, b, ... - A1111's behaviour, kept for parity.)"""
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[-1][1]


# --------------------------------------------------------------------------------------------
# Tokens and 75-token chunks
# --------------------------------------------------------------------------------------------

COMMA_TOKEN_ID = 267
"""Id of ',</w>' in the CLIP BPE vocabulary shared by every SD text encoder."""


def comma_token_id(tokenizer: Any) -> int | None:
    """The tokenizer's ',</w>' id as A1111 looks it up (None when its vocabulary has no such
    token; `COMMA_TOKEN_ID` when the tokenizer has no `get_vocab`)."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return COMMA_TOKEN_ID
    return get_vocab().get(",</w>")


def tokenize_weighted(
    tokenizer: Any, parsed: Sequence[tuple[str, float]]
) -> tuple[list[tuple[int, float]], list[int]]:
    """Tokenize `parse_attention` output into a flat [(token_id, weight)] plus BREAK positions.

    `tokenizer` is called once, as `tokenizer(texts, add_special_tokens=False,
    truncation=False)["input_ids"]` (a HF CLIPTokenizer works). A BREAK's position is the index
    in the flat list of the token it comes before.
    """
    texts = [text for text, weight in parsed if not is_break((text, weight)) and text]
    ids_per_text = iter(
        tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"] if texts else []
    )
    flat: list[tuple[int, float]] = []
    breaks: list[int] = []
    for text, weight in parsed:
        if is_break((text, weight)):
            breaks.append(len(flat))
        elif text:
            w = float(weight)
            flat.extend((int(token), w) for token in next(ids_per_text))
    return flat, breaks


def chunk_tokens(
    tokens: Sequence[tuple[int, float]],
    break_positions: Iterable[int] = (),
    chunk_len: int = 75,
    *,
    pad_id: int,
    comma_id: int | None = COMMA_TOKEN_ID,
    comma_backtrack: int = 20,
) -> list[tuple[list[int], list[float]]]:
    """Split weighted tokens into chunks of exactly `chunk_len`, A1111-style.

    - A BREAK (a position in `break_positions`; repeats count) ends the current chunk.
    - When a chunk is full and the last comma (`comma_id`) is at most `comma_backtrack` tokens
      back, the tokens after that comma move to the next chunk, so a phrase is not cut in two
      (A1111's "comma padding backtrack"; 0 turns it off).
    - Each chunk is padded to `chunk_len` with `pad_id` (weight 1.0). No tokens are dropped.
      An empty prompt gives one chunk of padding.

    For A1111 parity pass the end-of-text id as `pad_id` and then `frame_chunk` each chunk.
    Returns [(ids, weights)], each list `chunk_len` long.
    """
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    pending_breaks = sorted(max(0, int(p)) for p in break_positions)
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal ids, weights, last_comma
        missing = chunk_len - len(ids)
        chunks.append((ids + [pad_id] * missing, weights + [1.0] * missing))
        ids, weights, last_comma = [], [], -1

    b = 0
    for position, (token, weight) in enumerate(tokens):
        while b < len(pending_breaks) and pending_breaks[b] <= position:
            close_chunk()
            b += 1
        if comma_id is not None and token == comma_id:
            last_comma = len(ids)
        elif (
            comma_backtrack > 0
            and len(ids) == chunk_len
            and last_comma != -1
            and len(ids) - last_comma <= comma_backtrack
        ):
            cut = last_comma + 1
            moved_ids, moved_weights = ids[cut:], weights[cut:]
            ids, weights = ids[:cut], weights[:cut]
            close_chunk()
            ids, weights = moved_ids, moved_weights
        if len(ids) == chunk_len:
            close_chunk()
        ids.append(token)
        weights.append(weight)
    for _ in range(b, len(pending_breaks)):
        close_chunk()
    if ids or not chunks:
        close_chunk()
    return chunks


def frame_chunk(
    ids: Sequence[int],
    weights: Sequence[float],
    bos_id: int,
    eos_id: int,
    pad_id: int | None = None,
) -> tuple[list[int], list[float]]:
    """Add start/end tokens to a chunk (75 -> 77), as A1111 does before the text encoder.

    With a `pad_id` different from `eos_id` (SD2, SDXL's second encoder), every position after
    the first end-of-text token becomes `pad_id`, which is A1111's layout for those encoders:
    the chunk should then have been padded with `eos_id` by `chunk_tokens`.
    """
    row = [bos_id, *ids, eos_id]
    if pad_id is not None and pad_id != eos_id:
        first_end = row.index(eos_id, 1)
        row[first_end + 1 :] = [pad_id] * (len(row) - first_end - 1)
    return row, [1.0, *map(float, weights), 1.0]
