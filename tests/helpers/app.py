"""Helpers for tests and benchmarks that run the real app: a tiny model folder and the app as a process.

    data = make_tiny_data_dir(tmp)                    # <tmp>/models/Stable-diffusion/tiny-sd1 (diffusers)
    with AppProcess(["--data-dir", str(data), ...]) as app:
        requests.get(app.url)
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"Running on local URL:\s+(http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny_data_dir(root: str | os.PathLike[str], name: str = "tiny-sd1") -> Path:
    """A data folder with one tiny random SD1 model as a diffusers folder (64x64 images in a few steps)."""
    from bench.synth.factory import tiny_pipeline, write_diffusers_folder

    root = Path(root)
    target = root / "models" / "Stable-diffusion" / name
    if not (target / "model_index.json").exists():
        write_diffusers_folder(tiny_pipeline("sd1", seed=1), target)
    return root


def tiny_app_args(data: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "--outdir", str(Path(data) / "outputs"), "--precision", "fp32",
            "--device", "cpu", "--ckpt", "tiny-sd1", *extra]


class AppProcess:
    """`python -m webui ARGS` in a subprocess; `url` once it serves, `output` = everything it printed."""

    def __init__(self, args: list[str], *, port: int | None = None, timeout: float = 90.0, env: dict | None = None):
        self.port = port or free_port()
        self.args = [*args, "--port", str(self.port)]
        self.timeout = timeout
        self.env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                        **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def _reader(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float | None = None) -> re.Match:
        """Wait until the output matches `pattern` (regex); raises with the output so far."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while True:
                m = rx.search("".join(self._lines))
                if m:
                    return m
                if self.proc.poll() is not None and not self._reader_thread.is_alive():
                    raise RuntimeError(f"app exited ({self.proc.returncode}) before printing {pattern!r}:\n"
                                       + "".join(self._lines)[-4000:])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {pattern!r} after {timeout or self.timeout:.0f}s:\n"
                                       + "".join(self._lines)[-4000:])
                self._cond.wait(min(left, 0.5))

    def start(self) -> "AppProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "webui", *self.args], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader_thread = threading.Thread(target=self._reader, daemon=True)
        self._reader_thread.start()
        self.url = self.wait_for(URL_LINE.pattern).group(1)
        return self

    def wait_model_loaded(self, timeout: float = 120.0) -> None:
        self.wait_for(r"pipelines\.models\.manager: loaded ", timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "AppProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
