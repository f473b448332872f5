"""txt2img / img2img for the /sdapi/v1 API: A1111 request → one GenerationRequest → a job on the shared queue.

The request object comes from `pipelines.params.declarations.make_request` (the same validation the UI uses); this
module only maps what is particular to A1111's API: `override_settings` (checkpoint, VAE, clip skip for
one request, restored afterwards unless asked not to), legacy names and spellings (`sampler_index`,
lower-case schedule names, sizes not a multiple of 8), ControlNet units in sd-webui-controlnet's format
(`alwayson_scripts.controlnet.args`; other always-on scripts this build lacks are ignored and reported in
`info.warnings`), saving only with `save_images`, and A1111's response (`images` as base64 with the
infotext embedded, `parameters`, `info` as a JSON string). Styles, LoRA tags and embeddings are the
engine's (the request's `styles`; `<data dir>/styles.csv` when the app configured no styles database).
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipelines.generate import samplers
from pipelines.core.errors import ParameterError, UserError
from pipelines.params.declarations import BY_NAME, GenerationRequest, make_request

from .images import MAX_IMAGE_PIXELS, decode_image
from .models import API_ONLY_FIELDS
from .options import KindSaver
from .state import NotFound

if TYPE_CHECKING:
    from .state import ApiState

log = logging.getLogger(__name__)

MAX_REQUEST_PIXELS = 2 * MAX_IMAGE_PIXELS     # all images of one request: init images, mask, ControlNet units
SIZE_FIELDS = ("width", "height", "hr_resize_x", "hr_resize_y")
_SCHEDULE_KEYS = {name.lower().replace(" ", "_"): name for name in samplers.SCHEDULE_NAMES}
_SCHEDULE_KEYS.update({name.lower(): name for name in samplers.SCHEDULE_NAMES})


def schedule_name(value: str) -> str:
    """A1111's scheduler names ('automatic', 'sgm_uniform') and labels ('Automatic') → the label."""
    return _SCHEDULE_KEYS.get(value.strip().lower(), value)


@dataclass
class PreparedRequest:
    mode: str
    request: GenerationRequest
    parameters: dict[str, Any]                      # the request as received, defaults filled in (A1111)
    send_images: bool = True
    save_images: bool = False
    restore: bool = True
    warnings: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    images: list = field(default_factory=list)      # img2img: decoded init images (PIL)
    mask: Any = None                                # img2img: decoded mask (PIL) or None
    controlnet: list | None = None                  # enabled ControlNetUnits


