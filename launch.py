#!/usr/bin/env python3
"""Entry point: prepares `.venv` when needed, then starts the app or the test suite.

    python launch.py [app flags]          # set up once, start the web UI (see --help)
    python launch.py --run-tests [args]   # set up + dev requirements, run pytest (args go to pytest)
    python launch.py --refresh-lock [--keep-versions] [pytest args]
                                          # re-resolve requirements*.txt into the lock files, install
                                          # that set and run the suite on it; kept only if it passes
    --no-lock                             # install the open ranges of requirements*.txt, not the locks

This file uses only the standard library: it runs under the bare system Python before the
virtual environment exists, then re-executes itself inside `.venv`.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("WEBUI_VENV", ROOT / ".venv"))

# torch is installed before the other requirements so that pip resolves diffusers & co. against the
# build the user chose (CUDA/ROCm index via --torch-index-url or TORCH_INDEX_URL) instead of pulling one.
# The index's torchvision only imports beside the matching torch ("torchvision::nms does not exist"
# otherwise), so the pair is pinned together.
TORCH_PACKAGES = {
    ("Linux", "x86_64"): ["torch==2.14.1", "torchvision==0.29.1"],
    ("Linux", "aarch64"): ["torch==2.9.1", "torchvision==0.24.1"],
}
DEFAULT_TORCH = ["torch", "torchvision"]


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _pop_option(argv: list[str], name: str) -> str | None:
    """Remove `--name VALUE` / `--name=VALUE` from argv (launcher-only options) and return VALUE."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def _pip(*args: str) -> None:
    cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("[launch] " + " ".join(cmd[3:]), flush=True)
    subprocess.check_call(cmd)


def _stamp(parts: list[str]) -> Path:
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return VENV / f".installed-{digest}"


# The lock files hold the exact set the suite last passed on (every package with its sha256 hashes from
# the index), so a fresh install today gets what was tested, not whatever was released since. The open
# ranges stay in requirements*.txt for installing as a library. torch/torchvision are not in the locks:
# they come first, from TORCH_PACKAGES (and the user's index), so the locks never replace that build.
# k-diffusion and dctorch (the parity tests' reference) install --no-deps: dctorch asks numpy<2, which
# the rest of the set cannot use; what their import really needs is in requirements-dev.txt.
# Refresh all of them with `python launch.py --refresh-lock` (see refresh_lock below).
LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
NODEPS = "requirements-nodeps.txt"
NODEPS_LOCK = "requirements-nodeps.lock"


def lock_platform() -> str:
    """The platform a lock is valid for: its resolution (markers, wheels) was made for this one."""
    return f"{platform.system()} {platform.machine()} python{sys.version_info[0]}.{sys.version_info[1]}"


def lock_usable(path: Path) -> bool:
    if not path.exists():
        return False
    with path.open(encoding="utf-8") as f:
        head = [next(f, "") for _ in range(5)]
    return any(line.strip() == f"# platform: {lock_platform()}" for line in head)


def install_plan(dev: bool, use_lock: bool) -> list[list[str]]:
    """pip argument lists installing the requirements after torch: the locks where they fit, else ranges."""
    lock = ROOT / (DEV_LOCK if dev else LOCK)
    if use_lock and lock_usable(lock):
        plan = [["--require-hashes", "-r", str(lock)]]
        if dev:
            plan.append(["--require-hashes", "--no-deps", "-r", str(ROOT / NODEPS_LOCK)])
        return plan
    if use_lock:
        print(f"[launch] {lock.name} was resolved for another platform than {lock_platform()}: installing the "
              "open ranges of requirements*.txt instead", flush=True)
    plan = [["-r", str(ROOT / ("requirements-dev.txt" if dev else "requirements.txt"))]]
    if dev:
        plan.append(["--no-deps", "-r", str(ROOT / NODEPS)])
    return plan


