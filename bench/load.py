"""Checkpoint loading: raw file read vs cold load vs cached switch (full-size SD1.5, random weights).

    python -m bench.load [--repeat 3] [--precision auto]

Targets (issue 2): cached switch >= 20x faster than cold load; cold load <= 2x the raw file read.
The raw read is the time to read every byte of the file into memory. Before the raw read and before
each cold load the file's pages are evicted from the OS page cache (posix_fadvise DONTNEED), so both
read from the disk; library imports are warmed up first so "cold" means the model, not Python.
"""
from __future__ import annotations

import argparse
import gc
import os

from bench.common import CACHE, median_time, rss_mb, sd15_copy_file, sd15_file, timed, write_result


def evict(path) -> None:
    """Drop the file from the page cache so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def raw_read(path) -> int:
    evict(path)
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(64 << 20):
            n += len(chunk)
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    a, b = sd15_file(), sd15_copy_file()
    raw, _ = median_time(lambda: raw_read(a), args.repeat)
    import diffusers.loaders.single_file  # noqa: F401  (imports are not part of a model load)
    from diffusers import StableDiffusionPipeline  # noqa: F401

    policy = make_policy("cpu", args.precision)
    paths = ModelPaths(CACHE / "models", cache_dir=CACHE / "state")
    cold_times = []
    for _ in range(args.repeat):
        manager = PipelineManager(ModelRegistry(paths, hashing=False), policy=policy, cache_size=2)
        evict(a)
        t, _ = timed(lambda: manager.load(a.name))
        cold_times.append(t)
        del manager
        gc.collect()
    cold = sorted(cold_times)[len(cold_times) // 2]

    manager = PipelineManager(ModelRegistry(paths, hashing=False), policy=policy, cache_size=2)
    manager.load(a.name)
    manager.load(b.name)
    rss = rss_mb()

    def switch_pair():
        manager.load(a.name)
        manager.load(b.name)

    pair, _ = median_time(switch_pair, max(5, args.repeat))
    switch = pair / 2
    assert manager.disk_loads == 2, "a cached switch read the disk"
    write_result("load", {
        "file_gb": round(a.stat().st_size / 1e9, 2),
        "precision": policy.dtype_name,
        "raw_read_s": round(raw, 3),
        "cold_load_s": round(cold, 3),
        "cold_load_runs_s": [round(t, 3) for t in cold_times],
        "cached_switch_s": round(switch, 5),
        "cold_over_raw": round(cold / raw, 2),
        "cold_over_cached_switch": round(cold / switch, 1),
        "rss_mb_two_models_cached": round(rss),
    }, targets={"cold_over_cached_switch": ">= 20", "cold_over_raw": "<= 2"})


if __name__ == "__main__":
    main()
