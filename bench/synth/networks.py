"""Random LoRA and textual-inversion files in the formats users download, for tests and benchmarks.

- `kohya_lora(pipe, ...)`: an A1111/kohya-format LoRA state dict (`lora_unet_<module>` /
  `lora_te_text_model_<module>` keys with `.lora_down.weight`, `.lora_up.weight`, `.alpha`) for the
  given pipeline's UNet (diffusers module names, as kohya writes for SD1) and text encoder.
- `LCM_LORA_TARGETS` + `lcm_lora_sd15()`: a LoRA with the shape and rank of the real
  `lcm-lora-sdv1-5` (rank 64 on 278 UNet layers, 67.3 M parameters).
- `write_embedding(path, vectors)`: an A1111 embedding (`.pt` with `string_to_param`, or `.safetensors`
  with `emb_params`, or SDXL `clip_l`/`clip_g`).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_ATTENTION = r"attn[12]\.(to_q|to_k|to_v|to_out\.0)$"
TEXT_ATTENTION = r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.fc1|mlp\.fc2)$"
LCM_LORA_TARGETS = (r"(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2|"
                    r"conv_shortcut|downsamplers\.0\.conv|upsamplers\.0\.conv|time_emb_proj)$")


def _lora_pair(module: torch.nn.Module, rank: int, gen: torch.Generator, scale: float, dtype):
    if isinstance(module, torch.nn.Linear):
        down = torch.randn(rank, module.in_features, generator=gen) * scale
        up = torch.randn(module.out_features, rank, generator=gen) * scale
    elif isinstance(module, torch.nn.Conv2d):
        kh, kw = module.kernel_size
        down = torch.randn(rank, module.in_channels, kh, kw, generator=gen) * scale
        up = torch.randn(module.out_channels, rank, 1, 1, generator=gen) * scale
    else:
        return None
    return down.to(dtype), up.to(dtype)


def kohya_lora(unet=None, text_encoder=None, *, rank: int = 4, seed: int = 0, scale: float = 0.05,
               unet_targets: str = UNET_ATTENTION, text_targets: str = TEXT_ATTENTION,
               dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA for these modules (random weights; alpha = rank, so the weight is 1:1)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for prefix, model, targets in (("lora_unet_", unet, unet_targets), ("lora_te_text_model_", text_encoder,
                                                                         text_targets)):
        if model is None:
            continue
        pattern = re.compile(targets)
        for name, module in model.named_modules():
            if not pattern.search(name):
                continue
            pair = _lora_pair(module, rank, gen, scale, dtype)
            if pair is None:
                continue
            key = prefix + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"] = pair
            sd[f"{key}.alpha"] = torch.tensor(float(rank), dtype=dtype)
    return sd


def lcm_lora_sd15(*, seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A random LoRA of lcm-lora-sdv1-5's layout: rank 64 on the full-size SD1.5 UNet's attention,
    feed-forward, resnet convs, time embeddings and up/down samplers (no text-encoder part)."""
    from diffusers import UNet2DConditionModel

    from .factory import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    return _meta_lora(unet, 64, seed, dtype, LCM_LORA_TARGETS)


def _meta_lora(unet, rank: int, seed: int, dtype, targets: str) -> dict[str, torch.Tensor]:
    # The modules are on the meta device: only their shapes are read.
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    pattern = re.compile(targets)
    for name, module in unet.named_modules():
        if not pattern.search(name):
            continue
        if isinstance(module, torch.nn.Linear):
            shapes = (rank, module.in_features), (module.out_features, rank)
        elif isinstance(module, torch.nn.Conv2d):
            shapes = (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, 1, 1)
        else:
            continue
        key = "lora_unet_" + name.replace(".", "_")
        sd[f"{key}.lora_down.weight"] = (torch.randn(*shapes[0], generator=gen) * 0.01).to(dtype)
        sd[f"{key}.lora_up.weight"] = (torch.randn(*shapes[1], generator=gen) * 0.01).to(dtype)
        sd[f"{key}.alpha"] = torch.tensor(float(rank), dtype=dtype)
    return sd


def save_lora(sd: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    return path


def write_embedding(path: str | Path, vectors: torch.Tensor | dict[str, torch.Tensor]) -> Path:
    """An A1111 embedding file: `.pt` (string_to_param), `.safetensors` (emb_params, or clip_l/clip_g
    when `vectors` is a dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        data = dict(vectors) if isinstance(vectors, dict) else {"emb_params": vectors}
        save_file({k: v.contiguous() for k, v in data.items()}, str(path))
    else:
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem,
                    "step": 100, "sd_checkpoint": None, "sd_checkpoint_name": None}, str(path))
    return path
