"""One txt2img request through the engine vs a bare diffusers pipeline call on the same loaded model.

    python -m bench.txt2img [--size 256] [--steps 4] [--repeat 3] [--precision auto]
    python -m bench.txt2img --gpu            # CUDA profile: 512x512, 20 steps, reports it/s

Full-size SD1.5 architecture (random weights). Same model object, sampler (Euler a), steps, CFG, size
and seed for both; runs alternate (engine, bare, engine, ...) so drift on a shared machine hits both.
Target (issue 3): engine / bare <= 1.05.
"""
from __future__ import annotations

import argparse
import os
import statistics

from bench.common import CACHE, rss_mb, sd15_file, timed, write_result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu", action="store_true", help="CUDA profile: 512x512, 20 steps (results in txt2img-gpu.json)")
    args = ap.parse_args(argv)
    if args.gpu:
        args.device, args.size, args.steps = "cuda", 512, 20
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pipelines.devices import make_policy
    from pipelines.generation import Engine
    from pipelines.manager import PipelineManager
    from pipelines.models import ModelPaths, ModelRegistry
    from pipelines.params import make_request
    from pipelines.samplers import build_scheduler

    path = sd15_file()
    manager = PipelineManager(ModelRegistry(ModelPaths(CACHE / "models", cache_dir=CACHE / "state"), hashing=False),
                              policy=make_policy(args.device, args.precision))
    loaded = manager.load(path.name)
    engine = Engine(manager)
    prompt, negative = "a photograph of an astronaut riding a horse", "blurry"
    req = make_request(prompt=prompt, negative_prompt=negative, steps=args.steps, cfg_scale=7, width=args.size,
                       height=args.size, seed=1, sampler_name="Euler a")
    pipe = manager.pipeline("txt2img")

    def bare():
        pipe.scheduler = build_scheduler(loaded.scheduler_config, "Euler a")
        return pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=args.steps, guidance_scale=7,
                    width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1)).images

    def sync(fn):
        def run():
            out = fn()
            if args.device != "cpu":
                torch.cuda.synchronize()
            return out
        return run

    def ours():
        return engine.txt2img(req, save=False).images

    ours, bare = sync(ours), sync(bare)
    ours(), bare()  # warm-up: first-call allocations and kernel selection
    t_engine, t_bare = [], []
    for _ in range(args.repeat):
        t_engine.append(timed(ours)[0])
        t_bare.append(timed(bare)[0])
    me, mb = statistics.median(t_engine), statistics.median(t_bare)
    write_result("txt2img-gpu" if args.gpu else "txt2img", {
        "model": "SD1.5 architecture, random weights",
        "precision": manager.policy.dtype_name,
        "size": args.size, "steps": args.steps, "sampler": "Euler a", "cfg": 7,
        "engine_s": round(me, 3), "bare_diffusers_s": round(mb, 3),
        "engine_runs_s": [round(t, 3) for t in t_engine], "bare_runs_s": [round(t, 3) for t in t_bare],
        "engine_over_bare": round(me / mb, 3),
        "it_per_s_engine": round(args.steps / me, 3),
        "it_per_s_bare": round(args.steps / mb, 3),
        "device": manager.policy.describe(),
        "rss_mb": round(rss_mb()),
    }, targets={"engine_over_bare": "<= 1.05"})


if __name__ == "__main__":
    main()
