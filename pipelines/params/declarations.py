"""Generation parameters, each declared once.

Every parameter is one `Param`: its request/API field name (AUTOMATIC1111's API names), type, default,
range or choices, UI label and widget hint, and its infotext key. Request validation, infotext
writing/parsing, presets, the UI widgets and the API schema are all derived from `PARAMS`; adding a
parameter means adding one `Param` here plus its use in the engine.
"""
from __future__ import annotations

import dataclasses
import random
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..generate import samplers
from ..core.errors import ParameterError

# Upper bound that protects memory: 2048x2048 worth of pixels (A1111 allows 2048 per side).
MAX_SIDE = 2048
MAX_PIXELS = 2048 * 2048
SEED_MAX = 2**32 - 1
PROMPT_MAX_CHARS = 20_000
MAX_STYLES = 64
HIRES_UPSCALERS = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                   "Latent (nearest)", "Latent (nearest-exact)", "None", "Lanczos", "Nearest")
# Model upscalers (pipelines.upscale, above the parameters in the layering) hand their names down here when they are
# created; weak references, so a discarded set of upscalers stops counting.
_UPSCALER_NAME_SOURCES: list[weakref.WeakMethod] = []


def register_upscaler_names(names: Callable[[], Iterable[str]]) -> None:
    """`names` (a bound method) lists upscaler names hr_upscaler accepts besides HIRES_UPSCALERS."""
    _UPSCALER_NAME_SOURCES[:] = [w for w in _UPSCALER_NAME_SOURCES if w() is not None] + [weakref.WeakMethod(names)]


