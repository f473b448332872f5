"""Tiny (and full-size SD1.5 / SDXL) Stable Diffusion models with random weights, in real on-disk layouts.

Tests and benchmarks cannot download weights. These builders make models of the real architectures
(UNet2DConditionModel, AutoencoderKL, CLIP text encoders, the real CLIP BPE tokenizer) with random
weights, and write them as a diffusers folder, as an original single-file LDM checkpoint, or as the
configs-only folder the loader bundles per architecture.

Tiny sizes are chosen so every structural feature of the real models is present (VAE scale factor 8,
cross-attention and plain levels, SDXL's text_time embedding and two encoders, >1 transformer layer per
block, 9-channel inpaint input) while a pipeline builds in well under a second on CPU.

Deliberate choices:
- SDXL's two text encoders have *different* widths (32 and 64, cross_attention_dim 96). diffusers'
  `create_diffusers_clip_model_from_ldm` picks the HF-layout `embedders.0` for `text_encoder_2` too when
  the position-embedding widths are equal, so equal widths would not round-trip.
- `text_encoder_2.projection_dim` (48) differs from its width (64) so a missing transpose of
  `text_projection` cannot go unnoticed.
- SDXL uses layers_per_block 2 (like the real one) to exercise the LDM block indexing; others use 1.
"""
from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from pipelines.models.tokenizers import clip_tokenizer

from .ldm_export import LDM_COMPONENTS, export_single_file, family_of

ARCHS = ("sd1", "sd1_inpaint", "sd2", "sdxl", "sdxl_refiner")

PIPELINE_CLASS_NAMES = {
    "sd1": "StableDiffusionPipeline",
    "sd1_inpaint": "StableDiffusionInpaintPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl_refiner": "StableDiffusionXLImg2ImgPipeline",
}

_SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "num_train_timesteps": 1000}


def pipeline_class(arch: str):
    import diffusers

    return getattr(diffusers, PIPELINE_CLASS_NAMES[arch])


# --------------------------------------------------------------------------------------- configs

def _clip_text_config(hidden: int, layers: int, act: str, projection_dim: int | None = None,
                      heads: int = 4) -> dict[str, Any]:
    # bos/eos/pad ids as in the real SD text_encoder configs (eos_token_id 2 selects the legacy
    # argmax-of-ids pooling, which finds <|endoftext|> = 49407 with both pad tokens).
    return dict(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden,
                projection_dim=projection_dim or hidden, num_hidden_layers=layers, num_attention_heads=heads,
                max_position_embeddings=77, hidden_act=act, layer_norm_eps=1e-5,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)


def _tiny_vae_config(scaling_factor: float) -> dict[str, Any]:
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[32, 32, 64, 64],
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=scaling_factor,
                force_upcast=True)


