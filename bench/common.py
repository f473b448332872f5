"""What every benchmark shares: the full-size model cache, medians, and the result file format."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
CACHE = Path(os.environ.get("WEBUI_BENCH_CACHE", BENCH_DIR / "cache"))


def cached_model(name: str, writer: Callable[[Path], Any], what: str, folder: str = "Stable-diffusion") -> Path:
    """`CACHE/models/<folder>/<name>`, written once by `writer(path)` (random weights take a while)."""
    path = CACHE / "models" / folder / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"[bench] generating {path} ({what}, random weights, one time)", flush=True)
        start = time.perf_counter()
        writer(path)
        print(f"[bench] generated in {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1e9:.2f} GB",
              flush=True)
    return path


def sd15_file(name: str = "sd15-random.safetensors") -> Path:
    """A full-size SD1.5 single file with random weights (fp16, 2.1 GB), generated once into the cache."""
    from bench.synth.factory import full_size_sd15_single_file

    return cached_model(name, full_size_sd15_single_file, "SD1.5")


def sd15_copy_file() -> Path:
    """A second SD1.5 checkpoint (a copy of sd15_file under another name), for cold switches between two."""
    first = sd15_file()
    second = first.with_name("sd15-random-copy.safetensors")
    if not second.exists():
        shutil.copyfile(first, second)
    return second


def bench_manager(device: str = "cpu", precision: str = "auto", *, compile: bool = False, **manager_kw):
    """A PipelineManager over the cache's models/ (no hashing: the files are regenerated at will)."""
    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    registry = ModelRegistry(ModelPaths(CACHE / "models", cache_dir=CACHE / "state"), hashing=False)
    return PipelineManager(registry, policy=make_policy(device, precision, compile=compile), **manager_kw)


def sdxl_file(name: str = "sdxl-random.safetensors") -> Path:
    """A full-size SDXL base single file with random weights (fp16, 6.9 GB), generated once into the cache."""
    from bench.synth.factory import full_size_sdxl_single_file

    return cached_model(name, full_size_sdxl_single_file, "SDXL base")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    times = [timed(fn)[0] for _ in range(repeat)]
    return statistics.median(times), times


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 1e6, 1)
    except OSError:
        pass
    return info


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "diffusers", "transformers", "gradio", "safetensors", "open_clip_torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_result(name: str, figures: dict[str, Any], **extra: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "figures": figures, "machine": machine(), "versions": versions(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"[bench] wrote {path}")
    return path


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:
        return float("nan")


def peak_rss_mb(fn: Callable[[], Any], interval: float = 0.01) -> tuple[Any, float]:
    """Run `fn()`; return (its result, the peak resident memory of this process meanwhile, in MB).

    A thread samples RSS every `interval` seconds (psutil), so a spike shorter than that can be missed;
    the value is the whole process (loaded models included), not just what `fn` allocated. nan without
    psutil."""
    try:
        import psutil
    except ImportError:
        return fn(), float("nan")
    proc = psutil.Process()
    peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(interval):
            peak = max(peak, proc.memory_info().rss)

    thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
    thread.start()
    try:
        out = fn()
    finally:
        done.set()
        thread.join()
        peak = max(peak, proc.memory_info().rss)
    return out, peak / 1e6
