"""A1111 infotext: exact format, quoting, parsing of A1111 / Forge / SD.Next texts."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.params.infotext import ParsedInfotext, build_infotext, format_value, parse_infotext, quote, unquote

# --- fixtures: infotexts as written by other UIs (hand-written from the format) -----------

A1111_1_9 = """\
a photo of an astronaut riding a horse on mars, highly detailed
Negative prompt: blurry, lowres
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 1234567890, \
Size: 512x512, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, \
VAE: sdxl_vae.safetensors, TI hashes: "easynegative: c74b4e810b03", Version: v1.9.4"""

A1111_1_10 = """\
masterpiece, best quality, 1girl, solo, (looking at viewer:1.2), <lora:add_detail:0.8>
cinematic lighting, "quoted words"
Negative prompt: (worst quality, low quality:1.4), lowres,
bad anatomy, watermark
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3297581562, \
Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, \
Clip skip: 2, ADetailer model: face_yolov8n.pt, ADetailer prompt: "detailed face, smile", \
ADetailer confidence: 0.3, Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, \
Hires resize: 1024x1536, Lora hashes: "add_detail: 7c6bad76eb54", \
Template: "masterpiece, best quality, {prompt}", Emphasis: Original, Version: v1.10.1"""

FORGE = """\
cyberpunk city at night, neon lights, rain, highly detailed
Negative prompt: lowres, blurry
Steps: 25, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, \
Seed: 42, Size: 896x1152, Model hash: 4f3e5b3a1c, Model: flux1-dev-bnb-nf4-v2, \
ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, \
Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, \
Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", \
Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16, Diffusion in Low Bits: Automatic (fp16 LoRA), \
Version: f0.0.17v1.8.0rc-latest-276-g29be1da7"""

SDNEXT = """\
portrait of a woman, oil painting, by Rembrandt
Negative prompt: cartoon, 3d render
Steps: 20, Seed: 1620085323, Sampler: DPM++ 2M, CFG scale: 6, Size: 512x512, \
Parser: Full parser, Model: dreamshaper_8, Model hash: 879db523c3, Backend: Diffusers, \
App: SD.Next, Version: 1e3f1c8, Pipeline: StableDiffusionPipeline, Operations: txt2img, \
Sampler spacing: leading, Sampler sigma: karras, Token merging ratio: 0.3"""


def test_parse_a1111_1_9():
    parsed = parse_infotext(A1111_1_9)
    assert parsed.prompt == "a photo of an astronaut riding a horse on mars, highly detailed"
    assert parsed.negative_prompt == "blurry, lowres"
    assert list(parsed.params) == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed",
        "Size", "Size-1", "Size-2",
        "Model hash", "Model", "VAE hash", "VAE", "TI hashes", "Version",
    ]
    assert parsed.params["CFG scale"] == "7.5"
    assert parsed.params["Seed"] == "1234567890"
    assert parsed.params["Size-1"] == "512" and parsed.params["Size-2"] == "512"
    assert parsed.params["TI hashes"] == "easynegative: c74b4e810b03"
    assert parsed.params["Version"] == "v1.9.4"