def prepare(state: "ApiState", body, mode: str) -> PreparedRequest:
    """Validate an API body into a GenerationRequest (ParameterError → 422, NotFound → 404)."""
    given = body.model_dump(exclude_unset=True)
    values: dict[str, Any] = {k: v for k, v in given.items() if v is not None and k not in API_ONLY_FIELDS}
    warnings: list[str] = []
    for name in SIZE_FIELDS:
        if isinstance(values.get(name), int) and values[name] % 8:
            rounded = values[name] - values[name] % 8
            warnings.append(f"{name} {values[name]} rounded down to {rounded} (a multiple of 8)")
            values[name] = rounded
    if isinstance(values.get("scheduler"), str):
        values["scheduler"] = schedule_name(values["scheduler"])
    if "clip_skip" not in values:
        values["clip_skip"] = state.store.get("CLIP_stop_at_last_layers")

    overrides = given.get("override_settings") or {}
    for key, value in overrides.items():
        where = f"override_settings.{key}"
        if key == "sd_model_checkpoint":
            if value is not None and not isinstance(value, str):
                raise ParameterError(where, f"expected a checkpoint name, got {value!r:.60}")
            if value:
                values["sd_model_checkpoint"] = value
        elif key == "sd_vae":
            if value is not None and not isinstance(value, str):
                raise ParameterError(where, f"expected a VAE name, got {value!r:.60}")
            if value:
                values["sd_vae"] = value
        elif key == "CLIP_stop_at_last_layers":
            try:
                values["clip_skip"] = BY_NAME["clip_skip"].convert(value)
            except ParameterError as err:
                raise ParameterError(where, str(err).split(": ", 1)[-1]) from None
        else:
            warnings.append(f"{where} is not supported by this build and was ignored")

    if not values.get("sd_model_checkpoint") and state.services.manager.active is None and state.last_checkpoint:
        values["sd_model_checkpoint"] = state.last_checkpoint   # after unload-checkpoint: load it again (A1111)
    if values.get("sd_model_checkpoint"):
        values["sd_model_checkpoint"] = state.find_checkpoint(values["sd_model_checkpoint"], "sd_model_checkpoint").title
    if values.get("sd_vae"):
        values["sd_vae"] = state.check_vae(values["sd_vae"], "sd_vae")

    styles = [s for s in (given.get("styles") or []) if s]
    if styles and "styles" not in BY_NAME:
        warnings.append(f"prompt styles are not available in this build; ignored: {', '.join(styles)}")
    budget = [MAX_REQUEST_PIXELS]    # all images of one request together (init images, mask, ControlNet)
    units = None
    for name, script in (given.get("alwayson_scripts") or {}).items():
        if name.lower() != "controlnet":
            warnings.append(f"alwayson_scripts.{name}: no such script in this build; ignored")
        elif not state.controlnet_supported():
            warnings.append("alwayson_scripts.controlnet: ControlNet is not available in this build; "
                            "its units were ignored")
        else:
            units = controlnet_units(state, script, budget)
    hooks = getattr(state.services.engine, "hooks", None)   # extensions' parameters → request.extra
    script = given.get("script_name")
    if script:   # A1111's selectable scripts are run by the extensions that declare them (hooks.add_script)
        if hooks is None:
            raise ParameterError("script_name", f"script {script!r} not found; this build has no selectable scripts")
        values.update(hooks.script_values(script, given.get("script_args") or [], mode))
    request = make_request(values, extra_params=hooks.params if hooks is not None else ())
    check_limits = getattr(state.services, "check_limits", None)   # --max-images, pixels, ControlNet units
    if check_limits is not None:
        check_limits(request, mode)
    parameters = body.model_dump(mode="json")
    prepared = PreparedRequest(mode, request, parameters,
                               send_images=given.get("send_images", True) is not False,
                               save_images=bool(given.get("save_images", False)),
                               restore=given.get("override_settings_restore_afterwards", True) is not False,
                               warnings=warnings, styles=styles, controlnet=units)
    if mode == "img2img":
        _decode_inputs(prepared, given, budget)
    for name, script in (parameters.get("alwayson_scripts") or {}).items():
        if name.lower() == "controlnet" and isinstance(script, dict) and isinstance(script.get("args"), list):
            for unit in script["args"]:
                if isinstance(unit, dict) and unit.get("image"):
                    unit["image"] = None      # not echoed back: images can be megabytes
    return prepared


def controlnet_units(state: "ApiState", script: Any, budget: list[int]):
    """sd-webui-controlnet's `{"args": [unit, ...]}` → checked ControlNetUnits (None when none is enabled).

    Unit images are decoded here (bounded like init images); model names are looked up among the
    discovered ControlNets (404 otherwise), never opened as paths."""
    from pipelines.controlnet.units import units_from_api

    args = script.get("args", []) if isinstance(script, dict) else script
    if args is None:
        return None
    if not isinstance(args, (list, tuple)):
        raise ParameterError("alwayson_scripts.controlnet.args", "expected a list of ControlNet units")
    limits = getattr(state.services, "limits", None)
    if limits is not None:          # before any unit image is decoded
        limits.check_units(len(args))

    def decode(data: str):
        image = decode_image(data, "alwayson_scripts.controlnet.image", budget=budget[0])
        budget[0] -= image.width * image.height
        return image

    try:
        units = units_from_api(args, decode)
    except ParameterError as err:
        raise ParameterError(f"alwayson_scripts.{err.field}", str(err).split(": ", 1)[-1]) from None
    registry = state.services.manager.controlnets.registry
    for i, unit in enumerate(units):
        if unit.enabled and unit.has_model:
            try:
                unit.model = registry.find(unit.model).title
            except UserError as err:
                raise NotFound(f"alwayson_scripts.controlnet[{i}].model", str(err)) from None
    units = [u for u in units if u.enabled]
    return units or None


def _decode_inputs(prepared: PreparedRequest, given: dict[str, Any], budget: list[int]) -> None:
    """init_images / mask (base64) → PIL, each bounded and all of them together bounded."""
    encoded = given.get("init_images") or []
    if not encoded:
        raise ParameterError("init_images", "img2img needs at least one init image (base64)")
    for i, data in enumerate(encoded):   # sizes checked from each header before decoding
        image = decode_image(data, f"init_images.{i}", budget=budget[0])
        budget[0] -= image.width * image.height
        prepared.images.append(image)
    if given.get("mask"):
        prepared.mask = decode_image(given["mask"], "mask", budget=budget[0])
    if not given.get("include_init_images"):
        prepared.parameters["init_images"] = None
        prepared.parameters["mask"] = None