def hires_upscalers() -> list[str]:
    """hr_upscaler's choices: A1111's latent modes and built-ins, then the model upscalers found."""
    out = list(HIRES_UPSCALERS)
    for ref in list(_UPSCALER_NAME_SOURCES):
        fn = ref()
        out += [n for n in (fn() if fn is not None else ()) if n not in out]
    return out


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    label: str
    infotext: str | None = None          # key written to / read from infotext (None: not in infotext)
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: Callable[[], Iterable[str]] | tuple[str, ...] | None = None
    widget: str = "auto"                 # UI hint: auto, textbox, slider, dropdown, checkbox, number, multiselect
    group: str = "main"                  # UI grouping: prompt, sampling, size, batch, seed, hires, model
    modes: tuple[str, ...] = ("txt2img", "img2img")
    doc: str = ""
    # Infotext: write only when this says so (default: when value differs from default).
    write_if: Callable[[Any, Any], bool] | None = None
    aliases: tuple[str, ...] = ()        # other field names accepted on input (legacy API names)
    max_length: int | None = None        # strings: longest accepted value
    # Integer/bool parameters shown and written by name (A1111 radio buttons): labels[value] is the
    # infotext text and the UI choice; the API sends the index.
    labels: tuple[str, ...] | None = None

    def choice_list(self) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def label_of(self, value: Any) -> Any:
        """The infotext / UI text of a value (its label when the parameter has labels)."""
        if self.labels is not None and isinstance(value, (bool, int)) and 0 <= int(value) < len(self.labels):
            return self.labels[int(value)]
        return value

    def convert(self, value: Any) -> Any:
        """Convert and check one value; raises ParameterError naming the field."""
        if value is None:
            return self.default
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = low in ("true", "1", "yes", "on")
                elif not isinstance(value, (bool, int)):
                    raise ValueError(value)
                value = bool(value)
            elif self.type is int:
                if isinstance(value, bool):
                    raise ValueError(value)
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                value = int(float(value)) if isinstance(value, str) else int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                value = float(value)
                if value != value:  # NaN
                    raise ValueError(value)
            elif self.type is str:
                if not isinstance(value, str):
                    raise ValueError(value)
            elif self.type is tuple:  # a list of names (styles); one string is one name
                if isinstance(value, str):
                    value = (value,)
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise ValueError(value)
                value = tuple(v for v in value if v)
        except (TypeError, ValueError, OverflowError):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            expected = "a list of strings" if self.type is tuple else self.type.__name__
            raise ParameterError(self.name, f"expected {expected}, got {shown}") from None
        if self.max_length is not None and len(value) > self.max_length:
            unit = "items" if self.type is tuple else "characters"
            raise ParameterError(self.name, f"{len(value)} {unit} is longer than the {self.max_length} allowed")
        if self.minimum is not None and value < self.minimum:
            raise ParameterError(self.name, f"{value} is below the minimum {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ParameterError(self.name, f"{value} is above the maximum {self.maximum:g}")
        choices = self.choice_list()
        if choices is not None and value not in choices:
            raise ParameterError(self.name, f"{value!r} is not one of: {', '.join(map(str, choices))}")
        return value


def _nonempty(value, _default) -> bool:
    return bool(value)


def _always(_value, _default) -> bool:
    return True


def _clip_skip_written(value, _default) -> bool:
    return value > 1  # A1111 writes "Clip skip" only above 1


def _positive(value, _default) -> bool:
    return value > 0


RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")


PARAMS: tuple[Param, ...] = (
    # Prompts are capped: parsing cost grows with nesting, and no real prompt comes near this.
    Param("prompt", str, "", "Prompt", widget="textbox", group="prompt", max_length=PROMPT_MAX_CHARS),
    Param("negative_prompt", str, "", "Negative prompt", widget="textbox", group="prompt",
          max_length=PROMPT_MAX_CHARS),
    # A1111 API `styles: list[str]`: names in styles.csv, applied in order to both prompts before anything
    # else (pipelines.prompts.styles); the infotext keeps the final prompts, not the names (as A1111).
    Param("styles", tuple, (), "Styles", widget="multiselect", group="prompt", max_length=MAX_STYLES,
          doc="names of prompt styles (styles.csv) applied in order; {prompt} in a style marks where the "
              "prompt goes, else the style text is appended"),
    Param("steps", int, 20, "Sampling steps", "Steps", 1, 150, 1, group="sampling", write_if=_always),
    Param("sampler_name", str, "Euler a", "Sampling method", "Sampler", choices=lambda: samplers.SAMPLER_NAMES,
          widget="dropdown", group="sampling",
          write_if=_always, aliases=("sampler_index",),
          doc="A1111 sampler name; old combined names like 'DPM++ 2M Karras' are accepted"),
    Param("scheduler", str, "Automatic", "Schedule type", "Schedule type", choices=samplers.SCHEDULE_NAMES,
          widget="dropdown", group="sampling", write_if=_always),
    Param("cfg_scale", float, 7.0, "CFG Scale", "CFG scale", 0.0, 30.0, 0.5, group="sampling", write_if=_always),
    Param("seed", int, -1, "Seed", "Seed", -1, SEED_MAX, group="seed", write_if=_always,
          doc="-1 picks a random seed; image i of a batch uses seed + i"),
    Param("width", int, 512, "Width", "Size-1", 64, MAX_SIDE, 8, group="size", write_if=_always),
    Param("height", int, 512, "Height", "Size-2", 64, MAX_SIDE, 8, group="size", write_if=_always),
    Param("sd_model_checkpoint", str, "", "Checkpoint", "Model", group="model", widget="dropdown",
          write_if=_nonempty, doc="checkpoint title or name; empty = the active one"),
    Param("sd_vae", str, "", "VAE", "VAE", group="model", widget="dropdown",
          doc="empty = keep the current choice; 'Automatic' (sidecar or the checkpoint's own), "
              "'None' (the checkpoint's own) or a VAE name"),
    Param("subseed", int, -1, "Variation seed", "Variation seed", -1, SEED_MAX, group="seed"),
    Param("subseed_strength", float, 0.0, "Variation strength", "Variation seed strength", 0.0, 1.0, 0.01,
          group="seed"),
    Param("denoising_strength", float, 0.7, "Denoising strength", "Denoising strength", 0.0, 1.0, 0.01,
          group="hires", write_if=_always,
          doc="img2img: steps run = int(steps x strength); txt2img: the hires pass (written only with hires fix)"),
    Param("vae_type", str, "Full", "VAE type", "VAE type", choices=("Full", "Tiny"), widget="dropdown",
          group="sampling", doc="Tiny decodes the final image with TAESD (models/VAE-approx/taesd or taesdxl, "
                                "diffusers format): ~20x cheaper than the full VAE, slightly softer"),
    Param("cfg_cutoff", float, 1.0, "CFG cut-off", "CFG cut-off", 0.0, 1.0, 0.05, group="sampling",
          doc="fraction of steps after which classifier-free guidance stops (1 = never); the remaining steps "
              "run the UNet once instead of twice"),
    # The CFG Rescale extension's key (A1111 / Forge infotext), diffusers' guidance_rescale (Lin et al. 2023 §3.4):
    # the guided prediction's std is pulled back toward the conditional one; for v-prediction / zero-SNR models.
    Param("guidance_rescale", float, 0.0, "CFG Rescale phi", "CFG Rescale phi", 0.0, 1.0, 0.05, group="sampling",
          doc="0 = off; 0.7 is the paper's value for zero-terminal-SNR v-prediction models (NoobAI-XL v-pred)"),
    Param("clip_skip", int, 1, "Clip skip", "Clip skip", 1, 12, 1, group="sampling", write_if=_clip_skip_written),
    Param("eta", float, 0.0, "Eta (DDIM / ancestral noise)", "Eta", 0.0, 1.0, 0.01, group="sampling"),
    Param("batch_size", int, 1, "Batch size", None, 1, 8, 1, group="batch"),
    Param("n_iter", int, 1, "Batch count", None, 1, 100, 1, group="batch"),
    Param("enable_hr", bool, False, "Hires. fix", None, group="hires", widget="checkbox", modes=("txt2img",)),
    Param("hr_scale", float, 2.0, "Upscale by", "Hires upscale", 1.0, 4.0, 0.05, group="hires", modes=("txt2img",)),
    Param("hr_upscaler", str, "Latent", "Upscaler", "Hires upscaler", choices=hires_upscalers, widget="dropdown",
          group="hires", modes=("txt2img",)),
    Param("hr_second_pass_steps", int, 0, "Hires steps", "Hires steps", 0, 150, 1, group="hires",
          modes=("txt2img",), doc="0 = same as sampling steps"),
    Param("hr_resize_x", int, 0, "Resize width to", "Hires resize-1", 0, MAX_SIDE, 8, group="hires",
          modes=("txt2img",)),
    Param("hr_resize_y", int, 0, "Resize height to", "Hires resize-2", 0, MAX_SIDE, 8, group="hires",
          modes=("txt2img",)),
    # img2img / inpainting (A1111 API names; infotext keys and labels as A1111 writes them). The "inpaint"
    # group applies only when a mask is given; infotext_params(masked=...) writes it only then.
    Param("resize_mode", int, 0, "Resize mode", "Resize mode", 0, 3, 1, widget="radio", group="size",
          modes=("img2img",), labels=RESIZE_MODES,
          doc="0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent upscale)"),
    Param("inpainting_mask_invert", int, 0, "Mask mode", "Mask mode", 0, 1, 1, widget="radio", group="inpaint",
          modes=("img2img",), labels=MASK_MODES, doc="1 = repaint the black (unmasked) area instead"),
    Param("mask_blur", int, 4, "Mask blur", "Mask blur", 0, 64, 1, group="inpaint", modes=("img2img",),
          write_if=_positive, doc="Gaussian blur of the mask edge, pixels"),
    Param("inpaint_full_res", bool, False, "Inpaint area", "Inpaint area", widget="radio", group="inpaint",
          modes=("img2img",), labels=INPAINT_AREAS,
          doc="True = only masked: work on a crop around the mask at full width x height, paste it back"),
    Param("inpaint_full_res_padding", int, 32, "Only masked padding, pixels", "Masked area padding", 0, 256, 4,
          group="inpaint", modes=("img2img",), write_if=_always, doc="written only with 'Only masked'"),
    Param("inpainting_fill", int, 1, "Masked content", "Masked content", 0, 3, 1, widget="radio", group="inpaint",
          modes=("img2img",), labels=MASKED_CONTENT,
          doc="what the masked area starts from: 0 fill, 1 original, 2 latent noise, 3 latent nothing"),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
ALIASES: dict[str, str] = {a: p.name for p in PARAMS for a in p.aliases}


def _request_replace(self, **changes):
    return dataclasses.replace(self, **changes)


def _request_to_dict(self) -> dict[str, Any]:
    d = {p.name: getattr(self, p.name) for p in PARAMS}
    d.update(self.extra)
    return d


# One generation job: a dataclass whose fields are generated from PARAMS (so a parameter is declared
# once); `extra` holds parameters declared by extensions.
GenerationRequest = dataclasses.make_dataclass(
    "GenerationRequest",
    [(p.name, p.type, field(default=p.default)) for p in PARAMS]
    + [("extra", dict, field(default_factory=dict))],
    namespace={"replace": _request_replace, "to_dict": _request_to_dict},
)
GenerationRequest.__module__ = __name__


def declared_defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMS}


def all_params(extra: Iterable[Param] = (), mode: str | None = None) -> tuple[Param, ...]:
    """The built-in PARAMS followed by parameters declared by extensions (`extra`, e.g.
    `HookRegistry.params`), optionally only those of `mode`. The UI widgets and the API schema are
    derived from this list; extension values travel in `GenerationRequest.extra`."""
    params = PARAMS + tuple(extra)
    return params if mode is None else tuple(p for p in params if mode in p.modes)


def make_request(values: dict[str, Any] | None = None, *, strict: bool = False,
                 extra_params: Iterable[Param] = (), **kw) -> GenerationRequest:
    """Validate a mapping of field → value into a request.

    Unknown keys are ignored unless `strict` (then ParameterError names the key). Legacy aliases
    (`sampler_index`) map to their field. A combined sampler name ("DPM++ 2M Karras") is split into
    sampler + schedule type. `extra_params`: parameters declared by extensions; their values (or
    defaults) go to `request.extra`.
    """
    values = _split_combined_sampler(dict(values or {}, **kw))
    by_extra = {p.name: p for p in extra_params}
    extra = {name: p.default for name, p in by_extra.items()}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key)
        param = BY_NAME.get(name)
        if param is None and key in by_extra:
            extra[key] = by_extra[key].convert(value)
            continue
        if param is None:
            if strict:
                raise ParameterError(key, "unknown parameter")
            continue
        if name in out and key != name:
            continue  # the canonical field wins over its legacy alias
        out[name] = param.convert(value)
    req = GenerationRequest(**out, extra=extra) if extra else GenerationRequest(**out)
    check_request(req)
    return req


