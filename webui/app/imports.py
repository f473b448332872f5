"""The engine's heavy imports, done once and completely before any request can use them.

diffusers (and transformers) expose their classes through lazy modules: the first `diffusers.X` imports
the submodule behind it. Two threads doing that at once can see a half-initialised module ("module
'diffusers' has no attribute 'EulerAncestralDiscreteScheduler'" on the first /sdapi/v1/txt2img while
the start-up load was importing the pipeline classes). So every class the engine reaches by name is
resolved here under one lock: the start-up load job does it first, and `ImportGate` makes each request
that can run engine code wait until it is done (the page itself and read-only routes answer at once,
so the UI still appears within a few seconds of start).
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

_lock = threading.Lock()
_done = threading.Event()

# Requests that never touch the engine's libraries pass the gate at once.
UNGATED_PATHS = ("/login", "/gradio_api/upload", "/sdapi/v1/interrupt", "/sdapi/v1/skip")
GATED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _class_names() -> set[str]:
    """Every diffusers class the engine looks up by name (from the engine's own tables)."""
    from pipelines.generate import samplers
    from pipelines.models import loading, manager

    names = {s.cls_name for s in samplers.SAMPLERS}
    names |= set(getattr(loading, "_PIPELINE_CLASSES", {}).values())
    names |= set(getattr(manager, "_MODE_CLASSES", {}).values())
    try:
        from pipelines.controlnet import pipeline as controlnet_pipeline

        names |= set(getattr(controlnet_pipeline, "_CONTROLNET_PIPELINES", {}).values())
    except ImportError:
        pass
    return names | {"AutoencoderKL", "AutoencoderTiny", "ControlNetModel"}


def ensure_engine_imports() -> None:
    """Import diffusers' and transformers' classes the engine uses (idempotent; other callers wait)."""
    if _done.is_set():
        return
    with _lock:
        if _done.is_set():
            return
        started = time.perf_counter()
        import diffusers
        import transformers

        for name in sorted(_class_names()):
            if not hasattr(diffusers, name):
                log.warning("diffusers has no %s (this diffusers version lacks it)", name)
        for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"):
            getattr(transformers, name)
        _done.set()
        log.debug("engine imports done in %.1fs", time.perf_counter() - started)


def imports_done() -> bool:
    return _done.is_set()


class ImportGate:
    """ASGI middleware: a request that can run engine code waits (off the event loop) until the engine's
    imports are complete."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and not _done.is_set() and scope.get("method", "GET") in GATED_METHODS
                and not scope.get("path", "").endswith(UNGATED_PATHS)):
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(ensure_engine_imports)
        return await self.app(scope, receive, send)
