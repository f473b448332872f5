"""Memory per image, and whether memory grows across many generations and checkpoint switches.

    python -m bench memory [--generations 50] [--switches 10] [--size 512]

Full-size SD1.5 architecture (random weights), through the engine as the app runs it:
- peak RSS of one --size image (4 steps) above the RSS before it (a sampling thread; on CUDA the
  allocator's max allocated instead);
- RSS after a warm-up, then after --generations small generations (128x128, 1 step: memory, not speed),
  then after --switches checkpoint switches between two full-size files with a one-checkpoint cache
  (every switch a cold load). Target (issue 11): no growth beyond allocator noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os

from bench.common import bench_manager, peak_rss_mb, rss_mb, sd15_copy_file, sd15_file, write_result


def _settled_rss() -> float:
    gc.collect()
    return rss_mb()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generations", type=int, default=50)
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pipelines.generate.engine import Engine
    from pipelines.params.declarations import make_request

    first, second = sd15_file(), sd15_copy_file()
    manager = bench_manager(args.device, args.precision, cache_size=1)
    manager.load(first.name)
    engine = Engine(manager)
    cuda = args.device.startswith("cuda")

    big = make_request(prompt="a lighthouse at dusk", negative_prompt="blurry", steps=4, width=args.size,
                       height=args.size, seed=1, sampler_name="Euler a")
    engine.txt2img(big, save=False)   # warm-up at the measured size (lazily built pipelines, allocator pools)
    before = _settled_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        engine.txt2img(big, save=False)
        peak_image = torch.cuda.max_memory_allocated() / 1e6
    else:
        _, peak = peak_rss_mb(lambda: engine.txt2img(big, save=False))
        peak_image = peak - before

    small = make_request(prompt="a cat", steps=1, width=128, height=128, seed=1)
    for _ in range(3):
        engine.txt2img(small, save=False)
    rss_start = _settled_rss()
    trace = []
    for i in range(args.generations):
        engine.txt2img(dataclasses.replace(small, seed=i), save=False)
        trace.append(round(_settled_rss()))
    rss_after_generations = _settled_rss()
    switches = []
    for i in range(args.switches):
        manager.load((second if i % 2 == 0 else first).name)
        engine.txt2img(small, save=False)
        switches.append(round(_settled_rss()))
    manager.load(first.name)
    rss_after_switches = _settled_rss()

    write_result("memory", {
        "model": "SD1.5 architecture, random weights",
        "precision": manager.policy.dtype_name,
        "device": manager.policy.describe(),
        "size": args.size,
        "peak_mb_per_image": round(peak_image),
        "peak_kind": "cuda max allocated" if cuda else "RSS above the idle process",
        "rss_idle_mb": round(before),
        "generations": args.generations,
        "rss_before_generations_mb": round(rss_start),
        "rss_after_generations_mb": round(rss_after_generations),
        "growth_over_generations_mb": round(rss_after_generations - rss_start),
        "rss_trace_mb": trace,
        "switches": args.switches,
        "rss_after_switches_mb": round(rss_after_switches),
        "growth_over_switches_mb": round(rss_after_switches - rss_after_generations),
        "rss_per_switch_mb": switches,
    }, targets={"growth_over_generations_mb": "~0", "growth_over_switches_mb": "~0"})


if __name__ == "__main__":
    main()
