"""Interrogate tab: an image → a prompt that would recreate it (`pipelines.interrogate`).

Image, CLIP model (Automatic = the one matching the active checkpoint: ViT-L-14 for SD 1.x, ViT-H-14 for
SD 2.x, ViT-bigG-14 for SDXL), caption model, mode (caption / fast / classic / best / negative), the
resulting prompt with its CLIP similarity and best matches per label list, and "send to txt2img /
img2img" (a negative-mode result goes to the negative prompt). Interrogation runs on the one job queue;
models missing offline give the engine's message saying which file to put where.
"""
from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

import gradio as gr


from .common import errors_to_ui, progress_html, user_error

if TYPE_CHECKING:
    from .context import UIContext

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
AUTO = ""
MODE_HELP = {
    "caption": "the caption model's sentence only",
    "fast": "caption + the best-matching phrases of every list",
    "classic": "caption, medium by artist, trending, movement, flavors",
    "best": "caption + a chain of the phrases that most raise CLIP similarity (slowest)",
    "negative": "phrases least like the image (for the negative prompt)",
}


def interrogate_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pipelines.interrogate") is not None


def tops_html(tops: dict[str, list[tuple[str, float]]], limit: int = 3) -> str:
    if not tops:
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(table)}</th><td>"
        + ", ".join(f"{html.escape(p)} <span class='score'>{s:.3f}</span>" for p, s in items[:limit]) + "</td></tr>"
        for table, items in tops.items() if items)
    return (f"<div class='interrogate-caption'>Best matches per label list (cosine similarity to the image)</div>"
            f"<table class='interrogate-tops'>{rows}</table>")


class InterrogateTab:
    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx
        self.services = ctx.services

    # ------------------------------------------------------------------ lists
    def model_choices(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(label, value) choices: Automatic first, then each model, marked when it must be downloaded."""
        try:
            it = self.services.interrogator
            sources = it.sources
        except Exception:  # noqa: BLE001 - shown as an empty list; interrogating says why
            log.exception("the interrogator could not be created")
            return [("Automatic", AUTO)], [("Automatic", AUTO)]

        def mark(name: str) -> tuple[str, str]:
            return (name if sources.available_locally(name) else f"{name} (download)", name)

        clips = [("Automatic (matches the checkpoint)", AUTO)] + [mark(n) for n in it.clip_models()]
        captions = [("Automatic", AUTO)] + [mark(n) for n in it.caption_models()]
        return clips, captions

    # ------------------------------------------------------------------ layout
    def build(self) -> None:
        from pipelines.interrogate import MODES

        clips, captions = self.model_choices()
        with gr.Tab("Interrogate", id="interrogate", elem_id="tab_interrogate") as self.tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    self.image = gr.Image(label="Image", type="pil", sources=["upload", "clipboard"],
                                          elem_id="interrogate_image", height=400, image_mode="RGB")
                    with gr.Row():
                        self.clip_model = gr.Dropdown(label="CLIP model", choices=clips, value=AUTO, scale=3,
                                                      elem_id="interrogate_clip_model")
                        self.caption_model = gr.Dropdown(label="Caption model", choices=captions, value=AUTO,
                                                         scale=2, elem_id="interrogate_caption_model")
                        self.refresh = gr.Button("⟳", elem_id="interrogate_refresh", scale=0, min_width=42,
                                                 elem_classes="tool")
                    self.mode = gr.Radio(label="Mode", choices=list(MODES), value="classic",
                                         elem_id="interrogate_mode", info=MODE_HELP["classic"])
                with gr.Column(scale=1):
                    self.run_button = gr.Button("Interrogate", variant="primary", elem_id="interrogate_run",
                                                size="lg")
                    self.progress = gr.HTML("", elem_id="interrogate_progress", padding=False)
                    self.prompt = gr.Textbox(label="Prompt", elem_id="interrogate_prompt", lines=4, max_lines=10,
                                             interactive=True, buttons=["copy"])
                    with gr.Row():
                        self.send_buttons = {name: gr.Button(f"Send to {name}", size="sm",
                                                             elem_id=f"interrogate_send_to_{name}")
                                             for name in ("txt2img", "img2img")}
                    self.details = gr.HTML("", elem_id="interrogate_details", padding=False)
            self.result_mode = gr.State("classic")
        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        self.mode.change(lambda m: gr.update(info=MODE_HELP.get(m, "")), inputs=self.mode, outputs=self.mode, **quiet)
        self.refresh.click(self.refreshed, outputs=[self.clip_model, self.caption_model], **quiet)
        self.run_button.click(self.run, inputs=[self.image, self.clip_model, self.caption_model, self.mode],
                              outputs=[self.progress, self.prompt, self.details, self.result_mode],
                              show_progress="hidden", api_name="interrogate", concurrency_limit=8)

    def refreshed(self):
        clips, captions = self.model_choices()
        return gr.update(choices=clips), gr.update(choices=captions)

    def wire(self) -> None:
        self.ctx.paste.wire_buttons(self.send_buttons, self._wire_target)

    def _wire_target(self, button, target) -> None:
        prompt, negative = target.fields["prompt"], target.fields["negative_prompt"]
        button.click(self._sender(target), inputs=[self.prompt, self.result_mode],
                     outputs=[self.ctx.tabs, prompt, negative], show_progress="hidden", api_visibility="private")

    def _sender(self, target):
        def send(text: str, mode: str):
            return self.send(text, mode, target)

        return send

    @staticmethod
    def send(text: str, mode: str, target) -> tuple:
        """(tabs, prompt, negative prompt) updates: the prompt (a negative-mode result: the negative prompt)."""
        if not text:
            raise gr.Error("Interrogate an image first")
        if mode == "negative":
            return gr.Tabs(selected=target.tab_id), gr.update(), text
        return gr.Tabs(selected=target.tab_id), text, gr.update()

    # ------------------------------------------------------------------ run
    def run(self, image, clip_model: str | None, caption_model: str | None, mode: str):
        """Generator: queue the interrogation, stream its progress, then the prompt and the best matches."""
        if image is None:
            raise gr.Error("Upload an image to interrogate first")
        with errors_to_ui():
            job = self.services.submit_interrogate(image.convert("RGB"), mode or "classic",
                                                   clip_model=clip_model or None, caption_model=caption_model or None)
        yield progress_html("Queued", 0.0, state="queued"), gr.update(), gr.update(), gr.update()
        last = None
        while not job.done.wait(POLL_SECONDS):
            pos = self.services.queue.position(job)
            if pos > 0:
                text = progress_html(f"Waiting in the queue: {pos} job{'s' if pos != 1 else ''} ahead of yours", 0.0,
                                     state="queued")
            else:
                snap = job.control.snapshot()
                text = progress_html(snap.text or "Interrogating…", snap.fraction, state="running")
            if text != last:
                last = text
                yield text, gr.update(), gr.update(), gr.update()
        if job.error is not None:
            err = user_error(job.error)
            yield progress_html(f"Failed: {err.message}", state="failed"), gr.update(), "", gr.update()
            raise err
        r = job.result
        models = ", ".join(m for m in (r.clip_model, r.caption_model) if m)
        done = f"Done ({r.mode}) in {r.seconds:.1f}s with {models}"
        if r.similarity is not None:
            done += f" · CLIP similarity {r.similarity:.3f}"
        yield progress_html(done, state="done"), r.prompt, tops_html(r.tops), r.mode
