"""The UI in process (no browser): widgets derived from PARAMS, token counter, paste, the one queue with
positions/progress/interrupt, readable errors, and auth on API routes."""
from __future__ import annotations

import threading
import time

import pytest

import gradio as gr  # a runtime requirement: a missing one is an error, never a skip

from pipelines.params.declarations import BY_NAME, PARAMS
from webui.ui.widgets import make_widget, params_for, widget_kind

from conftest import drain


# ------------------------------------------------------------------------------------------ widgets

def test_widgets_come_from_the_declarations():
    with gr.Blocks():
        for p in PARAMS:
            w = make_widget(p)
            assert w.label == p.label
            kind = widget_kind(p)
            if kind == "slider":
                assert isinstance(w, gr.Slider)
                assert (w.minimum, w.maximum, w.step) == (p.minimum, p.maximum, p.step)
                assert w.value == p.default
            elif kind == "checkbox":
                assert isinstance(w, gr.Checkbox) and w.value is p.default
            elif kind == "dropdown":
                assert isinstance(w, gr.Dropdown)
                if p.choices is not None:
                    assert [c[1] for c in w.choices] == p.choice_list()
            elif kind == "multiselect":
                assert isinstance(w, gr.Dropdown) and w.multiselect and w.value == list(p.default)
            elif kind == "radio":
                assert isinstance(w, gr.Radio) and w.value == p.default
                assert [c[0] for c in w.choices] == list(p.labels)
                assert [c[1] for c in w.choices] == [p.type(i) for i in range(len(p.labels))]
            elif kind == "number":
                assert isinstance(w, gr.Number) and w.value == p.default
                assert w.precision == (0 if p.type is int else None)
            else:
                assert isinstance(w, gr.Textbox)
    assert widget_kind(BY_NAME["seed"]) == "number"       # no step: a number box, not a 4-billion slider
    assert widget_kind(BY_NAME["steps"]) == "slider"
    assert widget_kind(BY_NAME["sampler_name"]) == "dropdown"


# ------------------------------------------------------------------------------------------ tokens

def test_token_counter_counts_per_75_token_chunk():
    from webui.ui.common import count_tokens, token_counter_html

    assert count_tokens("") == (0, 75)
    assert count_tokens("a cat") == (2, 75)
    assert count_tokens("(a cat:1.3)") == (2, 75)            # emphasis syntax is not counted
    assert count_tokens(" ".join(["cat"] * 80)) == (80, 150)
    assert count_tokens("a cat BREAK a dog")[1] == 150        # BREAK starts a new chunk
    assert count_tokens("[a cat:a very long dog description here:0.5]", 20)[0] == 6  # longest scheduled text
    assert token_counter_html("a cat").endswith("2/75</span>")
    assert "over" in token_counter_html(" ".join(["cat"] * 80))


# ------------------------------------------------------------------------------------------ paste

INFOTEXT = """a castle, (masterpiece:1.2)
Negative prompt: ugly
Steps: 12, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 42, Size: 576x448, Model hash: 0123456789, \
Model: tiny-sd1, Denoising strength: 0.4, Clip skip: 2, Hires upscale: 1.5, Hires upscaler: Latent, Frobnicate: yes"""


def test_paste_values_fill_every_named_field():
    from webui.ui.pnginfo import paste_values

    fields = {p.name: object() for p in params_for("txt2img", exclude_groups=("model",))}
    values, unknown = paste_values(INFOTEXT, fields)
    assert values["prompt"] == "a castle, (masterpiece:1.2)"
    assert values["negative_prompt"] == "ugly"
    assert (values["steps"], values["seed"], values["width"], values["height"]) == (12, 42, 576, 448)
    assert (values["sampler_name"], values["scheduler"]) == ("DPM++ 2M", "Karras")
    assert values["cfg_scale"] == 5.5 and values["clip_skip"] == 2
    assert values["enable_hr"] is True and values["hr_scale"] == 1.5 and values["denoising_strength"] == 0.4
    assert unknown == {"Frobnicate": "yes"} or "Frobnicate" in unknown
    plain, _ = paste_values("a dog\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64", fields)
    assert plain["enable_hr"] is False and plain["clip_skip"] == 1 and plain["scheduler"] == "Automatic"


# ------------------------------------------------------------------------------------------ the app

