"""txt2img through the engine on the tiny models: seeds, prompt syntax during sampling, hires fix,
progress, interrupt/skip, infotext and saved files. 64x64, 2-4 steps; the images are noise, the
code paths are the real ones.

To see what the sampler really gets, a forward pre-hook on the (shared) UNet records the text
conditioning of every model call: with CFG each call has [uncond, cond] rows.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.generate import engine as generation, noise, sampling
from pipelines.images import metadata as image_metadata
from pipelines.params import declarations as params
from pipelines.prompts.conditioning import PromptEncoder
from pipelines.core.devices import make_policy
from pipelines.generate.engine import Engine
from pipelines.core.jobs import JobControl
from pipelines.models.manager import PipelineManager
from pipelines.models.files import ModelPaths, ModelRegistry
from pipelines.images.outputs import OutputSaver
from pipelines.params.declarations import make_request
from pipelines.prompts.parser import PromptSyntaxError

from conftest import FILES

LONG = "a photo of a red cat sitting on a green chair in the morning light " * 7  # > 75 tokens, no commas


@pytest.fixture(scope="module")
def manager(tiny_models, tmp_path_factory):
    paths = ModelPaths(tiny_models.models, cache_dir=tmp_path_factory.mktemp("txt2img-cache"))
    return PipelineManager(ModelRegistry(paths), policy=make_policy("cpu", "fp32"), cache_size=2,
                           config_root=tiny_models.configs)


@pytest.fixture
def sd1(manager):
    manager.load(FILES["sd1"])  # cached after the first test: no disk read
    return manager


@pytest.fixture
def sdxl(manager):
    manager.load(FILES["sdxl"])
    return manager


def _req(**kw):
    values = dict(prompt="a cat", steps=4, width=64, height=64, seed=5, sampler_name="Euler a")
    values.update(kw)
    return make_request(values)


def _run(manager, control=None, saver=None, preview_every=5, **kw):
    return Engine(manager, saver, preview_every=preview_every).txt2img(_req(**kw), control, save=saver is not None)


def _px(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


class UnetCalls:
    """Records every UNet call: latent size, text conditioning and (SDXL) pooled embedding."""

    def __init__(self, unet):
        self.calls: list[dict] = []
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        ehs = kwargs["encoder_hidden_states"]
        added = kwargs.get("added_cond_kwargs") or {}
        pooled = added.get("text_embeds")
        self.calls.append(dict(size=tuple(sample.shape[-2:]), ehs=ehs.detach().clone(),
                               pooled=None if pooled is None else pooled.detach().clone()))

    def remove(self):
        self._handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Recorder(JobControl):
    """A JobControl that keeps every progress snapshot; `hook(self)` runs after each update."""

    def __init__(self, hook=None):
        super().__init__()
        self.snapshots = []
        self.hook = hook

    def update(self, **changes):
        super().update(**changes)
        self.snapshots.append(self.snapshot())
        if self.hook:
            self.hook(self)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------ seeds and reproducibility

def test_same_request_is_bit_identical(sd1):
    a = _run(sd1, seed=1234)  # Euler a: per-step noise from the seeded generators too
    b = _run(sd1, seed=1234)
    assert a.images[0].tobytes() == b.images[0].tobytes()
    assert a.infotexts == b.infotexts and a.seeds == b.seeds == [1234]
    assert _run(sd1, seed=1235).images[0].tobytes() != a.images[0].tobytes()


def test_seed_minus_one_is_resolved_and_reported(sd1):
    r = _run(sd1, seed=-1)
    seed = r.seeds[0]
    assert 0 <= seed <= params.SEED_MAX
    assert f"Seed: {seed}," in r.infotexts[0] and r.info()["seed"] == seed and r.info()["all_seeds"] == [seed]
    assert _run(sd1, seed=seed).images[0].tobytes() == r.images[0].tobytes()


def test_batch_and_count_use_consecutive_seeds(sd1):
    r = _run(sd1, seed=100, batch_size=2, n_iter=2)
    assert r.seeds == [100, 101, 102, 103] and len(r.images) == 4
    for k, text in enumerate(r.infotexts):
        assert f"Seed: {100 + k}," in text
    # each image is the single-image run of its seed (CPU batched math may round differently: ≤ 1 level)
    for k in range(4):
        single = _run(sd1, seed=100 + k).images[0]
        assert np.abs(_px(r.images[k]) - _px(single)).max() <= 1, k


def test_variation_seed(sd1):
    plain = _run(sd1, sampler_name="Euler", seed=10, subseed=77, subseed_strength=0)
    varied = _run(sd1, sampler_name="Euler", seed=10, subseed=77, subseed_strength=0.5)
    again = _run(sd1, sampler_name="Euler", seed=10, subseed=77, subseed_strength=0.5)
    assert varied.images[0].tobytes() != plain.images[0].tobytes()
    assert varied.images[0].tobytes() == again.images[0].tobytes()
    assert "Variation seed" not in plain.infotexts[0]
    assert "Seed: 10, Size: 64x64" in varied.infotexts[0]
    assert varied.infotexts[0].endswith("Variation seed: 77, Variation seed strength: 0.5")
    # strength 1 is the variation seed's own noise (Euler draws no per-step noise)
    full = _run(sd1, sampler_name="Euler", seed=10, subseed=77, subseed_strength=1)
    assert full.images[0].tobytes() == _run(sd1, sampler_name="Euler", seed=77).images[0].tobytes()
    # A1111: with a variation seed the batch keeps the seed and steps the variation seed
    batch = _run(sd1, sampler_name="Euler", seed=10, subseed=77, subseed_strength=0.5, batch_size=2)
    assert batch.seeds == [10, 10] and batch.subseeds == [77, 78]
    assert "Variation seed: 78," in batch.infotexts[1]
    assert np.abs(_px(batch.images[0]) - _px(varied.images[0])).max() <= 1


def _a1111_slerp(val, low, high):
    """modules/rng.py of AUTOMATIC1111, verbatim (the reference for variation seeds)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def test_noise_is_drawn_on_the_cpu_like_a1111():
    shape = (2, 4, 8, 8)
    x, gens = noise.image_noise(shape, [11, 12])
    y, _ = noise.image_noise(shape, [11, 12])
    assert x.device.type == "cpu" and x.shape == shape and torch.equal(x, y)
    assert all(g.device.type == "cpu" for g in gens)
    # A1111 "RNG: CPU": torch.randn(C, H, W) from a CPU generator seeded with the image's seed
    for k, seed in enumerate((11, 12)):
        assert torch.equal(x[k], torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(seed)))
    # variation seed: A1111's slerp of seed noise and variation-seed noise
    v, _ = noise.image_noise(shape, [11, 11], [77, 78], 0.3)
    for k, sub in enumerate((77, 78)):
        a = torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(11))
        b = torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(sub))
        torch.testing.assert_close(v[k], _a1111_slerp(0.3, a, b), rtol=0, atol=1e-6)


