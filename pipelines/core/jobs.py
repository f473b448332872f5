"""One job queue per device: the UI and the API submit here, one worker thread runs jobs in order.

A job is a callable taking a `JobControl` (progress reporting, interrupt and skip flags). Callers see
their queue position, live progress (with a preview image) and the result or the error; a job is
never lost: it completes, fails with its error, or is cancelled explicitly.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import Interrupted, Skipped, UserError

log = logging.getLogger(__name__)


class QueueFull(UserError):
    """The queue (in total, or for this client) holds as many waiting jobs as allowed: try again later."""

    status = 429


@dataclass
class ProgressInfo:
    """What a progress bar shows. `fraction` covers the whole job (all images, both hires passes)."""

    fraction: float = 0.0
    step: int = 0
    steps: int = 0
    image: int = 0            # index of the image being made (0-based) ...
    images: int = 0           # ... out of this many
    eta_seconds: float | None = None
    text: str = ""
    preview: Any = None       # PIL image or None
    preview_id: int = 0       # increments with each new preview (API: current_image changes)


class JobControl:
    """Handed to a running job: it reports progress and checks the user's interrupt/skip requests."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.skipped = threading.Event()
        self.progress = ProgressInfo()
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def interrupt(self) -> None:
        self.interrupted.set()

    def skip(self) -> None:
        self.skipped.set()

    def check(self) -> None:
        """Raise Interrupted / Skipped at a safe point (between sampler steps)."""
        if self.interrupted.is_set():
            raise Interrupted()
        if self.skipped.is_set():
            self.skipped.clear()
            raise Skipped()

    def update(self, **changes) -> None:
        with self._lock:
            if "preview" in changes and changes["preview"] is not None:
                changes["preview_id"] = self.progress.preview_id + 1
            for k, v in changes.items():
                setattr(self.progress, k, v)
            p = self.progress
            elapsed = time.monotonic() - self.started
            if p.fraction > 0.01:
                p.eta_seconds = max(0.0, elapsed / p.fraction - elapsed)

    def snapshot(self) -> ProgressInfo:
        with self._lock:
            return ProgressInfo(**vars(self.progress))


@dataclass
class Job:
    id: int
    fn: Callable[[JobControl], Any]
    label: str = ""
    state: str = "queued"          # queued, running, done, failed, cancelled
    result: Any = None
    error: BaseException | None = None
    control: JobControl = field(default_factory=JobControl)
    done: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.time)
    client: str | None = None      # who asked (an address), for the per-client bound

    def wait(self, timeout: float | None = None) -> Any:
        """Block until finished; returns the result or raises the job's error."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"job {self.id} still {self.state}")
        if self.error is not None:
            raise self.error
        return self.result


class JobQueue:
    """`max_pending` / `max_per_client`: waiting jobs allowed in total / per client (None = unbounded);
    `submit` raises QueueFull beyond them. Jobs submitted without a client count only to the total."""

    def __init__(self, name: str = "device", *, max_pending: int | None = None,
                 max_per_client: int | None = None) -> None:
        self.max_pending = max_pending
        self.max_per_client = max_per_client
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self.current: Job | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.name = name
        self.completed = 0

    def start(self) -> "JobQueue":
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"jobs-{self.name}", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down: queued jobs end cancelled, the running one is interrupted (at its next step), and
        the worker is waited for up to `timeout` seconds."""
        with self._cond:
            self._stop = True
            while self._queue:
                job = self._queue.popleft()
                job.state, job.error = "cancelled", Interrupted()
                job.done.set()
            if self.current is not None:
                self.current.control.interrupt()
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=timeout)

    def submit(self, fn: Callable[[JobControl], Any], label: str = "", *, client: str | None = None,
               bounded: bool = True) -> Job:
        """Queue `fn`. `bounded=False` for the app's own work (start-up load), which is never refused."""
        job = Job(next(self._ids), fn, label, client=client)
        with self._cond:
            if bounded:
                self._check_room(client)
            self._queue.append(job)
            self._cond.notify_all()
        self.start()
        return job

    def _check_room(self, client: str | None) -> None:
        if self.max_pending is not None and len(self._queue) >= self.max_pending:
            raise QueueFull(f"the queue is full ({len(self._queue)} jobs waiting); try again when it has room")
        if client is not None and self.max_per_client is not None:
            mine = sum(1 for j in self._queue if j.client == client) + (
                1 if self.current is not None and self.current.client == client else 0)
            if mine >= self.max_per_client:
                raise QueueFull(f"you have {mine} jobs queued or running, the most one client may have; wait "
                                "for them to finish")

    def position(self, job: Job) -> int:
        """0 = running now, n = n jobs ahead of it, -1 = finished."""
        with self._cond:
            if job is self.current:
                return 0
            try:
                return list(self._queue).index(job) + 1
            except ValueError:
                return -1

    def cancel(self, job: Job) -> bool:
        """Remove a queued job (it ends 'cancelled') or interrupt it when already running."""
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                job.state = "cancelled"
                job.error = Interrupted()
                job.done.set()
                return True
        if job is self.current:
            job.control.interrupt()
            return True
        return False

    def interrupt_current(self) -> bool:
        job = self.current
        if job is not None:
            job.control.interrupt()
        return job is not None

    def skip_current(self) -> bool:
        job = self.current
        if job is not None:
            job.control.skip()
        return job is not None

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft()
                self.current = job
                job.state = "running"
                job.control.started = time.monotonic()
            try:
                job.result = job.fn(job.control)
                job.state = "done"
            except BaseException as err:  # the worker must survive any job failure
                job.error = err
                job.state = "cancelled" if isinstance(err, (Interrupted, Skipped)) else "failed"
                if job.state == "failed":
                    log.debug("job %s failed", job.id, exc_info=True)
            finally:
                with self._cond:
                    self.current = None
                    self.completed += 1
                job.done.set()