def _split_combined_sampler(values: dict[str, Any]) -> dict[str, Any]:
    """'DPM++ 2M Karras' (A1111 before 1.9) → sampler 'DPM++ 2M' + schedule type 'Karras'."""
    for key in ("sampler_name", "sampler_index", "Sampler"):
        name = values.get(key)
        if isinstance(name, str) and name:
            sched_key = "Schedule type" if key == "Sampler" else "scheduler"
            try:
                s, sched = samplers.resolve(name, values.get(sched_key))
            except ParameterError:
                if key == "Sampler":
                    continue  # kept as an unknown infotext value by the caller
                raise  # names its own field: sampler_name (unknown sampler) or scheduler (unsupported schedule)
            values[key] = s.name
            values[sched_key] = sched
    return values


def check_request(req: GenerationRequest) -> None:
    for name in ("width", "height", "hr_resize_x", "hr_resize_y"):
        value = getattr(req, name)
        if value % 8:
            raise ParameterError(name, f"{value} is not a multiple of 8 (try {value - value % 8} or {value - value % 8 + 8})")
    if req.width * req.height > MAX_PIXELS:
        raise ParameterError("width", f"{req.width}x{req.height} exceeds the {MAX_PIXELS // 1_000_000} MP limit")
    samplers.resolve(req.sampler_name, req.scheduler)


