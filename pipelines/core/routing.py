"""Which generation worker takes a job: model-aware routing for a pool of workers (issue 23).

A checkpoint switch costs seconds (a cold load: 2.6 s for SD1.5 from a warm page cache on this
project's CPU bench, far more from disk or for SDXL/Flux) while a cached one costs nothing, so a job
should go where its checkpoint already is, unless that worker is much busier than another:

    router = ModelAwareRouter()
    worker = router.choose(workers, "dreamshaper_8 [879db523c3]")   # workers: anything with .name, .models, .load

`workers` are views of the pool at decision time: `.models` lists the checkpoints a worker holds (its RAM/VRAM
cache, most recently used last), `.load` counts its queued + running jobs, `.capacity` how many checkpoints it
keeps. The routers are pure functions of that view: the same code runs in the app's queue and in
`python -m bench routing`, the simulation of a large pool.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol, Sequence


class WorkerView(Protocol):
    name: str
    models: Sequence[str]
    load: int
    capacity: int


@dataclass
class WorkerSnapshot:
    """A plain WorkerView (what a worker reports; also what the simulation keeps per worker)."""

    name: str
    models: list[str] = field(default_factory=list)
    load: int = 0
    capacity: int = 2


class RoundRobinRouter:
    """The baseline: every worker in turn, whatever it holds."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, workers: Sequence[WorkerView], model: str) -> WorkerView:
        if not workers:
            raise LookupError("no generation worker is available")
        return workers[next(self._turn) % len(workers)]


class LeastLoadedRouter:
    """The usual load balancer: the worker with the fewest jobs (ties: the first)."""

    def choose(self, workers: Sequence[WorkerView], model: str) -> WorkerView:
        if not workers:
            raise LookupError("no generation worker is available")
        return min(workers, key=lambda w: w.load)


class ModelAwareRouter:
    """A worker that holds the model, unless it is `max_extra_jobs` busier than the least-loaded worker.

    Among holders the least loaded wins. Otherwise one of the least-loaded workers takes the job, preferring one
    with a free cache slot, then one whose least recently used model is also held by another worker (evicting it
    loses nothing pool-wide).
    `max_extra_jobs` trades hit rate for waiting: a job waits behind at most that many extra jobs to avoid a load.
    """

    def __init__(self, max_extra_jobs: int = 2) -> None:
        self.max_extra_jobs = max_extra_jobs

    def choose(self, workers: Sequence[WorkerView], model: str) -> WorkerView:
        if not workers:
            raise LookupError("no generation worker is available")
        least = min(w.load for w in workers)
        holders = [w for w in workers if model in w.models]
        if holders:
            best = min(holders, key=lambda w: w.load)
            if best.load - least <= self.max_extra_jobs:
                return best
        idle = [w for w in workers if w.load == least]
        held_elsewhere = {}
        for w in workers:
            for m in w.models:
                held_elsewhere[m] = held_elsewhere.get(m, 0) + 1

        def eviction_cost(w: WorkerView) -> tuple[int, int]:
            if len(w.models) < w.capacity:
                return (0, 0)                                    # a free slot: nothing is evicted
            victim = w.models[0]                                 # least recently used
            return (1, 0 if held_elsewhere.get(victim, 0) > 1 else 1)

        return min(idle, key=eviction_cost)


ROUTERS = {"model-aware": ModelAwareRouter, "least-loaded": LeastLoadedRouter, "round-robin": RoundRobinRouter}


def use_model(worker: WorkerSnapshot, model: str) -> bool:
    """Record that `worker` runs a job on `model` (LRU cache of `capacity`); True when it was already held."""
    hit = model in worker.models
    if hit:
        worker.models.remove(model)
    elif len(worker.models) >= worker.capacity:
        worker.models.pop(0)
    worker.models.append(model)
    return hit
