"""Loading a ControlNet offline: single files with the bundled `configs/controlnet_{sd15,sd21,sdxl}/config.json`,
adjusted to what the file holds (conditioning channels, transformer depth per level, linear projections,
global pooling for shuffle models) through `ControlNetModel.from_single_file(config=...)`; diffusers folders
with `from_pretrained(local_files_only=True)`."""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import ModelLoadError
from ..models import detect
from .files import ControlNetArch, ControlNetFile, read_state

log = logging.getLogger(__name__)

CONFIG_DIRS = {detect.SD1: "controlnet_sd15", detect.SD2: "controlnet_sd21", detect.SDXL: "controlnet_sdxl"}


def _to_diffusers_keys(state: dict, arch: ControlNetArch, base_config: dict, name: str) -> dict:
    """Original-layout weights → ControlNetModel keys (diffusers' converter + SDXL's label_emb, which
    diffusers' converter drops); diffusers-layout files pass through."""
    sub = {k[len(arch.prefix):]: v for k, v in state.items() if k.startswith(arch.prefix)}
    if arch.layout != "ldm":
        return sub
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    out = convert_controlnet_checkpoint(sub, base_config)
    for src, dst in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
        for p in ("weight", "bias"):
            if f"{src}.{p}" in sub:
                out[f"{dst}.{p}"] = sub[f"{src}.{p}"]
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ModelLoadError(f"{name}: incomplete ControlNet, {len(missing)} weights missing (e.g. {missing[0]})")
    return out


def _per_level(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def config_overrides(shapes: dict[str, tuple], base: dict, name: str = "") -> dict[str, Any]:
    """Config values that differ from the bundled `base` config, read from the weights' shapes
    (diffusers keys): input/conditioning channels, cross-attention width, linear projections,
    transformer depth per level, conditioning embedding widths; global pooling for shuffle models."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if base.get(key) != value:
            out[key] = value

    if "conv_in.weight" in shapes:
        put("in_channels", int(shapes["conv_in.weight"][1]))
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        put("conditioning_channels", int(shapes["controlnet_cond_embedding.conv_in.weight"][1]))
        widths = [int(shapes["controlnet_cond_embedding.conv_in.weight"][0])]
        j = 1
        while f"controlnet_cond_embedding.blocks.{j}.weight" in shapes:
            widths.append(int(shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0]))
            j += 2
        put("conditioning_embedding_out_channels", widths)
    to_k = sorted(k for k in shapes if k.endswith("attn2.to_k.weight"))
    if to_k:
        put("cross_attention_dim", int(shapes[to_k[0]][1]))
    proj = sorted(k for k in shapes if k.endswith(".proj_in.weight"))
    if proj:
        put("use_linear_projection", len(shapes[proj[0]]) == 2)
    n_levels = len(base["block_out_channels"])
    depth = _per_level(base.get("transformer_layers_per_block", 1), n_levels)
    new_depth = list(depth)
    for level in range(n_levels):
        prefix = f"down_blocks.{level}.attentions.0."
        if any(k.startswith(prefix) for k in shapes):
            blocks = {k[len(prefix):].split(".")[1] for k in shapes if k.startswith(prefix + "transformer_blocks.")}
            new_depth[level] = len(blocks)
    if new_depth != depth:
        out["transformer_layers_per_block"] = new_depth
    if "shuffle" in name.lower():
        put("global_pool_conditions", True)  # control_v11e_sd15_shuffle's yaml: global_average_pooling
    return out


@contextmanager
def _quiet_diffusers_cast_warning():
    """diffusers warns "modules ... should be kept in float32: []" on any `ModelMixin.to(dtype)`."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_controlnet(cf: ControlNetFile, arch: ControlNetArch, *, config_root: Path, dtype=None):
    """A ControlNetModel from disk, offline, on the CPU in `dtype`."""
    from diffusers import ControlNetModel

    try:
        if cf.kind == "diffusers":
            model = ControlNetModel.from_pretrained(cf.path, local_files_only=True, torch_dtype=dtype)
        else:
            cfg_dir = Path(config_root) / CONFIG_DIRS[arch.family]
            if not (cfg_dir / "config.json").is_file():
                raise ModelLoadError(f"no bundled ControlNet config for {arch.label} in {cfg_dir}")
            base = json.loads((cfg_dir / "config.json").read_text())
            state = _to_diffusers_keys(read_state(cf.path), arch, base, cf.name)
            overrides = config_overrides({k: tuple(v.shape) for k, v in state.items()}, base, cf.name)
            if overrides:
                log.info("%s: config adjusted from its weights: %s", cf.name, overrides)
            with _quiet_diffusers_cast_warning():  # its final model.to(dtype) is a no-op here, but it warns
                model = ControlNetModel.from_single_file(state, config=str(cfg_dir), local_files_only=True,
                                                         torch_dtype=dtype, **overrides)
            unexpected = sorted(set(state) - set(model.state_dict()))
            if unexpected:
                raise ModelLoadError(f"{cf.name}: {len(unexpected)} weights do not fit a {arch.label} ControlNet "
                                     f"(e.g. {unexpected[0]}); unsupported variant")
    except ModelLoadError:
        raise
    except Exception as err:  # diffusers/safetensors raise many types for a broken file; name the file
        log.exception("loading ControlNet %s failed", cf.path)
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise ModelLoadError(f"{cf.name}: could not be loaded as a {arch.label} ControlNet "
                             f"({type(err).__name__}: {first})") from err
    missing = [k for k, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ModelLoadError(f"{cf.name}: incomplete ControlNet, {len(missing)} weights missing (e.g. {missing[0]})")
    return model.eval()
