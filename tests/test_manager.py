"""Offline loading of every layout, every sampler, the RAM cache, mode sharing, errors that keep the old model."""
from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch

from pipelines.generate import samplers
from pipelines.core.errors import ModelLoadError, ParameterError, UserError
from pipelines.generate.engine import Engine
from pipelines.params.declarations import make_request

from conftest import FILES, FOLDERS


def _one_step(manager, sampler: str, schedule: str = "Automatic", **kw):
    kw.setdefault("steps", 1 if sampler not in ("DPM++ 3M SDE",) else 2)
    req = make_request(prompt="a cat", width=64, height=64, seed=3, sampler_name=sampler, scheduler=schedule,
                       cfg_scale=5, **kw)
    return Engine(manager).txt2img(req, save=False)


@pytest.mark.parametrize("name", [FILES["sd1"], FOLDERS["sd1"], FILES["sd2"], FILES["sdxl"], FOLDERS["sdxl"],
                                  FILES["sd1_inpaint"]])
def test_loads_offline_and_generates(make_manager, no_network, name):
    manager = make_manager()
    loaded = manager.load(name)
    assert manager.active is loaded and manager.disk_loads == 1
    result = _one_step(manager, "Euler a")
    assert result.images[0].size == (64, 64)
    assert result.images[0].getextrema() != ((0, 0), (0, 0), (0, 0))


def test_refiner_loads_but_refuses_txt2img_clearly(make_manager, no_network):
    manager = make_manager()
    manager.load(FILES["sdxl_refiner"])
    with pytest.raises(UserError, match="refiner"):
        _one_step(manager, "Euler")
    assert type(manager.pipeline("img2img")).__name__ == "StableDiffusionXLImg2ImgPipeline"


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_every_sampler_runs_a_step(make_manager, no_network, arch):
    manager = make_manager()
    manager.load(FILES[arch])
    for name in samplers.SAMPLER_NAMES:
        result = _one_step(manager, name)
        assert result.images[0].size == (64, 64), name
        # A1111's k-diffusion samplers run through our drop-in scheduler; the others through their diffusers class
        sampler = samplers.get_sampler(name)
        expected = "KDiffusionScheduler" if sampler.k is not None else sampler.cls_name
        assert type(manager.pipeline().scheduler).__name__ == expected, name
    # every schedule type runs, is recorded, and changes the sigmas (so the image); at 2 steps Karras, Exponential and Beta all
    # reduce to [sigma_max, sigma_min, 0], at 3 they differ in the middle
    images = {}
    for sched in samplers.schedules_for("DPM++ 2M"):
        result = _one_step(manager, "DPM++ 2M", sched, steps=5)
        assert sched == "Automatic" or "Schedule type: " + sched in result.infotexts[0], result.infotexts[0]
        images[sched] = result.images[0].tobytes()
    automatic = images.pop("Automatic")     # Automatic is the sampler's default schedule (A1111: Karras)
    assert automatic == images[samplers.get_sampler("DPM++ 2M").default_schedule]
    # Two pairs are the same schedule with the defaults, so may give the same image: A1111's "Normal" spans
    # t(sigma_max)..t(sigma_min) and "Uniform" the denoiser's t_max..0 (t(sigma_min) = 0), and Polyexponential's
    # default rho is 1, which is Exponential. Every other pair must differ.
    same = {a + " = " + b for a in images for b in images if a < b and images[a] == images[b]}
    assert len(images) >= 3 and same <= {"Normal = Uniform", "Exponential = Polyexponential"}, same


