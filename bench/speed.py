"""UNet step speed vs this machine's matmul peak, per precision, and memory per image.

    python -m bench speed [--size 256] [--repeat 3] [--precisions fp32,bf16] [--device cpu]

- matmul peak: the best of several large square matmuls in each dtype (GFLOP/s).
- UNet step: one CFG step (batch 2) of the full-size SD1.5 UNet at --size, FLOPs counted with
  torch.utils.flop_counter; fraction of peak = achieved GFLOP/s / peak GFLOP/s of the same dtype.
- precision: the step time for each dtype, so "auto" (bf16 on CPUs with AVX512-BF16/AMX) can be
  compared with diffusers' fp32 default.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

from bench.common import CACHE, rss_mb, sd15_file, write_result


def matmul_peak(dtype, device: str, n: int = 2048, repeat: int = 5) -> float:
    import torch

    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeat):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipelines.devices import make_policy
    from pipelines.manager import PipelineManager
    from pipelines.models import ModelPaths, ModelRegistry

    path = sd15_file()
    figures: dict = {"size": args.size, "device": args.device, "model": "SD1.5 UNet, random weights"}
    for prec in args.precisions.split(","):
        policy = make_policy(args.device, prec)
        dtype = policy.dtype
        manager = PipelineManager(ModelRegistry(ModelPaths(CACHE / "models", cache_dir=CACHE / "state"),
                                                hashing=False), policy=policy)
        unet = manager.load(path.name).pipe.unet
        lat = args.size // 8
        x = torch.randn(2, 4, lat, lat, dtype=dtype, device=args.device)
        ctx = torch.randn(2, 77, 768, dtype=dtype, device=args.device)
        t = torch.tensor([500, 500], device=args.device)
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                unet(x, t, ctx)
            flops = fc.get_total_flops()
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                unet(x, t, ctx)
                if args.device != "cpu":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            # The same step and a VAE decode with channels_last weights/activations (NHWC convolutions).
            vae = manager.active.pipe.vae
            z = torch.randn(1, 4, lat, lat, dtype=dtype, device=args.device)
            decode = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                vae.decode(z)
                decode.append(time.perf_counter() - start)
            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            cl_times, cl_decode = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                unet(x_cl, t, ctx)
                cl_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                vae.decode(z.contiguous(memory_format=torch.channels_last))
                cl_decode.append(time.perf_counter() - start)
        figures[f"vae_decode_s_{prec}"] = round(statistics.median(decode), 3)
        figures[f"vae_decode_s_{prec}_channels_last"] = round(statistics.median(cl_decode), 3)
        figures[f"unet_step_s_{prec}_channels_last"] = round(statistics.median(cl_times), 3)
        step = statistics.median(times)
        peak = matmul_peak(dtype, args.device)
        achieved = flops / step / 1e9
        figures[f"unet_step_s_{prec}"] = round(step, 3)
        figures["unet_gflop_per_step"] = round(flops / 1e9, 1)
        figures[f"achieved_gflops_{prec}"] = round(achieved, 1)
        figures[f"matmul_peak_gflops_{prec}"] = round(peak, 1)
        figures[f"fraction_of_peak_{prec}"] = round(achieved / peak, 3)
        figures[f"rss_mb_{prec}"] = round(rss_mb())
        del unet, vae, manager, x, ctx
        gc.collect()
    if "unet_step_s_fp32" in figures and "unet_step_s_bf16" in figures:
        figures["bf16_speedup_over_fp32"] = round(figures["unet_step_s_fp32"] / figures["unet_step_s_bf16"], 2)
    write_result("speed", figures, targets={"bf16_speedup_over_fp32": ">= 1.5 where bf16 exists",
                                            "fraction_of_peak": ">= 0.5"})


if __name__ == "__main__":
    main()
