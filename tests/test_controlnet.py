"""ControlNet end to end on tiny random models: discovery, offline loading in every layout, generation with
one and two units, swapping without reloading the checkpoint, SDXL, img2img/inpaint, architecture checks."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.models import loading
from pipelines.controlnet.files import detect_controlnet
from pipelines.controlnet.job import choices
from pipelines.controlnet.units import ControlNetUnit
from pipelines.core.errors import ModelLoadError, UserError
from pipelines.generate.engine import Engine
from pipelines.params.declarations import make_request

SD1_FILES = {  # name → (layout, seed)
    "tiny-cn-sd1.safetensors": ("ldm", 11),
    "sub/tiny-cn-sd1-b.pth": ("ldm", 12),
    "tiny-cn-sd1-folder": ("diffusers", 13),
}
SDXL_FILES = {
    "tiny-cn-sdxl.safetensors": ("ldm", 21),
    "tiny-cn-sdxl-dk.safetensors": ("diffusers-file", 22),
}


@pytest.fixture(scope="session")
def tiny_controlnets(tiny_models):
    """Tiny ControlNets matching the tiny SD1 / SDXL checkpoints, in models/ControlNet in every layout, and
    their configs next to the tiny checkpoint configs (the loader's bundled-config folder in tests)."""
    from safetensors.torch import load_file

    from bench.synth import tiny_controlnet, write_controlnet

    folder = tiny_models.models / "ControlNet"
    for files, arch, cfg_name in ((SD1_FILES, "sd1", "controlnet_sd15"), (SDXL_FILES, "sdxl", "controlnet_sdxl")):
        tiny_controlnet(arch).save_config(tiny_models.configs / cfg_name)
        for name, (layout, seed) in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            cn = tiny_controlnet(arch, seed=seed)
            if name.endswith(".pth"):
                tmp = write_controlnet(cn, target.with_suffix(".tmp.safetensors"), layout)
                torch.save(load_file(tmp), target)   # A1111's .pth: a plain dict of tensors
                tmp.unlink()
            else:
                write_controlnet(cn, target, layout)
    return folder


def _image(w=80, h=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 220, np.uint8)
    img[h // 4: 3 * h // 4, w // 4: w // 2] = (30, 60, 200)
    img[:, 3 * w // 5:] = (200, 40, 40)
    return Image.fromarray(np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8))


def _req(**kw):
    base = dict(prompt="a house", steps=1, width=64, height=64, seed=3, sampler_name="Euler", cfg_scale=5)
    base.update(kw)
    return make_request(**base)


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.fixture
def sd1(make_manager, tiny_controlnets):
    manager = make_manager()
    manager.load("tiny-sd1.safetensors")
    return manager


def test_discovery_titles_and_architecture_filter(sd1, tiny_controlnets):
    reg = sd1.controlnets.registry
    names = {cf.name: cf for cf in reg.models}
    assert set(names) == set(SD1_FILES) | set(SDXL_FILES)
    single = names["tiny-cn-sd1.safetensors"]
    assert single.title.startswith("tiny-cn-sd1 [") and len(single.hash) == 8     # sd-webui-controlnet titles
    assert names["tiny-cn-sd1-folder"].title == "tiny-cn-sd1-folder"
    assert reg.find("tiny-cn-sd1 [00000000]") is single                          # the name wins over a stale hash
    assert reg.find("TINY-CN-SD1-B") is names["sub/tiny-cn-sd1-b.pth"]
    arch = {n: reg.arch(cf) for n, cf in names.items()}
    assert arch["tiny-cn-sd1.safetensors"].layout == "ldm" and not arch["tiny-cn-sd1.safetensors"].sdxl
    assert arch["sub/tiny-cn-sd1-b.pth"].prefix == "control_model."
    assert arch["tiny-cn-sdxl.safetensors"].sdxl and arch["tiny-cn-sdxl-dk.safetensors"].layout == "diffusers"
    titles, note = choices(sd1)
    assert titles[0] == "None" and len(titles) == 4 and all("sdxl" not in t for t in titles)
    assert "2 ControlNet(s) for other architectures hidden" in note and "SDXL" in note
    with pytest.raises(UserError, match="not found; put it in"):
        reg.find("missing-model")
    with pytest.raises(ModelLoadError, match="not a ControlNet"):
        detect_controlnet({"adapter.body.0.weight": [1]}, "t2i.safetensors")


def test_one_unit_generates_and_writes_infotext(sd1):
    engine = Engine(sd1)
    plain = engine.txt2img(_req(), save=False)
    unit = ControlNetUnit(image=_image(), module="canny", model="tiny-cn-sd1", threshold_a=50, threshold_b=120)
    res = engine.txt2img(_req(), save=False, controlnet=[unit])
    assert len(res.images) == 1 and res.images[0].size == (64, 64) and not res.notices
    assert [m.size for m in res.control_maps] == [(64, 64)]
    assert np.abs(_arr(res.images[0]) - _arr(plain.images[0])).mean() > 0.05     # the ControlNet steers
    title = sd1.controlnets.registry.find("tiny-cn-sd1").title
    assert (f'ControlNet 0: "Module: canny, Model: {title}, Weight: 1.0, Resize Mode: Crop and Resize, '
            'Processor Res: 512, Threshold A: 50.0, Threshold B: 120.0, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: False, Control Mode: Balanced"') in res.infotexts[0]
    hires = engine.txt2img(_req(enable_hr=True, hr_scale=1.5, denoising_strength=0.5), save=False,
                           controlnet=[unit])                    # the hires pass is controlled too (img2img twin)
    assert hires.images[0].size == (96, 96) and "controlnet:img2img" in sd1.active.modes
    # disabled units change nothing: the plain pipeline, same image
    off = engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(enabled=False, model="tiny-cn-sd1")])
    assert np.array_equal(_arr(off.images[0]), _arr(plain.images[0])) and "ControlNet" not in off.infotexts[0]


