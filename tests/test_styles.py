"""Prompt styles: A1111's {prompt}/append semantics and styles.csv compatibility (read and write back)."""
from __future__ import annotations

import pytest

from pipelines.core.errors import UserError
from pipelines.params.declarations import make_request
from pipelines.prompts.styles import (
    PromptStyle, StyleDatabase, apply_styles_to_prompt, apply_to_request, extract_style_text_from_prompt,
    merge_prompts,
)

# A user's file as A1111 writes it: UTF-8 BOM, CRLF, quoted fields (commas, a newline), divider rows.
A1111_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    "# PORTRAITS,,\r\n"
    "Cinematic,\"cinematic still of {prompt}, shallow depth of field\",\"cartoon, drawing\"\r\n"
    "Sharp,\"highly detailed, sharp focus\",blurry\r\n"
    "#----------,,\r\n"
    "Two lines,\"line one\nline two\",\r\n"
    "Negative only,,\"lowres, bad anatomy\"\r\n"
)


@pytest.mark.parametrize("style, prompt, expected", [
    ("cinematic still of {prompt}, film grain", "a cat", "cinematic still of a cat, film grain"),
    ("{prompt} {prompt}", "x", "x x"),                      # every placeholder
    ("highly detailed", "a cat", "a cat, highly detailed"),  # no placeholder: appended with ", "
    ("  highly detailed ", " a cat  ", "a cat, highly detailed"),
    ("highly detailed", "", "highly detailed"),             # empty prompt: no leading comma
    ("", "a cat", "a cat"),                                 # empty style: prompt unchanged (stripped)
    ("{prompt}", "", ""),
])
def test_merge_prompts_a1111_semantics(style, prompt, expected):
    assert merge_prompts(style, prompt) == expected


def test_several_styles_apply_in_order():
    assert apply_styles_to_prompt("a cat", ["photo of {prompt}", "sharp", "[{prompt}]"]) == "[photo of a cat, sharp]"
    assert apply_styles_to_prompt("a cat", ["[{prompt}]", "photo of {prompt}", "sharp"]) == "photo of [a cat], sharp"


def test_reads_a1111_file(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(A1111_CSV.encode("utf-8"))
    db = StyleDatabase(path)
    assert db.load_error is None
    assert db.names() == ["Cinematic", "Sharp", "Two lines", "Negative only"]   # '#' rows are not styles
    assert db.get("Cinematic") == PromptStyle("Cinematic", "cinematic still of {prompt}, shallow depth of field",
                                              "cartoon, drawing")
    assert db.get("Two lines").prompt == "line one\nline two"
    prompt, negative, warnings = db.apply("a cat", "ugly", ["Cinematic", "Sharp", "Negative only"])
    assert prompt == "cinematic still of a cat, shallow depth of field, highly detailed, sharp focus"
    assert negative == "ugly, cartoon, drawing, blurry, lowres, bad anatomy"
    assert warnings == []


def test_reads_old_name_text_format_and_missing_file(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("name,text\nOld,\"old style, {prompt}\"\n", encoding="utf-8")
    db = StyleDatabase(old)
    assert db.get("Old") == PromptStyle("Old", "old style, {prompt}", "")
    assert StyleDatabase(tmp_path / "none.csv").names() == []


def test_write_back_keeps_format_and_divider_rows(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(A1111_CSV.encode("utf-8"))
    db = StyleDatabase(path)
    db.set(PromptStyle("Sharp", "sharp focus, 8k", "blurry"))        # edit in place
    db.set(PromptStyle("New, with comma", "new {prompt}", ""))        # append
    db.delete("Negative only")
    db.save()
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw[3:].startswith(b"name,prompt,negative_prompt\r\n")
    assert (tmp_path / "styles.csv.bak").read_bytes() == A1111_CSV.encode("utf-8")
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    again = StyleDatabase(path)
    assert again.names() == ["Cinematic", "Sharp", "Two lines", "New, with comma"]
    assert again.get("Sharp").prompt == "sharp focus, 8k"
    assert again.get("Two lines").prompt == "line one\nline two"
    text = raw.decode("utf-8-sig")
    assert text.index("# PORTRAITS") < text.index("Cinematic") < text.index("#----------") < text.index("Two lines")
    with pytest.raises(UserError):
        db.set(PromptStyle("#comment", "x", ""))


def test_request_styles_field_and_unknown_names(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(A1111_CSV.encode("utf-8"))
    db = StyleDatabase(path)
    req = make_request(prompt="a cat", negative_prompt="", styles=["Sharp", "Nope", "Cinematic"])
    assert req.styles == ("Sharp", "Nope", "Cinematic")
    out, warnings = apply_to_request(db, req)
    assert out.prompt == "cinematic still of a cat, highly detailed, sharp focus, shallow depth of field"
    assert out.negative_prompt == "blurry, cartoon, drawing"
    assert out.styles == () and any("'Nope'" in w for w in warnings)
    assert apply_to_request(db, out) == (out, [])      # applying twice changes nothing
    _, warnings = apply_to_request(None, req)
    assert "no styles file" in warnings[0]


def test_extract_styles_from_pasted_prompt(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(A1111_CSV.encode("utf-8"))
    db = StyleDatabase(path)
    prompt, negative, _ = db.apply("a cat", "ugly", ["Cinematic", "Sharp"])
    assert db.extract_styles_from_prompt(prompt, negative) == (["Cinematic", "Sharp"], "a cat", "ugly")
    assert extract_style_text_from_prompt("masterpiece, {prompt}", "exquisite, a cat") == (False, "exquisite, a cat")
