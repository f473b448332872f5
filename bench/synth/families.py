"""Tiny random models of the newer families, written in the layouts people download.

- SDXL v-prediction: an SDXL single file with the `v_pred` / `ztsnr` marker tensors NoobAI-XL carries.
- Flux.1: a tiny FluxPipeline (transformer, 16-channel VAE, CLIP-L, T5 encoder + a T5 tokenizer trained here
  with sentencepiece) and its files: Black Forest Labs' transformer-only single file, the all-in-one file
  (transformer + VAE + CLIP-L + T5 with ComfyUI/Forge prefixes), `ae.safetensors`, `clip_l.safetensors`,
  `t5xxl.safetensors`, a diffusers folder, and a GGUF quantized transformer (written with the gguf package).
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import torch

from pipelines.models import flux_keys

from .ldm_export import save_ldm_file, vae_to_ldm


def with_marker_keys(src: str | os.PathLike, dst: str | os.PathLike, markers=("v_pred", "ztsnr")) -> Path:
    """A copy of the single file `src` with empty marker tensors added (NoobAI-XL v-pred style)."""
    from safetensors.torch import load_file

    state = load_file(str(src))
    state.update({name: torch.tensor([]) for name in markers})
    return save_ldm_file(state, dst)


# ------------------------------------------------------------------------------------------ Flux.1

_WORDS = ("a photo of cat red dog on green chair masterpiece best quality the quick brown fox jumps over lazy "
          "portrait landscape mountain river sunset city night street woman man child tree flower blue").split()


def write_t5_tokenizer(folder: str | os.PathLike) -> Path:
    """A small T5 tokenizer (sentencepiece unigram, T5's special ids: pad 0, eos 1, unk 2) saved in the
    transformers layout that a Flux diffusers folder's tokenizer_2/ has."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(8)) for _ in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=96,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False, minloglevel=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    tok = T5TokenizerFast.from_pretrained(folder, local_files_only=True, extra_ids=0)
    tok.save_pretrained(folder)
    return folder


def tiny_flux_configs(t5_vocab: int, guidance: bool = True) -> dict[str, dict[str, Any]]:
    """Tiny component configs with Flux.1's structure (16 latent channels packed 2x2 → 64, RoPE axes, joint
    and single blocks, CLIP pooled + T5 sequence conditioning). `guidance`: dev (True) or schnell."""
    from .factory import _clip_text_config, _tiny_vae_config

    vae = dict(_tiny_vae_config(0.3611), latent_channels=16, shift_factor=0.1159, use_quant_conv=False,
               use_post_quant_conv=False)
    return {
        "transformer": dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                            guidance_embeds=guidance, axes_dims_rope=[4, 6, 6]),
        "vae": vae,
        "text_encoder": _clip_text_config(32, 2, "quick_gelu"),
        "text_encoder_2": dict(vocab_size=t5_vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                               feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                               relative_attention_num_buckets=8, relative_attention_max_distance=16,
                               layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        "scheduler": dict(num_train_timesteps=1000, shift=3.0 if guidance else 1.0, use_dynamic_shifting=guidance,
                          base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
    }


def tiny_flux_pipeline(t5_tokenizer_dir: str | os.PathLike, guidance: bool = True, seed: int = 0):
    """A FluxPipeline of tiny random modules; same seed → same weights; global RNG state untouched."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    from pipelines.models.tokenizers import clip_tokenizer

    tok2 = T5TokenizerFast.from_pretrained(t5_tokenizer_dir, local_files_only=True)
    cfgs = tiny_flux_configs(len(tok2), guidance)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel.from_config(cfgs["transformer"]).eval()
        # diffusers zero-initialises the output projection and modulations; random values make outputs depend on
        # every weight (a mapping mistake shows in the image)
        for p in transformer.parameters():
            if not p.abs().sum():
                p.data.normal_(0, 0.05)
        vae = AutoencoderKL.from_config(cfgs["vae"]).eval()
        te = CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"])).eval()
        te2 = T5EncoderModel(T5Config(**cfgs["text_encoder_2"])).eval()
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(cfgs["scheduler"]), vae=vae,
                        text_encoder=te, tokenizer=clip_tokenizer(), text_encoder_2=te2, tokenizer_2=tok2,
                        transformer=transformer)


def diffusers_to_bfl(state: dict) -> dict:
    """FluxTransformer2DModel state dict → Black Forest Labs' keys (the inverse of flux_keys.bfl_to_diffusers)."""
    out: dict = {}

    def back(table: dict, src: str, dst: str, suffixes=(".weight", ".bias")) -> None:
        for a, b in table.items():
            for suffix in suffixes:
                if dst + b + suffix in state:
                    out[src + a + suffix] = state[dst + b + suffix]

    back(flux_keys._GLOBAL, "", "")
    for suffix in (".weight", ".bias"):
        scale, shift = state["norm_out.linear" + suffix].chunk(2, dim=0)
        out["final_layer.adaLN_modulation.1" + suffix] = torch.cat([shift, scale])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")}
    for i in sorted(blocks):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        back(flux_keys._DOUBLE, src, dst)
        out.update({src + a: state[dst + b] for a, b in flux_keys._DOUBLE_NORMS.items()})
        for stream, names in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for suffix in (".weight", ".bias"):
                out[f"{src}{stream}_attn.qkv{suffix}"] = torch.cat([state[f"{dst}attn.{n}{suffix}"] for n in names])
    singles = {int(k.split(".")[1]) for k in state if k.startswith("single_transformer_blocks.")}
    for i in sorted(singles):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        back(flux_keys._SINGLE, src, dst)
        out.update({src + a: state[dst + b] for a, b in flux_keys._SINGLE_NORMS.items()})
        for suffix in (".weight", ".bias"):
            out[f"{src}linear1{suffix}"] = torch.cat(
                [state[f"{dst}{n}{suffix}"] for n in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
    return {k: v.detach().contiguous() for k, v in out.items()}


def _hf_state(module) -> dict:
    # T5 ties encoder.embed_tokens to shared: safetensors refuses shared storage, so each gets its own copy
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def write_flux_files(pipe, folder: str | os.PathLike, name: str = "flux-tiny", dtype=None) -> dict[str, Path]:
    """Every file layout of one tiny Flux model under `folder` (an A1111/Forge `models/` root):
    Stable-diffusion/<name>.safetensors (BFL transformer only), Stable-diffusion/<name>-aio.safetensors
    (all-in-one), Stable-diffusion/<name>-diffusers/ (folder), VAE/ae.safetensors, text_encoder/clip_l.safetensors,
    text_encoder/t5xxl_fp16.safetensors (+ text_encoder/t5_tokenizer/ from the pipeline's tokenizer_2)."""
    folder = Path(folder)
    ckpts = folder / "Stable-diffusion"
    bfl = diffusers_to_bfl(pipe.transformer.state_dict())
    vae = vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)
    # clip_l.safetensors as ComfyUI/Forge ship it: transformers' `text_model.*` names (transformers 5 names the
    # CLIPTextModel tensors without that level) plus the unused `text_projection`
    clip = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in _hf_state(pipe.text_encoder).items()}
    hidden = pipe.text_encoder.config.hidden_size
    clip["text_projection.weight"] = torch.eye(hidden)
    t5 = _hf_state(pipe.text_encoder_2)
    paths = {
        "transformer": save_ldm_file(bfl, ckpts / f"{name}.safetensors", dtype),
        "aio": save_ldm_file({**{"model.diffusion_model." + k: v for k, v in bfl.items()},
                              **{"vae." + k: v for k, v in vae.items()},
                              **{"text_encoders.clip_l.transformer." + k: v for k, v in clip.items()},
                              **{"text_encoders.t5xxl.transformer." + k: v for k, v in t5.items()}},
                             ckpts / f"{name}-aio.safetensors", dtype),
        "ae": save_ldm_file(vae, folder / "VAE" / "ae.safetensors", dtype),
        "clip_l": save_ldm_file(clip, folder / "text_encoder" / "clip_l.safetensors", dtype),
        "t5xxl": save_ldm_file(t5, folder / "text_encoder" / "t5xxl_fp16.safetensors", dtype),
    }
    pipe.tokenizer_2.save_pretrained(folder / "text_encoder" / "t5_tokenizer")
    paths["diffusers"] = ckpts / f"{name}-diffusers"
    pipe.save_pretrained(paths["diffusers"], safe_serialization=True)
    return paths


def gguf_tensor_plan(name: str, shape, qtype):
    """(numpy dtype, stored type) of one tensor in a city96-style Flux GGUF: 2-D weights whose rows split into
    whole quantization blocks get `qtype`, everything else (biases, norms) stays F32."""
    import gguf
    import numpy as np

    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if len(shape) == 2 and shape[-1] % block == 0 and name.endswith(".weight"):
        return np.uint8, qtype
    return np.float32, gguf.GGMLQuantizationType.F32


def write_flux_gguf(bfl_tensors, path: str | os.PathLike, qtype_name: str = "Q8_0", shapes=None) -> Path:
    """A GGUF file of a Flux transformer (BFL keys, arch "flux" as city96's files). `bfl_tensors` is a dict or a
    function name → tensor called once per tensor while writing (so a full-size model never sits in RAM);
    `shapes` {name: shape} is required with a function."""
    import gguf
    import numpy as np

    qtype = getattr(gguf.GGMLQuantizationType, qtype_name)
    get = bfl_tensors.__getitem__ if isinstance(bfl_tensors, dict) else bfl_tensors
    shapes = shapes or {k: list(v.shape) for k, v in bfl_tensors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "flux")
    plans = {}
    for key, shape in shapes.items():
        dtype, stored = gguf_tensor_plan(key, shape, qtype)
        plans[key] = stored
        if stored == qtype:
            nbytes = gguf.quant_shape_to_byte_shape(shape, qtype)
            writer.add_tensor_info(key, nbytes, np.dtype(np.uint8), int(np.prod(nbytes)), raw_dtype=qtype)
        else:
            writer.add_tensor_info(key, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for key in shapes:
        data = get(key).detach().float().numpy()
        writer.write_tensor_data(gguf.quants.quantize(data, qtype) if plans[key] == qtype else data)
    writer.close()
    return path


def flux_bfl_shapes(inner: int = 3072, head: int = 128, mlp: int = 12288, ctx: int = 4096, pooled: int = 768,
                    channels: int = 64, doubles: int = 19, singles: int = 38) -> dict[str, list[int]]:
    """Every tensor of a Flux.1 dev transformer in BFL keys → shape (defaults: the full-size model, 11.9B)."""
    shapes = {"img_in.weight": [inner, channels], "txt_in.weight": [inner, ctx], "time_in.in_layer.weight": [inner, 256],
              "time_in.out_layer.weight": [inner, inner], "vector_in.in_layer.weight": [inner, pooled],
              "vector_in.out_layer.weight": [inner, inner], "guidance_in.in_layer.weight": [inner, 256],
              "guidance_in.out_layer.weight": [inner, inner], "final_layer.linear.weight": [channels, inner],
              "final_layer.adaLN_modulation.1.weight": [2 * inner, inner]}
    for i in range(doubles):
        for s in ("img", "txt"):
            shapes.update({f"double_blocks.{i}.{s}_mod.lin.weight": [6 * inner, inner],
                           f"double_blocks.{i}.{s}_attn.qkv.weight": [3 * inner, inner],
                           f"double_blocks.{i}.{s}_attn.proj.weight": [inner, inner],
                           f"double_blocks.{i}.{s}_attn.norm.query_norm.scale": [head],
                           f"double_blocks.{i}.{s}_attn.norm.key_norm.scale": [head],
                           f"double_blocks.{i}.{s}_mlp.0.weight": [mlp, inner],
                           f"double_blocks.{i}.{s}_mlp.2.weight": [inner, mlp]})
    for i in range(singles):
        shapes.update({f"single_blocks.{i}.linear1.weight": [3 * inner + mlp, inner],
                       f"single_blocks.{i}.linear2.weight": [inner, inner + mlp],
                       f"single_blocks.{i}.modulation.lin.weight": [3 * inner, inner],
                       f"single_blocks.{i}.norm.query_norm.scale": [head],
                       f"single_blocks.{i}.norm.key_norm.scale": [head]})
    shapes.update({k.replace(".weight", ".bias"): [v[0]] for k, v in list(shapes.items())
                   if k.endswith(".weight") and len(v) == 2})
    return shapes