@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """UI + services in process on the tiny model (loaded, as the app does at start)."""
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from tests.helpers.app import make_tiny_data_dir, tiny_app_args
    from webui.ui.blocks import build_ui

    data = make_tiny_data_dir(tmp_path_factory.mktemp("ui"))
    args = parse_args(tiny_app_args(data))
    services = create_services(args)
    job = services.submit(lambda: services.manager.load("tiny-sd1"), label="load")
    job.target_title = "tiny-sd1"
    demo = build_ui(services, AccessControl(), startup_job=job)
    job.wait(120)
    ctx = demo.ui_context
    yield ctx
    services.close()


def values_of(ctx, **changes):
    tab = ctx.tab_objects["txt2img"]
    values = {name: comp.value for name, comp in tab.fields.items()}
    values.update(checkpoint="tiny-sd1", vae="Automatic", prompt="a red ball", steps=2, width=64, height=64, seed=7)
    values.update(changes)
    return values


def wait_running(job, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while job.state != "running":
        assert time.monotonic() < deadline, job.state
        time.sleep(0.01)


def progress_texts(updates, tab) -> list[str]:
    return [u[tab.progress] for u in updates if isinstance(u, dict) and tab.progress in u]


def test_every_txt2img_parameter_has_a_widget(ui):
    tab = ui.tab_objects["txt2img"]
    expected = {p.name for p in params_for("txt2img", exclude_groups=("model",))}
    assert set(tab.fields) == expected
    for name, comp in tab.fields.items():
        assert comp.label == BY_NAME[name].label
    # no dead buttons: send-to buttons exist only for tabs that exist (webui.ui.blocks.IMAGE_TABS + PNG Info)
    assert set(tab.send_buttons) == {"img2img", "inpaint", "pnginfo"}
    assert set(ui.tab_objects["pnginfo"].send_buttons) == {"txt2img", "img2img", "inpaint"}


def test_generate_waits_in_the_one_queue_then_streams_progress(ui):
    tab = ui.tab_objects["txt2img"]
    gate = threading.Event()
    blocker = ui.services.submit(lambda: gate.wait(60), label="someone else's job")
    wait_running(blocker)
    gen = tab.run(request=None, **values_of(ui))
    first = next(gen)
    assert "Queued" in first[tab.progress]
    second = next(gen)
    assert "Waiting in the queue: 1 job ahead of yours" in second[tab.progress]
    gate.set()
    updates = drain(gen)
    blocker.wait(5)
    final = updates[-1]
    state = final[tab.result_state]
    assert len(state["paths"]) == 1 and state["seeds"] == [7]
    assert final[tab.gallery] == state["paths"]
    assert "Seed: 7" in final[tab.infotext] and "Steps: 2" in final[tab.infotext]
    assert "Done: 1 image(s)" in final[tab.progress]


def test_live_preview_progress_and_eta_are_streamed(ui, monkeypatch):
    """The handler polls the job's control: progress text, ETA and each new preview reach the page."""
    from PIL import Image

    from pipelines.generate.engine import GenerationResult

    tab = ui.tab_objects["txt2img"]
    step_done, finish = threading.Event(), threading.Event()

    def fake_job(control):
        control.update(fraction=0.5, step=1, steps=2, text="txt2img step 1/2", preview=Image.new("RGB", (8, 8)))
        step_done.set()
        finish.wait(30)
        return GenerationResult(images=[Image.new("RGB", (8, 8))], infotexts=["x\nSteps: 2"], seeds=[1], seconds=1.0)

    monkeypatch.setattr(ui.services, "submit_txt2img", lambda req: ui.services.queue.submit(fake_job))
    gen = tab.run(request=None, **values_of(ui))
    updates = [next(gen)]
    step_done.wait(10)
    deadline = time.monotonic() + 10
    while not any(tab.gallery in u for u in updates) and time.monotonic() < deadline:
        updates.append(next(gen))
    preview = next(u for u in updates if tab.gallery in u)
    assert isinstance(preview[tab.gallery][0], Image.Image)
    assert "step 1/2" in preview[tab.progress] and "ETA" in preview[tab.progress]
    assert "width:50.0%" in preview[tab.progress]
    finish.set()
    final = drain(gen)[-1]
    assert final[tab.infotext] == "x\nSteps: 2" and "Done: 1 image(s)" in final[tab.progress]


def test_gallery_selection_drives_infotext_save_and_recycle(ui):
    from types import SimpleNamespace

    tab = ui.tab_objects["txt2img"]
    state = {"paths": ["/o/a.png", "/o/b.png"], "infotexts": ["A", "B"], "seeds": [10, 11], "index": 0}
    info, new_state, save = tab._select(state, SimpleNamespace(index=1))
    assert info == "B" and new_state["index"] == 1 and save["value"] == "/o/b.png"
    assert tab._last_seed(new_state, -1) == 11          # recycle = the selected image's seed
    assert tab._last_seed({}, 5) == 5


def test_interrupt_cancels_only_your_queued_job(ui):
    tab = ui.tab_objects["txt2img"]
    gate = threading.Event()
    blocker = ui.services.submit(lambda: gate.wait(60), label="blocker")
    gen = tab.run(request=None, **values_of(ui))
    next(gen)
    tab._interrupt(request=None)
    updates = drain(gen)
    assert "Cancelled" in progress_texts(updates, tab)[-1]
    assert not blocker.done.is_set()          # the other job is untouched
    gate.set()
    blocker.wait(5)


def test_bad_values_become_readable_errors(ui):
    tab = ui.tab_objects["txt2img"]
    with pytest.raises(gr.Error, match="width: 100 is not a multiple of 8"):
        next(tab.run(request=None, **values_of(ui, width=100)))
    with pytest.raises(gr.Error, match="AND"):        # raised inside the queued job
        drain(tab.run(request=None, **values_of(ui, prompt="a AND b")))


def test_pnginfo_send_sets_fields_and_checkpoint(ui, tmp_path):
    from PIL import Image

    from pipelines.images.metadata import write_image

    png = ui.tab_objects["pnginfo"]
    path = tmp_path / "in.png"
    write_image(Image.new("RGB", (64, 64)), path, INFOTEXT, "png")
    html, raw, text, *buttons = png._read(str(path))
    assert "a castle" in html and raw["parameters"] == INFOTEXT and text == INFOTEXT
    target = ui.paste.targets["txt2img"]
    tabs, ckpt, *updates = png.send(text, target)
    assert ckpt["value"] == "tiny-sd1"              # "Model: tiny-sd1" is among the discovered checkpoints
    by_name = dict(zip(target.fields, updates))
    assert by_name["steps"]["value"] == 12 and by_name["seed"]["value"] == 42
    assert by_name["width"]["value"] == 576 and by_name["height"]["value"] == 448
    assert by_name["prompt"]["value"] == "a castle, (masterpiece:1.2)"
    assert "value" not in by_name["batch_size"]      # not named by the infotext: left as it is
    for fmt in ("jpg", "webp"):                      # EXIF UserComment, as A1111 writes it
        other = tmp_path / f"in.{fmt}"
        write_image(Image.new("RGB", (64, 64)), other, INFOTEXT, fmt)
        assert png._read(str(other))[2] == INFOTEXT
    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    html, raw, text, *buttons = png._read(str(bare))
    assert "No generation parameters" in html and text == "" and all(b["interactive"] is False for b in buttons)
    html, raw, text, *_ = png._read(None)
    assert text == ""
    with pytest.raises(gr.Error):
        png.send("", target)


# ------------------------------------------------------------------------------------------ auth

def test_access_control_rules():
    from argparse import Namespace

    from webui.app.auth import AuthConfigError, access_control, is_exposed, parse_credentials

    def ns(**kw):
        base = dict(listen=False, share=False, auth=None, auth_file=None, api_auth=None, insecure_no_auth=False)
        return Namespace(**{**base, **kw})

    assert parse_credentials("a:1, b:x:y\nc:3") == {"a": "1", "b": "x:y", "c": "3"}
    with pytest.raises(AuthConfigError):
        parse_credentials("nopass")
    local = access_control(ns())
    assert not local.enabled and local.generated_password is None and not is_exposed(ns())
    for exposed in (ns(listen=True), ns(share=True)):
        ac = access_control(exposed)
        assert is_exposed(exposed) and ac.enabled and set(ac.users) == {"admin"}
        assert ac.check("admin", ac.generated_password) and not ac.check("admin", "x")
        assert ac.check("admin", ac.generated_password, api=True)
    assert not access_control(ns(listen=True, insecure_no_auth=True)).enabled
    both = access_control(ns(listen=True, auth="u:p", api_auth="bot:k"))
    assert both.check("u", "p") and not both.check("u", "p", api=True) and both.check("bot", "k", api=True)


def test_api_routes_use_http_basic(monkeypatch, ui):
    from fastapi import APIRouter
    from fastapi.testclient import TestClient

    from webui.app import server
    from webui.app.auth import AccessControl

    router = APIRouter()
    router.add_api_route("/sdapi/v1/ping", lambda: {"ok": True}, methods=["GET"])
    monkeypatch.setattr(server, "api_router", lambda services, access: router)
    access = AccessControl(users={"u": "p"}, api_users={"u": "p"})
    app = server.create_app(ui.services, access, None, api=True)
    client = TestClient(app, base_url="http://127.0.0.1")    # 'testserver' would be a foreign Host
    r = client.get("/sdapi/v1/ping")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
    assert client.get("/sdapi/v1/ping", auth=("u", "wrong")).status_code == 401
    assert client.get("/sdapi/v1/ping", auth=("u", "p")).json() == {"ok": True}
    open_app = server.create_app(ui.services, AccessControl(), None, api=True)
    assert TestClient(open_app, base_url="http://127.0.0.1").get("/sdapi/v1/ping").status_code == 200


def test_a_taken_explicit_port_is_refused():
    import socket

    from webui.app.server import find_port, port_is_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        assert not port_is_free("127.0.0.1", taken)
        with pytest.raises(OSError, match=f"--port {taken} is taken"):   # an explicit port is never moved (issue 15)
            find_port("127.0.0.1", taken)


@pytest.mark.parametrize("flags, merged", [([], True), (["--no-lora-merge"], False)])
def test_loras_merge_into_the_weights_unless_told_not_to(tmp_path, flags, merged):
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from tests.helpers.app import make_tiny_data_dir, tiny_app_args

    services = create_services(parse_args(tiny_app_args(make_tiny_data_dir(tmp_path)) + flags))
    try:
        assert services.engine.networks.fuse is merged
    finally:
        services.close()


def test_pnginfo_reads_a_comfyui_image_and_selects_local_models(ui, tmp_path):
    """Another tool's image in PNG Info: the reproduce summary is shown, and "Send to" selects the
    checkpoint it names and renames its LoRA (found by A1111's hash under another name) to the local file."""
    import json

    import torch
    from PIL import Image, PngImagePlugin
    from safetensors.torch import save_file

    from pipelines.models.hashing import addnet_hash_safetensors

    lora_dir = ui.services.paths.dirs("lora")[0]
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(lora_dir / "local_lora.safetensors"))
    digest = addnet_hash_safetensors(lora_dir / "local_lora.safetensors")[:12]
    text = (f"a lighthouse <lora:their_lora:0.5>\nNegative prompt: fog\nSteps: 9, Sampler: Euler, CFG scale: 5, "
            f"Seed: 31, Size: 64x64, Model: tiny-sd1, Lora hashes: \"their_lora: {digest}\"")
    path = tmp_path / "a1111.png"
    write_png = PngImagePlugin.PngInfo()
    write_png.add_text("parameters", text)
    Image.new("RGB", (64, 64)).save(path, pnginfo=write_png)
    png = ui.tab_objects["pnginfo"]
    target = ui.paste.targets["txt2img"]
    html, _, sent, *_ = png._read(str(path))
    assert "Reproducible here" in html
    _, ckpt, *updates = png.send(sent, target)
    by_name = dict(zip(target.fields, updates))
    assert ckpt["value"] == "tiny-sd1"
    assert by_name["prompt"]["value"] == "a lighthouse <lora:local_lora:0.5>"

    graph = {"3": {"class_type": "KSampler", "inputs": {
                 "seed": 5, "steps": 3, "cfg": 6, "sampler_name": "euler_cfg_pp", "scheduler": "karras", "denoise": 1,
                 "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
             "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red boat", "clip": ["4", 1]}},
             "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}}
    comfy = PngImagePlugin.PngInfo()
    comfy.add_text("prompt", json.dumps(graph))
    path = tmp_path / "comfy.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=comfy)
    html, _, sent, *_ = png._read(str(path))
    assert "made with ComfyUI" in html and "euler_cfg_pp" in html
    _, ckpt, *updates = png.send(sent, target)
    by_name = dict(zip(target.fields, updates))
    assert ckpt["value"] == "tiny-sd1"
    assert by_name["prompt"]["value"] == "a red boat" and by_name["seed"]["value"] == 5
    assert by_name["sampler_name"]["value"] == "Euler" and by_name["scheduler"]["value"] == "Karras"
