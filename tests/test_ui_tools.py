"""The tools around generation, in process (no browser, no checkpoint needed): presets (apply, save, delete,
defaults), styles from the data folder's styles.csv, the extra-networks picker, ControlNet units (sliders
per preprocessor, units handed to the engine, preview on the queue), and the Interrogate tab (the engine's
offline message, results, send-to)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

import gradio as gr  # a runtime requirement: a missing one is an error, never a skip

from PIL import Image

from conftest import drain


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from pipelines.params.presets import PRESETS_DIR, PresetStore
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from webui.ui.blocks import build_ui

    data = tmp_path_factory.mktemp("ui-tools")
    (data / "styles.csv").write_text("name,prompt,negative_prompt\n# divider,,\nOil,\"{prompt}, oil painting\",photo\n"
                                     "Moody,dark and moody,bright\n", encoding="utf-8-sig")
    lora_dir = data / "models" / "Lora"
    lora_dir.mkdir(parents=True)
    (lora_dir / "detail-tweaker.safetensors").write_bytes(b"")      # listed by name; never loaded here
    presets = data / "presets"
    shutil.copytree(PRESETS_DIR, presets)
    args = parse_args(["--data-dir", str(data), "--outdir", str(data / "outputs"), "--device", "cpu",
                       "--precision", "fp32", "--controlnet-units", "2"])
    services = create_services(args)
    services.presets = PresetStore(presets, networks=services.engine.networks)   # a copy: tests save and delete
    demo = build_ui(services, AccessControl())
    ctx = demo.ui_context
    ctx.data = data
    yield ctx
    services.close()


def current(tab, **changes):
    values = {name: comp.value for name, comp in tab.fields.items()}
    values.update(changes)
    return [values[name] for name in tab.fields]


# ------------------------------------------------------------------------------------------ presets

def test_every_shipped_preset_applies_and_fields_stay_editable(ui, monkeypatch):
    tab = ui.tab_objects["txt2img"]
    controls = tab.presets
    monkeypatch.setattr(controls, "family", lambda: "sd1")                 # as with an SD 1.x checkpoint
    names = controls.names()
    assert names[0] == "Defaults" and {"Balanced", "Quality", "Fast — LCM 4 steps", "Turbo 1 step"} <= set(names)
    from webui.ui.presets import preset_lists

    assert [u["choices"] for u in preset_lists(ui)] == [names, names]      # both tabs' pickers, on page load
    for name in names:
        ckpt, vae, *updates = controls.apply(name, None, *current(tab, prompt="a cat"))
        assert len(updates) == len(tab.fields)
    ckpt, vae, *updates = controls.apply("Balanced", None, *current(tab, prompt="a cat", steps=3))
    by = dict(zip(tab.fields, updates))
    assert (by["sampler_name"]["value"], by["scheduler"]["value"], by["steps"]["value"]) == ("DPM++ 2M", "Karras", 25)
    assert by["prompt"]["value"] == "a cat"
    # the LCM preset adds its LoRA tag (and warns the file is missing); another preset takes it out again
    ckpt, vae, *updates = controls.apply("Fast — LCM 4 steps", None, *current(tab, prompt="a cat"))
    prompt = dict(zip(tab.fields, updates))["prompt"]["value"]
    assert prompt.startswith("a cat") and "<lora:" in prompt
    ckpt, vae, *updates = controls.apply("Balanced", None, *current(tab, prompt=prompt))
    assert dict(zip(tab.fields, updates))["prompt"]["value"] == "a cat"
    img = ui.tab_objects["img2img"]
    ckpt, vae, *updates = img.presets.apply("Quality", None, *current(img))
    assert len(updates) == len(img.fields)                                  # hires fields are not img2img's: skipped


def test_save_delete_and_defaults(ui):
    tab = ui.tab_objects["txt2img"]
    controls = tab.presets
    vals = current(tab, steps=13, cfg_scale=4.5, prompt="not saved")
    with pytest.raises(gr.Error, match="name"):
        controls.save_preset("", "", False, None, None, *vals)
    mine, other = controls.save_preset("My look", "13 steps", False, None, None, *vals)
    assert "My look" in mine["choices"] and mine["value"] == "My look" and "My look" in other["choices"]
    ckpt, vae, *updates = controls.apply("My look", None, *current(tab, steps=30))
    by = dict(zip(tab.fields, updates))
    assert by["steps"]["value"] == 13 and by["cfg_scale"]["value"] == 4.5
    mine, other = controls.delete_preset("My look")
    assert "My look" not in mine["choices"] and mine["value"] is None
    with pytest.raises(gr.Error, match="Choose the preset"):
        controls.delete_preset(None)
    with pytest.raises(gr.Error, match="cannot be deleted"):
        controls.delete_preset("Defaults")
    controls.save_as_defaults(*current(tab, steps=33))
    ckpt, vae, *updates = controls.apply("Defaults", None, *current(tab, steps=5, prompt="kept"))
    by = dict(zip(tab.fields, updates))
    assert by["steps"]["value"] == 33 and by["prompt"]["value"] == "kept"     # reset keeps the prompt
    from webui.ui.blocks import UIContext

    fresh = UIContext(ui.services, ui.access)                               # the next start begins with them
    assert fresh.start_values["steps"] == 33
    ui.services.presets.reset_defaults()
    assert UIContext(ui.services, ui.access).start_values == {}


# ------------------------------------------------------------------------------------------ styles, networks

def test_styles_come_from_the_data_folder_styles_csv(ui):
    assert ui.services.engine.styles is ui.services.styles
    assert ui.style_names() == ["Oil", "Moody"]
    tab = ui.tab_objects["txt2img"]
    assert [c[0] for c in tab.fields["styles"].choices] == ["Oil", "Moody"]
    req = tab.request_from({**{n: c.value for n, c in tab.fields.items()}, "styles": ["Oil"], "prompt": "a cat"})
    assert req.styles == ("Oil",)


def test_extra_networks_insert_and_remove_tags(ui):
    from webui.ui.presets import ExtraNetworks, toggle_in_prompt, toggle_lora

    tab = ui.tab_objects["txt2img"]
    assert [c[0] for c in tab.networks.lora.choices] == ["detail-tweaker"]
    assert "no embedding found" in tab.networks.hint()
    assert toggle_lora("a cat", "detail-tweaker", 0.8) == "a cat, <lora:detail-tweaker:0.8>"
    assert toggle_lora("a cat, <lora:detail-tweaker:0.8>, sunset", "detail-tweaker") == "a cat, sunset"
    assert toggle_lora("", "x") == "<lora:x:1>"
    assert toggle_in_prompt("a cat,", "easynegative") == "a cat, easynegative"
    assert toggle_in_prompt("easynegative, blurry", "easynegative") == "blurry"
    assert toggle_in_prompt("noteasynegative", "easynegative") == "noteasynegative, easynegative"
    prompt, dropdown = ExtraNetworks.pick_lora("detail-tweaker", 1.0, "a cat")
    assert prompt == "a cat, <lora:detail-tweaker:1>" and dropdown["value"] is None
    p, neg, _ = ExtraNetworks.pick_embedding("bad-hands", True, "a cat", "blurry")
    assert neg == "blurry, bad-hands" and p == gr.update()


# ------------------------------------------------------------------------------------------ ControlNet

def cn_values(tab, **unit0):
    panel = tab.controlnet
    values = {k: c.value for k, c in panel.inputs().items()}
    values.update({f"cn0_{k}": v for k, v in unit0.items()})
    return values


def test_controlnet_units_sliders_and_models(ui):
    from webui.ui.controlnet import slider_updates

    tab = ui.tab_objects["txt2img"]
    panel = tab.controlnet
    assert panel is not None and len(panel.units) == 2 and ui.tab_objects["img2img"].controlnet is not None
    res, a, b = slider_updates("canny")
    assert a["visible"] and a["label"] == "Canny Low Threshold"
    assert (a["minimum"], a["maximum"], a["value"]) == (1, 255, 100)
    assert b["label"] == "Canny High Threshold" and res["label"] == "Preprocessor Resolution"
    assert [u["visible"] for u in slider_updates("none")] == [False, False, False]
    titles, note = panel.model_choices()
    assert titles == ["None"] and "no ControlNet models found" in note
    assert panel.units_from(cn_values(tab)) == []                              # none enabled: no ControlNet at all
    image = Image.new("RGB", (64, 64), "white")
    units = panel.units_from(cn_values(tab, enabled=True, image=image, module="canny", model="None",
                                       threshold_a=50, weight=0.6, guidance_end=0.8))
    assert len(units) == 2 and units[0].enabled and not units[1].enabled      # unit numbers kept for infotext
    u = units[0]
    assert (u.module, u.threshold_a, u.threshold_b, u.weight, u.guidance_end) == ("canny", 50, 200, 0.6, 0.8)
    from pipelines.core.errors import ParameterError

    with pytest.raises(ParameterError, match=r"controlnet\[0\].guidance_start"):
        panel.units_from(cn_values(tab, enabled=True, module="canny", guidance_start=0.9, guidance_end=0.5))


def test_controlnet_units_reach_the_engine_and_preview_runs_on_the_queue(ui, monkeypatch):
    tab = ui.tab_objects["txt2img"]
    seen = {}

    def fake_submit(req, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ui.services, "submit_txt2img", fake_submit)
    monkeypatch.setattr(ui, "require_model", lambda wanted: None)
    values = {n: c.value for n, c in tab.generation_inputs().items()}
    values.update(cn_values(tab, enabled=True, image=Image.new("RGB", (64, 64)), module="none"),
                  checkpoint="", vae="Automatic", width=64, height=64)
    with pytest.raises(gr.Error, match="stop here"):
        next(tab.run(request=None, **values))
    assert [u.enabled for u in seen["controlnet"]] == [True, False]
    image = Image.new("RGB", (96, 64), "black")
    image.paste((255, 255, 255), (30, 20, 60, 44))
    preview = tab.controlnet.preview({"module": "canny", "image": image, "resize_mode": "Crop and Resize"}, 64, 48)
    assert preview.size == (64, 48) and preview.getextrema() != ((0, 0), (0, 0), (0, 0))   # edges found
    with pytest.raises(gr.Error, match="Upload a control image"):
        tab.controlnet.preview({"module": "canny"}, 64, 64)


def test_controlnet_units_are_pasted_from_infotext(ui):
    from webui.ui.pnginfo import paste_updates

    target = ui.paste.targets["txt2img"]
    text = ("a cat\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, ControlNet 1: \"Module: canny, Model: None, "
            "Weight: 0.5, Resize Mode: Crop and Resize, Processor Res: 256, Threshold A: 80, Threshold B: 160, "
            "Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, Control Mode: Balanced\"")
    out = paste_updates(ui, target, text)
    assert len(out) == len(ui.paste_outputs(target))
    panel = target.controlnet
    units = out[2 + len(target.fields):]
    per = len(panel.PASTED)
    unit0, unit1 = (dict(zip(panel.PASTED, units[i * per:(i + 1) * per])) for i in range(2))
    assert unit0["enabled"]["value"] is False                                 # gap before "ControlNet 1": off
    assert unit1["enabled"]["value"] is True and unit1["module"]["value"] == "canny"
    assert unit1["weight"]["value"] == 0.5 and unit1["guidance_end"]["value"] == 0.9
    assert unit1["threshold_a"]["value"] == 80 and unit1["threshold_a"]["label"] == "Canny Low Threshold"
    assert unit1["model"]["value"] == "None"
    plain = paste_updates(ui, target, "a cat\nSteps: 5, Seed: 1, Size: 64x64")
    assert all(u == gr.update() for u in plain[2 + len(target.fields):])  # no ControlNet entries: units untouched


# ------------------------------------------------------------------------------------------ interrogate

def test_interrogate_offline_message_is_shown(ui):
    tab = ui.tab_objects["interrogate"]
    clips = [c[1] for c in tab.clip_model.choices]
    assert clips[0] == "" and "ViT-L-14/openai" in clips
    assert any("(download)" in c[0] for c in tab.clip_model.choices)           # nothing on disk yet
    with pytest.raises(gr.Error, match="not on disk.*offline"):
        drain(tab.run(Image.new("RGB", (32, 32)), "", "", "fast"))
    with pytest.raises(gr.Error, match="Upload an image"):
        next(tab.run(None, "", "", "fast"))


def test_interrogate_result_and_send_to(ui, monkeypatch):
    tab = ui.tab_objects["interrogate"]
    result = SimpleNamespace(prompt="a dog, by somebody", mode="classic", clip_model="c", caption_model="b",
                             seconds=0.2, similarity=0.31, tops={"artists": [("by somebody", 0.3)]})
    monkeypatch.setattr(ui.services, "submit_interrogate",
                        lambda image, mode, **kw: ui.services.queue.submit(lambda control: result))
    progress, prompt, details, mode = drain(tab.run(Image.new("RGB", (32, 32)), "", "", "classic"))[-1]
    assert prompt == "a dog, by somebody" and "by somebody" in details and "similarity 0.310" in progress
    tabs, p, neg = tab.send(prompt, mode, ui.paste.targets["img2img"])
    assert tabs.selected == "img2img" and p == prompt and neg == gr.update()
    tabs, p, neg = tab.send("blurry, ugly", "negative", ui.paste.targets["txt2img"])
    assert neg == "blurry, ugly" and p == gr.update()


def test_services_pick_local_interrogation_models(ui, tmp_path):
    services = ui.services
    clip, caption = services.interrogate_models()
    assert (clip, caption) == ("ViT-L-14/openai", services.interrogator.default_caption)   # nothing local: defaults
    assert services.interrogate_models("ViT-H-14/laion2b_s32b_b79k", "blip-base") == \
        ("ViT-H-14/laion2b_s32b_b79k", "blip-base")
    services.release_interrogator()                                            # CPU: nothing to move, no error
