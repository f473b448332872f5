"""Generation parameters declared once: the request type, validation, and infotext both ways.

No models here (fast). The engine-side checks (resolved seeds, infotext of real generations)
are in test_txt2img.py.
"""
from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipelines.params import declarations as params
from pipelines.generate import samplers
from pipelines.core.errors import ParameterError, UserError
from pipelines.params.infotext import build_infotext, parse_infotext
from pipelines.params.declarations import (
    PARAMS, GenerationRequest, infotext_params, make_request, request_values_from_infotext,
)

# ------------------------------------------------------------------ one declaration per parameter


def test_request_fields_are_the_declarations():
    fields = dataclasses.fields(GenerationRequest)
    assert [f.name for f in fields] == [p.name for p in PARAMS] + ["extra"]
    by_name = {f.name: f for f in fields}
    hints = typing.get_type_hints(GenerationRequest)      # what a type checker sees
    for p in PARAMS:
        assert (typing.get_origin(hints[p.name]) or hints[p.name]) is p.type, p.name
        assert by_name[p.name].default == p.default, p.name
    req = GenerationRequest()
    assert req.to_dict() == params.declared_defaults()
    assert make_request() == req  # validation fills in the declared defaults
    assert len({p.name for p in PARAMS}) == len(PARAMS)
    keys = [p.infotext for p in PARAMS if p.infotext]
    assert len(set(keys)) == len(keys)


def test_every_infotext_key_is_read_back_into_its_field():
    for p in PARAMS:
        if not p.infotext:
            continue
        value = p.default if p.choices is None else p.choice_list()[0]
        if p.type is str and not value:
            value = "something"
        pairs = {p.infotext: str(p.label_of(value))}
        if p.name == "subseed":  # a variation seed counts only with its strength (A1111)
            pairs["Variation seed strength"] = "0.5"
        known, unknown = request_values_from_infotext(pairs)
        assert p.name in known, (p.infotext, unknown)
        assert known[p.name] == value


def test_every_field_is_accepted_by_name():
    values = {p.name: p.default for p in PARAMS}
    assert make_request(values, strict=True).to_dict() == values


# ------------------------------------------------------------------ validation


def _error(**values) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        make_request(**values)
    assert isinstance(info.value, UserError)  # front ends show it as a 4xx / UI message
    return info.value


@pytest.mark.parametrize("name", ["width", "height", "hr_resize_x", "hr_resize_y"])
def test_size_must_be_a_multiple_of_8(name):
    err = _error(**{name: 100})
    assert err.field == name
    assert str(err) == f"{name}: 100 is not a multiple of 8 (try 96 or 104)"


def test_size_has_an_upper_bound():
    err = _error(width=4096)
    assert err.field == "width" and "above the maximum 2048" in str(err)
    err = _error(height=56)
    assert err.field == "height" and "below the minimum 64" in str(err)
    make_request(width=2048, height=2048)  # the bound itself is fine


@pytest.mark.parametrize("name, value", [
    ("steps", "many"), ("steps", 2.5), ("steps", True), ("cfg_scale", "high"), ("cfg_scale", float("nan")),
    ("seed", [1]), ("enable_hr", "maybe"), ("prompt", 5), ("batch_size", "two"),
])
def test_wrong_types_name_the_field(name, value):
    err = _error(**{name: value})
    assert err.field == name
    assert f"expected {params.BY_NAME[name].type.__name__}" in str(err)


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, "below the minimum 1"), ("steps", 151, "above the maximum 150"),
    ("cfg_scale", 31, "above the maximum 30"), ("seed", -2, "below the minimum -1"),
    ("subseed_strength", 1.5, "above the maximum 1"), ("batch_size", 9, "above the maximum 8"),
    ("hr_scale", 0.5, "below the minimum 1"), ("hr_upscaler", "ESRGAN", "not one of: Latent"),
    ("sampler_name", "Bogus", "unknown sampler 'Bogus'"), ("clip_skip", 0, "below the minimum 1"),
])
def test_out_of_range_names_the_field(name, value, message):
    err = _error(**{name: value})
    assert err.field == name and message in str(err)