def tiny_configs(arch: str) -> dict[str, dict[str, Any]]:
    """Component configs of the tiny model: {'unet': ..., 'vae': ..., 'text_encoder': ...,
    'text_encoder_2': ..., 'scheduler': {'_class_name': ..., ...}} (absent components omitted)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    fam = family_of(arch)
    in_ch = 9 if arch.endswith("_inpaint") else 4
    sd_unet = dict(sample_size=8, in_channels=in_ch, out_channels=4, block_out_channels=[32, 64],
                   layers_per_block=1, norm_num_groups=32,
                   down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
    if fam == "sd1":
        return {
            "unet": dict(sd_unet, attention_head_dim=8, cross_attention_dim=32),
            "vae": _tiny_vae_config(0.18215),
            "text_encoder": _clip_text_config(32, 2, "quick_gelu"),
            "scheduler": dict(_SD_SCHEDULE, _class_name="PNDMScheduler", skip_prk_steps=True,
                              set_alpha_to_one=False, steps_offset=1, clip_sample=False),
        }
    if fam == "sd2":  # SD 2.1 (768-v): linear projections, head width 16 here (64 in the real one)
        return {
            "unet": dict(sd_unet, attention_head_dim=[2, 4], cross_attention_dim=32, use_linear_projection=True,
                         upcast_attention=True),
            "vae": _tiny_vae_config(0.18215),
            "text_encoder": _clip_text_config(32, 2, "gelu"),
            "scheduler": dict(_SD_SCHEDULE, _class_name="DDIMScheduler", prediction_type="v_prediction",
                              set_alpha_to_one=False, steps_offset=1, clip_sample=False),
        }
    te2 = _clip_text_config(64, 3, "gelu", projection_dim=48)
    euler = dict(_SD_SCHEDULE, _class_name="EulerDiscreteScheduler", interpolation_type="linear",
                 prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", use_karras_sigmas=False)
    xl_unet = dict(sample_size=8, in_channels=in_ch, out_channels=4, block_out_channels=[32, 64],
                   norm_num_groups=32, attention_head_dim=[2, 4], use_linear_projection=True,
                   down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                   up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
                   addition_embed_type="text_time", addition_time_embed_dim=8)
    if fam == "sdxl":
        # time ids: original size, crop top-left, target size = 6 values
        return {
            "unet": dict(xl_unet, layers_per_block=2, transformer_layers_per_block=[1, 2],
                         cross_attention_dim=32 + 64, projection_class_embeddings_input_dim=48 + 6 * 8),
            "vae": _tiny_vae_config(0.13025),
            "text_encoder": _clip_text_config(32, 2, "quick_gelu"),
            "text_encoder_2": te2,
            "scheduler": euler,
        }
    # refiner: only the OpenCLIP encoder; time ids: original size, crop, aesthetic score = 5 values
    return {
        "unet": dict(xl_unet, layers_per_block=1, transformer_layers_per_block=2, cross_attention_dim=64,
                     projection_class_embeddings_input_dim=48 + 5 * 8),
        "vae": _tiny_vae_config(0.13025),
        "text_encoder_2": te2,
        "scheduler": euler,
    }


# ------------------------------------------------------------------------------------- builders

def _scheduler(cfg: dict[str, Any]):
    import diffusers

    cfg = dict(cfg)
    cls = getattr(diffusers, cfg.pop("_class_name"))
    return cls.from_config(cfg)


def _assemble(arch: str, cfgs: dict[str, dict[str, Any]], unet, vae, te, te2):
    cls = pipeline_class(arch)
    fam = family_of(arch)
    scheduler = _scheduler(cfgs["scheduler"])
    if fam in ("sd1", "sd2"):
        tok = clip_tokenizer("!" if fam == "sd2" else "<|endoftext|>")
        return cls(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    tok2 = clip_tokenizer("!")
    if fam == "sdxl":
        return cls(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=clip_tokenizer("<|endoftext|>"),
                   tokenizer_2=tok2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    return cls(vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2, unet=unet,
               scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)


MODULES = LDM_COMPONENTS   # unet, vae, text_encoder, text_encoder_2: also the order weights are drawn in


def new_module(name: str, cfg: dict[str, Any]):
    """A pipeline module (`name` in MODULES) with the default random init of its class, in eval mode.
    The text encoders are CLIP text towers: `text_encoder` plain (SD1 CLIP-L, SD2 OpenCLIP-H, SDXL's
    CLIP-L), `text_encoder_2` with projection (SDXL's OpenCLIP bigG)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if name == "unet":
        module = UNet2DConditionModel.from_config(cfg)
    elif name == "vae":
        module = AutoencoderKL.from_config(cfg)
    elif name == "text_encoder":
        module = CLIPTextModel(CLIPTextConfig(**cfg))
    elif name == "text_encoder_2":
        module = CLIPTextModelWithProjection(CLIPTextConfig(**cfg))
    else:
        raise ValueError(f"unknown module {name!r}; one of {MODULES}")
    return module.eval()


def tiny_pipeline(arch: str, seed: int = 0):
    """A diffusers pipeline of `arch` (see ARCHS) with tiny random modules; same seed → same weights.
    The global torch RNG state is left as it was."""
    cfgs = tiny_configs(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, te, te2 = (new_module(n, cfgs[n]) if n in cfgs else None for n in MODULES)
    return _assemble(arch, cfgs, unet, vae, te, te2)


# --------------------------------------------------------------------------------------- writers

def write_diffusers_folder(pipe, dir: str | os.PathLike) -> Path:
    """`save_pretrained` with safetensors weights (what users download from the Hub)."""
    dir = Path(dir)
    pipe.save_pretrained(dir, safe_serialization=True)
    return dir


def write_single_file(pipe, path: str | os.PathLike, arch: str, dtype: torch.dtype | None = None) -> Path:
    """One original-layout (LDM/A1111) `.safetensors` checkpoint."""
    return export_single_file(pipe, path, arch, dtype=dtype)


def write_config_folder(pipe, dir: str | os.PathLike) -> Path:
    """Only the JSON configs of a diffusers folder: model_index.json, <component>/config.json,
    scheduler/scheduler_config.json. No weights, no tokenizer files (pass tokenizers explicitly)."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    pipe.save_config(dir)
    for name, comp in pipe.components.items():
        if comp is None or name.startswith("tokenizer"):
            continue
        sub = dir / name
        if hasattr(comp, "save_config"):  # diffusers models and schedulers
            comp.save_config(sub)
        elif hasattr(comp, "config") and hasattr(comp.config, "save_pretrained"):  # transformers models
            comp.config.save_pretrained(sub)
    return dir


# ------------------------------------------------------------------------- full-size SD 1.5 / SDXL

BUNDLED_CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "models" / "configs"
_CONFIG_FILES = {"unet": "unet/config.json", "vae": "vae/config.json", "text_encoder": "text_encoder/config.json",
                 "text_encoder_2": "text_encoder_2/config.json", "scheduler": "scheduler/scheduler_config.json"}

SD15_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD15_VAE_CONFIG = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
SD15_TEXT_ENCODER_CONFIG = {  # openai/clip-vit-large-patch14 text tower, as in SD1.5's text_encoder/config.json
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SD15_SCHEDULER_CONFIG = dict(_SD_SCHEDULE, _class_name="PNDMScheduler", skip_prk_steps=True,
                             set_alpha_to_one=False, steps_offset=1, clip_sample=False)


def bundled_configs(family: str, defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Component configs of the real `family` model from the loader's bundled pipelines/models/configs/<family>/
    ({'unet': ..., 'vae': ..., 'text_encoder': ..., 'text_encoder_2': ..., 'scheduler': {'_class_name':
    ...}}, absent components omitted); a component without a bundled file comes from `defaults`."""
    folder = BUNDLED_CONFIGS / family
    out: dict[str, dict[str, Any]] = {}
    for key, rel in _CONFIG_FILES.items():
        f = folder / rel
        default = (defaults or {}).get(key)
        if f.is_file():
            data = json.loads(f.read_text())
            if key == "scheduler":
                data.setdefault("_class_name", (default or {}).get("_class_name"))
            else:
                data = {k: v for k, v in data.items() if not k.startswith("_")}
            out[key] = data
        elif default is not None:
            out[key] = dict(default)
    if "unet" not in out:
        raise FileNotFoundError(f"no bundled configs for {family!r} in {folder}")
    return out


def _sd15_configs() -> dict[str, dict[str, Any]]:
    """From the bundled pipelines/models/configs/sd1/ when the project has it, else the inline dicts above."""
    return bundled_configs("sd1", {"unet": SD15_UNET_CONFIG, "vae": SD15_VAE_CONFIG,
                                   "text_encoder": SD15_TEXT_ENCODER_CONFIG, "scheduler": SD15_SCHEDULER_CONFIG})


def _full_size_configs(family: str) -> dict[str, dict[str, Any]]:
    return _sd15_configs() if family == "sd1" else bundled_configs(family)


@contextmanager
def _default_dtype(dtype: torch.dtype):
    """Parameters are created (and randomly initialised) directly in `dtype`: an SDXL UNet is never
    materialised in fp32 (10.3 GB), and the fp16 init is faster than init + cast on CPU."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def full_size_ldm_state_dict(family: str, dtype: torch.dtype = torch.float16, seed: int = 0,
                             empty: bool = False) -> dict[str, torch.Tensor]:
    """The real `family` ('sd1', 'sdxl', ... as bundled in pipelines/models/configs/) architecture with random
    weights (default init of each module, drawn directly in `dtype`) as one LDM-layout state dict.

    Modules are built, converted and dropped one at a time, so the peak is about the result plus one
    module. `empty=True` builds on the meta device (no memory, no values, well under a second even for
    SDXL): the exact key names and shapes of the file, for structural checks."""
    from accelerate import init_empty_weights

    from .ldm_export import component_to_ldm, schedule_extras

    cfgs = _full_size_configs(family)
    ldm: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad(), _default_dtype(dtype):
        torch.manual_seed(seed)
        for name in MODULES:
            if name not in cfgs:
                continue
            with init_empty_weights() if empty else nullcontext():
                module = new_module(name, cfgs[name])
            ldm.update(component_to_ldm(family, name, module))
            del module
            if not empty:
                gc.collect()  # the module's tensors not in the result (OpenCLIP q/k/v) go before the next one
    ldm.update(schedule_extras(family, cfgs["scheduler"]))
    return ldm


def full_size_sd15_single_file(path: str | os.PathLike, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """The real SD1.5 architecture (UNet 320/640/1280/1280, CLIP ViT-L/14 text 12x768, VAE 128/256/512/512)
    with random weights (default init of each module), written as one LDM `.safetensors`: fp16 by default,
    2.13 GB, the size of the common pruned-fp16 SD1.5 files (fp32 would be 4.3 GB). Built one module at a
    time directly in fp16; measured: 12 s and 3.1 GB peak RSS on 2 CPU cores (25 s and 4.2 GB when built
    in fp32 and halved). Random weights are fine for benchmarks (speed does not depend on values) and give
    finite images."""
    from .ldm_export import save_ldm_file

    return save_ldm_file(full_size_ldm_state_dict("sd1", dtype, seed), path, dtype=dtype)


def full_size_sdxl_single_file(path: str | os.PathLike, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """The real SDXL base 1.0 architecture (UNet 320/640/1280 with 1/2/10 transformer layers, 2.57 B
    parameters; CLIP ViT-L/14 text 12x768 + OpenCLIP ViT-bigG/14 text 32x1280 with projection; VAE
    128/256/512/512) from pipelines/models/configs/sdxl/, random weights, written in the layout of
    `sd_xl_base_1.0.safetensors` (`model.diffusion_model.*`, `first_stage_model.*`,
    `conditioner.embedders.0.transformer.*`, `conditioner.embedders.1.model.*`): fp16 by default, 6.94 GB
    like the real file. Built one module at a time directly in fp16 (the UNet never exists in fp32, which
    would be 10.3 GB); measured: 38 s and 8.0 GB peak RSS (the file's tensors + one module) on 2 CPU cores
    (init is single-threaded). Loads as SDXL with every weight finite; txt2img gives finite images."""
    from .ldm_export import save_ldm_file

    return save_ldm_file(full_size_ldm_state_dict("sdxl", dtype, seed), path, dtype=dtype)


def full_size_pipeline_skeleton(family: str = "sd1"):
    """A full-size `family` pipeline on the meta device (no memory, no weights): for write_config_folder
    and structural checks."""
    from accelerate import init_empty_weights

    cfgs = _full_size_configs(family)
    with init_empty_weights():
        modules = [new_module(n, cfgs[n]) if n in cfgs else None for n in MODULES]
    return _assemble(family, {"scheduler": cfgs["scheduler"]}, *modules)


def full_size_sd15_pipeline_skeleton():
    """An SD1.5 pipeline on the meta device (no memory, no weights): for write_config_folder."""
    return full_size_pipeline_skeleton("sd1")


# ------------------------------------------------------------------------------------------ ControlNet

CONTROLNET_HINT_CHANNELS = [16, 32, 96, 256]   # every released ControlNet; the LDM layout depends on 4 entries


def controlnet_config(unet_config: dict[str, Any]) -> dict[str, Any]:
    """The ControlNet matching a UNet config: its encoder half plus the conditioning embedding."""
    import inspect

    from diffusers import ControlNetModel

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    cfg = {k: v for k, v in unet_config.items() if k in accepted and not k.startswith("_")}
    cfg.update(in_channels=4, conditioning_channels=3, conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)
    return cfg


def tiny_controlnet(arch: str = "sd1", seed: int = 0, zero_init: bool = False):
    """A `ControlNetModel` matching the tiny `arch` UNet ('sd1', 'sd2', 'sdxl'), random weights.

    Released ControlNets start training from zero convolutions; with `zero_init=False` (default) the
    zero convs get small random values too, so the control image visibly changes the UNet output."""
    from diffusers import ControlNetModel

    fam = family_of(arch)
    if fam == "sdxl_refiner":
        raise ValueError("there are no ControlNets for the SDXL refiner")
    cfg = controlnet_config(tiny_configs(fam)["unet"])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        cn = ControlNetModel(**cfg)
        if not zero_init:
            zeros = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
            for conv in zeros:
                conv.weight.normal_(0.0, 0.05)
                conv.bias.normal_(0.0, 0.05)
    return cn.eval()


def write_controlnet(controlnet, path: str | os.PathLike, layout: str = "ldm", dtype: torch.dtype | None = None) -> Path:
    """A ControlNet on disk: `layout` 'ldm' (one original-layout file), 'diffusers-file' (one file with
    diffusers keys) or 'diffusers' (a folder: config.json + diffusion_pytorch_model.safetensors)."""
    from .ldm_export import export_controlnet_file

    if layout == "diffusers":
        controlnet.save_pretrained(path, safe_serialization=True)
        return Path(path)
    return export_controlnet_file(controlnet, path, dtype=dtype, layout="ldm" if layout == "ldm" else "diffusers")


def full_size_sd15_controlnet_file(path: str | os.PathLike, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """The real SD1.5 ControlNet architecture (361 M parameters) with random weights, written in the original
    layout like `control_v11p_sd15_canny`: fp16, 0.72 GB."""
    from diffusers import ControlNetModel

    from .ldm_export import controlnet_to_ldm, save_ldm_file

    cfg = controlnet_config(_sd15_configs()["unet"])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        cn = torch.nn.Module.to(ControlNetModel.from_config(cfg), dtype)
        sd = controlnet_to_ldm(cn.state_dict(), cn.config)
    return save_ldm_file(sd, path, dtype=dtype)
