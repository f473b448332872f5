#!/usr/bin/env python3
"""Entry point: prepares `.venv` when needed, then starts the app or the test suite.

    python launch.py [app flags]          # set up once, start the web UI (see --help)
    python launch.py --run-tests [args]   # set up + dev requirements, run pytest (args go to pytest)

This file uses only the standard library: it runs under the bare system Python before the
virtual environment exists, then re-executes itself inside `.venv`.
"""
from __future__ import annotations

import hashlib
import os
import platform
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


def ensure_environment(dev: bool, torch_index_url: str | None) -> None:
    """Create `.venv` and install requirements, skipping everything already done for these files."""
    if not venv_python().exists():
        print(f"[launch] creating virtual environment in {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])

    torch_pkgs = TORCH_PACKAGES.get((platform.system(), platform.machine()), DEFAULT_TORCH)
    req_files = ["requirements.txt"] + (["requirements-dev.txt"] if dev else [])
    parts = [sys.version, " ".join(torch_pkgs), torch_index_url or ""]
    parts += [(ROOT / f).read_text() for f in req_files]
    stamp = _stamp(parts)
    if stamp.exists():
        return

    torch_args = list(torch_pkgs)
    if torch_index_url:
        torch_args += ["--index-url", torch_index_url]
    _pip(*torch_args)
    for f in req_files:
        _pip("-r", str(ROOT / f))
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        _install_xformers_if_compatible()
    stamp.write_text("\n".join(parts))


def _install_xformers_if_compatible() -> None:
    # xformers wheels pin one exact torch release; installing a mismatched one would make pip replace
    # the torch chosen above. "--no-deps" + a version check keeps torch as is; the engine then probes
    # whether its kernels actually run on the device before using it.
    try:
        _pip("--no-deps", "xformers")
    except subprocess.CalledProcessError:
        print("[launch] xformers not installed (optional); PyTorch SDPA attention will be used", flush=True)


def ensure_test_browser() -> None:
    """Browser tests drive Debian's chromium; install it when we can (root + apt), else tests skip."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("[launch] chromium/chromedriver not found: browser tests will be skipped", flush=True)
        return
    print("[launch] installing chromium + chromium-driver for the browser tests", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.call(["apt-get", "update", "-qq"], env=env)
    subprocess.call(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=env)


def main(argv: list[str]) -> int:
    argv = list(argv)
    run_tests = "--run-tests" in argv
    if run_tests:
        argv.remove("--run-tests")
    torch_index_url = _pop_option(argv, "--torch-index-url") or os.environ.get("TORCH_INDEX_URL")
    skip_install = "--skip-install" in argv
    if skip_install:
        argv.remove("--skip-install")

    if not skip_install:
        ensure_environment(dev=run_tests, torch_index_url=torch_index_url)
    if run_tests:
        ensure_test_browser()
        cmd = [str(venv_python()), "-m", "pytest", *argv]
    else:
        cmd = [str(venv_python()), "-m", "webui", *argv]
    os.chdir(ROOT)
    if in_venv():
        return subprocess.call(cmd)
    return subprocess.call(cmd)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
