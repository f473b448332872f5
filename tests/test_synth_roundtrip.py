"""The synthetic models (bench/synth) written in the real on-disk layouts load back exactly.

For every architecture: tiny random pipeline → original single-file LDM `.safetensors` →
`<Pipeline>.from_single_file(config=<configs-only folder>, tokenizer=..., local_files_only=True)`
gives back every UNet / VAE / text-encoder tensor bit for bit; and the same through a diffusers folder.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.synth import (ARCHS, pipeline_class, tiny_pipeline, write_config_folder,  # noqa: E402
                         write_diffusers_folder, write_single_file)

MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")
TOKENIZERS = ("tokenizer", "tokenizer_2")


def assert_same_weights(expected, actual):
    for name in MODULES:
        a, b = getattr(expected, name, None), getattr(actual, name, None)
        if a is None:
            assert b is None, f"{name}: unexpected component"
            continue
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), f"{name}: key sets differ {sorted(set(sa) ^ set(sb))[:5]}"
        for k, t in sa.items():
            assert sb[k].device.type == "cpu", f"{name}.{k} was not loaded (device {sb[k].device})"
            assert sb[k].dtype == t.dtype and torch.equal(sb[k], t), f"{name}.{k} differs"


def _plain(config) -> dict:
    """Config as JSON would store it, without bookkeeping keys (`_use_default_values`, versions)."""
    return {k: v for k, v in json.loads(json.dumps(dict(config))).items() if not k.startswith("_")}


def assert_same_configs(expected, actual):
    assert type(actual) is type(expected)
    assert _plain(actual.config) == _plain(expected.config)
    assert type(actual.scheduler) is type(expected.scheduler)
    assert _plain(actual.scheduler.config) == _plain(expected.scheduler.config)
    for name in ("unet", "vae"):
        assert _plain(getattr(actual, name).config) == _plain(getattr(expected, name).config), name
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(expected, name, None) is not None:
            assert getattr(actual, name).config.to_diff_dict() == getattr(expected, name).config.to_diff_dict()


def tokenizers_of(pipe) -> dict:
    return {k: getattr(pipe, k) for k in TOKENIZERS if getattr(pipe, k, None) is not None}


@pytest.fixture(scope="module", params=ARCHS)
def built(request, tmp_path_factory):
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    pipe = tiny_pipeline(arch)
    config_dir = write_config_folder(pipe, root / "config")
    ckpt = write_single_file(pipe, root / f"tiny-{arch}.safetensors", arch)
    return arch, pipe, root, config_dir, ckpt


def test_config_folder_has_only_configs(built):
    _, pipe, _, config_dir, _ = built
    files = sorted(str(p.relative_to(config_dir)) for p in config_dir.rglob("*") if p.is_file())
    expected = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json"]
    expected += [f"{n}/config.json" for n in ("text_encoder", "text_encoder_2") if getattr(pipe, n, None)]
    assert files == sorted(expected)


def test_single_file_roundtrip(built):
    arch, pipe, _, config_dir, ckpt = built
    loaded = pipeline_class(arch).from_single_file(
        str(ckpt), config=str(config_dir), local_files_only=True, **tokenizers_of(pipe))
    assert_same_weights(pipe, loaded)
    assert_same_configs(pipe, loaded)

    # ... and the loaded pipeline runs (one step, 64 px).
    kwargs = dict(prompt="a cat", num_inference_steps=1, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if arch in ("sd1_inpaint", "sdxl_refiner"):
        kwargs["image"] = Image.new("RGB", (64, 64), (128, 64, 32))
    if arch == "sd1_inpaint":
        kwargs["mask_image"] = Image.new("L", (64, 64), 255)
    if arch == "sdxl_refiner":
        kwargs.pop("height"), kwargs.pop("width")
        kwargs.update(strength=1.0, num_inference_steps=1)
    loaded.set_progress_bar_config(disable=True)
    images = loaded(**kwargs).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_diffusers_folder_roundtrip(built):
    arch, pipe, root, _, _ = built
    folder = write_diffusers_folder(pipe, root / "diffusers")
    loaded = pipeline_class(arch).from_pretrained(str(folder), local_files_only=True)
    assert_same_weights(pipe, loaded)
    assert_same_configs(pipe, loaded)
    for name, tok in tokenizers_of(pipe).items():
        back = getattr(loaded, name)
        assert back.pad_token == tok.pad_token and back.model_max_length == 77
        text = "a photo of an astronaut riding a horse, 4k"
        assert back(text, padding="max_length").input_ids == tok(text, padding="max_length").input_ids


EXPECTED_KEYS = {
    "sd1": ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.transformer.text_model.embeddings.position_ids", "alphas_cumprod"],
    "sd2": ["cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding",
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
            "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale", "alphas_cumprod"],
    "sdxl": ["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
             "conditioner.embedders.1.model.text_projection", "model.diffusion_model.label_emb.0.0.weight"],
    "sdxl_refiner": ["conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight",
                     "conditioner.embedders.0.model.text_projection", "model.diffusion_model.label_emb.0.2.weight"],
}


def test_single_file_key_layout(built):
    from safetensors import safe_open

    from pipelines.models.detect import detect_architecture, read_safetensors_header, shapes_from_header

    arch, pipe, _, _, ckpt = built
    fam = arch.removesuffix("_inpaint")
    with safe_open(str(ckpt), "pt") as f:
        keys = set(f.keys())
        in_w = f.get_slice("model.diffusion_model.input_blocks.0.0.weight").get_shape()
        vae_q = f.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape()
    assert {k.split(".")[0] for k in keys} <= {"model", "first_stage_model", "cond_stage_model", "conditioner",
                                              *EXPECTED_KEYS["sd1"][2:], "betas", "alphas_cumprod_prev",
                                              "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
                                              "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                                              "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                                              "posterior_log_variance_clipped", "posterior_mean_coef1",
                                              "posterior_mean_coef2"}
    assert set(EXPECTED_KEYS[fam]) <= keys
    assert in_w[1] == (9 if arch.endswith("_inpaint") else 4)
    assert len(vae_q) == 4 and vae_q[2:] == [1, 1]  # LDM stores VAE attention as 1x1 convs
    if fam == "sd2":  # like the real file: one resblock more than diffusers' text encoder uses
        n = pipe.text_encoder.config.num_hidden_layers
        assert f"cond_stage_model.model.transformer.resblocks.{n}.ln_1.weight" in keys

    detected = detect_architecture(shapes_from_header(read_safetensors_header(ckpt)))
    assert (detected.family, detected.inpaint) == (fam, arch.endswith("_inpaint"))


def test_tiny_pipeline_is_deterministic():
    a, b, c = tiny_pipeline("sd1", seed=0), tiny_pipeline("sd1", seed=0), tiny_pipeline("sd1", seed=1)
    assert_same_weights(a, b)
    w = "conv_in.weight"
    assert not torch.equal(a.unet.state_dict()[w], c.unet.state_dict()[w])


def test_full_size_sdxl_layout_is_what_the_loader_reads():
    """The full-size SDXL writer (bench.synth.full_size_sdxl_single_file), built on the meta device: its keys
    and shapes are sd_xl_base_1.0's as far as the project's detector and diffusers' single-file loader can
    tell, and diffusers' LDM → diffusers converters give back every weight of the bundled-config modules."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint, convert_open_clip_checkpoint,
                                                     infer_diffusers_model_type)

    from bench.synth import full_size_ldm_state_dict, full_size_pipeline_skeleton
    from bench.synth.ldm_export import SDXL_CLIP_PREFIX, SDXL_OPENCLIP_PREFIX, _text_model_keys
    from pipelines.models.detect import SDXL, detect_architecture

    ldm = full_size_ldm_state_dict("sdxl", empty=True)
    skeleton = full_size_pipeline_skeleton("sdxl")
    assert sum(t.numel() * t.element_size() for t in ldm.values()) / 1e9 == pytest.approx(6.94, abs=0.01)  # fp16
    arch = detect_architecture({k: list(t.shape) for k, t in ldm.items()})
    assert (arch.family, arch.inpaint) == (SDXL, False)
    assert infer_diffusers_model_type(ldm) == "xl_base"

    def shapes(sd):
        return {k: tuple(t.shape) for k, t in sd.items()}

    unet, vae, te, te2 = skeleton.unet, skeleton.vae, skeleton.text_encoder, skeleton.text_encoder_2
    assert shapes(convert_ldm_unet_checkpoint(ldm, dict(unet.config))) == shapes(unet.state_dict())
    assert shapes(convert_ldm_vae_checkpoint(ldm, dict(vae.config))) == shapes(vae.state_dict())
    clip = _text_model_keys(convert_ldm_clip_checkpoint(ldm, remove_prefix=SDXL_CLIP_PREFIX))
    clip.pop("text_model.embeddings.position_ids")  # in real files; a non-persistent buffer in transformers
    assert shapes(clip) == shapes(_text_model_keys(te.state_dict()))
    openclip = convert_open_clip_checkpoint(te2, ldm, prefix=SDXL_OPENCLIP_PREFIX)
    assert shapes(openclip) == shapes(_text_model_keys(te2.state_dict()))
