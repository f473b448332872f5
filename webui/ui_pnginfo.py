"""PNG Info tab: an image's generation parameters (PNG/JPEG/WEBP) and raw metadata, sent back to a tab."""
from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.errors import UserError
from pipelines.infotext import parse_infotext
from pipelines.params import request_values_from_infotext

from .ui_common import PasteTarget, errors_to_ui

if TYPE_CHECKING:
    from .ui import UIContext

log = logging.getLogger(__name__)

# What a pasted infotext means for fields it does not name (A1111 does the same): no hires fix,
# no variation seed, clip skip 1, automatic schedule.
ABSENT_DEFAULTS = {"enable_hr": False, "subseed_strength": 0.0, "clip_skip": 1, "scheduler": "Automatic"}


def read_image_info(path: str | None) -> tuple[str | None, dict[str, str]]:
    from pipelines.image_metadata import read_infotext

    if not path:
        return None, {}
    try:
        return read_infotext(path)
    except (OSError, ValueError) as err:
        raise UserError(f"could not read this image's metadata: {err}") from None


def infotext_html(text: str | None) -> str:
    if not text:
        return "<div class='pnginfo-empty'>No generation parameters found in this image.</div>"
    parsed = parse_infotext(text)
    rows = [("Prompt", parsed.prompt)]
    if parsed.negative_prompt:
        rows.append(("Negative prompt", parsed.negative_prompt))
    rows += [(k, v) for k, v in parsed.params.items() if not (k.endswith(("-1", "-2")) and k[:-2] in parsed.params)]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='pnginfo-table'>{body}</table>"


def paste_values(text: str, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Infotext → {param name: value} for the fields a tab has, and the pairs it could not use."""
    parsed = parse_infotext(text)
    known, unknown = request_values_from_infotext(parsed.params)
    values: dict[str, Any] = {"prompt": parsed.prompt, "negative_prompt": parsed.negative_prompt}
    values.update(known)
    for name, default in ABSENT_DEFAULTS.items():
        values.setdefault(name, default)
    values = {k: v for k, v in values.items() if k in fields or k in ("sd_model_checkpoint",)}
    return values, unknown


class PngInfoTab:
    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx

    def build(self) -> None:
        with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo") as self.tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    self.image = gr.Image(label="Source", type="filepath", sources=["upload", "clipboard"],
                                          elem_id="pnginfo_image", height=420, image_mode=None)
                with gr.Column(scale=1):
                    self.info = gr.HTML("", elem_id="pnginfo_generation_info", padding=False)
                    with gr.Row():
                        self.send_buttons = {name: gr.Button(f"Send to {name}", elem_id=f"pnginfo_send_to_{name}",
                                                             size="sm", interactive=False, variant="primary")
                                             for name in self.ctx.paste_tabs}
                    with gr.Accordion("Raw metadata", open=False):
                        self.raw = gr.JSON(label="Raw metadata", elem_id="pnginfo_raw", show_label=False)
            self.text = gr.State("")
        self.image.change(self._read, inputs=self.image, outputs=[self.info, self.raw, self.text, *self.send_buttons.values()],
                          show_progress="hidden", api_name="pnginfo")

    def _read(self, path: str | None):
        with errors_to_ui():
            text, raw = read_image_info(path)
        has = bool(text)
        buttons = [gr.update(interactive=has) for _ in self.send_buttons]
        if not path:
            return "", None, "", *buttons
        return infotext_html(text), raw, text or "", *buttons

    def wire(self) -> None:
        """Connect the send-to buttons to the tabs that exist (called once every tab is built)."""
        for name, button in self.send_buttons.items():
            target = self.ctx.paste.targets.get(name)
            if target is None:
                button.visible = False
                continue
            self._wire_target(button, target)

    def _wire_target(self, button, target: PasteTarget) -> None:
        outputs = [self.ctx.tabs, self.ctx.checkpoint, *target.fields.values()]
        button.click(lambda text: self.send(text, target), inputs=self.text, outputs=outputs,
                     show_progress="hidden", api_visibility="private")

    def send(self, text: str, target: PasteTarget) -> tuple:
        """Updates for (tabs, checkpoint, *target.fields): every field the infotext names is set."""
        if not text:
            raise gr.Error("No generation parameters to send: drop an image that has them first")
        values, unknown = paste_values(text, target.fields)
        parsed = parse_infotext(text).params
        model = None
        for query in (parsed.get("Model hash"), parsed.get("Model")):
            if query and not model:
                model = self.ctx.find_checkpoint(query)
        ckpt_update = gr.update()
        if model:
            ckpt_update = gr.update(value=model)
        elif parsed.get("Model"):
            gr.Warning(f"Checkpoint {parsed['Model']!r} from the image was not found among your models; "
                       f"the current one is kept")
        if unknown:
            shown = ", ".join(f"{k}: {v}" for k, v in list(unknown.items())[:8])
            gr.Info(f"Not applied (not supported here): {shown}")
        updates = [gr.update(value=values[name]) if name in values else gr.update() for name in target.fields]
        return gr.Tabs(selected=target.tab_id), ckpt_update, *updates
