"""VAE decode of large images in one pass vs in tiles: time and peak memory, side by side.

    python -m bench vae [--sizes 512,1024] [--repeat 1]

Full-size SD1.5 VAE (random weights), loaded and placed by the PipelineManager as the app does (policy
dtype, channels_last on CPU), decoded through `pipelines.core.vae_tiling.decode`. Peak = RSS above the process
before the decode (sampling thread), or CUDA max allocated. The figures behind pipelines/core/vae_tiling.py's
per-pixel memory estimate and its "auto" rule (tile only when one pass would not fit).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics

from bench.common import bench_manager, peak_rss_mb, rss_mb, sd15_file, timed, write_result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pipelines.core import vae_tiling

    manager = bench_manager(args.device, args.precision)
    vae = manager.load(sd15_file().name).pipe.vae
    cuda = args.device.startswith("cuda")
    figures: dict = {"model": "SD1.5 VAE, random weights", "precision": str(vae.dtype).replace("torch.", ""),
                     "device": manager.policy.describe()}

    def measure(size: int, tiled: bool) -> tuple[float, float]:
        z = torch.randn(1, 4, size // 8, size // 8, dtype=vae.dtype, device=args.device)
        vae.use_tiling = tiled
        times, peaks = [], []
        with torch.no_grad():
            for _ in range(args.repeat):
                gc.collect()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    t, _ = timed(lambda: (vae_tiling.decode(vae, z), torch.cuda.synchronize()))
                    peak = (torch.cuda.max_memory_allocated() - base) / 1e6
                else:
                    base = rss_mb()
                    (t, _), peak = peak_rss_mb(lambda: timed(lambda: vae_tiling.decode(vae, z)))
                    peak -= base
                times.append(t)
                peaks.append(peak)
        vae.use_tiling = False
        return statistics.median(times), max(peaks)

    with torch.no_grad():   # warm-up: kernels and allocator pools
        vae_tiling.decode(vae, torch.randn(1, 4, 32, 32, dtype=vae.dtype, device=args.device))
    for size in (int(s) for s in args.sizes.split(",")):
        t_one, m_one = measure(size, False)
        t_tiles, m_tiles = measure(size, True)
        figures[f"decode_{size}_one_pass_s"] = round(t_one, 2)
        figures[f"decode_{size}_tiled_s"] = round(t_tiles, 2)
        figures[f"decode_{size}_one_pass_peak_mb"] = round(m_one)
        figures[f"decode_{size}_tiled_peak_mb"] = round(m_tiles)
        figures[f"decode_{size}_tiled_time_ratio"] = round(t_tiles / t_one, 2)
        figures[f"decode_{size}_estimate_mb"] = round(vae_tiling.pass_bytes(vae, size, size) / 1e6)
    write_result("vae", figures)


if __name__ == "__main__":
    main()
