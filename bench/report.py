"""Rewrite the README's performance table from bench/results/*.json.

    python -m bench report

Each result file contributes its headline figures; the table sits between the
`<!-- bench:start -->` and `<!-- bench:end -->` markers in README.md.
"""
from __future__ import annotations

import json

from bench.common import BENCH_DIR, RESULTS

README = BENCH_DIR.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# result name → [(figure key, label, unit/format)]
HEADLINES: dict[str, list[tuple[str, str, str]]] = {
    "load": [("cold_load_s", "cold load, SD1.5 single file", "{} s"),
             ("raw_read_s", "raw read of the same file", "{} s"),
             ("cached_switch_s", "cached checkpoint switch", "{} s"),
             ("cold_over_cached_switch", "cold load / cached switch (target >= 20)", "{}x"),
             ("cold_over_raw", "cold load / raw read (target <= 2)", "{}x")],
    "startup": [("median_seconds", "start to UI answering, no model (target <= 10)", "{} s")],
    "soak": [("requests", "soak: API requests served (random valid/invalid, concurrent clients)", "{}"),
             ("server_errors_5xx", "soak: 5xx answers (target 0)", "{}"),
             ("p50_s", "soak: p50 latency", "{} s"), ("p99_s", "soak: p99 latency", "{} s"),
             ("rss_growth_mb", "soak: server RSS growth", "{} MB"),
             ("half_written_files", "soak: half-written files (target 0)", "{}")],
    "presets": [("balanced_s", "Balanced preset, one 512x512 image", "{} s"),
                ("fast_s", "Fast LCM 4 steps preset, one 512x512 image", "{} s"),
                ("balanced_over_fast", "Balanced / Fast (target >= 10)", "{}x")],
    "speed": [("unet_step_s_fp32", "UNet CFG step fp32", "{} s"), ("unet_step_s_bf16", "UNet CFG step bf16", "{} s"),
              ("bf16_speedup_over_fp32", "bf16 / fp32 speed-up (target >= 1.5)", "{}x"),
              ("fraction_of_peak_bf16", "bf16 UNet step, fraction of matmul peak (target >= 0.5)", "{}"),
              ("unet_step_s_bf16_compiled", "UNet CFG step bf16 with --compile (frozen Inductor)", "{} s"),
              ("fraction_of_peak_bf16_compiled", "bf16 UNet step with --compile, fraction of matmul peak", "{}")],
    "speed-gpu": [(f"unet_step_s_{p}", f"UNet CFG step {p} on the GPU", "{} s") for p in ("fp16", "bf16")]
                 + [(f"fraction_of_peak_{p}", f"{p} UNet step on the GPU, fraction of matmul peak", "{}")
                    for p in ("fp16", "bf16")],
    "history": [("first_index_s", "history: first index of 100,000 images", "{} s"),
                ("refresh_unchanged_s", "history: refresh with nothing changed", "{} s"),
                ("search_p50_ms", "history: search latency p50", "{} ms"),
                ("search_p99_ms", "history: search latency p99", "{} ms"),
                ("page_load_warm_ms", "history: page of 48 with thumbnails (cached)", "{} ms")],
    "routing": [("model-aware_hit_rate", "routing sim (64 workers, 200 models, Zipf): model-aware cache hit rate", "{}"),
                ("round-robin_hit_rate", "routing sim: round-robin cache hit rate", "{}"),
                ("model-aware_mean_wait_s", "routing sim: model-aware mean wait", "{} s"),
                ("round-robin_mean_wait_s", "routing sim: round-robin mean wait", "{} s")],
    "flux": [("cold_load_s", "Flux.1 dev GGUF Q4_0 (11.9B) cold load", "{} s"),
             ("raw_read_s", "raw read of the same file", "{} s"),
             ("cold_over_raw", "Flux GGUF cold load / raw read", "{}x"),
             ("txt2img_s", "Flux.1 dev GGUF Q4_0 txt2img 512x512, 4 steps, CPU", "{} s")],
    "flux-gpu": [("it_per_s_engine", "Flux.1 dev 1024x1024 it/s through the engine on the GPU (bf16)", "{}"),
                 ("it_per_s_bare", "Flux.1 dev 1024x1024 it/s bare diffusers on the GPU", "{}"),
                 ("engine_over_bare", "Flux engine / bare diffusers (target <= 1.05)", "{}x"),
                 ("cuda_max_allocated_mb", "Flux.1 dev peak CUDA memory (transformer + T5-XXL on the device)", "{} MB")],
    "interrogate": [("fast_s", "interrogate fast mode", "{} s"), ("best_s", "interrogate best mode", "{} s")],
    "controlnet": [("controlnet_enable_cold_s", "ControlNet enable, SD1.5 size, from disk", "{} s"),
                   ("controlnet_swap_from_disk_s", "ControlNet swap, from disk", "{} s"),
                   ("controlnet_swap_cached_s", "ControlNet swap, cached", "{} s"),
                   ("checkpoint_reload_warm_s", "the alternative: checkpoint reload (warm page cache)", "{} s"),
                   ("checkpoint_disk_loads_during_controlnet_changes", "checkpoint reads during ControlNet changes",
                    "{}")],
    "memory": [("peak_mb_per_image", "SD1.5 one image, peak memory above idle", "{} MB"),
               ("growth_over_generations_mb", "memory growth over 50 generations (target ~0)", "{} MB"),
               ("growth_over_switches_mb", "memory growth over 10 cold checkpoint switches (target ~0)", "{} MB")],
    "upscale": [("one_pass_s", "4x upscale 512x512, RealESRGAN x4plus size, one pass", "{} s"),
                ("tiled_s", "4x upscale 512x512, tiles of 192 (overlap 8)", "{} s"),
                ("one_pass_peak_mb", "4x upscale one pass, peak memory", "{} MB"),
                ("tiled_peak_mb", "4x upscale tiled, peak memory", "{} MB")],
    "upscale-gpu": [("one_pass_s", "4x upscale 512x512 on the GPU, one pass", "{} s"),
                    ("tiled_s", "4x upscale 512x512 on the GPU, tiles of 192", "{} s"),
                    ("one_pass_peak_mb", "4x upscale on the GPU one pass, peak memory", "{} MB"),
                    ("tiled_peak_mb", "4x upscale on the GPU tiled, peak memory", "{} MB")],
    "vae": [("decode_1024_one_pass_s", "VAE decode 1024x1024, one pass", "{} s"),
            ("decode_1024_tiled_s", "VAE decode 1024x1024, tiled", "{} s"),
            ("decode_1024_one_pass_peak_mb", "VAE decode 1024x1024 one pass, peak memory", "{} MB"),
            ("decode_1024_tiled_peak_mb", "VAE decode 1024x1024 tiled, peak memory", "{} MB")],
}


