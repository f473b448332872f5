"""The styles editor on the generation tabs: create, edit, delete and apply prompt styles.

The styles live in `<data-dir>/styles.csv`, AUTOMATIC1111's file, owned by the services' one
`StyleDatabase` (`pipelines.prompts.styles`): it writes the file atomically in A1111's format (UTF-8 with
BOM, `name,prompt,negative_prompt`, `#` rows kept) and keeps the previous one as `styles.csv.bak`. Every
tab's Styles picker and editor list the same database, so a change shows everywhere at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from .common import TOAST_SECONDS, errors_to_ui

if TYPE_CHECKING:
    from .context import GenerationTabView


class StylesEditor:
    def __init__(self, tab: "GenerationTabView"):
        self.tab = tab
        self.ctx = tab.ctx

    @property
    def db(self):
        return getattr(self.ctx.services, "styles", None)

    def hint(self) -> str:
        db = self.db
        if db is None:
            return ""
        return (f"Styles are kept in `{db.path}` (AUTOMATIC1111's styles.csv: copy yours there to use it). "
                f"A style's `{{prompt}}` is replaced by your prompt; without it the style is appended.")

    def build(self) -> None:
        m = self.tab.MODE
        with gr.Accordion("Styles editor", open=False, elem_id=f"{m}_styles_editor", visible=self.db is not None):
            with gr.Row():
                self.pick = gr.Dropdown(label="Style to edit", choices=self.ctx.style_names(), value=None,
                                        elem_id=f"{m}_style_pick", scale=2, allow_custom_value=False)
                self.name = gr.Textbox(label="Name", elem_id=f"{m}_style_name", scale=2,
                                       placeholder="a new name creates a style")
            self.prompt = gr.Textbox(label="Style prompt", elem_id=f"{m}_style_prompt", lines=2,
                                     placeholder="e.g. {prompt}, oil painting, by a famous artist")
            self.negative = gr.Textbox(label="Style negative prompt", elem_id=f"{m}_style_negative", lines=1)
            with gr.Row(elem_classes="preset-buttons"):
                self.copy = gr.Button("Copy from the prompt", size="sm", elem_id=f"{m}_style_copy")
                self.save = gr.Button("Save style", size="sm", elem_id=f"{m}_style_save", variant="primary")
                self.delete = gr.Button("Delete style", size="sm", elem_id=f"{m}_style_delete")
                self.apply_button = gr.Button("Apply to the prompt", size="sm", elem_id=f"{m}_style_apply")
            gr.Markdown(self.hint(), elem_id=f"{m}_styles_hint", elem_classes="styles-hint")
        self.ctx.style_pickers.append(self.pick)

    def wire(self) -> None:
        """Called once every tab is built: saving or deleting updates every tab's lists."""
        f = self.tab.fields
        quiet = dict(show_progress="hidden", api_visibility="private")
        fields, pickers = self.everyone()
        lists = fields + pickers
        self.pick.input(self.load, inputs=self.pick, outputs=[self.name, self.prompt, self.negative], queue=False,
                        **quiet)
        self.copy.click(lambda p, n: (p, n), inputs=[f["prompt"], f["negative_prompt"]],
                        outputs=[self.prompt, self.negative], queue=False, **quiet)
        self.save.click(self.save_style, inputs=[self.name, self.prompt, self.negative], outputs=lists,
                        concurrency_limit=None, **quiet)
        self.delete.click(self.delete_style, inputs=[self.pick, *fields], outputs=lists, concurrency_limit=None,
                          **quiet)
        self.apply_button.click(self.apply, inputs=[self.pick, f["prompt"], f["negative_prompt"]],
                                outputs=[f["prompt"], f["negative_prompt"]], queue=False, **quiet)

    def everyone(self) -> tuple[list, list]:
        """(every tab's Styles field, every editor's style list)."""
        return [t.fields["styles"] for t in self.ctx.generation_tabs() if "styles" in t.fields], \
            list(self.ctx.style_pickers)

    # ------------------------------------------------------------------ handlers
    def load(self, name: str | None):
        style = self.db.get(name) if name and self.db is not None else None
        if style is None:
            return gr.update(), gr.update(), gr.update()
        return style.name, style.prompt, style.negative_prompt

    def save_style(self, name: str, prompt: str, negative: str):
        from pipelines.prompts.styles import PromptStyle

        db = self._writable()
        name = (name or "").strip()
        if not name:
            raise gr.Error("Type a name for the style first")
        existed = db.get(name) is not None
        with errors_to_ui():
            db.set(PromptStyle(name, prompt or "", negative or ""))
            path = db.save()
        gr.Info(f"Style {name!r} {'updated' if existed else 'created'} in {path}", duration=TOAST_SECONDS)
        return self._lists(select=name)

    def delete_style(self, name: str | None, *chosen_styles):
        if not name:
            raise gr.Error("Choose the style to delete in 'Style to edit' first")
        db = self._writable()
        with errors_to_ui():
            db.delete(name)
            path = db.save()
        gr.Info(f"Style {name!r} deleted from {path}", duration=TOAST_SECONDS)
        return self._lists(select=None, chosen=chosen_styles)

    def apply(self, name: str | None, prompt: str, negative: str):
        """The chosen style written into the prompt boxes (A1111's "apply style" button)."""
        if not name or self.db is None or self.db.get(name) is None:
            raise gr.Error("Choose a style in 'Style to edit' first")
        new_prompt, new_negative, _ = self.db.apply(prompt or "", negative or "", [name])
        return new_prompt, new_negative

    def _writable(self):
        db = self.db
        if db is None:
            raise gr.Error("styles are not available")
        return db   # a read-only database (app exposed) refuses in save(), with the reason

    def _lists(self, select: str | None, chosen=None) -> tuple:
        """Updates for (every tab's Styles field, every editor's list); `chosen`: the Styles fields' values,
        given when a style is deleted (a field must not keep a name its choices lost)."""
        names = self.ctx.style_names()
        fields, pickers = self.everyone()
        out = []
        for i, _ in enumerate(fields):
            kept = [n for n in (chosen[i] or []) if n in names] if chosen is not None else None
            out.append(gr.update(choices=names) if kept is None else gr.update(choices=names, value=kept))
        for comp in pickers:
            out.append(gr.update(choices=names, value=select) if comp is self.pick else gr.update(choices=names))
        return tuple(out)
