"""Extension loader and hook registry, without a model: manifests, requirements, isolation, enable/disable,
install from git (refused when exposed), page assets, the X/Y/Z axis syntax and the labelled grid."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from pipelines.core.errors import ParameterError, UserError
from pipelines.hooks import HookRegistry
from pipelines.params.declarations import Param, make_request
from webui.extensions.loader import ExtensionManager, status_html

ROOT = Path(__file__).resolve().parent.parent


def write_ext(root: Path, name: str, main: str, manifest: dict | None = None, **files: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if manifest is not False:
        (folder / "extension.json").write_text(json.dumps(manifest or {"name": name, "version": "1.0"}))
    (folder / "main.py").write_text(textwrap.dedent(main))
    for rel, text in files.items():
        path = folder / rel.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


GOOD = """
    from pipelines.params.declarations import Param
    from .helper import LABEL          # relative imports inside the extension folder work

    def setup(ext):
        ext.add_param(Param("good_level", int, 2, LABEL, "Good level", 0, 9, 1), section="Good")
        ext.add_tab("Good tab", lambda: None)
"""


def manager_for(tmp_path: Path, **kw) -> ExtensionManager:
    return ExtensionManager([tmp_path / "ext"], HookRegistry(), config_path=tmp_path / "data" / "config" / "extensions.json",
                            data_dir=tmp_path / "data", **kw)


def test_loader_statuses_and_isolation(tmp_path):
    root = tmp_path / "ext"
    write_ext(root, "good", GOOD, **{"helper.py": "LABEL = 'Good level'\n", "style.css": ".good{color:red}",
                                     "javascript__a.js": "console.log('</script>')"})
    write_ext(root, "broken_import", "import not_a_module_anywhere_42\n\ndef setup(ext):\n    pass\n")
    write_ext(root, "broken_setup", """
        from pipelines.params.declarations import Param

        def setup(ext):
            ext.add_param(Param("half_done", int, 1, "Half done"))
            raise RuntimeError("setup went wrong")
    """)
    write_ext(root, "no_setup", "X = 1\n")
    write_ext(root, "too_new", "def setup(ext):\n    pass\n", {"name": "too new", "requires": ["app>=99"]})
    write_ext(root, "bad_json", "def setup(ext):\n    pass\n")
    (root / "bad_json" / "extension.json").write_text("{nope")
    write_ext(root, "a1111_style", "def setup(ext):\n    pass\n", manifest=False)
    write_ext(root, "clash", """
        from pipelines.params.declarations import Param

        def setup(ext):
            ext.add_param(Param("steps", int, 1, "Steps again"))
    """)
    m = manager_for(tmp_path)
    m.load_all()
    rows = {r["id"]: r for r in m.status_rows()}
    assert rows["good"]["status"] == "loaded" and rows["good"]["error"] is None
    assert "ModuleNotFoundError" in rows["broken_import"]["error"]
    assert "not_a_module_anywhere_42" in rows["broken_import"]["traceback"]
    assert rows["broken_setup"]["status"] == "error" and "setup went wrong" in rows["broken_setup"]["traceback"]
    assert "no setup(ext)" in rows["no_setup"]["error"]
    assert "needs app >=99" in rows["too_new"]["error"]
    assert "not valid JSON" in rows["bad_json"]["error"]
    assert "no extension.json" in rows["a1111_style"]["error"]
    assert "already declared" in rows["clash"]["error"]
    # what failed registered nothing; what loaded is there
    assert [p.name for p in m.hooks.params] == ["good_level"]
    assert [t.title for t in m.hooks.tabs] == ["Good tab"]
    page = status_html(m)
    assert "setup went wrong" in page and "Traceback" in page
    # page assets of loaded extensions only; a script cannot close its own tag
    assert ".good{color:red}" in m.css()
    head = m.head()
    assert 'data-extension="good"' in head and "console.log('<\\/script>')" in head and "onUiLoaded" in head


def test_enable_disable_is_persisted(tmp_path):
    write_ext(tmp_path / "ext", "good", GOOD, **{"helper.py": "LABEL = 'Good level'\n"})
    m = manager_for(tmp_path)
    m.load_all()
    m.set_enabled("good", False)
    assert json.loads(m.config_path.read_text()) == {"disabled": ["good"]}
    again = manager_for(tmp_path)
    again.load_all()
    assert again.status_rows()[0]["status"] == "disabled" and not again.hooks.tabs and not again.hooks.params
    again.set_enabled("good", True)
    third = manager_for(tmp_path)
    third.load_all()
    assert third.status_rows()[0]["status"] == "loaded"
    assert not manager_for(tmp_path, disable_all=True).load_all()[0].loaded   # --disable-all-extensions


def test_requirements_installed_once_and_skipped_when_satisfied(tmp_path):
    calls = []

    def fake_pip(req: Path, progress):
        calls.append(req.read_text())
        progress("Collecting something")

    root = tmp_path / "ext"
    write_ext(root, "needs_pkg", "def setup(ext):\n    pass\n", **{"requirements.txt": "pillow>=1.0\n# comment\n"})
    write_ext(root, "needs_new", "def setup(ext):\n    pass\n", **{"requirements.txt": "surely-not-installed-pkg-zz>=1\n"})
    m = manager_for(tmp_path, pip=fake_pip)
    m.load_all()
    rows = {r["id"]: r for r in m.status_rows()}
    assert calls == ["surely-not-installed-pkg-zz>=1\n"]                 # satisfied ones never reach pip
    assert "already satisfied" in rows["needs_pkg"]["notes"][0]
    assert rows["needs_new"]["status"] == "loaded" and "installed" in rows["needs_new"]["notes"][0]
    stamps = sorted(p.name for p in (tmp_path / "data" / "cache" / "extensions").iterdir())
    assert stamps == ["needs_new.requirements.sha256", "needs_pkg.requirements.sha256"]
    manager_for(tmp_path, pip=fake_pip).load_all()                         # stamped: no second install
    assert len(calls) == 1
    (root / "needs_new" / "requirements.txt").write_text("surely-not-installed-pkg-zz>=2\n")   # changed: again
    manager_for(tmp_path, pip=fake_pip).load_all()
    assert len(calls) == 2

    def failing_pip(req, progress):
        from webui.extensions.loader import ExtensionError

        raise ExtensionError("pip install -r requirements.txt failed (exit 1):\nERROR: No matching distribution")

    (root / "needs_new" / "requirements.txt").write_text("surely-not-installed-pkg-zz>=3\n")
    m = manager_for(tmp_path, pip=failing_pip)
    m.load_all()
    row = {r["id"]: r for r in m.status_rows()}["needs_new"]
    assert row["status"] == "error" and "No matching distribution" in row["error"]


def test_corrupt_config_is_reported_and_loads_nothing(tmp_path):
    write_ext(tmp_path / "ext", "good", GOOD, **{"helper.py": "LABEL = 'Good level'\n"})
    m = manager_for(tmp_path)
    m.config_path.parent.mkdir(parents=True)
    m.config_path.write_text('{"disabled": ["good"', encoding="utf-8")     # truncated by a crash mid-write
    m.load_all()
    assert not m.hooks.tabs and m.status_rows()[0]["status"] == "disabled"   # not silently re-enabled
    assert "extensions.json is unreadable" in status_html(m)
    m.save_disabled(set())                                                  # saving from the tab repairs it
    again = manager_for(tmp_path)
    again.load_all()
    assert again.config_error is None and again.status_rows()[0]["status"] == "loaded"


def test_install_from_git_url(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = write_ext(tmp_path / "src", "cool_ext", "def setup(ext):\n    pass\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    for refused in (manager_for(tmp_path, exposed=True), manager_for(tmp_path)):   # no flag: refused in every mode
        with pytest.raises(UserError, match="--enable-insecure-extension-access"):
            refused.install(f"file://{repo}")
    assert not (tmp_path / "ext").exists()
    m = manager_for(tmp_path, install_allowed=True)
    with pytest.raises(UserError, match="git URL"):
        m.install("--upload-pack=touch /tmp/x")
    target = m.install(f"file://{repo}")
    assert (target / "extension.json").is_file() and target.parent == tmp_path / "ext"
    assert {r["id"]: r["status"] for r in m.status_rows()}["cool_ext"] == "installed (restart to load)"
    with pytest.raises(UserError, match="already exists"):
        m.install(f"file://{repo}")
    after_restart = manager_for(tmp_path)
    after_restart.load_all()
    assert after_restart.status_rows()[0]["status"] == "loaded"


def test_hook_failures_switch_the_extension_off_and_user_errors_pass():
    hooks = HookRegistry()
    bad = hooks.for_extension("bad")
    good = hooks.for_extension("good")
    seen = []

    @bad.before_generation
    def explode(req):
        raise RuntimeError("kaboom")

    @good.before_generation
    def more_steps(req):
        return req.replace(steps=req.steps + 1)

    @good.after_generation
    def record(result):
        seen.append(result)

    def run(req, control):
        return type("R", (), {"seconds": 0, "request": req})()

    result = hooks.generation("txt2img", make_request(steps=3), run)
    assert result.request.steps == 4 and seen == [result]
    assert hooks.disabled == {"bad"} and hooks.failures_of("bad")[0].message == "RuntimeError: kaboom"
    assert "explode" in hooks.failures_of("bad")[0].traceback
    hooks.generation("txt2img", make_request(steps=3), run)
    assert len(hooks.failures_of("bad")) == 1                       # switched off: not called again

    refuse = hooks.for_extension("refuse")

    @refuse.before_generation
    def no(req):
        raise ParameterError("steps", "not today")

    with pytest.raises(ParameterError, match="not today"):
        hooks.generation("txt2img", make_request(), run)
    assert "refuse" not in hooks.disabled                           # a refusal is not a failure

    with pytest.raises(ValueError, match="infotext key"):
        good.add_param(Param("good_x", int, 1, "X", "Seed"))         # a built-in key
    with pytest.raises(ValueError, match="must start with"):
        good.add_api_route("/sdapi/v1/mine", lambda: {})


def test_extension_params_in_requests_and_infotext():
    hooks = HookRegistry()
    ext = hooks.for_extension("e")
    ext.add_param(Param("e_strength", float, 0.5, "Strength", "E strength", 0.0, 1.0, 0.05), modes=("txt2img",))
    req = hooks.make_request({"prompt": "x", "e_strength": "0.75"})
    assert req.extra == {"e_strength": 0.75} and req.to_dict()["e_strength"] == 0.75
    assert hooks.make_request({}).extra == {"e_strength": 0.5}
    with pytest.raises(ParameterError, match="e_strength"):
        hooks.make_request({"e_strength": 3})
    assert hooks.infotext(req, "txt2img") == {"E strength": 0.75}
    assert hooks.infotext(req, "img2img") == {} and hooks.infotext(hooks.make_request({})) == {}
    known, unknown = hooks.values_from_infotext({"E strength": "0.25", "Steps": "3", "Other": "1"})
    assert known == {"e_strength": 0.25, "steps": 3} and unknown == {"Other": "1"}
    assert [p.name for p in hooks.all_params("txt2img")][-1] == "e_strength"
    assert "e_strength" not in [p.name for p in hooks.all_params("img2img")]


def test_xyz_axis_syntax():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("xyz_axes_under_test", ROOT / "extensions" / "xyz_plot" / "axes.py")
    axes = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = axes
    spec.loader.exec_module(axes)
    from pipelines.params.declarations import BY_NAME

    params = {p.label: p for p in BY_NAME.values()}
    assert axes.expand(["1-5"], int, "f") == [1, 2, 3, 4, 5]
    assert axes.expand(["1-10 (+3)"], int, "f") == [1, 4, 7, 10]
    assert axes.expand(["10-1 (-3)"], int, "f") == [10, 7, 4, 1]
    assert axes.expand(["1-10 [4]"], int, "f") == [1, 4, 7, 10]
    assert axes.expand(["0.5-1.5 (+0.5)", "7"], float, "f") == [0.5, 1.0, 1.5, "7"]
    steps = axes.parse_axis("Sampling steps", "1-3, 8", params, "xyz_x_values")
    assert steps.values == (1, 2, 3, 8) and steps.labels[0] == "Steps: 1"
    sampler = axes.parse_axis("Sampling method", "euler a, DPM++ 2M", params, "f")
    assert sampler.values == ("Euler a", "DPM++ 2M")
    sr = axes.parse_axis("Prompt S/R", "red, blue, \"green, bright\"", params, "f", prompt="a red ball")
    assert sr.values == ("red", "blue", "green, bright")
    seeds = axes.parse_axis("Seed", "-1, 5", params, "f")
    assert seeds.values[0] >= 0 and seeds.values[1] == 5
    for bad, match in (("abc", "expected int"), ("1-500", "at most"), ("200", "above the maximum")):
        with pytest.raises(ParameterError, match=match):
            axes.parse_axis("Sampling steps", bad, params, "xyz_x_values")
    with pytest.raises(ParameterError, match="neither the prompt"):
        axes.parse_axis("Prompt S/R", "cat, dog", params, "f", prompt="a red ball")


def test_labelled_grid_layout():
    from pipelines.images.grids import Label, labelled_grid, side_by_side

    cells = [[Image.new("RGB", (64, 64), (10 * r, 20 * c, 200)) for c in range(2)] for r in range(3)]
    grid = labelled_grid(cells, col_labels=["Steps: 1", "Steps: 2"], row_labels=["CFG: 3", "CFG: 5", "CFG: 7"])
    left, top = grid.width - 2 * 64, grid.height - 3 * 64
    assert left > 0 and top > 0
    for r in range(3):
        for c in range(2):
            box = (left + c * 64, top + r * 64, left + c * 64 + 64, top + r * 64 + 64)
            assert grid.crop(box).tobytes() == cells[r][c].tobytes()
    assert grid.crop((left, 0, grid.width, top)).convert("L").getextrema()[0] < 128     # text in the top margin
    assert grid.crop((0, top, left, grid.height)).convert("L").getextrema()[0] < 128    # and in the left one
    plain = labelled_grid(cells)
    assert plain.size == (128, 192)
    matrix = labelled_grid([[cells[0][0], None]], col_labels=[[Label("a", False)], [Label("a", True)]])
    assert matrix.size[0] == 128 and matrix.getpixel((100, matrix.height - 5)) == (0, 0, 0)   # empty cell
    two = side_by_side([grid, grid], ["Z: 1", "Z: 2"])
    assert two.width > 2 * grid.width and two.height > grid.height
