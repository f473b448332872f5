"""One txt2img request through the engine vs a bare diffusers pipeline call on the same loaded model.

    python -m bench.txt2img [--arch sd15|sdxl] [--size N] [--steps 4] [--repeat 3] [--precision auto]
    python -m bench.txt2img --gpu            # CUDA profile: 20 steps at the model's size, reports it/s
    python -m bench.txt2img --gpu --compile  # + the engine with --compile (target: >= 1.3x its eager it/s)

Full-size SD1.5 (default) or SDXL base architecture, random weights. Default size: SD1.5 256 on CPU,
512 with --gpu; SDXL 512 on CPU (1024 on 2 CPU cores is far too slow), 1024 with --gpu. --size/--steps
override a profile. Results: txt2img.json / txt2img-gpu.json for SD1.5, txt2img-sdxl.json /
txt2img-gpu-sdxl.json for SDXL.

Same model object, sampler (Euler a), steps, CFG, size and seed for both; runs alternate (engine, bare,
engine, ...) so drift on a shared machine hits both. Peak memory per image: on CUDA
`torch.cuda.max_memory_allocated()` (reset before each image), on CPU the process RSS sampled during the
image (loaded model included); the figure is the highest over the timed runs.
Target (issue 3): engine / bare <= 1.05.
"""
from __future__ import annotations

import argparse
import os
import statistics

from bench.common import bench_manager, peak_rss_mb, rss_mb, sd15_file, sdxl_file, timed, write_result

# arch → (checkpoint file, model label, {gpu: (size, steps)})
ARCHS = {
    "sd15": (sd15_file, "SD1.5 architecture, random weights", {False: (256, 4), True: (512, 20)}),
    "sdxl": (sdxl_file, "SDXL base architecture, random weights", {False: (512, 4), True: (1024, 20)}),
}


def result_name(arch: str, gpu: bool) -> str:
    return "txt2img" + ("-gpu" if gpu else "") + ("" if arch == "sd15" else f"-{arch}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="sd15")
    ap.add_argument("--size", type=int, default=None, help="default: the arch/device profile (see above)")
    ap.add_argument("--steps", type=int, default=None, help="default: 4 on CPU, 20 with --gpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu", action="store_true", help="CUDA profile: 20 steps, 512x512 (SD1.5) / 1024x1024 (SDXL)")
    ap.add_argument("--compile", action="store_true",
                    help="then the engine again with --compile (a fresh manager; compilation not timed)")
    args = ap.parse_args(argv)
    model_file, model_label, profiles = ARCHS[args.arch]
    size, steps = profiles[args.gpu]
    if args.gpu:
        args.device = "cuda"
    args.size = args.size or size
    args.steps = args.steps or steps
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pipelines.generate.engine import Engine
    from pipelines.params.declarations import make_request
    from pipelines.generate.samplers import build_scheduler

    path = model_file()
    manager = bench_manager(args.device, args.precision)
    loaded = manager.load(path.name)
    engine = Engine(manager)
    prompt, negative = "a photograph of an astronaut riding a horse", "blurry"
    req = make_request(prompt=prompt, negative_prompt=negative, steps=args.steps, cfg_scale=7, width=args.size,
                       height=args.size, seed=1, sampler_name="Euler a")
    pipe = manager.pipeline("txt2img")
    on_cuda = args.device != "cpu"

    def bare():
        pipe.scheduler = build_scheduler(loaded.scheduler_config, "Euler a")
        return pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=args.steps, guidance_scale=7,
                    width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1)).images

    def sync(fn):
        def run():
            out = fn()
            if on_cuda:
                torch.cuda.synchronize()
            return out
        return run

    def ours():
        return engine.txt2img(req, save=False).images

    def measured(fn) -> tuple[float, float]:
        """(seconds, peak MB) of one image: CUDA allocator peak, or process RSS sampled on CPU."""
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
            seconds = timed(fn)[0]
            return seconds, torch.cuda.max_memory_allocated() / 1e6
        (seconds, _), peak = peak_rss_mb(lambda: timed(fn))
        return seconds, peak

    ours, bare = sync(ours), sync(bare)
    ours(), bare()  # warm-up: first-call allocations and kernel selection
    t_engine, t_bare, m_engine, m_bare = [], [], [], []
    for _ in range(args.repeat):
        for fn, times, mems in ((ours, t_engine, m_engine), (bare, t_bare, m_bare)):
            seconds, peak = measured(fn)
            times.append(seconds)
            mems.append(peak)
    me, mb = statistics.median(t_engine), statistics.median(t_bare)
    compiled = {}
    if args.compile:
        del engine, pipe, loaded, manager, ours, bare
        manager = bench_manager(args.device, args.precision, compile=True)
        manager.load(path.name)
        engine = Engine(manager)
        ours = sync(lambda: engine.txt2img(req, save=False).images)
        compile_s = timed(ours)[0]   # the first image at this size compiles the UNet
        t_compiled = [timed(ours)[0] for _ in range(args.repeat)]
        mc = statistics.median(t_compiled)
        compiled = {"engine_compiled_s": round(mc, 3), "engine_compiled_runs_s": [round(t, 3) for t in t_compiled],
                    "first_compiled_image_s": round(compile_s, 1), "it_per_s_engine_compiled": round(args.steps / mc, 3),
                    "compiled_speedup": round(me / mc, 2)}
    write_result(result_name(args.arch, args.gpu), {
        "model": model_label,
        "precision": manager.policy.dtype_name,
        "size": args.size, "steps": args.steps, "sampler": "Euler a", "cfg": 7,
        "engine_s": round(me, 3), "bare_diffusers_s": round(mb, 3),
        "engine_runs_s": [round(t, 3) for t in t_engine], "bare_runs_s": [round(t, 3) for t in t_bare],
        "engine_over_bare": round(me / mb, 3),
        "it_per_s_engine": round(args.steps / me, 3),
        "it_per_s_bare": round(args.steps / mb, 3),
        "peak_mem_mb_engine": round(max(m_engine)), "peak_mem_mb_bare": round(max(m_bare)),
        "peak_mem_kind": "cuda max_memory_allocated" if on_cuda else "process RSS (sampled)",
        **compiled,
        "device": manager.policy.describe(),
        "rss_mb": round(rss_mb()),
    }, targets={"engine_over_bare": "<= 1.05", "compiled_speedup": ">= 1.3 (GPU)"})


if __name__ == "__main__":
    main()
