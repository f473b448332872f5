"""One process, one port: a FastAPI app with the API router (when --api) and the Gradio UI mounted on it.

    app = create_app(services, access, demo)      # demo: gr.Blocks or None (--nowebui)
    server = start_server(app, host, port)        # uvicorn in a thread; returns once it answers

The API engineer's `webui/api/routes.py` provides `create_api_router(services)`; its routes are included
before the UI mount (a mount at "/" would otherwise shadow them) and protected by the same
credentials through `AccessControl.api_dependency()` (HTTP Basic).
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from .auth import AccessControl
from .authgate import AuthGate
from .guard import HostOriginGuard, HostPolicy
from .imports import ImportGate
from .limits import GRADIO_CACHE_CLEANUP, Limits
from .services import Services

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
PORT_TRIES = 100
SHARE_WAIT_SECONDS = 15.0


def port_is_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` (0.0.0.0 also checks 127.0.0.1 is not taken)."""
    hosts = [host] + (["127.0.0.1"] if host == "0.0.0.0" else [])
    for h in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((h, port))
            except OSError:
                return False
    return True


def find_port(host: str, wanted: int | None) -> int:
    """An explicit `wanted` port, or an error naming it when it is taken (clients would otherwise talk to
    whatever holds it); without one, 7860 or the next free port after it."""
    if wanted:
        if not port_is_free(host, wanted):
            raise OSError(f"--port {wanted} is taken on {host} (another app, or this one still running?): "
                          "stop what holds it, or pass another --port")
        return wanted
    start = DEFAULT_PORT
    for port in range(start, min(start + PORT_TRIES, 65536)):
        if port_is_free(host, port):
            if port != start:
                log.info("port %d is taken; using %d", start, port)
            return port
    raise OSError(f"no free port in {start}-{start + PORT_TRIES - 1}; pass --port with a free one")


def api_router(services: Services, access: AccessControl):
    """The /sdapi/v1 router from webui/api/routes.py when it exists, else None."""
    if importlib.util.find_spec("webui.api.routes") is None:
        log.warning("--api: webui/api/routes.py is not present in this build; no API routes are served")
        return None
    from ..api import routes as api

    factory = api.create_api_router
    kwargs: dict[str, Any] = {}
    params = inspect.signature(factory).parameters
    if "access" in params:
        kwargs["access"] = access
    return factory(services, **kwargs)


def create_app(services: Services, access: AccessControl, demo=None, *, api: bool = False,
               css: str | None = None, js: str | None = None, port: int | None = None, head: str | None = None):
    """FastAPI app: API routes first (HTTP Basic when credentials are set), extensions' routes, then the UI
    at '/'. `head`: extra HTML for the page's <head> (extensions' scripts)."""
    from fastapi import Depends, FastAPI

    app = FastAPI(title="Stable Diffusion web UI", docs_url="/docs" if api else None, redoc_url=None,
                  openapi_url="/openapi.json" if api else None)
    app.state.services = services
    app.state.access = access
    if api:
        router = api_router(services, access)
        if router is not None:
            deps = [Depends(access.api_dependency())] if access.api_enabled else []
            app.include_router(router, dependencies=deps)
    hooks = getattr(services.engine, "hooks", None)
    if hooks is not None:   # extensions' add_api_route (before the UI mount, which would shadow them)
        from ..extensions.app import add_api_routes

        add_api_routes(app, services, access)
    if demo is not None:
        import gradio as gr

        args = services.args
        limits = getattr(services, "limits", None) or Limits()
        demo.queue(default_concurrency_limit=8, max_size=limits.queue_max)
        demo.delete_cache = GRADIO_CACHE_CLEANUP   # read by mount_gradio_app: hourly, files older than a day
        gr.mount_gradio_app(app, demo, path="", auth=access.gradio_auth(),
                            auth_message="Log in to the Stable Diffusion web UI", ssr_mode=False,
                            allowed_paths=[str(services.saver.root)], show_error=True, css=css, js=js,
                            max_file_size=limits.max_upload_bytes,
                            footer_links=["api"] if api else [], run_history=False, head=head,
                            server_name="0.0.0.0" if args.listen else "127.0.0.1",
                            server_port=port or getattr(args, "port", None) or DEFAULT_PORT)
    if hooks is not None:
        hooks.app_started(app)
        _ui_mount_last(app)
    # Outermost (added last): every route, the UI's and extensions' included, sits behind the Host/Origin checks.
    app.add_middleware(ImportGate, ui_login=access.enabled)   # engine requests wait for the start-up imports (no half-imported diffusers)
    app.add_middleware(AuthGate, access=access, router=app.router)   # Basic on every non-UI route, login limit
    policy = HostPolicy.from_args(services.args)
    app.state.host_policy = policy
    app.add_middleware(HostOriginGuard, policy=policy)
    return app


def _ui_mount_last(app) -> None:
    """Routes an extension adds in app_started come after the UI's mount at '/', which would shadow them."""
    from starlette.routing import Mount

    routes = app.router.routes
    mounts = [r for r in routes if isinstance(r, Mount) and r.path in ("", "/")]
    routes[:] = [r for r in routes if r not in mounts] + mounts


@dataclass
class RunningServer:
    server: Any          # uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app, host: str, port: int, *, timeout: float = 60.0) -> RunningServer:
    """Serve `app` with uvicorn in a thread; returns once it accepts connections."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the web server could not start on {host}:{port} (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the web server did not start within {timeout:.0f}s")
        time.sleep(0.02)
    return RunningServer(server, thread, host, port)


def start_share_tunnel(port: int, *, wait: float = SHARE_WAIT_SECONDS, announce=print,
                       on_url=None) -> threading.Thread:
    """Ask Gradio's share server for a public link in the background; never blocks serving.

    Offline (or when the share server cannot be reached) it says why and the app keeps serving locally.
    `on_url(url)` is called with the link once it exists (before it is announced).
    """
    result: dict[str, Any] = {}

    def work():
        try:
            from gradio import networking

            result["url"] = networking.setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
            if on_url is not None:   # the share host becomes an accepted Host/Origin
                on_url(result["url"])
            if result.get("announced_late"):
                announce(f"Public share link (late): {result['url']}")
        except Exception as err:  # noqa: BLE001 - any failure means "no share link", never a crash
            cause = err.__cause__ or err
            result["error"] = f"{err}" + (f" ({type(cause).__name__}: {cause})" if cause is not err else "")

    thread = threading.Thread(target=work, name="share-tunnel", daemon=True)
    thread.start()

    def watch():
        thread.join(wait)
        if "url" in result:
            announce(f"Public share link: {result['url']}  (anyone with the link and the password can use the app)")
        elif "error" in result:
            announce(f"Could not create a share link: {result['error']}. "
                     f"The app keeps serving locally on port {port}.")
        else:
            result["announced_late"] = True
            announce(f"The share link is not ready after {wait:.0f}s (no internet?); the app keeps serving "
                     f"locally on port {port} and will print the link if it comes.")

    watcher = threading.Thread(target=watch, name="share-watch", daemon=True)
    watcher.start()
    return watcher
