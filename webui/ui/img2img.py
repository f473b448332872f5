"""The img2img tab: image-to-image, sketch, inpainting (painted, sketched or uploaded mask) and batch folders.

Sub-tabs pick what the init image and mask are (A1111's img2img / Sketch / Inpaint / Inpaint sketch /
Inpaint upload / Batch); everything else is shared with txt2img (`ui_generation.GenerationTab`) and the
parameters are the declarations with `modes` containing "img2img" (resize mode, denoising strength and
the inpaint group, shown only on the inpaint sub-tabs). One click queues `engine.img2img` (or
`engine.img2img_batch`) on the one job queue. "Interrogate" fills the prompt from the current image.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.errors import UserError
from pipelines.params.declarations import MAX_PIXELS, MAX_SIDE

from .common import errors_to_ui, progress_html, user_error
from .generation import POLL_SECONDS, GenerationTab, notices_text

log = logging.getLogger(__name__)

MODE = "img2img"
# Sub-tab id → label. The ids are also the values of the tab's mode state.
SUBTABS = (("img2img", "img2img"), ("sketch", "Sketch"), ("inpaint", "Inpaint"), ("inpaint_sketch", "Inpaint sketch"),
           ("inpaint_upload", "Inpaint upload"), ("batch", "Batch"))
MASKED_MODES = ("inpaint", "inpaint_sketch", "inpaint_upload", "batch")
INPAINT_PARAMS = ("mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
                  "inpaint_full_res_padding")
EDITOR_HEIGHT = 420
BATCH_SHOWN = 12          # batch outputs shown in the gallery (the rest are on disk)


def editor_value(path: str) -> dict:
    """An image file as an ImageEditor value (the image as background, nothing painted)."""
    return {"background": path, "layers": [], "composite": path}


def fit_size(width: int, height: int) -> tuple[int, int]:
    """An image's size as generation width/height: multiples of 8 within the declared limits, same aspect."""
    w, h = float(width), float(height)
    scale = min(1.0, MAX_SIDE / max(w, h), (MAX_PIXELS / (w * h)) ** 0.5)
    w, h = w * scale, h * scale
    return max(64, int(w) // 8 * 8), max(64, int(h) // 8 * 8)


def _background(value, what: str):
    from PIL import Image

    if isinstance(value, dict):
        bg = value.get("background")
        if bg is None:
            bg = value.get("composite")
    else:
        bg = value
    if bg is None:
        raise UserError(f"{what}: upload an image first")
    if isinstance(bg, str):
        from pipelines.images.inputs import load_image

        return load_image(bg, what=f"{what} image")
    return bg if isinstance(bg, Image.Image) else Image.fromarray(bg)


def _layers(value) -> list:
    layers = (value or {}).get("layers") if isinstance(value, dict) else None
    return [layer for layer in (layers or []) if layer is not None]


def inputs_for(mode: str, values: dict[str, Any], mask_blur: int = 0) -> tuple[Any, Any]:
    """(init image, mask or None) for sub-tab `mode` from the tab's input values; UserError says what is
    missing. Files go to the engine as paths (it decodes them: CMYK, 16-bit, animated, size limit)."""
    from pipelines.images import inputs as ii

    if mode == "img2img":
        if not values.get("init_img"):
            raise UserError("img2img: upload an image first")
        return values["init_img"], None
    if mode == "sketch":
        editor = values.get("sketch")
        return ii.sketch_to_init(_background(editor, "Sketch"), _layers(editor)), None
    if mode == "inpaint":
        editor = values.get("inpaint")
        image = _background(editor, "Inpaint")
        layers = _layers(editor)
        if not layers:
            raise UserError("Inpaint: paint over the area to repaint (white = repaint)")
        return image, ii.strokes_mask(layers, size=image.size)
    if mode == "inpaint_sketch":
        editor = values.get("inpaint_sketch")
        image = _background(editor, "Inpaint sketch")
        layers = _layers(editor)
        if not layers:
            raise UserError("Inpaint sketch: paint over the area to repaint")
        return ii.inpaint_sketch(image, layers, mask_blur=mask_blur)
    if mode == "inpaint_upload":
        if not values.get("inpaint_image"):
            raise UserError("Inpaint upload: upload the image first")
        if not values.get("inpaint_mask"):
            raise UserError("Inpaint upload: upload a mask too (white = repaint, black = keep)")
        return values["inpaint_image"], values["inpaint_mask"]
    raise UserError(f"unknown img2img mode {mode!r}")


def _mode_selected(mode: str):
    def selected():
        return mode, gr.update(visible=mode in MASKED_MODES)

    return selected


class Img2ImgTab(GenerationTab):
    MODE = MODE
    TITLE = "img2img"
    OUTPUT_KIND = "img2img-images"

    # ------------------------------------------------------------------ layout
    def build(self) -> None:
        with gr.Tab("img2img", id=MODE, elem_id="tab_img2img") as self.tab:
            self.build_toprow(tools=self._tools)
            with gr.Row(equal_height=False, elem_id="img2img_main_row"):
                with gr.Column(scale=1, elem_id="img2img_settings"):
                    self._build_inputs()
                    self._w("resize_mode")
                    with gr.Group(visible=False, elem_id="img2img_inpaint_settings") as self.inpaint_group:
                        with gr.Row():
                            self._w("mask_blur")
                            self._w("inpainting_mask_invert")
                        self._w("inpainting_fill")
                        with gr.Row():
                            self._w("inpaint_full_res")
                            self._w("inpaint_full_res_padding")
                    self.build_sampling()
                    self.build_size(extra_tool=self._size_tool)
                    self._w("denoising_strength")
                    self.build_cfg_seed()
                    self.build_advanced(("resize_mode", "denoising_strength") + INPAINT_PARAMS)
                    self.build_extras()
                self.build_results()
        mode_extra = [(self.mode_tabs, gr.update(selected="img2img")), (self.mode, "img2img"),
                      (self.inpaint_group, gr.update(visible=False))]
        self.finish_build(self.init_img, extra=mode_extra)
        # "Send to inpaint" lands in the Inpaint sub-tab of this tab, with the image to paint on.
        self.ctx.paste.add(self._inpaint_target())

    def _inpaint_target(self):
        from .common import PasteTarget

        extra = [(self.mode_tabs, gr.update(selected="inpaint")), (self.mode, "inpaint"),
                 (self.inpaint_group, gr.update(visible=True))]
        fields = dict(self.ctx.paste.targets[MODE].fields)   # the img2img target's (extensions' fields too)
        return PasteTarget("inpaint", self.tab, fields, self.inpaint, tab_id=MODE, image_value=editor_value,
                           extra=extra, label="inpaint", controlnet=self.controlnet)

    def _tools(self) -> None:
        self.interrogate = gr.Button("Interrogate", elem_id="img2img_interrogate", size="sm", min_width=90,
                                     elem_classes="tool-wide")

    def _size_tool(self) -> None:
        self.size_from_image = gr.Button("⤢", elem_id="img2img_size_from_image", min_width=42, size="sm",
                                         elem_classes="tool")

    def _build_inputs(self) -> None:
        self.mode = gr.State("img2img")
        brush = gr.Brush(default_size="auto", colors=[("#ffffff", 0.75)], color_mode="fixed")   # see the image through
        upload = ["upload", "clipboard"]
        with gr.Tabs(elem_id="img2img_mode_tabs") as self.mode_tabs:
            self.subtabs = {}
            with gr.Tab("img2img", id="img2img", elem_id="img2img_img2img_tab") as self.subtabs["img2img"]:
                self.init_img = gr.Image(label="Image for img2img", type="filepath", sources=upload, image_mode=None,
                                         elem_id="img2img_image", height=EDITOR_HEIGHT)
            with gr.Tab("Sketch", id="sketch", elem_id="img2img_sketch_tab") as self.subtabs["sketch"]:
                self.sketch = gr.ImageEditor(label="Sketch over the image (the strokes become part of the init image)",
                                             type="pil", sources=upload, elem_id="img2img_sketch", height=EDITOR_HEIGHT,
                                             layers=False, transforms=(), format="png")
            with gr.Tab("Inpaint", id="inpaint", elem_id="img2img_inpaint_tab") as self.subtabs["inpaint"]:
                self.inpaint = gr.ImageEditor(label="Paint the area to repaint", type="pil", sources=upload,
                                              elem_id="img2img_inpaint", height=EDITOR_HEIGHT, brush=brush,
                                              layers=False, transforms=(), format="png")
            with gr.Tab("Inpaint sketch", id="inpaint_sketch",
                        elem_id="img2img_inpaint_sketch_tab") as self.subtabs["inpaint_sketch"]:
                self.inpaint_sketch = gr.ImageEditor(label="Paint in colour: the strokes are the init and the mask",
                                                     type="pil", sources=upload, elem_id="img2img_inpaint_sketch",
                                                     height=EDITOR_HEIGHT, layers=False, transforms=(), format="png")
            with gr.Tab("Inpaint upload", id="inpaint_upload",
                        elem_id="img2img_inpaint_upload_tab") as self.subtabs["inpaint_upload"]:
                with gr.Row():
                    self.inpaint_image = gr.Image(label="Image", type="filepath", sources=upload, image_mode=None,
                                                  elem_id="img2img_inpaint_upload_image", height=EDITOR_HEIGHT - 60)
                    self.inpaint_mask = gr.Image(label="Mask (white = repaint)", type="filepath", sources=upload,
                                                 image_mode=None, elem_id="img2img_inpaint_upload_mask",
                                                 height=EDITOR_HEIGHT - 60)
            # Folders on the server: not offered while the app is exposed (--listen/--share), where it would let
            # anyone with the password read and write any folder the app can.
            with gr.Tab("Batch", id="batch", elem_id="img2img_batch_tab",
                        visible=not self.ctx.exposed) as self.subtabs["batch"]:
                gr.Markdown("Process every image of a folder on the server. With an output folder, images whose "
                            "outputs are already there are skipped (a stopped batch resumes); masks are the files "
                            "of the same name in the mask folder (or its only image).")
                self.batch_input = gr.Textbox(label="Input folder", elem_id="img2img_batch_input_dir")
                self.batch_output = gr.Textbox(label="Output folder (empty: the usual img2img output folder)",
                                               elem_id="img2img_batch_output_dir")
                self.batch_mask = gr.Textbox(label="Mask folder (optional: inpainting)",
                                             elem_id="img2img_batch_inpaint_mask_dir")

    def init_image_inputs(self) -> dict[str, Any]:
        """Components holding the input images, by `run` keyword (the generation inputs and previews)."""
        return {"i2i_mode": self.mode, "init_img": self.init_img, "sketch": self.sketch, "inpaint": self.inpaint,
                "inpaint_sketch": self.inpaint_sketch, "inpaint_image": self.inpaint_image,
                "inpaint_mask": self.inpaint_mask}

    def generation_inputs(self) -> dict[str, Any]:
        inputs = super().generation_inputs()
        inputs.update(self.init_image_inputs())
        inputs.update(batch_input=self.batch_input, batch_output=self.batch_output, batch_mask=self.batch_mask)
        return inputs

    def send_targets(self) -> list[tuple[str, str]]:
        return [("img2img", "img2img"), ("inpaint", "inpaint"), ("txt2img", "txt2img"), ("pnginfo", "PNG Info")]

    # ------------------------------------------------------------------ events
    def _events(self) -> None:
        super()._events()
        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        for mode, tab in self.subtabs.items():
            tab.select(_mode_selected(mode), outputs=[self.mode, self.inpaint_group], **quiet)
        images = self.init_image_inputs()
        self.size_from_image.click(self._size_from_image, inputs_kwargs=images,
                                   outputs=[self.fields["width"], self.fields["height"]], show_progress="hidden",
                                   api_visibility="private")
        self.interrogate.click(self.run_interrogate, inputs_kwargs=images,
                               outputs=[self.fields["prompt"], self.progress],
                               show_progress="hidden", api_visibility="private", concurrency_limit=8)

    def current_image(self, values: dict[str, Any]):
        """The current sub-tab's image (PIL; a sketch with its strokes), or None when there is none."""
        from pipelines.images.inputs import sketch_to_init

        mode = values.get("i2i_mode") or "img2img"
        key = {"img2img": "init_img", "inpaint_upload": "inpaint_image"}.get(mode, mode)
        value = values.get(key) if mode != "batch" else None
        if not value or (isinstance(value, dict) and value.get("background") is None
                         and value.get("composite") is None):
            return None
        image = _background(value, dict(SUBTABS).get(mode, mode))
        return sketch_to_init(image, _layers(value)) if mode == "sketch" else image

    def init_image_for_preview(self, values: dict[str, Any]):
        try:
            return self.current_image(values)
        except UserError:
            return None

    def _size_from_image(self, **values):
        with errors_to_ui():
            image = self.current_image(values)
        if image is None:
            raise gr.Error("Upload an image first")
        return fit_size(*image.size)

    def run_interrogate(self, **values):
        """Generator: the current image's prompt (CLIP interrogation, classic mode) into the prompt box."""
        prog = self.progress
        with errors_to_ui():
            image = self.current_image(values)
            if image is None:
                raise UserError("Interrogate: upload an image first")
            job = self.services.submit_interrogate(image, "classic")
        yield {prog: progress_html("Interrogating: queued", 0.0, state="queued")}
        while not job.done.wait(POLL_SECONDS):
            snap = job.control.snapshot()
            yield {prog: progress_html(snap.text or "Interrogating…", snap.fraction, state="running")}
        if job.error is not None:
            err = user_error(job.error)
            yield {prog: progress_html(f"Interrogate failed: {err.message}", state="failed")}
            raise err
        result = job.result
        yield {self.fields["prompt"]: result.prompt,
               prog: progress_html(f"Interrogated ({result.mode}) in {result.seconds:.1f}s", state="done")}

    # ------------------------------------------------------------------ generation
    def submit(self, req, values: dict[str, Any]):
        mode = values.get("i2i_mode") or "img2img"
        if mode == "batch":
            if self.ctx.exposed:
                raise UserError("Batch folders are disabled while the app is exposed (--listen/--share): they would "
                                "let anyone with the password read and write folders on this machine")
            if not (values.get("batch_input") or "").strip():
                raise UserError("Batch: type the input folder (a folder on the server)")
            return self.services.submit_img2img_batch(req, values["batch_input"].strip(),
                                                      (values.get("batch_output") or "").strip() or None,
                                                      (values.get("batch_mask") or "").strip() or None)
        image, mask = inputs_for(mode, values, req.mask_blur)
        units = self.controlnet_units(values)
        if units:
            return self.services.submit_img2img(req, image, mask, controlnet=units)
        return self.services.submit_img2img(req, image, mask)

    def finish(self, result) -> dict:
        from pipelines.generate.img2img import BatchResult

        if not isinstance(result, BatchResult):
            return super().finish(result)
        return self._finish_batch(result)

    def _finish_batch(self, result) -> dict:
        from PIL import Image

        shown = []
        for path in result.outputs[-BATCH_SHOWN:]:
            try:
                with Image.open(path) as im:
                    im.thumbnail((512, 512))
                    shown.append(im.convert("RGB"))
            except OSError:
                continue
        text = (f"Batch {'interrupted' if result.interrupted else 'done'}: {len(result.processed)} processed, "
                f"{len(result.skipped_existing)} already done, {len(result.errors)} failed "
                f"({len(result.outputs)} file(s) written) in {result.seconds:.0f}s")
        if result.outputs:
            text += f" · saved to {Path(result.outputs[0]).parent}"
        text += notices_text(list(result.notices) + [f"{name}: {err}" for name, err in result.errors])
        return {self.gallery: shown or None, self.progress: progress_html(text, state="done"), self.infotext: "",
                self.result_state: {}, self.save: gr.update(value=None, interactive=False)}
