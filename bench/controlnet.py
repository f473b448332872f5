"""ControlNet on a loaded SD1.5-size checkpoint: enable / swap / disable vs a full checkpoint reload.

    python -m bench controlnet [--repeat 3] [--precision auto] [--generate]

Models: the full-size random SD1.5 checkpoint of `bench.common.sd15_file()` and two full-size random SD1.5
ControlNets (361 M parameters, original `control_model.*` layout, fp16, 0.72 GB each) written once into
bench/cache/models/ControlNet/. What is timed is what a job does before its first sampling step:

- enable (cold): ControlNet read from disk (page cache evicted) and loaded offline with the bundled
  config, the ControlNet pipeline built from the loaded checkpoint's components (`from_pipe`);
- swap (from disk): another ControlNet, not cached, page cache evicted, attached to the existing pipeline;
- swap (cached): back to a ControlNet in the ControlNet cache;
- disable: the plain txt2img pipeline again;
- checkpoint reload: what the same change would cost if it reloaded the checkpoint (cold and warm cache).

The checkpoint is read once: `manager.disk_loads` stays 1 through every ControlNet change (asserted).
`--generate` adds a 256x256 one-step txt2img with and without a ControlNet (end to end at full size).
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import time

from bench.common import CACHE, cached_model, median_time, rss_mb, sd15_file, timed, write_result
from bench.load import evict


def timed_cpu(fn):
    """(wall s, process CPU s, result): CPU time shows the work itself when other jobs share the cores."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def controlnet_files() -> tuple:
    from bench.synth.factory import full_size_sd15_controlnet_file

    a = cached_model("control_sd15-random-a.safetensors", lambda p: full_size_sd15_controlnet_file(p, seed=1),
                     "SD1.5 ControlNet", folder="ControlNet")
    b = a.with_name("control_sd15-random-b.safetensors")
    if not b.exists():
        shutil.copy(a, b)   # same weights, another file: a real read from disk when it is not cached
    return a, b


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--generate", action="store_true", help="also time a 256x256 1-step generation")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.controlnet.pipeline import controlnet_pipeline, pipeline_kwargs, unit_controlnets
    from pipelines.controlnet.units import BALANCED
    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    ckpt = sd15_file()
    cn_a, cn_b = controlnet_files()
    import diffusers.loaders.single_file  # noqa: F401  (imports are not part of a model load)
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline  # noqa: F401

    policy = make_policy("cpu", args.precision)
    paths = ModelPaths(CACHE / "models", cache_dir=CACHE / "state")
    manager = PipelineManager(ModelRegistry(paths, hashing=False), policy=policy, cache_size=1)
    evict(ckpt)
    first_load, _ = timed(lambda: manager.load(ckpt.name))
    loaded = manager.active
    reg = manager.controlnets.registry
    fa, fb = reg.find(cn_a.stem), reg.find(cn_b.stem)
    maps = None

    def attach(cf):
        """What enabling / swapping does before sampling: get the net, attach it to the pipeline."""
        nonlocal maps
        net = manager.controlnets.get(cf)
        pipe = controlnet_pipeline(manager, "txt2img", unit_controlnets([net], [BALANCED]))
        if maps is None:
            from PIL import Image

            maps = [Image.new("RGB", (512, 512))]
        pipeline_kwargs(pipe, maps, [1.0], [0.0], [1.0])
        return pipe

    def detach():
        loaded.modes["controlnet:txt2img"].register_modules(controlnet=None)
        return manager.pipeline("txt2img")

    # enable (cold): first ControlNet from disk + the ControlNet pipeline built once
    evict(cn_a)
    enable_cold, enable_cpu, pipe = timed_cpu(lambda: attach(fa))
    assert pipe.unet is loaded.pipe.unet, "the ControlNet pipeline must share the checkpoint's UNet"
    # swap from disk: the other file, page cache evicted, ControlNet cache emptied
    swap_disk_runs, swap_disk_cpu = [], []
    for i in range(args.repeat):
        target = fb if i % 2 == 0 else fa
        manager.controlnets._cache.clear()
        gc.collect()
        evict(target.path)
        wall, cpu, _ = timed_cpu(lambda: attach(target))
        swap_disk_runs.append(wall)
        swap_disk_cpu.append(cpu)
    # both in the ControlNet cache: swap back and forth
    attach(fa)
    attach(fb)
    loads_before = manager.controlnets.loads

    def swap_pair():
        attach(fa)
        attach(fb)

    pair, _ = median_time(swap_pair, max(5, args.repeat))
    assert manager.controlnets.loads == loads_before, "a cached swap read the disk"
    disable, _ = median_time(lambda: (detach(), attach(fa)), max(5, args.repeat))
    disable_only, _ = median_time(detach, max(5, args.repeat))
    rss = rss_mb()
    assert manager.disk_loads == 1, "a ControlNet change reloaded the checkpoint"

    figures = {
        "precision": policy.dtype_name,
        "checkpoint_gb": round(ckpt.stat().st_size / 1e9, 2),
        "controlnet_gb": round(cn_a.stat().st_size / 1e9, 2),
        "checkpoint_first_load_s": round(first_load, 3),
        "controlnet_enable_cold_s": round(enable_cold, 3),
        "controlnet_enable_cold_cpu_s": round(enable_cpu, 3),
        "controlnet_swap_from_disk_s": round(statistics.median(swap_disk_runs), 3),
        "controlnet_swap_from_disk_runs_s": [round(t, 3) for t in swap_disk_runs],
        "controlnet_swap_from_disk_cpu_s": round(statistics.median(swap_disk_cpu), 3),
        "controlnet_swap_cached_s": round(pair / 2, 5),
        "controlnet_disable_s": round(disable_only, 5),
        "controlnet_disable_then_enable_cached_s": round(disable, 5),
        "checkpoint_disk_loads_during_controlnet_changes": manager.disk_loads - 1,
        "rss_mb_checkpoint_plus_controlnets": round(rss),
    }

    if args.generate:
        from PIL import Image

        from pipelines.controlnet.units import ControlNetUnit
        from pipelines.generate.engine import Engine
        from pipelines.params.declarations import make_request

        engine = Engine(manager)
        req = make_request(prompt="a house", steps=1, width=256, height=256, seed=1, sampler_name="Euler")
        unit = ControlNetUnit(image=Image.new("RGB", (256, 256), (200, 30, 30)), module="canny", model=fa.title)
        engine.txt2img(req, save=False)  # warm-up (first call allocations)
        plain, _ = timed(lambda: engine.txt2img(req, save=False))
        with_cn, res = timed(lambda: engine.txt2img(req, save=False, controlnet=[unit]))
        assert len(res.images) == 1 and manager.disk_loads == 1
        figures.update(generate_256_1step_plain_s=round(plain, 2), generate_256_1step_controlnet_s=round(with_cn, 2))

    # the alternative: reload the checkpoint (what an implementation without from_pipe reuse would pay)
    del pipe
    manager.unload()
    gc.collect()
    cold_runs, warm_runs, warm_cpu = [], [], []
    for _ in range(args.repeat):
        manager.unload()
        gc.collect()
        evict(ckpt)
        cold_runs.append(timed(lambda: manager.load(ckpt.name))[0])
        manager.unload()
        gc.collect()
        wall, cpu, _ = timed_cpu(lambda: manager.load(ckpt.name))
        warm_runs.append(wall)
        warm_cpu.append(cpu)
    cold, warm = statistics.median(cold_runs), statistics.median(warm_runs)
    figures.update({
        "checkpoint_reload_cold_s": round(cold, 3),
        "checkpoint_reload_cold_runs_s": [round(t, 3) for t in cold_runs],
        "checkpoint_reload_warm_s": round(warm, 3),
        "checkpoint_reload_warm_cpu_s": round(statistics.median(warm_cpu), 3),
        "reload_warm_over_swap_from_disk": round(warm / statistics.median(swap_disk_runs), 1),
        "reload_warm_over_swap_cached": round(warm / (pair / 2), 1),
    })
    write_result("controlnet", figures,
                 targets={"checkpoint_disk_loads_during_controlnet_changes": "== 0",
                          "reload_warm_over_swap_cached": ">= 20"})


if __name__ == "__main__":
    main()