def test_two_units_swap_and_disable_never_reload_the_checkpoint(sd1, monkeypatch):
    engine = Engine(sd1)
    loaded = sd1.active
    plain = engine.txt2img(_req(), save=False)

    def no_checkpoint_read(*a, **k):
        raise AssertionError("the checkpoint was read again")

    monkeypatch.setattr(loading, "load_checkpoint", no_checkpoint_read)
    monkeypatch.setattr(loading, "inspect_checkpoint", no_checkpoint_read)
    disk_loads = sd1.disk_loads
    img = _image()
    a = ControlNetUnit(image=img, module="canny", model="tiny-cn-sd1")
    b = ControlNetUnit(image=img, module="shuffle", model="tiny-cn-sd1-folder", weight=0.7,
                       control_mode="ControlNet is more important", guidance_end=0.5)
    pose = ControlNetUnit(image=img, module="openpose", model="tiny-cn-sd1")           # no annotator weights
    two = engine.txt2img(_req(), save=False, controlnet=[a, b, pose])
    assert len(two.images) == 1 and len(two.control_maps) == 2
    assert 'ControlNet 1: "Module: shuffle, Model: tiny-cn-sd1-folder, Weight: 0.7' in two.infotexts[0]
    assert "ControlNet 2" not in two.infotexts[0]
    assert any("ControlNet 2 skipped" in n and "body_pose_model.pth" in n for n in two.notices)
    pipe = loaded.modes["controlnet:txt2img"]
    assert pipe.unet is loaded.pipe.unet and pipe.vae is loaded.pipe.vae                # shared components
    loads = sd1.controlnets.loads
    swapped = engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(image=img, module="canny",
                                                                            model="tiny-cn-sd1-b")])
    assert sd1.controlnets.loads == loads + 1                                          # the .pth, via the safe loader
    assert loaded.modes["controlnet:txt2img"] is pipe                                  # same pipeline, new nets
    again = engine.txt2img(_req(), save=False, controlnet=[a])
    assert sd1.controlnets.loads == loads + 1                                          # from the ControlNet cache
    assert not np.array_equal(_arr(swapped.images[0]), _arr(again.images[0]))
    after = engine.txt2img(_req(), save=False)
    assert np.array_equal(_arr(after.images[0]), _arr(plain.images[0]))               # disabled: exactly as before
    assert sd1.disk_loads == disk_loads and sd1.active is loaded
    assert pipe.controlnet is None                                                      # released after each job


def test_unit_lists_are_checked_where_diffusers_would_truncate(sd1):
    from pipelines.controlnet.pipeline import controlnet_pipeline, pipeline_kwargs, unit_controlnets

    net = sd1.controlnets.get(sd1.controlnets.registry.find("tiny-cn-sd1"))
    nets = unit_controlnets([net, net], ["Balanced", "Balanced"])
    pipe = controlnet_pipeline(sd1, "txt2img", nets)
    maps = [_image(64, 64)] * 2
    with pytest.raises(UserError, match=r"controlnet_conditioning_scale has 1 value\(s\) for 2 ControlNet unit"):
        pipeline_kwargs(pipe, maps, [1.0], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(UserError, match=r"control_guidance_end has 3 value\(s\) for 2"):
        pipeline_kwargs(pipe, maps, [1.0, 1.0], [0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(UserError, match=r"control_mode has 1 value\(s\) for 2"):
        unit_controlnets([net, net], ["Balanced"])
    # a direct call past the checks meets the same refusal inside the nets
    sample = torch.zeros(2, 4, 8, 8)
    with pytest.raises(UserError, match=r"conditioning_scale has 1 value\(s\) for 2"):
        nets(sample, 10, torch.zeros(2, 77, 32), [torch.zeros(2, 3, 64, 64)] * 2, [1.0])
    pipe.register_modules(controlnet=None)


def test_controlnet_in_img2img_and_inpaint_reuses_the_init_image(sd1):
    engine = Engine(sd1)
    init = _image(64, 64, seed=5)
    unit = ControlNetUnit(module="canny", model="tiny-cn-sd1", control_mode="My prompt is more important")
    req = _req(steps=2, denoising_strength=0.6)
    res = engine.img2img(req, [init], save=False, controlnet=[unit])
    assert res.images[0].size == (64, 64) and len(res.control_maps) == 1
    assert "Control Mode: My prompt is more important" in res.infotexts[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    painted = engine.img2img(req, [init], mask=mask, save=False, controlnet=[unit])
    assert painted.images[0].size == (64, 64) and "ControlNet 0" in painted.infotexts[0]
    outside = _arr(painted.images[0])[:8, :8]
    assert np.abs(outside - _arr(init)[:8, :8]).max() <= 1      # kept area untouched
    assert "controlnet:inpaint" in sd1.active.modes and sd1.disk_loads == 1


def test_input_errors(sd1):
    engine = Engine(sd1)
    with pytest.raises(UserError, match="ControlNet 0: no input image"):
        engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(module="canny", model="tiny-cn-sd1")])
    with pytest.raises(UserError, match="ControlNet model 'nope' not found"):
        engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(image=_image(), model="nope")])
    res = engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(image=_image(), module="canny")])
    assert res.notices == ["ControlNet 0: no model chosen; unit skipped"] and not res.control_maps


