"""Loading Flux.1 offline from the files people have: a diffusers folder, Black Forest Labs' transformer-only
single file, the all-in-one files (transformer + VAE + CLIP-L + T5, as ComfyUI/Forge save them), and GGUF
quantized transformers; the parts a file lacks come from `models/VAE/` (ae.safetensors) and
`models/text_encoder/` (clip_l, t5xxl_fp16 / fp8, and the T5 tokenizer).

Configs are the bundled `configs/flux/` (dev; schnell differs only in the guidance embedder and the
scheduler's shift). Each component is built from its config and given the file's tensors: the transformer
through diffusers' single-file loader (with its GGUF quantizer for .gguf), the VAE through diffusers' LDM VAE
conversion, the text encoders (already in the transformers layout in these files) with load_state_dict.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import detect, flux_keys
from .detect import Architecture
from ..core.errors import ModelLoadError
from .files import ModelFile, ModelPaths
from .tokenizers import clip_tokenizer

log = logging.getLogger(__name__)

CLIP_PREFIX = "text_encoders.clip_l.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."
VAE_PREFIX = "vae."
T5_TOKENIZER_FOLDERS = ("t5_tokenizer", "tokenizer_2")
T5_TOKENIZER_HELP = (
    "Flux's T5 tokenizer does not ship with the app (no installable package carries it): put the "
    "`tokenizer_2` folder of a Flux diffusers repository (black-forest-labs/FLUX.1-schnell or -dev: spiece.model "
    "and/or tokenizer.json with tokenizer_config.json) in {where}/t5_tokenizer/ , or use a Flux diffusers folder")


@dataclass
class _Sources:
    """Where each component's tensors come from: the checkpoint itself or a file found beside it."""
    vae: Path | None = None
    clip: Path | None = None
    t5: Path | None = None


def derived_config(config_root: Path, arch: Architecture, tmp: Path) -> Path:
    """configs/flux with the variant's changes: schnell has no guidance embedder and a fixed shift of 1."""
    src = Path(config_root) / detect.FLUX
    if not (src / "model_index.json").is_file():
        raise ModelLoadError(f"no bundled config for {arch.label} in {src}")
    dst = tmp / detect.FLUX
    shutil.copytree(src, dst)
    if arch.variant == "schnell":
        _edit(dst / "transformer" / "config.json", guidance_embeds=False)
        _edit(dst / "scheduler" / "scheduler_config.json", use_dynamic_shifting=False, shift=1.0)
    return dst


