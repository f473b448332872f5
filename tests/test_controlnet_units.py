"""ControlNet without models: preprocessors, resize modes, units from the API, infotext round trips."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.controlnet import preprocessors as pp
from pipelines.controlnet.infotext import parse_unit_infotext, unit_infotext, units_from_infotext
from pipelines.controlnet.pipeline import check_lists, pipeline_kwargs
from pipelines.controlnet.units import ControlNetUnit, units_from_api
from pipelines.core.errors import ParameterError, UserError
from pipelines.params.infotext import build_infotext, parse_infotext


def _photo(w: int = 100, h: int = 80, seed: int = 0) -> Image.Image:
    """Smooth shapes + noise: edges for canny, texture for shuffle."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 230, np.uint8)
    img[h // 4: 3 * h // 4, w // 5: w // 2] = (20, 40, 200)
    img[h // 3:, 3 * w // 5:] = (200, 30, 30)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


# ------------------------------------------------------------------------------------ preprocessors

def test_canny_resolution_thresholds_and_binary_output():
    det = pp.run_preprocessor("canny", _photo(), processor_res=64, threshold_a=50, threshold_b=150)
    assert det.image.shape == (64, 80, 3)  # short side (80 → 64) scaled to the resolution
    assert set(np.unique(det.image)) <= {0, 255} and det.image.max() == 255
    strict = pp.run_preprocessor("canny", _photo(), processor_res=64, threshold_a=254, threshold_b=255)
    assert (strict.image > 0).sum() < (det.image > 0).sum()
    assert det.processor_res == 64 and det.module == "canny"


def test_shuffle_shape_and_seeded():
    img = _photo(120, 90)
    a = pp.run_preprocessor("shuffle", img, processor_res=72, annotators=pp.Annotators(seed=1)).image
    b = pp.run_preprocessor("shuffle", img, processor_res=72, annotators=pp.Annotators(seed=1)).image
    c = pp.run_preprocessor("content_shuffle", img, processor_res=72, annotators=pp.Annotators(seed=2)).image
    assert a.shape == (72, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("name,shape", [
    ("none", (80, 100, 3)), ("invert", (80, 100, 3)), ("lineart_standard", (64, 80, 3)),
    ("threshold", (64, 80, 3)), ("tile_resample", (80, 100, 3)), ("blur_gaussian", (64, 80, 3)),
    ("scribble_xdog", (64, 80, 3)),
])
def test_no_weight_preprocessors_run_offline(name, shape):
    det = pp.run_preprocessor(name, _photo(), processor_res=64)
    assert det.image.shape == shape and det.image.dtype == np.uint8
    if name == "invert":
        assert np.array_equal(det.image, 255 - np.asarray(_photo()))


def test_registry_names_aliases_and_sliders():
    names = pp.preprocessor_names()
    assert names[0] == "none" and "canny" in names and "openpose" in names and "depth_midas" in names
    assert pp.get_preprocessor("hed").name == "softedge_hed"
    assert pp.get_preprocessor("invert").name == "invert (from white bg & black line)"
    d = pp.get_preprocessor("canny").describe()
    assert d["threshold_a"]["default"] == 100 and d["threshold_b"]["maximum"] == 255
    assert d["processor_res"]["default"] == 512
    with pytest.raises(UserError, match="unknown ControlNet preprocessor"):
        pp.get_preprocessor("nope")


def test_resize_modes_and_pixel_perfect():
    wide = np.zeros((50, 100, 3), np.uint8)
    wide[:, :50] = 255                      # left half white
    for mode in pp.RESIZE_MODES:
        assert pp.fit_to_size(wide, 64, 64, mode).shape == (64, 64, 3)
    crop = pp.fit_to_size(wide, 64, 64, "Crop and Resize")          # centre crop: half white, half black
    assert crop[:, :8].min() == 255 and crop[:, -8:].max() == 0
    fill = pp.fit_to_size(np.full((50, 100, 3), 7, np.uint8), 64, 64, "Resize and Fill")
    assert (fill == 7).all()                                          # padded with the border colour
    stretched = pp.fit_to_size(wide, 64, 64, "Just Resize")
    assert stretched[:, :30].min() == 255 and stretched[:, 34:].max() == 0
    # sd-webui-controlnet's pixel perfect: 512x768 image (h x w) → 512x512 target
    assert pp.pixel_perfect_resolution(512, 768, 512, 512, "Crop and Resize") == 512
    assert pp.pixel_perfect_resolution(512, 768, 512, 512, "Resize and Fill") == 341
    det = pp.run_preprocessor("canny", _photo(100, 80), target=(160, 128), pixel_perfect=True)
    assert det.processor_res == 128 and det.image.shape[0] == 128


def test_weighted_preprocessor_offline_gives_the_file_and_folder(no_network, tmp_path):
    folder = tmp_path / "models" / "annotators"
    with pytest.raises(UserError) as err:
        pp.run_preprocessor("openpose", _photo(), annotators=pp.Annotators([folder]))
    msg = str(err.value)
    assert "body_pose_model.pth" in msg and "facenet.pth" in msg and str(folder) in msg and "offline" in msg
    assert "lllyasviel/Annotators" in msg


def test_missing_annotator_weights_come_from_the_hub_into_the_annotators_folder(monkeypatch, tmp_path):
    """Through huggingface_hub from lllyasviel/Annotators, with progress; complete files only."""
    import io

    import huggingface_hub

    monkeypatch.setattr(pp, "hub_offline", lambda: False)
    monkeypatch.setattr(pp, "hub_reachable", lambda: None)
    calls, stages = [], []

    def fake_download(repo_id, filename, local_dir, tqdm_class=None, **kw):
        calls.append((repo_id, filename))
        bar = tqdm_class(total=4, file=io.StringIO())
        bar.update(4)
        (local_dir / filename).write_bytes(b"wts!")
        return str(local_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    folder = tmp_path / "annotators"
    (folder).mkdir()
    (folder / "facenet.pth").write_bytes(b"here")       # present already: not fetched again
    annotators = pp.Annotators([folder], progress=lambda s, f: stages.append((s, f)))
    assert annotators.ensure(("body_pose_model.pth", "facenet.pth"), "openpose") == folder
    assert calls == [("lllyasviel/Annotators", "body_pose_model.pth")]
    assert (folder / "body_pose_model.pth").read_bytes() == b"wts!" and (folder / "facenet.pth").read_bytes() == b"here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotators"]     # no download folder left behind
    assert stages and stages[-1][1] == 1.0 and "body_pose_model.pth" in stages[-1][0]


def test_weighted_preprocessor_download_failure_is_a_user_error(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(pp, "hub_offline", lambda: False)
    monkeypatch.setattr(pp, "hub_reachable", lambda: None)

    def refuse(repo_id, filename, local_dir, **kw):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    folder = tmp_path / "annotators"
    with pytest.raises(UserError, match="mlsd_large_512_fp32.pth.*lllyasviel/Annotators.*blocked") as err:
        pp.run_preprocessor("mlsd", _photo(), annotators=pp.Annotators([folder]))
    assert str(folder) in str(err.value)                      # where to put the file by hand
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing half-written
    monkeypatch.setattr(pp, "hub_reachable", lambda: "cannot reach huggingface.co: [Errno 101]")
    with pytest.raises(UserError, match="mlsd_large_512_fp32.pth.*cannot reach huggingface.co"):
        pp.run_preprocessor("mlsd", _photo(), annotators=pp.Annotators([folder]))


def test_weighted_preprocessor_loads_local_annotator_weights(tmp_path):
    """HED with random weights written where the user puts real ones (an A1111-style subfolder)."""
    import warnings

    import torch

    with warnings.catch_warnings():   # controlnet_aux warns about optional extras (mediapipe, timm names)
        warnings.simplefilter("ignore")
        from controlnet_aux.hed import ControlNetHED_Apache2

    sub = tmp_path / "annotators" / "hed"
    sub.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(ControlNetHED_Apache2().state_dict(), sub / "ControlNetHED.pth")
    ann = pp.Annotators([tmp_path / "annotators"])
    det = pp.run_preprocessor("softedge_hed", _photo(), processor_res=64, annotators=ann)
    assert det.image.shape == (64, 64, 3)  # controlnet_aux rounds to multiples of 64
    assert ann.locate(("ControlNetHED.pth",)) == sub


# ------------------------------------------------------------------------------------ units

def test_units_from_api_formats_and_defaults():
    decoded = []

    def decode(b64: str):
        decoded.append(b64)
        return _photo()

    units = units_from_api([
        {"input_image": "AAAA", "module": "canny", "model": "control_v11p_sd15_canny [d14c016b]", "weight": 0.8,
         "resize_mode": 2, "control_mode": 1, "processor_res": 256, "threshold_a": 64, "threshold_b": -1,
         "guidance": 0.7, "lowvram": False, "pixel_perfect": "true"},
        {"image": {"image": "BBBB", "mask": None}, "module": "depth", "model": "x", "guessmode": True,
         "resize_mode": "Inner Fit (Scale to Fit)", "enabled": False},
        {"module": "none", "model": "None", "control_mode": "ControlNet is more important"},
    ], decode_image=decode)
    a, b, c = units
    assert decoded == ["AAAA", "BBBB"]
    assert a.enabled and a.module == "canny" and a.weight == 0.8 and a.resize_mode == "Resize and Fill"
    assert a.control_mode == "My prompt is more important" and a.guidance_end == 0.7 and a.pixel_perfect
    assert (a.processor_res, a.threshold_a, a.threshold_b) == (256, 64, 200)  # -1 → the slider default
    assert b.module == "depth_midas" and b.control_mode == "ControlNet is more important" and not b.enabled
    assert b.resize_mode == "Crop and Resize"
    assert c.image is None and c.control_mode == "ControlNet is more important" and not c.has_model


@pytest.mark.parametrize("unit,field", [
    ({"weight": 3}, "controlnet[0].weight"),
    ({"weight": "heavy"}, "controlnet[0].weight"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "controlnet[0].guidance_start"),
    ({"module": "canny", "threshold_a": 999}, "controlnet[0].threshold_a"),
    ({"module": "nope"}, "controlnet[0].module"),
    ({"resize_mode": 7}, "controlnet[0].resize_mode"),
    ({"control_mode": "loud"}, "controlnet[0].control_mode"),
    ({"wieght": 1}, "controlnet[0].wieght"),
    ({"image": "AAAA"}, "controlnet[0].image"),       # base64 without a decoder
])
def test_units_from_api_errors_name_the_field(unit, field):
    with pytest.raises(ParameterError) as err:
        units_from_api([unit])
    assert err.value.field == field


def test_infotext_round_trip():
    units = [
        ControlNetUnit(module="canny", model="control_v11p_sd15_canny", weight=0.75, threshold_a=80,
                       guidance_end=0.9, pixel_perfect=True).checked(0),
        ControlNetUnit(enabled=False),
        ControlNetUnit(module="shuffle", model="cn-b", resize_mode="Resize and Fill",
                       control_mode="ControlNet is more important", guidance_start=0.1).checked(2),
    ]
    line = {"Steps": 20, "Seed": 1}
    line.update({f"ControlNet {i}": unit_infotext(u, f"{u.model} [d14c016b]") for i, u in enumerate(units)
                 if u.enabled})
    text = build_infotext("a cat", "", line)
    assert ('ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.75, Resize Mode: '
            'Crop and Resize, Processor Res: 512, Threshold A: 80.0, Threshold B: 200.0, Guidance Start: 0.0, '
            'Guidance End: 0.9, Pixel Perfect: True, Control Mode: Balanced"') in text
    back = units_from_infotext(parse_infotext(text).params)
    assert len(back) == 3 and not back[1].enabled
    for orig, got in ((units[0], back[0]), (units[2], back[2])):
        for f in ("module", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                  "guidance_start", "guidance_end", "pixel_perfect", "control_mode"):
            assert getattr(got, f) == getattr(orig, f), f
        assert got.model == f"{orig.model} [d14c016b]" and got.enabled


def test_infotext_legacy_format_and_extension_text():
    legacy = parse_unit_infotext("preprocessor: canny, model: control_sd15_canny [fef5e48e], weight: 1, "
                                 "starting/ending: (0, 0.8), resize mode: Crop and Resize, pixel perfect: False, "
                                 "control mode: Balanced, preprocessor params: (512, 100, 200)")
    assert (legacy.module, legacy.model, legacy.guidance_end, legacy.threshold_b) == \
        ("canny", "control_sd15_canny [fef5e48e]", 0.8, 200)
    older = parse_unit_infotext("Module: depth, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1, Resize Mode: "
                                "Crop and Resize, Low Vram: False, Processor Res: 384, Guidance Start: 0, Guidance End: "
                                "1, Pixel Perfect: True, Control Mode: My prompt is more important, Save Detected Map: True")
    assert older.module == "depth_midas" and older.processor_res == 384 and older.control_mode == "My prompt is more important"


def test_check_lists_refuses_short_lists():
    check_lists(2, a=[1, 2], b=(3, 4))
    with pytest.raises(UserError, match=r"controlnet_conditioning_scale has 1 value\(s\) for 2 ControlNet unit"):
        check_lists(2, controlnet_conditioning_scale=[1.0])
    with pytest.raises(UserError, match="must be a list"):
        check_lists(2, control_guidance_start=0.0)

    class FakeNets:
        nets = [object(), object()]

    class FakePipe:
        controlnet = FakeNets()

        def __call__(self, image=None, controlnet_conditioning_scale=None):
            pass

    ok = pipeline_kwargs(FakePipe(), ["a", "b"], [1.0, 0.5], [0.0, 0.0], [1.0, 0.5])
    assert ok["image"] == ["a", "b"] and ok["controlnet_conditioning_scale"] == [1.0, 0.5]
    for bad in (dict(scales=[1.0]), dict(starts=[0.0]), dict(ends=[1.0, 1.0, 1.0]), dict(images=["a"])):
        args = dict(images=["a", "b"], scales=[1.0, 1.0], starts=[0.0, 0.0], ends=[1.0, 1.0])
        args.update(bad)
        with pytest.raises(UserError, match="for 2 ControlNet unit"):
            pipeline_kwargs(FakePipe(), **args)
    with pytest.raises(UserError, match="guidance start"):
        pipeline_kwargs(FakePipe(), ["a", "b"], [1.0, 1.0], [0.5, 0.0], [0.5, 1.0])
