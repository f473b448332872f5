"""4x upscale with a full-size RealESRGAN_x4plus architecture (random weights): one pass vs tiles, time and peak memory.

    python -m bench upscale [--size 512] [--repeat 3] [--tile 192] [--overlap 8] [--precision auto] [--device cpu]

The model file (RRDBNet, 64 features, 23 blocks, 16.7M parameters, Real-ESRGAN's release layout) is written once
into bench/cache/models/RealESRGAN/ and found, named and loaded by `pipelines.upscale` as the app does (spandrel,
weights_only, the device policy's dtype). Each side runs `Upscalers.model_pass` on the same image; the two sides
alternate and the medians are reported. Peak = RSS above the process before the pass (sampling thread), or CUDA
max allocated. The peak of the one-pass run per output pixel checks pipelines/upscale/tiles.py's estimate.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics

from bench.common import CACHE, cached_model, peak_rss_mb, rss_mb, timed, write_result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import torch
    from PIL import Image

    from bench.synth.upscalers import realesrgan_x4plus
    from pipelines.core.devices import make_policy
    from pipelines.upscale import from_paths, tiles
    from pipelines.models.files import ModelPaths

    cached_model("RealESRGAN_x4plus.pth", lambda p: realesrgan_x4plus(p, tiny=False), "RealESRGAN x4plus",
                 folder="RealESRGAN")
    policy = make_policy(args.device, args.precision)
    ups = from_paths(ModelPaths(CACHE / "models"), policy)
    model = ups.find("R-ESRGAN 4x+").model
    descriptor = ups.load(model)
    dtype = next(descriptor.model.parameters()).dtype
    cuda = args.device.startswith("cuda")
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((args.size // 8, args.size // 8, 3)) * 255).astype(np.uint8)).resize(
        (args.size, args.size), Image.BICUBIC)

    def once(tile: int) -> tuple[float, float]:
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t, (out, _) = timed(lambda: (ups.model_pass(image, model, tile=tile, overlap=args.overlap),
                                         torch.cuda.synchronize()))
            peak = (torch.cuda.max_memory_allocated() - base) / 1e6
        else:
            base = rss_mb()
            (t, out), peak = peak_rss_mb(lambda: timed(lambda: ups.model_pass(image, model, tile=tile,
                                                                             overlap=args.overlap)))
            peak -= base
        assert out.size == (4 * args.size, 4 * args.size)
        return t, peak

    ups.model_pass(image.resize((32, 32)), model, tile=0)   # warm-up: kernels, allocator pools
    runs: dict[str, list[tuple[float, float]]] = {"one_pass": [], "tiled": []}
    for _ in range(args.repeat):
        runs["one_pass"].append(once(0))
        runs["tiled"].append(once(args.tile))
    figures: dict = {"model": "RealESRGAN_x4plus architecture (RRDBNet 64nf 23nb), random weights",
                     "precision": str(dtype).replace("torch.", ""), "size": f"{args.size}x{args.size} -> 4x",
                     "device": policy.describe(), "tile": args.tile, "overlap": args.overlap, "repeat": args.repeat}
    for side, values in runs.items():
        figures[f"{side}_s"] = round(statistics.median(t for t, _ in values), 2)
        figures[f"{side}_peak_mb"] = round(statistics.median(m for _, m in values))
    figures["tiled_time_ratio"] = round(figures["tiled_s"] / figures["one_pass_s"], 2)
    figures["tiled_memory_ratio"] = round(figures["tiled_peak_mb"] / max(1, figures["one_pass_peak_mb"]), 3)
    figures["one_pass_estimate_mb"] = round(tiles.pass_bytes(args.size, args.size, 4, dtype.itemsize) / 1e6)
    write_result("upscale-gpu" if cuda else "upscale", figures)


if __name__ == "__main__":
    main()
