"""Interrogation benchmark (`python -m bench.interrogate`) and the random-weight model builders its
tests share (`tests/test_interrogate*.py`).

Builders write models of the real architectures with random weights in the `models/interrogate/`
layout (see `pipelines/interrogate/sources.py`): an OpenCLIP folder (`open_clip_model.safetensors`,
plus `open_clip_config.json` for a custom architecture) and a transformers BLIP caption folder
(`save_pretrained` of the model, image processor and a BERT tokenizer written from a small vocab).

The benchmark, on CPU with a full-size ViT-L-14 (random weights, loaded as the built-in
"ViT-L-14/openai" from its folder) and a full-size BLIP-base architecture (random weights,
synthetic 30524-token vocabulary):
- start: model load, cold label-table embedding (small lists in full; artists/flavors measured on a
  sample and extrapolated, labelled as such) vs a start that hits the on-disk cache (full-size
  cache files: 100,969 flavors etc.);
- fast vs best mode time per image (best with the CPU default of 256 candidates, plus one chain
  step at 2048 candidates, with and without the shared-prefix text encoding).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# What a real BLIP caption looks like (the random BLIP's own caption is 32 noise words: too long to chain on).
BENCH_CAPTION = "a painting of a woman in a red dress standing in a field of flowers"

CAPTION_WORDS = ("a an the of with on in at and by near under cat dog man woman child bird horse car house "
                 "tree flower river mountain beach city street room table chair window sky water field "
                 "red blue green yellow black white small large old young sitting standing walking "
                 "painting photo drawing picture close up view front").split()


# ---------------------------------------------------------------------- builders

def write_open_clip(folder: Path, model_cfg: dict[str, Any] | None = None, *, arch: str | None = None,
                    quick_gelu: bool = False, with_config: bool = True, seed: int = 0,
                    dtype: str = "float32") -> Path:
    """An open_clip CLIP with random weights in `folder`: open_clip_model.safetensors (+ config json).

    `model_cfg` builds a custom architecture (written to open_clip_config.json when `with_config`);
    `arch` builds a built-in one (e.g. "ViT-L-14"). Returns the weights file.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if arch is not None:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    else:
        cfg = json.loads(json.dumps(model_cfg or TINY_CLIP_CFG))
        if quick_gelu:
            cfg["quick_gelu"] = True
        model = open_clip.CLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
        if with_config:
            (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    sd = {k: v.detach().to(getattr(torch, dtype)).contiguous() for k, v in model.state_dict().items()}
    path = folder / "open_clip_model.safetensors"
    save_file(sd, str(path))
    return path


def write_blip(folder: Path, *, size: str = "tiny", seed: int = 0, words: Sequence[str] = CAPTION_WORDS) -> Path:
    """A BLIP captioning folder in the Hub layout (config.json, model.safetensors,
    preprocessor_config.json, tokenizer files) with random weights.

    size "tiny": 32-wide, 1 layer, 32 px images, a vocab of `words`;
    size "base": the BLIP-base architecture (ViT-B/16 at 384 px, BERT-base decoder) with a synthetic
    30524-token vocabulary (the real bert-base-uncased vocab cannot be downloaded here).
    """
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if size == "tiny":
        vocab = special + list(dict.fromkeys(words)) + ["[DEC]"]
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=32, patch_size=8)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    max_position_embeddings=64, encoder_hidden_size=32)
        image_size, projection = 32, 32
    elif size == "base":
        body = list(dict.fromkeys(words))
        body += [f"w{i}" for i in range(30522 - len(special) - len(body))]
        vocab = special + body + ["[DEC]", "[unused-blip]"]
        vision = dict(image_size=384, patch_size=16)          # BlipVisionConfig defaults: ViT-B
        text = dict(encoder_hidden_size=768)                  # BlipTextConfig defaults: BERT-base
        image_size, projection = 384, 512
    else:
        raise ValueError(f"size {size!r}: 'tiny' or 'base'")
    bos = vocab.index("[DEC]")
    text.update(vocab_size=len(vocab), bos_token_id=bos, sep_token_id=3, eos_token_id=3, pad_token_id=0)
    cfg = BlipConfig(vision_config=vision, text_config=text, projection_dim=projection)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(cfg).eval()
    model.save_pretrained(str(folder))
    BlipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(str(folder))
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]", model_max_length=512)
    tok.save_pretrained(str(folder))
    return folder