def test_sampler_names_and_schedules():
    assert samplers.resolve("DPM++ 2M Karras") == (samplers.get_sampler("DPM++ 2M"), "Karras")
    assert samplers.resolve("k_euler_a")[0].name == "Euler a"
    sched = samplers.build_scheduler({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                                     "DPM++ 2M", "Karras")
    assert sched.config.use_karras_sigmas and sched.config.algorithm_type == "dpmsolver++"
    # k-diffusion samplers take every A1111 schedule type; a diffusers-run one only what its class supports
    assert samplers.schedules_for("Euler a") == list(samplers.SCHEDULE_NAMES)
    assert "Karras" not in samplers.schedules_for("LCM")
    with pytest.raises(ParameterError, match="unknown sampler 'Bogus'"):
        samplers.resolve("Bogus")
    with pytest.raises(ParameterError, match="does not support the Karras schedule"):
        samplers.resolve("LCM", "Karras")


def test_sampler_swap_reuses_weights(make_manager):
    manager = make_manager()
    manager.load(FILES["sd1"])
    unet = manager.pipeline().unet
    _one_step(manager, "Euler")
    _one_step(manager, "DPM++ 2M", "Karras")
    assert manager.pipeline().unet is unet and manager.disk_loads == 1


def test_cached_switch_reads_nothing_from_disk(make_manager, monkeypatch):
    manager = make_manager(cache_size=2)
    a = manager.load(FILES["sd1"])
    b = manager.load(FILES["sdxl"])
    assert manager.disk_loads == 2

    import safetensors.torch

    def no_read(*args, **kwargs):
        raise AssertionError("a cached switch read the disk")

    monkeypatch.setattr(safetensors.torch, "load_file", no_read)
    monkeypatch.setattr(torch, "load", no_read)
    assert manager.load(FILES["sd1"]) is a
    assert manager.load(FILES["sdxl"]) is b
    assert manager.disk_loads == 2
    monkeypatch.undo()

    manager.load(FILES["sd2"])  # evicts the least recently used (sd1)
    assert manager.disk_loads == 3
    assert [t.split(" [")[0] for t in manager.loaded_titles] == [FILES["sdxl"], FILES["sd2"]]


def test_modes_share_components(make_manager):
    manager = make_manager()
    loaded = manager.load(FILES["sd1"])
    pipes = [manager.pipeline(m) for m in ("txt2img", "img2img", "inpaint")]
    assert [type(p).__name__ for p in pipes] == ["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                                                 "StableDiffusionInpaintPipeline"]
    for p in pipes:
        assert p.unet is loaded.pipe.unet and p.vae is loaded.pipe.vae and p.text_encoder is loaded.pipe.text_encoder
    assert manager.disk_loads == 1


def test_bad_inputs_keep_previous_model(make_manager, tiny_models, tmp_path):
    ckdir = tiny_models.checkpoints
    broken = ckdir / "zz-broken.safetensors"
    data = (ckdir / FILES["sd1"]).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    lora = ckdir / "zz-lora.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 4)}, str(lora))
    vanishing = ckdir / "zz-vanishing.safetensors"
    shutil.copy(ckdir / FILES["sd2"], vanishing)
    try:
        manager = make_manager()
        good = manager.load(FILES["sd1"])
        vanishing.unlink()
        for query, match in (("zz-broken", "truncated"), ("zz-lora", "not a Stable Diffusion checkpoint"),
                             ("zz-vanishing", "file not found"), ("does-not-exist", "not found")):
            with pytest.raises(UserError, match=match):
                manager.load(query)
            assert manager.active is good
        with pytest.raises(ParameterError, match="unknown sampler"):
            _one_step(manager, "Nope")
        assert _one_step(manager, "Euler").images  # still works
    finally:
        for p in (broken, lora, vanishing):
            p.unlink(missing_ok=True)


def test_a_full_cache_unloads_before_it_loads(make_manager, monkeypatch):
    import gc
    import weakref

    from pipelines.models import loading

    manager = make_manager(cache_size=1)
    old_unet = weakref.ref(manager.load(FILES["sd1"]).pipe.unet)
    real_load = loading.load_checkpoint
    seen = []

    def watching_load(*args, **kwargs):
        gc.collect()
        seen.append((len(manager._cache), manager.active, old_unet() is None))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loading, "load_checkpoint", watching_load)
    manager.load(FILES["sd2"])
    assert seen == [(0, None, True)]   # the previous checkpoint's memory was free before the new one loaded
    assert manager.active.info.name == FILES["sd2"] and _one_step(manager, "Euler").images


_FIRST_LOAD_IS_FREED = """
import gc, sys, weakref
from pathlib import Path
from pipelines.core.devices import make_policy
from pipelines.models.manager import PipelineManager
from pipelines.models.files import ModelPaths, ModelRegistry
models, configs, state = (Path(p) for p in sys.argv[1:4])
first, second = sys.argv[4:6]
manager = PipelineManager(ModelRegistry(ModelPaths(models, cache_dir=state), hashing=False),
                          policy=make_policy("cpu", "fp32"), cache_size=1, config_root=configs)
unet = weakref.ref(manager.load(first).pipe.unet)
manager.load(second)
gc.collect()
print("first checkpoint freed:", unet() is None)
"""


def test_the_first_checkpoint_loaded_in_a_fresh_process_is_freed_on_switch(tiny_models, tmp_path):
    # A fresh interpreter, so the first load is the one that imports diffusers' pipelines (and xformers,
    # whose stored load error used to pin that load's frames, and so the whole checkpoint, for good).
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", _FIRST_LOAD_IS_FREED, str(tiny_models.models),
                          str(tiny_models.configs), str(tmp_path), FILES["sd1"], FILES["sd2"]], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert "first checkpoint freed: True" in out.stdout, out.stdout + out.stderr[-3000:]


