"""Fooocus: a `parameters` chunk holding JSON when `fooocus_scheme` is "fooocus" (keys `prompt`,
`negative_prompt`, `full_prompt`/`full_negative_prompt` = the prompts after style expansion, `steps`,
`guidance_scale`, `sampler`/`scheduler` in ComfyUI's names, `seed` as a string, `resolution` as
"(w, h)", `base_model`/`base_model_hash`, `loras` as [name, weight, hash], `vae`, `sharpness`,
`adm_guidance`, `styles`, `performance`, `version`). The "a1111" scheme is an A1111 infotext: it is read
as one, with nothing to convert. JPEG/WebP carry the same JSON in EXIF UserComment, the scheme in MakerNote.
"""
from __future__ import annotations

import re
from typing import Any

from .common import ForeignParameters, file_stem, json_object, kdiff_sampler, lora_prompt_tag, number

_RESOLUTION = re.compile(r"\(?\s*(\d+)\s*[,x*]\s*(\d+)")
_NEUTRAL = {"sharpness": 0.0, "adaptive_cfg": 1.0}   # values at which a Fooocus-only setting does nothing


def read(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    meta = json_object(items.get("parameters"))
    if meta is None or not (items.get("fooocus_scheme") == "fooocus" or meta.get("metadata_scheme") == "fooocus"
                            or "fooocus" in str(meta.get("version", "")).lower()):
        return None
    out = ForeignParameters("Fooocus")
    full, full_negative = meta.get("full_prompt"), meta.get("full_negative_prompt")
    # The expanded prompts (styles and the "Fooocus V2" expansion applied) are what was encoded.
    out.prompt = ", ".join(map(str, full)) if isinstance(full, list) and full else str(meta.get("prompt") or "")
    out.negative_prompt = (", ".join(map(str, full_negative)) if isinstance(full_negative, list) and full_negative
                           else str(meta.get("negative_prompt") or ""))
    match = _RESOLUTION.match(str(meta.get("resolution", "")))
    out.set_core(size, steps=meta.get("steps"), cfg=meta.get("guidance_scale"), seed=meta.get("seed"),
                 width=match and match.group(1), height=match and match.group(2))
    kdiff_sampler(out, meta.get("sampler"), meta.get("scheduler"))
    if meta.get("base_model"):
        out.params["Model"] = file_stem(meta["base_model"])
        out.params["Model hash"] = str(meta.get("base_model_hash") or "")[:10] or None
    vae = str(meta.get("vae") or "")
    if vae and not vae.startswith("Default"):
        out.params["VAE"] = file_stem(vae)
    skip = number(meta.get("clip_skip"))
    if skip and skip > 1:
        out.params["Clip skip"] = int(skip)
    _read_loras(meta, out)
    if str(meta.get("refiner_model") or "None") != "None":
        out.note(f"the refiner {meta['refiner_model']} (switch at {meta.get('refiner_switch')}) is not reproduced")
    for key in ("sharpness", "adm_guidance", "adaptive_cfg", "freeu"):
        if key in meta and number(meta[key], -1) != _NEUTRAL.get(key):
            out.note(f"Fooocus {key.replace('_', ' ')} {meta[key]} has no A1111 counterpart")
    if meta.get("version"):
        out.params["Version"] = str(meta["version"])
    return out


def _read_loras(meta: dict, out: ForeignParameters) -> None:
    tags, hashes = [], []
    for entry in meta.get("loras") or []:
        if isinstance(entry, (list, tuple)) and len(entry) >= 2:
            name = file_stem(entry[0])
            tags.append(lora_prompt_tag(name, entry[1]))
            if len(entry) >= 3 and entry[2]:
                hashes.append(f"{name}: {str(entry[2])[:12]}")
    out.prompt = " ".join([out.prompt, *tags]).strip()
    if hashes:
        out.params["Lora hashes"] = ", ".join(hashes)