def test_schedule_type_must_suit_the_sampler():
    err = _error(sampler_name="DDIM", scheduler="Karras")   # A1111's k-diffusion samplers take every type
    assert err.field == "scheduler" and "supports: Automatic" in str(err)


def test_api_style_values_convert():
    req = make_request({"steps": "12", "cfg_scale": "6.5", "enable_hr": "true", "seed": 7.0,
                        "sampler_index": "DPM++ 2M Karras", "not_a_param": 1})
    assert (req.steps, req.cfg_scale, req.enable_hr, req.seed) == (12, 6.5, True, 7)
    assert (req.sampler_name, req.scheduler) == ("DPM++ 2M", "Karras")
    with pytest.raises(ParameterError, match="not_a_param: unknown parameter"):
        make_request({"not_a_param": 1}, strict=True)


def test_seed_minus_one_resolves_to_a_random_seed():
    seeds = {params.resolve_seed(-1) for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s <= params.SEED_MAX for s in seeds)
    assert params.resolve_seed(1234) == 1234


# ------------------------------------------------------------------ infotext: exact A1111 layout


def test_golden_infotext_for_a_typical_request():
    req = make_request(prompt="masterpiece, (a cat:1.2) on a chair", negative_prompt="blurry, lowres",
                       steps=28, sampler_name="DPM++ 2M", scheduler="Karras", cfg_scale=7, seed=-1,
                       width=512, height=768, clip_skip=2, enable_hr=True, hr_scale=2, hr_second_pass_steps=15,
                       denoising_strength=0.45, hr_upscaler="Latent")
    text = build_infotext(req.prompt, req.negative_prompt, infotext_params(
        req, seed=3297581562, model_hash="6ce0161689", model_name="v1-5-pruned-emaonly"))
    assert text == (
        "masterpiece, (a cat:1.2) on a chair\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3297581562, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, "
        "Hires upscale: 2, Hires steps: 15, Hires upscaler: Latent"
    )


def test_golden_infotext_variation_seed_vae_and_hires_resize():
    req = make_request(prompt="a cat", steps=20, sampler_name="Euler a", cfg_scale=7.5, seed=1, width=512,
                       height=512, subseed=99, subseed_strength=0.3, enable_hr=True, hr_resize_x=1024,
                       hr_resize_y=768, hr_upscaler="Lanczos")
    text = build_infotext(req.prompt, req.negative_prompt, infotext_params(
        req, seed=1, subseed=99, model_hash="31e35c80fc", model_name="sd_xl_base_1.0",
        vae_name="sdxl_vae.safetensors", vae_hash="235745af8d"))
    assert text == (
        "a cat\n"  # no "Negative prompt:" line when it is empty
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 1, Size: 512x512, "
        "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, "
        "Variation seed: 99, Variation seed strength: 0.3, Denoising strength: 0.7, "
        "Hires resize: 1024x768, Hires upscaler: Lanczos"
    )


def test_values_with_separators_are_json_quoted_and_read_back():
    req = make_request(prompt="a cat", sd_model_checkpoint='my model, v2: "final"', seed=5)
    text = build_infotext(req.prompt, "", infotext_params(req))
    assert 'Model: "my model, v2: \\"final\\""' in text
    known, _ = request_values_from_infotext(parse_infotext(text).params)
    assert known["sd_model_checkpoint"] == 'my model, v2: "final"'


# ------------------------------------------------------------------ infotext: property round trip

# What A1111's format itself cannot carry is left out of the generated prompts: leading/trailing
# whitespace of a line, carriage returns, and lines starting with "Negative prompt:".
_line = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=25).map(str.strip)
_multiline = st.lists(_line, max_size=3).map(lambda lines: "\n".join(lines).strip()).filter(
    lambda t: not any(line.startswith("Negative prompt:") for line in t.split("\n")))
_name = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def _strategy(p: params.Param):
    if p.name in ("prompt", "negative_prompt"):
        return _multiline
    choices = p.choice_list()
    if choices is not None:
        return st.sampled_from(choices)
    if p.type is bool:
        return st.booleans()
    if p.type is int:
        step = int(p.step or 1)
        lo, hi = math.ceil(p.minimum / step), math.floor(p.maximum / step)
        return st.integers(lo, hi).map(lambda v: v * step)
    if p.type is float:
        return st.floats(p.minimum, p.maximum, allow_nan=False)
    if p.type is tuple:
        return st.lists(_name, max_size=min(p.max_length or 3, 3)).map(tuple)
    return _name


