"""Upscaler model files with random weights, in the layouts their authors released them in.

- ESRGAN "old arch" (the original ESRGAN repo and most community models such as 4x-UltraSharp): a bare state
  dict with `model.0.weight`, `model.1.sub.N.RDBk.convj.0.weight`, ...
- Real-ESRGAN (xinntao's basicsr RRDBNet): `{"params_ema": {...}}` with `conv_first`, `body.N.rdbk.convj`,
  `conv_body`, `conv_up1/2`, `conv_hr`, `conv_last`.
- SwinIR (JingyunLiang's releases): `{"params": {...}}` with the network's own key names.

The networks are built from spandrel's architecture classes (so the shapes are the real ones), then written
under the original key names; loading them back through spandrel's detection is what the tests check.
Tiny sizes for tests; `realesrgan_x4plus(..., tiny=False)` is the full-size RealESRGAN_x4plus (64 features,
23 blocks, 16.7M parameters) for the benchmark.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch


def _rrdb(num_filters: int, num_blocks: int, scale: int, seed: int):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)
    # small random weights keep the activations in range through the residual chain
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.3)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def esrgan_old_arch(path: Path, *, num_filters: int = 8, num_blocks: int = 1, scale: int = 4, seed: int = 0) -> Path:
    """An ESRGAN old-arch `.pth` (bare state dict)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_rrdb(num_filters, num_blocks, scale, seed), path)
    return path


def _old_to_new(old: dict, num_blocks: int) -> dict:
    """spandrel's old-arch keys -> basicsr RRDBNet keys (what Real-ESRGAN's release files hold)."""
    seq = sorted({int(k.split(".")[1]) for k in old if k.startswith("model.")})
    up_layers = [i for i in seq if i not in (0, 1)][:-2]   # the upsampling convs, then conv_hr and conv_last
    names = {0: "conv_first", seq[-2]: "conv_hr", seq[-1]: "conv_last"}
    names.update({layer: f"conv_up{n + 1}" for n, layer in enumerate(up_layers)})
    new = {}
    for key, value in old.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if m:
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif key.startswith(f"model.1.sub.{num_blocks}."):
            new["conv_body." + key.rsplit(".", 1)[1]] = value
        else:
            layer, kind = int(key.split(".")[1]), key.rsplit(".", 1)[1]
            new[f"{names[layer]}.{kind}"] = value
    return new


def realesrgan_x4plus(path: Path, *, tiny: bool = True, seed: int = 0) -> Path:
    """A Real-ESRGAN RRDBNet `.pth` ({"params_ema": ...}); full-size is RealESRGAN_x4plus's architecture."""
    num_filters, num_blocks = (8, 1) if tiny else (64, 23)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": _old_to_new(_rrdb(num_filters, num_blocks, 4, seed), num_blocks)}, path)
    return path


def swinir(path: Path, *, scale: int = 2, seed: int = 0) -> Path:
    """A SwinIR classical-SR `.pth` ({"params": ...}), tiny: one stage of one block, 16 channels, window 4."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    net = SwinIR(img_size=16, in_chans=3, embed_dim=16, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
                 upscale=scale, img_range=1.0, upsampler="pixelshuffle", resi_connection="1conv")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": {k: v.contiguous() for k, v in net.state_dict().items()}}, path)
    return path


def safetensors_copy(pth: Path, target: Path) -> Path:
    """The same weights as a `.safetensors` file (spandrel's canonical keys are kept as saved)."""
    from safetensors.torch import save_file

    state = torch.load(pth, map_location="cpu", weights_only=True)
    for wrapper in ("params_ema", "params"):
        if wrapper in state:
            state = state[wrapper]
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target
