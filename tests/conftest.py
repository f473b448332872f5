"""Shared fixtures: tiny random models of the real architectures, written in the real on-disk layouts.

`tiny_models` builds once per session a models folder in AUTOMATIC1111's layout:

    models/Stable-diffusion/tiny-sd1.safetensors          single-file, original LDM keys
    models/Stable-diffusion/tiny-sd1-inpaint.safetensors  9-channel UNet
    models/Stable-diffusion/sub/tiny-sd2.safetensors      (recursive discovery)
    models/Stable-diffusion/tiny-sdxl.safetensors
    models/Stable-diffusion/tiny-sdxl-refiner.safetensors
    models/Stable-diffusion/tiny-sd1-diffusers/           diffusers folder
    models/Stable-diffusion/tiny-sdxl-diffusers/
    configs/<family>/                                     the tiny equivalent of pipelines/models/configs/

The loader is pointed at `configs/` instead of the bundled full-size configs; every other code path
(header detection, single-file conversion, tokenizers, manager, generation) is the real one.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Property tests draw the same examples on every run (a CI failure reproduces locally, and a green run
# is not a lucky draw); HYPOTHESIS_PROFILE=explore draws fresh random examples for a hunting session.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser):
    parser.addoption("--screenshots", metavar="DIR", default=None,
                     help="write the browser tests' screenshots to DIR (the docs images: "
                          "--screenshots docs/screenshots); default: the session's tmp folder")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skipped test is a failure: a missing browser, package or feature must not pass
    silently as "skipped". Locally a skip stays a skip, with its reason in the -ra summary."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (pytest.importorskip, a module-level skip)."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI (CI=true), which counts as a failure: {report.longrepr}"


@dataclass
class TinyModels:
    root: Path
    models: Path
    configs: Path

    @property
    def checkpoints(self) -> Path:
        return self.models / "Stable-diffusion"


FILES = {
    "sd1": "tiny-sd1.safetensors",
    "sd1_inpaint": "tiny-sd1-inpaint.safetensors",
    "sd2": "sub/tiny-sd2.safetensors",
    "sdxl": "tiny-sdxl.safetensors",
    "sdxl_refiner": "tiny-sdxl-refiner.safetensors",
}
FOLDERS = {"sd1": "tiny-sd1-diffusers", "sdxl": "tiny-sdxl-diffusers"}
FAMILY_OF = {"sd1": "sd1", "sd1_inpaint": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sdxl_refiner": "sdxl_refiner"}


def drain(gen, limit: float = 90.0) -> list:
    """Everything a UI generator handler yields (its progress updates, then the result), within `limit` s."""
    out, start = [], time.monotonic()
    for item in gen:
        out.append(item)
        assert time.monotonic() - start < limit
    return out


def build_tiny_models(root: Path) -> TinyModels:
    from bench.synth.factory import tiny_pipeline, write_config_folder, write_diffusers_folder, write_single_file

    tm = TinyModels(root, root / "models", root / "configs")
    tm.checkpoints.mkdir(parents=True, exist_ok=True)
    for arch, name in FILES.items():
        pipe = tiny_pipeline(arch, seed=1)
        (tm.checkpoints / name).parent.mkdir(parents=True, exist_ok=True)
        write_single_file(pipe, tm.checkpoints / name, arch)
        if arch == FAMILY_OF[arch]:
            write_config_folder(pipe, tm.configs / arch)
        if arch in FOLDERS:
            write_diffusers_folder(pipe, tm.checkpoints / FOLDERS[arch])
    return tm


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models are all overhead: one thread is several times faster than two fighting over 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def make_manager(tiny_models, tmp_path):
    """PipelineManager over the tiny models (fp32 on CPU), each test with its own hash cache."""
    from pipelines.core.devices import make_policy
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry

    def make(cache_size: int = 2, models_dir: Path | None = None, **kw) -> PipelineManager:
        paths = ModelPaths(models_dir or tiny_models.models, cache_dir=tmp_path / "cache")
        registry = ModelRegistry(paths, hashing=kw.pop("hashing", True))
        return PipelineManager(registry, policy=make_policy("cpu", "fp32"), cache_size=cache_size,
                               config_root=tiny_models.configs, **kw)

    return make


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def chromium_path() -> str | None:
    import shutil

    for name in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def screenshots_dir(request, tmp_path_factory) -> Path:
    """Where browser tests put their screenshots: the tmp folder, so a test run leaves the checkout clean.
    The docs images are regenerated on purpose with
    `python launch.py --run-tests -m browser --screenshots docs/screenshots`."""
    chosen = request.config.getoption("--screenshots")
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (its own browser download does not work offline)."""
    path = chromium_path()
    if path is None:
        pytest.skip("chromium not found (apt-get install chromium, or `python launch.py --run-tests` installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str):
    """A page on the app, ready once the txt2img tab has rendered; page errors are kept in `js_errors`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.goto(url)
    pg.wait_for_selector("#txt2img_generate", timeout=30_000)
    pg.js_errors = errors
    yield pg
    context.close()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")
