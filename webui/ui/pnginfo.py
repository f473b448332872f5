"""PNG Info tab: an image's generation parameters (PNG/JPEG/WEBP) and raw metadata, sent back to a tab."""
from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.core.errors import UserError
from pipelines.images.reproduce import plan_reproduction
from pipelines.params.infotext import parse_infotext
from pipelines.params.declarations import request_values_from_infotext

from .common import PasteTarget, errors_to_ui, toast_warnings
from .widgets import field_updates

if TYPE_CHECKING:
    from .context import UIContext

log = logging.getLogger(__name__)

# What a pasted infotext means for fields it does not name (A1111 does the same): no hires fix,
# no variation seed, clip skip 1, automatic schedule.
ABSENT_DEFAULTS = {"enable_hr": False, "subseed_strength": 0.0, "clip_skip": 1, "scheduler": "Automatic"}


def read_image_info(path: str | None) -> tuple[str | None, dict[str, str]]:
    found = read_image_parameters(path)
    return found.infotext, found.items


def read_image_parameters(path: str | None):
    """The image's parameters (A1111 infotext, or another tool's metadata converted) with the raw items."""
    from pipelines.images.metadata import ImageParameters, read_image_parameters as read

    if not path:
        return ImageParameters(None, {})
    try:
        return read(path)
    except (OSError, ValueError) as err:
        raise UserError(f"could not read this image's metadata: {err}") from None


def reproduction(ctx: "UIContext", text: str, source: str | None = None, notes=()):
    """The image's models among the user's files and what will differ (pipelines.images.reproduce)."""
    services = ctx.services
    engine = services.engine
    loaded = services.manager.active
    return plan_reproduction(text, services.registry, getattr(engine, "networks", None), source=source,
                             notes=notes, active=(loaded.info.title, loaded.vae_name) if loaded else None,
                             extra_params=engine.hooks.params)


def reproduce_html(plan) -> str:
    if plan is None:
        return ""
    head, *items = plan.summary().split("\n- ")
    rows = "".join(f"<li>{html.escape(item)}</li>" for item in items)
    return (f"<div class='pnginfo-reproduce' id='pnginfo_reproduce'><p>{html.escape(head)}</p>"
            f"{f'<ul>{rows}</ul>' if rows else ''}</div>")


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


def paste_values(text: str, fields: dict[str, Any], extra_params=()) -> tuple[dict[str, Any], dict[str, str]]:
    """Infotext → {param name: value} for the fields a tab has, and the pairs it could not use.
    `extra_params`: extensions' parameters (written only when not at their default, so absent = default)."""
    parsed = parse_infotext(text)
    known, unknown = request_values_from_infotext(parsed.params, extra_params)
    values: dict[str, Any] = {"prompt": parsed.prompt, "negative_prompt": parsed.negative_prompt}
    values.update(known)
    for name, default in ABSENT_DEFAULTS.items():
        values.setdefault(name, default)
    for p in extra_params:
        values.setdefault(p.name, p.default)
    values = {k: v for k, v in values.items() if k in fields or k in ("sd_model_checkpoint",)}
    return values, unknown


def looks_like_infotext(text: str | None) -> bool:
    """A prompt box holding a pasted infotext (A1111 looks for the parameters line, "Steps: N, ...")."""
    return bool(text) and "Steps" in parse_infotext(text).params


