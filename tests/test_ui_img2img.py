"""The img2img tab in process (no browser), on the tiny SD1 model: every sub-tab's inputs, generation through
the one queue with the img2img infotext keys, batch folders, send-to between tabs, reading parameters from a
dropped PNG, the Interrogate button, and readable errors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import gradio as gr  # a runtime requirement: a missing one is an error, never a skip

from PIL import Image

from pipelines.core.errors import UserError
from webui.ui.widgets import params_for

from conftest import drain


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from tests.helpers.app import make_tiny_data_dir, tiny_app_args
    from webui.ui.blocks import build_ui

    data = make_tiny_data_dir(tmp_path_factory.mktemp("ui-img2img"))
    services = create_services(parse_args(tiny_app_args(data)))
    demo = build_ui(services, AccessControl(), startup_title="tiny-sd1")   # as the app: UI first, then the load
    job = services.submit(lambda: services.manager.load("tiny-sd1"), label="load")
    job.target_title = "tiny-sd1"
    demo.ui_context.startup_job = job
    job.wait(180)
    ctx = demo.ui_context
    ctx.data = data
    yield ctx
    services.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("img2img-inputs")
    init = root / "init.png"
    Image.new("RGB", (80, 64), (200, 40, 40)).save(init)
    mask = root / "mask.png"
    m = Image.new("L", (80, 64), 0)
    m.paste(255, (16, 16, 48, 40))
    m.save(mask)
    return SimpleNamespace(root=root, init=str(init), mask=str(mask))


def values_of(ctx, **changes):
    tab = ctx.tab_objects["img2img"]
    values = {name: comp.value for name, comp in tab.generation_inputs().items()}
    values.update(checkpoint="tiny-sd1", vae="Automatic", prompt="a red ball", steps=4, width=64, height=64, seed=7,
                  denoising_strength=0.5)
    values.update(changes)
    return values


def editor(background, strokes=None):
    """An ImageEditor value as Gradio hands it over (type="pil")."""
    layers = [strokes] if strokes is not None else []
    return {"background": background, "layers": layers, "composite": background}


def strokes(size=(80, 64), box=(10, 10, 30, 30), colour=(255, 255, 255, 255)):
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(colour, box)
    return layer


# ------------------------------------------------------------------------------------------ layout

def test_every_img2img_parameter_has_a_widget_and_tabs_link_up(ui):
    tab = ui.tab_objects["img2img"]
    assert set(tab.fields) == {p.name for p in params_for("img2img", exclude_groups=("model",))}
    assert set(tab.subtabs) == {"img2img", "sketch", "inpaint", "inpaint_sketch", "inpaint_upload", "batch"}
    assert {"img2img", "inpaint", "txt2img", "pnginfo"} <= set(ui.paste.targets)
    assert set(tab.send_buttons) == {"img2img", "inpaint", "txt2img", "pnginfo"}
    assert ui.paste.targets["inpaint"].image is tab.inpaint          # "Send to inpaint" → the Inpaint sub-tab
    from webui.ui.img2img import _mode_selected

    mode, group = _mode_selected("inpaint_upload")()                  # a sub-tab click: mode + inpaint settings
    assert mode == "inpaint_upload" and group["visible"] is True
    assert _mode_selected("sketch")()[1]["visible"] is False
    # resize mode / inpaint settings are radio buttons named as A1111 names them, sending the declared index
    radio = tab.fields["inpainting_fill"]
    assert [c[0] for c in radio.choices] == ["fill", "original", "latent noise", "latent nothing"]
    assert [c[1] for c in radio.choices] == [0, 1, 2, 3]


def test_inputs_for_each_sub_tab(files):
    from webui.ui.img2img import fit_size, inputs_for

    assert inputs_for("img2img", {"init_img": files.init}) == (files.init, None)
    assert inputs_for("inpaint_upload", {"inpaint_image": files.init, "inpaint_mask": files.mask}) == \
        (files.init, files.mask)
    bg = Image.new("RGB", (80, 64), (0, 0, 255))
    init, mask = inputs_for("sketch", {"sketch": editor(bg, strokes(colour=(255, 0, 0, 255)))})
    assert mask is None and init.getpixel((20, 20)) == (255, 0, 0) and init.getpixel((60, 50)) == (0, 0, 255)
    image, mask = inputs_for("inpaint", {"inpaint": editor(bg, strokes())})
    assert image.getpixel((20, 20)) == (0, 0, 255)                  # the image itself, not painted over
    assert mask.mode == "L" and mask.size == (80, 64)
    assert mask.getpixel((20, 20)) == 255 and mask.getpixel((60, 50)) == 0
    init, mask = inputs_for("inpaint_sketch", {"inpaint_sketch": editor(bg, strokes(colour=(0, 255, 0, 255)))})
    assert init.getpixel((20, 20)) == (0, 255, 0) and mask.getpixel((20, 20)) == 255
    for mode, values, message in (("img2img", {}, "upload an image"),
                                  ("inpaint_upload", {"inpaint_image": files.init}, "upload a mask"),
                                  ("inpaint", {"inpaint": editor(bg)}, "paint over the area"),
                                  ("sketch", {"sketch": editor(None)}, "upload an image")):
        with pytest.raises(UserError, match=message):
            inputs_for(mode, values)
    assert fit_size(80, 64) == (80, 64)
    assert fit_size(1001, 3000) == (680, 2048)                      # within the declared limits, aspect kept


# ------------------------------------------------------------------------------------------ generation

def test_inpaint_upload_generates_saves_and_reports_img2img_keys(ui, files):
    from pipelines.images.metadata import read_infotext

    tab = ui.tab_objects["img2img"]
    updates = drain(tab.run(request=None, **values_of(ui, i2i_mode="inpaint_upload", inpaint_image=files.init,
                                                         inpaint_mask=files.mask, mask_blur=2, inpainting_fill=0)))
    assert "Queued" in updates[0][tab.progress]
    running = [u[tab.progress] for u in updates if tab.progress in u and "job-progress running" in u[tab.progress]]
    assert all("img2img (2 of 4 steps at denoising 0.5)" in r for r in running if "step" in r)
    final = updates[-1]
    state = final[tab.result_state]
    assert len(state["paths"]) == 1 and "img2img-images" in state["paths"][0]
    info = final[tab.infotext]
    for key in ("Denoising strength: 0.5", "Mask blur: 2", "Masked content: fill", "Steps: 4", "Seed: 7"):
        assert key in info
    assert read_infotext(state["paths"][0])[0] == info               # the file holds what the page shows
    assert "Done: 1 image(s)" in final[tab.progress]
    # painted mask (Inpaint sub-tab) and plain img2img go the same way
    bg = Image.open(files.init).convert("RGB")
    final = drain(tab.run(request=None, **values_of(ui, i2i_mode="inpaint", inpaint=editor(bg, strokes()))))[-1]
    assert "Mask blur: 4" in final[tab.infotext]
    final = drain(tab.run(request=None, **values_of(ui, i2i_mode="img2img", init_img=files.init, resize_mode=1)))[-1]
    assert "Resize mode: Crop and resize" in final[tab.infotext] and "Mask blur" not in final[tab.infotext]


def test_batch_folder_is_resumable(ui, files, tmp_path, monkeypatch):
    tab = ui.tab_objects["img2img"]
    src, out = ui.data / "batch-in", ui.data / "batch-out"     # batch folders live under --data-dir
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.open(files.init).save(src / name)
    (src / "notes.txt").write_text("not an image")
    vals = values_of(ui, i2i_mode="batch", batch_input=str(src), batch_output=str(out), steps=2)
    final = drain(tab.run(request=None, **vals))[-1]
    assert "2 processed, 0 already done, 0 failed" in final[tab.progress]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert len(final[tab.gallery]) == 2
    final = drain(tab.run(request=None, **vals))[-1]
    assert "0 processed, 2 already done" in final[tab.progress]
    with pytest.raises(gr.Error, match="input folder"):
        next(tab.run(request=None, **values_of(ui, i2i_mode="batch", batch_input="")))
    for outside in ({"batch_input": str(tmp_path)}, {"batch_output": str(tmp_path)}, {"batch_input": "../.."}):
        with pytest.raises(gr.Error, match="inside the data folder"):            # without --allow-any-batch-folder
            next(tab.run(request=None, **{**vals, **outside}))
    monkeypatch.setattr(type(ui), "exposed", property(lambda self: True))     # --listen / --share
    with pytest.raises(gr.Error, match="disabled while the app is exposed"):
        next(tab.run(request=None, **vals))


def test_readable_errors(ui):
    tab = ui.tab_objects["img2img"]
    with pytest.raises(gr.Error, match="img2img: upload an image first"):
        next(tab.run(request=None, **values_of(ui, i2i_mode="img2img", init_img=None)))
    with pytest.raises(gr.Error, match="width: 100 is not a multiple of 8"):
        next(tab.run(request=None, **values_of(ui, width=100)))


# ------------------------------------------------------------------------------------------ moving things around

INFOTEXT = ("a castle\nNegative prompt: ugly\nSteps: 9, Sampler: Euler, CFG scale: 6, Seed: 42, Size: 64x64, "
            "Model hash: 0123456789, Model: tiny-sd1, Denoising strength: 0.35, Mask blur: 8, Lora hashes: \"x: 1\"")


def test_send_result_to_inpaint_pnginfo_and_txt2img(ui, files):
    from webui.ui.img2img import editor_value
    from webui.ui.pnginfo import paste_updates

    inpaint = ui.paste.targets["inpaint"]
    out = paste_updates(ui, inpaint, INFOTEXT, files.init)
    tabs, ckpt, *rest = out
    n = len(inpaint.fields)
    fields, (image, subtab, mode, group) = dict(zip(inpaint.fields, rest[:n])), rest[n:n + 4]
    assert tabs.selected == "img2img" and ckpt["value"] == "tiny-sd1"
    assert image == editor_value(files.init) and subtab["selected"] == "inpaint" and mode == "inpaint"
    assert group["visible"] is True
    assert fields["denoising_strength"]["value"] == 0.35 and fields["mask_blur"]["value"] == 8
    assert fields["prompt"]["value"] == "a castle" and fields["steps"]["value"] == 9
    assert len(ui.paste_outputs(inpaint)) == len(out)
    png = ui.paste.targets["pnginfo"]
    tabs, ckpt, image = paste_updates(ui, png, INFOTEXT, files.init)   # only the image: PNG Info reads it
    assert tabs.selected == "pnginfo" and image == files.init
    txt = ui.paste.targets["txt2img"]
    out = paste_updates(ui, txt, INFOTEXT, files.init)                 # parameters only
    assert len(out) == len(ui.paste_outputs(txt)) and txt.image is None
    assert dict(zip(txt.fields, out[2:]))["seed"]["value"] == 42


def test_png_dropped_on_the_prompt_fills_the_fields(ui, files, tmp_path):
    from pipelines.images.metadata import write_image

    tab = ui.tab_objects["img2img"]
    path = tmp_path / "with-params.png"
    write_image(Image.new("RGB", (64, 64)), path, INFOTEXT, "png")
    tabs, ckpt, *updates = tab._paste_from_image(str(path))
    by_name = dict(zip(ui.paste.targets["img2img"].fields, updates))
    assert by_name["prompt"]["value"] == "a castle" and by_name["negative_prompt"]["value"] == "ugly"
    assert by_name["cfg_scale"]["value"] == 6 and by_name["denoising_strength"]["value"] == 0.35
    target = ui.paste.targets["img2img"]
    assert len(updates) + 2 == len(ui.paste_outputs(target, with_image=False))   # fields (+ ControlNet units)
    with pytest.raises(gr.Error, match="no generation parameters"):
        tab._paste_from_image(files.init)


def test_interrogate_button_fills_the_prompt(ui, files, monkeypatch):
    tab = ui.tab_objects["img2img"]
    seen = {}

    def fake(image, mode, **kw):
        seen.update(size=image.size, mode=mode)
        return ui.services.queue.submit(lambda control: SimpleNamespace(prompt="a red square, by nobody",
                                                                        mode=mode, seconds=0.1))

    monkeypatch.setattr(ui.services, "submit_interrogate", fake)
    updates = drain(tab.run_interrogate(i2i_mode="img2img", init_img=files.init))
    assert updates[-1][tab.fields["prompt"]] == "a red square, by nobody"
    assert seen == {"size": (80, 64), "mode": "classic"}
    with pytest.raises(gr.Error, match="upload an image first"):
        next(tab.run_interrogate(i2i_mode="inpaint", inpaint=None))
    w, h = tab._size_from_image(i2i_mode="img2img", init_img=files.init)
    assert (w, h) == (80, 64)
