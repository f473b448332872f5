"""diffusers modules → the original single-file (LDM / A1111 / SGM) key layout.

Why this is hand-written: diffusers ships only the opposite direction in the library
(`diffusers.loaders.single_file_utils`, LDM → diffusers). The reverse lives in two unshipped scripts
(`scripts/convert_diffusers_to_original_stable_diffusion.py`, `..._sdxl.py`) that hard-code the
SD1/SDXL block counts. Tests need files of any (tiny) size in the exact layout users have on disk,
so the mapping here is derived from each model's config and state-dict structure instead.

Layouts written (prefixes as in `v1-5-pruned-emaonly.safetensors`, `v2-1_768-ema-pruned.safetensors`,
`sd_xl_base_1.0.safetensors`, `sd_xl_refiner_1.0.safetensors`):

    UNet            model.diffusion_model.*      (input_blocks / middle_block / output_blocks / label_emb)
    VAE             first_stage_model.*          (encoder.down.N.block.M, mid.attn_1 as 1x1 convs)
    SD1 CLIP-L      cond_stage_model.transformer.text_model.*      (HF layout)
    SD2 OpenCLIP-H  cond_stage_model.model.*                       (OpenCLIP layout)
    SDXL base       conditioner.embedders.0.transformer.text_model.*  +  conditioner.embedders.1.model.*
    SDXL refiner    conditioner.embedders.0.model.*

Every tensor of the diffusers state dicts is mapped (an unmapped key raises), so a round trip through
`from_single_file` can be checked with `torch.equal` on every tensor.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPENCLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."
REFINER_OPENCLIP_PREFIX = "conditioner.embedders.0.model."

# ln(100): the value trained OpenCLIP models end with (the parameter is clamped there).
_OPENCLIP_LOGIT_SCALE = math.log(100.0)

_UNET_RESNET_RENAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN_RENAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


class _Mapper:
    """Moves tensors from a diffusers state dict to LDM keys and remembers which keys it used."""

    def __init__(self, sd: Mapping[str, torch.Tensor]):
        self.sd = sd
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()
        # index: every dotted prefix → keys under it, so lookups stay cheap on full-size models
        self._by_prefix: dict[str, list[str]] = {}
        for k in sd:
            parts = k.split(".")
            for n in range(1, len(parts)):
                self._by_prefix.setdefault(".".join(parts[:n]), []).append(k)

    def has(self, prefix: str) -> bool:
        return prefix in self._by_prefix

    def tree(self, diffusers_prefix: str, ldm_prefix: str, renames: Mapping[str, str] | None = None,
             transform=None) -> None:
        """Copy every key under `diffusers_prefix.` to `ldm_prefix.` + the renamed remainder."""
        keys = self._by_prefix.get(diffusers_prefix)
        if not keys:
            raise KeyError(f"no weights under {diffusers_prefix!r}")
        for k in keys:
            rest = k[len(diffusers_prefix) + 1:]
            if renames:
                for old, new in renames.items():
                    if rest == old or rest.startswith(old + "."):
                        rest = new + rest[len(old):]
                        break
            value = self.sd[k]
            self.out[f"{ldm_prefix}.{rest}"] = transform(rest, value) if transform else value
            self.used.add(k)

    def check_complete(self, what: str) -> dict[str, torch.Tensor]:
        missing = [k for k in self.sd if k not in self.used]
        if missing:
            raise ValueError(f"{what}: {len(missing)} diffusers keys have no LDM mapping, e.g. {missing[:5]}")
        return self.out


def _per_block(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def _map_down_blocks(m, layers: list[int]) -> int:
    """UNet (and ControlNet) encoder: down_blocks.* → input_blocks.N; returns the number of input blocks."""
    idx = 1
    for level, n in enumerate(layers):
        for j in range(n):
            m.tree(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{idx}.0", _UNET_RESNET_RENAMES)
            if m.has(f"down_blocks.{level}.attentions.{j}"):
                m.tree(f"down_blocks.{level}.attentions.{j}", f"input_blocks.{idx}.1")
            idx += 1
        if m.has(f"down_blocks.{level}.downsamplers.0"):
            m.tree(f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{idx}.0.op")
            idx += 1
    return idx


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """`UNet2DConditionModel` state dict + config → LDM UNet keys (no `model.diffusion_model.` prefix).

    Generic over the number of levels, `layers_per_block` (int or per level), attention/no-attention
    levels, `transformer_layers_per_block` (names inside a transformer are identical in both layouts),
    9-channel inpaint input, and SDXL's `add_embedding` / a `class_embedding` (both → `label_emb.0`).
    """
    m = _Mapper(state_dict)
    n_levels = len(config["block_out_channels"])
    down_layers = _per_block(config["layers_per_block"], n_levels)
    up_layers = list(reversed(down_layers))

    m.tree("time_embedding.linear_1", "time_embed.0")
    m.tree("time_embedding.linear_2", "time_embed.2")
    for emb in ("add_embedding", "class_embedding"):
        if m.has(emb):
            if m.has(f"{emb}.linear_1"):
                m.tree(f"{emb}.linear_1", "label_emb.0.0")
                m.tree(f"{emb}.linear_2", "label_emb.0.2")
            else:  # num_class_embeds (x4 upscaler): a plain nn.Embedding
                m.tree(emb, "label_emb")
    m.tree("conv_in", "input_blocks.0.0")
    m.tree("conv_norm_out", "out.0")
    m.tree("conv_out", "out.2")

    _map_down_blocks(m, down_layers)

    if not m.has("mid_block.attentions.0"):
        raise ValueError("UNet mid block without attention has no LDM equivalent (middle_block is res/attn/res)")
    m.tree("mid_block.resnets.0", "middle_block.0", _UNET_RESNET_RENAMES)
    m.tree("mid_block.attentions.0", "middle_block.1")
    m.tree("mid_block.resnets.1", "middle_block.2", _UNET_RESNET_RENAMES)

    idx = 0
    for level in range(n_levels):
        n_res = up_layers[level] + 1
        for j in range(n_res):
            m.tree(f"up_blocks.{level}.resnets.{j}", f"output_blocks.{idx}.0", _UNET_RESNET_RENAMES)
            has_attn = m.has(f"up_blocks.{level}.attentions.{j}")
            if has_attn:
                m.tree(f"up_blocks.{level}.attentions.{j}", f"output_blocks.{idx}.1")
            if j == n_res - 1 and m.has(f"up_blocks.{level}.upsamplers.0"):
                m.tree(f"up_blocks.{level}.upsamplers.0.conv", f"output_blocks.{idx}.{2 if has_attn else 1}.conv")
            idx += 1

    return m.check_complete("UNet")


def _vae_attn_weight(rest: str, value: torch.Tensor) -> torch.Tensor:
    # LDM's AttnBlock uses 1x1 Conv2d for q/k/v/proj_out: [C, C] linear weights become [C, C, 1, 1].
    # (diffusers' convert_ldm_vae_checkpoint squeezes 4-D or 3-D weights back to 2-D.)
    if rest.endswith(".weight") and value.ndim == 2:
        return value[:, :, None, None]
    return value


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """`AutoencoderKL` state dict + config → LDM VAE keys (no `first_stage_model.` prefix).

    This is also the layout of standalone VAE files (`vae-ft-mse-840000-ema-pruned.safetensors`,
    `sdxl_vae.safetensors`).
    """
    m = _Mapper(state_dict)
    n_levels = len(config["block_out_channels"])
    lpb = int(config["layers_per_block"])
    resnet_renames = {"conv_shortcut": "nin_shortcut"}
    for part in ("encoder", "decoder"):
        m.tree(f"{part}.conv_in", f"{part}.conv_in")
        m.tree(f"{part}.conv_norm_out", f"{part}.norm_out")
        m.tree(f"{part}.conv_out", f"{part}.conv_out")
        for k in range(2):
            m.tree(f"{part}.mid_block.resnets.{k}", f"{part}.mid.block_{k + 1}", resnet_renames)
        m.tree(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", _VAE_ATTN_RENAMES, _vae_attn_weight)
    for level in range(n_levels):
        for j in range(lpb):
            m.tree(f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", resnet_renames)
        if m.has(f"encoder.down_blocks.{level}.downsamplers.0"):
            m.tree(f"encoder.down_blocks.{level}.downsamplers.0.conv", f"encoder.down.{level}.downsample.conv")
    for i in range(n_levels):
        ldm_level = n_levels - 1 - i  # decoder.up is stored lowest resolution last
        for j in range(lpb + 1):
            m.tree(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{ldm_level}.block.{j}", resnet_renames)
        if m.has(f"decoder.up_blocks.{i}.upsamplers.0"):
            m.tree(f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{ldm_level}.upsample.conv")
    for conv in ("quant_conv", "post_quant_conv"):
        if m.has(conv):
            m.tree(conv, conv)
    return m.check_complete("VAE")


def _text_model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise a transformers CLIP text state dict to `text_model.*` (+ `text_projection.weight`).

    transformers >= 5.6 flattened `CLIPTextModel` (keys `embeddings.*`, `encoder.*`, ...), while
    `CLIPTextModelWithProjection` still nests them under `text_model.`.
    """
    out = {}
    for k, v in state_dict.items():
        if k.startswith("text_model.") or k.startswith("text_projection."):
            out[k] = v
        else:
            out["text_model." + k] = v
    return out