def ensure_environment(dev: bool, torch_index_url: str | None, use_lock: bool = True) -> None:
    """Create `.venv` and install requirements, skipping everything already done for these files."""
    if not venv_python().exists():
        print(f"[launch] creating virtual environment in {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])

    torch_pkgs = TORCH_PACKAGES.get((platform.system(), platform.machine()), DEFAULT_TORCH)
    plan = install_plan(dev, use_lock)
    parts = [sys.version, " ".join(torch_pkgs), torch_index_url or ""]
    for args in plan:
        parts += [" ".join(args), Path(args[-1]).read_text(encoding="utf-8")]
    stamp = _stamp(parts)
    if stamp.exists():
        return

    torch_args = list(torch_pkgs)
    if torch_index_url:
        torch_args += ["--index-url", torch_index_url]
    _pip(*torch_args)
    for args in plan:
        _pip(*args)
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        _install_xformers_if_compatible()
    stamp.write_text("\n".join(parts))


def _venv_run(code: str) -> str:
    return subprocess.run([str(venv_python()), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def xformers_wheel_for(torch_version: str, folder: Path) -> tuple[Path | None, str]:
    """Download the newest xformers wheel for this Python (pip picks it by its tag) into `folder` and read
    its build record (xformers/cpp_lib.json): (the wheel if it was built for this torch, else None; the torch
    it was built for)."""
    import json
    import zipfile

    got = subprocess.run([str(venv_python()), "-m", "pip", "download", "--disable-pip-version-check", "-q",
                          "--no-deps", "--only-binary=:all:", "-d", str(folder), "xformers"],
                         capture_output=True, text=True)
    wheels = sorted(folder.glob("xformers-*.whl"))
    build: dict = {}
    if got.returncode == 0 and wheels:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            if "xformers/cpp_lib.json" in wheel.namelist():
                build = json.loads(wheel.read("xformers/cpp_lib.json")).get("version", {})
    built_for = str(build.get("torch", "")).split("+")[0]
    return (wheels[-1] if wheels and built_for == torch_version else None), built_for


def _install_xformers_if_compatible() -> None:
    """xformers only when its wheel was built for this torch: its metadata says `torch>=X` but its
    compiled kernels load only beside the torch they were built with (otherwise every start prints the
    failure). Installed --no-deps when the build matches; else not at all, and SDPA attention is used."""
    import tempfile

    torch_version = _venv_run("import torch; print(torch.__version__.split('+')[0])")
    with tempfile.TemporaryDirectory() as tmp:
        wheel, built_for = xformers_wheel_for(torch_version, Path(tmp))
        if wheel is not None:
            _pip("--no-deps", str(wheel))
            return
    # a mismatched xformers left by an older launch.py would print its failure at every start
    subprocess.call([str(venv_python()), "-m", "pip", "uninstall", "-y", "-q", "xformers"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"[launch] xformers not installed: its newest wheel for this Python is built for torch "
          f"{built_for or '?'}, not {torch_version}; PyTorch SDPA attention is used", flush=True)


# ------------------------------------------------------------------------------ refreshing the locks

NOT_LOCKED = {"torch", "torchvision"}             # installed first from TORCH_PACKAGES (see above)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _requirement_names(path: Path) -> set[str]:
    """The project names a requirements file lists (what the lock's runtime part starts from)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(_norm(re.split(r"[\s;\[<>=!~(]", line, maxsplit=1)[0]))
    return names


def locked_subset(report: list[dict], roots: set[str]) -> list[dict]:
    """The report's packages reachable from `roots` without going through torch/torchvision: what only
    torch needs (its CUDA wheels, triton, sympy, ...) comes with the torch that launch.py installs first.
    Edges are read from each package's Requires-Dist, markers ignored (an extra's edge can only add a
    package the resolution already chose)."""
    by_name = {_norm(item["metadata"]["name"]): item for item in report}
    todo, seen = [n for n in roots if n in by_name], set()
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_LOCKED:
            continue
        seen.add(name)
        for dep in by_name[name]["metadata"].get("requires_dist") or []:
            child = _norm(re.split(r"[\s;\[<>=!~(]", dep, maxsplit=1)[0])
            if child in by_name:
                todo.append(child)
    return [by_name[n] for n in sorted(seen)]


def _lock_text(items: list[dict], source: str, torch_pkgs: list[str]) -> str:
    lines = [f"# Exact versions and sha256 hashes of {source}, resolved by",
             "# `python launch.py --refresh-lock`, which keeps a new set only after the test suite passed on it.",
             "# `python launch.py` installs it with pip --require-hashes. torch/torchvision are not here: they",
             "# are installed first from TORCH_PACKAGES in launch.py, and this set was resolved against them.",
             f"# platform: {lock_platform()}", f"# torch: {' '.join(torch_pkgs)}"]
    for item in items:
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{_norm(item['metadata']['name'])}=={item['metadata']['version']} \\\n"
                     f"    --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def _resolve(constraints: Path, *args: str) -> list[dict]:
    """pip's own resolution of requirement files (a dry run: nothing installed, only metadata fetched),
    as its JSON report: every chosen file with its sha256 from the index."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.check_call([str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                               "--dry-run", "--ignore-installed", "--report", str(report), "-c", str(constraints),
                               *args], cwd=ROOT)
        return json.loads(report.read_text(encoding="utf-8"))["install"]


def write_locks(keep_versions: bool) -> None:
    """Resolve requirements*.txt and write requirements.lock (runtime), requirements-dev.lock (runtime + dev)
    and requirements-nodeps.lock. keep_versions: the versions installed in .venv are kept (only what is
    new is resolved afresh), e.g. after adding one requirement; otherwise the newest the ranges allow."""
    import tempfile

    torch_pkgs = TORCH_PACKAGES.get((platform.system(), platform.machine()), DEFAULT_TORCH)
    pins = list(torch_pkgs)
    if keep_versions:
        frozen = _venv_run("import importlib.metadata as m; print('\\n'.join(sorted(set("
                           "d.metadata['Name'] + '==' + d.version for d in m.distributions()))))")
        pins += [line for line in frozen.splitlines() if _norm(line.split("==")[0]) not in NOT_LOCKED]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
        report = _resolve(constraints, "-r", "requirements-dev.txt")
        nodeps = _resolve(constraints, "--no-deps", "-r", NODEPS)
    runtime_roots = _requirement_names(ROOT / "requirements.txt")
    dev_roots = runtime_roots | _requirement_names(ROOT / "requirements-dev.txt")
    for path, roots, source in ((LOCK, runtime_roots, "requirements.txt"),
                                (DEV_LOCK, dev_roots, "requirements-dev.txt")):
        text = _lock_text(locked_subset(report, roots), source + " and what it needs", torch_pkgs)
        (ROOT / path).write_text(text, encoding="utf-8")
    (ROOT / NODEPS_LOCK).write_text(_lock_text(nodeps, NODEPS + " (installed --no-deps)", torch_pkgs),
                                    encoding="utf-8")


def refresh_lock(keep_versions: bool, torch_index_url: str | None, pytest_args: list[str]) -> int:
    """The one command that moves the locks: resolve, install the new set, run the test suite on it; the
    new locks are kept only if the suite passes (else the previous ones are put back)."""
    locks = [ROOT / name for name in (LOCK, DEV_LOCK, NODEPS_LOCK)]
    previous = {path: path.read_bytes() for path in locks if path.exists()}
    write_locks(keep_versions)
    ensure_environment(dev=True, torch_index_url=torch_index_url)
    ensure_test_browser()
    code = subprocess.call([str(venv_python()), "-m", "pytest", *pytest_args], cwd=ROOT)
    if code != 0:
        for path in locks:
            if path in previous:
                path.write_bytes(previous[path])
            else:
                path.unlink(missing_ok=True)
        print(f"[launch] the test suite failed on the new set (exit {code}): the previous locks are kept; "
              "the next `python launch.py` installs them again", flush=True)
        return code
    print("[launch] the suite passed on the new set: commit " + ", ".join(p.name for p in locks), flush=True)
    return 0


def ensure_test_browser() -> None:
    """Browser tests drive Debian's chromium; install it when we can (root + apt). Without it the browser
    tests skip locally and fail in CI (tests/conftest.py turns every skip into a failure under CI=true)."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("[launch] chromium/chromedriver not found: browser tests will be skipped (a failure in CI)",
              flush=True)
        return
    print("[launch] installing chromium + chromium-driver for the browser tests", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        code = subprocess.call(cmd, env=env)
        if code != 0:
            raise SystemExit(f"[launch] `{' '.join(cmd)}` failed (exit {code}): the browser tests cannot run")


def main(argv: list[str]) -> int:
    argv = list(argv)
    run_tests = "--run-tests" in argv
    if run_tests:
        argv.remove("--run-tests")
    torch_index_url = _pop_option(argv, "--torch-index-url") or os.environ.get("TORCH_INDEX_URL")
    skip_install = "--skip-install" in argv
    if skip_install:
        argv.remove("--skip-install")
    use_lock = "--no-lock" not in argv          # --no-lock: the open ranges of requirements*.txt
    if not use_lock:
        argv.remove("--no-lock")
    if "--refresh-lock" in argv:                # the rest of argv goes to pytest
        argv.remove("--refresh-lock")
        keep_versions = "--keep-versions" in argv
        if keep_versions:
            argv.remove("--keep-versions")
        return refresh_lock(keep_versions, torch_index_url, argv)

    if not skip_install:
        ensure_environment(dev=run_tests, torch_index_url=torch_index_url, use_lock=use_lock)
    if run_tests:
        ensure_test_browser()
        cmd = [str(venv_python()), "-m", "pytest", *argv]
    else:
        cmd = [str(venv_python()), "-m", "webui", *argv]
    os.chdir(ROOT)
    if os.name == "posix":
        # Become the app (same pid): a service manager's or the terminal's SIGTERM/Ctrl+C reaches it
        # directly, and stopping launch.py never leaves an orphaned app holding the port.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)   # Windows: no exec that keeps the console; Ctrl+C reaches the whole group


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
