"""The Gradio Blocks app: top bar (checkpoint, VAE, status), the tabs, and the wiring between them."""
from __future__ import annotations

import html
import logging
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.errors import UserError

from ..app.auth import AccessControl
from ..app.services import Services
from .common import TOAST_SECONDS, progress_html, user_error
from .context import IMAGE_TABS, POLL_SECONDS, UIContext, no_model_message  # noqa: F401 - re-exported
from .widgets import make_widget

log = logging.getLogger(__name__)

# The page's style and script (Ctrl+Enter, Ctrl+Up/Down emphasis, a PNG dropped on the prompt, ↙, tooltips, the
# light/dark toggle) live in static files; `webui.__main__` hands them to Gradio (css= / js=).
STATIC = Path(__file__).parent / "static"
CSS = (STATIC / "style.css").read_text(encoding="utf-8")
LOAD_JS = (STATIC / "page.js").read_text(encoding="utf-8")


def footer_markdown(args) -> str:
    """The API docs link (FastAPI's /docs exists only with --api / --nowebui)."""
    if getattr(args, "api", False):
        return "[API docs](/docs) (AUTOMATIC1111's /sdapi/v1) · [Gradio API](/?view=api)"
    return "API: start with `--api` for AUTOMATIC1111's /sdapi/v1 and its docs at /docs"


def no_model_markdown(services: Services, download: bool) -> str:
    dirs = services.paths.dirs("checkpoints")
    where = "\n".join(f"- `{d}`" for d in dirs)
    text = (f"### No checkpoint found\nPut a Stable Diffusion checkpoint (`.safetensors`, `.ckpt`, or a diffusers "
            f"folder) in one of these folders, then press ⟳ next to the checkpoint list:\n{where}\n\n"
            f"Already have AUTOMATIC1111? Start with `--models-dir /path/to/stable-diffusion-webui/models` to use "
            f"its models folder as is (or `--ckpt-dir` for a folder of checkpoints).")
    if download:
        text += "\n\nOr download the default model (Stable Diffusion 1.5, about 4 GB, sha256 checked):"
    return text