def _txt2img(model: str, gpu: bool) -> list[tuple[str, str, str]]:
    where, memory = (" on the GPU", "CUDA allocated") if gpu else ("", "process RSS")
    return [("engine_s", f"{model} txt2img through the engine{where}", "{} s"),
            ("bare_diffusers_s", f"{model} bare diffusers call, same model{where}", "{} s"),
            ("engine_over_bare", "engine / bare diffusers (target <= 1.05)", "{}x"),
            ("peak_mem_mb_engine", f"{model} peak memory during one image ({memory})", "{} MB")] + (
        [("it_per_s_engine", f"{model} it/s through the engine{where}", "{}"),
         ("it_per_s_bare", f"{model} it/s bare diffusers{where}", "{}")] if gpu else []) + [
        ("it_per_s_engine_compiled", f"{model} it/s through the engine with --compile{where}", "{}"),
        ("compiled_speedup", "--compile / eager engine (target >= 1.3 on GPU)", "{}x")]


# bench/txt2img.py writes one result per architecture (--arch) and profile (--gpu)
for _name, _model in (("txt2img", "SD1.5"), ("txt2img-sdxl", "SDXL")):
    HEADLINES[_name] = _txt2img(_model, gpu=False)
    HEADLINES[_name.replace("txt2img", "txt2img-gpu")] = _txt2img(_model, gpu=True)


def rows() -> list[str]:
    out = ["| benchmark | figure | value | conditions | date |", "|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        figs = data.get("figures", {})
        cond = ", ".join(f"{k}={figs[k]}" for k in ("precision", "size", "steps") if k in figs)
        for key, label, fmt in HEADLINES.get(data["name"], []):
            if key in figs:
                out.append(f"| {data['name']} | {label} | {fmt.format(figs[key])} | {cond} | {data['date'][:10]} |")
    return out


def main(argv=None) -> None:
    text = README.read_text()
    table = "\n".join([START, *rows(), END])
    if START in text and END in text:
        text = text[: text.index(START)] + table + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    README.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
