"""Extensions in the running app on the tiny model: a test extension's tab, parameter (widget, infotext,
API schema) and route; broken extensions that do not stop the app or the generation; the bundled
X/Y/Z plot and prompt matrix; disabling an extension removes its tab after a restart."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

DEMO = '''
from pipelines.params.declarations import Param


def setup(ext):
    events = {"steps": 0, "saved": [], "after": 0, "started": 0, "stages": []}
    ext.add_param(Param("demo_strength", float, 0.5, "Demo strength", "Demo strength", 0.0, 1.0, 0.05),
                  section="Demo extension")

    def build():
        import gradio as gr

        gr.Markdown("Hello from the demo extension", elem_id="demo_hello")

    ext.add_tab("Demo tab", build)

    @ext.on_step
    def step(progress):
        events["steps"] += 1
        events["stages"].append((progress.stage, progress.step, progress.steps))

    @ext.after_image_saved
    def saved(path, infotext):
        events["saved"].append([str(path), infotext])

    @ext.after_generation
    def after(result):
        events["after"] += 1

    @ext.app_started
    def started(app):
        events["started"] += 1

    ext.add_api_route("/demo/events", lambda: events, methods=["GET"])
'''

BAD_HOOK = '''
def setup(ext):
    @ext.before_generation
    def explode(req):
        raise RuntimeError("boom in hook")
'''


def write_ext(root: Path, name: str, main: str, **files: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "extension.json").write_text(json.dumps({"name": name.replace("_", " ").title(), "version": "0.1"}))
    (folder / "main.py").write_text(textwrap.dedent(main))
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def tab_labels(demo) -> list[str]:
    import gradio as gr

    return [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.extensions.loader import page_assets
    from webui.app.server import create_app, start_server
    from webui.app.services import create_services
    from tests.helpers.app import free_port, make_tiny_data_dir, tiny_app_args
    from webui.ui.blocks import CSS, build_ui

    root = tmp_path_factory.mktemp("extapp")
    data = make_tiny_data_dir(root / "data")
    ckpts = data / "models" / "Stable-diffusion"
    shutil.copytree(ckpts / "tiny-sd1", ckpts / "tiny-sd1-b")      # a second checkpoint for the X/Y/Z axis
    ext_dir = root / "extensions"
    write_ext(ext_dir, "demo_ext", DEMO, **{"style.css": "#demo_hello { color: teal; }",
                                            "javascript/demo.js": "window.demoExtension = 1;"})
    write_ext(ext_dir, "broken_import", "import no_such_module_for_tests\n\ndef setup(ext):\n    pass\n")
    write_ext(ext_dir, "bad_hook", BAD_HOOK)
    argv = tiny_app_args(data, "--api", "--extensions-dir", str(ext_dir), "--extensions-dir", str(ROOT / "extensions"))
    args = parse_args(argv)
    services = create_services(args)
    services.submit(lambda: services.manager.load("tiny-sd1")).wait(120)
    demo = build_ui(services, AccessControl())
    css, head = page_assets(services)
    port = free_port()
    fastapi_app = create_app(services, AccessControl(), demo, api=True, css=CSS + css, head=head, port=port)
    running = start_server(fastapi_app, "127.0.0.1", port)
    try:
        yield SimpleNamespace(services=services, demo=demo, ctx=demo.ui_context, base=f"http://127.0.0.1:{port}",
                              argv=argv, data=data, hooks=services.engine.hooks)
    finally:
        running.stop()
        services.close()


def ui_values(ctx, **changes):
    """What the txt2img Generate handler receives: every input's current value, then `changes`."""
    tab = ctx.tab_objects["txt2img"]
    values = {name: comp.value for name, comp in tab.generation_inputs().items()}
    values.update(checkpoint="tiny-sd1", vae="Automatic", prompt="a red ball", steps=2, width=64, height=64, seed=7)
    values.update(changes)
    return values


