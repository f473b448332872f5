"""SwarmUI: a `parameters` chunk (JPEG/WebP: EXIF UserComment) holding JSON `{"sui_image_params": {...}}`
with `prompt`, `negativeprompt`, `model` ("folder/name"), `seed`, `steps`, `cfgscale`, `width`, `height`,
`sampler`/`scheduler` in ComfyUI's names, `loras` + `loraweights`, `vae`, `clipstoplayer`; and optionally
`sui_models`, the models used with their sha256 (`{"name", "param", "hash": "0x..."}`)."""
from __future__ import annotations

from typing import Any

from .common import ForeignParameters, file_stem, json_object, kdiff_sampler, lora_prompt_tag, number


def read(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    meta = json_object(items.get("parameters"))
    params = meta.get("sui_image_params") if meta else None
    if not isinstance(params, dict):
        return None
    out = ForeignParameters("SwarmUI")
    out.prompt = str(params.get("prompt") or "")
    out.negative_prompt = str(params.get("negativeprompt") or "")
    out.set_core(size, steps=params.get("steps"), cfg=params.get("cfgscale"), seed=params.get("seed"),
                 width=params.get("width"), height=params.get("height"))
    kdiff_sampler(out, params.get("sampler") or "euler", params.get("scheduler") or "normal")
    if params.get("model"):
        out.params["Model"] = file_stem(params["model"])
    for model in meta.get("sui_models") or []:
        if isinstance(model, dict) and model.get("param") == "model" and str(model.get("hash", "")).startswith("0x"):
            out.params["Model hash"] = model["hash"][2:12]
    if params.get("vae") and str(params["vae"]).lower() not in ("automatic", "none"):
        out.params["VAE"] = file_stem(params["vae"])
    layer = number(params.get("clipstoplayer"))
    if layer is not None and layer < -1:
        out.params["Clip skip"] = int(-layer)
    weights = list(params.get("loraweights") or [])
    tags = [lora_prompt_tag(name, weights[i] if i < len(weights) else 1.0)
            for i, name in enumerate(params.get("loras") or [])]
    out.prompt = " ".join([out.prompt, *tags]).strip()
    if params.get("refinermodel"):
        out.note(f"the refiner {params['refinermodel']} is not reproduced")
    if params.get("swarm_version"):
        out.params["Version"] = f"SwarmUI {params['swarm_version']}"
    return out
