"""Start-up time: process start → the UI answering HTTP 200, no model loaded (`--ui-debug-mode`).

    python -m bench.startup [--runs 3]        (or: python -m bench startup)

Each run starts `python -m webui --ui-debug-mode` on a free port with an empty data folder, polls
`GET /` until it answers 200 and stops the process. Reports the median (target: 10 s) and writes
bench/results/startup.json.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_200(url: str, proc: subprocess.Popen, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def one_run(python: str, extra: list[str], timeout: float) -> tuple[float, str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        cmd = [python, "-m", "webui", "--ui-debug-mode", "--port", str(port), "--data-dir", tmp,
               "--outdir", str(Path(tmp) / "outputs"), *extra]
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        log = Path(tmp) / "app.log"
        with open(log, "wb") as out:
            start = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                ready = wait_http_200(f"http://127.0.0.1:{port}/", proc, timeout)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        text = log.read_text(errors="replace")
    reported = next((line for line in text.splitlines() if line.startswith("Startup time:")), "")
    return ready - start, reported


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--python", default=sys.executable)
    args, extra = p.parse_known_args(argv)

    times = []
    for i in range(args.runs):
        seconds, reported = one_run(args.python, extra, args.timeout)
        times.append(seconds)
        print(f"run {i + 1}: {seconds:.2f}s to HTTP 200 ({reported or 'no self-report'})", flush=True)
    median = statistics.median(times)
    figures = {
        "median_seconds": round(median, 3),
        "runs_seconds": [round(t, 3) for t in times],
        "target_seconds": TARGET_SECONDS,
        "meets_target": median <= TARGET_SECONDS,
        "mode": "--ui-debug-mode (no model loaded), empty data folder; process start to GET / = 200",
    }
    write_result("startup", figures)
    print(f"median {median:.2f}s (target {TARGET_SECONDS:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
