"""End to end in a real browser: headless Chromium (Debian's) driven by Playwright, the app on a tiny model.

txt2img: type a prompt, Generate, wait for the image in the gallery, check the saved file's embedded
parameters. PNG Info: drop that file, send it to txt2img, check every field it names was filled.
Screenshots of both tabs go to the `screenshots_dir` fixture's folder (tmp; see conftest for the docs images).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import open_page, set_number

pytestmark = pytest.mark.browser

PROMPT = "a lighthouse at dusk, (oil painting:1.2)"
NEGATIVE = "blurry"




@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tests.helpers.app import AppProcess, make_tiny_data_dir, tiny_app_args

    data = make_tiny_data_dir(tmp_path_factory.mktemp("browser-app"))
    with AppProcess(tiny_app_args(data)) as proc:
        proc.wait_model_loaded()
        proc.data = data
        yield proc


@pytest.fixture
def page(browser, app):
    yield from open_page(browser, app.url)




def outputs(app) -> list[Path]:
    return sorted((app.data / "outputs").rglob("*.png"))


@pytest.fixture(scope="module")
def generated(browser, app, screenshots_dir):
    """Generate once through the UI; returns the saved file and what the page showed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#txt2img_generate", timeout=30_000)
    before = set(outputs(app))
    page.locator("#txt2img_prompt textarea").fill(PROMPT)
    page.locator("#txt2img_negative_prompt textarea").fill(NEGATIVE)
    set_number(page, "txt2img_steps", 3)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    seed = page.locator("#txt2img_seed input")
    seed.fill("1234")
    seed.press("Tab")
    counter_js = "document.querySelector('#txt2img_token_counter span.token-counter')"
    page.wait_for_function(f"{counter_js} && {counter_js}.textContent.trim() !== '0/75'", timeout=30_000)
    counter = page.locator("#txt2img_token_counter span.token-counter").text_content().strip()
    page.click("#txt2img_generate")
    page.wait_for_selector("#txt2img_gallery img", timeout=90_000)
    page.wait_for_function("document.querySelector('#txt2img_progress')?.innerText.includes('Done')", timeout=90_000)
    infotext = page.input_value("#txt2img_infotext textarea")
    page.screenshot(path=str(screenshots_dir / "txt2img.png"), full_page=True)
    new = sorted(set(outputs(app)) - before)
    context.close()
    return {"files": new, "infotext": infotext, "counter": counter}


def test_txt2img_generates_and_saves_parameters(generated):
    from pipelines.images.metadata import read_infotext

    assert len(generated["files"]) == 1, generated
    path = generated["files"][0]
    text, raw = read_infotext(path)
    assert text is not None and text.startswith(PROMPT)
    assert f"Negative prompt: {NEGATIVE}" in text
    for part in ("Steps: 3", "Seed: 1234", "Size: 64x64", "Model: tiny-sd1"):
        assert part in text
    assert generated["infotext"] == text       # the UI shows what the file holds
    assert generated["counter"] == "7/75"   # CLIP tokens after emphasis parsing, per 75-token chunk


def test_pnginfo_sends_every_field_to_txt2img(page, generated, app, screenshots_dir):
    path = generated["files"][0]
    page.reload()
    page.wait_for_selector("#txt2img_generate", timeout=30_000)
    assert page.input_value("#txt2img_steps input[type=number]") == "20"   # fresh defaults first
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#pnginfo_generation_info table", timeout=30_000)
    info = page.inner_text("#pnginfo_generation_info")
    assert PROMPT in info and "1234" in info
    page.wait_for_function("!document.querySelector('#pnginfo_send_to_txt2img').disabled", timeout=10_000)
    page.screenshot(path=str(screenshots_dir / "pnginfo.png"), full_page=True)
    page.click("#pnginfo_send_to_txt2img")
    page.wait_for_function(
        f"document.querySelector('#txt2img_prompt textarea')?.value === {PROMPT!r}", timeout=15_000)
    page.wait_for_selector("#tab_txt2img", state="visible", timeout=10_000)  # the send switched tabs
    assert page.input_value("#txt2img_negative_prompt textarea") == NEGATIVE
    assert page.input_value("#txt2img_steps input[type=number]") == "3"
    assert page.input_value("#txt2img_width input[type=number]") == "64"
    assert page.input_value("#txt2img_height input[type=number]") == "64"
    assert page.input_value("#txt2img_seed input") == "1234"
    assert page.input_value("#txt2img_cfg_scale input[type=number]") == "7"
    assert page.input_value("#sd_checkpoint input") == "tiny-sd1"
    assert not page.js_errors, page.js_errors


def test_engine_error_is_shown_not_swallowed(page):
    """An error raised inside the queued job reaches the user as a readable message."""
    page.locator("#txt2img_prompt textarea").fill("a cat AND a dog")
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    page.click("#txt2img_generate")
    toast = page.get_by_text("AND (composable diffusion) is not supported").first
    toast.wait_for(timeout=60_000)
