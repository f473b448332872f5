"""`python -m webui [flags]` (what `python launch.py` runs): parse flags, serve the UI (and API), load a model.

Order matters for start-up time: the web server answers as soon as the UI is built; the checkpoint
loads afterwards as the first job on the device queue, and the status line follows it. A missing
model never stops the app: it starts and says where to put one.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

log = logging.getLogger("webui")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn.access", "PIL", "matplotlib", "multipart",
                  "python_multipart", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def startup_checkpoint(services, args):
    """The checkpoint to load at start: --ckpt, else the first one found; None (with a reason) otherwise."""
    from pipelines.core.errors import UserError

    registry = services.registry
    if args.ckpt:
        try:
            return registry.find_checkpoint(args.ckpt), None
        except UserError as err:
            return None, f"--ckpt {args.ckpt!r}: {err}"
    if registry.checkpoints:
        return registry.checkpoints[0], None
    from .ui.blocks import no_model_message

    return None, no_model_message(services)


def report_startup_load(job) -> None:
    """Say on the console how the initial checkpoint load ended (the UI status line says it too)."""
    from pipelines.core.errors import UserError

    job.done.wait()
    if job.error is None:
        return
    if isinstance(job.error, UserError):
        log.error("loading the checkpoint failed: %s", job.error)
    else:
        log.error("loading the checkpoint failed", exc_info=job.error)


def warm_tokenizer() -> None:
    """Build the CLIP tokenizer in the background so the first token count answers at once."""
    try:
        from pipelines.models.tokenizers import clip_tokenizer

        from .app.imports import ensure_engine_imports

        ensure_engine_imports()   # the tokenizer imports transformers: never beside a request's imports

        clip_tokenizer()
    except Exception:  # noqa: BLE001 - only a warm-up; the counter reports its own errors
        log.debug("tokenizer warm-up failed", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from .app.cli import parse_args

    args = parse_args(argv)
    configure_logging(os.environ.get("WEBUI_LOG_LEVEL", "INFO"))

    from .app.auth import AuthConfigError, access_control, is_exposed

    try:
        access = access_control(args)
    except AuthConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from .app.services import create_services

    try:
        services = create_services(args)
    except ValueError as err:  # e.g. --device cuda on a machine without CUDA
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("%s", services.manager.policy.describe())

    ckpt = None
    if args.ui_debug_mode:
        log.info("--ui-debug-mode: no checkpoint is loaded")
    else:
        ckpt, why = startup_checkpoint(services, args)
        if ckpt is None:
            log.warning("%s", why)

    demo = None
    from .ui.blocks import CSS, LOAD_JS

    if not args.nowebui:
        from .ui.blocks import build_ui

        demo = build_ui(services, access, startup_title=ckpt.title if ckpt else None)
    from .app.server import create_app, find_port, start_server, start_share_tunnel

    host = "0.0.0.0" if args.listen else "127.0.0.1"
    try:
        port = find_port(host, args.port)
        from .extensions.loader import page_assets

        ext_css, ext_head = page_assets(services)   # extensions' style.css and javascript/*.js
        app = create_app(services, access, demo, api=args.api or args.nowebui, css=CSS + ext_css, js=LOAD_JS,
                         port=port, head=ext_head or None)
        server = start_server(app, host, port)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        services.close()
        return 1
    ready = time.perf_counter() - T0
    if ckpt is not None:
        # The checkpoint loads once the UI answers (the two would share the CPU otherwise); it is the
        # first job on the queue and the status line follows it.
        if demo is not None:
            # The tokenizer warm-up goes first on the queue rather than in a thread beside the load: both
            # import transformers, and two threads importing it at once can fail ("cannot import name
            # 'CLIPImageProcessor' from 'transformers'"). The load needs that import anyway.
            services.submit(warm_tokenizer, label="warm up the tokenizer", bounded=False)
        from .app.imports import ensure_engine_imports

        def startup_load():
            ensure_engine_imports()   # complete before any request may use them (see webui/app/imports.py)
            return services.manager.load(ckpt)

        job = services.submit(startup_load, label=f"load {ckpt.title}", bounded=False)
        job.target_title = ckpt.title
        if demo is not None:
            demo.ui_context.startup_job = job
        threading.Thread(target=report_startup_load, args=(job,), name="startup-load", daemon=True).start()

    url = server.local_url
    print(f"Running on local URL:  {url}" + ("  (listening on all interfaces)" if args.listen else ""), flush=True)
    notice = access.console_notice()
    if notice:
        print(notice, flush=True)
    if access.enabled and not access.generated_password:
        print("Login required (credentials from --auth/--auth-file).", flush=True)
    if args.enable_insecure_extension_access:
        print("WARNING: --enable-insecure-extension-access: whoever can use the UI can install extensions "
              "(run code on this machine).", flush=True)
    elif is_exposed(args):
        print("Exposed mode: installing extensions from the UI is disabled.", flush=True)
    print(f"Startup time: {ready:.1f}s", flush=True)
    if args.share:
        from urllib.parse import urlsplit

        start_share_tunnel(port, announce=lambda msg: print(msg, flush=True),
                           on_url=lambda url: app.state.host_policy.allow(urlsplit(url).netloc))
    if args.autolaunch:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    if demo is not None and ckpt is None:   # (the engine's imports first, see warm_tokenizer)
        threading.Thread(target=warm_tokenizer, name="warm-tokenizer", daemon=True).start()
    elif ckpt is None:
        from .app.imports import start_background_imports

        start_background_imports()

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.is_set() and server.thread.is_alive():
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    print("Shutting down: queued jobs are dropped, the running one is interrupted", flush=True)
    services.queue.stop(timeout=5)
    server.stop(timeout=5)
    services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
