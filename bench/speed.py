"""UNet step speed vs this machine's matmul peak, per precision, and memory per image.

    python -m bench speed [--size 256] [--repeat 3] [--precisions fp32,bf16] [--device cpu]

- matmul peak: the fastest of square matmuls of 1024, 2048 and 4096 in each dtype (GFLOP/s).
- UNet step: one CFG step (batch 2) of the full-size SD1.5 UNet at --size, FLOPs counted with
  torch.utils.flop_counter; fraction of peak = achieved GFLOP/s / peak GFLOP/s of the same dtype.
- precision: the step time for each dtype, so "auto" (bf16 on CPUs with AVX512-BF16/AMX) can be
  compared with diffusers' fp32 default.
- --compile: the step compiled the way the app's --compile does (on CPU: Inductor with frozen weights),
  its first-call (compile) time and the extra memory of the compiled model.
- threads (CPU): the step of the last precision at 1..cpu_count intra-op threads, against torch's
  default (one per physical core), to see whether any other setting would be faster.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from bench.common import bench_manager, rss_mb, sd15_file, write_result


def matmul_peak(dtype, device: str, sizes=(1024, 2048, 4096), repeat: int = 3) -> float:
    """GFLOP/s of the fastest square matmul over a few sizes (the best the BLAS reaches in this dtype)."""
    import torch

    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        a @ b   # warm-up
        for _ in range(repeat):
            if device != "cpu":
                torch.cuda.synchronize()
            t = time.perf_counter()
            a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _step_time(unet, x, t, ctx, repeat: int) -> float:
    """Median time of `repeat` UNet calls (CUDA synchronised)."""
    import torch

    times = []
    with torch.no_grad():
        for _ in range(repeat):
            start = time.perf_counter()
            unet(x, t, ctx)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _thread_sweep(unet, x, t, ctx, repeat: int) -> dict[str, float]:
    import torch

    default = torch.get_num_threads()
    out = {}
    try:
        for n in range(1, (os.cpu_count() or 1) + 1):
            torch.set_num_threads(n)
            with torch.no_grad():
                unet(x, t, ctx)   # the first call at a new thread count re-plans oneDNN primitives
            out[str(n)] = round(_step_time(unet, x, t, ctx, repeat), 3)
    finally:
        torch.set_num_threads(default)
    out["default"] = default
    return out


def _compiled(prec: str, name: str, x, t, ctx, args, flops: float, peak: float, eager_step: float) -> dict:
    """The same step with --compile (on CPU: Inductor with frozen weights), the way the app compiles."""
    import torch


    before = rss_mb()
    manager = bench_manager(args.device, prec, compile=True)
    unet = manager.load(name).pipe.unet
    with torch.no_grad():
        start = time.perf_counter()
        unet(x, t, ctx)
        compile_s = time.perf_counter() - start
    step = _step_time(unet, x, t, ctx, args.repeat)
    out = {f"compile_first_call_s_{prec}": round(compile_s, 1),
           f"unet_step_s_{prec}_compiled": round(step, 3),
           f"compiled_speedup_{prec}": round(eager_step / step, 2),
           f"fraction_of_peak_{prec}_compiled": round(flops / step / 1e9 / peak, 3),
           f"rss_mb_{prec}_compiled_model": round(rss_mb() - before)}
    del unet, manager
    gc.collect()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true",
                    help="also time the step compiled as --compile does (minutes: Inductor compiles the UNet)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from torch.utils.flop_counter import FlopCounterMode


    path = sd15_file()
    figures: dict = {"size": args.size, "device": args.device, "model": "SD1.5 UNet, random weights"}
    for prec in args.precisions.split(","):
        manager = bench_manager(args.device, prec)
        dtype = manager.policy.dtype
        unet = manager.load(path.name).pipe.unet
        lat = args.size // 8
        x = torch.randn(2, 4, lat, lat, dtype=dtype, device=args.device)
        ctx = torch.randn(2, 77, 768, dtype=dtype, device=args.device)
        t = torch.tensor([500, 500], device=args.device)
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                unet(x, t, ctx)
            flops = fc.get_total_flops()
        step = _step_time(unet, x, t, ctx, args.repeat)
        with torch.no_grad():
            if args.device == "cpu":
                figures[f"unet_step_s_{prec}_by_threads"] = _thread_sweep(unet, x, t, ctx, args.repeat)
            # The same step and a VAE decode with channels_last weights/activations (NHWC convolutions).
            vae = manager.active.pipe.vae
            vae.to(memory_format=torch.contiguous_format)   # the manager places it channels_last on CPU
            z = torch.randn(1, 4, lat, lat, dtype=vae.dtype, device=args.device)   # fp32 VAE under fp16
            decode = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                vae.decode(z)
                decode.append(time.perf_counter() - start)
            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            cl_step = _step_time(unet, x_cl, t, ctx, args.repeat)
            cl_decode = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                vae.decode(z.contiguous(memory_format=torch.channels_last))
                cl_decode.append(time.perf_counter() - start)
        figures[f"vae_decode_s_{prec}"] = round(statistics.median(decode), 3)
        figures[f"vae_decode_s_{prec}_channels_last"] = round(statistics.median(cl_decode), 3)
        figures[f"unet_step_s_{prec}_channels_last"] = round(cl_step, 3)
        peak = matmul_peak(dtype, args.device)
        achieved = flops / step / 1e9
        figures[f"unet_step_s_{prec}"] = round(step, 3)
        figures["unet_gflop_per_step"] = round(flops / 1e9, 1)
        figures[f"achieved_gflops_{prec}"] = round(achieved, 1)
        figures[f"matmul_peak_gflops_{prec}"] = round(peak, 1)
        figures[f"fraction_of_peak_{prec}"] = round(achieved / peak, 3)
        figures[f"rss_mb_{prec}"] = round(rss_mb())
        del unet, vae, manager
        gc.collect()
        if args.compile:
            figures.update(_compiled(prec, path.name, x, t, ctx, args, flops, peak, step))
        del x, ctx
        gc.collect()
    if "unet_step_s_fp32" in figures and "unet_step_s_bf16" in figures:
        figures["bf16_speedup_over_fp32"] = round(figures["unet_step_s_fp32"] / figures["unet_step_s_bf16"], 2)
    # The CPU and the GPU profile are separate results (and README rows), not one overwriting the other.
    write_result("speed" if args.device == "cpu" else "speed-gpu", figures, targets={"bf16_speedup_over_fp32": ">= 1.5 where bf16 exists",
                                            "fraction_of_peak": ">= 0.5"})


if __name__ == "__main__":
    main()
