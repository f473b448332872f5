"""Model-aware routing of jobs to generation workers (pipelines.core.routing), as the app and the bench use it."""
from __future__ import annotations

import pytest

from pipelines.core.routing import LeastLoadedRouter, ModelAwareRouter, RoundRobinRouter, WorkerSnapshot, use_model


def W(name, models=(), load=0, capacity=2):
    return WorkerSnapshot(name, list(models), load, capacity)


def test_a_job_goes_where_its_checkpoint_is_unless_that_worker_is_much_busier():
    router = ModelAwareRouter(max_extra_jobs=2)
    pool = [W("a", ["sd15", "sd21"], load=0), W("b", ["sdxl"], load=2), W("c", [], load=0)]
    assert router.choose(pool, "sdxl").name == "b"            # 2 jobs more than the idlest: still worth it
    pool[1].load = 3
    assert router.choose(pool, "sdxl").name == "c"            # too busy: the idle worker with a free slot loads it
    pool.append(W("d", ["sdxl"], load=1))
    assert router.choose(pool, "sdxl").name == "d"            # the least busy holder


def test_a_miss_prefers_a_free_slot_then_evicting_a_model_held_elsewhere():
    router = ModelAwareRouter()
    full_unique = W("a", ["m1", "m2"])
    full_shared = W("b", ["m3", "m4"])
    other = W("c", ["m3", "m5"], load=1)
    assert router.choose([full_unique, full_shared, other], "new").name == "b"   # m3 lives on in c
    assert router.choose([full_unique, W("e", ["m9"])], "new").name == "e"       # free slot first


def test_round_robin_and_least_loaded_ignore_models_and_an_empty_pool_is_an_error():
    rr = RoundRobinRouter()
    pool = [W("a", ["x"]), W("b"), W("c")]
    assert [rr.choose(pool, "x").name for _ in range(4)] == ["a", "b", "c", "a"]
    pool[0].load = 5
    assert LeastLoadedRouter().choose(pool, "x").name == "b"
    for router in (rr, LeastLoadedRouter(), ModelAwareRouter()):
        with pytest.raises(LookupError):
            router.choose([], "x")


def test_lru_cache_of_a_worker():
    w = W("a", capacity=2)
    assert [use_model(w, m) for m in ("m1", "m2", "m1", "m3", "m2")] == [False, False, True, False, False]
    assert w.models == ["m3", "m2"]                          # m1 was least recently used when m2 came back


def test_simulation_model_aware_routing_hits_the_cache_and_waits_less():
    from bench.routing import simulate

    setup = dict(workers=8, models=30, cache=2, jobs=1500, load=0.25, gen_s=4.0, load_s=12.0, seed=3)
    aware, rr = simulate("model-aware", **setup), simulate("round-robin", **setup)
    assert aware["hit_rate"] > rr["hit_rate"] + 0.3
    assert aware["mean_wait_s"] < rr["mean_wait_s"]
