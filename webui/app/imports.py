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
    imports are complete. With a UI login, a UI request without Gradio's session cookie goes straight on
    (Gradio refuses it; it must not wait, nor make anyone wait). API credentials were checked outside."""

    def __init__(self, app, ui_login: bool = False):
        self.app = app
        self.ui_login = ui_login

    def _gated(self, scope) -> bool:
        path = scope.get("path", "")
        if scope.get("method", "GET") not in GATED_METHODS or path.endswith(UNGATED_PATHS):
            return False
        if self.ui_login and path.startswith("/gradio_api/"):
            cookies = dict(scope.get("headers", [])).get(b"cookie", b"")
            return b"access-token" in cookies
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _done.is_set() and self._gated(scope):
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(ensure_engine_imports)
        return await self.app(scope, receive, send)


def start_background_imports() -> threading.Thread:
    """No start-up load to do them (--ui-debug-mode, no checkpoint): import in the background now, so the
    first request rarely waits."""
    thread = threading.Thread(target=ensure_engine_imports, name="engine-imports", daemon=True)
    thread.start()
    return thread