def test_a_failed_load_brings_back_the_checkpoint_it_unloaded(make_manager, tiny_models):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_models.checkpoints / FILES["sd1"]))
    del sd[next(k for k in sd if k.startswith("first_stage_model.decoder.up.0."))]
    bad = tiny_models.checkpoints / "zz-partial-2.safetensors"
    save_file(sd, str(bad))
    try:
        manager = make_manager(cache_size=1)
        manager.load(FILES["sd2"])
        with pytest.raises(ModelLoadError, match="incomplete"):
            manager.load("zz-partial-2")
        assert manager.active.info.name == FILES["sd2"]
        assert manager.loaded_titles == [manager.active.info.title]
        assert _one_step(manager, "Euler").images
    finally:
        bad.unlink(missing_ok=True)


def test_corrupt_tensor_data_is_a_load_error(make_manager, tiny_models):
    # Header intact, a tensor's bytes replaced with the right length of wrong-shaped config → conversion fails.
    src = tiny_models.checkpoints / FILES["sd1"]
    bad = tiny_models.checkpoints / "zz-wrongarch.safetensors"
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src))
    key = next(k for k in sd if k.startswith("model.diffusion_model.out.2.weight"))
    sd[key] = torch.zeros(3, 3)
    save_file(sd, str(bad))
    try:
        manager = make_manager()
        good = manager.load(FILES["sd1"])
        with pytest.raises(ModelLoadError, match="zz-wrongarch.safetensors: could not be loaded"):
            manager.load("zz-wrongarch")
        assert manager.active is good
    finally:
        bad.unlink(missing_ok=True)


def test_load_waits_for_running_generation(make_manager):
    manager = make_manager()
    manager.load(FILES["sd1"])
    events = []
    started = threading.Event()

    def slow_job():
        with manager.session("txt2img"):
            started.set()
            events.append("generation start")
            time.sleep(0.5)
            events.append("generation end")

    t = threading.Thread(target=slow_job)
    t.start()
    started.wait(5)
    manager.load(FILES["sdxl"])
    events.append("load done")
    t.join()
    assert events == ["generation start", "generation end", "load done"]


def test_vae_override_and_restore(make_manager, tiny_models, tmp_path):
    from bench.synth.factory import tiny_pipeline
    from bench.synth.ldm_export import export_vae_file

    vae_dir = tiny_models.models / "VAE"
    vae_dir.mkdir(exist_ok=True)
    export_vae_file(tiny_pipeline("sd1", seed=7).vae, vae_dir / "other.safetensors")
    manager = make_manager()
    manager.registry.refresh()
    loaded = manager.load(FILES["sd1"])
    own = loaded.pipe.vae
    base = _one_step(manager, "Euler").images[0]
    assert manager.set_vae("other") == "other.safetensors"
    assert manager.pipeline("img2img").vae is loaded.pipe.vae is not own
    swapped = _one_step(manager, "Euler")
    assert "VAE: other.safetensors" in swapped.infotexts[0]
    assert swapped.images[0].tobytes() != base.tobytes()
    manager.set_vae("None")
    assert loaded.pipe.vae is own
    assert _one_step(manager, "Euler").images[0].tobytes() == base.tobytes()
    with pytest.raises(UserError, match="VAE 'missing' not found"):
        manager.set_vae("missing")


def test_missing_weights_are_a_load_error(make_manager, tiny_models):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_models.checkpoints / FILES["sd1"]))
    dropped = [k for k in sd if k.startswith("first_stage_model.decoder.up.0.")]
    for k in dropped:
        del sd[k]
    bad = tiny_models.checkpoints / "zz-partial.safetensors"
    save_file(sd, str(bad))
    try:
        manager = make_manager()
        with pytest.raises(ModelLoadError, match="zz-partial.safetensors: incomplete SD 1.x checkpoint"):
            manager.load("zz-partial")
        assert manager.active is None
    finally:
        bad.unlink(missing_ok=True)
