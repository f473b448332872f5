"""History tab: every image in the outputs folders (all days, txt2img/img2img/extras/grids), newest first.

Backed by `pipelines.images.history.HistoryIndex` (a SQLite index of the infotexts under the data dir,
refreshed incrementally on each search). Search by prompt words, model, sampler, seed and day; a page of
thumbnails; the selected image with its parameters, Send to the generation tabs, favourite, and delete
(moved to `<outputs>/.trash/`; only when the app is not exposed to other machines).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

from pipelines.generate.samplers import SAMPLER_NAMES
from pipelines.images.history import HistoryIndex, HistoryItem, HistoryQuery

from .common import errors_to_ui
from .pnginfo import infotext_html, paste_updates

if TYPE_CHECKING:
    from .context import UIContext

PAGE_SIZE = 48


class HistoryTab:
    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx
        self._index: HistoryIndex | None = None
        self._index_lock = threading.Lock()

    @property
    def index(self) -> HistoryIndex:
        """Opened on first use (not at start-up: the first refresh of a large folder takes a while)."""
        with self._index_lock:
            if self._index is None:
                data = Path(getattr(self.ctx.args, "data_dir", ".") or ".")
                self._index = HistoryIndex(self.ctx.services.saver.root, data / "cache" / "history")
            return self._index

    @property
    def can_delete(self) -> bool:
        return not self.ctx.exposed

    def build(self) -> None:
        with gr.Tab("History", id="history", elem_id="tab_history") as self.tab:
            with gr.Row():
                self.text = gr.Textbox(label="Prompt words", placeholder="all words must appear", scale=3,
                                       elem_id="history_text")
                self.model = gr.Textbox(label="Model", placeholder="part of the name", scale=2)
                self.sampler = gr.Dropdown(["", *SAMPLER_NAMES], value="", label="Sampler", scale=2)
                self.seed = gr.Number(label="Seed", value=None, precision=0, scale=1, elem_id="history_seed")
                self.day_from = gr.Textbox(label="From day", placeholder="YYYY-MM-DD", scale=1)
                self.day_to = gr.Textbox(label="To day", placeholder="YYYY-MM-DD", scale=1)
                self.favourites = gr.Checkbox(label="Favourites only", value=False, scale=1)
            with gr.Row():
                self.search_button = gr.Button("Search / refresh", variant="primary", elem_id="history_search")
                self.prev_button = gr.Button("◀ Newer", size="sm")
                self.next_button = gr.Button("Older ▶", size="sm")
                self.page_info = gr.Markdown("", elem_id="history_page_info")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    self.gallery = gr.Gallery(label="Images", columns=6, height=560, object_fit="contain",
                                              allow_preview=False, elem_id="history_gallery")
                with gr.Column(scale=2):
                    self.image = gr.Image(label="Selected", type="filepath", interactive=False, height=320,
                                          elem_id="history_image")
                    self.info = gr.HTML("", elem_id="history_info", padding=False)
                    with gr.Row():
                        self.send_buttons = {name: gr.Button(f"Send to {name}", size="sm", variant="primary",
                                                             elem_id=f"history_send_to_{name}")
                                             for name in self.ctx.paste_tabs}
                    with gr.Row():
                        self.favourite_button = gr.Button("☆ Favourite", size="sm", elem_id="history_favourite")
                        self.delete_button = gr.Button("Delete (to trash)", size="sm", variant="stop",
                                                       visible=self.can_delete, elem_id="history_delete")
            self.items = gr.State([])        # the page's items (HistoryItem), for selection
            self.offset = gr.State(0)
            self.selected = gr.State(None)   # HistoryItem or None

    # ------------------------------------------------------------------ handlers (plain functions for tests)
    def query(self, text, model, sampler, seed, day_from, day_to, favourites, offset=0) -> HistoryQuery:
        return HistoryQuery(text=text or "", model=model or "", sampler=sampler or "",
                            seed=int(seed) if seed not in (None, "") else None, day_from=(day_from or "").strip(),
                            day_to=(day_to or "").strip(), favourites_only=bool(favourites), offset=max(0, int(offset)),
                            limit=PAGE_SIZE)

    def show_page(self, text, model, sampler, seed, day_from, day_to, favourites, offset=0):
        """(gallery value, page text, items, offset): refreshes the index, then one page of thumbnails."""
        with errors_to_ui():
            self.index.refresh()
            page = self.index.search(self.query(text, model, sampler, seed, day_from, day_to, favourites, offset))
            thumbs = [(Image.open(self.index.thumbnail(item.path)), _caption(item)) for item in page.items]
        first = offset + 1 if page.items else 0
        text_out = f"{first}–{offset + len(page.items)} of {page.total} image(s)"
        return thumbs, text_out, page.items, offset

    def select(self, items: list[HistoryItem], evt: gr.SelectData):
        item = items[evt.index] if evt is not None and 0 <= evt.index < len(items) else None
        return self._selected_updates(item)

    def _selected_updates(self, item: HistoryItem | None):
        if item is None:
            return None, "", None, gr.update(value="☆ Favourite")
        with errors_to_ui():
            path = str(self.index.file(item.path))
        star = "★ Favourite" if item.favourite else "☆ Favourite"
        return path, infotext_html(item.infotext), item, gr.update(value=star)

    def toggle_favourite(self, item: HistoryItem | None):
        if item is None:
            raise gr.Error("Select an image first")
        with errors_to_ui():
            self.index.set_favourite(item.path, not item.favourite)
        return self._selected_updates(_replace(item, favourite=not item.favourite))

    def delete(self, item: HistoryItem | None):
        if not self.can_delete:
            raise gr.Error("Deleting images is disabled while the app is reachable from other machines")
        if item is None:
            raise gr.Error("Select an image first")
        with errors_to_ui():
            moved = self.index.delete(item.path)
        gr.Info(f"Moved to {moved.parent.name}/{moved.name} in the trash folder")
        return self._selected_updates(None)

    # ------------------------------------------------------------------ wiring
    def wire(self) -> None:
        filters = [self.text, self.model, self.sampler, self.seed, self.day_from, self.day_to, self.favourites]
        page_out = [self.gallery, self.page_info, self.items, self.offset]
        opts = dict(show_progress="hidden", api_visibility="private")
        self.search_button.click(lambda *f: self.show_page(*f, 0), inputs=filters, outputs=page_out, **opts)
        self.text.submit(lambda *f: self.show_page(*f, 0), inputs=filters, outputs=page_out, **opts)
        self.prev_button.click(lambda *f: self.show_page(*f[:-1], max(0, f[-1] - PAGE_SIZE)),
                               inputs=[*filters, self.offset], outputs=page_out, **opts)
        self.next_button.click(lambda *f: self.show_page(*f[:-1], f[-1] + PAGE_SIZE),
                               inputs=[*filters, self.offset], outputs=page_out, **opts)
        self.tab.select(lambda *f: self.show_page(*f, 0), inputs=filters, outputs=page_out, **opts)
        selected_out = [self.image, self.info, self.selected, self.favourite_button]
        self.gallery.select(self.select, inputs=self.items, outputs=selected_out, **opts)
        self.favourite_button.click(self.toggle_favourite, inputs=self.selected, outputs=selected_out, **opts)
        self.delete_button.click(self.delete, inputs=self.selected, outputs=selected_out, **opts).then(
            lambda *f: self.show_page(*f), inputs=[*filters, self.offset], outputs=page_out, **opts)
        self.ctx.paste.wire_buttons(self.send_buttons, self._wire_target)

    def _wire_target(self, button, target) -> None:
        def send(item: HistoryItem | None):
            if item is None:
                raise gr.Error("Select an image first")
            path = str(self.index.file(item.path))
            return paste_updates(self.ctx, target, item.infotext, path if target.image else None)

        button.click(send, inputs=self.selected, outputs=self.ctx.paste_outputs(target), show_progress="hidden",
                     api_visibility="private")


def _caption(item: HistoryItem) -> str:
    words = item.prompt if len(item.prompt) <= 60 else item.prompt[:57] + "..."
    return f"{item.seed if item.seed is not None else ''} · {words}"


def _replace(item: HistoryItem, **changes: Any) -> HistoryItem:
    from dataclasses import replace

    return replace(item, **changes)
