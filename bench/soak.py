"""`python -m bench soak [--clients N] [--seconds T]`: N concurrent API clients send random valid and invalid
requests to the real app (a process, tiny SD1 model) for T seconds. Reports requests served, answers by
class (5xx must be 0), p50/p99 latency, the server's RSS growth and half-written files left in the outputs
(must be 0)."""
from __future__ import annotations

import argparse
import base64
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from bench.common import write_result
from tests.helpers.app import AppProcess, make_tiny_data_dir, tiny_app_args

TINY = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler a"}
BAD_IMAGE = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n").decode()
REQUESTS = [   # (method, path, body): valid ones and each kind of bad input the app must answer with a 4xx
    ("POST", "/sdapi/v1/txt2img", {**TINY, "prompt": "soak"}),
    ("POST", "/sdapi/v1/txt2img", {**TINY, "batch_size": 2, "save_images": True}),
    ("GET", "/sdapi/v1/progress", None), ("GET", "/sdapi/v1/options", None), ("GET", "/sdapi/v1/sd-models", None),
    ("POST", "/sdapi/v1/txt2img", {**TINY, "width": 100}),
    ("POST", "/sdapi/v1/txt2img", {**TINY, "batch_size": 8, "n_iter": 100}),
    ("POST", "/sdapi/v1/txt2img", {**TINY, "prompt": "<lora:x:nan>"}),
    ("POST", "/sdapi/v1/txt2img", {**TINY, "alwayson_scripts": {"controlnet": {"args": [{"image": [{"mask": "x"}]}]}}}),
    ("POST", "/sdapi/v1/img2img", {**TINY, "init_images": [BAD_IMAGE]}),
    ("POST", "/sdapi/v1/png-info", {"image": "not base64 !"}),
    ("POST", "/sdapi/v1/options", {"samples_format": "exe"}),
]


def client_loop(base: str, stop: float, seed: int, out: list) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < stop:
        method, path, body = rng.choice(REQUESTS)
        started = time.monotonic()
        try:
            r = session.request(method, base + path, json=body, timeout=120)
            out.append((r.status_code, time.monotonic() - started))
        except requests.RequestException as err:
            out.append((type(err).__name__, time.monotonic() - started))


def half_written(outputs: Path) -> int:
    from PIL import Image

    bad = 0
    for path in outputs.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix in (".tmp", ".part") or path.name.startswith("."):
            bad += 1
        elif path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            try:
                with Image.open(path) as im:
                    im.load()
            except Exception:  # noqa: BLE001 - any unreadable image counts
                bad += 1
    return bad


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench soak")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        data = make_tiny_data_dir(tmp)
        with AppProcess(tiny_app_args(data, "--api", "--nowebui"), timeout=300) as app:
            app.wait_model_loaded()
            base = app.url.rstrip("/")
            proc = psutil.Process(app.proc.pid)
            requests.post(base + "/sdapi/v1/txt2img", json=TINY, timeout=120)   # warm: first image
            rss_before = proc.memory_info().rss
            results: list = []
            stop = time.monotonic() + args.seconds
            threads = [threading.Thread(target=client_loop, args=(base, stop, i, results)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rss_after = proc.memory_info().rss
            alive = requests.get(base + "/sdapi/v1/sd-models", timeout=30).status_code == 200
        classes = Counter(f"{code // 100}xx" if isinstance(code, int) else code for code, _ in results)
        latencies = sorted(seconds for _, seconds in results)
        figures = {
            "requests": len(results), "by_class": dict(classes), "server_errors_5xx": classes.get("5xx", 0),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
            "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
            "half_written_files": half_written(Path(data) / "outputs"), "still_serving": alive,
        }
    write_result("soak", figures, clients=args.clients, seconds=args.seconds)
    return 0 if figures["server_errors_5xx"] == 0 and figures["half_written_files"] == 0 else 1