def test_engine_noise_comes_from_the_cpu_generators(sd1, monkeypatch):
    drawn = []

    def spy(*args, **kwargs):
        out = noise.image_noise(*args, **kwargs)
        drawn.append((args, out))
        return out

    monkeypatch.setattr(sampling, "image_noise", spy)
    _run(sd1, seed=40, batch_size=2)
    (shape, seeds, *_), (tensor, gens) = drawn[0]
    assert shape == (2, 4, 8, 8) and seeds == [40, 41]
    assert tensor.device.type == "cpu" and all(g.device.type == "cpu" for g in gens)


# ------------------------------------------------------------------ prompt syntax, end to end

def _embeds(manager, text: str):
    return PromptEncoder(manager.pipeline("txt2img")).encode(text)


def _which(t: torch.Tensor, options: dict[str, torch.Tensor]) -> str:
    hits = [name for name, ref in options.items() if ref.shape == t.shape and torch.allclose(t, ref, atol=1e-6)]
    assert len(hits) == 1, hits
    return hits[0]


def test_prompt_editing_switches_conditioning_during_sampling(sd1):
    cat, dog, empty = (_embeds(sd1, t).embeds[0] for t in ("a cat", "a dog", ""))
    with UnetCalls(sd1.pipeline().unet) as spy:
        edited = _run(sd1, prompt="a [cat:dog:2]")
    assert len(spy.calls) == 4
    assert [_which(c["ehs"][1], {"cat": cat, "dog": dog}) for c in spy.calls] == ["cat", "cat", "cat", "dog"]
    assert all(torch.allclose(c["ehs"][0], empty, atol=1e-6) for c in spy.calls)  # uncond untouched
    assert edited.infotexts[0].startswith("a [cat:dog:2]\n")
    for other in ("a cat", "a dog"):
        assert edited.images[0].tobytes() != _run(sd1, prompt=other).images[0].tobytes()


