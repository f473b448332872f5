"""NovelAI: PNG text chunks `Software: NovelAI`, `Description` (the prompt), `Source` (the model) and
`Comment`, a JSON object of the request (`steps`, `scale`, `seed`, `sampler`, `uc` = negative prompt,
`noise_schedule`, `width`/`height`, `strength` for img2img, `sm`/`sm_dyn` for SMEA...).

As A1111 reads them, `Clip skip: 2` and `ENSD: 31337` are added: NovelAI's first model ran that way.
(The copy NovelAI hides in the alpha channel, "stealth pnginfo", is not read.)
"""
from __future__ import annotations

from typing import Any

from .common import ForeignParameters, json_object, kdiff_sampler, number

_SCHEDULES = {"native": "Automatic", "karras": "Karras", "exponential": "Exponential",
              "polyexponential": "Polyexponential"}


def read(items: dict[str, Any], size: tuple[int, int]) -> ForeignParameters | None:
    if str(items.get("Software", "")).strip() != "NovelAI":
        return None
    info = json_object(items.get("Comment"))
    if info is None:
        return None
    out = ForeignParameters("NovelAI")
    out.prompt = str(items.get("Description") or info.get("prompt") or "")
    # V4 models keep the negative prompt in a caption structure; "uc" is the older key.
    v4_negative = (info.get("v4_negative_prompt") or {}).get("caption") or {}
    out.negative_prompt = str(info.get("uc") or v4_negative.get("base_caption") or "")
    out.set_core(size, steps=info.get("steps"), cfg=info.get("scale"), seed=info.get("seed"),
                 width=info.get("width"), height=info.get("height"))
    kdiff_sampler(out, info.get("sampler") or "k_euler_ancestral")
    schedule = str(info.get("noise_schedule") or "")
    if schedule:
        out.params["Schedule type"] = _SCHEDULES.get(schedule, schedule)
    if items.get("Source"):
        out.params["Model"] = str(items["Source"]).strip()
        out.note(f"the model ({items['Source']}) runs only on NovelAI's service")
    out.params["Clip skip"] = 2
    out.params["ENSD"] = 31337
    strength = number(info.get("strength"))
    if str(info.get("request_type", "")).lower().startswith("img2img") and strength is not None:
        out.params["Denoising strength"] = strength
        out.note("NovelAI img2img: the source image is not stored in the file")
    if info.get("sm") or info.get("sm_dyn"):
        out.note("NovelAI's SMEA sampler option has no A1111 counterpart")
    if number(info.get("cfg_rescale"), 0):
        out.note(f"NovelAI's CFG rescale {info['cfg_rescale']} is not reproduced")
    return out