def resolve_seed(seed: int) -> int:
    return random.randrange(SEED_MAX + 1) if seed is None or seed < 0 else int(seed)


# ---------------------------------------------------------------- infotext <-> request

_INFOTEXT_ORDER = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                   "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Denoising strength",
                   "Clip skip", "Eta")


def infotext_params(req: GenerationRequest, *, seed: int | None = None, subseed: int | None = None,
                    model_hash: str | None = None, model_name: str | None = None, vae_name: str | None = None,
                    vae_hash: str | None = None, mode: str = "txt2img", extra: dict | None = None,
                    masked: bool = False) -> dict[str, Any]:
    """The ordered `key: value` pairs of an image's infotext (A1111 key order).

    `masked`: img2img with a mask (inpainting); the "inpaint" group is written only then.
    """
    values = {p.infotext: p.label_of(getattr(req, p.name)) for p in PARAMS if p.infotext and mode in p.modes
              and (masked or p.group != "inpaint")
              and (p.write_if or (lambda v, d: v != d))(getattr(req, p.name), p.default)}
    if not (masked and req.inpaint_full_res):
        values.pop(BY_NAME["inpaint_full_res_padding"].infotext, None)
    if seed is not None:
        values["Seed"] = seed
    values["Size"] = f"{req.width}x{req.height}"
    values.pop("Size-1", None)
    values.pop("Size-2", None)
    values["Model hash"] = model_hash
    values["Model"] = model_name or req.sd_model_checkpoint or None
    values["VAE hash"] = vae_hash
    values["VAE"] = vae_name
    if req.subseed_strength > 0:
        values["Variation seed"] = subseed if subseed is not None else req.subseed
        values["Variation seed strength"] = req.subseed_strength
    else:
        values.pop("Variation seed", None)
        values.pop("Variation seed strength", None)
    hires_keys = {BY_NAME[n].infotext for n in ("hr_scale", "hr_upscaler", "hr_second_pass_steps",
                                                "hr_resize_x", "hr_resize_y")}
    for k in hires_keys:
        values.pop(k, None)
    if mode == "txt2img":
        if req.enable_hr:
            values["Denoising strength"] = req.denoising_strength
        else:
            values.pop("Denoising strength", None)
    ordered = {k: values[k] for k in _INFOTEXT_ORDER if k in values}
    ordered.update({k: v for k, v in values.items() if k not in ordered})
    if mode == "txt2img" and req.enable_hr:
        if req.hr_resize_x or req.hr_resize_y:
            ordered["Hires resize"] = f"{req.hr_resize_x}x{req.hr_resize_y}"
        else:
            ordered["Hires upscale"] = req.hr_scale
        if req.hr_second_pass_steps:
            ordered["Hires steps"] = req.hr_second_pass_steps
        ordered["Hires upscaler"] = req.hr_upscaler
    if extra:
        ordered.update(extra)
    return {k: v for k, v in ordered.items() if v is not None}


