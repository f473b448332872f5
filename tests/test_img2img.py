"""img2img / inpainting end to end on the tiny models (64x64, 2-4 steps): resize modes, the unmasked area
kept exactly for regular and 9-channel checkpoints, "only masked", denoising 0, steps run and progress,
seeds, infotext round trip and saved files, bad inputs, batch folders."""
from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.images import inputs as ii
from pipelines.core.errors import UserError
from pipelines.generate.engine import Engine
from pipelines.generate.sampling import encode_images
from pipelines.images.metadata import read_infotext
from pipelines.params.infotext import parse_infotext
from pipelines.core.jobs import JobControl
from pipelines.images.outputs import OutputSaver
from pipelines.params.declarations import make_request, request_values_from_infotext

from conftest import FILES

SIZE = 64


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory):
    """One manager for the module: sd1 and its inpainting variant stay cached (switching reads no file)."""
    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    from bench.synth import tiny_controlnet, write_controlnet

    tmp = tmp_path_factory.mktemp("img2img")
    write_controlnet(tiny_controlnet("sd1", seed=2), tmp / "models" / "ControlNet" / "tiny-cn", layout="diffusers")
    paths = ModelPaths(tmp / "models", extra_models_dirs=[tiny_models.models], cache_dir=tmp / "cache")
    manager = PipelineManager(ModelRegistry(paths, hashing=False), policy=make_policy("cpu", "fp32"),
                              cache_size=2, config_root=tiny_models.configs)
    return Engine(manager, OutputSaver(tmp / "outputs"))


def _use(engine, arch: str) -> Engine:
    engine.manager.load(FILES[arch])
    return engine


def _req(**kw):
    values = dict(prompt="a red fox", steps=4, width=SIZE, height=SIZE, seed=11, sampler_name="Euler",
                  denoising_strength=0.75, cfg_scale=5)
    values.update(kw)
    return make_request(values)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _box_mask(size, box) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


class _Calls:
    """Counts UNet evaluations (one per sampler step with CFG batched)."""

    def __init__(self, monkeypatch, unet):
        self.n = 0
        forward = unet.forward

        def counting(*a, **k):
            self.n += 1
            return forward(*a, **k)

        monkeypatch.setattr(unet, "forward", counting)


# ------------------------------------------------------------------------------------------ img2img


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_each_resize_mode_gives_the_requested_size(engine, mode):
    _use(engine, "sd1")
    result = engine.img2img(_req(resize_mode=mode, width=64, height=96, steps=2, denoising_strength=0.5),
                            [_image(100, 40)], save=False)
    assert [im.size for im in result.images] == [(64, 96)]
    assert result.steps_run == 2   # A1111: t_enc + 1 = int(0.5 x 2) + 1
    assert "Resize mode: " + ii.RESIZE_MODES[mode] in result.infotexts[0] or mode == 0


def test_steps_run_is_a1111s_t_enc_plus_one_and_progress_shows_both(engine, monkeypatch):
    _use(engine, "sd1")
    calls = _Calls(monkeypatch, engine.manager.pipeline("img2img").unet)
    control, texts = JobControl(), []
    update = control.update
    monkeypatch.setattr(control, "update", lambda **c: (texts.append(c.get("text")), update(**c)))
    result = engine.img2img(_req(steps=4, denoising_strength=0.5), _image(64, 64), control=control, save=False)
    assert result.steps_run == 3 and calls.n == 3   # A1111: t_enc = int(0.5 x 4), t_enc + 1 steps
    assert any(t and "3 of 4 steps" in t and "step 3/3" in t for t in texts), texts
    assert control.snapshot().fraction == 1.0


