"""Flux.1 dev: a full-size GGUF Q4_0 transformer on the CPU, and the GPU it/s profile.

    python -m bench flux                  # CPU: load vs raw read of the GGUF Q4_0 file; txt2img 512x512, 4 steps
    python -m bench flux --gpu            # CUDA: 1024x1024, 20 steps, engine vs bare diffusers it/s, bf16
    python -m bench flux --tiny [--gpu --device cpu]   # smoke test of either code path at tiny width

CPU: the transformer (11.9B parameters, random weights) is written as city96-style GGUF Q4_0 one tensor at a time
(it does not fit in RAM as bf16), once, into bench/cache/flux/; the VAE (ae.safetensors) and CLIP-L are full size,
the T5 encoder is reduced to one layer of T5-XXL's width (4096) so the timing is the transformer's: the text
encoders run once per prompt. Load = the manager's cold load (GGUF tensors stay quantized, computed in the
precision policy's dtype) against reading the file's bytes; both with the file in the page cache.
GPU: the full-size transformer and T5-XXL are built directly on the device in bf16 (random weights, nothing read
from disk) and handed to the manager; the engine and the bare FluxPipeline call run alternately on that one
pipeline (Euler, CFG 1, Distilled CFG Scale 3.5).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

from bench.common import CACHE, median_time, peak_rss_mb, rss_mb, timed, write_result

FLUX_CACHE = CACHE / "flux"
GGUF_NAME = "flux1-dev-random-Q4_0.gguf"
BUNDLED = Path(__file__).resolve().parent.parent / "pipelines" / "models" / "configs" / "flux"
REDUCED_T5 = {"num_layers": 1, "num_decoder_layers": 1, "d_ff": 1024}   # T5-XXL's width, one layer


def _configs(tiny: bool, t5_vocab: int) -> dict[str, dict]:
    from bench.synth.families import tiny_flux_configs

    if tiny:
        return tiny_flux_configs(t5_vocab)
    read = lambda sub: json.loads((BUNDLED / sub).read_text())   # noqa: E731
    return {"transformer": read("transformer/config.json"), "vae": read("vae/config.json"),
            "text_encoder": read("text_encoder/config.json"), "text_encoder_2": read("text_encoder_2/config.json"),
            "scheduler": read("scheduler/scheduler_config.json")}


def _modules(cfgs: dict, tokenizer_dir: Path, device: str, dtype):
    """VAE, CLIP-L, T5 encoder (+ tokenizers, scheduler) built from configs with random weights on `device`."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    from pipelines.models.tokenizers import clip_tokenizer

    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_") and k != "architectures"}   # noqa: E731
    with torch.device(device):
        vae = AutoencoderKL.from_config(strip(cfgs["vae"])).to(dtype).eval()
        te = CLIPTextModel(CLIPTextConfig(**strip(cfgs["text_encoder"]))).to(dtype).eval()
        te2 = T5EncoderModel(T5Config(**strip(cfgs["text_encoder_2"]))).to(dtype).eval()
    return dict(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=clip_tokenizer(),
                tokenizer_2=T5TokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True),
                scheduler=FlowMatchEulerDiscreteScheduler.from_config(strip(cfgs["scheduler"])))


def _tokenizer() -> Path:
    from bench.synth.families import write_t5_tokenizer

    folder = FLUX_CACHE / "models" / "text_encoder" / "t5_tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        write_t5_tokenizer(folder)
    return folder