def test_alternation_alternates(sd1):
    cat, dog = (_embeds(sd1, t).embeds[0] for t in ("a cat", "a dog"))
    with UnetCalls(sd1.pipeline().unet) as spy:
        alt = _run(sd1, prompt="a [cat|dog]")
    # A1111's lookup: a, a, b, a over 4 steps
    assert [_which(c["ehs"][1], {"cat": cat, "dog": dog}) for c in spy.calls] == ["cat", "cat", "dog", "cat"]
    assert alt.images[0].tobytes() != _run(sd1, prompt="a cat").images[0].tobytes()


def test_negative_prompt_editing_and_batches(sd1):
    blurry, sharp = (_embeds(sd1, t).embeds[0] for t in ("blurry", "sharp"))
    with UnetCalls(sd1.pipeline().unet) as spy:
        _run(sd1, negative_prompt="[blurry:sharp:0.5]", batch_size=2)
    # rows: [uncond x2, cond x2]
    got = [[_which(c["ehs"][k], {"blurry": blurry, "sharp": sharp}) for k in (0, 1)] for c in spy.calls]
    assert got == [["blurry"] * 2] * 3 + [["sharp"] * 2]


def test_sdxl_prompt_editing_swaps_pooled_too(sdxl):
    cat, dog = _embeds(sdxl, "a cat"), _embeds(sdxl, "a dog")
    with UnetCalls(sdxl.pipeline().unet) as spy:
        edited = _run(sdxl, prompt="a [cat:dog:2]")
    assert [_which(c["ehs"][1], {"cat": cat.embeds[0], "dog": dog.embeds[0]}) for c in spy.calls] == \
        ["cat", "cat", "cat", "dog"]
    assert [_which(c["pooled"][1], {"cat": cat.pooled[0], "dog": dog.pooled[0]}) for c in spy.calls] == \
        ["cat", "cat", "cat", "dog"]
    alt_calls = UnetCalls(sdxl.pipeline().unet)
    try:
        _run(sdxl, prompt="a [cat|dog]")
    finally:
        alt_calls.remove()
    assert [_which(c["pooled"][1], {"cat": cat.pooled[0], "dog": dog.pooled[0]}) for c in alt_calls.calls] == \
        ["cat", "cat", "dog", "cat"]
    # (vs "a dog": with "a cat" only the last evaluation differs, at sigma 0.03: below 8 bits on the tiny model)
    assert edited.images[0].tobytes() != _run(sdxl, prompt="a dog").images[0].tobytes()


def test_second_order_sampler_schedule_counts_model_evaluations(sd1):
    # A1111 runs Heun's schedule over steps x 2 model evaluations: [cat:dog:0.5] switches halfway
    cat, dog = (_embeds(sd1, t).embeds[0] for t in ("a cat", "a dog"))
    with UnetCalls(sd1.pipeline().unet) as spy:
        _run(sd1, prompt="a [cat:dog:0.5]", sampler_name="Heun")
    got = [_which(c["ehs"][1], {"cat": cat, "dog": dog}) for c in spy.calls]
    assert got == ["cat"] * 5 + ["dog"] * 2  # 7 evaluations, schedule of 8: evaluations 0-4 use cat


def test_long_prompt_reaches_the_unet_whole(sd1):
    with UnetCalls(sd1.pipeline().unet) as spy:
        r = _run(sd1, prompt=LONG, negative_prompt="blurry", steps=2)
    ehs = spy.calls[0]["ehs"]
    assert ehs.shape[1] == 154
    assert torch.allclose(ehs[1], _embeds(sd1, LONG).embeds[0], atol=1e-6)
    # the one-chunk negative is padded with an empty chunk (A1111) so the CFG batch lines up
    assert torch.allclose(ehs[0, 77:], _embeds(sd1, "").embeds[0], atol=1e-6)
    assert r.infotexts[0].startswith(LONG.strip())