def test_parse_a1111_1_10_multiline_and_quoted():
    parsed = parse_infotext(A1111_1_10)
    assert parsed.prompt == (
        "masterpiece, best quality, 1girl, solo, (looking at viewer:1.2), <lora:add_detail:0.8>\n"
        'cinematic lighting, "quoted words"'
    )
    assert parsed.negative_prompt == (
        "(worst quality, low quality:1.4), lowres,\nbad anatomy, watermark"
    )
    p = parsed.params
    assert p["Sampler"] == "DPM++ 2M"
    assert p["Schedule type"] == "Karras"
    assert p["Size-1"] == "512" and p["Size-2"] == "768"
    assert p["Hires resize"] == "1024x1536"
    assert p["Hires resize-1"] == "1024" and p["Hires resize-2"] == "1536"
    assert p["Hires upscale"] == "2"
    assert p["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert p["ADetailer prompt"] == "detailed face, smile"
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert p["Template"] == "masterpiece, best quality, {prompt}"
    assert p["Denoising strength"] == "0.45"
    assert p["Version"] == "v1.10.1"


def test_parse_forge():
    parsed = parse_infotext(FORGE)
    p = parsed.params
    assert parsed.negative_prompt == "lowres, blurry"
    assert p["Distilled CFG Scale"] == "3.5"
    assert p["Module 1"] == "ae" and p["Module 2"] == "clip_l" and p["Module 3"] == "t5xxl_fp16"
    assert p["ControlNet 0"].startswith("Module: canny, Model: control_v11p_sd15_canny [d14c016b]")
    assert p["ControlNet 0"].endswith("Control Mode: Balanced")
    assert p["Diffusion in Low Bits"] == "Automatic (fp16 LoRA)"
    assert p["Version"] == "f0.0.17v1.8.0rc-latest-276-g29be1da7"
    assert (p["Size-1"], p["Size-2"]) == ("896", "1152")


def test_parse_sdnext():
    parsed = parse_infotext(SDNEXT)
    p = parsed.params
    assert parsed.prompt == "portrait of a woman, oil painting, by Rembrandt"
    assert p["App"] == "SD.Next"
    assert p["Pipeline"] == "StableDiffusionPipeline"
    assert p["Operations"] == "txt2img"
    assert p["Backend"] == "Diffusers"
    assert p["Token merging ratio"] == "0.3"
    # order of the text is kept, unknown keys included
    assert list(p)[:3] == ["Steps", "Seed", "Sampler"]


@pytest.mark.parametrize("text", [A1111_1_9, A1111_1_10, FORGE, SDNEXT])
def test_fixtures_rebuild_identically(text):
    """Parsing then building (without the derived -1/-2 keys) gives back the same text."""
    parsed = parse_infotext(text)
    params = {k: v for k, v in parsed.params.items() if not k.endswith(("-1", "-2"))}
    assert build_infotext(parsed.prompt, parsed.negative_prompt, params) == text


# --- building: exact format ------------------------------------------------------------------

def test_build_golden():
    text = build_infotext(
        "a cat, sitting",
        "ugly",
        {
            "Steps": 20,
            "Sampler": "Euler a",
            "Schedule type": "Karras",
            "CFG scale": 7.0,
            "Seed": 1,
            "Size": "512x768",
            "Model hash": "45dee52b",
            "Model": "v1-5",
            "Denoising strength": 0.7,
            "Clip skip": None,
            "Tiling": True,
            "Lora hashes": "add_detail: 7c6bad76eb54, other: 0123",
        },
    )
    assert text == (
        "a cat, sitting\n"
        "Negative prompt: ugly\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, "
        "Size: 512x768, Model hash: 45dee52b, Model: v1-5, Denoising strength: 0.7, "
        'Tiling: True, Lora hashes: "add_detail: 7c6bad76eb54, other: 0123"'
    )


def test_build_without_negative_and_multiline_prompt():
    text = build_infotext("line one\nline two", "", {"Steps": 5, "Seed": 2, "CFG scale": 4.5})
    assert text == "line one\nline two\nSteps: 5, Seed: 2, CFG scale: 4.5"
    parsed = parse_infotext(text)
    assert parsed == ParsedInfotext(
        "line one\nline two", "", {"Steps": "5", "Seed": "2", "CFG scale": "4.5"}
    )


def test_build_multiline_negative():
    text = build_infotext("p", "n1\nn2", {"Steps": 5, "Seed": 2, "CFG scale": 4})
    assert text == "p\nNegative prompt: n1\nn2\nSteps: 5, Seed: 2, CFG scale: 4"
    assert parse_infotext(text).negative_prompt == "n1\nn2"


@pytest.mark.parametrize(
    "value, expected",
    [
        (7.0, "7"),
        (0.7, "0.7"),
        (7.5, "7.5"),
        (20, "20"),
        (True, "True"),
        (False, "False"),
        ("Euler a", "Euler a"),
        ({"a": 1}, '{"a": 1}'),
        ([1, 2], "[1, 2]"),
    ],
)
def test_format_value(value, expected):
    assert format_value(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("a: b", '"a: b"'),
        ("two\nlines", '"two\\nlines"'),
        ('"already"', '"\\"already\\""'),
        ("ünïcode: 猫", '"ünïcode: 猫"'),  # ensure_ascii=False, like A1111
        (" padded", '" padded"'),
    ],
)
def test_quote(value, expected):
    assert quote(value) == expected
    assert unquote(quote(value)) == value


def test_unquote_leaves_bad_json_alone():
    assert unquote('"not json \\x"') == '"not json \\x"'
    assert unquote("plain") == "plain"
    assert unquote('"') == '"'


def test_dict_value_is_json_inside_a_quoted_string():
    text = build_infotext("p", "", {"Steps": 1, "Seed": 2, "Extra": {"a": 1, "b": [1, 2]}})
    assert text == 'p\nSteps: 1, Seed: 2, Extra: "{\\"a\\": 1, \\"b\\": [1, 2]}"'
    assert json.loads(parse_infotext(text).params["Extra"]) == {"a": 1, "b": [1, 2]}