def _write_cpu_files(tiny: bool) -> tuple[Path, Path]:
    """models/ (GGUF transformer, ae.safetensors, clip_l, reduced T5, tokenizer) and the config root the manager
    needs for the reduced T5; written once."""
    import torch

    from bench.synth.families import flux_bfl_shapes, write_flux_gguf
    from bench.synth.ldm_export import save_ldm_file, vae_to_ldm

    tag = "tiny" if tiny else "full"
    models, configs = FLUX_CACHE / tag / "models", FLUX_CACHE / tag / "configs"
    gguf_path = models / "Stable-diffusion" / GGUF_NAME
    tok = _tokenizer()
    if not (models / "text_encoder" / "t5_tokenizer").exists():
        shutil.copytree(tok, models / "text_encoder" / "t5_tokenizer")
    from transformers import T5TokenizerFast

    cfgs = _configs(tiny, len(T5TokenizerFast.from_pretrained(tok, local_files_only=True)))
    if not tiny:
        cfgs["text_encoder_2"].update(REDUCED_T5)
    if not (configs / "flux").is_dir():
        shutil.copytree(BUNDLED, configs / "flux")
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
            (configs / "flux" / name / "config.json").write_text(json.dumps(cfgs[name]))
    if not (models / "VAE" / "ae.safetensors").is_file():
        mods = _modules(cfgs, tok, "cpu", torch.bfloat16)
        save_ldm_file(vae_to_ldm(mods["vae"].state_dict(), mods["vae"].config), models / "VAE" / "ae.safetensors")
        save_ldm_file({"text_model." + k if not k.startswith("text_model.") else k: v.clone()
                       for k, v in mods["text_encoder"].state_dict().items()}, models / "text_encoder" / "clip_l.safetensors")
        save_ldm_file({k: v.clone() for k, v in mods["text_encoder_2"].state_dict().items()},
                      models / "text_encoder" / "t5xxl_reduced.safetensors")
    if not gguf_path.is_file():
        t = cfgs["transformer"]
        inner = t["num_attention_heads"] * t["attention_head_dim"]
        shapes = flux_bfl_shapes(inner, t["attention_head_dim"], inner * 4, t["joint_attention_dim"],
                                 t["pooled_projection_dim"], t["in_channels"], t["num_layers"], t["num_single_layers"])
        gen = torch.Generator().manual_seed(0)
        print(f"[bench] writing {gguf_path} ({sum(map(_numel, shapes.values())) / 1e9:.2f}B parameters, Q4_0)", flush=True)
        seconds, _ = timed(lambda: write_flux_gguf(lambda k: torch.randn(shapes[k], generator=gen) * 0.02, gguf_path,
                                                   "Q4_0", shapes=shapes))
        print(f"[bench] written in {seconds:.0f} s, {gguf_path.stat().st_size / 1e9:.2f} GB", flush=True)
    return models, configs


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _manager(models: Path, configs: Path, device: str, precision: str):
    from pipelines.core.devices import make_policy
    from pipelines.models.files import ModelPaths, ModelRegistry
    from pipelines.models.manager import PipelineManager

    registry = ModelRegistry(ModelPaths(models, cache_dir=FLUX_CACHE / "state"), hashing=False)
    return PipelineManager(registry, policy=make_policy(device, precision), config_root=configs, cache_size=1)