def hf_clip_to_ldm(state_dict: Mapping[str, torch.Tensor], max_position_embeddings: int = 77,
                   with_position_ids: bool = True) -> dict[str, torch.Tensor]:
    """`CLIPTextModel` → keys under `transformer.` of `FrozenCLIPEmbedder` (prefix not included).

    Real SD1 / SDXL files also carry the `position_ids` buffer (int64 [1, 77]); diffusers skips it.
    """
    sd = _text_model_keys(state_dict)
    if "text_projection.weight" in sd:
        raise ValueError("the HF-layout CLIP embedder (SD1 / SDXL embedders.0) has no text projection")
    out = dict(sd)
    if with_position_ids:
        out["text_model.embeddings.position_ids"] = torch.arange(max_position_embeddings, dtype=torch.int64)[None]
    return out


def _random_resblock(hidden: int, intermediate: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    return {
        "ln_1.weight": torch.ones(hidden, dtype=dtype), "ln_1.bias": torch.zeros(hidden, dtype=dtype),
        "attn.in_proj_weight": rnd(3 * hidden, hidden), "attn.in_proj_bias": torch.zeros(3 * hidden, dtype=dtype),
        "attn.out_proj.weight": rnd(hidden, hidden), "attn.out_proj.bias": torch.zeros(hidden, dtype=dtype),
        "ln_2.weight": torch.ones(hidden, dtype=dtype), "ln_2.bias": torch.zeros(hidden, dtype=dtype),
        "mlp.c_fc.weight": rnd(intermediate, hidden), "mlp.c_fc.bias": torch.zeros(intermediate, dtype=dtype),
        "mlp.c_proj.weight": rnd(hidden, intermediate), "mlp.c_proj.bias": torch.zeros(hidden, dtype=dtype),
    }


def openclip_to_ldm(state_dict: Mapping[str, torch.Tensor], num_layers: int, unused_extra_layers: int = 0,
                    with_logit_scale: bool = True) -> dict[str, torch.Tensor]:
    """`CLIPTextModel` / `CLIPTextModelWithProjection` → OpenCLIP text tower keys under `model.`
    of `FrozenOpenCLIPEmbedder` (prefix not included).

    - q/k/v projections are concatenated into `attn.in_proj_weight` / `in_proj_bias` (order q, k, v);
    - `text_projection` is stored transposed ([width, embed_dim], used as `x @ text_projection`).
      A model without one (SD2's `CLIPTextModel`) gets an identity [width, width] matrix, as the real SD2
      file carries a projection diffusers ignores. diffusers splits `in_proj_weight` at
      `text_projection.shape[0]`, so it must be [width, ...];
    - `unused_extra_layers`: SD2 files hold 24 resblocks while diffusers' text encoder has 23 (SD2 uses
      the penultimate layer); extra random resblocks reproduce that (diffusers drops them on load).
    """
    sd = _text_model_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key):
        used.add(key)
        return sd[key]

    out["token_embedding.weight"] = take("text_model.embeddings.token_embedding.weight")
    out["positional_embedding"] = take("text_model.embeddings.position_embedding.weight")
    for layer in range(num_layers):
        src = f"text_model.encoder.layers.{layer}."
        dst = f"transformer.resblocks.{layer}."
        for p in ("weight", "bias"):
            out[dst + f"ln_1.{p}"] = take(src + f"layer_norm1.{p}")
            out[dst + f"attn.in_proj_{p}"] = torch.cat(
                [take(src + f"self_attn.{x}_proj.{p}") for x in ("q", "k", "v")], dim=0)
            out[dst + f"attn.out_proj.{p}"] = take(src + f"self_attn.out_proj.{p}")
            out[dst + f"ln_2.{p}"] = take(src + f"layer_norm2.{p}")
            out[dst + f"mlp.c_fc.{p}"] = take(src + f"mlp.fc1.{p}")
            out[dst + f"mlp.c_proj.{p}"] = take(src + f"mlp.fc2.{p}")
    out["ln_final.weight"] = take("text_model.final_layer_norm.weight")
    out["ln_final.bias"] = take("text_model.final_layer_norm.bias")
    width = out["ln_final.weight"].shape[0]
    dtype = out["ln_final.weight"].dtype
    if "text_projection.weight" in sd:
        out["text_projection"] = take("text_projection.weight").T
    else:
        out["text_projection"] = torch.eye(width, dtype=dtype)
    if with_logit_scale:
        out["logit_scale"] = torch.tensor(_OPENCLIP_LOGIT_SCALE, dtype=dtype)
    if unused_extra_layers:
        intermediate = out["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        for i in range(unused_extra_layers):
            block = _random_resblock(width, intermediate, dtype, seed=1000 + i)
            out.update({f"transformer.resblocks.{num_layers + i}.{k}": v for k, v in block.items()})
    missing = [k for k in sd if k not in used]
    if missing:
        raise ValueError(f"OpenCLIP text encoder: unmapped keys {missing[:5]} (num_layers={num_layers}?)")
    return out


def ddpm_schedule_buffers(scheduler_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The `register_schedule` buffers LatentDiffusion saves in SD1/SD2 files (`betas`, `alphas_cumprod`, ...)."""
    n = int(scheduler_config.get("num_train_timesteps", 1000))
    start = float(scheduler_config.get("beta_start", 0.00085))
    end = float(scheduler_config.get("beta_end", 0.012))
    if scheduler_config.get("beta_schedule", "scaled_linear") == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    bufs = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": torch.log(torch.clamp(post_var, min=1e-20)),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {k: v.to(torch.float32) for k, v in bufs.items()}


def family_of(arch: str) -> str:
    """'sd1_inpaint' → 'sd1' etc."""
    fam = arch.removesuffix("_inpaint")
    if fam not in ("sd1", "sd2", "sdxl", "sdxl_refiner"):
        raise ValueError(f"unknown architecture {arch!r} (sd1, sd1_inpaint, sd2, sd2_inpaint, sdxl, sdxl_refiner)")
    return fam


def _prefixed(prefix: str, d: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in d.items()}


LDM_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def component_to_ldm(arch: str, name: str, module, extras: bool = True) -> dict[str, torch.Tensor]:
    """One pipeline component (`name` in LDM_COMPONENTS) of a SD1/SD2/SDXL/refiner model as LDM-layout
    keys, prefix included (tensors shared, not copied, except OpenCLIP's concatenated q/k/v).
    Lets a writer build, convert and free one module at a time (see factory.full_size_ldm_state_dict)."""
    fam = family_of(arch)
    if name == "unet":
        return _prefixed(UNET_PREFIX, unet_to_ldm(module.state_dict(), module.config))
    if name == "vae":
        return _prefixed(VAE_PREFIX, vae_to_ldm(module.state_dict(), module.config))
    cfg = module.config
    if name == "text_encoder" and fam in ("sd1", "sdxl"):
        return _prefixed(SD1_CLIP_PREFIX if fam == "sd1" else SDXL_CLIP_PREFIX, hf_clip_to_ldm(
            module.state_dict(), cfg.max_position_embeddings, with_position_ids=extras))
    if name == "text_encoder" and fam == "sd2":
        return _prefixed(SD2_OPENCLIP_PREFIX, openclip_to_ldm(
            module.state_dict(), cfg.num_hidden_layers, unused_extra_layers=1 if extras else 0,
            with_logit_scale=extras))
    if name == "text_encoder_2" and fam in ("sdxl", "sdxl_refiner"):
        return _prefixed(SDXL_OPENCLIP_PREFIX if fam == "sdxl" else REFINER_OPENCLIP_PREFIX, openclip_to_ldm(
            module.state_dict(), cfg.num_hidden_layers, with_logit_scale=extras))
    raise ValueError(f"{arch}: no LDM layout for component {name!r}")


def schedule_extras(arch: str, scheduler_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """What SD1/SD2 files carry besides the modules (the DDPM buffers); SDXL files carry none."""
    return ddpm_schedule_buffers(scheduler_config) if family_of(arch) in ("sd1", "sd2") else {}


def pipeline_to_ldm(pipe, arch: str, extras: bool = True) -> dict[str, torch.Tensor]:
    """All weights of a SD1/SD2/SDXL/refiner pipeline as one LDM-layout state dict (tensors shared,
    not copied). `extras` adds what real files carry that diffusers does not use: `position_ids`,
    OpenCLIP `logit_scale`/SD2's identity `text_projection` and 24th resblock, SD1/SD2 DDPM buffers."""
    out: dict[str, torch.Tensor] = {}
    for name in LDM_COMPONENTS:
        module = getattr(pipe, name, None)
        if module is not None:
            out.update(component_to_ldm(arch, name, module, extras=extras))
    if extras:
        out.update(schedule_extras(arch, pipe.scheduler.config))
    return out


def save_ldm_file(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, dtype: torch.dtype | None = None,
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Write a .safetensors file atomically (temp file + rename); floating tensors cast to `dtype` if given."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=dict(metadata or {"format": "pt"}))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def export_single_file(pipe, path: str | os.PathLike, arch: str, dtype: torch.dtype | None = None,
                       extras: bool = True) -> Path:
    """Write `pipe` as one original-layout checkpoint (`.safetensors`). `arch` in factory.ARCHS."""
    return save_ldm_file(pipeline_to_ldm(pipe, arch, extras=extras), path, dtype=dtype)


def export_vae_file(vae, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write an `AutoencoderKL` as a standalone A1111-style VAE file (LDM keys, no prefix)."""
    return save_ldm_file(vae_to_ldm(vae.state_dict(), vae.config), path, dtype=dtype)


# ------------------------------------------------------------------------------------------ ControlNet

CONTROLNET_PREFIX = "control_model."


def controlnet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                      prefix: str = CONTROLNET_PREFIX) -> dict[str, torch.Tensor]:
    """`ControlNetModel` state dict + config → the original ControlNet layout (`control_model.*`, as in
    `control_v11p_sd15_canny.pth` / `.safetensors`): the UNet encoder keys (`time_embed`, `input_blocks`,
    `middle_block`, SDXL `label_emb`), `input_hint_block.{0,2,..,14}` (the conditioning embedding: convs at
    even indices, SiLUs between), `zero_convs.{i}.0` and `middle_block_out.0`.

    diffusers' reader (`convert_controlnet_checkpoint`) hard-codes `input_hint_block.14` as the last conv,
    i.e. four `conditioning_embedding_out_channels` as in every released ControlNet.
    """
    m = _Mapper(state_dict)
    n_levels = len(config["block_out_channels"])
    layers = _per_block(config["layers_per_block"], n_levels)
    n_hint = len(config["conditioning_embedding_out_channels"])
    if n_hint != 4:
        raise ValueError("the original ControlNet layout needs 4 conditioning_embedding_out_channels "
                         f"(input_hint_block.14 is the last conv); got {n_hint}")

    m.tree("time_embedding.linear_1", "time_embed.0")
    m.tree("time_embedding.linear_2", "time_embed.2")
    for emb in ("add_embedding", "class_embedding"):
        if m.has(emb):
            m.tree(f"{emb}.linear_1", "label_emb.0.0")
            m.tree(f"{emb}.linear_2", "label_emb.0.2")
    m.tree("conv_in", "input_blocks.0.0")
    m.tree("controlnet_cond_embedding.conv_in", "input_hint_block.0")
    for j in range(2 * (n_hint - 1)):
        m.tree(f"controlnet_cond_embedding.blocks.{j}", f"input_hint_block.{2 * (j + 1)}")
    m.tree("controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (2 * (n_hint - 1) + 1)}")

    idx = _map_down_blocks(m, layers)
    for i in range(idx):
        m.tree(f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0")

    m.tree("mid_block.resnets.0", "middle_block.0", _UNET_RESNET_RENAMES)
    m.tree("mid_block.attentions.0", "middle_block.1")
    m.tree("mid_block.resnets.1", "middle_block.2", _UNET_RESNET_RENAMES)
    m.tree("controlnet_mid_block", "middle_block_out.0")
    return _prefixed(prefix, m.check_complete("ControlNet"))


def export_controlnet_file(controlnet, path: str | os.PathLike, dtype: torch.dtype | None = None,
                           layout: str = "ldm") -> Path:
    """Write a `ControlNetModel` as one `.safetensors` file: `layout="ldm"` (original `control_model.*`
    keys, like lllyasviel's SD1.5 files) or `"diffusers"` (the model's own keys, like the single-file
    SDXL ControlNets of `lllyasviel/sd_control_collection`)."""
    if layout == "ldm":
        sd = controlnet_to_ldm(controlnet.state_dict(), controlnet.config)
    elif layout == "diffusers":
        sd = dict(controlnet.state_dict())
    else:
        raise ValueError(f"layout must be 'ldm' or 'diffusers', not {layout!r}")
    return save_ldm_file(sd, path, dtype=dtype)