def test_extension_adds_a_tab_a_parameter_and_a_route(app):
    from pipelines.images.metadata import read_infotext
    from webui.ui.generation import EXT_PREFIX

    assert "Demo tab" in tab_labels(app.demo) and "Extensions" in tab_labels(app.demo)
    tab = app.ctx.tab_objects["txt2img"]
    widget = tab.ext_fields["demo_strength"]
    assert widget.label == "Demo strength" and widget.value == 0.5 and widget.maximum == 1.0
    assert "demo_strength" in app.ctx.tab_objects["img2img"].ext_fields
    assert "demo_strength" in [p.name for p in app.hooks.all_params("txt2img")]

    # UI values → request.extra → infotext of the saved image
    req = tab.request_from(ui_values(app.ctx, **{EXT_PREFIX + "demo_strength": 0.75}))
    assert req.extra["demo_strength"] == 0.75
    result = app.services.run_txt2img(req)
    assert "Demo strength: 0.75" in result.infotexts[0]
    text, _ = read_infotext(result.paths[0])
    assert "Demo strength: 0.75" in text
    assert app.hooks.infotext(req) == {"Demo strength": 0.75}

    # API schema and request
    schema = requests.get(app.base + "/openapi.json", timeout=30).json()["components"]["schemas"]
    prop = schema["StableDiffusionProcessingTxt2Img"]["properties"]["demo_strength"]
    assert prop["default"] == 0.5
    assert "demo_strength" in schema["StableDiffusionProcessingImg2Img"]["properties"]
    r = requests.post(app.base + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                            "demo_strength": 0.25}, timeout=120)
    assert r.status_code == 200, r.text
    assert "Demo strength: 0.25" in json.loads(r.json()["info"])["infotexts"][0]
    bad = requests.post(app.base + "/sdapi/v1/txt2img", json={"prompt": "x", "demo_strength": 7}, timeout=30)
    assert bad.status_code == 422

    # the route answers; the hooks saw the steps, the saved file and the result; app_started ran once
    events = requests.get(app.base + "/demo/events", timeout=30)
    assert events.status_code == 200
    ev = events.json()
    assert ev["started"] == 1 and ev["after"] >= 2 and ev["steps"] >= 2
    assert ev["stages"][0] == ["txt2img", 1, 2]
    assert [str(result.paths[0]), result.infotexts[0]] in ev["saved"]

    # style.css and javascript/*.js reach the page
    page = requests.get(app.base + "/", timeout=30).text
    assert "window.demoExtension = 1;" in page and "#demo_hello { color: teal; }" in page


def test_broken_extensions_do_not_stop_the_app_or_the_generation(app):
    from pipelines.params.declarations import make_request

    result = app.services.run_txt2img(make_request(prompt="still works", steps=1, width=64, height=64, seed=1))
    assert len(result.images) == 1
    rows = {r["id"]: r for r in app.services.extensions.status_rows()}
    assert rows["broken_import"]["status"] == "error"
    assert "no_such_module_for_tests" in rows["broken_import"]["traceback"]
    assert rows["bad_hook"]["status"] == "error" and rows["bad_hook"]["loaded"]
    assert "boom in hook" in rows["bad_hook"]["failures"][0]["traceback"]
    assert {rows[n]["status"] for n in ("demo_ext", "xyz_plot", "prompt_matrix")} == {"loaded"}
    page = app.ctx.tab_objects["extensions"].refresh_status()
    assert "no_such_module_for_tests" in page and "boom in hook" in page and "before_generation" in page
    assert requests.get(app.base + "/", timeout=30).status_code == 200


def test_xyz_plot_makes_a_labelled_grid_and_saves_every_image(app):
    """Through the txt2img tab's Generate handler, as a user runs it."""
    from PIL import Image

    from pipelines.images.metadata import read_infotext
    from webui.ui.generation import EXT_PREFIX

    tab = app.ctx.tab_objects["txt2img"]
    values = ui_values(app.ctx, steps=1, seed=5, **{EXT_PREFIX + "xyz_x_type": "Sampling steps",
                                                    EXT_PREFIX + "xyz_x_values": "1, 2",
                                                    EXT_PREFIX + "xyz_y_type": "CFG Scale",
                                                    EXT_PREFIX + "xyz_y_values": "3-7 (+2)"})
    final = list(tab.run(request=None, **values))[-1]
    state = final[tab.result_state]
    paths, infotexts = state["paths"], state["infotexts"]
    assert final[tab.gallery] == paths and len(paths) == 7        # the grid, then every cell
    grid, cells = Image.open(paths[0]).convert("RGB"), [Image.open(p).convert("RGB") for p in paths[1:]]
    assert "txt2img-grids" in paths[0] and all(c.size == (64, 64) for c in cells)
    left, top = grid.width - 2 * 64, grid.height - 3 * 64
    assert left > 0 and top > 0                                    # label margins on the top and the left
    for i, cell in enumerate(cells):                               # rows = CFG (y), columns = steps (x)
        r, c = divmod(i, 2)
        box = (left + c * 64, top + r * 64, left + (c + 1) * 64, top + (r + 1) * 64)
        assert grid.crop(box).tobytes() == cell.tobytes()
    assert grid.crop((left, 0, grid.width, top)).convert("L").getextrema()[0] < 100     # labels drawn
    assert grid.crop((0, top, left, grid.height)).convert("L").getextrema()[0] < 100
    assert "Steps: 2" in infotexts[2] and "CFG scale: 5" in infotexts[3]
    assert len(set(state["seeds"])) == 1                           # one seed for the whole plot
    # every image saved with its own parameters; the grid with the plot's settings
    grid_text, _ = read_infotext(paths[0])
    assert 'X Type: Sampling steps, X Values: "1, 2", Y Type: CFG Scale' in grid_text
    cell_text, _ = read_infotext(paths[4])
    assert "CFG scale: 5" in cell_text and "X Type" not in cell_text
    # pasting the grid's parameters sets the plot up again
    known, _ = app.hooks.values_from_infotext({"X Type": "Sampling steps", "X Values": "1, 2"})
    assert known == {"xyz_x_type": "Sampling steps", "xyz_x_values": "1, 2"}
    # a bad axis is a readable error (422 through the API), not a crash
    r = requests.post(app.base + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                            "xyz_x_type": "Sampling steps", "xyz_x_values": "a, b"},
                      timeout=60)
    assert r.status_code == 422 and "xyz_x_values" in r.text