@st.composite
def requests(draw) -> GenerationRequest:
    values = {p.name: draw(_strategy(p)) for p in PARAMS if p.name != "scheduler"}
    values["scheduler"] = draw(st.sampled_from(samplers.schedules_for(values["sampler_name"])))
    return make_request(values)


def _not_written(req: GenerationRequest) -> GenerationRequest:
    """`req` with the fields a txt2img infotext does not carry put back to their defaults."""
    d = params.declared_defaults()
    # no infotext key (batch size/count, styles: A1111 writes the styled prompts), or not a txt2img parameter
    keep = {p.name: p.default for p in PARAMS if (p.infotext is None or "txt2img" not in p.modes)
            and p.name not in ("prompt", "negative_prompt")}  # the prompts are the text's first lines
    keep.pop("enable_hr")  # no key of its own: any "Hires ..." key means it was on
    keep.update(distilled_cfg_scale=d["distilled_cfg_scale"], shift=d["shift"])  # written for Flux only (flow.py)
    keep.update({p.name: d[p.name] for p in PARAMS if "txt2img" not in p.modes})  # img2img-only: not in txt2img
    if not req.enable_hr:
        keep.update({k: d[k] for k in ("hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x",
                                       "hr_resize_y", "denoising_strength")})
    elif req.hr_resize_x or req.hr_resize_y:
        keep["hr_scale"] = d["hr_scale"]
    if req.subseed_strength == 0:
        keep["subseed"] = d["subseed"]
    return req.replace(**keep)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests())
def test_infotext_round_trip(req):
    # a value equal to its key is written bare (A1111) and cannot be read back
    assume(req.sd_model_checkpoint != "Model" and req.sd_vae != "VAE")
    pairs = infotext_params(req, vae_name=req.sd_vae or None)
    text = build_infotext(req.prompt, req.negative_prompt, pairs)
    parsed = parse_infotext(text)
    known, unknown = request_values_from_infotext(parsed.params)
    assert set(unknown) <= {"Model-1", "Model-2", "VAE-1", "VAE-2"}  # a "WxH"-looking name is also split
    back = make_request(dict(known, prompt=parsed.prompt, negative_prompt=parsed.negative_prompt))
    assert back == _not_written(req)


# ------------------------------------------------------------------ reading other UIs' infotexts

A1111_OLD = """\
best quality, 1girl, (smile:1.1), [[blush]], \\(artist\\)
Negative prompt: EasyNegative, (worst quality:1.4)
Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 8, Seed: 2654318762, Size: 512x640, Model hash: 7f96a1a9ca, \
Model: anything-v5, Denoising strength: 0.5, Clip skip: 2, ENSD: 31337, Hires upscale: 1.75, Hires steps: 12, \
Hires upscaler: Latent (nearest-exact), Lora hashes: "blush_v2: 2a8c3c1f0f2e", Version: v1.6.0"""

A1111_NEW = """\
a cozy cabin in the woods, winter, snow
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 768x512, \
Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, \
Variation seed: 4242, Variation seed strength: 0.25, Hires resize: 1536x1024, \
Hires upscaler: 4x-UltraSharp, Emphasis: No norm, Version: v1.10.1"""

FORGE = """\
portrait photo of an old fisherman
Negative prompt: cartoon
Steps: 25, Sampler: DPM++ 2M SDE, Schedule type: Exponential, CFG scale: 4.5, Distilled CFG Scale: 3.5, \
Seed: 987654321, Size: 832x1216, Model hash: 0c1d2e3f4a, Model: juggernautXL_v9, Clip skip: 2, \
Beta schedule alpha: 0.6, Diffusion in Low Bits: Automatic (fp16 LoRA), Version: f2.0.1v1.10.1-previous-313-g8a042934"""

SDNEXT = """\
a watercolor fox
Negative prompt: photo
Steps: 16, Seed: 1620085323, Sampler: DPM++ 2M SDE Heun, CFG scale: 6, Size: 512x512, Parser: Full parser, \
Model: dreamshaper_8, Model hash: 879db523c3, Backend: Diffusers, App: SD.Next, Version: 1e3f1c8, \
Pipeline: StableDiffusionPipeline, Operations: txt2img, Sampler spacing: leading, Eta: 0.3"""