def test_break_reaches_the_unet(sd1):
    with UnetCalls(sd1.pipeline().unet) as spy:
        _run(sd1, prompt="a cat BREAK a dog", steps=1)
    ehs = spy.calls[0]["ehs"]
    assert ehs.shape[1] == 154
    assert torch.allclose(ehs[1, 77:], _embeds(sd1, "a dog").embeds[0], atol=1e-6)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_and_is_a_clear_error_and_nothing_is_saved(sd1, tmp_path, field):
    root = tmp_path / "outputs"
    with pytest.raises(PromptSyntaxError, match="AND.*not supported"):
        _run(sd1, saver=OutputSaver(root), **{field: "a cat AND a dog"})
    assert _files(root) == []
    assert _run(sd1, steps=1).images  # the engine is fine afterwards


# ------------------------------------------------------------------ other request fields

def test_clip_skip_eta_and_checkpoint_choice(manager):
    manager.load(FILES["sd1"])
    base = _run(manager, steps=2)
    skip2 = _run(manager, steps=2, clip_skip=2)
    assert skip2.images[0].tobytes() != base.images[0].tobytes()
    assert "Clip skip: 2" in skip2.infotexts[0] and "Clip skip" not in base.infotexts[0]
    ddim = _run(manager, steps=2, sampler_name="DDIM")
    ddim_eta = _run(manager, steps=2, sampler_name="DDIM", eta=0.5)
    assert ddim.images[0].tobytes() != ddim_eta.images[0].tobytes()
    assert ddim_eta.images[0].tobytes() == _run(manager, steps=2, sampler_name="DDIM", eta=0.5).images[0].tobytes()
    xl = _run(manager, steps=2, sd_model_checkpoint="tiny-sdxl")  # switching through the manager
    assert manager.active.info.name == FILES["sdxl"]
    assert f"Model hash: {manager.active.info.shorthash}, Model: tiny-sdxl" in xl.infotexts[0]


def test_engine_infotext_is_exact(sd1):
    r = _run(sd1, prompt="a cat, (sitting:1.2)", negative_prompt="ugly", seed=5, cfg_scale=6.5,
             sampler_name="DPM++ 2M", scheduler="Karras")
    h = sd1.active.info.shorthash
    assert len(h) == 10 and int(h, 16) >= 0
    assert r.infotexts[0] == (
        "a cat, (sitting:1.2)\nNegative prompt: ugly\n"
        f"Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 5, Size: 64x64, "
        f"Model hash: {h}, Model: tiny-sd1")


# ------------------------------------------------------------------ hires fix

def _hires_steps(snapshots) -> list[int]:
    return [s.step for s in snapshots if s.text.startswith("hires")]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_scale(sd1, upscaler):
    control = Recorder()
    with UnetCalls(sd1.pipeline().unet) as spy:
        r = _run(sd1, control, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler, hr_second_pass_steps=3,
                 denoising_strength=0.5)
    assert r.images[0].size == (96, 96)
    assert [c["size"] for c in spy.calls] == [(8, 8)] * 4 + [(12, 12)] * 3
    assert _hires_steps(control.snapshots) == [1, 2, 3]  # exactly "Hires steps" steps, as in A1111
    assert r.steps_run == 7 and control.progress.fraction == 1.0
    assert r.infotexts[0].endswith(f"Denoising strength: 0.5, Hires upscale: 1.5, Hires steps: 3, "
                                   f"Hires upscaler: {upscaler}")


def test_hires_resize_and_default_steps(sd1):
    control = Recorder()
    r = _run(sd1, control, steps=2, enable_hr=True, hr_resize_x=96, hr_resize_y=80, denoising_strength=0.7)
    assert r.images[0].size == (96, 80)
    assert _hires_steps(control.snapshots) == [1, 2]  # hr_second_pass_steps 0 = the first pass's steps
    assert "Hires resize: 96x80, Hires upscaler: Latent" in r.infotexts[0]
    assert "Hires upscale:" not in r.infotexts[0] and "Hires steps" not in r.infotexts[0]
    one_side = _run(sd1, steps=2, width=64, height=128, enable_hr=True, hr_resize_x=96, hr_upscaler="Lanczos")
    assert one_side.images[0].size == (96, 192)  # the other side follows the aspect ratio


def test_hires_zero_denoising_only_upscales(sd1):
    with UnetCalls(sd1.pipeline().unet) as spy:
        r = _run(sd1, steps=2, enable_hr=True, hr_scale=1.5, denoising_strength=0)
    assert r.images[0].size == (96, 96) and len(spy.calls) == 2


