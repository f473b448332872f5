"""The history index over a large outputs folder: first index, incremental refresh, search and page latency.

    python -m bench history [--images 100000] [--queries 200]

Fabricates N small PNG files with A1111 infotext (varied prompts, models, samplers, seeds) in A1111's
dated folder layout under bench/cache/history/ (once), then measures with pipelines.images.history:
- first index: a fresh index reads every file's metadata;
- refresh with nothing changed (what every page view costs), and after 10 new images in one folder;
- search latency p50/p99 over random queries (prompt words, model, sampler, seed, day range), 48 per page;
- a page load: one search plus its 48 thumbnails, cold (made) and warm (cached).
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from datetime import datetime, timedelta

from bench.common import CACHE, write_result

WORDS = ("astronaut horse castle cloud portrait cat dog city night neon forest river mountain oil painting "
         "watercolor photo cinematic lighting detailed anime girl boy robot dragon sunset ocean ship").split()
MODELS = ("sd15", "dreamshaper_8", "realisticVision", "sdxl_base", "juggernautXL", "ponyDiffusion")
SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "DDIM", "UniPC")


def fabricate(root, count: int, seed: int = 0) -> None:
    from PIL import Image, PngImagePlugin

    from pipelines.params.infotext import build_infotext

    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    per_day = 1000
    pixels = Image.new("RGB", (8, 8), (120, 80, 200))
    for i in range(count):
        day = start + timedelta(days=i // per_day)
        folder = root / "txt2img-images" / day.strftime("%Y-%m-%d")
        if i % per_day == 0:
            folder.mkdir(parents=True, exist_ok=True)
        prompt = ", ".join(rng.sample(WORDS, 6))
        info = build_infotext(prompt, "blurry, lowres", {
            "Steps": rng.choice((20, 25, 30)), "Sampler": rng.choice(SAMPLERS), "CFG scale": 7,
            "Seed": rng.randrange(2**32), "Size": "512x512", "Model": rng.choice(MODELS)})
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", info)
        pixels.save(folder / f"{i % per_day:05d}-{i}.png", pnginfo=meta)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)

    from pipelines.images.history import HistoryIndex, HistoryQuery

    root = CACHE / "history" / f"outputs-{args.images}"
    if not root.exists():
        print(f"[bench] fabricating {args.images} PNG files with infotext under {root} (one time)", flush=True)
        t = time.perf_counter()
        tmp = root.with_name(root.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        fabricate(tmp, args.images)
        tmp.rename(root)
        print(f"[bench] fabricated in {time.perf_counter() - t:.0f} s", flush=True)
    state = CACHE / "history" / "state"
    shutil.rmtree(state, ignore_errors=True)

    index = HistoryIndex(root, state)
    t = time.perf_counter()
    stats = index.refresh()
    first_index_s = time.perf_counter() - t
    assert stats.added == args.images, stats
    unchanged = []
    for _ in range(5):
        t = time.perf_counter()
        index.refresh()
        unchanged.append(time.perf_counter() - t)
    fabricate(root / "new", 10, seed=1)
    t = time.perf_counter()
    added = index.refresh().added
    refresh_after_new_s = time.perf_counter() - t
    assert added == 10

    rng = random.Random(2)
    day0 = datetime(2026, 1, 1)
    queries = []
    for _ in range(args.queries):
        kind = rng.randrange(5)
        q = HistoryQuery(offset=rng.choice((0, 0, 48, 480)))
        if kind == 0:
            q.text = " ".join(rng.sample(WORDS, rng.choice((1, 2))))
        elif kind == 1:
            q.model = rng.choice(MODELS)[:5]
        elif kind == 2:
            q.sampler, q.text = rng.choice(SAMPLERS), rng.choice(WORDS)
        elif kind == 3:
            q.seed = rng.randrange(2**32)
        else:
            d = day0 + timedelta(days=rng.randrange(max(1, args.images // 1000)))
            q.day_from = q.day_to = d.strftime("%Y-%m-%d")
        queries.append(q)
    latencies = []
    for q in queries:
        t = time.perf_counter()
        index.search(q)
        latencies.append(time.perf_counter() - t)
    latencies.sort()

    def page_load() -> float:
        t = time.perf_counter()
        page = index.search(HistoryQuery(text="portrait", limit=48))
        for item in page.items:
            index.thumbnail(item.path)
        return time.perf_counter() - t

    cold_page_s = page_load()
    warm_page_s = statistics.median(page_load() for _ in range(5))
    write_result("history", {
        "images": args.images,
        "first_index_s": round(first_index_s, 2),
        "first_index_images_per_s": round(args.images / first_index_s),
        "refresh_unchanged_s": round(statistics.median(unchanged), 4),
        "refresh_after_10_new_s": round(refresh_after_new_s, 4),
        "search_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "search_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "page_load_cold_ms": round(cold_page_s * 1000, 1),
        "page_load_warm_ms": round(warm_page_s * 1000, 1),
        "index_mb": round((state / "history.sqlite").stat().st_size / 1e6, 1),
    })
    shutil.rmtree(root / "new", ignore_errors=True)
    index.close()


if __name__ == "__main__":
    main()
