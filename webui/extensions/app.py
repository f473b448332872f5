"""The extensions' side of the running app: loading them for the services, their generations through the
app's job queue, their API routes on the FastAPI app. Kept apart from the loader (which knows only folders,
manifests and hooks) so that the app's services can use it without an import cycle."""
from __future__ import annotations

import threading
from typing import Any, Protocol

from pipelines.core.errors import UserError

from .loader import ExtensionManager


class Services(Protocol):
    """What the loader uses of the app's services (webui.app.services.Services satisfies it). Declared here so
    that the loader does not import the app module that imports it (no services <-> loader import cycle)."""
    args: Any
    engine: Any          # pipelines.generate.engine.Engine (its .hooks is the extensions' registry)
    queue: Any           # pipelines.core.jobs.JobQueue


def attach(services: Services) -> ExtensionManager:
    """Load the extensions for `services` (the registry is `services.engine.hooks`) and let them run
    generations through the app's queue (`ExtensionHooks.generate`)."""
    hooks = services.engine.hooks
    manager = ExtensionManager.from_args(services.args, hooks)
    hooks.submit = lambda mode, req, **kw: submit_generation(services, mode, req, **kw)
    manager.load_all()
    return manager


def submit_generation(services: Services, mode: str, req, *, images=None, mask=None, save: bool = True):
    """One generation through the queue, waited for. Refused on the queue's own thread (a hook calling
    it would wait for itself forever)."""
    if threading.current_thread().name.startswith("jobs-"):
        raise RuntimeError("ext.generate() was called from inside a running job (a hook); use run_generation "
                           "to run several generations in one job")
    engine = services.engine
    if mode == "txt2img":
        fn = lambda control: engine.txt2img(req, control, save=save)   # noqa: E731
    elif mode == "img2img":
        if not images:
            raise UserError("img2img needs init images")
        fn = lambda control: engine.img2img(req, images, mask, control, save=save)   # noqa: E731
    else:
        raise ValueError(f"mode must be txt2img or img2img, not {mode!r}")
    return services.queue.submit(fn, label=f"extension {mode}: {req.prompt[:40]}").wait()


def add_api_routes(app, services: Services, access) -> None:
    """Extensions' routes on the FastAPI app (HTTP Basic like the API when API credentials are set)."""
    from fastapi import Depends

    hooks = services.engine.hooks
    deps = [Depends(access.api_dependency())] if access is not None and access.api_enabled else []
    for route in hooks.routes:
        try:
            app.add_api_route(route.path, route.endpoint, methods=list(route.methods), dependencies=deps,
                              tags=[f"extension: {route.owner}"])
        except Exception as err:   # noqa: BLE001 - a bad route disables its extension, not the app
            hooks.record_failure(route.owner, f"add_api_route {route.path}", err)
