"""Upscaler models (pipelines.upscale): A1111's folders and names, spandrel detection of files written in their
original layouts, loading without pickled code, tiles equal to one pass away from the seams, A1111's
upscale rules, hires fix with a model upscaler, and the Extras postprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.synth import upscalers as synth
from pipelines.core.errors import ModelLoadError, ParameterError
from pipelines.upscale import Upscalers, dest_size, extras, models, tiles


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """This app's models/ (one ESRGAN file, a safetensors copy) and an A1111 --models-dir (Real-ESRGAN, SwinIR)."""
    root = tmp_path_factory.mktemp("upscalers")
    own, a1111 = root / "models", root / "a1111" / "models"
    synth.esrgan_old_arch(own / "ESRGAN" / "4x-Tiny.pth")
    synth.realesrgan_x4plus(a1111 / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    synth.swinir(a1111 / "SwinIR" / "sub" / "2x-TinySwin.pth", scale=2)
    synth.safetensors_copy(a1111 / "RealESRGAN" / "RealESRGAN_x4plus.pth", own / "ESRGAN" / "4x-Tiny-st.safetensors")
    return own, a1111


@pytest.fixture(scope="module")
def ups(model_dirs):
    return Upscalers(model_dirs)


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.random((h // 4 + 1, w // 4 + 1, 3))
    return Image.fromarray((smooth * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)


def test_listing_names_and_folders_as_a1111(ups, model_dirs):
    own, a1111 = model_dirs
    rows = {e.name: e for e in ups.entries()}
    assert [e.name for e in ups.entries()][:3] == ["None", "Lanczos", "Nearest"]
    # the release file takes A1111's name; community files their file name; --models-dir folders count
    assert rows["R-ESRGAN 4x+"].model_path == str(a1111 / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    assert rows["4x-Tiny"].model_path == str(own / "ESRGAN" / "4x-Tiny.pth") and rows["4x-Tiny"].scale == 4
    assert rows["2x-TinySwin"].scale == 2 and rows["4x-Tiny-st"].model_name == "ESRGAN_4x"
    # A1111 lists its default Real-ESRGAN models before they are downloaded, with their URL
    assert rows["R-ESRGAN 4x+ Anime6B"].model_path.startswith("https://github.com/xinntao/Real-ESRGAN/")
    names = ups.hires_names()
    assert names[:6] == ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                         "Latent (nearest)", "Latent (nearest-exact)"]
    assert "4x-Tiny" in names
    with pytest.raises(ParameterError, match="upscaler_1.*not found"):
        ups.find("no-such-model", "upscaler_1")


@pytest.mark.parametrize("name, arch, scale", [("4x-Tiny", "ESRGAN", 4), ("R-ESRGAN 4x+", "ESRGAN", 4),
                                               ("2x-TinySwin", "SwinIR", 2), ("4x-Tiny-st", "ESRGAN", 4)])
def test_spandrel_detects_the_original_layouts(ups, name, arch, scale):
    descriptor = ups.load(ups.find(name).model)
    assert (descriptor.architecture.name, descriptor.scale) == (arch, scale)
    out = ups.model_pass(noise_image(24, 16), ups.find(name).model, tile=0)
    assert out.size == (24 * scale, 16 * scale)


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "ESRGAN" / "4x-evil.pth"
    path.parent.mkdir()
    torch.save({"model.0.weight": torch.zeros(1), "x": Evil()}, path)
    evil = Upscalers([tmp_path]).find("4x-evil").model
    with pytest.raises(ModelLoadError, match="pickled code"):
        models.load_descriptor(evil.path)
    assert not marker.exists()


def test_tiles_equal_one_pass_away_from_the_seams(ups):
    descriptor = ups.load(ups.find("4x-Tiny").model)
    x = tiles.to_tensor(noise_image(100, 72, seed=3), torch.float32, "cpu")
    whole = tiles.run_tiled(descriptor, x, 4, 0, 0)
    calls = []
    tiled = tiles.run_tiled(descriptor, x, 4, 48, 16, on_tile=lambda d, t: calls.append((d, t)))
    assert tiled.shape == whole.shape == (1, 3, 288, 400)
    assert calls[-1] == (6, 6)      # 3 x 2 tiles, each reported
    diff = (tiled - whole).abs()[0].amax(0)
    # tile edges in input pixels (x: 0-48, 32-80, 52-100; y: 0-48, 24-72): mask bands of 12 px around them
    band = torch.zeros(72, 100, dtype=torch.bool)
    for e in (32, 48, 52, 80):
        band[:, max(0, e - 12):e + 12] = True
    for e in (24, 48):
        band[max(0, e - 12):e + 12, :] = True
    far = ~band.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert far.float().mean() > 0.1
    assert diff[far].max() < 2 / 255
    assert diff.max() < 0.25  # near the seams the blend differs a little, never wildly


def test_tile_size_follows_the_option_and_free_memory():
    assert tiles.choose_tile(192, 512, 512, 4, 4, free=64 * 2**30) == 192
    assert tiles.choose_tile(0, 512, 512, 4, 4, free=64 * 2**30) == 0          # 0: one pass, it fits
    short = tiles.choose_tile(0, 512, 512, 4, 4, free=256 * 2**20)
    assert 0 < short < 512 and tiles.pass_bytes(short, short, 4, 4) <= 256 * 2**20
    assert tiles.choose_tile(192, 512, 512, 4, 4, free=256 * 2**20) == min(192, short)


def test_upscale_rules_as_a1111(ups):
    image = noise_image(36, 20)
    assert dest_size(36, 20, 2) == (72, 40)
    assert ups.upscale(image, 2, "4x-Tiny").size == (72, 40)          # one 4x pass, Lanczos down to 2x
    assert ups.upscale(image, 3, "Lanczos").size == (104, 56)          # rounded down to multiples of 8
    assert ups.upscale(image, 3, "None") is image
    assert ups.upscale(noise_image(16, 16), 8, "2x-TinySwin").size == (128, 128)   # three 2x passes
    assert ups.resize(image, 100, 60, "4x-Tiny").size == (100, 60)


def test_extras_scale_to_with_crop_and_second_upscaler(ups, tmp_path):
    image = noise_image(32, 24)
    req = extras.ExtrasRequest(resize_mode=1, upscaling_resize_w=96, upscaling_resize_h=96, upscaling_crop=True,
                               upscaler_1="4x-Tiny", upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)
    out, info = extras.postprocess(image, req, ups)
    assert out.size == (96, 96)
    assert extras.postprocessing_text(info) == ("Postprocess upscale to: 96x96, Postprocess crop to fit: True, Postprocess "
                                                "upscaler: 4x-Tiny, Postprocess upscaler 2: Lanczos, "
                                                "Postprocess upscaler 2 visibility: 0.5")
    first, _ = extras.postprocess(image, extras.ExtrasRequest(**{**vars(req), "extras_upscaler_2_visibility": 0}), ups)
    second, _ = extras.postprocess(image, extras.ExtrasRequest(**{**vars(req), "upscaler_1": "Lanczos",
                                                                   "extras_upscaler_2_visibility": 0}), ups)
    blend = (np.asarray(first, float) + np.asarray(second, float)) / 2
    assert np.abs(np.asarray(out, float) - blend).max() <= 1
    with pytest.raises(ParameterError, match="upscaling_resize"):
        extras.postprocess(image, extras.ExtrasRequest(upscaling_resize=0), ups)


def test_extras_folder_batch_resumes_and_reports_bad_files(ups, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    noise_image(16, 16).save(src / "a.png", pnginfo=_parameters("a cat\nSteps: 2, Seed: 7"))
    noise_image(16, 8).save(src / "b.jpg")
    (src / "c.png").write_bytes(b"not an image")
    req = extras.ExtrasRequest(upscaling_resize=2, upscaler_1="4x-Tiny")
    result = extras.run_folder(src, out, req, ups)
    assert sorted(p.name for p in result.paths) == ["a.png", "b.png"]
    assert [name for name, _ in result.errors] == ["c.png"]
    assert Image.open(out / "b.png").size == (32, 16)
    assert Image.open(out / "a.png").info["parameters"] == (
        "a cat\nSteps: 2, Seed: 7, Postprocess upscale by: 2, Postprocess upscaler: 4x-Tiny")
    again = extras.run_folder(src, out, req, ups)
    assert again.skipped_existing == ["a.png", "b.jpg"] and again.paths == []
    assert not list(out.glob(".*"))    # no temporary files left


def _parameters(text: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info


def test_hires_fix_with_a_model_upscaler(tiny_models, model_dirs, tmp_path):
    from pipelines.core.devices import make_policy
    from pipelines.generate.engine import Engine
    from pipelines.models.files import ModelPaths, ModelRegistry
    from pipelines.models.manager import PipelineManager
    from pipelines.params.declarations import make_request

    paths = ModelPaths(tiny_models.models, extra_models_dirs=[model_dirs[1]], cache_dir=tmp_path / "cache")
    manager = PipelineManager(ModelRegistry(paths), policy=make_policy("cpu", "fp32"), config_root=tiny_models.configs)
    manager.load("tiny-sd1")
    engine = Engine(manager)
    seen = []
    original = engine.upscalers.model_pass
    engine.upscalers.model_pass = lambda image, model, **kw: seen.append((image.size, model.name)) or original(
        image, model, **kw)
    req = make_request(prompt="a cat", steps=1, seed=1, width=64, height=64, enable_hr=True, hr_scale=1.5,
                       hr_upscaler="R-ESRGAN 4x+", hr_second_pass_steps=1, denoising_strength=0.5)
    result = engine.txt2img(req, save=False)
    assert result.images[0].size == (96, 96)
    assert seen == [((64, 64), "R-ESRGAN 4x+")]
    assert "Hires upscaler: R-ESRGAN 4x+" in result.infotexts[0]
