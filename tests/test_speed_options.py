"""Speed/memory options: CFG cut-off does what it says; memory does not grow across many jobs/switches."""
from __future__ import annotations

import gc

import psutil
import pytest

from pipelines.generate.engine import Engine
from pipelines.params.declarations import make_request

from conftest import FILES


def _unet_batches(manager, **kw):
    batches = []
    unet = manager.pipeline().unet
    handle = unet.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    try:
        values = {"prompt": "a cat", "negative_prompt": "dog", "width": 64, "height": 64, "seed": 5, **kw}
        result = Engine(manager).txt2img(make_request(values), save=False)
    finally:
        handle.remove()
    return batches, result


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_cfg_cutoff_drops_the_unconditional_pass(make_manager, arch):
    manager = make_manager()
    manager.load(FILES[arch])
    full, base = _unet_batches(manager, steps=4, sampler_name="Euler")
    cut, result = _unet_batches(manager, steps=4, sampler_name="Euler", cfg_cutoff=0.5)
    assert full == [2, 2, 2, 2]
    assert cut == [2, 2, 1, 1]
    assert result.images[0].size == (64, 64)
    assert result.images[0].tobytes() != base.images[0].tobytes()
    assert "CFG cut-off: 0.5" in result.infotexts[0]
    again, _ = _unet_batches(manager, steps=4, sampler_name="Euler")  # the pipeline is not left without CFG
    assert again == [2, 2, 2, 2]


def test_cfg_cutoff_with_prompt_editing(make_manager):
    manager = make_manager()
    manager.load(FILES["sd1"])
    batches, result = _unet_batches(manager, prompt="[cat:dog:1]", steps=4, sampler_name="Euler", cfg_cutoff=0.25)
    assert batches == [2, 1, 1, 1] and result.images


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 1e6


@pytest.mark.slow
def test_memory_does_not_grow_over_generations_and_switches(make_manager):
    manager = make_manager(cache_size=1)
    manager.load(FILES["sd1"])
    engine = Engine(manager)
    req = make_request(prompt="a cat", steps=1, width=64, height=64, seed=1)
    for _ in range(5):  # warm-up: allocator pools, lazily built pipelines
        engine.txt2img(req, save=False)
    before = _rss_mb()
    for i in range(50):
        engine.txt2img(req.replace(seed=i), save=False)
    after_generations = _rss_mb()
    for _ in range(2):
        manager.load(FILES["sdxl"])
        manager.load(FILES["sd1"])
    before_switches = _rss_mb()
    for _ in range(10):
        manager.load(FILES["sdxl"] if manager.active.info.name == FILES["sd1"] else FILES["sd1"])
    after_switches = _rss_mb()
    assert after_generations - before < 60, (before, after_generations)
    assert after_switches - before_switches < 80, (before_switches, after_switches)
    assert len(manager.loaded_titles) == 1


def test_compile_flag_compiles_the_shared_unet_once(tiny_models, tmp_path, monkeypatch):
    import torch

    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    registry = ModelRegistry(ModelPaths(tiny_models.models, cache_dir=tmp_path / "c"))
    manager = PipelineManager(registry, policy=make_policy("cpu", "fp32", compile=True), config_root=tiny_models.configs)
    loaded = manager.load(FILES["sd1"])
    manager.load(FILES["sdxl"])
    manager.load(FILES["sd1"])  # back from the cache: already compiled
    assert [c[0] for c in calls] == ["UNet2DConditionModel", "UNet2DConditionModel"]
    assert manager.pipeline("img2img").unet is loaded.pipe.unet


@pytest.mark.slow   # ~90 s on 2 idle cores: two Inductor compiles (eager vs frozen, with and without a LoRA)
def test_cpu_compile_matches_eager_with_and_without_a_lora(tiny_models, tmp_path):
    """A real Inductor compile with frozen weights (~20 s per graph on 2 cores): same images as eager, and
    a LoRA (peft adapter modules) still applies and leaves."""
    import numpy as np

    from bench.synth.networks import kohya_lora, save_lora
    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    paths = ModelPaths(tmp_path / "models", extra_models_dirs=[tiny_models.models], cache_dir=tmp_path / "c")

    def images(compile: bool) -> list:
        manager = PipelineManager(ModelRegistry(paths), policy=make_policy("cpu", "fp32", compile=compile),
                                  config_root=tiny_models.configs)
        pipe = manager.load(FILES["sd1"]).pipe
        lora = tmp_path / "models" / "Lora" / "tiny.safetensors"
        if not lora.exists():
            save_lora(kohya_lora(pipe.unet, None, seed=1), lora)
        engine = Engine(manager)
        out = [np.asarray(engine.txt2img(make_request(prompt=p, steps=2, width=64, height=64, seed=2),
                                         save=False).images[0], dtype=np.int16)
               for p in ("a cat", "a cat <lora:tiny:8>", "a cat")]
        assert getattr(pipe.unet, "_weights_frozen", False) is compile
        return out

    eager, compiled = images(False), images(True)
    for e, c in zip(eager, compiled):
        assert np.abs(e - c).max() <= 2
    assert np.abs(eager[1] - eager[0]).max() > 10            # the (UNet-only) LoRA changes the image
    assert np.abs(compiled[1] - compiled[0]).max() > 10      # on the compiled UNet too
    assert np.abs(compiled[2] - compiled[0]).max() <= 1     # and is gone afterwards


@pytest.fixture
def taesd(tiny_models, tmp_path):
    """A models folder of its own (the shared checkpoints linked in) with a tiny random TAESD for SD1 in
    VAE-approx/taesd, so other tests keep seeing a models folder without one."""
    import torch
    from diffusers import AutoencoderTiny

    models = tmp_path / "models"
    models.mkdir()
    (models / "Stable-diffusion").symlink_to(tiny_models.checkpoints, target_is_directory=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                        decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(models / "VAE-approx" / "taesd")
    return models


def test_tiny_vae_decodes_the_final_image_and_falls_back_with_a_notice(make_manager, taesd):
    manager = make_manager(models_dir=taesd)
    manager.load(FILES["sd1"])
    engine = Engine(manager)
    req = make_request(prompt="a cat", steps=2, width=64, height=64, seed=3)
    full = engine.txt2img(req, save=False)
    tiny = engine.txt2img(req.replace(vae_type="Tiny"), save=False)
    assert tiny.images[0].size == (64, 64) and not tiny.notices
    assert tiny.images[0].tobytes() != full.images[0].tobytes()
    assert "VAE type: Tiny" in tiny.infotexts[0]
    assert manager.tiny_vae() is manager.tiny_vae()  # loaded once

    manager.load(FILES["sdxl"])  # no taesdxl folder: the full VAE decodes, and the user is told why
    xl = engine.txt2img(req.replace(vae_type="Tiny"), save=False)
    assert xl.images[0].size == (64, 64)
    assert any("no TAESD weights" in n for n in xl.notices)


def test_previews_use_taesd_when_its_weights_are_there(make_manager, taesd):
    from pipelines.core.jobs import JobControl

    manager = make_manager(models_dir=taesd)
    manager.load(FILES["sd1"])
    assert manager.tiny_vae() is not None
    engine = Engine(manager, preview_every=1)
    previews = []

    class Watch(JobControl):
        def update(self, **changes):
            if changes.get("preview") is not None:
                previews.append(changes["preview"])
            super().update(**changes)

    engine.txt2img(make_request(prompt="a cat", steps=2, width=64, height=64, seed=1), Watch(), save=False)
    assert len(previews) == 2 and previews[0].size == (64, 64)  # full size: a decoder, not the 1/8 linear map