def _raw_read(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(64 << 20):
            n += len(chunk)
    return n


def cpu(args) -> None:
    models, configs = _write_cpu_files(args.tiny)
    path = models / "Stable-diffusion" / GGUF_NAME
    _raw_read(path)   # page cache warm for both sides
    raw_s, raw_runs = median_time(lambda: _raw_read(path), args.repeat)

    def cold_load():
        manager = _manager(models, configs, "cpu", args.precision)
        manager.load(GGUF_NAME)
        return manager

    load_runs = []
    for _ in range(args.repeat):
        seconds, manager = timed(cold_load)
        load_runs.append(seconds)
        del manager
    load_s = statistics.median(load_runs)
    manager = cold_load()
    from pipelines.generate.engine import Engine
    from pipelines.params.declarations import make_request

    size = 64 if args.tiny else args.size
    req = make_request(prompt="a photograph of an astronaut riding a horse", steps=args.steps, width=size,
                       height=size, seed=1, sampler_name="Euler", cfg_scale=1.0, distilled_cfg_scale=3.5)
    engine = Engine(manager)
    (gen_s, result), peak = peak_rss_mb(lambda: timed(lambda: engine.txt2img(req, save=False)))
    write_result("flux-tiny" if args.tiny else "flux", {
        "model": "Flux.1 dev transformer, random weights, GGUF Q4_0" + (" (tiny width)" if args.tiny else ""),
        "file_gb": round(path.stat().st_size / 1e9, 2), "precision": manager.policy.dtype_name,
        "raw_read_s": round(raw_s, 3), "raw_read_runs_s": [round(t, 3) for t in raw_runs],
        "cold_load_s": round(load_s, 3), "cold_load_runs_s": [round(t, 3) for t in load_runs],
        "cold_over_raw": round(load_s / raw_s, 2),
        "txt2img_s": round(gen_s, 2), "size": size, "steps": args.steps, "s_per_step": round(gen_s / args.steps, 2),
        "peak_rss_mb_txt2img": round(peak), "text_encoders": "CLIP-L full size; T5 reduced to one T5-XXL-width layer",
        "rss_mb": round(rss_mb()), "device": manager.policy.describe(), "images": len(result.images),
    }, note="timings taken on a shared machine; the txt2img figure is one run (each takes minutes on 2 cores)")


def gpu(args) -> None:
    """Full-size Flux dev built on the device (bf16), engine vs bare FluxPipeline, alternating runs."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from pipelines.generate.engine import Engine
    from pipelines.models.detect import FLUX, Architecture
    from pipelines.models.files import ModelFile
    from pipelines.models.loading import LoadedCheckpoint
    from pipelines.params.declarations import make_request

    device = args.device if args.device != "cpu" or args.tiny else "cuda"
    dtype = torch.bfloat16
    tok = _tokenizer()
    from transformers import T5TokenizerFast

    cfgs = _configs(args.tiny, len(T5TokenizerFast.from_pretrained(tok, local_files_only=True)))
    build_s, modules = timed(lambda: _modules(cfgs, tok, device, dtype))
    strip = {k: v for k, v in cfgs["transformer"].items() if not k.startswith("_")}
    with torch.device(device):
        t_s, transformer = timed(lambda: FluxTransformer2DModel.from_config(strip).to(dtype).eval())
    pipe = FluxPipeline(transformer=transformer, **modules)
    pipe.set_progress_bar_config(disable=True)
    manager = _manager(FLUX_CACHE / "gpu-none", FLUX_CACHE / "gpu-none", device, "bf16")
    info = ModelFile(Path("flux1-dev-random"), "flux1-dev-random", "diffusers")
    loaded = LoadedCheckpoint(info, Architecture(FLUX, variant="dev"), pipe, dict(pipe.scheduler.config))
    loaded.own_vae = pipe.vae
    manager._cache["flux1-dev-random"] = loaded   # built in memory: handed to the manager as a loaded checkpoint
    manager.active = loaded
    size, steps = (64, 2) if args.tiny else (args.size or 1024, args.steps or 20)
    prompt = "a photograph of an astronaut riding a horse"
    req = make_request(prompt=prompt, steps=steps, width=size, height=size, seed=1, sampler_name="Euler",
                       cfg_scale=1.0, distilled_cfg_scale=3.5)
    engine = Engine(manager)
    on_cuda = device.startswith("cuda")

    def sync(fn):
        def run():
            out = fn()
            if on_cuda:
                torch.cuda.synchronize()
            return out
        return run

    ours = sync(lambda: engine.txt2img(req, save=False).images)
    bare = sync(lambda: pipe(prompt=prompt, guidance_scale=3.5, num_inference_steps=steps, height=size, width=size,
                             generator=torch.Generator("cpu").manual_seed(1)).images)
    ours(), bare()   # warm-up
    t_engine, t_bare = [], []
    for _ in range(args.repeat):
        t_engine.append(timed(ours)[0])
        t_bare.append(timed(bare)[0])
    me, mb = statistics.median(t_engine), statistics.median(t_bare)
    write_result("flux-gpu-tiny" if args.tiny else "flux-gpu", {
        "model": "Flux.1 dev, random weights built on the device" + (" (tiny width)" if args.tiny else ""),
        "precision": "bf16", "size": size, "steps": steps, "sampler": "Euler", "cfg": 1, "distilled_cfg": 3.5,
        "build_s": round(build_s + t_s, 1), "engine_s": round(me, 3), "bare_diffusers_s": round(mb, 3),
        "engine_runs_s": [round(t, 3) for t in t_engine], "bare_runs_s": [round(t, 3) for t in t_bare],
        "engine_over_bare": round(me / mb, 3), "it_per_s_engine": round(steps / me, 3),
        "it_per_s_bare": round(steps / mb, 3),
        "cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 1e6) if on_cuda else None,
        "device": torch.cuda.get_device_name() if on_cuda else device,
    }, targets={"engine_over_bare": "<= 1.05"})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the CUDA profile (1024x1024, 20 steps, bf16)")
    ap.add_argument("--tiny", action="store_true", help="smoke test at tiny width")
    ap.add_argument("--device", default="cpu", help="with --gpu --tiny: run the GPU code path here")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.gpu:
        gpu(args)
    else:
        args.size, args.steps = args.size or 512, args.steps or 4
        cpu(args)


if __name__ == "__main__":
    main()
