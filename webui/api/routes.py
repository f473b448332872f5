"""The AUTOMATIC1111-compatible REST API under /sdapi/v1 (served with --api or --nowebui).

    router = create_api_router(services, access=access)   # webui/app/server.py includes it before the UI

Existing A1111 clients (the `webuiapi` package, Krita plugins, bots) work unchanged: the routes, field
names and response shapes are A1111's (and sd-webui-controlnet's: `alwayson_scripts.controlnet` units,
`/controlnet/model_list`, `/controlnet/module_list`). Generation, model switches and interrogation are
jobs on the one queue the UI uses (`services.queue`); the handlers wait for their job without holding a
thread. Features this build lacks answer with empty lists (face restorers, hypernetworks,
selectable scripts) or 501 (deepdanbooru).

Modules: `api_models` (pydantic schemas; the generation request schema is generated from
`pipelines.params.declarations.PARAMS`), `api_generation` (request mapping and the generation job), `api_options`
(the options, persisted in `<data dir>/config/options.json`), `api_images` (bounded base64 images).

Safety: credentials are applied by server.py (`--api-auth`, `--auth`, exposed mode); model names are
looked up among discovered models only (a path in a request never reaches the disk); request bodies are
limited to MAX_BODY_BYTES (413) and decoded images to api_images.MAX_IMAGE_PIXELS (413); image URLs are
never fetched; output folders set through options stay inside --outdir.
"""
import importlib.util
import logging
import platform
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from pipelines.generate import samplers
from pipelines.core.errors import Interrupted, ParameterError, UserError
from pipelines.core.jobs import QueueFull

from . import extras, models as M
from .generation import PreparedRequest, empty_result, encode_images, info_json, job_function, prepare
from .images import ImageInputError, decode_base64, decode_image, open_image
from .options import BY_KEY, OptionsRequest, OptionsResponse
from .state import ApiState, NotAvailable, NotFound

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"
MAX_BODY_BYTES = 50 * 1024 * 1024
SECRET_FLAGS = ("auth", "api_auth")
INTERROGATE_MODELS = ("clip", "caption", "fast", "classic", "best", "negative")


# ---------------------------------------------------------------------------------------------- errors

# (server path, what a client sees instead): messages reach remote clients without the server's folders
_PRIVATE_PATHS: list[tuple[str, str]] = []


def hide_paths(message: str) -> str:
    for path, shown in _PRIVATE_PATHS:
        message = message.replace(path, shown)
    return message


def _remember_private_paths(args) -> None:
    roots = [(getattr(args, "outdir", None), "<outputs>"), (getattr(args, "data_dir", None), "<data dir>"),
             (Path(__file__).resolve().parents[2], "<app>"), (Path.home(), "~")]
    pairs = {str(Path(p).resolve()): shown for p, shown in roots if p}
    _PRIVATE_PATHS[:] = sorted(pairs.items(), key=lambda item: -len(item[0]))   # the longest (innermost) first


def _error(status: int, field: str | None, message: str) -> HTTPException:
    message = hide_paths(message)
    if status == 422:
        loc = ["body", *field.split(".")] if field else ["body"]
        return HTTPException(422, detail=[{"type": "value_error", "loc": loc, "msg": message}])
    return HTTPException(status, detail=f"{field}: {message}" if field and not message.startswith(field) else message)


def http_error(err: BaseException) -> HTTPException:
    """An engine/API error → the HTTP answer a client can act on (4xx), 500 only for bugs."""
    if isinstance(err, HTTPException):
        return err
    if isinstance(err, ImageInputError):
        return _error(err.status, err.field, err.message)
    if isinstance(err, ParameterError):
        return _error(422, err.field, str(err))
    if isinstance(err, NotFound):
        return _error(404, err.field, str(err))
    if isinstance(err, NotAvailable):
        return _error(501, None, str(err))
    if isinstance(err, QueueFull):
        return HTTPException(429, detail=str(err), headers={"Retry-After": "10"})
    if isinstance(err, UserError):
        return _error(400, None, str(err))
    log.error("API request failed", exc_info=(type(err), err, err.__traceback__))
    return HTTPException(500, detail=f"internal error ({type(err).__name__}); the details are in the server's log")