def test_sdxl_two_layouts_and_architecture_mismatch(make_manager, tiny_controlnets):
    manager = make_manager()
    manager.load("tiny-sdxl.safetensors")
    engine = Engine(manager)
    img = _image()
    with pytest.raises(UserError) as err:
        engine.txt2img(_req(), save=False, controlnet=[ControlNetUnit(image=img, module="canny",
                                                                      model="tiny-cn-sd1")])
    msg = str(err.value)
    assert "tiny-cn-sd1 is for SD 1.x" in msg and "SDXL" in msg and "choose a ControlNet for SDXL" in msg
    units = [ControlNetUnit(image=img, module="canny", model="tiny-cn-sdxl"),                 # label_emb (LDM)
             ControlNetUnit(image=img, module="invert", model="tiny-cn-sdxl-dk", weight=0.5,  # diffusers keys
                            control_mode="ControlNet is more important")]
    res = engine.txt2img(_req(), save=False, controlnet=units)
    assert res.images[0].size == (64, 64) and len(res.control_maps) == 2
    assert "ControlNet 1: " in res.infotexts[0]
    net = manager.controlnets.get(manager.controlnets.registry.find("tiny-cn-sdxl"))
    assert net.config.addition_embed_type == "text_time" and net.add_embedding.linear_1.weight.abs().sum() > 0


def test_broken_controlnet_file_is_a_clear_error(make_manager, tiny_models, tiny_controlnets, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(tiny_models.checkpoints, models / "Stable-diffusion",
                    ignore=shutil.ignore_patterns("*sdxl*", "*sd2*", "*inpaint*", "*diffusers*"))
    (models / "ControlNet").mkdir()
    good = tiny_controlnets / "tiny-cn-sd1.safetensors"
    (models / "ControlNet" / "cut.safetensors").write_bytes(good.read_bytes()[:-4096])
    manager = make_manager(models_dir=models)
    manager.load("tiny-sd1.safetensors")
    titles, note = choices(manager)
    assert titles == ["None"] and "cut.safetensors" in note and "truncated" in note
    with pytest.raises(UserError, match="truncated"):
        Engine(manager).txt2img(_req(), save=False,
                                controlnet=[ControlNetUnit(image=_image(), module="none", model="cut")])


def test_control_modes_as_sd_webui_controlnet():
    """Balanced: full residuals on both CFG halves; prompt more important: soft (0.1 → 1) scales on both;
    ControlNet more important: soft scales, conditional half only."""
    from bench.synth import tiny_controlnet
    from pipelines.controlnet.pipeline import unit_controlnets
    from pipelines.controlnet.units import CONTROL_MODES

    net = tiny_controlnet("sd1", seed=5)
    torch.manual_seed(0)
    sample, hint = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 64, 64)
    context = torch.randn(2, 77, 32)
    out = {}
    for mode in CONTROL_MODES:
        nets = unit_controlnets([net], [mode])
        nets.uncond_in_batch = True
        with torch.no_grad():
            out[mode] = nets(sample, 500, context, [hint], [1.0])
    (bal_down, bal_mid), (soft_down, soft_mid), (ctl_down, ctl_mid) = (out[m] for m in CONTROL_MODES)
    assert all(d[0].abs().sum() > 0 for d in bal_down)                              # uncond half steered
    assert torch.allclose(soft_down[0], bal_down[0] * 0.1, atol=1e-6)               # shallowest: x0.1
    assert torch.allclose(soft_mid, bal_mid, atol=1e-6)                             # middle block: x1
    assert all((d[0] == 0).all() and torch.allclose(d[1], s[1]) for d, s in zip(ctl_down, soft_down))
    assert (ctl_mid[0] == 0).all() and torch.allclose(ctl_mid[1], soft_mid[1])