def _read(text: str) -> tuple[GenerationRequest, dict[str, str]]:
    parsed = parse_infotext(text)
    known, unknown = request_values_from_infotext(parsed.params)
    return make_request(dict(known, prompt=parsed.prompt, negative_prompt=parsed.negative_prompt)), unknown


def test_read_a1111_before_schedule_types():
    req, unknown = _read(A1111_OLD)
    assert req.prompt == "best quality, 1girl, (smile:1.1), [[blush]], \\(artist\\)"
    assert req.negative_prompt == "EasyNegative, (worst quality:1.4)"
    assert (req.steps, req.sampler_name, req.scheduler, req.cfg_scale, req.seed) == (30, "DPM++ 2M", "Karras", 8.0,
                                                                                     2654318762)
    assert (req.width, req.height, req.clip_skip, req.sd_model_checkpoint) == (512, 640, 2, "anything-v5")
    assert req.enable_hr and (req.hr_scale, req.hr_second_pass_steps, req.denoising_strength) == (1.75, 12, 0.5)
    assert req.hr_upscaler == "Latent (nearest-exact)"
    assert unknown == {"Model hash": "7f96a1a9ca", "Lora hashes": "blush_v2: 2a8c3c1f0f2e", "Version": "v1.6.0"}
    assert req.eta_noise_seed_delta == 31337


def test_read_a1111_1_10():
    req, unknown = _read(A1111_NEW)
    assert req.negative_prompt == ""
    assert (req.width, req.height, req.seed, req.subseed, req.subseed_strength) == (768, 512, 42, 4242, 0.25)
    assert (req.sd_model_checkpoint, req.sd_vae) == ("sd_xl_base_1.0", "sdxl_vae.safetensors")
    assert req.enable_hr and (req.hr_resize_x, req.hr_resize_y) == (1536, 1024)
    assert req.clip_skip == 1 and req.eta == 0.0  # missing keys: the declared defaults
    # an upscaler this product lacks is kept as an unknown value, not dropped
    assert unknown["Hires upscaler"] == "4x-UltraSharp"
    assert unknown["Emphasis"] == "No norm" and unknown["VAE hash"] == "235745af8d"


def test_read_forge():
    req, unknown = _read(FORGE)
    assert (req.sampler_name, req.scheduler, req.cfg_scale, req.clip_skip) == ("DPM++ 2M SDE", "Exponential", 4.5, 2)
    assert (req.width, req.height, req.seed) == (832, 1216, 987654321)
    assert req.distilled_cfg_scale == 3.5 and "Distilled CFG Scale" not in unknown   # read since Flux support
    assert unknown["Diffusion in Low Bits"] == "Automatic (fp16 LoRA)"
    assert unknown["Beta schedule alpha"] == "0.6"


def test_read_sdnext_keeps_its_keys():
    req, unknown = _read(SDNEXT)
    assert (req.steps, req.seed, req.cfg_scale, req.eta, req.sd_model_checkpoint) == (16, 1620085323, 6.0, 0.3,
                                                                                      "dreamshaper_8")
    assert req.sampler_name == "DPM++ 2M SDE Heun" and "Sampler" not in unknown   # A1111 1.10 has it too
    for key in ("Parser", "Backend", "App", "Pipeline", "Operations", "Sampler spacing", "Version"):
        assert key in unknown
    assert not req.enable_hr


def test_schedule_type_this_sampler_lacks_is_kept_not_fatal():
    # A1111 1.9+ allows any schedule type with its k-diffusion samplers (so do we); DDIM here has none
    req, unknown = _read("a cat\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, "
                         "Size: 512x512")
    assert (req.sampler_name, req.scheduler) == ("Euler a", "Karras")
    req, unknown = _read("a cat\nSteps: 20, Sampler: DDIM, Schedule type: Karras, CFG scale: 7, Seed: 1, "
                         "Size: 512x512")
    assert (req.sampler_name, req.scheduler) == ("DDIM", "Automatic")
    assert unknown == {"Schedule type": "Karras"}