def tiny_label_lists() -> dict[str, list[str]]:
    """Small lists with the real lists' shapes (artists as "by X", trendings as sites)."""
    from pipelines.interrogate.labels import artist_labels, trending_labels

    return {
        "mediums": ["a painting", "a photo", "a drawing", "a 3D render", "a sculpture", "a watercolor painting"],
        "artists": artist_labels(["Claude Monet", "Vincent van Gogh", "Hokusai", "Greg Rutkowski", "Ansel Adams"]),
        "movements": ["impressionism", "surrealism", "art nouveau", "cubism", "photorealism"],
        "trendings": trending_labels(["Artstation", "deviantart", "pixiv"]),
        "flavors": ["highly detailed", "sharp focus", "intricate", "digital painting", "illustration",
                    "concept art", "matte painting", "octane render", "soft lighting", "golden hour",
                    "volumetric lighting", "4k", "8k", "dramatic", "moody", "colorful", "pastel colors",
                    "bokeh", "wide angle", "cinematic", "studio lighting", "hyperrealistic", "minimalist",
                    "ornate", "symmetrical", "vibrant", "misty", "ethereal", "gritty", "whimsical"],
        "negative": ["blurry", "low quality", "jpeg artifacts", "watermark", "bad anatomy", "deformed"],
    }