def _edit(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _read_state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _header_keys(path: Path) -> dict[str, list[int]]:
    return detect.shapes_from_header(detect.read_safetensors_header(path))


def _find_component(paths: ModelPaths | None, kind: str, fits, prefer: tuple[str, ...]) -> Path | None:
    """The first `.safetensors` file under models/<kind>/ whose header `fits` the config, preferring names that
    contain the words of `prefer` in order (e.g. fp16 before fp8: the higher precision when both are there)."""
    if paths is None:
        return None
    found = [f for d in paths.dirs(kind) if d.is_dir() for f in sorted(d.rglob("*.safetensors"))]

    def rank(f: Path) -> int:
        return next((i for i, word in enumerate(prefer) if word in f.name.lower()), len(prefer))

    for f in sorted(found, key=rank):
        try:
            if fits(_header_keys(f)):
                return f
        except ModelLoadError:
            continue
    return None


def _module_fits(config: dict, shapes: dict, key: str, dim: str, index: int = -1) -> bool:
    return key in shapes and shapes[key][index] == config[dim]


def t5_tokenizer(paths: ModelPaths | None, folder: Path | None = None):
    """The T5 tokenizer: a diffusers folder's own tokenizer_2/, else models/text_encoder/t5_tokenizer/."""
    from transformers import T5TokenizerFast

    candidates = [folder / "tokenizer_2"] if folder else []
    if paths is not None:
        candidates += [d / name for d in paths.dirs("text_encoder") for name in T5_TOKENIZER_FOLDERS]
    for c in candidates:
        if (c / "spiece.model").is_file() or (c / "tokenizer.json").is_file():
            return T5TokenizerFast.from_pretrained(c, local_files_only=True)
    where = paths.dirs("text_encoder")[0] if paths is not None else "models/text_encoder"
    raise ModelLoadError(T5_TOKENIZER_HELP.format(where=where))


def load_flux(mf: ModelFile, arch: Architecture, *, config_root: Path, dtype=None, paths: ModelPaths | None = None,
              modules: tuple[Path, ...] = ()):
    """A FluxPipeline on the CPU in `dtype` (GGUF weights stay quantized, computed in `dtype`). `modules`: VAE /
    text encoder files chosen by the user (Forge's "VAE / Text Encoder", `forge_additional_modules`); each
    replaces the part of the same kind the checkpoint holds or the automatic choice would pick."""
    from diffusers import FluxPipeline

    if mf.kind == "diffusers":
        kwargs = {}
        if not (mf.path / "tokenizer_2").is_dir():
            kwargs["tokenizer_2"] = t5_tokenizer(paths)
        if not (mf.path / "tokenizer").is_dir():
            kwargs["tokenizer"] = clip_tokenizer()
        return FluxPipeline.from_pretrained(mf.path, local_files_only=True, torch_dtype=dtype, **kwargs)
    tokenizer_2 = t5_tokenizer(paths)   # before reading gigabytes: a missing tokenizer fails at once
    with tempfile.TemporaryDirectory(prefix="webui-flux-") as tmp:
        cfg_dir = derived_config(config_root, arch, Path(tmp))
        configs = {name: json.loads((cfg_dir / name / "config.json").read_text())
                   for name in ("vae", "text_encoder", "text_encoder_2")}
        own = detect.read_gguf_shapes(mf.path) if mf.kind == "gguf" else _header_keys(mf.path)
        sources = _sources(mf, own, configs, paths, chosen_modules(modules))
        transformer = _transformer(mf, cfg_dir, dtype)
        vae = _vae(mf.path if sources.vae is None else sources.vae, sources.vae is None, cfg_dir, dtype)
        text_encoder = _clip(mf.path if sources.clip is None else sources.clip, sources.clip is None,
                             configs["text_encoder"], dtype)
        text_encoder_2 = _t5(mf.path if sources.t5 is None else sources.t5, sources.t5 is None,
                             configs["text_encoder_2"], dtype)
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            json.loads((cfg_dir / "scheduler" / "scheduler_config.json").read_text()))
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(),
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def module_kind(path: Path) -> str:
    """"vae", "clip" or "t5": what a VAE / text encoder file holds, from its header."""
    shapes = _header_keys(path)
    if "decoder.conv_in.weight" in shapes:
        return "vae"
    if any(k.endswith("embeddings.token_embedding.weight") for k in shapes):
        return "clip"
    if "encoder.final_layer_norm.weight" in shapes:
        return "t5"
    raise ModelLoadError(f"{path.name}: not a VAE, CLIP or T5 text encoder file")


def chosen_modules(modules: tuple[Path, ...]) -> _Sources:
    chosen = _Sources()
    for path in modules:
        setattr(chosen, module_kind(path), path)
    return chosen


def _sources(mf: ModelFile, own: dict, configs: dict, paths: ModelPaths | None, chosen: _Sources) -> _Sources:
    """The user's chosen modules, else the checkpoint's own VAE / CLIP-L / T5 when it is an all-in-one file, else
    files that fit from the models folders; a clear error naming the file and folder for each one missing."""
    found = chosen
    vae_cfg, clip_cfg, t5_cfg = configs["vae"], configs["text_encoder"], configs["text_encoder_2"]
    if found.vae is None and not any(k.startswith(VAE_PREFIX) for k in own):
        found.vae = _find_component(paths, "vae", lambda s: _module_fits(
            vae_cfg, s, "decoder.conv_in.weight", "latent_channels", 1), ("ae", "flux"))
        _require(found.vae, "its VAE", "ae.safetensors (from black-forest-labs/FLUX.1-schnell)", "vae", paths)
    if found.clip is None and not any(k.startswith(CLIP_PREFIX) for k in own):
        found.clip = _find_component(paths, "text_encoder", lambda s: _module_fits(
            clip_cfg, s, "text_model.embeddings.token_embedding.weight", "hidden_size")
            and "text_model.encoder.layers.0.self_attn.q_proj.weight" in s, ("clip_l",))
        _require(found.clip, "the CLIP-L text encoder", "clip_l.safetensors", "text_encoder", paths)
    if found.t5 is None and not any(k.startswith(T5_PREFIX) for k in own):
        found.t5 = _find_component(paths, "text_encoder", lambda s: _module_fits(
            t5_cfg, s, "encoder.final_layer_norm.weight", "d_model", 0), ("t5xxl_fp16", "fp16", "t5xxl_fp8", "t5"))
        _require(found.t5, "the T5-XXL text encoder", "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn.safetensors)",
                 "text_encoder", paths)
    return found


def _require(found: Path | None, what: str, file: str, kind: str, paths: ModelPaths | None) -> None:
    if found is None:
        where = paths.dirs(kind)[0] if paths is not None else f"models/{kind}"
        raise ModelLoadError(f"Flux.1 needs {what}: this checkpoint does not include it; put {file} in {where}/")


