"""The rooms stay clean: the layering contracts in `.importlinter` hold, and the engine imports without Gradio.

Both run in a subprocess so that nothing this test session has already imported (gradio via other tests,
webui via fixtures) can hide an import the engine makes on its own.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    # --no-cache: the linter would otherwise write .import_linter_cache/ into the checkout.
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
                               " sys.argv = ['lint-imports', '--no-cache', '--no-logo']; lint_imports_command()"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "broken" in run.stdout and "0 broken" in run.stdout, run.stdout


# Imports every module of pipelines/ with a meta-path finder that refuses gradio, webui and extensions, and
# records who asked: an engine module that tries (even one that catches the ImportError) is reported.
IMPORT_ALL_WITHOUT_FRONT_ENDS = textwrap.dedent("""
    import importlib, pkgutil, sys, traceback
    BLOCKED = ("gradio", "webui", "extensions")
    asked = []

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                frames = [f for f in traceback.extract_stack() if "/pipelines/" in f.filename]
                asked.append((name, frames[-1].filename if frames else "?"))
                raise ModuleNotFoundError(f"blocked by the test: {name}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    import pipelines
    names = ["pipelines"] + [m.name for m in pkgutil.walk_packages(pipelines.__path__, "pipelines.")]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    engine_asked = [a for a in asked if a[1] != "?"]
    print(len(names), "modules")
    assert not failed, failed
    assert not engine_asked, engine_asked
    assert "gradio" not in sys.modules
""")


def test_every_engine_module_imports_without_gradio():
    run = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITHOUT_FRONT_ENDS], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert int(run.stdout.split()[0]) > 40, run.stdout   # walked the whole tree, not just the top package
