"""What every tab shares: the `UIContext` (services, access control, the top bar's components, paste targets,
the UI's start values) and the shape of a generation tab as its panels see it (`GenerationTabView`).

Tabs and panels import this module, never `blocks` (which imports them all) nor each other for their
types, so the UI has no import cycle.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import gradio as gr

from pipelines.core.errors import UserError

from ..app.auth import is_exposed
from .common import PasteRegistry, PasteTarget

if TYPE_CHECKING:
    from ..app.auth import AccessControl
    from ..app.services import Services

log = logging.getLogger(__name__)

POLL_SECONDS = 0.3

# Tabs that take an image from another tab ("inpaint" is the img2img tab's Inpaint sub-tab): every tab's
# "Send to" buttons are made from this list and wired once all tabs exist (`UIContext.wire_send`).
IMAGE_TABS: tuple[str, ...] = ("img2img", "inpaint")


@dataclass
class UIContext:
    services: "Services"
    access: "AccessControl"
    paste: PasteRegistry = field(default_factory=lambda: PasteRegistry(image_tabs=IMAGE_TABS))
    checkpoint: Any = None
    vae: Any = None
    tabs: Any = None
    startup_job: Any = None            # the initial checkpoint load, once submitted
    startup_title: str | None = None   # the checkpoint the app loads at start (set before its job exists)
    tab_objects: dict[str, Any] = field(default_factory=dict)
    start_values: dict[str, Any] = field(default_factory=dict)   # the UI's defaults (presets/defaults.json)
    preset_dropdowns: list = field(default_factory=list)         # every tab's preset picker
    # pnginfo.paste_updates, set by build_ui: passed in rather than imported, so this module (which every
    # tab imports for its type) imports no tab
    paste_sender: Callable[..., tuple] | None = None
    # (handler, inputs, outputs) to run after the active checkpoint changes (TopBar.events chains them)
    model_listeners: list = field(default_factory=list)
    style_pickers: list = field(default_factory=list)            # every tab's styles-editor list

    def __post_init__(self):
        store = getattr(self.services, "presets", None)
        if store is not None and not self.start_values and _defaults_customised(store):
            # Only a customised defaults.json is validated here: validating imports diffusers (seconds of
            # start-up), and the declared defaults need no check.
            try:
                self.start_values, warnings = store.defaults()
            except Exception:  # noqa: BLE001 - the declared defaults then; the log says why
                log.exception("could not read the UI defaults preset")
                warnings = []
            for w in warnings:
                log.warning("UI defaults: %s", w)

    def when_ready(self, fn):
        """A page-load handler running `fn()` once the start-up checkpoint load is over (work that imports
        the engine's libraries must not race the load's own first imports)."""

        def handler():
            while self.loading():
                if self.startup_job is not None:
                    self.startup_job.done.wait(POLL_SECONDS)
                else:
                    time.sleep(POLL_SECONDS)
            return fn()

        return handler

    def generation_tabs(self) -> list:
        """The txt2img and img2img tabs (those with prompts, presets and styles), once built."""
        return [t for t in self.tab_objects.values() if hasattr(t, "presets") and hasattr(t, "fields")]

    @property
    def args(self):
        return self.services.args

    @property
    def exposed(self) -> bool:
        return is_exposed(self.args)

    @property
    def can_open_folder(self) -> bool:
        # Opening a folder happens on the server machine: only sensible for a local, unexposed app.
        return not self.exposed and (sys.platform in ("win32", "darwin") or shutil.which("xdg-open") is not None)

    @property
    def paste_tabs(self) -> tuple[str, ...]:
        """Tabs that receive pasted parameters (PNG Info → ...), in tab order."""
        return ("txt2img",) + self.paste.image_tabs

    def open_folder(self, folder: Path) -> bool:
        if not self.can_open_folder:
            return False
        folder.mkdir(parents=True, exist_ok=True)
        cmd = {"win32": ["explorer"], "darwin": ["open"]}.get(sys.platform, ["xdg-open"])
        try:
            subprocess.Popen([*cmd, str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return True
        except OSError:
            return False

    # ------------------------------------------------------------------ models
    def checkpoint_titles(self) -> list[str]:
        return [m.title for m in self.services.registry.checkpoints]

    def style_names(self) -> list[str]:
        """Prompt styles (styles.csv) when the services provide a style database, else none."""
        db = getattr(self.services, "styles", None)
        try:
            return list(db.names()) if db is not None else []
        except Exception:  # noqa: BLE001 - a broken styles.csv must not stop the UI; the log says why
            log.exception("could not read the prompt styles")
            return []

    def vae_choices(self) -> list[str]:
        return ["Automatic", "None"] + [m.name for m in self.services.registry.vaes]

    def current_checkpoint(self) -> str | None:
        m = self.services.manager
        if m.active is not None:
            return m.active.info.title
        if self.loading():
            return getattr(self.startup_job, "target_title", None) or self.startup_title
        return None

    def find_checkpoint(self, query: str) -> str | None:
        try:
            return self.services.registry.find_checkpoint(query).title
        except UserError:
            return None

    def loading(self) -> bool:
        """The start-up checkpoint load is pending or running."""
        job = self.startup_job
        if job is None:   # submitted right after the server starts answering
            return self.startup_title is not None and self.services.manager.active is None
        return not job.done.is_set()

    def require_model(self, wanted: str) -> None:
        if wanted or self.services.manager.active is not None or self.loading():
            return
        if self.services.registry.checkpoints:
            raise UserError("no checkpoint is loaded: choose one in the Checkpoint list at the top")
        raise UserError(no_model_message(self.services))

    def paste_outputs(self, target: PasteTarget, with_image: bool = True) -> list:
        """Components a send to `target` updates: the tabs, the checkpoint, the fields, then (for a target
        that takes an image) the image and the target's extras (sub-tab, mode)."""
        out = [self.tabs, self.checkpoint, *target.fields.values()]
        if with_image and target.image is not None:
            out += [target.image, *(comp for comp, _ in target.extra)]
        if target.controlnet is not None:
            out += target.controlnet.paste_components()
        if target.paste_params and target.fields:
            out.append(self.vae)
        return out

    def wire_send(self, button, state, target: PasteTarget) -> None:
        """Send the selected result (image and its parameters) to `target` with one click."""
        paste_updates = self.paste_sender

        def send(st: dict):
            st = st or {}
            paths, infotexts = st.get("paths") or [], st.get("infotexts") or []
            if not paths and not infotexts:
                raise gr.Error("Generate an image first")
            idx = min(st.get("index", 0), max(len(paths), len(infotexts)) - 1)
            path = paths[idx] if idx < len(paths) else None
            text = infotexts[idx] if idx < len(infotexts) else None
            return paste_updates(self, target, text, path)

        button.click(send, inputs=state, outputs=self.paste_outputs(target), show_progress="hidden",
                     api_visibility="private")

    # Kept for extensions written against the first UI: sends only the image.
    def wire_send_image(self, button, state, target: PasteTarget) -> None:
        self.wire_send(button, state, target)


def _defaults_customised(store) -> bool:
    """presets/defaults.json sets something (read as plain JSON: no validation, no engine import)."""
    import json

    from pipelines.params.presets import DEFAULTS_FILE

    path = store.folder / DEFAULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True   # let the store report what is wrong with it
    return not isinstance(data, dict) or any(data.get(k) for k in ("params", "checkpoint", "vae", "loras"))


def no_model_message(services: "Services") -> str:
    dirs = services.paths.dirs("checkpoints")
    return (f"no checkpoint found. Put a .safetensors checkpoint (or a diffusers folder) in {dirs[0]}, "
            f"or start with --models-dir pointing at an existing AUTOMATIC1111 models folder "
            f"(or --ckpt-dir at a folder of checkpoints), then press ⟳")


class GenerationTabView(Protocol):
    """What the panels of a generation tab (presets, styles, ControlNet, extra networks) use of it."""

    MODE: str
    ctx: UIContext
    services: Any
    fields: dict[str, Any]
    presets: Any

    def init_image_inputs(self) -> dict[str, Any]: ...   # img2img only: the input image components

    def init_image_for_preview(self, values: dict[str, Any]): ...   # img2img only