def test_denoising_zero_returns_the_vae_round_trip_without_sampling(engine, monkeypatch):
    _use(engine, "sd1")
    pipe = engine.manager.pipeline("img2img")
    calls = _Calls(monkeypatch, pipe.unet)
    init = _image(64, 64, 3)
    result = engine.img2img(_req(denoising_strength=0.0), init, save=False)
    assert calls.n == 0 and result.steps_run == 0 and not result.notices
    round_trip = engine.decode(pipe, encode_images(pipe, [init]))[0]
    assert np.abs(_arr(result.images[0]) - _arr(round_trip)).max() <= 1
    # strength above 0 but below one step of a diffusers sampler: the same, with a notice saying so (A1111's
    # k-diffusion samplers run t_enc + 1 = 1 step there)
    result = engine.img2img(_req(denoising_strength=0.1, steps=4, sampler_name="DDIM"), init, save=False)
    assert calls.n == 0 and any("less than one step" in n for n in result.notices)


def test_seeds_and_variation_seeds_reach_the_img2img_noise(engine):
    _use(engine, "sd1")
    init = _image(64, 64, 4)
    a = engine.img2img(_req(seed=5), init, save=False).images[0]
    b = engine.img2img(_req(seed=5), init, save=False).images[0]
    c = engine.img2img(_req(seed=6), init, save=False).images[0]
    v = engine.img2img(_req(seed=5, subseed=9, subseed_strength=0.5), init, save=False)
    assert np.array_equal(_arr(a), _arr(b))
    assert not np.array_equal(_arr(a), _arr(c))
    assert not np.array_equal(_arr(a), _arr(v.images[0]))      # the variation seed is used
    assert "Variation seed: 9" in v.infotexts[0]
    batch = engine.img2img(_req(seed=5, batch_size=2, steps=2), init, save=False)
    single = engine.img2img(_req(seed=5, steps=2), init, save=False).images[0]
    assert batch.seeds == [5, 6]  # image 0 of the batch is the seed-5 image (up to batched float rounding)
    assert np.abs(_arr(batch.images[0]) - _arr(single)).max() <= 2


# ------------------------------------------------------------------------------------------ inpainting


@pytest.mark.parametrize("arch", ["sd1", "sd1_inpaint"])
@pytest.mark.parametrize("fill", [1, 2])
def test_inpainting_keeps_pixels_outside_the_mask(engine, arch, fill):
    _use(engine, arch)
    init = _image(64, 64, 5)
    box = (16, 20, 44, 48)
    mask = _box_mask(init.size, box)
    result = engine.img2img(_req(mask_blur=0, inpainting_fill=fill, steps=2), init, mask, save=False)
    out, src = _arr(result.images[0]), _arr(init)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])
    assert np.abs(out[~outside] - src[~outside]).mean() > 10     # the masked area was repainted
    # with a blur, pixels beyond the blur's reach are still exact
    blurred = engine.img2img(_req(mask_blur=4, inpainting_fill=fill, denoising_strength=1.0, steps=2), init, mask,
                             save=False)
    # A1111's kernel for blur 4 is 2*int(2.5*4+0.5)+1 = 21 wide: the blur reaches 10 px past the box
    # (worked out here, not by calling blur_mask: the expectation must not come from the code under test)
    reach = np.ones(mask.size[::-1], bool)
    reach[box[1] - 10:box[3] + 10, box[0] - 10:box[2] + 10] = False
    assert np.array_equal(_arr(blurred.images[0])[reach], src[reach])
    assert "Mask blur: 4" in blurred.infotexts[0]


def test_nine_channel_checkpoint_runs_plain_img2img_too(engine):
    _use(engine, "sd1_inpaint")
    result = engine.img2img(_req(steps=2), _image(80, 48), save=False)
    assert result.images[0].size == (SIZE, SIZE) and result.steps_run == 2   # int(0.75 x 2) + 1


