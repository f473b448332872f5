"""A1111 prompt syntax: emphasis, BREAK, prompt editing, alternation, AND, 75-token chunks."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.prompts.parser import (
    BREAK, COMMA_TOKEN_ID, PromptSyntaxError, check_supported, chunk_tokens, comma_token_id, frame_chunk,
    get_schedule, parse_attention, prompt_at_step, tokenize_weighted,
)

PAD = 49407  # <|endoftext|>
BOS = 49406


@pytest.fixture(scope="module")
def tok():
    from pipelines.models.tokenizers import clip_tokenizer

    return clip_tokenizer()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- emphasis


@pytest.mark.parametrize(
    "text, expected",
    [  # A1111's parse_prompt_attention docstring, float for float
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_a1111_attention_table(text, expected):
    assert parse_attention(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", [("", 1.0)]),
        ("((word))", [("word", 1.1 * 1.1)]),
        ("[word]", [("word", 1 / 1.1)]),
        ("[[word]]", [("word", (1 / 1.1) * (1 / 1.1))]),
        ("(word:1.3)", [("word", 1.3)]),
        ("( word : 0.5 )", [(" word ", 0.5)]),
        ("((a:2) b)", [("a", 2 * 1.1), (" b", 1.1)]),
        ("[(a:2)]", [("a", 2 / 1.1)]),
        ("[unbalanced", [("unbalanced", 1 / 1.1)]),
        ("([both", [("both", 1.1 / 1.1)]),  # round closed first, then square, as A1111
        ("a) b]", [("a) b]", 1.0)]),  # unmatched closers are text
        ("a:1.2) b", [("a:1.2) b", 1.0)]),  # weight closer with no "(" is text
        ("time: noon", [("time: noon", 1.0)]),
        ("\\\\", [("\\", 1.0)]),
        ("a\\b", [("ab", 1.0)]),  # a lone backslash disappears (A1111)
        ("\\((a)\\)", [("(", 1.0), ("a", 1.1), (")", 1.0)]),
        ("(a:1.2.3)", [("a:1.2.3", 1.1)]),  # not a number: kept as text (A1111 crashes)
        ("(a:.)", [("a:.", 1.1)]),
        ("(a:-1)", [("a", -1.0)]),
    ],
)
def test_attention_more(text, expected):
    got = parse_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_nested_weights_are_bit_identical_to_a1111():
    assert parse_attention("((word))") == [("word", 1.2100000000000002)]
    assert parse_attention("(((word)))") == [("word", 1.3310000000000004)]


def test_break():
    assert parse_attention("a BREAK b") == [("a", 1.0), BREAK, ("b", 1.0)]
    assert BREAK == ("BREAK", -1.0)
    assert parse_attention("a\nBREAK\nb") == [("a", 1.0), BREAK, ("b", 1.0)]
    # only the uppercase standalone word
    assert parse_attention("a break b") == [("a break b", 1.0)]
    assert parse_attention("aBREAK BREAKs") == [("aBREAK BREAKs", 1.0)]
    # inside brackets it stays a BREAK (A1111 would turn it into the word with weight -1.1)
    assert parse_attention("(a BREAK b)") == [("a", 1.1), BREAK, ("b", 1.1)]
    assert parse_attention("BREAK BREAK") == [("", 1.0), BREAK, ("", 1.0), BREAK, ("", 1.0)]


# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "prompt, expected",
    [  # A1111's doctests (10 steps), with equal neighbours merged
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
        ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
        (
            "[fe|||]male",
            [(1, "female"), (4, "male"), (5, "female"), (8, "male"), (9, "female"), (10, "male")],
        ),
    ],
)
def test_a1111_schedule_table(prompt, expected):
    assert get_schedule(prompt, 10) == expected


def test_a1111_schedule_comment_example():
    p = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]"
    )
    assert get_schedule(p, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize(
    "prompt, steps, expected",
    [
        ("[a:b:10]", 20, [(10, "a"), (20, "b")]),
        ("[a:b:0.25]", 20, [(5, "a"), (20, "b")]),
        ("[a:b:0.33]", 20, [(6, "a"), (20, "b")]),  # int(6.6): truncated like A1111
        ("[a|b]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "b")]),
        ("[a|b|c]", 4, [(1, "a"), (2, "b"), (3, "c"), (4, "a")]),
        ("[a|a] x", 4, [(4, "a x")]),
        ("[a:[b:c:5]:10]", 20, [(10, "a"), (20, "c")]),
        ("[a:[b:c:15]:10]", 20, [(10, "a"), (15, "b"), (20, "c")]),
        ("[to:5]", 10, [(5, ""), (10, "to")]),
        ("x [to:5]", 10, [(5, "x "), (10, "x to")]),
        ("[from::5]", 10, [(5, "from"), (10, "")]),
        ("[(cat:1.2):dog:5]", 10, [(5, "(cat:1.2)"), (10, "dog")]),
        ("[[cat]:(dog):5]", 10, [(5, "[cat]"), (10, "(dog)")]),
        ("[a|[b:c:2]]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
        ("[a:b:1]", 10, [(1, "a"), (10, "b")]),  # an integer is a step
        ("[a:b:1.0]", 10, [(10, "a")]),  # a decimal is a fraction (current A1111)
        ("[a:b:0]", 10, [(10, "b")]),
        ("[a:b:-3]", 10, [(10, "b")]),
        ("[a:b:99]", 10, [(10, "a")]),
        ("[a:b:1e999]", 10, [(10, "a")]),  # A1111 crashes here
        ("[a:b:5e-1]", 10, [(10, "b")]),  # no "." -> step int(0.5) = 0
        ("[a\\:b:5]", 10, [(5, ""), (10, "a\\:b")]),  # an escaped ":" is text
        ("[a\\|b]", 10, [(10, "[a\\|b]")]),  # an escaped "|" is text: "[...]" is emphasis
    ],
)
def test_schedules(prompt, steps, expected):
    assert get_schedule(prompt, steps) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "[word]",
        "(a:1.2)",
        "a photo: a cat",
        "[a:b:c]",  # not a number
        "[a:b:5:6]",
        "(a:b:5)",
        "\\[a:b:5\\]",  # escaped brackets are left alone (parse_attention unescapes them)
        "a [b|c",  # "|" outside an alternation: A1111 gives up and takes the prompt as is
        "cat | dog [a:b:5]",
        "(a|b) [c:d:2]",
        "trailing backslash [a:b:2] \\",
        "",
        "(" * 150 + "[a:b:2]",  # too deep: literal, no RecursionError
    ],
)
def test_literal_passthrough(prompt):
    assert get_schedule(prompt, 10) == [(10, prompt)]


def test_hires_schedule():
    # A1111 doctests: fractions count over both passes, 1.5 = halfway through hires
    assert get_schedule("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert get_schedule("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    # integers count on from the first pass
    assert get_schedule("[a:b:15]", 10, hires_steps=10) == [(5, "a"), (10, "b")]
    assert get_schedule("[a:b:5]", 10, hires_steps=10) == [(10, "b")]
    assert get_schedule("[a|b]", 10, hires_steps=3) == [(1, "a"), (2, "b"), (3, "a")]


def test_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        get_schedule("a", 0)
    with pytest.raises(ValueError, match="hires_steps"):
        get_schedule("a", 10, hires_steps=0)


def test_prompt_at_step_follows_a1111_lookup():
    sched = get_schedule("[a:b:5]", 20)
    assert [prompt_at_step(sched, s) for s in (0, 5, 6, 19)] == ["a", "a", "b", "b"]
    alt = get_schedule("[a|b]", 4)
    assert [prompt_at_step(alt, s) for s in range(4)] == ["a", "a", "b", "a"]


# ---------------------------------------------------------------- AND


def test_and_is_refused_with_a_clear_message():
    with pytest.raises(PromptSyntaxError) as err:
        check_supported("a cat AND a dog")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == (
        "AND (composable diffusion) is not supported yet; remove ' AND ' or write 'and'"
    )
    for fine in ("a cat and a dog", "ANDROID", "BRAND", "", "a BREAK b"):
        check_supported(fine)


# ---------------------------------------------------------------- tokens and chunks


def chunks_for(tok, prompt, **kw):
    flat, breaks = tokenize_weighted(tok, parse_attention(prompt))
    return chunk_tokens(flat, breaks, pad_id=PAD, **kw)


def content(chunk):
    return [t for t in chunk[0] if t != PAD]


def test_comma_id(tok):
    assert comma_token_id(tok) == COMMA_TOKEN_ID == ids(tok, ",")[0]


def test_tokenize_weighted(tok):
    flat, breaks = tokenize_weighted(tok, parse_attention("a (red:1.5) cat BREAK dog"))
    assert [t for t, _ in flat] == ids(tok, "a red cat dog")
    assert [w for _, w in flat] == [1.0, 1.5, 1.0, 1.0]
    assert breaks == [3]


def test_tokenizer_called_once_with_a1111_arguments():
    calls = []

    def fake(texts, **kw):
        calls.append((texts, kw))
        return {"input_ids": [[len(t)] for t in texts]}

    flat, breaks = tokenize_weighted(fake, [("ab", 1.0), BREAK, ("", 1.0), ("c", 2.0)])
    assert calls == [(["ab", "c"], {"add_special_tokens": False, "truncation": False})]
    assert flat == [(2, 1.0), (1, 2.0)] and breaks == [1]


def test_empty_prompt_is_one_chunk_of_padding(tok):
    assert chunks_for(tok, "") == [([PAD] * 75, [1.0] * 75)]


def test_short_prompt(tok):
    [(chunk_ids, weights)] = chunks_for(tok, "a photo of a (cat:1.3)")
    n = len(ids(tok, "a photo of a cat"))
    assert chunk_ids[:n] == ids(tok, "a photo of a cat") and chunk_ids[n:] == [PAD] * (75 - n)
    assert weights == [1.0] * (n - 1) + [1.3] + [1.0] * (75 - n)


def test_long_prompt_splits_without_losing_tokens(tok):
    prompt = " ".join(["cat"] * 100)
    chunks = chunks_for(tok, prompt)
    assert len(chunks) == 2
    assert all(len(c[0]) == len(c[1]) == 75 for c in chunks)
    assert content(chunks[0]) + content(chunks[1]) == ids(tok, prompt)
    assert len(content(chunks[0])) == 75


def test_break_forces_a_new_chunk(tok):
    chunks = chunks_for(tok, "a cat BREAK a dog")
    assert [content(c) for c in chunks] == [ids(tok, "a cat"), ids(tok, "a dog")]
    # a leading BREAK gives an empty first chunk, as in A1111
    assert [content(c) for c in chunks_for(tok, "BREAK dog")] == [[], ids(tok, "dog")]


def test_comma_backtrack(tok):
    head = " ".join(["cat"] * 70) + ","
    tail = " ".join(["dog"] * 10)
    chunks = chunks_for(tok, head + " " + tail)
    assert [content(c) for c in chunks] == [ids(tok, head), ids(tok, tail)]
    assert chunks[0][0][70] == COMMA_TOKEN_ID and chunks[0][0][71:] == [PAD] * 4
    # with the backtrack off, the chunk is cut at exactly 75 tokens
    flat, _ = tokenize_weighted(tok, parse_attention(head + " " + tail))
    plain = chunk_tokens(flat, [], pad_id=PAD, comma_backtrack=0)
    assert len(content(plain[0])) == 75


def test_comma_too_far_back_is_ignored(tok):
    head = " ".join(["cat"] * 50) + ","
    tail = " ".join(["dog"] * 40)
    chunks = chunks_for(tok, head + " " + tail)
    assert len(content(chunks[0])) == 75  # the comma is 24 tokens back: more than 20
    assert content(chunks[0]) + content(chunks[1]) == ids(tok, head + " " + tail)


def test_chunk_weights_follow_moved_tokens():
    tokens = [(1, 1.0)] * 70 + [(COMMA_TOKEN_ID, 1.0)] + [(2, 1.5)] * 10
    first, second = chunk_tokens(tokens, [], pad_id=0)
    assert first[0] == [1] * 70 + [COMMA_TOKEN_ID] + [0] * 4
    assert second[0][:10] == [2] * 10 and second[1][:10] == [1.5] * 10 and second[1][10:] == [1.0] * 65


def test_frame_chunk():
    row, w = frame_chunk([5, 6] + [PAD] * 73, [1.2, 1.0] + [1.0] * 73, BOS, PAD)
    assert row == [BOS, 5, 6] + [PAD] * 74 and len(w) == 77 and w[1] == 1.2
    # SD2 / SDXL second encoder: one end token after the text, then the pad token
    row, _ = frame_chunk([5, 6] + [PAD] * 73, [1.0] * 75, BOS, PAD, pad_id=0)
    assert row == [BOS, 5, 6, PAD] + [0] * 73
    full, _ = frame_chunk([5] * 75, [1.0] * 75, BOS, PAD, pad_id=0)
    assert full == [BOS] + [5] * 75 + [PAD]


# ---------------------------------------------------------------- properties

SYNTAX = st.sampled_from(list("ab ,[]():|\\.0123-e\n") + ["BREAK", " AND ", "1.5", "[a:b:2]", "[x|y]"])
PROMPTS = st.lists(SYNTAX | st.characters(), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text() | PROMPTS)
def test_parse_attention_never_raises(text):
    parsed = parse_attention(text)
    assert parsed and all(isinstance(t, str) and isinstance(w, float) for t, w in parsed)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\\()[]:")))
def test_plain_text_round_trips(text):
    if re.search(r"\bBREAK\b", text):
        return
    parsed = parse_attention(text)
    assert "".join(t for t, _ in parsed) == text
    assert all(w == 1.0 for _, w in parsed)


@settings(max_examples=300, deadline=None)
@given(PROMPTS | st.text(), st.integers(1, 40), st.none() | st.integers(1, 20))
def test_get_schedule_never_raises(prompt, steps, hires_steps):
    schedule = get_schedule(prompt, steps, hires_steps)
    total = steps if hires_steps is None else hires_steps
    assert schedule[-1][0] == total
    ends = [end for end, _ in schedule]
    assert ends == sorted(set(ends)) and ends[0] >= 1
    assert all(a[1] != b[1] for a, b in zip(schedule, schedule[1:]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([1, 2, 3, COMMA_TOKEN_ID]), max_size=300),
    st.lists(st.integers(0, 300), max_size=4),
    st.sampled_from([75, 10, 3]),
    st.sampled_from([20, 0, 2]),
)
def test_chunking_loses_nothing(token_ids, breaks, chunk_len, backtrack):
    tokens = [(t, 1.0 + i / 1000) for i, t in enumerate(token_ids)]
    chunks = chunk_tokens(tokens, breaks, chunk_len, pad_id=0, comma_backtrack=backtrack)
    assert chunks and all(len(c[0]) == len(c[1]) == chunk_len for c in chunks)
    kept = [(t, w) for c in chunks for t, w in zip(*c) if t != 0]
    assert kept == tokens


def test_chunk_len_of_one_is_allowed_and_zero_refused():
    # (mutation run survivor) one token per chunk is a valid, if odd, chunking; below 1 is a ValueError
    assert chunk_tokens([(5, 1.0), (6, 0.5)], chunk_len=1, pad_id=PAD, comma_id=None) == [([5], [1.0]), ([6], [0.5])]
    with pytest.raises(ValueError, match="chunk_len must be >= 1"):
        chunk_tokens([(5, 1.0)], chunk_len=0, pad_id=PAD)
