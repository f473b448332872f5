"""A small mutation run: plant one bug at a time in a module, run the tests that cover it, count the kills.

    python -m tests.mutation                     # every target, 25 sampled mutants each
    python -m tests.mutation --per-file 0        # every mutant (slow: hundreds of test runs)
    python -m tests.mutation --only parser --list

Mutants are made on the AST (mutmut-style operators): arithmetic (+ - * / // %) swapped, comparisons
flipped or shifted (< <=, == !=, in / not in), and/or swapped, `not` dropped, integer constants +1,
True/False swapped, `return X` -> `return None`. Each mutant is written over the module (unparsed from
the AST: same code, other formatting), its tests run with -x, and the original file is put back whatever
happens. A mutant is killed when the tests fail (or time out); one that unparses to the original code
(an equivalent rewrite) is not counted. The sample is deterministic (seeded), so runs compare.
Written by hand because mutmut 3 needs its own trampoline build of the package and a src layout.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "inputs": ("pipelines/images/inputs.py", ["tests/test_img2img_inputs.py"]),
    "infotext": ("pipelines/params/infotext.py", ["tests/test_infotext.py", "tests/test_params.py"]),
    "parser": ("pipelines/prompts/parser.py", ["tests/test_prompt_parser.py"]),
    "samplers": ("pipelines/generate/samplers.py", ["tests/test_samplers_table.py"]),
    "outputs": ("pipelines/images/outputs.py", ["tests/test_outputs.py"]),
}
SWAP_OPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
            ast.Mod: ast.FloorDiv, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
            ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
            ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And}


def _sites(tree: ast.AST) -> list[tuple[int, str]]:
    """(index of the node in ast.walk order, kind) for every place a mutant can be made."""
    sites = []
    for i, node in enumerate(ast.walk(tree)):
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAP_OPS:
            sites.append((i, "op"))
        elif isinstance(node, ast.Compare):
            sites.extend((i, f"cmp{k}") for k, op in enumerate(node.ops) if type(op) in SWAP_OPS)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append((i, "not"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, bool):
            sites.append((i, "const"))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            sites.append((i, "return"))
    return sites


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def mutate(source: str, site: tuple[int, str]) -> tuple[str, str]:
    """The module's source with one mutant planted at `site`, and a short description of it."""
    tree = ast.parse(source)
    index, kind = site
    node = list(ast.walk(tree))[index]
    line = getattr(node, "lineno", "?")
    if kind == "op":
        new = SWAP_OPS[type(node.op)]
        what = f"{type(node.op).__name__} -> {new.__name__}"
        node.op = new()
    elif kind.startswith("cmp"):
        k = int(kind[3:])
        new = SWAP_OPS[type(node.ops[k])]
        what = f"{type(node.ops[k]).__name__} -> {new.__name__}"
        node.ops[k] = new()
    elif kind == "not":
        parent = _parents(tree)[node]
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, node.operand)
            elif isinstance(value, list):
                setattr(parent, field, [node.operand if v is node else v for v in value])
        what = "not dropped"
    elif kind == "const":
        old = node.value
        node.value = (not old) if isinstance(old, bool) else old + 1
        what = f"{old!r} -> {node.value!r}"
    else:
        node.value = None
        what = "return None"
    return ast.unparse(tree), f"line {line}: {what}"


def run_target(name: str, per_file: int, timeout: float, seed: int, verbose: bool) -> dict:
    rel, tests = TARGETS[name]
    path = ROOT / rel
    original = path.read_text(encoding="utf-8")
    baseline = ast.unparse(ast.parse(original))
    sites = _sites(ast.parse(original))
    chosen = sites if per_file <= 0 else random.Random(f"{seed}-{name}").sample(sites, min(per_file, len(sites)))
    killed, survived, equivalent = [], [], 0
    try:
        for site in chosen:
            mutated, what = mutate(original, site)
            if mutated == baseline:
                equivalent += 1
                continue
            path.write_text(mutated, encoding="utf-8")
            try:
                code = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                       "--durations=0", "-o", "addopts=", *tests], cwd=ROOT, timeout=timeout,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                code = -1
            (killed if code != 0 else survived).append(what)
            if verbose:
                print(f"  {name}: {what}: {'killed' if code != 0 else 'SURVIVED'}", flush=True)
    finally:
        path.write_text(original, encoding="utf-8")
    return {"file": rel, "tests": tests, "sites": len(sites), "mutants": len(killed) + len(survived),
            "killed": len(killed), "equivalent_skipped": equivalent, "survivors": survived}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=sorted(TARGETS), help="targets (default: all)")
    ap.add_argument("--per-file", type=int, default=25, help="mutants sampled per file (0: all)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per test run (a hang counts as killed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print each mutant's outcome")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    # a terminated run still puts the module back (the finally in run_target)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results, start = {}, time.monotonic()
    for name in args.only or list(TARGETS):
        results[name] = run_target(name, args.per_file, args.timeout, args.seed, args.list)
        r = results[name]
        print(f"{r['file']}: {r['killed']}/{r['mutants']} killed "
              f"({100 * r['killed'] / max(1, r['mutants']):.0f}%)", flush=True)
        for what in r["survivors"]:
            print(f"    survived: {what}")
    total = sum(r["mutants"] for r in results.values())
    killed = sum(r["killed"] for r in results.values())
    print(f"total: {killed}/{total} mutants killed ({100 * killed / max(1, total):.0f}%) "
          f"in {time.monotonic() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