def noise_image(size: int = 96, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


# ---------------------------------------------------------------------- benchmark

def _full_size_models(root: Path) -> Path:
    """bench/cache/interrogate/models: ViT-L-14-openai (random) + blip-base (random), built once."""
    models = root / "models"
    clip_dir = models / "ViT-L-14-openai"
    if not (clip_dir / "open_clip_model.safetensors").is_file():
        print(f"[bench] writing full-size ViT-L-14 (random weights) to {clip_dir}", flush=True)
        write_open_clip(clip_dir, arch="ViT-L-14", quick_gelu=True)
    blip_dir = models / "blip-base"
    if not (blip_dir / "model.safetensors").is_file():
        print(f"[bench] writing full-size BLIP-base architecture (random weights) to {blip_dir}", flush=True)
        write_blip(blip_dir, size="base")
    return models


def _write_full_size_cache(it, lists: dict[str, list[str]]) -> None:
    """Cache files of the real sizes (random unit vectors) so the cache-hit start reads 100k flavors."""
    import torch

    clip = it.load_clip()
    dim = clip.embed_dim
    g = torch.Generator().manual_seed(0)
    for name, phrases in lists.items():
        e = torch.nn.functional.normalize(torch.randn(len(phrases), dim, generator=g), dim=-1).half()
        it.cache.save(clip.name, clip.fingerprint, name, phrases, e)


def main(argv: Sequence[str] = ()) -> None:
    import argparse

    import torch

    from bench.common import CACHE, write_result
    from pipelines.interrogate import InterrogateOptions, Interrogator
    from pipelines.interrogate.labels import TABLES

    ap = argparse.ArgumentParser(prog="python -m bench.interrogate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=512, help="phrases of artists/flavors embedded cold, then extrapolated")
    ap.add_argument("--repeat", type=int, default=3, help="runs of fast/classic (median); best/negative run once")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(list(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    os.environ["HF_HUB_OFFLINE"] = "1"
    root = CACHE / "interrogate"
    models = _full_size_models(root)
    cache_dir = root / "embeddings"
    shutil.rmtree(cache_dir, ignore_errors=True)
    image = noise_image(512)
    figures: dict[str, Any] = {}

    def make() -> Interrogator:
        return Interrogator([models], cache_dir=cache_dir, device="cpu", clip_model="ViT-L-14/openai",
                            caption_model="blip-base", allow_download=False)

    # --- cold start: load + embed (small lists in full, big ones on a sample, extrapolated)
    it = make()
    lists = it.label_lists(TABLES)
    t0 = time.perf_counter()
    clip = it.load_clip()
    figures["clip_load_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    it.load_caption()
    figures["caption_load_s"] = round(time.perf_counter() - t0, 2)
    small = [n for n in TABLES if n not in ("artists", "flavors")]
    t0 = time.perf_counter()
    it.tables(small)
    small_s = time.perf_counter() - t0
    figures["cold_small_tables_s"] = round(small_s, 2)
    figures["small_tables_phrases"] = sum(len(lists[n]) for n in small)
    est_total = small_s
    for name in ("artists", "flavors"):
        phrases = lists[name]
        step = max(1, len(phrases) // args.sample)
        sample = phrases[::step][:args.sample]   # spread over the (sorted) list
        t0 = time.perf_counter()
        clip.encode_texts(sample, batch_size=it.batch_size)
        dt = time.perf_counter() - t0
        rate = len(sample) / dt
        figures[f"cold_{name}_phrases_per_s"] = round(rate, 1)
        figures[f"cold_{name}_s_extrapolated"] = round(len(phrases) / rate, 1)
        est_total += len(phrases) / rate
    # the same sample at the full 77 tokens, as encode_text runs it (what the length cut saves)
    sample = lists["flavors"][::max(1, len(lists["flavors"]) // 64)][:64]
    t0 = time.perf_counter()
    with torch.inference_mode():
        clip.model.encode_text(clip.tokenizer(sample))
    full_rate = len(sample) / (time.perf_counter() - t0)
    figures["cold_flavors_phrases_per_s_full_77_tokens"] = round(full_rate, 1)
    figures["cold_start_s_extrapolated"] = round(figures["clip_load_s"] + figures["caption_load_s"] + est_total, 1)
    figures["cold_start_note"] = ("model loads measured; small tables measured in full; artists (10,530) and "
                                  f"flavors (100,969) embedded on a {args.sample}-phrase sample and extrapolated")
    it.unload()
    del it

    # --- cache-hit start: full-size cache files, fresh interrogator
    it = make()
    _write_full_size_cache(it, lists)
    it.unload()
    it = make()
    t0 = time.perf_counter()
    it.load_clip()
    it.load_caption()
    t_models = time.perf_counter() - t0
    it.tables(TABLES)
    t_warm = time.perf_counter() - t0
    assert it.counters.table_computes == 0 and it.counters.table_cache_hits == len(TABLES)
    figures["warm_start_s"] = round(t_warm, 2)
    figures["warm_tables_load_s"] = round(t_warm - t_models, 2)
    figures["cold_over_warm_start"] = round(figures["cold_start_s_extrapolated"] / t_warm, 1)

    # --- per-image modes (tables already in memory, as in a running app)
    opts = InterrogateOptions()
    t0 = time.perf_counter()
    it.caption(image, options=opts)
    figures["caption_s"] = round(time.perf_counter() - t0, 2)
    cap = BENCH_CAPTION
    for mode in ("fast", "classic", "best", "negative"):
        runs = []
        for _ in range(args.repeat if mode in ("fast", "classic") else 1):
            steps0 = it.counters.chain_steps
            t0 = time.perf_counter()
            res = it.interrogate(image, mode, caption=cap, options=opts)
            runs.append(time.perf_counter() - t0)
            figures[f"{mode}_chain_steps"] = it.counters.chain_steps - steps0
            figures[f"{mode}_prompt_tokens"] = it.clip.token_count(res.prompt)
        runs.sort()
        figures[f"{mode}_s"] = round(runs[len(runs) // 2], 2)
    figures["best_over_fast"] = round(figures["best_s"] / max(figures["fast_s"], 1e-6), 1)
    figures["note_modes"] = (f"per image, caption given ({BENCH_CAPTION!r}; caption_s is the BLIP-base time, "
                             "separate); best/negative with the CPU default of 256 candidates, min 8 / max 32 "
                             "flavors; random weights decide how many chain steps run (*_chain_steps)")

    # --- one chain step at clip-interrogator's 2048 candidates: shared-prefix encoding vs plain
    feats = it.image_features(image)
    merged = it._prompt_table()
    phrases = [p for p, _ in merged.rank(feats, 2048)]
    prefix = ", ".join([cap] + phrases[:8])        # a chain 8 steps in
    cont = it.clip.continuations(prefix, phrases[8:2056])
    t0 = time.perf_counter()
    a = it.clip.encode_continuations(cont, batch_size=it.batch_size)
    figures["chain_step_2048_prefix_cached_s"] = round(time.perf_counter() - t0, 2)
    sub = cont.select(range(128))
    t0 = time.perf_counter()
    with torch.inference_mode():
        b = torch.nn.functional.normalize(it.clip.model.encode_text(it.clip.tokenizer(sub.texts())).float(), dim=-1)
    naive_128 = time.perf_counter() - t0
    figures["chain_step_2048_plain_encode_text_s_extrapolated"] = round(naive_128 * 2048 / 128, 1)
    figures["chain_step_prefix_speedup"] = round(figures["chain_step_2048_plain_encode_text_s_extrapolated"]
                                                 / figures["chain_step_2048_prefix_cached_s"], 1)
    figures["chain_step_prefix_tokens"] = len(cont.shared)
    figures["chain_step_max_abs_diff"] = float((a[:128] - b).abs().max())
    figures["chain_step_mean_added_tokens"] = round(sum(len(r) for r in cont.rests) / len(cont.rests), 1)
    figures["best_2048_candidates_s_estimate"] = round(
        figures["fast_s"] + max(figures["best_chain_steps"], 8) * figures["chain_step_2048_prefix_cached_s"], 1)
    figures["best_2048_note"] = ("estimate: fast_s + max(best_chain_steps, 8) x one measured 2048-candidate step "
                                 "(clip-interrogator's default count, the GPU default here)")
    figures["load_avg_1min_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    figures["torch_threads"] = torch.get_num_threads()
    write_result("interrogate", figures,
                 setup={"clip": "ViT-L-14 (open_clip, QuickGELU) random weights, fp32, CPU",
                        "caption": "BLIP-base architecture random weights, fp32, CPU, greedy, 32 tokens",
                        "image": "512x512 noise", "batch_size": it.batch_size})


if __name__ == "__main__":
    main(sys.argv[1:])
