"""Black Forest Labs' Flux.1 transformer keys (the layout of flux1-dev.safetensors, the all-in-one files and
city96's GGUF files) to diffusers' FluxTransformer2DModel keys.

Written here instead of calling diffusers' `convert_flux_transformer_checkpoint_to_diffusers` because that
function hard-codes Flux's width (`inner_dim = 3072`) when it splits the single blocks' fused `linear1`, so a
model of any other width (our tiny test models) cannot load through it. The mapping is the same one;
tests/test_families.py checks it against diffusers' function (values at tiny size for every key diffusers
can convert there, keys and shapes at full size on meta tensors). Only slicing and concatenation: GGUF
quantized tensors (diffusers' GGUFParameter) pass through with their quantization type.
"""
from __future__ import annotations

PREFIXES = ("model.diffusion_model.",)   # all-in-one / ComfyUI-saved checkpoints nest the transformer here

# BFL name → diffusers name, for tensors that keep their shape (".weight"/".bias" appended by the caller).
_GLOBAL = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}


def strip_prefix(keys) -> dict[str, str]:
    """{transformer key without prefix: key as stored} for the transformer's tensors of a checkpoint."""
    out = {}
    for key in keys:
        for prefix in PREFIXES:
            if key.startswith(prefix):
                out[key[len(prefix):]] = key
                break
        else:
            if key.split(".", 1)[0] in _TRANSFORMER_ROOTS:
                out[key] = key
    return out


_TRANSFORMER_ROOTS = {"time_in", "vector_in", "guidance_in", "txt_in", "img_in", "final_layer", "double_blocks",
                      "single_blocks"}


def _block_count(state: dict, name: str) -> int:
    return len({int(k.split(".")[1]) for k in state if k.startswith(name + ".")})


def bfl_to_diffusers(state: dict) -> dict:
    """Convert a Flux.1 transformer state dict in BFL keys (no prefix) to diffusers keys. Pops from `state`."""
    import torch

    inner = state["img_in.weight"].shape[0]
    out: dict = {}

    def move(src: str, dst: str) -> None:
        for suffix in (".weight", ".bias"):
            if src + suffix in state:
                out[dst + suffix] = state.pop(src + suffix)

    for src, dst in _GLOBAL.items():
        move(src, dst)
    for suffix in (".weight", ".bias"):   # BFL stores shift, scale; diffusers' AdaLayerNormContinuous scale, shift
        shift, scale = state.pop("final_layer.adaLN_modulation.1" + suffix).chunk(2, dim=0)
        out["norm_out.linear" + suffix] = torch.cat([scale, shift], dim=0)
    for i in range(_block_count(state, "double_blocks")):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for a, b in _DOUBLE.items():
            move(src + a, dst + b)
        for a, b in _DOUBLE_NORMS.items():
            out[dst + b] = state.pop(src + a)
        for stream, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for suffix in (".weight", ".bias"):
                for name, part in zip(names, state.pop(f"{src}{stream}_attn.qkv{suffix}").chunk(3, dim=0)):
                    out[f"{dst}attn.{name}{suffix}"] = part
    for i in range(_block_count(state, "single_blocks")):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for a, b in _SINGLE.items():
            move(src + a, dst + b)
        for a, b in _SINGLE_NORMS.items():
            out[dst + b] = state.pop(src + a)
        for suffix in (".weight", ".bias"):   # fused q, k, v and the MLP's input projection
            fused = state.pop(f"{src}linear1{suffix}")
            parts = torch.split(fused, [inner, inner, inner, fused.shape[0] - 3 * inner], dim=0)
            for name, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts):
                out[dst + name + suffix] = part
    return out


def transformer_widths(shapes: dict[str, list[int]]) -> dict:
    """The FluxTransformer2DModel config values a BFL state dict fixes (keys without prefix), for the check
    against the bundled config and for tiny models."""
    inner = shapes["img_in.weight"][0]
    head = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "in_channels": shapes["img_in.weight"][1], "num_attention_heads": inner // head, "attention_head_dim": head,
        "joint_attention_dim": shapes["txt_in.weight"][1], "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "num_layers": _block_count(shapes, "double_blocks"), "num_single_layers": _block_count(shapes, "single_blocks"),
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
    }
