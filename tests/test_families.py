"""Model families beyond SD 1.x/2.x/SDXL eps: SDXL v-prediction (marker keys), CFG Rescale.

Tiny random models in the real file layouts; the engine's output is checked against a bare diffusers call
on the same modules with the scheduler diffusers documents for these models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.synth.families import with_marker_keys
from pipelines.generate.engine import Engine
from pipelines.models.files import ModelFile
from pipelines.models.loading import inspect_checkpoint
from pipelines.params.declarations import make_request, request_values_from_infotext
from pipelines.params.infotext import parse_infotext

from conftest import FILES


@pytest.fixture(scope="module")
def vpred_models(tiny_models, tmp_path_factory):
    models = tmp_path_factory.mktemp("families") / "models"
    ckpts = models / "Stable-diffusion"
    with_marker_keys(tiny_models.checkpoints / FILES["sdxl"], ckpts / "noob-vpred.safetensors")
    with_marker_keys(tiny_models.checkpoints / FILES["sdxl"], ckpts / "vpred-only.safetensors", ("v_pred",))
    return models


def test_sdxl_vpred_detected_from_marker_keys(vpred_models, tiny_models):
    ckpts = vpred_models / "Stable-diffusion"
    arch = inspect_checkpoint(ModelFile(ckpts / "noob-vpred.safetensors", "noob-vpred.safetensors", "safetensors"))
    assert (arch.family, arch.prediction_type, arch.zero_snr) == ("sdxl", "v_prediction", True)
    assert arch.label == "SDXL (v-prediction) zero terminal SNR"
    only = inspect_checkpoint(ModelFile(ckpts / "vpred-only.safetensors", "vpred-only.safetensors", "safetensors"))
    assert (only.prediction_type, only.zero_snr) == ("v_prediction", False)
    plain = tiny_models.checkpoints / FILES["sdxl"]
    eps = inspect_checkpoint(ModelFile(plain, plain.name, "safetensors"))
    assert (eps.prediction_type, eps.zero_snr) == ("epsilon", False)


class _FirstUnetCall:
    """The text conditioning of the first UNet call ([uncond, cond] rows with CFG)."""

    def __init__(self, unet):
        self.kwargs = None
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        if self.kwargs is None:
            self.kwargs = {k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
            self.kwargs["text_embeds"] = kwargs["added_cond_kwargs"]["text_embeds"].detach().clone()


def test_vpred_ztsnr_with_cfg_rescale_matches_bare_diffusers(vpred_models, make_manager):
    """DDIM runs on diffusers' own scheduler here (the k-diffusion samplers have A1111's, see the next test)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    from pipelines.generate.noise import image_noise

    manager = make_manager(models_dir=vpred_models)
    loaded = manager.load("noob-vpred")
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"
    assert loaded.scheduler_config["rescale_betas_zero_snr"] is True
    req = make_request(prompt="a cat", negative_prompt="blurry", steps=3, width=64, height=64, seed=7,
                       sampler_name="DDIM", cfg_scale=5.0, guidance_rescale=0.7)
    pipe = manager.pipeline("txt2img")
    first = _FirstUnetCall(pipe.unet)
    try:
        result = Engine(manager).txt2img(req, save=False)
    finally:
        first.handle.remove()
    assert "CFG Rescale phi: 0.7" in result.infotexts[0]
    known, _ = request_values_from_infotext(parse_infotext(result.infotexts[0]).params)
    assert known["guidance_rescale"] == 0.7

    # The reference: diffusers' own SDXL pipeline on the same modules, with the scheduler diffusers documents
    # for zero-terminal-SNR v-prediction models and its guidance_rescale.
    cfg = {k: v for k, v in loaded.scheduler_config.items() if k not in ("prediction_type", "rescale_betas_zero_snr",
                                                                         "timestep_spacing")}
    scheduler = DDIMScheduler.from_config(cfg, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                          timestep_spacing="trailing", set_alpha_to_one=False)
    bare = StableDiffusionXLPipeline(**{**pipe.components, "scheduler": scheduler})
    bare.set_progress_bar_config(disable=True)
    ehs, pooled = first.kwargs["encoder_hidden_states"], first.kwargs["text_embeds"]
    noise, _ = image_noise((1, 4, 8, 8), [7])
    reference = bare(prompt_embeds=ehs[1:], negative_prompt_embeds=ehs[:1], pooled_prompt_embeds=pooled[1:],
                     negative_pooled_prompt_embeds=pooled[:1], latents=noise, num_inference_steps=3,
                     guidance_scale=5.0, guidance_rescale=0.7, width=64, height=64).images[0]
    diff = np.abs(np.asarray(reference, np.int16) - np.asarray(result.images[0], np.int16))
    assert diff.max() <= 1

    plain = Engine(manager).txt2img(req.replace(guidance_rescale=0.0), save=False)
    assert "CFG Rescale phi" not in plain.infotexts[0]
    assert np.abs(np.asarray(plain.images[0], np.int16) - np.asarray(result.images[0], np.int16)).max() > 0


