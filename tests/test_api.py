"""The /sdapi/v1 API end to end: a real server (uvicorn on 127.0.0.1, a free port) on tiny random models,
driven over HTTP with `webuiapi` (the client A1111 users script with) and plain `requests`.

One server for the module: two tiny SD1 checkpoints (diffusers folders), a tiny CLIP + BLIP in
models/interrogate with short label lists, a styles.csv. Covered: txt2img / img2img with a mask /
png-info / interrogate, validation (422 naming the field), model names never used as paths, options
(checkpoint switch, persistence), progress with a live preview while a job runs, interrupt and skip,
auth, body and image size limits, a schemathesis fuzz run (no 5xx) and 20 concurrent requests.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
import webuiapi
from PIL import Image

from pipelines.params.declarations import PARAMS

SIZE = {"width": 64, "height": 64}
CLIP, CAPTION = "tiny-clip", "blip-tiny"
STYLE = ("fox style", "a fox, orange fur", "lowres")


@dataclass
class Server:
    base: str              # http://127.0.0.1:PORT
    port: int
    data: Path
    services: object
    app: object

    @property
    def api(self) -> str:
        return self.base + "/sdapi/v1"

    def client(self, **kw) -> "webuiapi.WebUIApi":
        return webuiapi.WebUIApi(host="127.0.0.1", port=self.port, sampler="Euler", steps=2, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return requests.post(self.api + path, json=body, timeout=120, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.api + path, timeout=60, **kw)

    def saved(self) -> list[Path]:
        return sorted(p for p in (self.data / "outputs").rglob("*") if p.is_file())


def _write_interrogation_models(data: Path) -> None:
    from bench.interrogate import write_blip, write_open_clip

    root = data / "models" / "interrogate"
    write_open_clip(root / CLIP)
    write_blip(root / CAPTION)
    lists = data / "interrogate"     # A1111's interrogate/ folder: short lists instead of the shipped ones
    lists.mkdir()
    for name, lines in {"mediums": ["a painting", "a photo", "a drawing"],
                        "artists": ["Claude Monet", "Hokusai", "Ansel Adams"],
                        "movements": ["impressionism", "cubism"], "trendings": ["Artstation", "pixiv"],
                        "flavors": ["highly detailed", "sharp focus", "soft lighting", "8k", "moody", "bokeh"],
                        "negative": ["blurry", "low quality"]}.items():
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_extra_networks(data: Path) -> None:
    """A tiny SD1 ControlNet (diffusers folder), a LoRA file (listed, never loaded here) and two embeddings:
    one that fits the tiny SD1 text encoder (32 wide) and one that does not."""
    import torch
    from safetensors.torch import save_file

    from bench.synth import tiny_controlnet, write_controlnet

    models = data / "models"
    (models / "Lora").mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, models / "Lora" / "tiny-lora.safetensors",
              metadata={"ss_network_dim": "1"})
    (models / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, models / "embeddings" / "tiny-emb.safetensors")
    save_file({"emb_params": torch.randn(1, 7)}, models / "embeddings" / "other-emb.safetensors")
    write_controlnet(tiny_controlnet("sd1", seed=13), models / "ControlNet" / "tiny-cn", "diffusers")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from webui.app.auth import access_control
    from webui.app.cli import parse_args
    from webui.app.server import create_app, start_server
    from webui.app.services import create_services
    from bench.synth.factory import tiny_pipeline, write_diffusers_folder
    from tests.helpers.app import free_port, make_tiny_data_dir, tiny_app_args

    data = make_tiny_data_dir(tmp_path_factory.mktemp("api"))
    # A second checkpoint with OTHER weights (seed 2): a switch that does not happen shows in the images.
    write_diffusers_folder(tiny_pipeline("sd1", seed=2), data / "models" / "Stable-diffusion" / "tiny-sd1-b")
    (data / "styles.csv").write_text("name,prompt,negative_prompt\n" + ",".join(f'"{v}"' for v in STYLE) + "\n",
                                     encoding="utf-8-sig")
    _write_interrogation_models(data)
    _write_extra_networks(data)
    args = parse_args(tiny_app_args(data, "--api", "--nowebui"))
    services = create_services(args)
    services.submit(lambda: services.manager.load("tiny-sd1")).wait(120)
    app = create_app(services, access_control(args), None, api=True)
    port = free_port()
    running = start_server(app, "127.0.0.1", port)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, data, services, app)
    finally:
        running.stop()
        services.close()


@pytest.fixture(autouse=True)
def restore_options(request):
    """Tests share one server: whatever options a test changes are put back afterwards, even when it
    fails half-way, so no test depends on the order the others ran in."""
    if "server" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("server")
    before = server.get("/options").json()
    try:
        yield
    finally:
        after = server.get("/options").json()
        changed = {key: value for key, value in before.items() if after.get(key) != value}
        if changed:
            r = server.post("/options", changed)
            assert r.ok, f"could not restore the options {sorted(changed)}: {r.text}"


def b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def detail_fields(response: requests.Response) -> list[str]:
    detail = response.json()["detail"]
    return [".".join(str(x) for x in d["loc"][1:]) for d in detail] if isinstance(detail, list) else []


# ------------------------------------------------------------------------------------------ schema

def test_schema_is_generated_from_the_parameter_declarations(server):
    spec = requests.get(server.base + "/openapi.json", timeout=30).json()
    assert requests.get(server.base + "/docs", timeout=30).status_code == 200
    schemas = spec["components"]["schemas"]
    for model, mode in (("StableDiffusionProcessingTxt2Img", "txt2img"), ("StableDiffusionProcessingImg2Img", "img2img")):
        props = schemas[model]["properties"]
        for p in PARAMS:
            if mode not in p.modes:
                assert p.name not in props, (model, p.name)
                continue
            prop = props[p.name]
            assert prop["default"] == (list(p.default) if p.type is tuple else p.default), (model, p.name)
            typed = next(t for t in prop["anyOf"] if t.get("type") != "null")
            if p.minimum is not None:
                assert typed["minimum"] == p.minimum, p.name
            if p.maximum is not None:
                assert typed["maximum"] == p.maximum, p.name
            for alias in p.aliases:
                assert alias in props
    assert "sampler_index" in schemas["StableDiffusionProcessingTxt2Img"]["properties"]
    assert {"init_images", "mask"} <= set(schemas["StableDiffusionProcessingImg2Img"]["properties"])


# ------------------------------------------------------------------------------------------ txt2img

def test_txt2img_with_the_webuiapi_client(server):
    before = server.saved()
    api = server.client()
    r = api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=123, batch_size=2, cfg_scale=5, **SIZE)
    assert len(r.images) == 2 and r.images[0].size == (64, 64)
    assert r.info["all_seeds"] == [123, 124] and r.info["seed"] == 123
    text = r.images[0].info["parameters"]              # infotext embedded in the PNG
    assert text == r.info["infotexts"][0]
    assert text.startswith("a red fox\nNegative prompt: blurry\n")
    for part in ("Steps: 2", "Sampler: Euler", "CFG scale: 5", "Seed: 123", "Size: 64x64", "Model: tiny-sd1"):
        assert part in text
    assert "Seed: 124" in r.images[1].info["parameters"]
    assert r.parameters["prompt"] == "a red fox" and r.parameters["batch_size"] == 2
    assert r.info["sd_model_name"] == "tiny-sd1" and r.info["interrupted"] is False
    assert server.saved() == before                    # A1111 API: nothing saved unless save_images


def test_txt2img_maps_a1111_names_and_ignores_unknown_fields(server):
    r = server.post("/txt2img", {
        "prompt": "a cat", "steps": 1, "width": 100, "height": 64, "seed": 9,
        "sampler_index": "DPM++ 2M", "scheduler": "karras",         # legacy name, A1111 lower-case scheduler
        "override_settings": {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337},
        "alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "module": "canny"}]}},
        "styles": ["fox style", "no such style"],
        "restore_faces": False, "s_churn": 0, "firstphase_width": 0, "send_images": True})   # unknown: ignored
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    text = info["infotexts"][0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in text and "Clip skip: 2" in text
    assert "Size: 96x64" in text                                     # rounded down like A1111's latents
    assert text.startswith("a cat, a fox, orange fur\nNegative prompt: lowres\n")   # styles.csv applied
    warnings = "\n".join(info["warnings"])
    assert "controlnet" in warnings.lower() and "eta_noise_seed_delta" in warnings and "no such style" in warnings
    assert server.post("/txt2img", {"steps": 1, "send_images": False, **SIZE}).json()["images"] == []


@pytest.mark.parametrize("body, field", [
    ({"steps": "many"}, "steps"),
    ({"steps": 1000}, "steps"),
    ({"cfg_scale": 99}, "cfg_scale"),
    ({"width": 4096}, "width"),
    ({"prompt": 5}, "prompt"),
    ({"sampler_name": "Nope"}, "sampler_name"),
    ({"seed": 1.5}, "seed"),
    ({"enable_hr": "perhaps"}, "enable_hr"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 40}}, "override_settings.CLIP_stop_at_last_layers"),
    ({"script_name": "no such script"}, "script_name"),
    ({"script_name": "x/y/z plot", "script_args": [99]}, "script_args"),
])
def test_txt2img_wrong_values_give_422_naming_the_field(server, body, field):
    r = server.post("/txt2img", {"steps": 1, **SIZE, **body} if "steps" not in body else {**SIZE, **body})
    assert r.status_code == 422, r.text
    assert field in detail_fields(r), r.text


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini",
                                  "tiny-sd1/../../../etc/passwd", "C:/Windows/system.ini"])
def test_model_names_are_looked_up_never_opened(server, name):
    absolute = str(server.data / "models" / "Stable-diffusion" / "tiny-sd1")   # even a real model's path
    for value in (name, absolute):
        for body in ({"override_settings": {"sd_model_checkpoint": value}}, {"sd_model_checkpoint": value},
                     {"override_settings": {"sd_vae": value}}, {"sd_vae": value}):
            r = server.post("/txt2img", {"steps": 1, **SIZE, **body})
            assert r.status_code == 404, (body, r.text)
        assert server.post("/options", {"sd_model_checkpoint": value}).status_code == 404
        assert server.post("/options", {"sd_vae": value}).status_code == 404
    r = server.post("/options", {"outdir_txt2img_samples": name})
    assert r.status_code == 422 and "outdir_txt2img_samples" in detail_fields(r)
    assert server.get("/options").json()["sd_model_checkpoint"] == "tiny-sd1"


# ------------------------------------------------------------------------------------------ png-info

def test_png_info_reads_what_txt2img_wrote(server):
    api = server.client()
    image = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=77, steps=1, **SIZE).image
    r = api.png_info(image)
    assert r.info == image.info["parameters"]
    params = r.json["parameters"]
    assert params["Prompt"] == "a lighthouse" and params["Negative prompt"] == "fog"
    assert params["Seed"] == "77" and params["Size-1"] == "64" and "parameters" not in r.json["items"]
    # JPEG with the infotext in EXIF, and a data: URL
    from pipelines.images.metadata import write_image

    buf = io.BytesIO()
    write_image(image, buf, image.info["parameters"], "jpg")
    data_url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    assert server.post("/png-info", {"image": data_url}).json()["info"] == image.info["parameters"]
    # no metadata: empty, not an error
    assert server.post("/png-info", {"image": b64_png(Image.new("RGB", (8, 8)))}).json()["info"] == ""


def test_png_info_reads_other_tools_and_says_what_differs(server):
    from PIL import PngImagePlugin

    api = server.client()
    own = api.png_info(api.txt2img(prompt="a boat", seed=3, steps=1, **SIZE).image).json["reproduce"]
    assert own["source"] is None and own["checkpoint"].startswith("tiny-sd1"), own
    assert own["exact"], own["differences"]
    # An InvokeAI image (CoreMetadata chunk) naming a checkpoint and a LoRA this server lacks.
    meta = {"generation_mode": "txt2img", "positive_prompt": "a red fox", "negative_prompt": "blurry",
            "width": 64, "height": 64, "seed": 12, "cfg_scale": 6, "steps": 4, "scheduler": "euler_k",
            "model": {"name": "juggernaut", "base": "sd-1", "type": "main"},
            "loras": [{"model": {"name": "pixel_art", "base": "sd-1", "type": "lora"}, "weight": 0.5}]}
    info = PngImagePlugin.PngInfo()
    info.add_text("invokeai_metadata", json.dumps(meta))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG", pnginfo=info)
    r = server.post("/png-info", {"image": base64.b64encode(buf.getvalue()).decode()}).json()
    params = r["parameters"]
    assert params["Prompt"] == "a red fox <lora:pixel_art:0.5>" and params["Negative prompt"] == "blurry"
    assert params["Sampler"] == "Euler" and params["Schedule type"] == "Karras" and params["Seed"] == "12"
    assert r["reproduce"]["source"] == "InvokeAI" and not r["reproduce"]["exact"]
    differences = "\n".join(r["reproduce"]["differences"])
    assert "checkpoint juggernaut is not among your models" in differences
    assert "LoRA pixel_art is not among your LoRAs" in differences


@pytest.mark.parametrize("image, status", [
    ("not base64 at all!", 422),
    (base64.b64encode(b"hello, not an image").decode(), 422),
    ("http://169.254.169.254/latest/meta-data", 422),        # never fetched
    ("", 422),
    (None, 413),                                              # 5000 x 5000: refused before decoding
])
def test_png_info_bad_images_are_4xx(server, image, status):
    if image is None:
        image = b64_png(Image.new("1", (5000, 5000)))
    r = server.post("/png-info", {"image": image})
    assert r.status_code == status, r.text


# ------------------------------------------------------------------------------------------ img2img

def test_img2img_with_a_mask(server):
    init = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))                        # repaint the left half
    api = server.client()
    r = api.img2img(images=[init], mask_image=mask, prompt="a stone wall", seed=5, steps=2, denoising_strength=0.5,
                    mask_blur=0, inpainting_fill=1, inpaint_full_res=False, **SIZE)
    assert len(r.images) == 1 and r.images[0].size == (64, 64)
    out = r.images[0].convert("RGB")
    assert out.crop((32, 0, 64, 64)).tobytes() == init.crop((32, 0, 64, 64)).tobytes()   # kept area untouched
    text = r.info["infotexts"][0]
    assert "Denoising strength: 0.5" in text and "Seed: 5" in text and r.parameters["init_images"] is None
    # a broken mask or no init image: 4xx naming the field
    bad = server.post("/img2img", {"init_images": [b64_png(init)], "mask": "%%%", "steps": 1, **SIZE})
    assert bad.status_code == 422 and "mask" in detail_fields(bad)
    assert server.post("/img2img", {"steps": 1, **SIZE}).status_code == 422
    big = b64_png(Image.new("1", (4096, 4096)))              # each allowed alone; three are too many pixels
    r = server.post("/img2img", {"init_images": [big] * 3, "batch_size": 3, "steps": 1, **SIZE})
    assert r.status_code == 413 and "init_images.2" in r.text


# ------------------------------------------------------------------------------------------ ControlNet

def test_controlnet_units_in_the_sd_webui_controlnet_format(server):
    api = server.client()
    assert api.controlnet_model_list() == ["tiny-cn"] and "canny" in api.controlnet_module_list()
    assert "controlnet" in api.get_scripts()["txt2img"] and api.controlnet_version() == 2
    control = Image.new("RGB", (64, 64), "black")
    control.paste((255, 255, 255), (16, 16, 48, 48))
    plain = api.txt2img(prompt="a box", seed=21, steps=2, **SIZE)
    unit = webuiapi.ControlNetUnit(image=control, module="canny", model="tiny-cn", weight=1.5,
                                   threshold_a=100, threshold_b=200, pixel_perfect=True)
    r = api.txt2img(prompt="a box", seed=21, steps=2, controlnet_units=[unit], **SIZE)
    assert r.images[0].tobytes() != plain.images[0].tobytes()         # the unit steered the result
    assert "ControlNet" in r.info["infotexts"][0] and "tiny-cn" in r.info["infotexts"][0]
    assert r.parameters["alwayson_scripts"]["ControlNet"]["args"][0]["image"] is None     # not echoed
    body = {"prompt": "x", "steps": 1, **SIZE, "alwayson_scripts": {"controlnet": {"args": [
        {"image": b64_png(control), "module": "none", "model": "../../etc/passwd"}]}}}
    r = server.post("/txt2img", body)
    assert r.status_code == 404 and "controlnet[0].model" in r.text
    body["alwayson_scripts"]["controlnet"]["args"][0].update(model="tiny-cn", weight=9)
    r = server.post("/txt2img", body)
    assert r.status_code == 422 and "alwayson_scripts.controlnet[0].weight" in detail_fields(r)
    for script in ({"args": "canny"}, {"args": [5]}, {"args": [{"bogus": 1}]}, {"args": [{"image": "%%%"}]},
                   {"args": [{"module": "nope"}]}, {"args": [{"weight": "heavy"}]}, {"args": [{"model": 5}]},
                   {"args": [{"image": b64_png(Image.new("1", (5000, 5000))), "model": "tiny-cn"}]}, "x", 5):
        r = server.post("/txt2img", {"steps": 1, **SIZE, "alwayson_scripts": {"ControlNet": script}})
        assert 400 <= r.status_code < 500, (script, r.status_code, r.text)


# ------------------------------------------------------------------------------------------ interrogate

def test_interrogate(server):
    image = Image.effect_noise((64, 64), 40).convert("RGB")
    r = server.client().interrogate(image)           # model="clip": caption + CLIP-ranked phrases
    assert isinstance(r.info, str) and r.info.strip()
    assert any(w in r.info for w in ("Monet", "Hokusai", "Adams"))   # from the data dir's interrogate/ lists
    caption = server.post("/interrogate", {"image": b64_png(image), "model": "caption"}).json()["caption"]
    assert caption and r.info.startswith(caption)
    assert server.post("/interrogate", {"image": b64_png(image), "model": "deepdanbooru"}).status_code == 501
    assert server.post("/interrogate", {"image": b64_png(image), "model": "nope"}).status_code == 404
    r = server.post("/interrogate", {"image": b64_png(image), "clip_model": "../../../etc/passwd"})
    assert 400 <= r.status_code < 500


# ------------------------------------------------------------------------------------------ options

def test_options_round_trip_switches_the_checkpoint(server):
    api = server.client()
    assert api.get_options()["sd_model_checkpoint"] == "tiny-sd1"
    own_a = api.txt2img(prompt="x", steps=1, seed=3, **SIZE).images[0].tobytes()
    api.set_options({"sd_model_checkpoint": "tiny-sd1-b", "unknown_option": 1})
    opts = api.get_options()
    assert opts["sd_model_checkpoint"] == "tiny-sd1-b" and api.util_get_current_model() == "tiny-sd1-b"
    r = api.txt2img(prompt="x", steps=1, seed=3, **SIZE)
    own_b = r.images[0].tobytes()
    assert "Model: tiny-sd1-b" in r.info["infotexts"][0]
    assert own_b != own_a                   # other weights, same request: the switch really happened
    # a per-request override is undone afterwards unless asked to keep it
    r = api.txt2img(prompt="x", steps=1, seed=3, override_settings={"sd_model_checkpoint": "tiny-sd1"}, **SIZE)
    assert "Model: tiny-sd1," in r.info["infotexts"][0] and api.util_get_current_model() == "tiny-sd1-b"
    assert r.images[0].tobytes() == own_a   # the first checkpoint's own image again
    assert api.txt2img(prompt="x", steps=1, seed=3, **SIZE).images[0].tobytes() == own_b     # and back
    api.set_options({"CLIP_stop_at_last_layers": 2})
    text = api.txt2img(prompt="x", steps=1, seed=3, **SIZE).info["infotexts"][0]
    assert "Model: tiny-sd1-b" in text and "Clip skip: 2" in text
    saved = json.loads((server.data / "config" / "options.json").read_text())
    assert saved["sd_model_checkpoint"] == "tiny-sd1-b" and saved["CLIP_stop_at_last_layers"] == 2
    api.txt2img(prompt="x", steps=1, override_settings={"sd_model_checkpoint": "tiny-sd1"},
                override_settings_restore_afterwards=False, **SIZE)
    assert api.util_get_current_model() == "tiny-sd1"
    api.util_set_model("tiny-sd1-b")
    assert api.get_options()["sd_model_checkpoint"] == "tiny-sd1-b"


def test_options_validation_and_persistence(server):
    for body, field in (({"samples_format": "bmp"}, "samples_format"), ({"CLIP_stop_at_last_layers": "two"},
                        "CLIP_stop_at_last_layers"), ({"outdir_txt2img_samples": "/etc"}, "outdir_txt2img_samples"),
                        ({"jpeg_quality": 500}, "jpeg_quality")):
        r = server.post("/options", body)
        assert r.status_code == 422 and field in detail_fields(r), r.text
    out = server.data / "outputs"
    assert server.post("/options", {"samples_format": "webp", "outdir_txt2img_samples": str(out / "mine")}).ok
    r = server.post("/txt2img", {"prompt": "saved", "steps": 1, "seed": 11, "save_images": True, **SIZE}).json()
    files = list((out / "mine").rglob("*.webp"))
    assert len(files) == 1 and base64.b64decode(r["images"][0])[8:12] == b"WEBP"
    from pipelines.images.metadata import read_infotext

    assert read_infotext(files[0])[0] == json.loads(r["info"])["infotexts"][0]
    opts = server.get("/options").json()
    assert opts["outdir_txt2img_samples"] == str(out / "mine") and opts["samples_format"] == "webp"
    from webui.api.options import OptionsStore

    again = OptionsStore(server.data / "config" / "options.json", out)          # what a restart reads
    assert again.get("samples_format") == "webp" and again.get("outdir_txt2img_samples") == "mine"
    assert server.post("/options", {"samples_format": "png", "outdir_txt2img_samples": ""}).ok
    assert server.get("/options").json()["outdir_txt2img_samples"] == str(out / "txt2img-images")


def test_parameters_too_long_for_jpeg_exif_are_saved_as_png(server):
    assert server.post("/options", {"samples_format": "jpg", "outdir_txt2img_samples": "long"}).ok
    try:
        r = server.post("/txt2img", {"prompt": "p" * 20000, "negative_prompt": "n" * 20000, "steps": 1,
                                     "save_images": True, **SIZE})
        assert r.status_code == 200, r.text
        files = [f for f in (server.data / "outputs" / "long").rglob("*") if f.is_file()]
        assert [f.suffix for f in files] == [".png"]
        assert base64.b64decode(r.json()["images"][0])[:4] == b"\x89PNG"     # the response keeps them too
    finally:
        assert server.post("/options", {"samples_format": "png", "outdir_txt2img_samples": ""}).ok


# ------------------------------------------------------------------------------------------ progress

def _start(fn) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            box["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_progress_with_live_preview_then_interrupt(server):
    api = server.client()
    api.set_options({"show_progress_every_n_steps": 1})
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    t, box = _start(lambda: api.txt2img(prompt="slow", steps=150, n_iter=4, seed=1, **SIZE))
    seen_progress = seen_image = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (seen_progress and seen_image):
        p = api.get_progress()
        if p["state"]["sampling_step"] >= 1 and p["progress"] > 0.01:
            seen_progress = p
        if p["current_image"]:
            seen_image = Image.open(io.BytesIO(base64.b64decode(p["current_image"])))
        time.sleep(0.05)
    api.interrupt()
    t.join(60)
    assert not t.is_alive() and "error" not in box, box.get("error")
    assert seen_progress, "progress never moved while a 150-step job ran"
    assert seen_progress["state"]["sampling_steps"] == 150 and seen_progress["state"]["job_count"] == 4
    assert seen_progress["eta_relative"] > 0 and "step" in seen_progress["textinfo"]
    assert seen_progress["state"]["job"].startswith("api txt2img")      # a job on the queue the UI shares
    assert seen_image is not None and seen_image.size[0] > 0
    r = box["result"]
    assert r.info["interrupted"] is True and len(r.images) == 1   # the partial image (A1111)
    after = api.get_progress()
    assert after["progress"] == 0 and after["state"]["job_count"] == 0
    api.set_options({"show_progress_every_n_steps": 5})


def _wait_progress(api, until, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = api.get_progress()
        if until(p["state"]):
            return p
        time.sleep(0.02)
    raise AssertionError(f"progress never reached the expected state; last: {p}")


def test_skip_moves_on_to_the_next_image(server):
    api = server.client()
    t, box = _start(lambda: api.txt2img(prompt="skip me", steps=150, n_iter=3, seed=50, **SIZE))
    _wait_progress(api, lambda s: s["job_no"] == 0 and s["sampling_step"] >= 1 and s["sampling_steps"] == 150)
    api.skip()
    _wait_progress(api, lambda s: s["job_no"] == 1 and s["sampling_step"] >= 1)     # image 2 started
    api.interrupt()
    t.join(60)
    r = box["result"]
    assert r.info["skipped"] == 1 and r.info["interrupted"] is True and len(r.images) == 1   # image 2, partial


# ------------------------------------------------------------------------------------------ lists, models

def test_lists_and_model_management(server):
    api = server.client()
    assert {"Euler a", "Euler", "DPM++ 2M"} <= set(api.util_get_sampler_names())
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())
    assert api.util_get_model_names() == ["tiny-sd1", "tiny-sd1-b"]
    assert api.get_sd_vae() == [] and api.get_hypernetworks() == [] and api.get_face_restorers() == []
    assert api.get_realesrgan_models() == []
    loras = api.get_loras()
    assert [(x["name"], x["alias"], x["metadata"]) for x in loras] == [("tiny-lora", "tiny-lora", {"ss_network_dim": "1"})]
    assert api.get_embeddings() == {"loaded": {"tiny-emb": {"step": None, "sd_checkpoint": None,
                                                            "sd_checkpoint_name": None, "shape": 32, "vectors": 2}},
                                    "skipped": {"other-emb": {"step": None, "sd_checkpoint": None,
                                                              "sd_checkpoint_name": None, "shape": 7, "vectors": 1}}}
    assert server.post("/refresh-loras").ok and server.post("/refresh-embeddings").ok
    assert api.get_prompt_styles() == [dict(zip(("name", "prompt", "negative_prompt"), STYLE))]
    assert "Lanczos" in [u["name"] for u in api.get_upscalers()]
    assert "Latent" in [m["name"] for m in api.get_latent_upscale_modes()]
    assert api.get_memory()["ram"]["total"] > 0
    flags = api.get_cmd_flags()
    assert flags["api"] is True and flags["api_auth"] is None and flags["data_dir"] == str(server.data)
    # refresh finds a new checkpoint; unload / reload
    ckpts = server.data / "models" / "Stable-diffusion"
    shutil.copytree(ckpts / "tiny-sd1", ckpts / "tiny-sd1-c")
    try:
        api.refresh_checkpoints()
        assert "tiny-sd1-c" in api.util_get_model_names()
    finally:
        shutil.rmtree(ckpts / "tiny-sd1-c")
        assert server.post("/refresh-vae").ok
        api.refresh_checkpoints()
    assert server.post("/unload-checkpoint").json() == {}
    assert server.services.manager.active is None
    assert api.get_options()["sd_model_checkpoint"] == "tiny-sd1"       # the setting stays, as in A1111
    assert server.post("/reload-checkpoint").json() == {}
    assert api.get_options()["sd_model_checkpoint"] == "tiny-sd1" and server.services.manager.active is not None
    assert server.post("/unload-checkpoint").json() == {}                # A1111: the next image loads it again
    assert "Model: tiny-sd1" in api.txt2img(prompt="x", steps=1, **SIZE).info["infotexts"][0]
    assert server.services.manager.active.info.title == "tiny-sd1"


# ------------------------------------------------------------------------------------------ security

def test_auth_applies_to_the_api(server):
    from fastapi.testclient import TestClient

    from webui.app.auth import AccessControl, access_control
    from webui.app.cli import parse_args
    from webui.app.server import create_app

    LOCAL = "http://127.0.0.1"     # TestClient's default Host ('testserver') is refused like any foreign name
    locked = TestClient(create_app(server.services, AccessControl(api_users={"bot": "s3cret"}), None, api=True),
                        base_url=LOCAL)
    assert locked.get("/sdapi/v1/sd-models").status_code == 401
    assert locked.get("/sdapi/v1/sd-models", auth=("bot", "wrong")).status_code == 401
    assert locked.post("/sdapi/v1/txt2img", json={"steps": 1}).status_code == 401
    assert locked.get("/sdapi/v1/sd-models", auth=("bot", "s3cret")).status_code == 200
    # exposed (--listen) with no credentials: never open; the generated password works
    args = parse_args(["--listen", "--nowebui", "--data-dir", str(server.data)])
    access = access_control(args)
    exposed = TestClient(create_app(server.services, access, None, api=True), base_url=LOCAL)
    assert exposed.get("/sdapi/v1/options").status_code == 401
    assert exposed.get("/sdapi/v1/options", auth=("admin", access.generated_password)).status_code == 200
    # the real client with --api-auth; cmd-flags never shows the passwords
    import dataclasses

    args = parse_args(["--api-auth", "bot:s3cret", "--auth", "u:p", "--nowebui", "--data-dir", str(server.data)])
    services = dataclasses.replace(server.services, args=args)
    client = TestClient(create_app(services, access_control(args), None, api=True), base_url=LOCAL)
    assert client.get("/sdapi/v1/cmd-flags", auth=("u", "p")).status_code == 401      # --api-auth wins for the API
    flags = client.get("/sdapi/v1/cmd-flags", auth=("bot", "s3cret")).json()
    assert flags["api_auth"] == "<hidden>" and flags["auth"] == "<hidden>" and "s3cret" not in json.dumps(flags)


def test_request_body_is_bounded(server, monkeypatch):
    import webui.api.routes as api_module

    # A declared 60 MB body is refused from the header alone (nothing of it is sent, nothing read).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/sdapi/v1/txt2img")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(60 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    # A chunked body (no length) is counted as it arrives: refused once past the limit.
    monkeypatch.setattr(api_module, "MAX_BODY_BYTES", 1024 * 1024)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/sdapi/v1/png-info")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    # The server answers 413 and closes as soon as the limit is passed; the client may then see the
    # reset while still sending, or while reading: either way the body was refused, never accepted.
    try:
        for i in range(5):                                      # 1.25 MB, then wait for the answer
            data = (b'{"image": "' if i == 0 else b"") + b"A" * (256 * 1024)
            conn.send(b"%x\r\n%s\r\n" % (len(data), data))
        status = conn.getresponse().status
    except (ConnectionResetError, BrokenPipeError):
        status = 413
    assert status == 413
    conn.close()
    small = server.post("/png-info", {"image": "A" * 1000})         # under the limit: parsed, then a 422
    assert small.status_code == 422


# ------------------------------------------------------------------------------------------ fuzz

def test_schemathesis_fuzz_finds_no_server_errors(server):
    from hypothesis import HealthCheck, Phase, given, settings

    mode_positive = schemathesis.GenerationMode.POSITIVE
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    before = server.get("/options").json()
    init = b64_png(Image.new("RGB", (64, 64), (90, 120, 200)))
    mask = b64_png(Image.new("L", (64, 64), 255))
    skip = {"/sdapi/v1/unload-checkpoint", "/sdapi/v1/reload-checkpoint"}   # tested above; would unload the model
    generation = {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/interrogate"}
    failures: list[str] = []
    statuses: dict = {}
    count = 0

    def tame(case, positive: bool) -> None:
        """Keep generation cheap: tiny sizes and step counts (everything else stays fuzzed)."""
        if case.path not in generation or not positive or not isinstance(case.body, dict):
            return
        body = case.body
        if case.path == "/sdapi/v1/interrogate":
            body["image"] = init
            body["model"] = ("clip", "caption", "fast", "classic", "best", "negative")[count % 6]
            if count % 2:
                body.pop("clip_model", None)
                body.pop("caption_model", None)
            return
        body.update(width=64, height=64, steps=min(int(body.get("steps") or 1), 2), n_iter=1, batch_size=1,
                    enable_hr=False)
        body.pop("sd_model_checkpoint", None)
        if case.path == "/sdapi/v1/img2img":
            body["init_images"] = [init]
            body["mask"] = mask if body.get("mask") else None

    ops = [r.ok() for r in schema.get_all_operations()]
    for op in ops:
        if op.path in skip:
            continue
        for mode in schemathesis.GenerationMode:
            positive = mode == mode_positive
            has_input = bool(op.body) or bool(op.query)
            if not positive and not has_input:
                continue
            n = (6 if op.path in generation else 12) if positive else 8

            @settings(max_examples=n, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case):
                nonlocal count
                tame(case, positive)
                count += 1
                response = case.call(timeout=120)
                statuses.setdefault((case.path, mode.value), []).append(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.path} {mode.value} → {response.status_code} "
                                    f"{response.text[:300]} body={str(case.body)[:300]}")

            check()
    restore = {k: v for k, v in before.items() if k in ("samples_format", "show_progress_every_n_steps", "sd_vae",
                                                        "CLIP_stop_at_last_layers", "outdir_txt2img_samples",
                                                        "live_previews_enable", "jpeg_quality", "save_txt",
                                                        "samples_filename_pattern", "grid_save", "outdir_samples")}
    restore["sd_model_checkpoint"] = "tiny-sd1"
    assert server.post("/options", restore).ok
    assert not failures, "\n".join(failures[:10])
    assert count > 100
    ok = {path: codes.count(200) for (path, mode), codes in statuses.items() if mode == "positive"}
    assert ok["/sdapi/v1/txt2img"] and ok["/sdapi/v1/options"], statuses     # the fuzz reached generation


# ------------------------------------------------------------------------------------------ load

def test_twenty_concurrent_requests_all_complete_and_are_saved_once(server):
    api = server.client()
    assert api.set_options({"outdir_txt2img_samples": "load-test"}) is None
    n = 20
    start = threading.Barrier(n + 1)

    def one(i):
        client = server.client()
        start.wait()
        return client.txt2img(prompt=f"load {i}", seed=1000 + i, steps=1, save_images=True, **SIZE)

    latencies = []
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        start.wait()
        while not all(f.done() for f in futures):          # the server keeps answering while busy
            t0 = time.monotonic()
            p = requests.get(server.api + "/progress?skip_current_image=true", timeout=30)
            latencies.append(time.monotonic() - t0)
            assert p.status_code == 200
            time.sleep(0.05)
        results = [f.result() for f in futures]
    for i, r in enumerate(results):
        assert len(r.images) == 1 and r.info["all_seeds"] == [1000 + i]
    files = sorted((server.data / "outputs" / "load-test").rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == n and not [f for f in files if f.name.startswith(".")]
    from pipelines.images.metadata import read_infotext

    seeds = sorted(int(read_infotext(f)[0].split("Seed: ")[1].split(",")[0]) for f in files)
    assert seeds == list(range(1000, 1000 + n))                      # each image saved once, none lost
    assert max(latencies) < 10.0, max(latencies)
    assert server.get("/progress").json()["state"]["job_count"] == 0
    assert api.set_options({"outdir_txt2img_samples": ""}) is None


def test_xyz_plot_runs_as_a1111_script_through_webuiapi(server):
    """A1111 clients run the X/Y/Z plot as script_name + positional script_args (axis types are indexes into
    A1111 1.10's txt2img axis list: 4 = Steps, 6 = CFG Scale, 0 = Nothing)."""
    scripts = server.get("/scripts").json()
    assert "x/y/z plot" in scripts["txt2img"] and "x/y/z plot" in scripts["img2img"]
    info = [s for s in server.get("/script-info").json() if s["name"] == "x/y/z plot"]
    assert {s["is_img2img"] for s in info} == {False, True} and info[0]["args"][0]["label"] == "x_type"
    assert any(e["name"] == "xyz_plot" and e["enabled"] for e in server.get("/extensions").json())
    args = [4, "1, 2", [], 6, "3, 5", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    r = server.client().txt2img(prompt="a red ball", seed=7, width=64, height=64, script_name="X/Y/Z plot",
                                script_args=args)
    assert len(r.images) == 5                                   # the grid, then the 2 x 2 cells (include_lone_images)
    grid, cells = r.images[0], r.images[1:]
    assert grid.width > 2 * 64 and grid.height > 2 * 64 and all(c.size == (64, 64) for c in cells)
    infotexts = r.info["infotexts"]
    assert "X Type: Sampling steps" in infotexts[0] and "Y Type: CFG Scale" in infotexts[0]
    assert "Steps: 2, " in infotexts[2] and "CFG scale: 5" in infotexts[3]
    # the sampler axis reads A1111's dropdown list (csv_mode off); an axis this app lacks is a 422
    r = server.post("/txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1, "script_name": "x/y/z plot",
                                 "script_args": [9, "", ["Euler", "DDIM"]]})   # 9 = Sampler
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text
    assert "X Values: \"Euler,DDIM\"" in json.loads(r.json()["info"])["infotexts"][0]
    r = server.post("/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64, "script_name": "x/y/z plot",
                                 "script_args": [8, "a,b"]})           # 8 = Prompt order
    assert r.status_code == 422 and "script_args" in detail_fields(r) and "Prompt order" in r.text