class LimitedRoute(APIRoute):
    """Routes that refuse request bodies over MAX_BODY_BYTES (413) before they are buffered."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def limited(request: Request):
            length = request.headers.get("content-length")
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    return JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)
                if declared > MAX_BODY_BYTES:
                    return _too_large()
            if request.method in ("POST", "PUT", "PATCH") and not hasattr(request, "_body"):
                chunks, size = [], 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return _too_large()
                    chunks.append(chunk)
                request._body = b"".join(chunks)
            return await handler(request)

        return limited


def _too_large() -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES // (1024 * 1024)} MB"},
                        status_code=413, headers={"Connection": "close"})


# ---------------------------------------------------------------------------------------------- state

# ---------------------------------------------------------------------------------------------- router

def create_api_router(services, access=None) -> APIRouter:
    """The /sdapi/v1 routes on `services` (credentials are applied by server.create_app)."""
    state = ApiState(services)
    _remember_private_paths(services.args)
    router = APIRouter(route_class=LimitedRoute, tags=["sdapi"])
    manager = services.manager
    registry = services.registry
    queue = services.queue

    def route(path: str, methods: list[str], **kw):
        def deco(fn):
            router.add_api_route(PREFIX + path, fn, methods=methods, **kw)
            return fn
        return deco

    # ------------------------------------------------------------------ generation
    async def generate(prepared: PreparedRequest, label: str, request: Request) -> dict:
        try:
            result, meta = await state.run(job_function(state, prepared), label, request)
        except Interrupted:
            result, meta = empty_result(prepared), {}
        images = await run_in_threadpool(encode_images, state, result) if prepared.send_images else []
        return {"images": images, "parameters": prepared.parameters, "info": info_json(prepared, result, meta)}

    # Request schemas from PARAMS + the extensions' declared parameters (values reach request.extra).
    hooks = getattr(services.engine, "hooks", None)
    Txt2ImgRequest, Img2ImgRequest = (M.request_models(hooks.all_params()) if hooks is not None and hooks.params
                                      else (M.Txt2ImgRequest, M.Img2ImgRequest))

    @route("/txt2img", ["POST"], response_model=M.TextToImageResponse)
    async def txt2img(body: Txt2ImgRequest, request: Request):
        try:
            prepared = await run_in_threadpool(prepare, state, body, "txt2img")
            return await generate(prepared, f"api txt2img: {prepared.request.prompt[:40]}", request)
        except Exception as err:
            raise http_error(err) from None

    @route("/img2img", ["POST"], response_model=M.ImageToImageResponse,
           responses={501: {"description": "img2img is not available in this build"}})
    async def img2img(body: Img2ImgRequest, request: Request):
        if not hasattr(services.engine, "img2img"):
            raise _error(501, None, "img2img/inpaint is not available in this build; txt2img works")
        try:
            prepared = await run_in_threadpool(prepare, state, body, "img2img")
            return await generate(prepared, f"api img2img: {prepared.request.prompt[:40]}", request)
        except Exception as err:
            raise http_error(err) from None

    # ------------------------------------------------------------------ images
    @route("/png-info", ["POST"], response_model=M.PNGInfoResponse)
    async def png_info(body: M.PNGInfoRequest):
        from pipelines.images.metadata import read_image_parameters
        from pipelines.images.reproduce import plan_reproduction
        from pipelines.params.infotext import parse_infotext

        def read():
            raw = decode_base64(body.image, "image")
            found = read_image_parameters(open_image(raw, "image"))
            plan = None
            if found.infotext:   # the image's models among ours, and what will differ
                loaded = services.manager.active
                plan = plan_reproduction(found.infotext, services.registry, getattr(services.engine, "networks", None),
                                         source=found.source, notes=found.notes,
                                         active=(loaded.info.title, loaded.vae_name) if loaded else None,
                                         extra_params=services.engine.hooks.params)
            return found.infotext, found.items, plan

        try:
            text, items, plan = await run_in_threadpool(read)
        except Exception as err:
            raise http_error(err) from None
        items = {k: v for k, v in items.items() if k != "parameters"}
        parameters: dict[str, Any] = {}
        if text:
            parsed = parse_infotext(text)
            parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params}
        return {"info": text or "", "items": items, "parameters": parameters,
                "reproduce": plan.as_dict() if plan else None}

    @route("/interrogate", ["POST"], response_model=M.InterrogateResponse,
           responses={501: {"description": "model not available in this build"}})
    async def interrogate(body: M.InterrogateRequest):
        model = body.model.strip().lower()
        if model in ("deepdanbooru", "deepbooru"):
            raise _error(501, None, "deepdanbooru is not available in this build; use model 'clip'")
        if model not in INTERROGATE_MODELS:
            raise _error(404, "model", f"Model not found: {body.model!r}; choose one of: "
                                       f"{', '.join(INTERROGATE_MODELS)}")
        mode = "classic" if model == "clip" else model
        if importlib.util.find_spec("pipelines.interrogate") is None:
            raise _error(501, None, "interrogation is not available in this build")
        try:
            image = await run_in_threadpool(lambda: decode_image(body.image, "image").convert("RGB"))
            it = await run_in_threadpool(lambda: services.interrogator)
            clip, caption = await run_in_threadpool(services.interrogate_models, body.clip_model, body.caption_model)
            # Progress and interrupt reach the running queue job through the services' interrogator listener.
            result = await state.run(lambda control: it.interrogate(image, mode, clip_model=clip, caption_model=caption),
                                     f"api interrogate ({mode})")
        except Interrupted:
            return {"caption": None}
        except Exception as err:
            raise http_error(err) from None
        return {"caption": result.prompt}

    # ------------------------------------------------------------------ progress, interrupt, skip
    @route("/progress", ["GET"], response_model=M.ProgressResponse)
    def progress(skip_current_image: bool = False):
        job = queue.current
        pending = queue.pending
        if job is None:
            state_ = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                      "job_count": pending, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                      "sampling_steps": 0, "queue_pending": pending}
            return {"progress": 0.0, "eta_relative": 0.0, "state": state_, "current_image": None, "textinfo": None}
        snap = job.control.snapshot()
        from datetime import datetime

        state_ = {
            "skipped": job.control.skipped.is_set(),
            "interrupted": job.control.interrupted.is_set(),
            "stopping_generation": False,
            "job": job.label,
            "job_count": max(1, snap.images),
            "job_timestamp": datetime.fromtimestamp(job.submitted).strftime("%Y%m%d%H%M%S"),
            "job_no": snap.image,
            "sampling_step": snap.step,
            "sampling_steps": snap.steps,
            "queue_pending": pending,
        }
        current = None if skip_current_image else state.preview_b64(job, snap)
        return {"progress": max(0.01, min(1.0, snap.fraction)), "eta_relative": float(snap.eta_seconds or 0.0),
                "state": state_, "current_image": current, "textinfo": snap.text or job.label}

    @route("/interrupt", ["POST"])
    def interrupt() -> dict:
        queue.interrupt_current()
        return {}

    @route("/skip", ["POST"])
    def skip() -> dict:
        queue.skip_current()
        return {}

    # ------------------------------------------------------------------ options
    def current_options() -> dict:
        values = state.store.values()
        active = manager.active
        values["sd_model_checkpoint"] = active.info.title if active else (values["sd_model_checkpoint"] or None)
        values["sd_checkpoint_hash"] = active.info.sha256 if active else None
        for key, opt in BY_KEY.items():
            if opt.outdir is not None:
                values[key] = state.store.output_path(key)
        return values

    @route("/options", ["GET"], response_model=OptionsResponse)
    def get_options():
        return current_options()

    @route("/options", ["POST"])
    async def set_options(body: OptionsRequest):
        try:
            checked = state.store.check(body.model_dump(exclude_unset=True))
            vae = checked.get("sd_vae")
            if vae is not None:
                checked["sd_vae"] = vae = state.check_vae(vae or "Automatic", "sd_vae")
            ckpt = checked.pop("sd_model_checkpoint", None)
            if ckpt:
                mf = state.find_checkpoint(ckpt, "sd_model_checkpoint")
                wanted_vae = vae if vae is not None else state.store.get("sd_vae")

                def switch(control):
                    manager.load(mf)
                    manager.set_vae(wanted_vae)

                await state.run(switch, f"api: load {mf.title}")
                checked["sd_model_checkpoint"] = mf.title
            elif vae is not None and manager.active is not None:
                await state.run(lambda control: manager.set_vae(vae), f"api: VAE {vae}")
            await run_in_threadpool(state.store.update, checked)
        except Exception as err:
            raise http_error(err) from None
        return None

    @route("/cmd-flags", ["GET"], response_model=dict[str, Any])
    def cmd_flags():
        out: dict[str, Any] = {}
        for key, value in vars(services.args).items():
            if key in SECRET_FLAGS:
                value = "<hidden>" if value else None
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, (list, tuple)):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[key] = value
        return out

    # ------------------------------------------------------------------ lists
    @route("/samplers", ["GET"], response_model=list[M.SamplerItem])
    def get_samplers():
        out = []
        for s in samplers.SAMPLERS:
            options: dict[str, Any] = {}
            if s.default_schedule != "Automatic":
                options["scheduler"] = s.default_schedule.lower().replace(" ", "_")
            if s.name in ("Heun", "DPM2", "DPM2 a"):
                options["second_order"] = True
            out.append({"name": s.name, "aliases": list(s.aliases), "options": options})
        return out

    @route("/schedulers", ["GET"], response_model=list[M.SchedulerItem])
    def get_schedulers():
        return [{"name": n.lower().replace(" ", "_"), "label": n, "aliases": None, "default_rho": None,
                 "need_inner_model": False} for n in samplers.SCHEDULE_NAMES]

    @route("/sd-models", ["GET"], response_model=list[M.SDModelItem])
    def get_sd_models():
        return [{"title": m.title, "model_name": m.model_name, "hash": m.shorthash, "sha256": m.sha256,
                 "filename": str(m.path), "config": None} for m in registry.checkpoints]

    @route("/sd-vae", ["GET"], response_model=list[M.SDVaeItem])
    def get_sd_vae():
        return [{"model_name": m.name, "filename": str(m.path)} for m in registry.vaes]

    extras.add_routes(route, state, http_error)   # /upscalers, /latent-upscale-modes, /extra-*-image(s)

    @route("/prompt-styles", ["GET"], response_model=list[M.PromptStyleItem])
    def get_prompt_styles():
        db = state.styles()
        if db is None:
            return []
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in (db.get(n) for n in db.names()) if s is not None]

    @route("/embeddings", ["GET"], response_model=M.EmbeddingsResponse)
    def get_embeddings():
        networks = state.networks()
        if networks is None:
            return {"loaded": {}, "skipped": {}}
        return networks.embedding_list(manager.active.pipe if manager.active else None)

    @route("/loras", ["GET"], response_model=list[M.LoraItem])
    def get_loras():
        networks = state.networks()
        if networks is None:
            return []
        return networks.lora_list()

    @route("/refresh-loras", ["POST"])
    def refresh_loras():
        networks = state.networks()
        if networks is not None:
            networks.refresh()
        return None

    @route("/refresh-embeddings", ["POST"])
    def refresh_embeddings():
        return refresh_loras()

    @route("/hypernetworks", ["GET"], response_model=list[M.HypernetworkItem])
    def get_hypernetworks():
        return []

    @route("/face-restorers", ["GET"], response_model=list[M.FaceRestorerItem])
    def get_face_restorers():
        return []

    @route("/realesrgan-models", ["GET"], response_model=list[M.RealesrganItem])
    def get_realesrgan_models():
        return []

    def selectable_scripts(mode: str) -> list:
        hooks = state.services.engine.hooks
        return [s for s in hooks.scripts if mode in s.modes and s.owner not in hooks.disabled]

    @route("/scripts", ["GET"], response_model=M.ScriptsList)
    def get_scripts():
        """A1111's lists: script names in lower case, the selectable ones (script_name) and always-on ones."""
        alwayson = ["controlnet"] if state.controlnet_supported() else []
        return {mode: [s.title.lower() for s in selectable_scripts(mode)] + alwayson for mode in ("txt2img", "img2img")}

    @route("/script-info", ["GET"], response_model=list[dict[str, Any]])
    def get_script_info():
        return [{"name": s.title.lower(), "is_alwayson": False, "is_img2img": mode == "img2img",
                 "args": [{"label": label} for label in s.args]}
                for mode in ("txt2img", "img2img") for s in selectable_scripts(mode)]

    @route("/extensions", ["GET"], response_model=list[dict[str, Any]])
    def get_extensions():
        """A1111's shape (no git details: extensions here are folders, not necessarily clones); no paths."""
        manager_ = state.services.extensions
        rows = manager_.status_rows() if manager_ is not None else []
        return [{"name": r["id"], "remote": None, "branch": None, "commit_hash": None, "commit_date": None,
                 "version": r["version"], "enabled": r["enabled"], "status": r["status"]} for r in rows]

    @route("/memory", ["GET"], response_model=M.MemoryResponse)
    def get_memory():
        return {"ram": _ram(), "cuda": _cuda(manager.policy.device)}

    # ------------------------------------------------------------------ model management
    @route("/refresh-checkpoints", ["POST"])
    def refresh_checkpoints():
        registry.refresh()
        return None

    @route("/refresh-vae", ["POST"])
    def refresh_vae():
        registry.refresh()
        return None

    @route("/unload-checkpoint", ["POST"])
    async def unload_checkpoint():
        def work(control):
            if manager.active is not None:
                state.last_checkpoint = manager.active.info.title
            manager.unload()

        await state.run(work, "api: unload checkpoint")
        return {}

    @route("/reload-checkpoint", ["POST"])
    async def reload_checkpoint():
        if manager.active is not None:
            return {}
        try:
            wanted = state.last_checkpoint or state.store.get("sd_model_checkpoint")
            if wanted:
                mf = state.find_checkpoint(wanted, "sd_model_checkpoint")
            elif registry.checkpoints:
                mf = registry.checkpoints[0]
            else:
                raise NotFound("sd_model_checkpoint", "no checkpoint found to load; put one in "
                                                      f"{registry.paths.dirs('checkpoints')[0]}")
            await state.run(lambda control: manager.load(mf), f"api: load {mf.title}")
        except Exception as err:
            raise http_error(err) from None
        return {}

    # ------------------------------------------------------------------ ControlNet (sd-webui-controlnet routes)
    @router.get("/controlnet/version", tags=["controlnet"])
    def controlnet_version():
        if not state.controlnet_supported():
            raise _error(501, None, "ControlNet is not available in this build")
        return {"version": 2}

    @router.get("/controlnet/model_list", response_model=M.ControlNetModelList, tags=["controlnet"])
    def controlnet_model_list(update: bool = True):
        if not state.controlnet_supported():
            return {"model_list": []}
        registry_ = manager.controlnets.registry
        if update:
            registry_.refresh()
        return {"model_list": [cf.title for cf in registry_.models]}

    @router.get("/controlnet/module_list", response_model=M.ControlNetModuleList, tags=["controlnet"])
    def controlnet_module_list(alias_names: bool = False):
        if not state.controlnet_supported():
            return {"module_list": [], "module_detail": {}}
        from pipelines.controlnet.preprocessors import PREPROCESSORS, preprocessor_names

        names = preprocessor_names()
        return {"module_list": names, "module_detail": {n: _module_detail(PREPROCESSORS[n]) for n in names}}

    router.api_state = state  # tests and other front ends can reach the options
    return router


