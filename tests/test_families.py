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
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from pipelines.generate.noise import image_noise

    manager = make_manager(models_dir=vpred_models)
    loaded = manager.load("noob-vpred")
    assert loaded.scheduler_config["prediction_type"] == "v_prediction"
    assert loaded.scheduler_config["rescale_betas_zero_snr"] is True
    req = make_request(prompt="a cat", negative_prompt="blurry", steps=3, width=64, height=64, seed=7,
                       sampler_name="Euler", cfg_scale=5.0, guidance_rescale=0.7)
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
    scheduler = EulerDiscreteScheduler.from_config(cfg, prediction_type="v_prediction",
                                                   rescale_betas_zero_snr=True, timestep_spacing="trailing")
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