@pytest.mark.parametrize("arch", ["sd1", "sd1_inpaint"])
def test_only_masked_crops_and_pastes_back_in_place(engine, arch):
    _use(engine, arch)
    init = _image(160, 128, 6)
    mask = _box_mask(init.size, (100, 30, 124, 54))
    req = _req(inpaint_full_res=True, inpaint_full_res_padding=8, mask_blur=2)
    result = engine.img2img(req, init, mask, save=False)
    out, src = _arr(result.images[0]), _arr(init)
    assert result.images[0].size == init.size                   # the output keeps the original's size
    # worked out by hand as A1111 does it: blur 2 reaches int(2.5*2+0.5) = 5 px -> (95, 25, 129, 59),
    # + padding 8 -> (87, 17, 137, 67), 50x50 is already the target's 1:1 aspect, so no growth
    x1, y1, x2, y2 = 87, 17, 137, 67
    outside_crop = np.ones(out.shape[:2], bool)
    outside_crop[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside_crop], src[outside_crop])
    inside = np.asarray(mask) > 0
    assert np.abs(out[inside] - src[inside]).mean() > 10
    assert "Inpaint area: Only masked, Masked area padding: 8" in result.infotexts[0]


def test_inpaint_params_round_trip_through_infotext_and_the_saved_file(engine):
    _use(engine, "sd1")
    req = _req(resize_mode=2, mask_blur=6, inpainting_fill=0, inpaint_full_res=True, inpaint_full_res_padding=16,
               inpainting_mask_invert=1, denoising_strength=0.6, steps=3)
    init = _image(96, 64, 7)
    result = engine.img2img(req, init, _box_mask(init.size, (0, 0, 40, 64)), save=True)
    text = result.infotexts[0]
    for part in ("Denoising strength: 0.6", "Resize mode: Resize and fill", "Mask mode: Inpaint not masked",
                 "Mask blur: 6", "Inpaint area: Only masked", "Masked area padding: 16", "Masked content: fill"):
        assert part in text, (part, text)
    path = result.paths[0]
    assert path.parent == engine.saver.root / "img2img-images" / datetime.now().strftime("%Y-%m-%d")
    assert read_infotext(path)[0] == text
    parsed = parse_infotext(text)
    known, unknown = request_values_from_infotext(parsed.params)
    back = make_request(dict(known, prompt=parsed.prompt, negative_prompt=parsed.negative_prompt))
    assert back == req.replace(sd_model_checkpoint="tiny-sd1"), unknown
    # plain img2img writes no mask keys; a default denoising strength is still written (A1111)
    plain = engine.img2img(_req(mask_blur=6, denoising_strength=0.7, steps=2), init, save=False).infotexts[0]
    assert "Denoising strength: 0.7" in plain and "Mask" not in plain and "Inpaint" not in plain


@pytest.mark.parametrize("with_mask", [False, True])
def test_controlnet_steers_img2img_and_inpainting_from_the_init_image(engine, with_mask):
    from pipelines.controlnet.units import ControlNetUnit

    _use(engine, "sd1")
    init = _image(64, 64, 9)
    mask = _box_mask(init.size, (16, 16, 48, 48)) if with_mask else None
    req = _req(steps=2, mask_blur=0, inpainting_fill=2)
    plain = engine.img2img(req, init, mask, save=False)
    unit = ControlNetUnit(module="none", model="tiny-cn")      # no image of its own: the init image
    steered = engine.img2img(req, init, mask, save=False, controlnet=[unit])
    assert "ControlNet 0: " in steered.infotexts[0] and steered.control_maps
    assert not np.array_equal(_arr(plain.images[0]), _arr(steered.images[0]))
    if with_mask:
        outside = np.asarray(mask) == 0
        assert np.array_equal(_arr(steered.images[0])[outside], _arr(init)[outside])
        assert any("latent noise" in n and "ControlNet" in n for n in steered.notices)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_end_to_end(engine):
    _use(engine, "sd1")
    with pytest.raises(UserError, match="not an image"):
        engine.img2img(_req(), b"GIF89a but not really")
    with pytest.raises(UserError, match="needs an init image"):
        engine.img2img(_req(), [])
    with pytest.raises(UserError, match="batch size"):
        engine.img2img(_req(batch_size=1), [_image(64, 64), _image(64, 64, 1)])
    buf = io.BytesIO()
    Image.new("CMYK", (80, 64), (0, 200, 200, 0)).save(buf, format="JPEG")
    mask = _box_mask((40, 32), (10, 10, 20, 20))                  # half the image's size
    result = engine.img2img(_req(steps=2, mask_blur=0), buf.getvalue(), mask, save=False)
    assert result.images[0].size == (SIZE, SIZE)
    assert any("mask is 40x32" in n and "80x64" in n for n in result.notices), result.notices
    # two init images: one per batch image
    two = engine.img2img(_req(batch_size=2, steps=2), [_image(64, 64), _image(64, 64, 1)], save=False)
    assert len(two.images) == 2