def paste_updates(ctx: "UIContext", target: PasteTarget, text: str | None, image: str | None = None, *,
                  with_image: bool = True) -> tuple:
    """Updates for `ctx.paste_outputs(target, with_image)`: the tab selected, the checkpoint named by the
    infotext (when it is among yours), every field the infotext names, then the image and the target's
    extras, then the target's ControlNet units (from the infotext's "ControlNet N" entries), then the VAE
    (for targets that take parameters)."""
    field_updates = [gr.update() for _ in target.fields]
    ckpt_update = vae_update = gr.update()
    takes_params = target.paste_params and bool(target.fields)
    if takes_params:
        if not text and image is None:
            raise gr.Error("No generation parameters to send: drop an image that has them first")
        if text:
            ckpt_update, field_updates, vae_update = _field_updates(ctx, target, text)
    elif target.image is not None and not image:
        raise gr.Error("No image to send")
    out = [gr.Tabs(selected=target.tab_id), ckpt_update, *field_updates]
    if with_image and target.image is not None:
        out.append(target.value_for(image) if image else gr.update())
        out += [value for _, value in target.extra]
    if target.controlnet is not None:
        params = parse_infotext(text).params if text and target.paste_params else {}
        out += target.controlnet.paste_updates(params)
    if takes_params:
        out.append(vae_update)
    return tuple(out)


def _field_updates(ctx: "UIContext", target: PasteTarget, text: str):
    plan = reproduction(ctx, text)       # the image's checkpoint, VAE and LoRAs under their names here
    values, _ = paste_values(plan.infotext, target.fields, ctx.services.engine.hooks.params)
    styles_db = getattr(ctx.services, "styles", None)
    if "styles" in target.fields and styles_db is not None and values.get("prompt") is not None:
        # A1111: styles whose texts the prompts contain come back as selected styles, out of the prompts.
        names, prompt, negative = styles_db.extract_styles_from_prompt(values["prompt"],
                                                                       values.get("negative_prompt") or "")
        if names:
            values.update(prompt=prompt, negative_prompt=negative, styles=names)
    ckpt_update = gr.update(value=plan.checkpoint) if plan.checkpoint else gr.update()
    vae_update = gr.update(value=plan.vae) if plan.vae and plan.vae in ctx.vae_choices() else gr.update()
    if plan.differences:
        # One short toast: what is missing (a checkpoint, VAE or LoRA, with the LoRA folders) or left out.
        notes = list(plan.differences)
        networks = getattr(ctx.services.engine, "networks", None)
        if networks is not None and any(d.startswith("LoRA ") and "not among" in d for d in notes):
            notes.append("LoRAs are looked for in " + " and ".join(str(d) for d in networks.paths.dirs("lora")))
        toast_warnings(["; ".join(notes)])
    return ckpt_update, field_updates(target.fields, values), vae_update


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
        # Other tabs send their result image here ("Send to PNG Info").
        self.ctx.paste.add(PasteTarget("pnginfo", self.tab, {}, self.image, tab_id="pnginfo", paste_params=False,
                                       label="PNG Info"))

    def _read(self, path: str | None):
        with errors_to_ui():
            found = read_image_parameters(path)
            text, raw = found.infotext, found.items
            plan = reproduction(self.ctx, text, found.source, found.notes) if text else None
        has = bool(text)
        buttons = [gr.update(interactive=has) for _ in self.send_buttons]
        if not path:
            return "", None, "", *buttons
        return infotext_html(text) + reproduce_html(plan), raw, text or "", *buttons

    def wire(self) -> None:
        """Connect the send-to buttons to the tabs that exist (called once every tab is built)."""
        self.ctx.paste.wire_buttons(self.send_buttons, self._wire_target)

    def _wire_target(self, button, target: PasteTarget) -> None:
        # The image goes along to tabs that take one (img2img, inpaint), as in A1111.
        button.click(lambda text, path: paste_updates(self.ctx, target, text, path if target.image else None),
                     inputs=[self.text, self.image], outputs=self.ctx.paste_outputs(target),
                     show_progress="hidden", api_visibility="private")

    def send(self, text: str, target: PasteTarget, image: str | None = None) -> tuple:
        """Updates for (tabs, checkpoint, *target.fields[, image, *extras]): every field the infotext names is
        set; the image only for targets that take one."""
        if not text:
            raise gr.Error("No generation parameters to send: drop an image that has them first")
        return paste_updates(self.ctx, target, text, image)
