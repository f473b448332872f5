"""The upscaler routes through A1111's client (webuiapi): /upscalers, /extra-single-image, /extra-batch-images,
the ESRGAN_tile options, and errors that name the field; plus the Extras tab's handler."""
from __future__ import annotations

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from bench.synth import upscalers as synth


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from webui.app.auth import access_control
    from webui.app.cli import parse_args
    from webui.app.server import create_app, start_server
    from webui.app.services import create_services
    from tests.helpers.app import free_port

    data = tmp_path_factory.mktemp("extras")
    synth.esrgan_old_arch(data / "models" / "ESRGAN" / "4x-Tiny.pth")
    synth.realesrgan_x4plus(data / "a1111" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    args = parse_args(["--data-dir", str(data), "--outdir", str(data / "outputs"), "--precision", "fp32", "--device",
                       "cpu", "--models-dir", str(data / "a1111"), "--api", "--nowebui"])
    services = create_services(args)
    app = create_app(services, access_control(args), None, api=True)
    port = free_port()
    running = start_server(app, "127.0.0.1", port)
    try:
        yield port, services, data
    finally:
        running.stop()
        services.close()


def image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def test_upscalers_listed_as_a1111(server):
    port, _services, data = server
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    rows = {u["name"]: u for u in api.get_upscalers()}
    assert list(rows)[:3] == ["None", "Lanczos", "Nearest"]
    assert rows["4x-Tiny"] == {"name": "4x-Tiny", "model_name": "ESRGAN_4x",
                               "model_path": str(data / "models" / "ESRGAN" / "4x-Tiny.pth"), "model_url": None,
                               "scale": 4.0}
    assert rows["R-ESRGAN 4x+"]["model_path"] == str(data / "a1111" / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    assert [m["name"] for m in api.get_latent_upscale_modes()][:2] == ["Latent", "Latent (antialiased)"]


def test_extra_single_and_batch_through_webuiapi(server):
    port, services, data = server
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    # tiles of 16 px with the options store's values reach the model passes
    api.set_options({"ESRGAN_tile": 16, "ESRGAN_tile_overlap": 4})
    seen = []
    original = services.engine.upscalers.model_pass
    services.engine.upscalers.model_pass = lambda im, m, **kw: seen.append(services.engine.upscalers.tile_options()) \
        or original(im, m, **kw)
    try:
        r = api.extra_single_image(image(40, 24), upscaler_1="4x-Tiny", upscaling_resize=2)
        assert r.image.size == (80, 48)
        assert r.info == "<p>Postprocess upscale by: 2, Postprocess upscaler: 4x-Tiny</p>"
        assert seen == [(16, 4)]
        r = api.extra_batch_images([image(16, 16), image(24, 16, 1)], resize_mode=1, upscaling_resize_w=40,
                                   upscaling_resize_h=40, upscaling_crop=True, upscaler_1="R-ESRGAN 4x+",
                                   upscaler_2="Lanczos", extras_upscaler_2_visibility=0.3)
        assert [im.size for im in r.images] == [(40, 40), (40, 40)]
    finally:
        services.engine.upscalers.model_pass = original
    assert not (data / "outputs").exists()   # as A1111, the API returns images and saves none


def test_extras_errors_name_the_field(server):
    port, _services, _data = server
    base = f"http://127.0.0.1:{port}/sdapi/v1"
    r = requests.post(base + "/extra-single-image", json={"image": "", "upscaler_1": "Lanczos"}, timeout=60)
    assert r.status_code == 422 and "image" in str(r.json()["detail"])
    png = webuiapi.raw_b64_img(image(8, 8))
    r = requests.post(base + "/extra-single-image", json={"image": png, "upscaler_1": "nope"}, timeout=60)
    assert r.status_code == 422 and "upscaler_1" in str(r.json()["detail"])
    r = requests.post(base + "/extra-single-image", json={"image": png, "codeformer_visibility": 1}, timeout=60)
    assert r.status_code == 422 and "codeformer_visibility" in str(r.json()["detail"])
    r = requests.post(base + "/extra-single-image", json={"image": png, "upscaling_resize": 20}, timeout=60)
    assert r.status_code == 422 and "upscaling_resize" in str(r.json()["detail"])


def test_extras_tab_saves_with_postprocessing_parameters(server):
    gr = pytest.importorskip("gradio")
    from webui.app.auth import AccessControl
    from webui.ui.blocks import build_ui
    from conftest import drain

    _port, services, data = server
    tab = build_ui(services, AccessControl()).ui_context.tab_objects["extras"]
    assert "4x-Tiny" in [value for _label, value in tab.upscaler_1.choices]
    source = image(24, 16)
    out = drain(tab.run("single", source, None, "", "", True, 1, 2.0, 64, 64, True, "4x-Tiny", "None", 0.0))
    progress, gallery, info = out[-1]
    assert "Done: 1 image" in progress and gallery[0].size == (64, 64)
    assert info == "<p>Postprocess upscale to: 64x64, Postprocess crop to fit: True, Postprocess upscaler: 4x-Tiny</p>"
    saved = list((data / "outputs" / "extras-images").rglob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (64, 64)
    assert Image.open(saved[0]).info["parameters"] == info[3:-4]
    with pytest.raises(gr.Error, match="upload an image"):
        drain(tab.run("single", None, None, "", "", True, 0, 2.0, 64, 64, True, "Lanczos", "None", 0.0))
    with pytest.raises(gr.Error, match="upscaler_1"):
        drain(tab.run("single", source, None, "", "", True, 0, 2.0, 64, 64, True, "nope", "None", 0.0))
