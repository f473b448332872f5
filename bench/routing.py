"""Routing at scale: model-aware vs least-loaded vs round-robin, simulated with the app's router code.

    python -m bench routing [--workers 64] [--models 200] [--cache 2] [--jobs 20000] [--load 0.25]

A discrete-event simulation of a pool: `--workers` workers, each keeping `--cache` checkpoints (LRU); jobs
ask for one of `--models` checkpoints with a Zipf popularity (s = 1.1, the shape of real model download
counts), arrive as a Poisson stream at `--load` x the pool's capacity (counting generation time only), and
each takes `--gen-s` seconds to generate plus `--load-s` seconds when its worker must load the checkpoint
first. The routers are `pipelines.core.routing`'s, fed the same worker views the app gives them (models held,
jobs queued + running). Reported per router: cache hit rate, mean and p99 wait (arrival to start of
generation: queueing + checkpoint load), throughput. Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import heapq
import random
import statistics

from bench.common import write_result


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / (k ** s) for k in range(1, n + 1)]


def simulate(router_name: str, *, workers: int, models: int, cache: int, jobs: int, load: float, gen_s: float,
             load_s: float, seed: int) -> dict:
    from pipelines.core.routing import ROUTERS, WorkerSnapshot, use_model

    rng = random.Random(seed)
    router = ROUTERS[router_name]()
    pool = [WorkerSnapshot(f"w{i}", capacity=cache) for i in range(workers)]
    free_at = [0.0] * workers                        # when each worker finishes its queue
    ends: list[tuple[float, int]] = []               # (finish time, worker) of assigned jobs, to update .load
    names = [f"model-{k}" for k in range(models)]
    weights = zipf_weights(models)
    rate = load * workers / gen_s                    # arrivals per second
    now, hits, waits, last_end = 0.0, 0, [], 0.0
    index = {w.name: i for i, w in enumerate(pool)}
    for _ in range(jobs):
        now += rng.expovariate(rate)
        while ends and ends[0][0] <= now:
            _, i = heapq.heappop(ends)
            pool[i].load -= 1
        model = rng.choices(names, weights)[0]
        i = index[router.choose(pool, model).name]
        # The worker runs its jobs in order; the cache state at dispatch stands for the state at start
        # (what the app's router sees too).
        hit = use_model(pool[i], model)
        hits += hit
        start = max(now, free_at[i])
        ready = start + (0.0 if hit else load_s)
        waits.append(ready - now)
        free_at[i] = ready + gen_s
        last_end = max(last_end, free_at[i])
        pool[i].load += 1
        heapq.heappush(ends, (free_at[i], i))
    waits.sort()
    return {"hit_rate": round(hits / jobs, 4), "mean_wait_s": round(statistics.fmean(waits), 2),
            "p99_wait_s": round(waits[int(len(waits) * 0.99)], 2),
            "throughput_jobs_per_min": round(jobs / last_end * 60, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--cache", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--load", type=float, default=0.25,
                    help="arrival rate / pool capacity counting generation only (at 0.5 round-robin overloads)")
    ap.add_argument("--gen-s", type=float, default=4.0, help="seconds to generate one job")
    ap.add_argument("--load-s", type=float, default=12.0, help="seconds to load a checkpoint that is not cached")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup = dict(workers=args.workers, models=args.models, cache=args.cache, jobs=args.jobs, load=args.load,
                 gen_s=args.gen_s, load_s=args.load_s, seed=args.seed)
    results = {name: simulate(name, **setup) for name in ("model-aware", "least-loaded", "round-robin")}
    figures = {**setup}
    for name, r in results.items():
        for key, value in r.items():
            figures[f"{name}_{key}"] = value
    rr, ma = results["round-robin"], results["model-aware"]
    figures["hit_rate_gain_over_round_robin"] = round(ma["hit_rate"] - rr["hit_rate"], 4)
    figures["mean_wait_round_robin_over_model_aware"] = round(rr["mean_wait_s"] / max(ma["mean_wait_s"], 1e-9), 2)
    write_result("routing", figures)


if __name__ == "__main__":
    main()
