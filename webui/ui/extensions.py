"""The extensions in the UI: the Extensions tab (status with tracebacks, enable/disable, install from a git
URL), the extensions' parameter widgets on the generation tabs and the tabs they add (`add_tab`).

Loading, installing and the hook wiring are `webui.extensions.loader`'s; this module only shows them.
"""
from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.core.errors import UserError

from ..extensions.loader import INSTALL_DISABLED, ExtensionManager, status_html
from .common import user_error
from .widgets import make_widget

if TYPE_CHECKING:
    from .context import UIContext


def extension_widgets(ctx: "UIContext", mode: str, elem_prefix: str = "") -> dict[str, Any]:
    """Widgets for the extension parameters of `mode`, one accordion per section; {param name: component}.
    Call inside the tab's settings column. Values reach the engine in `request.extra`."""
    hooks = ctx.services.engine.hooks
    sections: dict[str, list] = {}
    for ep in hooks.extension_params(mode):
        sections.setdefault(ep.section, []).append(ep.param)
    fields: dict[str, Any] = {}
    for section, params in sections.items():
        with gr.Accordion(section, open=False, elem_classes="extension-params"):
            for p in params:
                fields[p.name] = make_widget(p, elem_prefix=elem_prefix or mode)
    return fields


def build_extension_tabs(ctx: "UIContext") -> list[Any]:
    """One gr.Tab per `add_tab`; a tab whose build function raises shows the error instead."""
    hooks = ctx.services.engine.hooks
    built = []
    for i, tab in enumerate(hooks.tabs):
        if tab.owner in hooks.disabled:
            continue
        with gr.Tab(tab.title, id=f"ext_{i}", elem_id=f"tab_ext_{re.sub(r'[^A-Za-z0-9_]', '_', tab.owner)}_{i}") as t:
            try:
                tab.build()
            except Exception as err:   # noqa: BLE001 - the rest of the UI must come up
                hooks.record_failure(tab.owner, f"tab {tab.title!r}", err)
                gr.Markdown(f"**This tab could not be built** ({html.escape(type(err).__name__)}: "
                            f"{html.escape(str(err))}); see the Extensions tab.")
        built.append(t)
    return built



class ExtensionsTab:
    """List with status (enabled, loaded, error + traceback), enable/disable, install from a git URL."""

    def __init__(self, ctx: "UIContext"):
        self.ctx = ctx
        self.manager: ExtensionManager | None = getattr(ctx.services, "extensions", None)

    def _choices(self) -> list[tuple[str, str]]:
        m = self.manager
        return [(f"{e.name} ({e.id})", e.id) for e in (m.extensions if m else [])
                if not (e.error and e.manifest is None)]

    def _enabled(self) -> list[str]:
        m = self.manager
        return [e.id for e in (m.extensions if m else []) if e.enabled]

    def build(self) -> None:
        allowed = self.manager.install_allowed if self.manager is not None else False
        with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions") as self.tab:
            with gr.Row():
                self.refresh = gr.Button("⟳ Refresh status", size="sm", elem_id="extensions_refresh", scale=0)
            self.table = gr.HTML(status_html(self.manager), elem_id="extensions_status")
            with gr.Group():
                self.enabled = gr.CheckboxGroup(choices=self._choices(), value=self._enabled(), label="Enabled",
                                                elem_id="extensions_enabled")
                self.apply = gr.Button("Save (applies when the app restarts)", size="sm", elem_id="extensions_apply")
            with gr.Accordion("Install from a git URL", open=False, elem_id="extensions_install_box"):
                if not allowed:
                    gr.Markdown(INSTALL_DISABLED.replace("--enable-insecure-extension-access",
                                                         "`--enable-insecure-extension-access`"),
                                elem_id="extensions_install_disabled")
                self.url = gr.Textbox(label="URL of the extension's git repository", interactive=allowed,
                                      placeholder="https://github.com/owner/repo.git", elem_id="extensions_url")
                self.install = gr.Button("Install", interactive=allowed, elem_id="extensions_install",
                                         size="sm")
            self.message = gr.Markdown("", elem_id="extensions_message")
        self.refresh.click(self.refresh_status, outputs=self.table, queue=False, show_progress="hidden",
                           api_visibility="private")
        self.tab.select(self.refresh_status, outputs=self.table, queue=False, show_progress="hidden",
                        api_visibility="private")
        self.apply.click(self.save, inputs=self.enabled, outputs=[self.message, self.table], queue=False,
                         api_visibility="private")
        self.install.click(self.install_url, inputs=self.url, outputs=[self.message, self.table],
                           api_visibility="private", concurrency_limit=1)

    def refresh_status(self) -> str:
        return status_html(self.manager)

    def save(self, enabled: list[str] | None):
        if self.manager is None:
            return "Extensions are not available.", status_html(None)
        enabled = set(enabled or [])
        ids = {ext_id for _, ext_id in self._choices()}
        self.manager.save_disabled((self.manager.disabled_ids() | ids) - enabled)
        return ("Saved. **Restart the app** to load or unload extensions.", status_html(self.manager))

    def install_url(self, url: str):
        if self.manager is None:
            return "Extensions are not available.", status_html(None)
        try:
            target = self.manager.install(url)
        except UserError as err:
            raise user_error(err) from err
        return (f"Installed into `{target}`. **Restart the app** to load it.", status_html(self.manager))
