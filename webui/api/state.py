"""What the /sdapi/v1 routes share (`ApiState`: services, options, styles, the queue wait) and the API's own
errors. Its own module so that the route groups (routes, generation, extras) all depend on it and not on
each other."""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import Request

from pipelines.core.errors import UserError

from .images import encode_image
from .options import OPTIONS_FILE, OptionsStore

log = logging.getLogger(__name__)


class NotFound(UserError):
    """A model named in a request is not among the discovered ones (HTTP 404); `field` names where."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class NotAvailable(UserError):
    """A feature this build does not have (HTTP 501)."""


class ApiState:
    """What the routes share: the services, the options, the lazily made interrogator."""

    def __init__(self, services):
        self.services = services
        data_dir = Path(getattr(services.args, "data_dir", ".") or ".")
        self.store = OptionsStore(data_dir / OPTIONS_FILE, services.saver.root)
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._styles = None
        self._styles_stamp = None
        self._preview_cache: tuple[Any, str] | None = None
        self.last_checkpoint: str | None = None   # what unload-checkpoint dropped (reload brings it back)

    # ------------------------------------------------------------------ lookups (no paths, no traversal)
    def find_checkpoint(self, name: str, field: str):
        try:
            return self.services.registry.find_checkpoint(name)
        except UserError as err:
            raise NotFound(field, str(err)) from None

    def check_vae(self, name: str, field: str) -> str:
        if name in ("Automatic", "None"):
            return name
        try:
            return self.services.registry.find_vae(name).name
        except UserError as err:
            raise NotFound(field, str(err)) from None

    # ------------------------------------------------------------------ styles (A1111's styles.csv)
    def styles(self):
        """The prompt styles of `<data dir>/styles.csv` (reread when the file changes); None without support."""
        existing = getattr(self.services, "styles", None) or getattr(self.services.engine, "styles", None)
        if existing is not None:
            return existing
        try:
            from pipelines.prompts.styles import StyleDatabase
        except ImportError:
            return None
        path = self.data_dir / "styles.csv"
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._styles is None or stamp != self._styles_stamp:
                self._styles = StyleDatabase(path)
                self._styles_stamp = stamp
                if self._styles.load_error:
                    log.warning("%s", self._styles.load_error)
            return self._styles

    # ------------------------------------------------------------------ ControlNet, LoRA, embeddings
    def controlnet_supported(self) -> bool:
        """The engine takes ControlNet units and the manager knows the ControlNet models."""
        import inspect

        if getattr(self.services.manager, "controlnets", None) is None:
            return False
        try:
            return "controlnet" in inspect.signature(self.services.engine.txt2img).parameters
        except (TypeError, ValueError):
            return False

    def networks(self):
        return getattr(self.services.engine, "networks", None)

    # ------------------------------------------------------------------ queue
    async def run(self, fn: Callable, label: str, request: Request | None = None) -> Any:
        """Run `fn(control)` on the shared job queue and wait for it without blocking a thread. With the
        `request`: bounded per client address (429 past the limit), and dropped (queued) or interrupted
        (running) when the client disconnects."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def wake() -> None:
            finished.set()

        def work(control):
            try:
                return fn(control)
            finally:
                try:
                    loop.call_soon_threadsafe(wake)
                except RuntimeError:  # the server's loop is gone (shutdown)
                    pass

        client = request.client.host if request is not None and request.client else None
        job = self.services.queue.submit(work, label=label, client=client)
        while not job.done.is_set():
            if request is not None and await request.is_disconnected():
                log.info("client went away: job %s (%s) cancelled", job.id, label)
                self.services.queue.cancel(job)
                request = None   # cancelled once; the loop waits for the job to end
            try:
                await asyncio.wait_for(finished.wait(), timeout=0.5 if not finished.is_set() else 0.01)
            except asyncio.TimeoutError:
                pass
            if finished.is_set() and not job.done.is_set():
                await asyncio.sleep(0.002)
        if job.error is not None:
            raise job.error
        return job.result

    # ------------------------------------------------------------------ progress preview
    def preview_b64(self, job, snap) -> Optional[str]:
        if snap.preview is None:
            return None
        key = (job.id, snap.preview_id)
        cached = self._preview_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        data = encode_image(snap.preview)
        self._preview_cache = (key, data)
        return data