# ------------------------------------------------------------------------------------------ batch


def _write_inputs(folder: Path) -> None:
    folder.mkdir()
    _image(64, 64, 1).save(folder / "a.png")
    _image(80, 64, 2).save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")


def test_batch_folder_is_resumable_and_reports_bad_files(engine, tmp_path, monkeypatch):
    _use(engine, "sd1")
    inputs, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    _write_inputs(inputs)
    masks.mkdir()
    _box_mask((64, 64), (8, 8, 30, 30)).save(masks / "a.png")
    _box_mask((64, 64), (0, 0, 64, 64)).save(masks / "broken.png")   # by name; b.jpg has none
    control, fractions = JobControl(), []
    update = control.update
    monkeypatch.setattr(control, "update", lambda **c: (fractions.append(c.get("fraction")), update(**c)))
    req = _req(steps=2, mask_blur=0)
    result = engine.img2img_batch(req, inputs, out, masks, control)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert result.processed == ["a.png", "b.jpg"] and result.total == 3
    assert [name for name, _ in result.errors] == ["broken.png"] and "not an image" in result.errors[0][1]
    assert any("b.jpg: no mask" in n for n in result.notices)
    seen = [f for f in fractions if f is not None]
    assert seen == sorted(seen) and seen[-1] == 1.0                 # one progress bar over the whole batch
    a = _arr(Image.open(out / "a.png"))
    outside = np.asarray(_box_mask((64, 64), (8, 8, 30, 30))) == 0
    assert np.array_equal(a[outside], _arr(Image.open(inputs / "a.png"))[outside])   # a's mask was used
    assert "Mask blur" not in read_infotext(out / "b.png")[0] and read_infotext(out / "a.png")[0]
    # run again: everything done is skipped, nothing is sampled
    calls = _Calls(monkeypatch, engine.manager.pipeline("inpaint").unet)
    again = engine.img2img_batch(req, inputs, out, masks)
    assert again.skipped_existing == ["a.png", "b.jpg"] and again.outputs == [] and calls.n == 0
    # a lost output is redone, and only that one
    (out / "b.png").unlink()
    third = engine.img2img_batch(req, inputs, out, masks)
    assert third.processed == ["b.jpg"] and third.skipped_existing == ["a.png"] and (out / "b.png").exists()
    with pytest.raises(UserError, match="output folder is the input folder"):
        engine.img2img_batch(req, inputs, inputs)
    with pytest.raises(UserError, match="not a folder"):
        engine.img2img_batch(req, tmp_path / "missing", out)


def test_sdxl_img2img_and_inpainting(engine):
    _use(engine, "sdxl")
    init = _image(96, 64, 8)
    mask = _box_mask(init.size, (30, 10, 70, 50))
    result = engine.img2img(_req(steps=2, resize_mode=1), init, save=False)
    assert result.images[0].size == (SIZE, SIZE)
    inpainted = engine.img2img(_req(steps=2, mask_blur=0, width=96, height=64), init, mask, save=False)
    out, src = _arr(inpainted.images[0]), _arr(init)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside]) and np.abs(out[~outside] - src[~outside]).mean() > 10
