"""The txt2img tab: widgets from the parameter declarations, one queued job per click, live progress."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.errors import Interrupted, UserError
from pipelines.params import BY_NAME, make_request

from .ui_common import (EMPTY_COUNTER, PasteTarget, errors_to_ui, format_seconds, progress_html,
                        token_counter_html, user_error)
from .widgets import coerce, make_widget, params_for

if TYPE_CHECKING:
    from .ui import UIContext

log = logging.getLogger(__name__)

MODE = "txt2img"
POLL_SECONDS = 0.25

# Where each declared parameter sits; any txt2img parameter not named here lands in "Advanced", so a
# new declaration always gets a widget.
LAYOUT_PROMPT = ("prompt", "negative_prompt")
LAYOUT_SAMPLING = ("sampler_name", "scheduler", "steps")
LAYOUT_HIRES = (("hr_upscaler", "hr_second_pass_steps", "denoising_strength"), ("hr_scale", "hr_resize_x", "hr_resize_y"))
LAYOUT_SIZE = ("width", "height")
LAYOUT_BATCH = ("n_iter", "batch_size")
LAYOUT_VARIATION = ("subseed", "subseed_strength")
LAYOUT_NAMED = set(("styles",) + LAYOUT_PROMPT + LAYOUT_SAMPLING + LAYOUT_HIRES[0] + LAYOUT_HIRES[1] + LAYOUT_SIZE + LAYOUT_BATCH
                   + LAYOUT_VARIATION + ("cfg_scale", "seed", "enable_hr"))


class Txt2ImgTab:
    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx
        self.services = ctx.services
        self.fields: dict[str, Any] = {}
        self._jobs: dict[str, Any] = {}        # session → its current job (interrupt/skip act on it)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ layout
    def _w(self, name: str, **kw):
        comp = make_widget(BY_NAME[name], elem_prefix=MODE, **kw)
        self.fields[name] = comp
        return comp

    def build(self) -> None:
        with gr.Tab("txt2img", id=MODE, elem_id="tab_txt2img") as self.tab:
            with gr.Row(elem_id="txt2img_toprow"):
                with gr.Column(scale=6):
                    with gr.Group(elem_classes="prompt-box"):
                        self.prompt_counter = gr.HTML(EMPTY_COUNTER, elem_id="txt2img_token_counter",
                                                      elem_classes="token-counter-box", padding=False)
                        self._w("prompt", lines=3, max_lines=8, show_label=False,
                                placeholder="Prompt (Ctrl+Enter to generate)", container=False)
                    with gr.Group(elem_classes="prompt-box"):
                        self.neg_counter = gr.HTML(EMPTY_COUNTER, elem_id="txt2img_negative_token_counter",
                                                   elem_classes="token-counter-box", padding=False)
                        self._w("negative_prompt", lines=2, max_lines=6, show_label=False,
                                placeholder="Negative prompt", container=False)
                with gr.Column(scale=1, min_width=200, elem_id="txt2img_actions"):
                    self.generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate", size="lg")
                    with gr.Row(elem_id="txt2img_interrupt_row"):
                        self.interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt", size="sm", min_width=60)
                        self.skip = gr.Button("Skip", elem_id="txt2img_skip", size="sm", min_width=60)
                    if "styles" in BY_NAME:
                        self._w("styles", choices=self.ctx.style_names())
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, elem_id="txt2img_settings"):
                    with gr.Row():
                        self._w("sampler_name", scale=2)
                        self._w("scheduler", scale=2)
                    self._w("steps")
                    with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hires"):
                        self._w("enable_hr")
                        for row in LAYOUT_HIRES:
                            with gr.Row():
                                for name in row:
                                    self._w(name)
                    with gr.Row(elem_id="txt2img_size_row"):
                        with gr.Column(scale=4, min_width=160):
                            self._w("width")
                            self._w("height")
                        self.swap = gr.Button("⇅", elem_id="txt2img_swap_size", scale=0, min_width=42,
                                              size="sm", elem_classes="tool")
                        with gr.Column(scale=3, min_width=140):
                            self._w("n_iter")
                            self._w("batch_size")
                    self._w("cfg_scale")
                    with gr.Row(elem_id="txt2img_seed_row"):
                        self._w("seed", scale=4)
                        self.dice = gr.Button("⚄", elem_id="txt2img_random_seed", scale=0, min_width=42,
                                              elem_classes="tool")
                        self.recycle = gr.Button("♻", elem_id="txt2img_reuse_seed", scale=0, min_width=42,
                                                 elem_classes="tool")
                    with gr.Accordion("Variation seed", open=False):
                        with gr.Row():
                            for name in LAYOUT_VARIATION:
                                self._w(name)
                    rest = [p for p in params_for(MODE, exclude_groups=("model",)) if p.name not in LAYOUT_NAMED]
                    if rest:
                        with gr.Accordion("Advanced", open=False):
                            for p in rest:
                                self._w(p.name)
                with gr.Column(scale=1, elem_id="txt2img_results"):
                    self.progress = gr.HTML("", elem_id="txt2img_progress", padding=False)
                    self.gallery = gr.Gallery(label="Output", elem_id="txt2img_gallery", columns=2, height=460,
                                              format="png", interactive=False, object_fit="contain",
                                              preview=True)
                    with gr.Row(elem_id="txt2img_result_buttons"):
                        self.open_folder = gr.Button("Open folder", elem_id="txt2img_open_folder", size="sm",
                                                     visible=self.ctx.can_open_folder)
                        self.save = gr.DownloadButton("Save", elem_id="txt2img_save", size="sm", value=None,
                                                      interactive=False)
                        # Send-to buttons exist only for tabs that take an image (img2img, inpaint); none
                        # is created for a tab that is not there. Wired in `wire()` once all tabs exist.
                        self.send_buttons = {name: gr.Button(f"Send to {name}", size="sm",
                                                             elem_id=f"txt2img_send_to_{name}")
                                             for name in self.ctx.paste.image_tabs}
                    self.infotext = gr.Textbox(label="Generation parameters", elem_id="txt2img_infotext",
                                               interactive=False, lines=4, max_lines=12, buttons=["copy"])
                    self.outpath = gr.Markdown(self._outdir_text(), elem_id="txt2img_outdir")
            self.result_state = gr.State({})   # {"paths": [...], "infotexts": [...], "seeds": [...], "index": 0}
        missing = [p.name for p in params_for(MODE, exclude_groups=("model",)) if p.name not in self.fields]
        assert not missing, f"txt2img has no widget for {missing}"
        self.ctx.paste.add(PasteTarget(MODE, self.tab, dict(self.fields), tab_id=MODE))
        self._events()

    def _outdir_text(self) -> str:
        return f"Images are saved in `{self.services.saver.folder('txt2img-images').parent}`"

    # ------------------------------------------------------------------ events
    def _events(self) -> None:
        ctx = self.ctx
        for box, counter in ((self.fields["prompt"], self.prompt_counter),
                             (self.fields["negative_prompt"], self.neg_counter)):
            box.change(token_counter_html, inputs=[box, self.fields["steps"]], outputs=counter,
                       trigger_mode="always_last", queue=False, show_progress="hidden", api_visibility="private")
        self.fields["sampler_name"].change(self._schedules, inputs=[self.fields["sampler_name"], self.fields["scheduler"]],
                                           outputs=self.fields["scheduler"], queue=False, show_progress="hidden",
                                           api_visibility="private")
        self.swap.click(lambda w, h: (h, w), inputs=[self.fields["width"], self.fields["height"]],
                        outputs=[self.fields["width"], self.fields["height"]], queue=False, show_progress="hidden",
                        api_visibility="private")
        self.dice.click(lambda: -1, outputs=self.fields["seed"], queue=False, show_progress="hidden",
                        api_visibility="private")
        self.recycle.click(self._last_seed, inputs=[self.result_state, self.fields["seed"]],
                           outputs=self.fields["seed"], queue=False, show_progress="hidden", api_visibility="private")
        inputs = {"checkpoint": ctx.checkpoint, "vae": ctx.vae, **self.fields}
        outputs = [self.gallery, self.progress, self.infotext, self.result_state, self.save]
        gen = dict(fn=self.run, inputs_kwargs=inputs, outputs=outputs, show_progress="hidden",
                   concurrency_limit=64, concurrency_id="generate")
        self.generate.click(api_name="txt2img", **gen)   # Ctrl+Enter in the page clicks Generate (ui.LOAD_JS)
        self.interrupt.click(self._interrupt, queue=False, api_visibility="private")
        self.skip.click(self._skip, queue=False, api_visibility="private")
        self.gallery.select(self._select, inputs=self.result_state, outputs=[self.infotext, self.result_state, self.save],
                            queue=False, show_progress="hidden", api_visibility="private")
        self.open_folder.click(self._open_folder, inputs=self.result_state, queue=False, api_visibility="private")

    def wire(self) -> None:
        """Connect send-to buttons once every tab is built (called by the app builder)."""
        for name, button in self.send_buttons.items():
            target = self.ctx.paste.targets.get(name)
            if target is None or target.image is None:
                button.visible = False
                continue
            self.ctx.wire_send_image(button, self.result_state, target)

    @staticmethod
    def _schedules(sampler: str, schedule: str):
        from pipelines.samplers import schedules_for

        try:
            names = schedules_for(sampler)
        except UserError:
            return gr.update()
        return gr.update(choices=names, value=schedule if schedule in names else "Automatic")

    @staticmethod
    def _last_seed(state: dict, current):
        seeds = (state or {}).get("seeds") or []
        if not seeds:
            return current
        idx = min(max(0, (state or {}).get("index", 0)), len(seeds) - 1)
        return seeds[idx]

    def _select(self, state: dict, evt: gr.SelectData):
        return self._selected_outputs(state, getattr(evt, "index", 0) if evt is not None else 0)

    def _selected_outputs(self, state: dict, index: int):
        state = dict(state or {})
        infotexts, paths = state.get("infotexts") or [], state.get("paths") or []
        if not infotexts:
            return gr.update(), state, gr.update()
        index = min(max(0, int(index or 0)), len(infotexts) - 1)
        state["index"] = index
        path = paths[index] if index < len(paths) else None
        return infotexts[index], state, gr.update(value=path, interactive=path is not None)

    def _open_folder(self, state: dict):
        paths = (state or {}).get("paths") or []
        folder = Path(paths[0]).parent if paths else self.services.saver.folder("txt2img-images").parent
        if not self.ctx.open_folder(folder):
            gr.Info(f"Output folder: {folder}")

    # ------------------------------------------------------------------ generation
    def _session(self, request) -> str:
        return getattr(request, "session_hash", None) or "default"

    def _interrupt(self, request: gr.Request):
        with self._lock:
            job = self._jobs.get(self._session(request))
        if job is None or job.done.is_set():
            gr.Info("Nothing of yours is running")
            return
        self.services.queue.cancel(job)

    def _skip(self, request: gr.Request):
        with self._lock:
            job = self._jobs.get(self._session(request))
        if job is None or job.state != "running":
            gr.Info("Nothing of yours is running")
            return
        job.control.skip()

    def request_from(self, values: dict[str, Any]):
        """Widget values (+ checkpoint/VAE from the top bar) → a validated GenerationRequest."""
        fields = {name: coerce(name, values[name]) for name in self.fields}
        fields["sd_model_checkpoint"] = values.get("checkpoint") or ""
        fields["sd_vae"] = values.get("vae") or "Automatic"
        return make_request(fields)

    def run(self, request: gr.Request = None, **values):
        """Generator: queue the job, stream queue position / progress / previews, then the images."""
        g, prog, info, state, save = self.gallery, self.progress, self.infotext, self.result_state, self.save
        with errors_to_ui():
            req = self.request_from(values)
            self.ctx.require_model(req.sd_model_checkpoint)
        job = self.services.submit_txt2img(req)
        session = self._session(request)
        with self._lock:
            self._jobs[session] = job
        yield {prog: progress_html("Queued", 0.0, state="queued")}
        last_preview = 0
        last_html = None
        try:
            while not job.done.wait(POLL_SECONDS):
                pos = self.services.queue.position(job)
                if pos > 0:
                    html = progress_html(f"Waiting in the queue: {pos} job{'s' if pos != 1 else ''} ahead of yours",
                                         0.0, state="queued")
                    update = {prog: html}
                else:
                    snap = job.control.snapshot()
                    html = progress_html(snap.text or "Starting…", snap.fraction, snap.eta_seconds, state="running")
                    update = {prog: html}
                    if snap.preview is not None and snap.preview_id != last_preview:
                        last_preview = snap.preview_id
                        update[g] = [snap.preview]
                if update.get(prog) != last_html or g in update:
                    last_html = update[prog]
                    yield update
        finally:
            with self._lock:
                if self._jobs.get(session) is job:
                    del self._jobs[session]
        if job.error is not None:
            if isinstance(job.error, Interrupted):
                yield {prog: progress_html("Cancelled before it started", state="done"), g: None}
                return
            err = user_error(job.error)
            yield {prog: progress_html(f"Failed: {err.message}", state="failed")}
            raise err
        result = job.result
        images = [str(p) for p in result.paths] if len(result.paths) == len(result.images) else list(result.images)
        new_state = {"paths": [str(p) for p in result.paths], "infotexts": list(result.infotexts),
                     "seeds": list(result.seeds), "index": 0}
        if result.interrupted:
            done = f"Interrupted: {len(result.images)} image(s) kept"
        else:
            done = f"Done: {len(result.images)} image(s) in {format_seconds(result.seconds)}"
        if result.skipped:
            done += f", {result.skipped} skipped"
        if result.paths:
            done += f" · saved to {Path(result.paths[0]).parent}"
        first_path = new_state["paths"][0] if new_state["paths"] else None
        yield {g: images or None, prog: progress_html(done, state="done"),
               info: result.infotexts[0] if result.infotexts else "",
               state: new_state, save: gr.update(value=first_path, interactive=first_path is not None)}