def test_none_dropped_and_key_equal_value_written_bare():
    text = build_infotext("p", "", {"Steps": 1, "Clip skip": None, "Seed": 2, "NGMS": "NGMS", "X y": 3})
    assert text == "p\nSteps: 1, Seed: 2, NGMS, X y: 3"


@pytest.mark.parametrize("key", ["a", "bad:key", "bad,key", "trailing ", "", "x.y", 5])
def test_unreadable_keys_rejected(key):
    with pytest.raises(ValueError, match="cannot be read back"):
        build_infotext("p", "", {key: 1})


def test_empty_params_and_prompt_only():
    assert build_infotext("just a prompt", "", {}) == "just a prompt"
    parsed = parse_infotext("just a prompt")
    assert parsed == ParsedInfotext("just a prompt", "", {})


def test_last_line_needs_three_pairs():
    # Two pairs on the last line: A1111 treats it as part of the prompt.
    parsed = parse_infotext("a cat\nSteps: 20, Seed: 1")
    assert parsed.prompt == "a cat\nSteps: 20, Seed: 1"
    assert parsed.params == {}


def test_parse_crlf_and_surrounding_whitespace():
    parsed = parse_infotext("\r\n  a cat  \r\nNegative prompt:   dog \r\nSteps: 20, Seed: 1, Size: 64x32\r\n")
    assert parsed.prompt == "a cat"
    assert parsed.negative_prompt == "dog"
    assert parsed.params == {"Steps": "20", "Seed": "1", "Size": "64x32", "Size-1": "64", "Size-2": "32"}


def test_parse_empty_and_none():
    assert parse_infotext("") == ParsedInfotext("", "", {})
    assert parse_infotext(None) == ParsedInfotext("", "", {})  # type: ignore[arg-type]


def test_empty_value_kept():
    parsed = parse_infotext("p\nSteps: 20, Hires prompt: , Seed: 1, Model: m")
    assert parsed.params == {"Steps": "20", "Hires prompt": "", "Seed": "1", "Model": "m"}


# --- round trip --------------------------------------------------------------------------------
#
# Limits shared with A1111 (its format cannot carry these, so the generators avoid them):
# * prompt / negative prompt lines lose leading and trailing whitespace (each line is
#   stripped) and the whole text is stripped;
# * a prompt line starting with "Negative prompt:" starts the negative prompt, and that
#   prefix is removed from any negative prompt line that starts with it;
# * the parameters line is recognised only with at least three key: value pairs;
# * a value equal to its key is written as the bare key and is not read back;
# * "\r\n" is read as "\n" (carriage returns in prompts are not generated).
# Keys are restricted to what the A1111 key regex reads (letters, digits, _, space, /, -);
# '-' is left out here so that generated keys cannot collide with the derived "Size-1" keys.

_line = st.text(st.characters(blacklist_characters="\r\n"), max_size=30).map(str.strip)
_multiline = st.lists(_line, max_size=4).map(lambda lines: "\n".join(lines).strip())
_key = st.from_regex(r"\A[A-Za-z][A-Za-z0-9 _/]{0,12}[A-Za-z0-9]\Z")
_value = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.sampled_from(["512x768", "Euler a", "DPM++ 2M", "v1.10.1", "a: b", "x, y", '"q"']),
)


@settings(max_examples=300, deadline=None)
@given(
    prompt=_multiline,
    negative=_multiline,
    params=st.dictionaries(_key, _value, min_size=3, max_size=8),
)
def test_round_trip(prompt, negative, params):
    lines = prompt.split("\n") + negative.split("\n")
    assume(not any(line.startswith("Negative prompt:") for line in lines))
    assume(all(format_value(v) != k for k, v in params.items()))
    text = build_infotext(prompt, negative, params)
    parsed = parse_infotext(text)
    assert parsed.prompt == prompt
    assert parsed.negative_prompt == negative
    expected: dict[str, str] = {}
    for key, value in params.items():
        expected[key] = format_value(value)
        size = re.fullmatch(r"(\d+)x(\d+)", expected[key])
        if size:
            expected[f"{key}-1"], expected[f"{key}-2"] = size.groups()
    assert parsed.params == expected
    assert list(parsed.params) == list(expected)


def test_unquote_edges():
    # (mutation run survivors) the shortest quoted value is the empty string; one quote is no quoting
    assert unquote('""') == "" and unquote('"') == '"' and unquote('"a"') == "a"
