"""What every reader of another tool's metadata returns, and the name tables they share.

A reader turns one tool's metadata into the fields of an AUTOMATIC1111 infotext (same keys, same
value formats), so that PNG Info, "Send to" and /sdapi/v1/png-info treat it like an A1111 image.
What the infotext cannot say (a sampler with no exact counterpart, a node that is not reproduced)
goes into `notes`, which the reproduce summary shows.
"""
from __future__ import annotations

import json
import ntpath
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ...params.infotext import build_infotext

__all__ = ["ForeignParameters", "KDIFF_SAMPLERS", "KDIFF_SCHEDULES", "file_stem", "json_object", "kdiff_sampler",
           "lora_prompt_tag", "number"]


@dataclass
class ForeignParameters:
    """One image's parameters read from another tool's metadata, in A1111 infotext terms."""

    source: str                                     # the tool, as users call it ("ComfyUI", "InvokeAI")
    prompt: str = ""
    negative_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)   # A1111 infotext keys -> values
    notes: list[str] = field(default_factory=list)         # what the infotext cannot carry

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def infotext(self) -> str:
        # A1111's order for the keys it writes first; the rest as the reader set them.
        ordered = {k: self.params[k] for k in _ORDER if k in self.params}
        ordered.update(self.params)
        params = {k: v for k, v in ordered.items() if v not in (None, "")}
        return build_infotext(self.prompt, self.negative_prompt, params)

    def set_core(self, size: tuple[int, int], *, steps: Any, cfg: Any, seed: Any,
                 width: Any = None, height: Any = None) -> None:
        """Steps, CFG scale, Seed and Size (the image's own size when the tool recorded none)."""
        steps_n, seed_n, width_n, height_n = number(steps), number(seed), number(width), number(height)
        self.params["Steps"] = int(steps_n) if steps_n else None
        self.params["CFG scale"] = number(cfg)
        self.params["Seed"] = int(seed_n) if seed_n is not None else None
        self.params["Size"] = (f"{int(width_n)}x{int(height_n)}" if width_n and height_n
                               else f"{size[0]}x{size[1]}")


_ORDER = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE")


# k-diffusion sampler function names, as ComfyUI, Fooocus and NovelAI (with a "k_" prefix) write them,
# -> (A1111 sampler name, what differs from A1111's sampler of that name or None).
_GPU_NOISE = "its noise was drawn on the GPU: the image will be similar, not identical"
_ANCESTRAL = "its ancestral noise comes from that tool's generator, not A1111's: similar image, not identical"
KDIFF_SAMPLERS: dict[str, tuple[str, str | None]] = {
    "euler": ("Euler", None),
    "euler_ancestral": ("Euler a", _ANCESTRAL),
    "heun": ("Heun", None),
    "dpm_2": ("DPM2", None),
    "dpm_2_ancestral": ("DPM2 a", _ANCESTRAL),
    "lms": ("LMS", None),
    "dpm_fast": ("DPM fast", None),
    "dpm_adaptive": ("DPM adaptive", None),
    "dpmpp_2s_ancestral": ("DPM++ 2S a", _ANCESTRAL),
    "dpmpp_sde": ("DPM++ SDE", None),
    "dpmpp_sde_gpu": ("DPM++ SDE", _GPU_NOISE),
    "dpmpp_2m": ("DPM++ 2M", None),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", None),
    "dpmpp_2m_sde_gpu": ("DPM++ 2M SDE", _GPU_NOISE),
    "dpmpp_3m_sde": ("DPM++ 3M SDE", None),
    "dpmpp_3m_sde_gpu": ("DPM++ 3M SDE", _GPU_NOISE),
    # ComfyUI's "ddim" runs Euler steps on the chosen schedule (the same update as DDIM with eta 0).
    "ddim": ("Euler", None),
    "uni_pc": ("UniPC", None),
    "uni_pc_bh2": ("UniPC", "UniPC with B(h)=2 (A1111's UniPC default is bh1): close, not identical"),
    "lcm": ("LCM", None),
    "restart": ("Restart", None),
    "euler_cfg_pp": ("Euler", "Euler CFG++ has no A1111 counterpart: plain Euler is used"),
    "euler_ancestral_cfg_pp": ("Euler a", "Euler a CFG++ has no A1111 counterpart: plain Euler a is used"),
    "dpmpp_2m_cfg_pp": ("DPM++ 2M", "DPM++ 2M CFG++ has no A1111 counterpart: plain DPM++ 2M is used"),
    "ipndm": ("Euler", "iPNDM has no A1111 counterpart: Euler is the nearest"),
    "ipndm_v": ("Euler", "iPNDM-v has no A1111 counterpart: Euler is the nearest"),
    "deis": ("Euler", "DEIS (k-diffusion) has no A1111 counterpart: Euler is the nearest"),
    "heunpp2": ("Heun", "Heun++ has no A1111 counterpart: Heun is the nearest"),
    "ddpm": ("Euler a", "DDPM has no A1111 counterpart: Euler a is the nearest"),
}

# ComfyUI/Fooocus scheduler names -> A1111 1.10 "Schedule type" names (A1111 took several from ComfyUI).
KDIFF_SCHEDULES: dict[str, str] = {
    # ComfyUI's "normal" spaces the timesteps evenly from t(sigma_max) to t(sigma_min) and interpolates log
    # sigma: exactly k-diffusion's own get_sigmas, i.e. A1111's "Automatic" for the k-diffusion samplers.
    "normal": "Automatic",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps",
    "polyexponential": "Polyexponential",
    "uniform": "Uniform",
}


def kdiff_sampler(out: ForeignParameters, name: Any, schedule: Any = None) -> None:
    """Set `Sampler` (and `Schedule type`) from k-diffusion names; unknown names are kept as they are
    and noted."""
    key = str(name or "").strip()
    if not key:
        return
    low = key.lower().removeprefix("k_")
    sampler, why = KDIFF_SAMPLERS.get(low, (None, None))
    if sampler is None:
        out.params["Sampler"] = key
        out.note(f"{out.source} sampler {key!r} has no A1111 counterpart")
    else:
        out.params["Sampler"] = sampler
        if why:
            out.note(f"{out.source} sampler {key!r}: {why}")
    if schedule:
        sched = str(schedule).strip()
        mapped = KDIFF_SCHEDULES.get(sched.lower())
        if mapped is None:
            out.note(f"{out.source} scheduler {sched!r} has no A1111 schedule type")
        out.params["Schedule type"] = mapped or sched


def file_stem(name: Any) -> str:
    """What A1111's infotext calls a model: the file name without folders (Windows or POSIX) or extension."""
    base = ntpath.basename(posixpath.basename(str(name or "").strip()))
    stem, ext = posixpath.splitext(base)
    return stem if ext.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft") else base


def lora_prompt_tag(name: Any, unet: Any = 1.0, text_encoder: Any = None) -> str:
    """A1111's prompt tag for a LoRA: `<lora:name:w>`, or `<lora:name:te:unet>` when the two differ."""
    unet_w = number(unet, 1.0)
    te_w = unet_w if text_encoder is None else number(text_encoder, unet_w)
    stem = file_stem(name)
    return f"<lora:{stem}:{_fmt(unet_w)}>" if te_w == unet_w else f"<lora:{stem}:{_fmt(te_w)}:{_fmt(unet_w)}>"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def number(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def json_object(text: Any) -> dict | None:
    """`text` parsed as a JSON object, or None (metadata chunks of other tools are often not JSON)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):   # RecursionError: hostile nesting depth
        return None
    return value if isinstance(value, dict) else None
