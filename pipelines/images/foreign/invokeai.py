"""InvokeAI: the `invokeai_metadata` JSON chunk (3.x and later: CoreMetadata) and the older `sd-metadata`
(2.x: `{"model_weights", "model_hash", "image": {"prompt", "steps", "cfg_scale", "sampler", ...}}`)."""
from __future__ import annotations

import re
from typing import Any

from .common import ForeignParameters, file_stem, json_object, kdiff_sampler, lora_prompt_tag, number

# InvokeAI scheduler names (diffusers schedulers; "_k" = Karras sigmas) -> A1111 sampler, schedule type.
SCHEDULERS: dict[str, tuple[str, str]] = {
    "ddim": ("DDIM", "Automatic"),
    "euler": ("Euler", "Automatic"),
    "euler_k": ("Euler", "Karras"),
    "euler_a": ("Euler a", "Automatic"),
    "heun": ("Heun", "Automatic"),
    "heun_k": ("Heun", "Karras"),
    "lms": ("LMS", "Automatic"),
    "lms_k": ("LMS", "Karras"),
    "kdpm_2": ("DPM2", "Automatic"),
    "kdpm_2_k": ("DPM2", "Karras"),
    "kdpm_2_a": ("DPM2 a", "Automatic"),
    "kdpm_2_a_k": ("DPM2 a", "Karras"),
    "dpmpp_2s": ("DPM++ 2S a", "Automatic"),
    "dpmpp_2s_k": ("DPM++ 2S a", "Karras"),
    "dpmpp_2m": ("DPM++ 2M", "Automatic"),
    "dpmpp_2m_k": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", "Automatic"),
    "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_3m": ("DPM++ 3M SDE", "Automatic"),
    "dpmpp_3m_k": ("DPM++ 3M SDE", "Karras"),
    "dpmpp_sde": ("DPM++ SDE", "Automatic"),
    "dpmpp_sde_k": ("DPM++ SDE", "Karras"),
    "unipc": ("UniPC", "Automatic"),
    "unipc_k": ("UniPC", "Karras"),
    "lcm": ("LCM", "Automatic"),
    "tcd": ("TCD", "Automatic"),
    "pndm": ("PLMS", "Automatic"),
}
_DIFFUSERS_NOTE = ("InvokeAI samples with diffusers' schedulers (their timestep spacing and noise): the same "
                   "settings give a similar image, not an identical one")


def read(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    meta = json_object(items.get("invokeai_metadata"))
    if meta is not None:
        return _read_core(meta, size)
    legacy = json_object(items.get("sd-metadata"))
    if legacy is not None and isinstance(legacy.get("image"), dict):
        return _read_legacy(legacy, size)
    return None


def _model_name(model: Any) -> str | None:
    # 3.x: {"model_name", "base_model"}; 4.x and later: {"key", "hash", "name", "base", "type"}
    if isinstance(model, dict):
        name = model.get("name") or model.get("model_name")
        return file_stem(name) if name else None
    return file_stem(model) if isinstance(model, str) and model else None


def _read_core(meta: dict, size: tuple[int, int]) -> ForeignParameters:
    out = ForeignParameters("InvokeAI")
    out.prompt = str(meta.get("positive_prompt") or "")
    out.negative_prompt = str(meta.get("negative_prompt") or "")
    out.set_core(size, steps=meta.get("steps"), cfg=meta.get("cfg_scale"), seed=meta.get("seed"),
                 width=meta.get("width"), height=meta.get("height"))
    scheduler = str(meta.get("scheduler") or "")
    if scheduler in SCHEDULERS:
        out.params["Sampler"], out.params["Schedule type"] = SCHEDULERS[scheduler]
    elif scheduler:
        out.params["Sampler"] = scheduler
        out.note(f"InvokeAI scheduler {scheduler!r} has no A1111 counterpart")
    out.params["Model"] = _model_name(meta.get("model"))
    if isinstance(meta.get("model"), dict) and str(meta["model"].get("hash", "")).startswith("sha256:"):
        out.params["Model hash"] = meta["model"]["hash"].split(":", 1)[1][:10]
    out.params["VAE"] = _model_name(meta.get("vae"))
    skip = number(meta.get("clip_skip"), 0)
    if skip:
        out.params["Clip skip"] = int(skip) + 1   # InvokeAI counts skipped layers, A1111 counts from 1
    strength = number(meta.get("strength"))
    if meta.get("generation_mode", "txt2img") != "txt2img" and strength is not None:
        out.params["Denoising strength"] = strength
        out.note(f"InvokeAI {meta.get('generation_mode')}: the source image is not stored in the file")
    tags = []
    for lora in meta.get("loras") or []:
        if isinstance(lora, dict):
            name = _model_name(lora.get("model") or lora.get("lora"))
            if name:
                tags.append(lora_prompt_tag(name, lora.get("weight", 1.0)))
    out.prompt = " ".join([out.prompt, *tags]).strip()
    for style_key in ("positive_style_prompt", "negative_style_prompt"):
        if meta.get(style_key) and meta[style_key] != meta.get(style_key.replace("_style", "")):
            out.note(f"InvokeAI's SDXL {style_key.replace('_', ' ')} (second text encoder) is not reproduced")
    if number(meta.get("cfg_rescale_multiplier"), 0):
        out.note(f"CFG rescale {meta['cfg_rescale_multiplier']} is not reproduced")
    for extra in ("controlnets", "ipAdapters", "t2iAdapters", "regions"):
        if meta.get(extra):
            out.note(f"InvokeAI {extra} are not reproduced")
    if meta.get("app_version"):
        out.params["Version"] = f"InvokeAI {meta['app_version']}"
    out.note(_DIFFUSERS_NOTE)
    return out


# InvokeAI 2.x wrote the negative prompt inside the prompt, in [square brackets].
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")


def _read_legacy(meta: dict, size: tuple[int, int]) -> ForeignParameters:
    out = ForeignParameters("InvokeAI")
    image = meta["image"]
    prompt = image.get("prompt")
    if isinstance(prompt, list):   # [{"prompt": text, "weight": w}, ...]
        prompt = " ".join(str(p.get("prompt", "")) for p in prompt if isinstance(p, dict))
    prompt = str(prompt or "")
    out.negative_prompt = ", ".join(m.strip() for m in _BRACKETED.findall(prompt))
    out.prompt = " ".join(_BRACKETED.sub(" ", prompt).split())
    out.set_core(size, steps=image.get("steps"), cfg=image.get("cfg_scale"), seed=image.get("seed"),
                 width=image.get("width"), height=image.get("height"))
    kdiff_sampler(out, image.get("sampler"))
    out.params["Model"] = file_stem(meta.get("model_weights")) if meta.get("model_weights") else None
    if image.get("type") == "img2img" and number(image.get("strength")) is not None:
        out.params["Denoising strength"] = number(image.get("strength"))
        out.note("InvokeAI img2img: the source image is not stored in the file")
    if image.get("variations"):
        out.note("InvokeAI seed variations are not reproduced")
    out.note(_DIFFUSERS_NOTE)
    return out