class TopBar:
    """Checkpoint + refresh, VAE, and a status line that follows loading progress."""

    def __init__(self, ctx: UIContext):
        self.ctx = ctx
        self._progress = ("", 1.0)
        ctx.services.manager.add_listener(self._on_progress)
        self._download_lock = threading.Lock()
        self._load_jobs: list = []          # checkpoint loads started from the UI, while they run
        self._failure: str | None = None    # why the last load from the UI failed

    def _on_progress(self, stage: str, fraction: float) -> None:
        self._progress = (stage, fraction)

    def _busy(self) -> bool:
        self._load_jobs = [j for j in self._load_jobs if not j.done.is_set()]
        return self.ctx.loading() or bool(self._load_jobs)

    def status_html(self) -> str:
        """Loading: the manager's stage with a progress bar; else what is active, or why nothing is."""
        m = self.ctx.services.manager
        if self._busy():
            stage, frac = self._progress
            text = m.status or "loading"
            return f"<div class='model-status'>{progress_html(text, frac if frac < 1 else None, state='running')}</div>"
        startup = self.ctx.startup_job
        if self._failure:
            text = self._failure
        elif m.active is None and startup is not None and startup.error is not None:
            text = f"Loading the checkpoint failed: {startup.error}"
        elif m.active is not None:
            text = m.status if m.status.startswith(m.active.info.title) else f"{m.active.info.title} ready"
        else:
            text = "no model loaded"
        return f"<div class='model-status'>{html.escape(text)}</div>"

    def build(self) -> None:
        ctx = self.ctx
        titles = ctx.checkpoint_titles()
        with gr.Row(elem_id="topbar"):
            ctx.checkpoint = make_widget("sd_model_checkpoint", choices=titles, value=ctx.current_checkpoint(),
                                         elem_id="sd_checkpoint", scale=4, allow_custom_value=False)
            self.refresh = gr.Button("⟳", elem_id="refresh_checkpoints", scale=0, min_width=42,
                                     elem_classes="tool")
            ctx.vae = make_widget("sd_vae", choices=ctx.vae_choices(), value="Automatic", elem_id="sd_vae", scale=2)
            self.status = gr.HTML(self.status_html(), elem_id="model_status", scale=3, padding=False)
            self.theme = gr.Button("◐", elem_id="theme_toggle", scale=0, min_width=42, elem_classes="tool")
        download = not ctx.args.no_download
        with gr.Group(visible=not titles, elem_classes="no-model", elem_id="no_model_box") as self.no_model:
            self.help = gr.Markdown(no_model_markdown(ctx.services, download))
            self.download = gr.Button("Download default model", elem_id="download_default_model",
                                      visible=download, variant="primary", size="sm")
            self.download_status = gr.HTML("", elem_id="download_status")

    def events(self, demo) -> None:
        ctx = self.ctx
        load = ctx.checkpoint.change(self.load_checkpoint, inputs=ctx.checkpoint,
                                     outputs=[self.status, ctx.checkpoint], show_progress="hidden",
                                     api_name="load_checkpoint", concurrency_limit=None)
        ctx.vae.change(self.set_vae, inputs=ctx.vae, outputs=self.status, show_progress="hidden",
                       api_visibility="private", concurrency_limit=None)
        refresh = self.refresh.click(self.refresh_models, outputs=[ctx.checkpoint, ctx.vae, self.no_model],
                                     show_progress="hidden", api_name="refresh_checkpoints", concurrency_limit=None)
        self.download.click(self.download_default, outputs=[self.download_status, ctx.checkpoint, self.no_model],
                            show_progress="hidden", api_visibility="private", concurrency_limit=None)
        self.theme.click(None, js="() => window.webuiToggleTheme && window.webuiToggleTheme()", queue=False,
                         api_visibility="private")
        startup = demo.load(self.follow_startup, outputs=[self.status, ctx.checkpoint], show_progress="hidden",
                            api_visibility="private", concurrency_limit=None)
        # Panels whose content depends on the active checkpoint (ControlNet models of its architecture)
        # refresh once a load or the start-up load is over, not only when their ⟳ is pressed.
        for fn, inputs, outputs in ctx.model_listeners:
            for event in (load, refresh, startup):
                event.then(fn, inputs=inputs, outputs=outputs, show_progress="hidden", api_visibility="private",
                           queue=False)

    # ------------------------------------------------------------------ handlers
    def follow_startup(self):
        """On page load: follow the initial checkpoint load, then settle the dropdown on what is active."""
        ctx = self.ctx
        while ctx.loading():
            yield self.status_html(), gr.update()
            if ctx.startup_job is not None:
                ctx.startup_job.done.wait(POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
        job = ctx.startup_job
        if job is not None and job.error is not None and not getattr(job, "error_shown", False):
            gr.Warning(f"Loading the checkpoint failed: {job.error}")
        current = ctx.current_checkpoint()
        yield self.status_html(), gr.update(choices=ctx.checkpoint_titles(), value=current)

    def load_checkpoint(self, title: str | None):
        ctx, services = self.ctx, self.ctx.services
        if not title:
            yield self.status_html(), gr.update()
            return
        active = services.manager.active
        if active is not None and active.info.title == title:
            yield self.status_html(), gr.update()
            return
        if ctx.loading() and ctx.current_checkpoint() == title:
            return  # the startup load is bringing this one in
        job = services.submit(lambda: services.manager.load(title), label=f"load {title}")
        self._load_jobs.append(job)
        while not job.done.wait(POLL_SECONDS):
            pos = services.queue.position(job)
            if pos > 0:
                yield progress_html(f"Loading {title} after {pos} queued job(s)", state="queued"), gr.update()
            else:
                yield self.status_html(), gr.update()
        if job.error is not None:
            keep = services.manager.active.info.title if services.manager.active else None
            self._failure = f"Could not load {title}: {job.error}" + (f"; {keep} stays active" if keep else "")
            gr.Warning(self._failure)
            yield self.status_html(), gr.update(value=keep)
            return
        self._failure = None
        loaded = services.manager.active
        new_title = loaded.info.title if loaded else title
        update = gr.update(choices=ctx.checkpoint_titles(), value=new_title) if new_title != title else gr.update()
        yield self.status_html(), update

    def set_vae(self, name: str):
        services = self.ctx.services
        if services.manager.active is None:
            return self.status_html()  # applied with the next generation
        job = services.submit(lambda: services.manager.set_vae(name), label=f"VAE {name}")
        try:
            job.wait()
        except Exception as err:
            raise user_error(err) from err
        return self.status_html()

    def refresh_models(self):
        ctx = self.ctx
        ctx.services.registry.refresh()
        titles = ctx.checkpoint_titles()
        current = ctx.current_checkpoint()
        vaes = ctx.vae_choices()
        gr.Info(f"{len(titles)} checkpoint(s), {len(vaes) - 2} VAE(s) found", duration=TOAST_SECONDS)
        return (gr.update(choices=titles, value=current if current in titles else None),
                gr.update(choices=vaes), gr.update(visible=not titles))

    def download_default(self):
        """Download the SD 1.5 checkpoint with a progress bar, then list and load it."""
        from pipelines.core.download import download_default_model, format_progress

        ctx, services = self.ctx, self.ctx.services
        if not self._download_lock.acquire(blocking=False):
            raise gr.Error("A download is already running")
        try:
            state: dict[str, Any] = {"done": 0, "total": None, "path": None, "error": None}
            folder = services.paths.dirs("checkpoints")[0]

            def work():
                try:
                    state["path"] = download_default_model(folder, progress=lambda d, t: state.update(done=d, total=t))
                except Exception as err:  # shown below
                    state["error"] = err

            thread = threading.Thread(target=work, name="download-default-model", daemon=True)
            thread.start()
            while thread.is_alive():
                total = state["total"]
                yield (progress_html(f"Downloading: {format_progress(state['done'], total)}",
                                     state["done"] / total if total else None, state="running"),
                       gr.update(), gr.update())
                thread.join(0.5)
            if state["error"] is not None:
                err = state["error"]
                message = f"{err} into {folder}" if str(err).endswith("by hand") else str(err)
                yield progress_html(f"Download failed: {message}", state="failed"), gr.update(), gr.update()
                raise user_error(type(err)(message) if isinstance(err, UserError) else err)
            services.registry.refresh()
            title = ctx.find_checkpoint(state["path"].name)
            yield (progress_html(f"Downloaded to {state['path']}", state="done"),
                   gr.update(choices=ctx.checkpoint_titles(), value=title), gr.update(visible=False))
        finally:
            self._download_lock.release()


def build_ui(services: Services, access: AccessControl, *, startup_job=None,
             startup_title: str | None = None) -> gr.Blocks:
    """The whole UI. `startup_job` is the initial checkpoint load (the status line follows it); when the
    load is submitted after the UI is up, pass `startup_title` now and set `demo.ui_context.startup_job`."""
    from .extras import ExtrasTab
    from .history import HistoryTab
    from .img2img import Img2ImgTab
    from .interrogate import InterrogateTab, interrogate_available
    from .pnginfo import PngInfoTab
    from .txt2img import Txt2ImgTab

    from .pnginfo import paste_updates

    ctx = UIContext(services, access, startup_job=startup_job, paste_sender=paste_updates,
                    startup_title=startup_title or getattr(startup_job, "target_title", None))
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False) as demo:
        topbar = TopBar(ctx)
        topbar.build()
        with gr.Tabs(elem_id="tabs") as ctx.tabs:
            tabs: dict[str, Any] = {"txt2img": Txt2ImgTab(ctx), "img2img": Img2ImgTab(ctx), "extras": ExtrasTab(ctx),
                                    "pnginfo": PngInfoTab(ctx)}
            if interrogate_available():
                tabs["interrogate"] = InterrogateTab(ctx)
            tabs["history"] = HistoryTab(ctx)
            for tab in tabs.values():
                tab.build()
            ctx.tab_objects = {**tabs, "topbar": topbar}
            # extensions' tabs (add_tab), then the Extensions tab (status, enable/disable, install)
            from .extensions import ExtensionsTab, build_extension_tabs

            ctx.tab_objects["extension_tabs"] = build_extension_tabs(ctx)
            ctx.tab_objects["extensions"] = ExtensionsTab(ctx)
            ctx.tab_objects["extensions"].build()
        gr.Markdown(footer_markdown(ctx.args), elem_id="footer_links")
        for tab in tabs.values():
            tab.wire()
        topbar.events(demo)
        if ctx.preset_dropdowns:
            from .presets import preset_lists

            demo.load(ctx.when_ready(lambda: preset_lists(ctx)), outputs=ctx.preset_dropdowns, show_progress="hidden",
                      api_visibility="private", concurrency_limit=None)
    demo.ui_context = ctx  # for tests and extensions
    return demo
