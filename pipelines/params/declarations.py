"""Generation parameters, each declared once.

Every parameter is one `Param`: its request/API field name (AUTOMATIC1111's API names), type, default,
range or choices, UI label and widget hint, and its infotext key. Request validation, infotext
writing/parsing, presets, the UI widgets and the API schema are all derived from `PARAMS`; adding a
parameter means adding one `Param` here plus its use in the engine.
"""
from __future__ import annotations

import dataclasses
import random
import typing
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
    # Infotext, from the whole image (`ImageContext`: mode, mask, the request's other fields): `written` says
    # whether the key belongs in this image's infotext at all, `infotext_value` what it says (e.g. the seed
    # actually used). Two keys `K-1` and `K-2` are written as one pair `K: AxB` (A1111's Size, Hires resize),
    # which the parser splits back into `K-1`/`K-2`.
    written: Callable[[ImageContext], bool] | None = None
    infotext_value: Callable[[ImageContext], Any] | None = None
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

    def convert(self, value: Any, *, strict: bool = False) -> Any:
        """Convert and check one value; raises ParameterError naming the field. `strict`: only a JSON value
        of the declared type is accepted (no "1" for 1, no "true" for True), as a settings store wants."""
        if value is None:
            return self.default
        try:
            value = self._exact(value) if strict else self._coerced(value)
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

    def _coerced(self, value: Any) -> Any:
        """A request value of the declared type: form and infotext text ("20", "true") is accepted."""
        if self.type is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = low in ("true", "1", "yes", "on")
            elif not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if self.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if self.type is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return self._exact(float(value))
        if self.type is tuple:  # a list of names (styles); one string is one name
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return tuple(v for v in value if v)
        if self.type is str:
            return self._exact(value)
        return value   # another type (an extension's parameter): its own code checks it

    def _exact(self, value: Any) -> Any:
        """A JSON value of exactly the declared type (an integer is a float too); ValueError otherwise."""
        if isinstance(value, bool) and self.type is not bool:
            raise ValueError(value)
        if self.type is float and isinstance(value, (int, float)):
            value = float(value)
            if value != value:  # NaN
                raise ValueError(value)
            return value
        if self.type is tuple and isinstance(value, (list, tuple)):
            return self._coerced(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(value)
        return value


def _nonempty(value, _default) -> bool:
    return bool(value)


def _always(_value, _default) -> bool:
    return True


def _clip_skip_written(value, _default) -> bool:
    return value > 1  # A1111 writes "Clip skip" only above 1


def _by_flow_models(_c) -> bool:
    return False  # pipelines.generate.flow adds these keys itself: only it knows the model is Flux


def _positive(value, _default) -> bool:
    return value > 0


@dataclass(frozen=True)
class ImageContext:
    """What an image's infotext is written from: its request and what the job decided."""

    req: GenerationRequest
    mode: str = "txt2img"
    masked: bool = False           # img2img with a mask: the inpainting parameters apply
    seed: int | None = None        # the seed and variation seed actually used (None: the request's)
    subseed: int | None = None
    model_name: str | None = None
    vae_name: str | None = None


def _hires(c: ImageContext) -> bool:
    return c.mode == "txt2img" and c.req.enable_hr


def _hires_resized(c: ImageContext) -> bool:
    return _hires(c) and bool(c.req.hr_resize_x or c.req.hr_resize_y)


def _hires_scaled(c: ImageContext) -> bool:
    return _hires(c) and not (c.req.hr_resize_x or c.req.hr_resize_y)


def _denoised(c: ImageContext) -> bool:
    return c.mode != "txt2img" or c.req.enable_hr   # txt2img denoises only in the hires pass


def _varied(c: ImageContext) -> bool:
    return c.req.subseed_strength > 0


def _masked(c: ImageContext) -> bool:
    return c.masked


def _masked_only_area(c: ImageContext) -> bool:
    return c.masked and c.req.inpaint_full_res


RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")


def param(default: Any, label: str, infotext: str | None = None, minimum: float | None = None,
          maximum: float | None = None, step: float | None = None, **declaration: Any) -> Any:
    """A field of GenerationRequest that is a generation parameter; the arguments are those of `Param`
    after its name and type, which come from the field."""
    declared = dict(default=default, label=label, infotext=infotext, minimum=minimum, maximum=maximum, step=step,
                    **declaration)
    return field(default=default, metadata={"param": declared})


@dataclass
class GenerationRequest:
    """One generation job. Each field is a generation parameter, declared here once with `param(...)` (the
    keywords of `Param`): request validation, infotext, presets, options, the UI widgets and the API schema are
    derived from these fields (`PARAMS`). `extra` holds the values of parameters declared by extensions."""

    # Prompts are capped: parsing cost grows with nesting, and no real prompt comes near this.
    prompt: str = param("", "Prompt", widget="textbox", group="prompt", max_length=PROMPT_MAX_CHARS)
    negative_prompt: str = param("", "Negative prompt", widget="textbox", group="prompt",
        max_length=PROMPT_MAX_CHARS)
    # A1111 API `styles: list[str]`: names in styles.csv, applied in order to both prompts before anything
    # else (pipelines.prompts.styles); the infotext keeps the final prompts, not the names (as A1111).
    styles: tuple[str, ...] = param((), "Styles", widget="multiselect", group="prompt", max_length=MAX_STYLES,
        doc="names of prompt styles (styles.csv) applied in order; {prompt} in a style marks where the "
            "prompt goes, else the style text is appended")
    steps: int = param(20, "Sampling steps", "Steps", 1, 150, 1, group="sampling", write_if=_always)
    sampler_name: str = param("Euler a", "Sampling method", "Sampler", choices=lambda: samplers.SAMPLER_NAMES,
        widget="dropdown", group="sampling",
        write_if=_always, aliases=("sampler_index",),
        doc="A1111 sampler name; old combined names like 'DPM++ 2M Karras' are accepted")
    scheduler: str = param("Automatic", "Schedule type", "Schedule type", choices=samplers.SCHEDULE_NAMES,
        widget="dropdown", group="sampling", write_if=_always)
    cfg_scale: float = param(7.0, "CFG Scale", "CFG scale", 0.0, 30.0, 0.5, group="sampling", write_if=_always)
    seed: int = param(-1, "Seed", "Seed", -1, SEED_MAX, group="seed", write_if=_always,
        infotext_value=lambda c: c.req.seed if c.seed is None else c.seed,
        doc="-1 picks a random seed; image i of a batch uses seed + i")
    width: int = param(512, "Width", "Size-1", 64, MAX_SIDE, 8, group="size", write_if=_always)
    height: int = param(512, "Height", "Size-2", 64, MAX_SIDE, 8, group="size", write_if=_always)
    sd_model_checkpoint: str = param("", "Checkpoint", "Model", group="model", widget="dropdown",
        write_if=_always, infotext_value=lambda c: c.model_name or c.req.sd_model_checkpoint or None,
        doc="checkpoint title or name; empty = the active one")
    sd_vae: str = param("", "VAE", "VAE", group="model", widget="dropdown",
        write_if=_always, infotext_value=lambda c: c.vae_name,   # the VAE used, whatever was asked
        doc="empty = keep the current choice; 'Automatic' (sidecar or the checkpoint's own), "
            "'None' (the checkpoint's own) or a VAE name")
    subseed: int = param(-1, "Variation seed", "Variation seed", -1, SEED_MAX, group="seed",
        written=_varied, write_if=_always, infotext_value=lambda c: c.req.subseed if c.subseed is None else c.subseed)
    subseed_strength: float = param(0.0, "Variation strength", "Variation seed strength", 0.0, 1.0, 0.01,
        group="seed", written=_varied)
    denoising_strength: float = param(0.7, "Denoising strength", "Denoising strength", 0.0, 1.0, 0.01,
        group="hires", write_if=_always, written=_denoised,
        doc="img2img: steps run = int(steps x strength) + 1 (A1111's t_enc + 1; int(steps x strength) for DDIM, "
            "PLMS, UniPC, LCM, TCD, DEIS); txt2img: the hires pass (written only with hires fix)")
    vae_type: str = param("Full", "VAE type", "VAE type", choices=("Full", "Tiny"), widget="dropdown",
        group="sampling", doc="Tiny decodes the final image with TAESD (models/VAE-approx/taesd or taesdxl, "
                              "diffusers format): ~20x cheaper than the full VAE, slightly softer")
    cfg_cutoff: float = param(1.0, "CFG cut-off", "CFG cut-off", 0.0, 1.0, 0.05, group="sampling",
        doc="fraction of steps after which classifier-free guidance stops (1 = never); the remaining steps "
            "run the UNet once instead of twice")
    # The CFG Rescale extension's key (A1111 / Forge infotext), diffusers' guidance_rescale (Lin et al. 2023 §3.4):
    # the guided prediction's std is pulled back toward the conditional one; for v-prediction / zero-SNR models.
    guidance_rescale: float = param(0.0, "CFG Rescale phi", "CFG Rescale phi", 0.0, 1.0, 0.05, group="sampling",
        doc="0 = off; 0.7 is the paper's value for zero-terminal-SNR v-prediction models (NoobAI-XL v-pred)")
    # Flux.1 / flow-matching models: pipelines.generate.flow writes these keys, only for those families (as Forge).
    distilled_cfg_scale: float = param(3.5, "Distilled CFG Scale", "Distilled CFG Scale", 0.0, 30.0, 0.1,
        group="sampling", written=_by_flow_models,
        doc="Flux.1 dev's guidance embedding (Forge's name); CFG scale 1 = no negative prompt pass")
    shift: float = param(0.0, "Shift", "Shift", 0.0, 20.0, 0.1, group="sampling", written=_by_flow_models,
        doc="flow-matching timestep shift; 0 = the model's own (Flux dev: by resolution, schnell: 1)")
    clip_skip: int = param(1, "Clip skip", "Clip skip", 1, 12, 1, group="sampling", write_if=_clip_skip_written)
    eta: float = param(0.0, "Eta (DDIM / ancestral noise)", "Eta", 0.0, 1.0, 0.01, group="sampling",
        doc="0 = each sampler's default (A1111: 1 for ancestral/SDE samplers, 0 for DDIM)")
    # A1111's sampler parameters and options that change the image (pipelines.generate.kscheduler).
    randn_source: str = param("CPU", "Random number generator source", "RNG", choices=("CPU", "GPU", "NV"),
        widget="dropdown", group="sampling",
        doc="A1111's RNG source; noise is always drawn on the CPU here (GPU/NV images are not reproduced: notice)")
    eta_noise_seed_delta: int = param(0, "Eta noise seed delta (ENSD)", "ENSD", 0, SEED_MAX, 1, group="sampling",
        doc="step noise of ancestral samplers from generators seeded with seed + this (A1111 option)")
    s_churn: float = param(0.0, "Sigma churn", "Sigma churn", 0.0, 100.0, 0.01, group="sampling")
    s_tmin: float = param(0.0, "Sigma tmin", "Sigma tmin", 0.0, 10.0, 0.01, group="sampling")
    s_tmax: float = param(0.0, "Sigma tmax", "Sigma tmax", 0.0, 999.0, 0.01, group="sampling", doc="0 = infinity")
    s_noise: float = param(1.0, "Sigma noise", "Sigma noise", 0.0, 1.1, 0.001, group="sampling")
    sigma_min: float = param(0.0, "Schedule min sigma", "Schedule min sigma", 0.0, 2.0, 0.001, group="sampling",
        doc="0 = the model's own")
    sigma_max: float = param(0.0, "Schedule max sigma", "Schedule max sigma", 0.0, 100.0, 0.001, group="sampling",
        doc="0 = the model's own")
    rho: float = param(0.0, "Schedule rho", "Schedule rho", 0.0, 100.0, 0.01, group="sampling",
        doc="0 = the schedule's default (Karras 7, Polyexponential 1)")
    batch_size: int = param(1, "Batch size", None, 1, 8, 1, group="batch")
    n_iter: int = param(1, "Batch count", None, 1, 100, 1, group="batch")
    enable_hr: bool = param(False, "Hires. fix", None, group="hires", widget="checkbox", modes=("txt2img",))
    hr_scale: float = param(2.0, "Upscale by", "Hires upscale", 1.0, 4.0, 0.05, group="hires", modes=("txt2img",),
        written=_hires_scaled, write_if=_always)
    hr_upscaler: str = param("Latent", "Upscaler", "Hires upscaler", choices=hires_upscalers, widget="dropdown",
        group="hires", modes=("txt2img",), written=_hires, write_if=_always)
    hr_second_pass_steps: int = param(0, "Hires steps", "Hires steps", 0, 150, 1, group="hires",
        modes=("txt2img",), written=_hires, doc="0 = same as sampling steps")
    hr_resize_x: int = param(0, "Resize width to", "Hires resize-1", 0, MAX_SIDE, 8, group="hires",
        modes=("txt2img",), written=_hires_resized, write_if=_always)
    hr_resize_y: int = param(0, "Resize height to", "Hires resize-2", 0, MAX_SIDE, 8, group="hires",
        modes=("txt2img",), written=_hires_resized, write_if=_always)
    # img2img / inpainting (A1111 API names; infotext keys and labels as A1111 writes them). The "inpaint"
    # group applies only when a mask is given, and is written only then.
    resize_mode: int = param(0, "Resize mode", "Resize mode", 0, 3, 1, widget="radio", group="size",
        modes=("img2img",), labels=RESIZE_MODES,
        doc="0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent upscale)")
    inpainting_mask_invert: int = param(0, "Mask mode", "Mask mode", 0, 1, 1, widget="radio", group="inpaint",
        modes=("img2img",), labels=MASK_MODES, written=_masked, doc="1 = repaint the black (unmasked) area instead")
    mask_blur: int = param(4, "Mask blur", "Mask blur", 0, 64, 1, group="inpaint", modes=("img2img",),
        write_if=_positive, written=_masked, doc="Gaussian blur of the mask edge, pixels")
    inpaint_full_res: bool = param(False, "Inpaint area", "Inpaint area", widget="radio", group="inpaint",
        modes=("img2img",), labels=INPAINT_AREAS, written=_masked,
        doc="True = only masked: work on a crop around the mask at full width x height, paste it back")
    inpaint_full_res_padding: int = param(32, "Only masked padding, pixels", "Masked area padding", 0, 256, 4,
        group="inpaint", modes=("img2img",), write_if=_always, written=_masked_only_area,
        doc="written only with 'Only masked'")
    inpainting_fill: int = param(1, "Masked content", "Masked content", 0, 3, 1, widget="radio", group="inpaint",
        modes=("img2img",), labels=MASKED_CONTENT, written=_masked,
        doc="what the masked area starts from: 0 fill, 1 original, 2 latent noise, 3 latent nothing")
    # Outpainting (pipelines.upscale.outpaint): the canvas grows by these pixels, the new area is inpainted; A1111's
    # API script names "poor man's outpainting" / "outpainting mk2" set them. Not in infotext (A1111 writes none).
    outpaint_left: int = param(0, "Outpaint left, pixels", None, 0, 1024, 8, group="outpaint", modes=("img2img",))
    outpaint_right: int = param(0, "Outpaint right, pixels", None, 0, 1024, 8, group="outpaint", modes=("img2img",))
    outpaint_up: int = param(0, "Outpaint up, pixels", None, 0, 1024, 8, group="outpaint", modes=("img2img",))
    outpaint_down: int = param(0, "Outpaint down, pixels", None, 0, 1024, 8, group="outpaint", modes=("img2img",))

    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {p.name: getattr(self, p.name) for p in PARAMS}
        d.update(self.extra)
        return d


def _declared_params(cls: type) -> tuple[Param, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(Param(f.name, typing.get_origin(hints[f.name]) or hints[f.name], **f.metadata["param"])
                 for f in dataclasses.fields(cls) if "param" in f.metadata)


PARAMS: tuple[Param, ...] = _declared_params(GenerationRequest)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
ALIASES: dict[str, str] = {a: p.name for p in PARAMS for a in p.aliases}


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

# A1111's key order: these first, then the other parameters in declaration order, the hires pass last.
_INFOTEXT_FIRST = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                   "VAE hash", "VAE", "Variation seed", "Variation seed strength", "Denoising strength",
                   "Clip skip", "Eta")
_INFOTEXT_LAST = ("Hires resize", "Hires upscale", "Hires steps", "Hires upscaler")


def written_pairs(params: Iterable[Param], ctx: ImageContext, values: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """`key: value` of each parameter this image's infotext carries, by the declarations alone
    (`written`, `write_if`, `infotext_value`); `K-1` + `K-2` become one `K: AxB` pair. `values`: where the
    parameters' values are (default: the request's fields; extensions' parameters: `req.extra`)."""
    pairs: dict[str, Any] = {}
    for p in params:
        if not p.infotext or ctx.mode not in p.modes or (p.written is not None and not p.written(ctx)):
            continue
        if values is not None and p.name not in values:
            continue
        value = getattr(ctx.req, p.name) if values is None else values[p.name]
        if not (p.write_if or (lambda v, d: v != d))(value, p.default):
            continue
        pairs[p.infotext] = p.infotext_value(ctx) if p.infotext_value else p.label_of(value)
    for key in [k for k in pairs if k.endswith("-1")]:
        pair = key[:-2]
        first, second = pairs.pop(key), pairs.pop(pair + "-2", None)
        pairs[pair] = f"{first}x{second}"
    return pairs


def infotext_params(req: GenerationRequest, *, seed: int | None = None, subseed: int | None = None,
                    model_hash: str | None = None, model_name: str | None = None, vae_name: str | None = None,
                    vae_hash: str | None = None, mode: str = "txt2img", extra: dict | None = None,
                    masked: bool = False) -> dict[str, Any]:
    """The ordered `key: value` pairs of an image's infotext (A1111 key order).

    `masked`: img2img with a mask (inpainting); the "inpaint" group is written only then.
    """
    ctx = ImageContext(req, mode, masked, seed, subseed, model_name, vae_name)
    values = written_pairs(PARAMS, ctx)
    values.update({"Model hash": model_hash, "VAE hash": vae_hash})   # facts of the files, not parameters
    ordered = {k: values[k] for k in _INFOTEXT_FIRST if k in values}
    ordered.update({k: v for k, v in values.items() if k not in ordered and k not in _INFOTEXT_LAST})
    ordered.update({k: values[k] for k in _INFOTEXT_LAST if k in values})
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