def test_hires_prompt_editing_follows_a1111_timeline(sd1):
    cat, dog = (_embeds(sd1, t).embeds[0] for t in ("a cat", "a dog"))
    with UnetCalls(sd1.pipeline().unet) as spy:
        _run(sd1, prompt="a [cat:dog:2]", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4)
    names = [_which(c["ehs"][1], {"cat": cat, "dog": dog}) for c in spy.calls]
    assert names == ["cat"] * 3 + ["dog"] + ["dog"] * 4  # the hires pass stays switched
    with UnetCalls(sd1.pipeline().unet) as spy:
        _run(sd1, prompt="a [cat:dog:1.5]", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4)
    names = [_which(c["ehs"][1], {"cat": cat, "dog": dog}) for c in spy.calls]
    assert names == ["cat"] * 4 + ["cat"] * 3 + ["dog"]  # 1.5 = halfway through the hires pass


def test_sdxl_hires(sdxl):
    r = _run(sdxl, steps=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)
    assert r.images[0].size == (96, 96)


# ------------------------------------------------------------------ progress, interrupt, skip

def test_progress_previews_and_eta(sd1):
    control = Recorder()
    _run(sd1, control, preview_every=2, steps=4, n_iter=2)
    snaps = control.snapshots
    assert [s.fraction for s in snaps] == [k / 8 for k in range(1, 9)]
    assert [(s.image, s.step, s.steps) for s in snaps[:5]] == [(0, 1, 4), (0, 2, 4), (0, 3, 4), (0, 4, 4), (1, 1, 4)]
    assert snaps[-1].text == "txt2img step 4/4, image 2/2"
    previews = [s for s in snaps if s.preview_id != 0]
    assert [s.preview_id for s in snaps] == [0, 1, 1, 2, 2, 3, 3, 4]  # a new preview every 2 steps
    for s in previews:
        assert isinstance(s.preview, Image.Image) and s.preview.size == (8, 8)
    assert snaps[-1].eta_seconds is not None and snaps[-1].eta_seconds >= 0
    assert all(s.eta_seconds is not None for s in snaps)


@pytest.mark.parametrize("sampler", ["Heun", "DPM++ SDE", "PLMS"])
def test_progress_reaches_one_only_at_the_end(sd1, sampler):
    # second-order samplers call back at every model evaluation, PLMS once more than its steps
    control = Recorder()
    r = _run(sd1, control, steps=3, sampler_name=sampler, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2)
    fractions = [s.fraction for s in control.snapshots]
    assert fractions[-1] == 1.0 and max(fractions[:-1]) < 1.0
    assert fractions == sorted(fractions) and len(fractions) == r.steps_run


def test_interrupt_keeps_finished_images_and_the_partial_one(sd1, tmp_path):
    def hook(control):
        if control.progress.image == 1:
            control.interrupt()

    root = tmp_path / "outputs"
    control = Recorder(hook)
    r = _run(sd1, control, saver=OutputSaver(root), seed=20, n_iter=3)
    assert r.interrupted and r.skipped == 0
    # A1111: the interrupted image ends as its latest prediction, decoded and saved
    assert len(r.images) == 2 and r.seeds == [20, 21] and len(r.paths) == 2
    assert _files(root) == sorted(r.paths)
    assert r.steps_run == 5  # image 2 stopped after its first step, image 3 never started
    assert r.images[0].tobytes() == _run(sd1, seed=20).images[0].tobytes()
    assert r.images[1].tobytes() != _run(sd1, seed=21).images[0].tobytes()
    # with keep_interrupted off the partial image is dropped
    engine = Engine(sd1, None)
    engine.keep_interrupted = False
    dropped = engine.txt2img(_req(seed=20, n_iter=3), Recorder(hook), save=False)
    assert dropped.interrupted and dropped.seeds == [20]


def test_skip_drops_the_current_image_only(sd1, tmp_path):
    def hook(control):
        if control.progress.image == 1 and control.progress.step == 2:
            control.skip()

    root = tmp_path / "outputs"
    r = _run(sd1, Recorder(hook), saver=OutputSaver(root), seed=20, n_iter=3)
    assert not r.interrupted and r.skipped == 1
    assert r.seeds == [20, 22] and len(r.images) == 2 and len(_files(root)) == 2
    assert r.images[1].tobytes() == _run(sd1, seed=22).images[0].tobytes()