def request_values_from_infotext(params: dict[str, str], extra_params: Iterable[Param] = ()
                                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Map parsed infotext pairs to request field values; returns (known fields, unknown pairs kept).

    Values that do not convert (e.g. a sampler this product lacks) are left in the unknown pairs
    rather than dropped, so the caller can show them. `extra_params`: extension parameters, read
    by their infotext keys too (returned under their names).
    """
    by_key = {p.infotext: p for p in extra_params if p.infotext}
    by_key.update({p.infotext: p for p in PARAMS if p.infotext})
    by_key["Hires resize-1"] = BY_NAME["hr_resize_x"]
    by_key["Hires resize-2"] = BY_NAME["hr_resize_y"]
    known: dict[str, Any] = {}
    unknown: dict[str, str] = {}
    params = _split_combined_sampler(dict(params))
    for key, raw in params.items():
        param = by_key.get(key)
        if param is None:
            if key not in ("Size", "Hires resize"):
                unknown[key] = raw
            continue
        try:
            value = param.labels.index(raw) if param.labels and raw in param.labels else raw
            known[param.name] = param.convert(value)
        except ParameterError:
            unknown[key] = raw
    if "sampler_name" in known and "scheduler" in known:
        try:
            samplers.resolve(known["sampler_name"], known["scheduler"])
        except ParameterError:  # e.g. A1111's "Euler a" + "Karras": keep the sampler, show the schedule
            unknown["Schedule type"] = params["Schedule type"]
            del known["scheduler"]
    if any(k.startswith("Hires") for k in params):
        known["enable_hr"] = True
    if "Variation seed strength" not in params:
        known.pop("subseed", None)
    return known, unknown