# ---------------------------------------------------------------------------------------------- lists

def _module_detail(pre) -> dict:
    sliders = []
    for slider in (pre.resolution, pre.threshold_a, pre.threshold_b):
        if slider is not None:
            sliders.append({"name": slider.label, "value": slider.default, "min": slider.minimum,
                            "max": slider.maximum, "step": slider.step})
    return {"model_free": False, "sliders": sliders}   # no model-free (reference-only) modes in this build


# ---------------------------------------------------------------------------------------------- memory

def _ram() -> dict:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    except Exception as err:  # noqa: BLE001 - psutil missing or unsupported platform
        return {"error": f"{type(err).__name__}: {err}", "platform": platform.system()}


def _cuda(device: str) -> dict:
    if not str(device).startswith("cuda"):
        return {"error": f"the device is {device}, not CUDA"}
    try:
        import torch

        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        stats = torch.cuda.memory_stats(index)
        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": stats.get("active_bytes.all.current", 0), "peak": stats.get("active_bytes.all.peak", 0)},
            "allocated": {"current": stats.get("allocated_bytes.all.current", 0),
                          "peak": stats.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": stats.get("reserved_bytes.all.current", 0),
                         "peak": stats.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": stats.get("inactive_split_bytes.all.current", 0),
                         "peak": stats.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}
