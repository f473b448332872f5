"""The UI as an AUTOMATIC1111 user expects it, through the Gradio handlers in process (fast; the browser test
in test_browser_ui.py covers what needs a page): presets in any order then Generate, nothing stale in the
infotext, inpainting with a VAE scale factor of 2, pasting an infotext from the prompt box, Interrupt keeping
the partial image, the styles editor."""
from __future__ import annotations

import shutil

import pytest

gr = pytest.importorskip("gradio")

from conftest import drain  # noqa: E402

FAST = "Fast — LCM 4 steps"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from pipelines.params.presets import PRESETS_DIR, PresetStore
    from tests.helpers.app import make_tiny_data_dir, tiny_app_args
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from webui.ui.blocks import build_ui

    data = make_tiny_data_dir(tmp_path_factory.mktemp("ui-behaviour"))
    presets = data / "presets"
    shutil.copytree(PRESETS_DIR, presets)
    services = create_services(parse_args(tiny_app_args(data, "--no-hashing", "--controlnet-units", "0")))
    services.presets = PresetStore(presets, networks=services.engine.networks)
    services.manager.load("tiny-sd1")
    demo = build_ui(services, AccessControl())
    ctx = demo.ui_context
    ctx.data = data
    yield ctx
    services.close()


def write_vae2_model(folder):
    """A tiny SD1 diffusers folder whose VAE downsamples by 2 (two blocks) instead of SD's 8."""
    import torch
    from diffusers import AutoencoderKL

    from bench.synth.factory import _tiny_vae_config, tiny_pipeline, write_diffusers_folder

    pipe = tiny_pipeline("sd1", seed=3)
    cfg = _tiny_vae_config(0.18215)
    cfg.update(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.register_modules(vae=AutoencoderKL(**cfg).eval())
    return write_diffusers_folder(pipe, folder)


class Page:
    """What the browser holds for one tab: each field's value and each dropdown's choices, changed only by
    the updates the handlers return (as Gradio applies them)."""

    def __init__(self, tab):
        self.tab = tab
        self.values = {name: comp.value for name, comp in tab.generation_inputs().items()}
        self.choices = {name: [c[1] if isinstance(c, tuple) else c for c in comp.choices]
                        for name, comp in tab.fields.items() if getattr(comp, "choices", None)}

    def field_values(self) -> list:
        return [self.values[name] for name in self.tab.fields]

    def take(self, names, updates) -> None:
        for name, update in zip(names, updates):
            if not isinstance(update, dict):
                self.values[name] = update
                continue
            if "choices" in update:
                self.choices[name] = [c[1] if isinstance(c, (tuple, list)) else c for c in update["choices"]]
            if "value" in update:
                self.values[name] = update["value"]

    def check_choices(self) -> None:
        """Gradio refuses a dropdown value that is not among its choices (the error of issue 16)."""
        for name, choices in self.choices.items():
            value = self.values[name]
            for v in value if isinstance(value, list) else [value]:
                assert v is None or v in choices, f"{name}: {v!r} is not in {choices}"

    def apply_preset(self, name: str) -> None:
        ckpt, vae, *updates = self.tab.presets.apply(name, self.values["checkpoint"], *self.field_values())
        self.take(self.tab.fields, updates)
        self.check_choices()


def generate(ui, tab, page: Page):
    page.check_choices()
    out = drain(tab.run(request=None, **page.values))
    final = out[-1]
    return final[tab.infotext], final[tab.result_state]


def test_presets_in_any_order_reset_what_they_do_not_name_and_generate(ui):
    tab = ui.tab_objects["txt2img"]
    page = Page(tab)
    page.values.update(prompt="a lighthouse", width=64, height=64, seed=5, checkpoint=ui.current_checkpoint())
    page.apply_preset(FAST)
    assert (page.values["sampler_name"], page.values["vae_type"], page.values["steps"]) == ("LCM", "Tiny", 4)
    assert page.choices["scheduler"] == ["Automatic", "SGM Uniform"]          # the LCM sampler's schedule types
    assert "<lora:lcm-lora-sdv1-5:1>" in page.values["prompt"]
    seen = []
    for name in ("Balanced", "Quality", FAST, "Balanced"):
        page.apply_preset(name)
        seen.append((page.values["sampler_name"], page.values["scheduler"], page.values["vae_type"],
                     page.values["enable_hr"]))
        assert page.values["prompt"].startswith("a lighthouse") and page.values["width"] == 64   # kept
        if name == "Balanced":
            text, _ = generate(ui, tab, page)
            assert "Schedule type: Karras" in text and "VAE type" not in text and "Hires" not in text
            assert "lcm-lora" not in text
    assert seen == [("DPM++ 2M", "Karras", "Full", False), ("DPM++ 2M", "Karras", "Full", True),
                    ("LCM", "Automatic", "Tiny", False), ("DPM++ 2M", "Karras", "Full", False)]
    assert "Karras" in page.choices["scheduler"]
    # fields no preset names go back to the default too (a cfg cut-off left from an earlier job)
    page.values["cfg_cutoff"] = 0.5
    page.apply_preset("Balanced")
    assert page.values["cfg_cutoff"] == 1.0


def test_preset_description_is_shown(ui):
    controls = ui.tab_objects["txt2img"].presets
    assert "DPM++ 2M" in controls.describe("Balanced") and controls.describe(None) == ""


def test_xyz_values_of_an_axis_back_to_nothing_do_not_reach_the_infotext(ui):
    tab = ui.tab_objects["txt2img"]
    assert "xyz_x_values" in tab.ext_fields
    hooks = ui.services.engine.hooks
    page = Page(tab)
    page.values.update({"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler",
                        "checkpoint": ui.current_checkpoint(), "ext__xyz_x_type": "Nothing",
                        "ext__xyz_x_values": "3,7"})
    req = hooks.before_generation(tab.request_from(page.values))
    assert "X Values" not in hooks.infotext(req)
    req = hooks.before_generation(tab.request_from({**page.values, "ext__xyz_x_type": "Sampling steps"}))
    assert hooks.infotext(req)["X Values"] == "3,7"                           # in effect: recorded


def test_inpaint_upload_with_a_vae_scale_factor_of_2(ui, tmp_path):
    """Tiny VAEs downsample by 2, SD's by 8: the mask's latent size must follow the pipeline's factor."""
    import numpy as np
    from PIL import Image

    folder = write_vae2_model(ui.data / "models" / "Stable-diffusion" / "tiny-vae2")
    services = ui.services
    services.registry.refresh()
    title = ui.find_checkpoint(folder.name)
    services.manager.load(title)
    try:
        assert services.manager.active.pipe.vae_scale_factor == 2
        tab = ui.tab_objects["img2img"]
        image, mask = tmp_path / "init.png", tmp_path / "mask.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
        m = Image.new("L", (64, 64), 0)
        m.paste(255, (16, 16, 48, 48))
        m.save(mask)
        page = Page(tab)
        page.values.update(prompt="a cat", width=64, height=64, steps=2, sampler_name="Euler", seed=1,
                           checkpoint=title, mask_blur=0)
        page.values.update(i2i_mode="inpaint_upload", inpaint_image=str(image), inpaint_mask=str(mask))
        text, state = generate(ui, tab, page)
        assert "Mask blur" not in text and "Denoising strength" in text and len(state["paths"]) == 1
        out = np.asarray(Image.open(state["paths"][0]).convert("RGB")).astype(int)
        src = np.asarray(Image.open(image).convert("RGB")).astype(int)
        outside = np.asarray(m) == 0
        assert np.abs(out[outside] - src[outside]).max() <= 1                 # unmasked pixels kept
    finally:
        services.manager.load("tiny-sd1")


# An infotext as AUTOMATIC1111 1.10 writes it (copied from a web page into the prompt box).
A1111_INFOTEXT = (
    "masterpiece, a castle on a hill, <lora:detail-tweaker:0.6>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.5, Clip skip: 2, Hires upscale: 2, "
    "Hires steps: 10, Hires upscaler: Latent, Lora hashes: \"detail-tweaker: 7c6c2b9ea3cc\", Version: v1.10.1")


def test_paste_an_a1111_infotext_from_the_prompt_box(ui):
    tab = ui.tab_objects["txt2img"]
    page = Page(tab)
    target = ui.paste.targets["txt2img"]
    outputs = ui.paste_outputs(target, with_image=False)
    names = ["tabs", "checkpoint", *target.fields, "vae"]           # the fields include the extensions' ones
    assert len(outputs) == len(names) and outputs[-1] is ui.vae
    with pytest.warns(UserWarning) as shown:
        updates = tab._paste_from_prompt(A1111_INFOTEXT)
    page.take(names, updates)
    page.check_choices()
    v = page.values
    assert v["prompt"] == "masterpiece, a castle on a hill, <lora:detail-tweaker:0.6>"
    assert v["negative_prompt"] == "blurry, lowres"
    assert (v["steps"], v["sampler_name"], v["scheduler"], v["cfg_scale"], v["seed"]) == \
        (28, "DPM++ 2M", "Karras", 6.5, 1234567890)
    assert (v["width"], v["height"], v["clip_skip"]) == (512, 768, 2)
    assert (v["enable_hr"], v["hr_scale"], v["hr_second_pass_steps"], v["hr_upscaler"], v["denoising_strength"]) == \
        (True, 2, 10, "Latent", 0.5)
    missing = " ".join(str(w.message) for w in shown)
    for name in ("v1-5-pruned-emaonly", "vae-ft-mse-840000-ema-pruned", "detail-tweaker", "models/Lora"):
        assert name in missing                                             # each missing model is named
    # a prompt without parameters changes nothing (the page opens the file picker instead)
    assert all(u == gr.update() for u in tab._paste_from_prompt("just a prompt"))
    # a checkpoint, VAE and LoRA that are on disk get selected, with no warning
    (ui.data / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    (ui.data / "models" / "VAE" / "vae-ft-mse-840000-ema-pruned.safetensors").write_bytes(b"")
    lora_dir = ui.data / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    (lora_dir / "detail-tweaker.safetensors").write_bytes(b"")
    ui.services.registry.refresh()
    text = A1111_INFOTEXT.replace("Model: v1-5-pruned-emaonly", "Model: tiny-sd1")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        updates = tab._paste_from_prompt(text)
    by = dict(zip(names, updates))
    assert by["checkpoint"]["value"] == ui.current_checkpoint() or by["checkpoint"] == gr.update()
    assert by["vae"]["value"] == "vae-ft-mse-840000-ema-pruned.safetensors"


def read_like_a1111(path):
    """styles.csv as AUTOMATIC1111's StyleDatabase reads it (modules/styles.py: utf-8-sig, csv.DictReader)."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file, skipinitialspace=True)
        assert reader.fieldnames == ["name", "prompt", "negative_prompt"]
        return {row["name"]: (row["prompt"], row["negative_prompt"]) for row in reader}


def test_styles_editor_round_trip_writes_an_a1111_file(ui):
    tab = ui.tab_objects["txt2img"]
    editor = tab.styles_editor
    fields, pickers = editor.everyone()
    assert len(fields) == 2 and len(pickers) == 2                         # both tabs follow every change
    assert str(ui.services.styles.path) in editor.hint()
    with pytest.raises(gr.Error, match="name"):
        editor.save_style(" ", "x", "")
    updates = editor.save_style("Oil, thick", "{prompt}, oil painting, \"impasto\"", "photo")
    assert all("Oil, thick" in u["choices"] for u in updates) and updates[len(fields)]["value"] == "Oil, thick"
    path = ui.services.styles.path
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")                    # UTF-8 with BOM, as A1111 writes
    assert read_like_a1111(path) == {"Oil, thick": ("{prompt}, oil painting, \"impasto\"", "photo")}
    assert editor.load("Oil, thick") == ("Oil, thick", "{prompt}, oil painting, \"impasto\"", "photo")
    assert editor.apply("Oil, thick", "a harbour", "blurry") == ("a harbour, oil painting, \"impasto\"",
                                                                 "blurry, photo")
    editor.save_style("Oil, thick", "{prompt}, oil painting", "")            # edit
    editor.save_style("Moody", "dark and moody", "")
    assert read_like_a1111(path) == {"Oil, thick": ("{prompt}, oil painting", ""), "Moody": ("dark and moody", "")}
    req = tab.request_from({**{n: c.value for n, c in tab.fields.items()}, "styles": ["Oil, thick"],
                            "prompt": "a cat"})
    assert req.styles == ("Oil, thick",)
    updates = editor.delete_style("Oil, thick", ["Oil, thick", "Moody"], [])
    assert updates[0]["value"] == ["Moody"] and updates[0]["choices"] == ["Moody"]   # the field drops it too
    assert read_like_a1111(path) == {"Moody": ("dark and moody", "")}
    with pytest.raises(gr.Error, match="Choose the style"):
        editor.delete_style(None, [], [])


def test_interrupt_at_step_2_of_10_keeps_and_saves_the_partial_image(ui, monkeypatch):
    from pipelines.core.jobs import JobControl

    real_update = JobControl.update

    def update(self, **changes):   # the user presses Interrupt while step 2 of 10 runs
        real_update(self, **changes)
        if changes.get("step") == 2:
            self.interrupt()

    monkeypatch.setattr(JobControl, "update", update)
    tab = ui.tab_objects["txt2img"]
    page = Page(tab)
    page.values.update(prompt="a lighthouse", width=64, height=64, steps=10, sampler_name="Euler", seed=3,
                       checkpoint=ui.current_checkpoint())
    final = drain(tab.run(request=None, **page.values))[-1]
    state = final[tab.result_state]
    assert "Interrupted: 1 image(s) kept" in final[tab.progress]
    assert len(state["paths"]) == 1 and final[tab.gallery] == state["paths"]     # shown and saved
    from pipelines.images.metadata import read_infotext

    assert "Steps: 10" in read_infotext(state["paths"][0])[0]
