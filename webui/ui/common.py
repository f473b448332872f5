"""Pieces the tabs share: token counting, progress display, errors shown to the user, paste targets."""
from __future__ import annotations

import html
import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pipelines.core.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 75


# ---------------------------------------------------------------------------------------- tokens

def count_tokens(prompt: str, steps: int = 20) -> tuple[int, int]:
    """(tokens, capacity) as A1111's counter shows them: capacity grows by 75-token chunks.

    With prompt editing the longest scheduled text counts; BREAK and the comma backtrack can start a
    chunk early, so the capacity is the number of chunks the encoder will really use times 75.
    """
    from pipelines.prompts import parser as pp
    from pipelines.models.tokenizers import clip_tokenizer

    tok = clip_tokenizer()
    try:
        schedule = pp.get_schedule(prompt or "", max(1, int(steps or 1)))
    except ValueError:
        schedule = [(1, prompt or "")]
    best = (0, CHUNK)
    for _, text in schedule:
        flat, breaks = pp.tokenize_weighted(tok, pp.parse_attention(text))
        chunks = pp.chunk_tokens(flat, breaks, CHUNK, pad_id=tok.eos_token_id, comma_id=pp.comma_token_id(tok))
        capacity = max(len(chunks) * CHUNK, math.ceil(max(len(flat), 1) / CHUNK) * CHUNK)
        best = max(best, (len(flat), capacity))
    return best


EMPTY_COUNTER = "<span class='token-counter' title='tokens / capacity (75 per chunk)'>0/75</span>"


def token_counter_html(prompt: str, steps: int = 20) -> str:
    if not prompt:
        return EMPTY_COUNTER
    try:
        tokens, capacity = count_tokens(prompt, steps)
    except Exception as err:  # the counter is a hint; never block typing
        log.debug("token count failed: %s", err)
        return "<span class='token-counter'>?/75</span>"
    over = " over" if tokens > CHUNK and capacity > CHUNK else ""
    return f"<span class='token-counter{over}' title='tokens / capacity (75 per chunk)'>{tokens}/{capacity}</span>"


# ---------------------------------------------------------------------------------------- errors

def user_error(err: BaseException):
    """The gr.Error a person reads for `err` (UserError/ParameterError text as is)."""
    import gradio as gr

    if isinstance(err, gr.Error):
        return err
    if isinstance(err, UserError):
        return gr.Error(str(err), print_exception=False)
    log.exception("unexpected error", exc_info=err)
    return gr.Error(f"{type(err).__name__}: {err}. (details in the console log)", print_exception=False)


@contextmanager
def errors_to_ui() -> Iterator[None]:
    """Turn any error inside into a readable gr.Error (GeneratorExit and gr.Error pass through)."""
    import gradio as gr

    try:
        yield
    except (gr.Error, GeneratorExit):
        raise
    except Exception as err:
        raise user_error(err) from err


# ---------------------------------------------------------------------------------------- toasts

TOAST_SECONDS = 6          # Gradio's default (10 s) kept a toast over the page long after it was read
_TOAST_REPEAT_SECONDS = 8  # the same message again within this time is not shown twice
_recent_toasts: dict[str, float] = {}
_toast_lock = threading.Lock()


def _fresh(message: str) -> bool:
    now = time.monotonic()
    with _toast_lock:
        for old in [m for m, t in _recent_toasts.items() if now - t > _TOAST_REPEAT_SECONDS]:
            del _recent_toasts[old]
        if message in _recent_toasts:
            return False
        _recent_toasts[message] = now
        return True


def toast_warnings(messages, kind: str = "warning") -> list[str]:
    """Show each message once as a short toast (a repeat of one shown in the last few seconds, e.g. the
    same missing LoRA named by the preset and again by the job, is dropped); returns those shown."""
    import gradio as gr

    shown = []
    for message in dict.fromkeys(m for m in messages if m):
        if _fresh(message):
            (gr.Info if kind == "info" else gr.Warning)(message, duration=TOAST_SECONDS)
            shown.append(message)
    return shown


# ---------------------------------------------------------------------------------------- progress

def progress_html(text: str, fraction: float | None = None, eta: float | None = None, *, state: str = "") -> str:
    if not text and fraction is None:
        return ""
    bar = ""
    if fraction is not None:
        pct = max(0.0, min(1.0, fraction)) * 100
        bar = f"<div class='progress-bar'><div class='progress-fill' style='width:{pct:.1f}%'></div></div>"
    eta_text = f" · ETA {format_seconds(eta)}" if eta is not None and fraction and fraction < 1 else ""
    return (f"<div class='job-progress {state}'>{bar}<div class='progress-text'>{html.escape(text)}{eta_text}"
            f"</div></div>")


def format_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


# ---------------------------------------------------------------------------------------- paste

@dataclass
class PasteTarget:
    """A tab that accepts parameters (and optionally an image) sent from another tab.

    `fields`: param name → component, filled from an infotext. `image`: the component an image is sent
    to (None: parameters only); `image_value` turns a file path into that component's value (an image
    editor takes a dict). `extra`: (component, value) pairs set along with the image (the sub-tab to
    select, the tab's mode state). `paste_params`: False for a target that takes only the image (PNG Info).
    """

    name: str                      # "txt2img", "img2img", "inpaint", "pnginfo"
    tab: Any                       # the gr.Tab, selected when something is sent to it
    fields: dict[str, Any]         # param name → component
    image: Any = None              # image input component, for tabs that take one
    tab_id: str = ""
    image_value: Callable[[str], Any] | None = None
    extra: list[tuple[Any, Any]] = field(default_factory=list)
    paste_params: bool = True
    label: str = ""                # button text after "Send to "
    controlnet: Any = None         # the tab's ControlNetPanel: "ControlNet N" infotext entries fill its units

    def value_for(self, path: str | None):
        if not path:
            return None
        return self.image_value(path) if self.image_value else path


@dataclass
class PasteRegistry:
    """Send-to buttons are wired through here once every tab exists, so no button is dead."""

    targets: dict[str, PasteTarget] = field(default_factory=dict)
    image_tabs: tuple[str, ...] = ()   # the tabs that will accept an image (declared before building)

    def add(self, target: PasteTarget) -> None:
        self.targets[target.name] = target

    def wire_buttons(self, buttons: dict, connect, accepts=lambda target: True) -> None:
        """For each send-to button (by target tab name): `connect(button, target)`, or hide the button when
        that tab does not exist or `accepts(target)` is false."""
        for name, button in buttons.items():
            target = self.targets.get(name)
            if target is None or not accepts(target):
                button.visible = False
                continue
            connect(button, target)
