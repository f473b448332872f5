"""What the txt2img and img2img tabs share: the prompt row, the common settings, the results column, one
queued job per click with live progress, and the tools around the prompt (styles, presets, extra
networks, reading parameters from a dropped image, ControlNet units).

A tab subclasses `GenerationTab`, lays out its own settings with these builders (every widget comes
from `widgets.make_widget`, i.e. from the parameter declarations), and implements `submit` (queue the
job for a validated request) and, when its result is not a `GenerationResult`, `finish`.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.core.errors import Interrupted
from pipelines.params.declarations import BY_NAME, make_request

from .common import (
    EMPTY_COUNTER, TOAST_SECONDS, PasteTarget, errors_to_ui, format_seconds, progress_html, toast_warnings, token_counter_html,
    user_error,
)
from .widgets import coerce, make_widget, params_for, schedule_choices

if TYPE_CHECKING:
    from .context import UIContext

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
EXT_PREFIX = "ext__"   # extensions' parameters among the Generate inputs (never clash with other inputs)
LAYOUT_SIZE = ("width", "height")
LAYOUT_BATCH = ("n_iter", "batch_size")
LAYOUT_VARIATION = ("subseed", "subseed_strength")
# Placed by the shared builders; every other parameter of a mode is placed by its tab or lands in
# "Advanced", so a new declaration always gets a widget.
SHARED_NAMED = ("prompt", "negative_prompt", "styles", "sampler_name", "scheduler", "steps", "cfg_scale", "seed",
                *LAYOUT_SIZE, *LAYOUT_BATCH, *LAYOUT_VARIATION)


class GenerationTab:
    """Base of the txt2img and img2img tabs. `MODE` is the mode of the parameter declarations and the
    elem_id prefix; `TITLE` the tab's label."""

    MODE = "txt2img"
    TITLE = "txt2img"
    OUTPUT_KIND = "txt2img-images"

    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx
        self.services = ctx.services
        self.fields: dict[str, Any] = {}
        self.ext_fields: dict[str, Any] = {}   # extensions' parameters (add_param) → request.extra
        self.send_buttons: dict[str, Any] = {}
        self.controlnet = None                 # ControlNetPanel when ControlNet is available
        self.presets = None                    # PresetControls
        self.networks = None                   # ExtraNetworks
        self.styles_editor = None              # StylesEditor
        self._jobs: dict[str, Any] = {}        # session → its current job (interrupt/skip act on it)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ widgets
    def _w(self, name: str, **kw):
        """The widget of parameter `name`, starting at the UI's default (presets/defaults.json)."""
        p = BY_NAME[name]
        start = self.ctx.start_values.get(name, p.default)
        if "value" not in kw and start != p.default:
            kw["value"] = list(start) if isinstance(start, tuple) else start
        comp = make_widget(p, elem_prefix=self.MODE, **kw)
        self.fields[name] = comp
        return comp

    def build_toprow(self, tools=None) -> None:
        """Prompt and negative prompt with token counters; Generate, Interrupt, Skip; tool buttons
        (read parameters from an image, then `tools()`), styles and the preset picker."""
        from .presets import PresetControls

        m = self.MODE
        with gr.Row(elem_id=f"{m}_toprow", equal_height=False):
            with gr.Column(scale=6):
                with gr.Group(elem_classes="prompt-box"):
                    self.prompt_counter = gr.HTML(EMPTY_COUNTER, elem_id=f"{m}_token_counter",
                                                  elem_classes="token-counter-box", padding=False)
                    self._w("prompt", lines=3, max_lines=8, show_label=False,
                            placeholder="Prompt (Ctrl+Enter to generate; drop a PNG here to use its parameters)",
                            container=False)
                with gr.Group(elem_classes="prompt-box"):
                    self.neg_counter = gr.HTML(EMPTY_COUNTER, elem_id=f"{m}_negative_token_counter",
                                               elem_classes="token-counter-box", padding=False)
                    self._w("negative_prompt", lines=2, max_lines=6, show_label=False,
                            placeholder="Negative prompt", container=False)
            with gr.Column(scale=1, min_width=240, elem_id=f"{m}_actions"):
                self.generate = gr.Button("Generate", variant="primary", elem_id=f"{m}_generate", size="lg",
                                          elem_classes="generate-button")
                with gr.Row(elem_id=f"{m}_interrupt_row"):
                    self.interrupt = gr.Button("Interrupt", elem_id=f"{m}_interrupt", size="sm", min_width=60)
                    self.skip = gr.Button("Skip", elem_id=f"{m}_skip", size="sm", min_width=60)
                with gr.Row(elem_id=f"{m}_tools", elem_classes="tool-row"):
                    # ↙ reads an infotext pasted into the prompt box (A1111), else opens the hidden upload's
                    # picker; a PNG dropped on the prompt goes to that upload too (static/page.js).
                    self.paste = gr.Button("↙", elem_id=f"{m}_paste", size="sm", elem_classes="tool", min_width=40)
                    self.paste_image = gr.UploadButton("↙", file_types=["image"], type="filepath", size="sm",
                                                       elem_id=f"{m}_paste_image", elem_classes="paste-upload",
                                                       min_width=40)
                    if tools is not None:
                        tools()
        with gr.Row(elem_id=f"{m}_styles_row"):
            if "styles" in BY_NAME:
                self._w("styles", choices=self.ctx.style_names(), scale=3)
            self.presets = PresetControls(self)
            self.presets.build_dropdown(scale=2)
        self.presets.build_description()

    def build_sampling(self) -> None:
        with gr.Row():
            self._w("sampler_name", scale=2)
            self._w("scheduler", scale=2)
        self._w("steps")

    def build_size(self, extra_tool=None) -> None:
        m = self.MODE
        with gr.Row(elem_id=f"{m}_size_row"):
            with gr.Column(scale=4, min_width=160):
                self._w("width")
                self._w("height")
            with gr.Column(scale=0, min_width=44, elem_classes="tool-column"):
                self.swap = gr.Button("⇅", elem_id=f"{m}_swap_size", min_width=42, size="sm", elem_classes="tool")
                if extra_tool is not None:
                    extra_tool()
            with gr.Column(scale=3, min_width=140):
                self._w("n_iter")
                self._w("batch_size")

    def build_cfg_seed(self) -> None:
        m = self.MODE
        self._w("cfg_scale")
        with gr.Row(elem_id=f"{m}_seed_row"):
            self._w("seed", scale=4)
            self.dice = gr.Button("⚄", elem_id=f"{m}_random_seed", scale=0, min_width=42, elem_classes="tool")
            self.recycle = gr.Button("♻", elem_id=f"{m}_reuse_seed", scale=0, min_width=42, elem_classes="tool")
        with gr.Accordion("Variation seed", open=False):
            with gr.Row():
                for name in LAYOUT_VARIATION:
                    self._w(name)

    def build_advanced(self, placed: tuple[str, ...] = ()) -> None:
        named = set(SHARED_NAMED) | set(placed)
        rest = [p for p in params_for(self.MODE, exclude_groups=("model",)) if p.name not in named]
        if rest:
            with gr.Accordion("Advanced", open=False, elem_id=f"{self.MODE}_advanced"):
                for p in rest:
                    self._w(p.name)

    def build_extras(self) -> None:
        """Extra networks picker, preset management, ControlNet units (when the engine has them), the
        extensions' parameters (one accordion per section)."""
        from .extensions import extension_widgets
        from .controlnet import ControlNetPanel, controlnet_available
        from .presets import ExtraNetworks
        from .styles import StylesEditor

        self.ext_fields = extension_widgets(self.ctx, self.MODE)

        self.networks = ExtraNetworks(self)
        self.networks.build()
        self.presets.build_manager()
        self.styles_editor = StylesEditor(self)
        self.styles_editor.build()
        units = int(getattr(self.ctx.args, "controlnet_units", 3) or 0)
        if units > 0 and controlnet_available(self.services):
            self.controlnet = ControlNetPanel(self, units)
            self.controlnet.build()

    def build_results(self) -> None:
        m = self.MODE
        with gr.Column(scale=1, elem_id=f"{m}_results"):
            self.progress = gr.HTML("", elem_id=f"{m}_progress", padding=False)
            self.gallery = gr.Gallery(label="Output", elem_id=f"{m}_gallery", columns=2, height=460,
                                      format="png", interactive=False, object_fit="contain", preview=True)
            with gr.Row(elem_id=f"{m}_result_buttons", elem_classes="result-buttons"):
                self.open_folder = gr.Button("Open folder", elem_id=f"{m}_open_folder", size="sm",
                                             visible=self.ctx.can_open_folder, min_width=80)
                self.save = gr.DownloadButton("Save", elem_id=f"{m}_save", size="sm", value=None,
                                              interactive=False, min_width=60)
                # One button per tab that takes a result (wired in `wire()` once all tabs exist).
                self.send_buttons = {name: gr.Button(f"Send to {label}", size="sm", min_width=80,
                                                     elem_id=f"{m}_send_to_{name}")
                                     for name, label in self.send_targets()}
            self.infotext = gr.Textbox(label="Generation parameters", elem_id=f"{m}_infotext",
                                       interactive=False, lines=4, max_lines=12, buttons=["copy"])
            self.outpath = gr.Markdown(self._outdir_text(), elem_id=f"{m}_outdir")
        self.result_state = gr.State({})   # {"paths": [...], "infotexts": [...], "seeds": [...], "index": 0}

    def send_targets(self) -> list[tuple[str, str]]:
        """(target name, button label) for the result's send-to buttons: the image tabs, then PNG Info."""
        return [(name, name) for name in self.ctx.paste.image_tabs] + [("pnginfo", "PNG Info")]

    def finish_build(self, image=None, **target_kw) -> None:
        missing = [p.name for p in params_for(self.MODE, exclude_groups=("model",)) if p.name not in self.fields]
        assert not missing, f"{self.MODE} has no widget for {missing}"
        self.ctx.paste.add(PasteTarget(self.MODE, self.tab, {**self.fields, **self.ext_fields}, image, tab_id=self.MODE,
                                       label=self.MODE, controlnet=self.controlnet, **target_kw))
        self._events()

    def _outdir_text(self) -> str:
        return f"Images are saved in `{self.services.saver.folder(self.OUTPUT_KIND).parent}`"

    # ------------------------------------------------------------------ events
    def generation_inputs(self) -> dict[str, Any]:
        """Components whose values `run` receives (by keyword)."""
        inputs = {"checkpoint": self.ctx.checkpoint, "vae": self.ctx.vae, **self.fields,
                  **{EXT_PREFIX + name: comp for name, comp in self.ext_fields.items()}}
        if self.controlnet is not None:
            inputs.update(self.controlnet.inputs())
        return inputs

    def _events(self) -> None:
        f = self.fields
        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        for box, counter in ((f["prompt"], self.prompt_counter), (f["negative_prompt"], self.neg_counter)):
            box.change(token_counter_html, inputs=[box, f["steps"]], outputs=counter, trigger_mode="always_last",
                       **quiet)
        f["sampler_name"].change(self._schedules, inputs=[f["sampler_name"], f["scheduler"]], outputs=f["scheduler"],
                                 **quiet)
        self.swap.click(lambda w, h: (h, w), inputs=[f["width"], f["height"]], outputs=[f["width"], f["height"]],
                        **quiet)
        self.dice.click(lambda: -1, outputs=f["seed"], **quiet)
        self.recycle.click(self._last_seed, inputs=[self.result_state, f["seed"]], outputs=f["seed"], **quiet)
        outputs = [self.gallery, self.progress, self.infotext, self.result_state, self.save]
        # Ctrl+Enter in the page clicks the visible tab's Generate (ui.LOAD_JS).
        self.generate.click(self.run, inputs_kwargs=self.generation_inputs(), outputs=outputs, show_progress="hidden",
                            concurrency_limit=64, concurrency_id="generate", api_name=self.MODE)
        self.interrupt.click(self._interrupt, queue=False, api_visibility="private")
        self.skip.click(self._skip, queue=False, api_visibility="private")
        self.gallery.select(self._select, inputs=self.result_state,
                            outputs=[self.infotext, self.result_state, self.save],
                            **quiet)
        self.open_folder.click(self._open_folder, inputs=self.result_state, api_visibility="private",
                               concurrency_limit=None)
        self.networks.wire()
        if self.controlnet is not None:
            self.controlnet.wire()

    def wire(self) -> None:
        """Connect what needs every tab built: send-to buttons, dropped images, presets."""
        ctx = self.ctx
        # Images go to the tabs that take one; the parameters alone to txt2img.
        ctx.paste.wire_buttons(self.send_buttons,
                               lambda button, target: ctx.wire_send(button, self.result_state, target),
                               accepts=lambda target: target.image is not None or target.name == "txt2img")
        own = ctx.paste.targets[self.MODE]
        outputs = ctx.paste_outputs(own, False)
        self.paste_image.upload(self._paste_from_image, inputs=self.paste_image, outputs=outputs,
                                show_progress="hidden", api_visibility="private")
        # The file picker must open in the click itself (a browser only allows it during a user gesture).
        pick = (f"(prompt) => {{ if (!window.webuiHasInfotext(prompt)) window.webuiPickPasteImage('{self.MODE}'); "
                f"return prompt; }}")
        self.paste.click(self._paste_from_prompt, inputs=self.fields["prompt"], outputs=outputs, js=pick,
                         show_progress="hidden", api_visibility="private")
        self.presets.wire()
        if self.styles_editor is not None:
            self.styles_editor.wire()

    def _paste_from_image(self, path: str | None):
        """A PNG dropped on the prompt (or picked with ↙): its parameters fill this tab's fields."""
        from .pnginfo import paste_updates, read_image_info

        target = self.ctx.paste.targets[self.MODE]
        with errors_to_ui():
            text, _ = read_image_info(path)
        if not text:
            raise gr.Error("This image has no generation parameters to read")
        return paste_updates(self.ctx, target, text, None, with_image=False)

    def _paste_from_prompt(self, prompt: str | None):
        """↙ with an infotext in the prompt box (copied from a web page or another UI): every field it names
        is set, the prompt box keeps only the prompt. Without one the page opened the file picker."""
        from .pnginfo import looks_like_infotext, paste_updates

        target = self.ctx.paste.targets[self.MODE]
        if not looks_like_infotext(prompt):
            return tuple(gr.update() for _ in self.ctx.paste_outputs(target, False))
        return paste_updates(self.ctx, target, prompt, None, with_image=False)

    @staticmethod
    def _schedules(sampler: str, schedule: str):
        names = schedule_choices(sampler)
        if names is None:
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
        index = max(0, int(index or 0))
        if not infotexts or index >= len(infotexts):   # nothing yet, or a ControlNet map after the images
            return gr.update(), state, gr.update()
        state["index"] = index
        path = paths[index] if index < len(paths) else None
        return infotexts[index], state, gr.update(value=path, interactive=path is not None)

    def _open_folder(self, state: dict):
        paths = (state or {}).get("paths") or []
        folder = Path(paths[0]).parent if paths else self.services.saver.folder(self.OUTPUT_KIND).parent
        if self.ctx.open_folder(folder):
            gr.Info(f"Opened {folder}", duration=TOAST_SECONDS)
        else:
            gr.Info(f"Output folder: {folder}", duration=TOAST_SECONDS)

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
        fields = {name: coerce(name, values[name]) for name in self.fields if name in values}
        fields["sd_model_checkpoint"] = values.get("checkpoint") or ""
        fields["sd_vae"] = values.get("vae") or "Automatic"
        hooks = self.services.engine.hooks   # extensions' parameters → request.extra
        fields.update({p.name: coerce(p, values[EXT_PREFIX + p.name]) for p in hooks.params
                       if EXT_PREFIX + p.name in values})
        return make_request(fields, extra_params=hooks.params)

    def controlnet_units(self, values: dict[str, Any]) -> list | None:
        """The enabled ControlNet units of the panel (checked), or None."""
        if self.controlnet is None:
            return None
        return self.controlnet.units_from(values) or None

    def submit(self, req, values: dict[str, Any]):
        """Queue the job for `req` (UserError for unusable input); returns the Job."""
        raise NotImplementedError

    def run(self, request: gr.Request = None, **values):
        """Generator: queue the job, stream queue position / progress / previews, then the images."""
        with errors_to_ui():
            req = self.request_from(values)
            self.ctx.require_model(req.sd_model_checkpoint)
            job = self.submit(req, values)
        yield from self.follow(job, request)

    def follow(self, job, request=None):
        g, prog = self.gallery, self.progress
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
        yield self.finish(job.result)

    def finish(self, result) -> dict:
        """The final updates for a GenerationResult: images (+ ControlNet maps), infotext, state, Save."""
        g, prog, info, state, save = self.gallery, self.progress, self.infotext, self.result_state, self.save
        images = [str(p) for p in result.paths] if len(result.paths) == len(result.images) else list(result.images)
        images += list(getattr(result, "control_maps", None) or [])
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
        done += notices_text(result.notices)
        first_path = new_state["paths"][0] if new_state["paths"] else None
        return {g: images or None, prog: progress_html(done, state="done"),
                info: result.infotexts[0] if result.infotexts else "",
                state: new_state, save: gr.update(value=first_path, interactive=first_path is not None)}


def notices_text(notices) -> str:
    """What the user should know about a finished job (also shown as a toast each)."""
    notices = list(dict.fromkeys(notices or []))
    toast_warnings(notices)
    return "".join(f"\nNote: {n}" for n in notices)