def test_xyz_checkpoint_and_sampler_axes_with_z(app):
    from PIL import Image

    req = app.hooks.make_request(dict(prompt="a red ball", steps=1, width=64, height=64, seed=9,
                                      xyz_x_type="Sampling method", xyz_x_values="euler, DDIM",
                                      xyz_z_type="Checkpoint", xyz_z_values="tiny-sd1-b, tiny-sd1"))
    try:
        result = app.services.run_txt2img(req)
    finally:
        app.services.manager.load("tiny-sd1")
    texts = result.infotexts[1:]
    assert len(texts) == 4
    assert ["Sampler: Euler," in t for t in texts] == [True, False, True, False]
    assert ["Model: tiny-sd1-b" in t for t in texts] == [True, True, False, False]
    one = Image.new("RGB", (64, 64))
    from pipelines.images.grids import labelled_grid

    sub = labelled_grid([[one, one]], col_labels=["Sampler: Euler", "Sampler: DDIM"])
    grid = result.images[0]
    assert grid.width > 2 * sub.width and grid.height > sub.height   # two sub-grids side by side, Z titles above


def test_xyz_plot_in_img2img(app):
    from PIL import Image

    engine = app.services.engine
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    req = app.hooks.make_request(dict(prompt="a red ball", steps=2, width=64, height=64, seed=4, demo_strength=0.3,
                                      xyz_x_type="Denoising strength", xyz_x_values="0.5, 1"))
    result = app.services.queue.submit(lambda control: engine.img2img(req, [init], None, control)).wait(120)
    assert len(result.images) == 3 and "img2img-grids" in str(result.paths[0])
    assert "Denoising strength: 0.5" in result.infotexts[1] and "Denoising strength: 1" in result.infotexts[2]
    assert "Demo strength: 0.3" in result.infotexts[1]             # other extensions' parameters stay on the cells


def test_prompt_matrix(app):
    req = app.hooks.make_request(dict(prompt="a house|at night|in winter", steps=1, width=64, height=64, seed=2,
                                      prompt_matrix=True))
    result = app.services.run_txt2img(req)
    grid = result.images[0]
    assert len(result.images) == 5 and grid.width > 128 and grid.height > 128   # 2x2 cells + both margins
    prompts = [text.splitlines()[0] for text in result.infotexts[1:]]
    assert prompts == ["a house", "a house, at night", "a house, in winter", "a house, at night, in winter"]


def test_disabling_an_extension_removes_its_tab_after_restart(app):
    from pipelines.core.errors import UserError
    from webui.app.auth import AccessControl
    from webui.app.cli import parse_args
    from webui.app.services import create_services
    from webui.ui.blocks import build_ui

    ext_tab = app.ctx.tab_objects["extensions"]
    ticked = [ext_id for _, ext_id in ext_tab._choices() if ext_id != "demo_ext"]
    message, page = ext_tab.save(ticked)                           # untick it in the Extensions tab, Save
    assert "Restart the app" in message and "disabled at the next start" in page
    assert "Demo tab" in tab_labels(app.demo)                      # the running app keeps it until restart
    services = create_services(parse_args(app.argv + ["--listen", "--ui-debug-mode"]))
    try:
        demo = build_ui(services, AccessControl())
        assert "Demo tab" not in tab_labels(demo) and "Extensions" in tab_labels(demo)
        assert "demo_strength" not in [p.name for p in services.engine.hooks.params]
        assert "demo_strength" not in demo.ui_context.tab_objects["txt2img"].ext_fields
        rows = {r["id"]: r for r in services.extensions.status_rows()}
        assert rows["demo_ext"]["status"] == "disabled"
        # without --enable-insecure-extension-access: installing from the UI is off, and refused by the manager
        tab = demo.ui_context.tab_objects["extensions"]
        assert tab.install.interactive is False and tab.url.interactive is False
        with pytest.raises(UserError, match="--enable-insecure-extension-access"):
            services.extensions.install("https://example.com/a/b.git")
    finally:
        services.close()
        app.services.extensions.set_enabled("demo_ext", True)
