"""Extras tab: upscale one image, a batch of uploads or a folder (`pipelines.upscale.extras`).

As A1111's Extras: Single Image / Batch Process / Batch from Directory; Scale by (a factor) or Scale to (width x
height, optionally cropped to fit); Upscaler 1 and Upscaler 2 blended in with its visibility. Results are saved
in outputs/extras-images with A1111's `postprocessing` parameters (a folder batch writes `<name>.<format>` into
its output folder, and skips inputs already done). The work is a job on the one queue: its progress shows each
tile; Interrupt stops between tiles.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.errors import UserError

from .common import errors_to_ui, progress_html, user_error

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
SOURCES = ("single", "batch", "folder")
MAX_UPLOADS = 64


class ExtrasTab:
    def __init__(self, ctx: Any):   # blocks.UIContext (not imported: the tabs stay out of blocks' import cycle)
        self.ctx = ctx
        self.services = ctx.services

    @property
    def upscalers(self):
        return self.services.engine.upscalers

    # ------------------------------------------------------------------ layout
    def build(self) -> None:
        names = self.upscalers.names()
        with gr.Tab("Extras", id="extras", elem_id="tab_extras") as self.tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    self.source = gr.State("single")
                    with gr.Tabs(elem_id="extras_source"):
                        with gr.Tab("Single Image", id="extras_single") as single:
                            self.image = gr.Image(label="Source", type="pil", sources=["upload", "clipboard"],
                                                  elem_id="extras_image", height=360, image_mode="RGB")
                        with gr.Tab("Batch Process", id="extras_batch") as batch:
                            self.files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                                 elem_id="extras_files")
                        with gr.Tab("Batch from Directory", id="extras_folder") as folder:
                            self.input_dir = gr.Textbox(label="Input directory", elem_id="extras_input_dir")
                            self.output_dir = gr.Textbox(label="Output directory (empty: outputs/extras-images)",
                                                         elem_id="extras_output_dir")
                            self.show_results = gr.Checkbox(label="Show result images", value=True,
                                                            elem_id="extras_show_results")
                    for tab, name in zip((single, batch, folder), SOURCES):
                        tab.select(lambda n=name: n, outputs=self.source, queue=False, show_progress="hidden",
                                   api_visibility="private")
                    self.resize_mode = gr.Radio(label="Resize", choices=[("Scale by", 0), ("Scale to", 1)], value=0,
                                                elem_id="extras_resize_mode")
                    with gr.Row():
                        self.scale_by = gr.Slider(1.0, 8.0, value=2.0, step=0.05, label="Resize",
                                                  elem_id="extras_upscaling_resize")
                        self.width = gr.Slider(64, 8192, value=512, step=8, label="Width", elem_id="extras_width")
                        self.height = gr.Slider(64, 8192, value=512, step=8, label="Height", elem_id="extras_height")
                        self.crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_crop")
                    with gr.Row():
                        self.upscaler_1 = gr.Dropdown(label="Upscaler 1", choices=names, value="None",
                                                      elem_id="extras_upscaler_1")
                        self.upscaler_2 = gr.Dropdown(label="Upscaler 2", choices=names, value="None",
                                                      elem_id="extras_upscaler_2")
                        self.refresh = gr.Button("⟳", elem_id="extras_refresh", scale=0, min_width=42,
                                                 elem_classes="tool")
                    self.visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                                elem_id="extras_upscaler_2_visibility")
                with gr.Column(scale=1):
                    self.run_button = gr.Button("Generate", variant="primary", elem_id="extras_generate", size="lg")
                    self.progress = gr.HTML("", elem_id="extras_progress", padding=False)
                    self.gallery = gr.Gallery(label="Result", elem_id="extras_gallery", columns=2, height=420)
                    self.info = gr.HTML("", elem_id="extras_info")
        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        self.refresh.click(self.refreshed, outputs=[self.upscaler_1, self.upscaler_2], **quiet)
        self.run_button.click(
            self.run, inputs=[self.source, self.image, self.files, self.input_dir, self.output_dir, self.show_results,
                              self.resize_mode, self.scale_by, self.width, self.height, self.crop, self.upscaler_1,
                              self.upscaler_2, self.visibility],
            outputs=[self.progress, self.gallery, self.info], show_progress="hidden", api_visibility="private",
            concurrency_limit=8)

    def wire(self) -> None:
        """Nothing to connect to the other tabs yet (send-to-extras is not built)."""

    def refreshed(self):
        self.upscalers.refresh()
        names = self.upscalers.names()
        return gr.update(choices=names), gr.update(choices=names)

    # ------------------------------------------------------------------ run
    def submit(self, source: str, image, files, input_dir: str, output_dir: str, req):
        """Queue the job for the chosen source; UserError when it has nothing to work on."""
        from pipelines.upscale import extras

        ups, saver = self.upscalers, self.services.saver
        extras.check(req, ups)
        if source == "folder":
            if self.ctx.exposed:
                raise UserError("Batch folders are disabled while the app is exposed (--listen/--share): they would "
                                "let anyone with the password read and write folders on this machine")
            return self.services.queue.submit(
                lambda control: extras.run_folder(input_dir, output_dir, req, ups, saver=saver, fmt=saver.fmt,
                                                  control=control), label=f"extras: {input_dir}")
        if source == "batch":
            paths = [Path(getattr(f, "name", f)) for f in (files or [])][:MAX_UPLOADS]
            if not paths:
                raise UserError("Extras: add images to the batch first")
            sources: list[tuple[str, Any]] = [(p.name, p) for p in paths]
        else:
            if image is None:
                raise UserError("Extras: upload an image first")
            sources = [("image", image)]
        return self.services.queue.submit(lambda control: extras.run(sources, req, ups, saver=saver, control=control),
                                          label=f"extras: {len(sources)} image(s)")

    def run(self, source, image, files, input_dir, output_dir, show_results, resize_mode, scale_by, width, height,
            crop, upscaler_1, upscaler_2, visibility):
        """Generator: queue, stream the progress (tiles), then the images and their postprocessing parameters."""
        from pipelines.upscale.extras import ExtrasRequest

        with errors_to_ui():
            req = ExtrasRequest(resize_mode=int(resize_mode or 0), upscaling_resize=float(scale_by),
                                upscaling_resize_w=int(width), upscaling_resize_h=int(height),
                                upscaling_crop=bool(crop), upscaler_1=upscaler_1 or "None",
                                upscaler_2=upscaler_2 or "None", extras_upscaler_2_visibility=float(visibility or 0))
            job = self.submit(source or "single", image, files, input_dir, output_dir, req)
        yield progress_html("Queued", 0.0, state="queued"), gr.update(), gr.update()
        last = None
        while not job.done.wait(POLL_SECONDS):
            snap = job.control.snapshot()
            text = progress_html(snap.text or "Upscaling…", snap.fraction, snap.eta_seconds, state="running")
            if text != last:
                last = text
                yield text, gr.update(), gr.update()
        if job.error is not None:
            err = user_error(job.error)
            yield progress_html(f"Failed: {err.message}", state="failed"), gr.update(), gr.update()
            raise err
        r = job.result
        notes = [f"{name}: {message}" for name, message in r.errors]
        if r.skipped_existing:
            notes.append(f"{len(r.skipped_existing)} already done in the output folder, skipped")
        if r.interrupted:
            notes.append("interrupted")
        done = f"Done: {len(r.infotexts)} image(s)" + (f" · {'; '.join(notes)}" if notes else "")
        shown = r.images if (source != "folder" or show_results) else []
        if source == "folder" and show_results and not shown:
            shown = [str(p) for p in r.paths]
        info = "<br>".join(html.escape(t) for t in dict.fromkeys(r.infotexts))
        yield progress_html(done, state="done"), shown or None, f"<p>{info}</p>" if info else ""