def test_ztsnr_k_samplers_use_a1111_schedule(vpred_models, make_manager):
    """The k-diffusion samplers (A1111's Euler) on a ztsnr model: the rescaled schedule, whose last level A1111
    sets to alphas_cumprod 4.8973451890853435e-08 (sigma ~4518.8) instead of an infinite sigma."""
    from pipelines.generate.schedules import TrainingSigmas

    loaded = make_manager(models_dir=vpred_models).load("noob-vpred")
    sigmas = TrainingSigmas.from_config(loaded.scheduler_config)
    assert sigmas.sigma_max == pytest.approx(4518.8, abs=0.5)
    assert sigmas.sigma_min == pytest.approx(TrainingSigmas.from_config({}).sigma_min, rel=0.05)


def test_shipped_clip_vocabulary_is_open_clips():
    """configs/clip_tokenizer was generated from open_clip's packaged BPE file: same tokens, ids and merge order."""
    import json

    from open_clip.tokenizer import SimpleTokenizer

    from pipelines.models.tokenizers import CLIP_TOKENIZER_DIR, clip_tokenizer

    reference = SimpleTokenizer()
    vocab = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    # open_clip 3 names the special tokens <start_of_text>/<end_of_text>; CLIP (and transformers) <|...|>
    specials = {"<|startoftext|>": 49406, "<|endoftext|>": 49407}
    assert {k: v for k, v in vocab.items() if k not in specials} == \
        {k: v for k, v in reference.encoder.items() if v < 49406}
    assert all(vocab[k] == v for k, v in specials.items()) and len(vocab) == len(reference.encoder) == 49408
    lines = (CLIP_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert [tuple(line.split()) for line in lines] == sorted(reference.bpe_ranks, key=reference.bpe_ranks.get)
    text = "a photo of a Cat, wörld 日本 (masterpiece:1.2)"
    assert clip_tokenizer()(text).input_ids == [49406] + reference.encode(text) + [49407]


# ------------------------------------------------------------------------------------------- Flux.1

@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """A tiny Flux.1 dev in every layout under an A1111/Forge models/ folder, and its tiny configs."""
    from bench.synth.factory import write_config_folder
    from bench.synth.families import (diffusers_to_bfl, tiny_flux_pipeline, write_flux_files, write_flux_gguf,
                                      write_t5_tokenizer)

    root = tmp_path_factory.mktemp("flux")
    pipe = tiny_flux_pipeline(write_t5_tokenizer(root / "tokenizer"))
    write_flux_files(pipe, root / "models")
    write_flux_gguf(diffusers_to_bfl(pipe.transformer.state_dict()), root / "models/Stable-diffusion/flux-tiny-Q8_0.gguf")
    write_config_folder(pipe, root / "configs" / "flux")
    return root


@pytest.fixture(scope="module")
def flux_manager(flux, tiny_models):
    from pipelines.core.devices import make_policy
    from pipelines.models.files import ModelPaths, ModelRegistry
    from pipelines.models.manager import PipelineManager

    import shutil

    # the SD1 tiny model beside them, for switches between families (one config root holds both families)
    shutil.copy(tiny_models.checkpoints / FILES["sd1"], flux / "models/Stable-diffusion/tiny-sd1.safetensors")
    shutil.copytree(tiny_models.configs / "sd1", flux / "configs/sd1", dirs_exist_ok=True)
    registry = ModelRegistry(ModelPaths(flux / "models", cache_dir=flux / "cache"))
    return PipelineManager(registry, policy=make_policy("cpu", "fp32"), cache_size=6, config_root=flux / "configs")


FLUX_LAYOUTS = ["flux-tiny-diffusers", "flux-tiny.safetensors", "flux-tiny-aio.safetensors", "flux-tiny-Q8_0.gguf"]


@pytest.mark.parametrize("name", FLUX_LAYOUTS)
def test_flux_detected_from_header_only(flux_manager, name, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("tensor data read"))
    arch = inspect_checkpoint(flux_manager.registry.find_checkpoint(name))
    assert (arch.family, arch.variant, arch.label) == ("flux", "dev", "Flux.1 dev")


def _flux_request(**kw):
    return make_request({**dict(prompt="a cat", steps=2, width=64, height=64, seed=3, sampler_name="Euler",
                                cfg_scale=1.0), **kw})


def test_flux_txt2img_matches_bare_diffusers_and_every_layout_loads_the_same_model(flux_manager, flux, no_network):
    from diffusers import FluxPipeline

    from pipelines.generate.noise import image_noise

    req = _flux_request()
    images = {}
    for name in FLUX_LAYOUTS:
        flux_manager.load(name)
        result = Engine(flux_manager).txt2img(req, save=False)
        images[name] = np.asarray(result.images[0], np.int16)
    # the reference: diffusers' FluxPipeline from the folder, the same CPU-drawn noise (16 channels, packed)
    bare = FluxPipeline.from_pretrained(flux / "models/Stable-diffusion/flux-tiny-diffusers", local_files_only=True)
    bare.set_progress_bar_config(disable=True)
    noise, _ = image_noise((1, 16, 8, 8), [3])
    reference = bare("a cat", guidance_scale=3.5, num_inference_steps=2, height=64, width=64,
                     latents=bare._pack_latents(noise, 1, 16, 8, 8)).images[0]
    reference = np.asarray(reference, np.int16)
    assert reference.std() > 5   # an image, not a blank
    for name in FLUX_LAYOUTS[:3]:   # same weights in every float layout
        assert np.abs(images[name] - reference).max() <= 1, name
    # Q8_0 keeps ~8 bits per weight: close to the float image, not identical
    diff = np.abs(images["flux-tiny-Q8_0.gguf"] - reference)
    assert 0 < diff.mean() < 2 and diff.max() < 40


def test_flux_cfg_infotext_and_forge_paste(flux_manager):
    flux_manager.load("flux-tiny.safetensors")
    calls = []
    handle = flux_manager.active.pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: calls.append(k["hidden_states"].shape[0]), with_kwargs=True)
    try:
        one = Engine(flux_manager).txt2img(_flux_request(distilled_cfg_scale=2.5), save=False)
        assert calls == [1, 1]   # CFG 1: one pass per step, no negative prompt
        calls.clear()
        two = Engine(flux_manager).txt2img(_flux_request(cfg_scale=3.0, negative_prompt="blurry", scheduler="Beta",
                                                         shift=2.0), save=False)
        assert calls == [1, 1, 1, 1]   # true CFG: a negative pass per step
    finally:
        handle.remove()
    text = one.infotexts[0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 1" in text and "Distilled CFG Scale: 2.5" in text
    assert "Shift" not in text
    assert "Schedule type: Beta" in two.infotexts[0] and "Shift: 2," not in two.infotexts[0] and two.infotexts[0].endswith("Shift: 2")
    # Forge's own infotext pastes: its keys reach the request
    forge = ("a cat\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, "
             "Seed: 1, Size: 896x1152, Model hash: 0ae0c0bc26, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1")
    known, _ = request_values_from_infotext(parse_infotext(forge).params)
    assert known["distilled_cfg_scale"] == 3.5 and known["cfg_scale"] == 1 and known["sampler_name"] == "Euler"
    notice = Engine(flux_manager).txt2img(_flux_request(sampler_name="DPM++ 2M"), save=False)
    assert "Sampler: Euler" in notice.infotexts[0] and any("Euler was used" in n for n in notice.notices)


def test_switch_between_families_is_cached(flux_manager):
    flux_manager.load("flux-tiny-aio.safetensors")
    flux_manager.load("tiny-sd1")
    reads = flux_manager.disk_loads
    flux_manager.load("flux-tiny-aio.safetensors")
    sd1 = flux_manager.load("tiny-sd1")
    assert flux_manager.disk_loads == reads and sd1.arch.family == "sd1"
    result = Engine(flux_manager).txt2img(make_request(prompt="a cat", steps=1, width=64, height=64, seed=1),
                                          save=False)
    assert "Distilled CFG Scale" not in result.infotexts[0]


def test_flux_missing_parts_name_the_file_and_folder(flux, tmp_path):
    import shutil

    from pipelines.core.errors import ModelLoadError
    from pipelines.models.files import ModelPaths
    from pipelines.models.flux import load_flux

    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(flux / "models/Stable-diffusion/flux-tiny.safetensors", models / "Stable-diffusion")
    mf = ModelFile(models / "Stable-diffusion/flux-tiny.safetensors", "flux-tiny.safetensors", "safetensors")
    arch = inspect_checkpoint(mf)
    paths = ModelPaths(models, cache_dir=tmp_path / "cache")
    with pytest.raises(ModelLoadError, match=r"T5 tokenizer.*text_encoder/t5_tokenizer"):
        load_flux(mf, arch, config_root=flux / "configs", paths=paths)
    shutil.copytree(flux / "models/text_encoder/t5_tokenizer", models / "text_encoder/t5_tokenizer")
    with pytest.raises(ModelLoadError, match=r"needs its VAE.*ae\.safetensors.*VAE/"):
        load_flux(mf, arch, config_root=flux / "configs", paths=paths)
    shutil.copytree(flux / "models/VAE", models / "VAE")
    with pytest.raises(ModelLoadError, match=r"CLIP-L.*clip_l\.safetensors.*text_encoder/"):
        load_flux(mf, arch, config_root=flux / "configs", paths=paths)


def test_bfl_key_conversion_matches_diffusers():
    """flux_keys.bfl_to_diffusers against diffusers' own converter: values for every tensor diffusers converts at
    tiny width (its single-block split assumes width 3072, so those are given at full height), and keys and shapes
    of a full-size Flux dev on meta tensors."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from bench.synth.families import flux_bfl_shapes as bfl_shapes
    from pipelines.models import flux_keys

    full = {k: torch.empty(s, device="meta") for k, s in bfl_shapes(3072, 128, 12288).items()}
    ours = flux_keys.bfl_to_diffusers(dict(full))
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(full))
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}

    gen = torch.Generator().manual_seed(0)
    tiny = {k: torch.randn(s, generator=gen) for k, s in bfl_shapes(32, 16, 128, 32, 32, 64, 2, 1).items()}
    # diffusers' split of linear1 needs 3 x 3072 + 12288 rows; the other tensors keep the tiny width
    tiny["single_blocks.0.linear1.weight"] = torch.randn(3 * 3072 + 12288, 32, generator=gen)
    tiny["single_blocks.0.linear1.bias"] = torch.randn(3 * 3072 + 12288, generator=gen)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(tiny))
    ours = flux_keys.bfl_to_diffusers({**tiny, "img_in.weight": tiny["img_in.weight"]})
    split = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
    compared = [k for k in theirs if not (k.startswith("single_transformer_blocks.") and any(s in k for s in split))]
    assert len(compared) > 60 and all(torch.equal(ours[k], theirs[k]) for k in compared)


def test_flux_fp8_files_stay_fp8_and_compute_in_higher_precision(flux, tmp_path):
    """A transformer and a T5 stored in float8_e4m3fn (flux1-dev-fp8, t5xxl_fp8_e4m3fn): the linear weights stay fp8
    in memory, each layer is computed in the policy's dtype, and the image is close to the fp32 file's."""
    import shutil

    from safetensors.torch import load_file

    from bench.synth.ldm_export import save_ldm_file
    from pipelines.core.devices import make_policy
    from pipelines.models.files import ModelPaths, ModelRegistry
    from pipelines.models.manager import PipelineManager

    models = tmp_path / "models"
    shutil.copytree(flux / "models/VAE", models / "VAE")
    shutil.copytree(flux / "models/text_encoder/t5_tokenizer", models / "text_encoder/t5_tokenizer")
    shutil.copy(flux / "models/text_encoder/clip_l.safetensors", models / "text_encoder")
    fp8 = torch.float8_e4m3fn
    save_ldm_file(load_file(str(flux / "models/text_encoder/t5xxl_fp16.safetensors")),
                  models / "text_encoder/t5xxl_fp8_e4m3fn.safetensors", fp8)
    save_ldm_file(load_file(str(flux / "models/Stable-diffusion/flux-tiny.safetensors")),
                  models / "Stable-diffusion/flux-tiny-fp8.safetensors", fp8)
    manager = PipelineManager(ModelRegistry(ModelPaths(models, cache_dir=tmp_path / "cache")),
                              policy=make_policy("cpu", "fp32"), config_root=flux / "configs")
    pipe = manager.load("flux-tiny-fp8").pipe
    assert pipe.transformer.transformer_blocks[0].attn.to_q.weight.dtype == fp8
    assert pipe.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == fp8
    image = np.asarray(Engine(manager).txt2img(_flux_request(), save=False).images[0], np.int16)

    reference_manager = PipelineManager(ModelRegistry(ModelPaths(flux / "models", cache_dir=tmp_path / "c2")),
                                        policy=make_policy("cpu", "fp32"), config_root=flux / "configs")
    reference_manager.load("flux-tiny.safetensors")
    reference = np.asarray(Engine(reference_manager).txt2img(_flux_request(), save=False).images[0], np.int16)
    diff = np.abs(image - reference)
    assert 0 < diff.mean() < 8 and np.corrcoef(image.ravel(), reference.ravel())[0, 1] > 0.9


def test_forge_additional_modules_choose_the_vae_and_text_encoders(flux_manager, flux):
    """Forge's "VAE / Text Encoder" choice: the named files replace the checkpoint's own parts (all-in-one) and
    the automatic pick; a file that is no module, or not there, is refused with its name."""
    import shutil

    from pipelines.core.errors import UserError

    from safetensors.torch import load_file, save_file

    vae_dir = flux / "models/VAE"
    other = load_file(str(vae_dir / "ae.safetensors"))
    other["decoder.conv_in.weight"] = other["decoder.conv_in.weight"] * 2   # not the all-in-one file's own VAE
    save_file(other, str(vae_dir / "other-ae.safetensors"))
    try:
        flux_manager.load("flux-tiny-aio.safetensors")
        assert flux_manager.set_additional_modules(["other-ae.safetensors", "clip_l.safetensors"]) == \
            ["other-ae.safetensors", "clip_l.safetensors"]
        assert flux_manager.active is None    # the Flux model loaded with other modules was dropped
        reads = flux_manager.disk_loads
        pipe = flux_manager.load("flux-tiny-aio.safetensors").pipe
        assert flux_manager.disk_loads == reads + 1
        assert torch.equal(pipe.vae.decoder.conv_in.weight, other["decoder.conv_in.weight"])
        with pytest.raises(UserError, match="nothing.safetensors"):
            flux_manager.set_additional_modules(["nothing.safetensors"])
    finally:
        flux_manager.set_additional_modules([])
        (vae_dir / "other-ae.safetensors").unlink()
