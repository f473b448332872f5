"""img2img end to end in a real browser (Debian's Chromium driven by Playwright), the app on a tiny model.

Inpaint upload: upload an image and a mask, Generate, the result shows in the gallery and the saved file's
embedded parameters carry the img2img keys (Denoising strength, Mask blur). The saved PNG dropped on the
txt2img prompt fills the fields. Interrogate (tiny random CLIP + caption models in models/interrogate)
turns an image into a prompt. Screenshots img2img.png, interrogate.png go to
the `screenshots_dir` fixture's folder (tmp unless --screenshots DIR).
"""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from conftest import open_page, set_number

pytestmark = pytest.mark.browser

PROMPT = "a red barn in a green field"




def write_inputs(folder: Path) -> tuple[Path, Path]:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (70, 140, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 14, 66, 50), fill=(170, 30, 30))
    draw.polygon([(26, 16), (48, 2), (70, 16)], fill=(120, 20, 20))
    mask = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(mask).ellipse((36, 22, 60, 46), fill=255)
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "barn.png")
    mask.save(folder / "barn-mask.png")
    return folder / "barn.png", folder / "barn-mask.png"


def write_interrogation_models(data: Path) -> None:
    """Tiny random CLIP + BLIP in models/interrogate, and short label lists in <data>/interrogate."""
    from bench.interrogate import tiny_label_lists, write_blip, write_open_clip

    write_open_clip(data / "models" / "interrogate" / "tiny-clip")
    write_blip(data / "models" / "interrogate" / "blip-tiny")
    lists = tiny_label_lists()
    lists["artists"] = ["Claude Monet", "Hokusai", "Ansel Adams"]        # raw names / sites, as the files hold them
    lists["trendings"] = ["Artstation", "pixiv"]
    (data / "interrogate").mkdir(exist_ok=True)
    for name, items in lists.items():
        (data / "interrogate" / f"{name}.txt").write_text("\n".join(items) + "\n")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests.helpers.app import AppProcess, make_tiny_data_dir, tiny_app_args

    data = make_tiny_data_dir(tmp_path_factory.mktemp("browser-img2img"))
    write_interrogation_models(data)
    with AppProcess(tiny_app_args(data)) as proc:
        proc.wait_model_loaded()
        proc.data = data
        proc.inputs = write_inputs(data / "inputs")
        yield proc


@pytest.fixture(scope="module")
def page(browser, app):
    yield from open_page(browser, app.url)




def outputs(app, kind: str) -> list[Path]:
    return sorted((app.data / "outputs" / kind).rglob("*.png"))


def test_inpaint_upload_generates_and_saves(page, app, screenshots_dir):
    from pipelines.images.metadata import read_infotext

    image, mask = app.inputs
    page.click("#tab_img2img-button")
    page.click("#img2img_inpaint_upload_tab-button")
    page.locator("#img2img_inpaint_upload_image input[type=file]").set_input_files(str(image))
    page.locator("#img2img_inpaint_upload_mask input[type=file]").set_input_files(str(mask))
    page.wait_for_selector("#img2img_inpaint_upload_mask img", timeout=20_000)
    # The mask settings appear on inpaint sub-tabs (shown by the tab's select event, so wait for it).
    page.wait_for_selector("#img2img_mask_blur", state="visible", timeout=15_000)
    page.locator("#img2img_prompt textarea").fill(PROMPT)
    set_number(page, "img2img_steps", 4)
    set_number(page, "img2img_width", 96)
    set_number(page, "img2img_height", 64)
    set_number(page, "img2img_denoising_strength", 0.75)
    seed = page.locator("#img2img_seed input")
    seed.fill("4321")
    seed.press("Tab")
    before = set(outputs(app, "img2img-images"))
    page.click("#img2img_generate")
    page.wait_for_function("document.querySelector('#img2img_progress')?.innerText.includes('Done')", timeout=90_000)
    page.wait_for_selector("#img2img_gallery img", timeout=30_000)
    new = sorted(set(outputs(app, "img2img-images")) - before)
    assert len(new) == 1, new
    text, _ = read_infotext(new[0])
    assert text.startswith(PROMPT)
    for part in ("Steps: 4", "Seed: 4321", "Size: 96x64", "Denoising strength: 0.75", "Mask blur: 4"):
        assert part in text
    assert page.input_value("#img2img_infotext textarea") == text
    page.screenshot(path=str(screenshots_dir / "img2img.png"), full_page=True)
    app.saved = new[0]
    assert not page.js_errors, page.js_errors


def test_png_dropped_on_the_prompt_fills_txt2img(page, app):
    path = getattr(app, "saved", None)
    assert path is not None, "needs the image saved by test_inpaint_upload_generates_and_saves (it failed)"
    page.click("#tab_txt2img-button")
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
            return dt;
        }""", data)
    page.dispatch_event("#txt2img_prompt textarea", "drop", {"dataTransfer": transfer})
    page.wait_for_function(f"document.querySelector('#txt2img_prompt textarea')?.value === {PROMPT!r}",
                           timeout=20_000)
    assert page.input_value("#txt2img_steps input[type=number]") == "4"
    assert page.input_value("#txt2img_seed input") == "4321"


def test_interrogate_turns_an_image_into_a_prompt(page, app, screenshots_dir):
    image, _ = app.inputs
    page.click("#tab_interrogate-button")
    page.locator("#interrogate_image input[type=file]").set_input_files(str(image))
    page.wait_for_selector("#interrogate_image img", timeout=20_000)
    page.click("#interrogate_run")
    page.wait_for_function("document.querySelector('#interrogate_progress')?.innerText.includes('Done')",
                           timeout=90_000)
    prompt = page.input_value("#interrogate_prompt textarea")
    assert prompt and "tiny-clip" in page.inner_text("#interrogate_progress")
    page.screenshot(path=str(screenshots_dir / "interrogate.png"), full_page=True)
    page.click("#interrogate_send_to_img2img")
    page.wait_for_function(f"document.querySelector('#img2img_prompt textarea')?.value === {prompt!r}",
                           timeout=15_000)
