"""Presets and extra networks on the generation tabs.

Presets (`pipelines.params.presets.PresetStore`): the picker fills the tab's fields (they stay editable), with
a warning for every key the preset could not use; "Presets" accordion: save the current values as a
preset, delete the selected one, save the current values as the UI's defaults, reset the fields to
the defaults. Every tab's picker lists the same store.

Extra networks (`pipelines.prompts.networks`): LoRA and embedding pickers that put `<lora:name:weight>` or the
embedding's name into the prompt (choosing one already there takes it out, as A1111's cards do).
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.core.errors import UserError

from pipelines.params.declarations import BY_NAME

from .common import TOAST_SECONDS, errors_to_ui, toast_warnings
from .widgets import coerce, field_updates

if TYPE_CHECKING:
    from .context import GenerationTabView

log = logging.getLogger(__name__)

# Parameter groups (pipelines/params/declarations.py) a preset leaves alone unless it names them: what the
# image is of and how many, not how it is sampled.
KEPT_GROUPS = ("prompt", "seed", "size", "batch", "inpaint")


# ============================================================================================ presets

class PresetControls:
    def __init__(self, tab: "GenerationTabView"):
        self.tab = tab
        self.ctx = tab.ctx

    @property
    def store(self):
        return getattr(self.ctx.services, "presets", None)

    def names(self) -> list[str]:
        return self.names_of(self.store)

    @staticmethod
    def names_of(store) -> list[str]:
        if store is None:
            return []
        try:
            store.refresh()
            return store.names()
        except Exception:  # noqa: BLE001 - a broken presets folder must not stop the UI; the log says why
            log.exception("could not list the presets")
            return []

    def build_dropdown(self, **kw) -> None:
        m = self.tab.MODE
        # Listed when the page loads (`preset_lists`): validating presets imports the engine's libraries.
        self.dropdown = gr.Dropdown(label="Preset (fills the fields; they stay editable)", choices=[], value=None,
                                    elem_id=f"{m}_preset", interactive=self.store is not None,
                                    allow_custom_value=False, **kw)
        self.ctx.preset_dropdowns.append(self.dropdown)

    def build_description(self) -> None:
        self.description_text = gr.Markdown("", elem_id=f"{self.tab.MODE}_preset_about", elem_classes="preset-about")

    def build_manager(self) -> None:
        m = self.tab.MODE
        with gr.Accordion("Presets", open=False, elem_id=f"{m}_presets", visible=self.store is not None):
            with gr.Row():
                self.name = gr.Textbox(label="Preset name", elem_id=f"{m}_preset_name", scale=3,
                                       placeholder="a name for the current values")
                self.include_model = gr.Checkbox(label="with checkpoint and VAE", value=False, scale=1,
                                                 elem_id=f"{m}_preset_include_model")
            self.description = gr.Textbox(label="Description", elem_id=f"{m}_preset_description", lines=1)
            with gr.Row(elem_classes="preset-buttons"):
                self.save = gr.Button("Save preset", size="sm", elem_id=f"{m}_preset_save")
                self.delete = gr.Button("Delete selected", size="sm", elem_id=f"{m}_preset_delete")
                self.reset = gr.Button("↺ Reset to defaults", size="sm", elem_id=f"{m}_preset_reset")
                self.save_defaults = gr.Button("Save as defaults", size="sm", elem_id=f"{m}_preset_save_defaults")

    # ------------------------------------------------------------------ wiring
    def wire(self) -> None:
        tab, ctx = self.tab, self.ctx
        fields = list(tab.fields.values())
        outputs = [ctx.checkpoint, ctx.vae, *fields]
        quiet = dict(show_progress="hidden", api_visibility="private")
        self.dropdown.input(self.apply, inputs=[self.dropdown, ctx.checkpoint, *fields], outputs=outputs, **quiet)
        self.dropdown.change(self.describe, inputs=self.dropdown, outputs=self.description_text, queue=False, **quiet)
        self.reset.click(lambda ckpt, *vals: self.apply("Defaults", ckpt, *vals), inputs=[ctx.checkpoint, *fields],
                         outputs=outputs, **quiet)
        everyone = list(ctx.preset_dropdowns)
        self.save.click(self.save_preset, inputs=[self.name, self.description, self.include_model, ctx.checkpoint,
                                                  ctx.vae, *fields], outputs=everyone, **quiet)
        self.delete.click(self.delete_preset, inputs=self.dropdown, outputs=everyone, **quiet)
        self.save_defaults.click(self.save_as_defaults, inputs=fields, **quiet)

    def _values(self, vals) -> dict[str, Any]:
        return {name: coerce(name, v) for name, v in zip(self.tab.fields, vals)}

    def apply(self, name: str | None, checkpoint: str | None, *vals):
        """Updates for (checkpoint, VAE, *fields) after applying preset `name`.

        Every field the preset names is set; every other "how" field (sampling, hires fix, VAE type, ...)
        goes back to the UI's default (presets/defaults.json over the declarations), so nothing of an
        earlier preset lingers (Fast's VAE type Tiny, its LCM schedule types). The "what" fields stay as
        the user left them: prompts, styles, seeds, size, batch and the inpaint settings (`KEPT_GROUPS`).
        """
        store = self.store
        none = (gr.update(), gr.update(), *[gr.update() for _ in self.tab.fields])
        if not name or store is None:
            return none
        current = self._values(vals)
        with errors_to_ui():
            defaults, _ = store.defaults()      # its warnings were shown when the UI started
            base = {k: v for k, v in defaults.items() if k in BY_NAME and BY_NAME[k].group != "model"}
            base.update({k: v for k, v in current.items() if k in BY_NAME and BY_NAME[k].group in KEPT_GROUPS})
            values, warnings = store.apply(name, base, family=self.family())
        toast_warnings(warnings)
        ckpt_update = vae_update = gr.update()
        wanted = values.get("sd_model_checkpoint")
        if wanted:
            found = self.ctx.find_checkpoint(wanted)
            if found:
                ckpt_update = gr.update(value=found) if found != checkpoint else gr.update()
            else:
                toast_warnings([f"{name}: checkpoint {wanted!r} is not among your models; the current one is kept"])
        if values.get("sd_vae"):
            vae_update = gr.update(value=values["sd_vae"])
        return (ckpt_update, vae_update, *field_updates(self.tab.fields, values))

    def describe(self, name: str | None) -> str:
        """The chosen preset's description, shown under the picker."""
        store = self.store
        if not name or store is None:
            return ""
        try:
            preset = store.get(name)
        except UserError:
            return ""
        return f"*{preset.description}*" if preset.description else ""

    def family(self) -> str | None:
        """The active checkpoint's architecture family (picks a preset's LoRA files)."""
        active = self.ctx.services.manager.active
        return active.arch.family if active is not None else None

    def save_preset(self, name: str, description: str, include_model: bool, checkpoint: str | None,
                    vae: str | None, *vals):
        store = self.store
        if store is None:
            raise gr.Error("presets are not available")
        name = (name or "").strip()
        if not name:
            raise gr.Error("Type a name for the preset first")
        values = self._values(vals)
        values.update(sd_model_checkpoint=checkpoint or "", sd_vae=vae or "")
        with errors_to_ui():
            path = store.save(name, values, description=description or "", include_model=bool(include_model))
        gr.Info(f"Preset {name!r} saved to {path}")
        return self._refreshed(len(self.ctx.preset_dropdowns), select=name)

    def delete_preset(self, name: str | None):
        store = self.store
        if not name:
            raise gr.Error("Choose the preset to delete in the Preset list first")
        with errors_to_ui():
            path = store.delete(name)
        gr.Info(f"Preset {name!r} deleted ({path.name})")
        return self._refreshed(len(self.ctx.preset_dropdowns), select=None)

    def save_as_defaults(self, *vals):
        with errors_to_ui():
            path = self.store.save_defaults(self._values(vals))
        gr.Info(f"The UI now starts with these values (saved to {path}; prompt and seed are not saved)")

    def _refreshed(self, n: int, select: str | None):
        names = self.names()
        mine = self.ctx.preset_dropdowns.index(self.dropdown)
        return tuple(gr.update(choices=names, value=select) if i == mine else gr.update(choices=names)
                     for i in range(n))


def preset_lists(ctx) -> tuple:
    """Updates for every preset picker: the presets' names (page load)."""
    names = PresetControls.names_of(getattr(ctx.services, "presets", None))
    return tuple(gr.update(choices=names) for _ in ctx.preset_dropdowns)


# ============================================================================================ networks

_TIDY_COMMAS = re.compile(r",[ \t]*(?:,[ \t]*)+")


def toggle_in_prompt(prompt: str, text: str, remove: re.Pattern | None = None) -> str:
    """`prompt` with `text` appended (", "-separated), or, when `remove` (or `text` itself) is already in
    it, with that taken out and the separators tidied."""
    prompt = prompt or ""
    pattern = remove or re.compile(r"(?<![\w<])" + re.escape(text) + r"(?![\w>])")
    if pattern.search(prompt):
        out = pattern.sub("", prompt)
        out = _TIDY_COMMAS.sub(", ", out)
        return re.sub(r"[ \t]{2,}", " ", out).strip().strip(",").strip()
    stripped = prompt.rstrip()
    if not stripped:
        return text
    return f"{stripped}{'' if stripped.endswith(',') else ','} {text}"


def toggle_lora(prompt: str, name: str, weight: float = 1.0) -> str:
    from pipelines.prompts.networks import lora_tag

    existing = re.compile(r"<(?:lora|lyco):" + re.escape(name) + r"(?::[^>]*)?>", re.IGNORECASE)
    return toggle_in_prompt(prompt, lora_tag(name, float(weight)), existing)


class ExtraNetworks:
    """LoRA and embedding pickers under the prompt settings."""

    def __init__(self, tab: "GenerationTabView"):
        self.tab = tab
        self.ctx = tab.ctx

    @property
    def manager(self):
        return getattr(self.ctx.services.engine, "networks", None)

    def lists(self) -> tuple[list[str], list[str]]:
        nm = self.manager
        if nm is None:
            return [], []
        try:
            return [nf.name for nf in nm.lora_files()], [nf.name for nf in nm.embedding_files()]
        except Exception:  # noqa: BLE001 - an unreadable folder must not stop the UI
            log.exception("could not list LoRAs / embeddings")
            return [], []

    def hint(self) -> str:
        nm = self.manager
        if nm is None:
            return ""
        loras, embeddings = self.lists()
        parts = []
        if not loras:
            parts.append(f"no LoRA found in `{nm.paths.dirs('lora')[0]}`")
        if not embeddings:
            parts.append(f"no embedding found in `{nm.paths.dirs('embeddings')[0]}`")
        return "; ".join(parts)

    def build(self) -> None:
        m = self.tab.MODE
        loras, embeddings = self.lists()
        with gr.Accordion("Extra networks (LoRA, embeddings)", open=False, elem_id=f"{m}_extra_networks",
                          visible=self.manager is not None):
            with gr.Row():
                self.lora = gr.Dropdown(label="LoRA", choices=loras, value=None, elem_id=f"{m}_lora_pick", scale=3,
                                        info="adds <lora:name:weight> to the prompt (again: removes it)")
                self.lora_weight = gr.Slider(label="LoRA weight", minimum=-2.0, maximum=2.0, step=0.05, value=1.0,
                                             elem_id=f"{m}_lora_weight", scale=2)
            with gr.Row():
                self.embedding = gr.Dropdown(label="Embedding", choices=embeddings, value=None, scale=3,
                                             elem_id=f"{m}_embedding_pick", info="adds its name to the prompt")
                self.to_negative = gr.Checkbox(label="into the negative prompt", value=False, scale=2,
                                               elem_id=f"{m}_embedding_negative")
                self.refresh = gr.Button("⟳", elem_id=f"{m}_networks_refresh", scale=0, min_width=42,
                                         elem_classes="tool")
            self.note = gr.Markdown(self.hint(), elem_id=f"{m}_networks_note")

    def wire(self) -> None:
        f = self.tab.fields
        quiet = dict(queue=False, show_progress="hidden", api_visibility="private")
        self.lora.input(self.pick_lora, inputs=[self.lora, self.lora_weight, f["prompt"]],
                        outputs=[f["prompt"], self.lora], **quiet)
        self.embedding.input(self.pick_embedding, inputs=[self.embedding, self.to_negative, f["prompt"],
                                                          f["negative_prompt"]],
                             outputs=[f["prompt"], f["negative_prompt"], self.embedding], **quiet)
        self.refresh.click(self.refreshed, outputs=[self.lora, self.embedding, self.note], show_progress="hidden",
                           api_visibility="private", concurrency_limit=None)   # queued: its toast needs the queue

    @staticmethod
    def pick_lora(name: str | None, weight: float, prompt: str):
        if not name:
            return gr.update(), gr.update()
        return toggle_lora(prompt, name, weight if weight is not None else 1.0), gr.update(value=None)

    @staticmethod
    def pick_embedding(name: str | None, negative: bool, prompt: str, negative_prompt: str):
        if not name:
            return gr.update(), gr.update(), gr.update()
        if negative:
            return gr.update(), toggle_in_prompt(negative_prompt, name), gr.update(value=None)
        return toggle_in_prompt(prompt, name), gr.update(), gr.update(value=None)

    def refreshed(self):
        nm = self.manager
        if nm is None:
            return gr.update(), gr.update(), gr.update()
        try:
            nm.refresh()
        except UserError as err:
            raise gr.Error(str(err)) from None
        loras, embeddings = self.lists()
        gr.Info(f"{len(loras)} LoRA(s), {len(embeddings)} embedding(s) found", duration=TOAST_SECONDS)
        return gr.update(choices=loras, value=None), gr.update(choices=embeddings, value=None), self.hint()