def api_engine(state: "ApiState", mode: str):
    """The shared engine with this request's output options (a shallow copy: same manager, same lock)."""
    services = state.services
    engine = copy.copy(services.engine)
    if services.engine.saver is not None:
        engine.saver = KindSaver(services.engine.saver, state.store, mode)
    every = state.store.get("show_progress_every_n_steps")
    engine.preview_every = max(0, every) if state.store.get("live_previews_enable") else 0
    engine.saver_grid = state.store.get("grid_save")
    if getattr(engine, "styles", False) is None:    # no styles database configured: <data dir>/styles.csv
        engine.styles = state.styles()
    return engine


def job_function(state: "ApiState", prepared: PreparedRequest):
    """What runs on the queue: generate, note the model used, restore the overridden checkpoint/VAE."""
    manager = state.services.manager
    engine = api_engine(state, prepared.mode)
    req = prepared.request

    release = getattr(state.services, "release_interrogator", None)   # generation needs the device

    def work(control):
        if release is not None:
            release()
        with manager.lock:
            before = manager.active
            before_vae = before.vae_name if before is not None else None
            stamp = datetime.now().strftime("%Y%m%d%H%M%S")
            try:
                extra = {"controlnet": prepared.controlnet} if prepared.controlnet else {}
                if prepared.mode == "txt2img":
                    result = engine.txt2img(req, control, save=prepared.save_images, **extra)
                else:
                    result = engine.img2img(req, prepared.images, prepared.mask, control, save=prepared.save_images,
                                            **extra)
                loaded = manager.active
                meta = {"sd_model_name": loaded.info.model_name if loaded else None,
                        "sd_model_hash": loaded.info.shorthash if loaded else None,
                        "sd_vae_name": loaded.vae_name if loaded else None,
                        "job_timestamp": stamp}
            finally:
                if prepared.restore and before is not None and (req.sd_model_checkpoint or req.sd_vae):
                    _restore(manager, before, before_vae)
            return result, meta

    return work


def _restore(manager, before, before_vae) -> None:
    try:
        if manager.active is not before:
            manager.load(before.info)
        if manager.active is not None and manager.active.vae_name != before_vae:
            manager.set_vae(before_vae or "None")
    except Exception:  # noqa: BLE001 - the request itself succeeded; say why the old model is not back
        log.exception("could not restore checkpoint %s after override_settings", before.info.title)


def info_json(prepared: PreparedRequest, result, meta: dict[str, Any]) -> str:
    """A1111's `info`: what GenerationResult.info() gives plus the fields A1111 clients read."""
    req = prepared.request
    info = result.info() if result is not None else {}
    info.setdefault("infotexts", [])
    info.update({
        "styles": prepared.styles,
        "job_timestamp": meta.get("job_timestamp"),
        "sd_model_name": meta.get("sd_model_name"),
        "sd_model_hash": meta.get("sd_model_hash"),
        "sd_vae_name": meta.get("sd_vae_name"),
        "sd_vae_hash": None,
        "denoising_strength": req.denoising_strength if (req.enable_hr or prepared.mode != "txt2img") else None,
        "restore_faces": False,
        "face_restoration_model": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "is_using_inpainting_conditioning": False,
        "scheduler": req.scheduler,
        "version": "sd-webui-diffusers",
    })
    if result is not None and getattr(result, "skipped", 0):
        info["skipped"] = result.skipped
    warnings = prepared.warnings + list(getattr(result, "notices", None) or [])
    if warnings:
        info["warnings"] = warnings
    return json.dumps(info, default=str)


def empty_result(prepared: PreparedRequest):
    """A result for a job cancelled before it started (interrupt while queued)."""
    from pipelines.generate.engine import GenerationResult

    return GenerationResult(request=prepared.request, interrupted=True)


def encode_images(state: "ApiState", result) -> list[str]:
    from .images import encode_image

    fmt = state.store.get("samples_format")
    quality = state.store.get("jpeg_quality")
    return [encode_image(img, text, fmt, quality) for img, text in zip(result.images, result.infotexts)]

