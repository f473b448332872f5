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


# ------------------------------------------------------------------------------ no new import cycles

# Import cycles that exist today, each confined to these packages, with who is removing it. A cycle anywhere
# else (type-only and function-level imports count: they still tie the files together) fails the test.
KNOWN_CYCLES = {
}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_cycles():
    import grimp

    graph = grimp.build_graph("pipelines", "webui", cache_dir=None)   # every import, TYPE_CHECKING ones too
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    cycles = _cycles(edges)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds
    new = [c for c in cycles
           if not any(all(m.startswith(tuple(p + "." for p in pkgs)) or m in pkgs for m in c) for pkgs in KNOWN_CYCLES)]
    assert not new, "new import cycles (move the shared types down a layer): " + "; ".join(" <-> ".join(c) for c in new)


# ------------------------------------------------------------------------------ sizes

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# Over the limits today; to be split. Anything not listed must fit.
KNOWN_LARGE = {
    "pipelines/prompts/networks.py", "pipelines/prompts/parser.py:parse_attention",
    "pipelines/generate/img2img.py:_run", "pipelines/generate/img2img.py:img2img_batch",
    "webui/__main__.py:main",
    "webui/api/routes.py:create_api_router", "extensions/xyz_plot/main.py:setup",
}


def test_modules_and_functions_fit_in_one_sitting():
    import ast

    too_large = []
    for path in sorted(p for d in ("pipelines", "webui", "extensions") for p in (ROOT / d).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES and rel not in KNOWN_LARGE:
            too_large.append(f"{rel} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in KNOWN_LARGE:
                    too_large.append(f"{rel}:{node.name} ({length} lines)")
    assert not too_large, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function: "
                           + ", ".join(too_large))