def test_skip_after_the_last_step_does_not_drop_the_next_image(sd1, monkeypatch):
    control = JobControl()
    engine = Engine(sd1)
    decode = engine.decode

    def decode_then_skip(pipe, latents):
        control.skip()  # pressed while the image is decoded: nothing left to skip
        return decode(pipe, latents)

    monkeypatch.setattr(engine, "decode", decode_then_skip)
    r = engine.txt2img(_req(seed=30, n_iter=3, steps=2), control, save=False)
    assert r.seeds == [30, 31, 32] and r.skipped == 0


# ------------------------------------------------------------------ saved outputs

def _today() -> set[str]:
    now = datetime.now()
    return {now.strftime("%Y-%m-%d")}


def test_saved_png_layout_and_embedded_infotext(sd1, tmp_path):
    root = tmp_path / "outputs"
    saver = OutputSaver(root)
    days = _today()
    r = _run(sd1, saver=saver, seed=1234, n_iter=2, steps=2)
    days |= _today()
    assert len(r.paths) == 2
    folder = r.paths[0].parent
    assert folder.parent == root / "txt2img-images" and folder.name in days
    assert [p.name for p in r.paths] == ["00000-1234.png", "00001-1235.png"]
    for path, image, text in zip(r.paths, r.images, r.infotexts):
        read, _ = image_metadata.read_infotext(path)
        assert read == text
        with Image.open(path) as saved:
            assert saved.format == "PNG" and saved.tobytes() == image.tobytes()
    again = _run(sd1, saver=saver, seed=7, steps=1)
    assert again.paths[0].name == "00002-7.png"  # 1 + the highest number in the folder
    assert _files(root) == sorted(r.paths + again.paths)


@pytest.mark.parametrize("fmt, pil", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_saved_jpeg_and_webp_carry_the_infotext(sd1, tmp_path, fmt, pil):
    r = _run(sd1, saver=OutputSaver(tmp_path / "out", fmt=fmt), seed=3, steps=1)
    path = r.paths[0]
    assert path.name == f"00000-3.{fmt}"
    with Image.open(path) as saved:
        assert saved.format == pil
    assert image_metadata.read_infotext(path)[0] == r.infotexts[0]


def test_filename_pattern_and_grid(sd1, tmp_path):
    root = tmp_path / "out"
    saver = OutputSaver(root, filename_pattern="[model_name]-[seed]-[prompt_words]-[steps]-[sampler]")
    engine = Engine(sd1, saver)
    engine.saver_grid = True  # A1111's "save grid" option
    r = engine.txt2img(_req(prompt="a/b (cat:1.2), on\\a chair", seed=8, batch_size=2, steps=1))
    assert [p.name for p in r.paths] == ["00000-tiny-sd1-8-a b cat 1 2 on a chair-1-Euler a.png",
                                         "00001-tiny-sd1-9-a b cat 1 2 on a chair-1-Euler a.png"]
    assert r.grid_path.parent.parent == root / "txt2img-grids" and r.grid_path.name == "grid-0000.png"
    with Image.open(r.grid_path) as grid:
        assert grid.size == (128, 64)
    assert image_metadata.read_infotext(r.grid_path)[0] == r.infotexts[0]


def test_txt_sidecar(sd1, tmp_path):
    r = _run(sd1, saver=OutputSaver(tmp_path / "out", save_txt=True), seed=3, steps=1)
    sidecar = r.paths[0].with_suffix(".txt")
    assert sidecar.read_text(encoding="utf-8") == r.infotexts[0] + "\n"


def test_failing_save_leaves_nothing_and_surfaces_the_error(sd1, tmp_path, monkeypatch):
    def broken_write(image, path, infotext, fmt, quality=95):
        path.write(b"\x89PNG partial")  # some bytes reach the disk, then the device fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_metadata, "write_image", broken_write)
    root = tmp_path / "outputs"
    # The image made is returned with the error as a notice (issue 15: a full disk loses no work) ...
    r = _run(sd1, saver=OutputSaver(root, save_txt=True), seed=3, steps=1, batch_size=2)
    assert len(r.images) == 2 and r.paths == [] and r.seeds == [3, 4]
    assert [n for n in r.notices if "not saved" in n and "No space left" in n] == [
        "image 1 was not saved: No space left on device", "image 2 was not saved: No space left on device"]
    assert _files(root) == []  # ... and nothing half-written: no image, no sidecar, no hidden temp file
    monkeypatch.undo()
    assert _run(sd1, saver=OutputSaver(root), seed=3, steps=1).paths[0].name == "00000-3.png"