def _prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _transformer(mf: ModelFile, cfg_dir: Path, dtype):
    """BFL keys → diffusers keys (flux_keys), then diffusers' single-file model loader (no conversion left)."""
    from diffusers import FluxTransformer2DModel

    kwargs = {}
    if mf.kind == "gguf":
        from diffusers import GGUFQuantizationConfig
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        import torch

        state = load_gguf_checkpoint(str(mf.path))
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype or torch.bfloat16)
    else:
        state = _read_state(mf.path)
    names = flux_keys.strip_prefix(state)
    converted = flux_keys.bfl_to_diffusers({short: state.pop(full) for short, full in names.items()})
    del state
    fp8 = _stored_in_fp8(converted)
    model = FluxTransformer2DModel.from_single_file(converted, config=str(cfg_dir), subfolder="transformer",
                                                    torch_dtype=dtype, local_files_only=True, **kwargs)
    return _keep_fp8(model, fp8, dtype)


def _stored_in_fp8(state: dict) -> bool:
    import torch

    return any(getattr(v, "dtype", None) == torch.float8_e4m3fn for v in state.values())


def _keep_fp8(module, fp8: bool, dtype):
    """fp8 (e4m3fn) files stay fp8 in memory, computed in `dtype`: diffusers' layerwise casting stores the linear
    weights in fp8 and upcasts each layer for its forward pass (norms and embeddings stay in `dtype`, diffusers'
    default skip list). The values were fp8 in the file, so storing them so loses nothing."""
    if not fp8:
        return module
    import torch
    from diffusers.hooks import apply_layerwise_casting

    apply_layerwise_casting(module, storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype or torch.float32,
                            skip_modules_pattern=("pos_embed", "patch_embed", "norm", "embed", "shared",
                                                  "relative_attention_bias",
                                                  # T5 casts its input to wo's weight dtype before wo runs
                                                  r"DenseReluDense\.wo$"))
    return module


def _vae(path: Path, embedded: bool, cfg_dir: Path, dtype):
    from diffusers import AutoencoderKL

    state = _read_state(path)
    if embedded:
        state = _prefixed(state, VAE_PREFIX)
    return AutoencoderKL.from_single_file(state, config=str(cfg_dir), subfolder="vae", local_files_only=True,
                                          torch_dtype=dtype)


def _load_hf(model_cls, config_cls, config: dict, state: dict, name: str, dtype):
    """A transformers model built empty from its config and given the file's tensors (the layout is already
    transformers'); extra keys such as CLIP's unused text_projection are dropped, missing ones are an error."""
    import torch

    with torch.device("meta"):
        model = model_cls(config_cls(**{k: v for k, v in config.items() if k != "architectures"}))
    wanted = set(model.state_dict())
    for key in [k for k in state if k not in wanted]:   # `text_model.x` (files) vs `x` (transformers 5), both ways
        alt = key[len("text_model."):] if key.startswith("text_model.") else "text_model." + key
        if alt in wanted:
            state[alt] = state.pop(key)
    missing = [k for k in wanted if k not in state and not k.endswith("position_ids")]
    if "encoder.embed_tokens.weight" in missing and "shared.weight" in state:   # T5: tied to the shared table
        missing.remove("encoder.embed_tokens.weight")
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    if missing:
        raise ModelLoadError(f"{name}: {len(missing)} weights missing (e.g. {missing[0]}); not a full text encoder")
    fp8 = _stored_in_fp8(state)
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    for key, buf in list(model.named_buffers()):   # buffers absent from the file (CLIP's position ids)
        if buf.device.type == "meta":
            module = model.get_submodule(key.rsplit(".", 1)[0])
            module.register_buffer(key.rsplit(".", 1)[1], torch.arange(buf.shape[-1]).expand(buf.shape),
                                   persistent=False)
    model = model.to(dtype=dtype).eval() if dtype is not None else model.float().eval()
    return _keep_fp8(model, fp8, dtype)


def _clip(path: Path, embedded: bool, config: dict, dtype):
    from transformers import CLIPTextConfig, CLIPTextModel

    state = _read_state(path)
    state = _prefixed(state, CLIP_PREFIX) if embedded else state
    return _load_hf(CLIPTextModel, CLIPTextConfig, config, state, path.name, dtype)


def _t5(path: Path, embedded: bool, config: dict, dtype):
    from transformers import T5Config, T5EncoderModel

    state = _read_state(path)
    state = _prefixed(state, T5_PREFIX) if embedded else state
    return _load_hf(T5EncoderModel, T5Config, config, state, path.name, dtype)
