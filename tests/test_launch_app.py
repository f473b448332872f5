"""Launch behaviour with the real process: no model → starts and says where to put one; a taken
explicit port → an error naming it; launch.py becomes
the app (SIGTERM stops it, the port is free); --share offline → keeps serving locally and says why; --help
documents every flag."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import requests

from tests.helpers.app import ROOT, AppProcess


@pytest.fixture(scope="module")
def bare_app(tmp_path_factory):
    """No checkpoint anywhere, --share with no internet (or a share server refusing)."""
    tmp = tmp_path_factory.mktemp("bare")
    with AppProcess(["--data-dir", str(tmp), "--outdir", str(tmp / "out"), "--share", "--auth", "u:p"]) as app:
        app.data = tmp
        yield app


def config(app) -> dict:
    s = requests.Session()
    s.post(app.url + "login", data={"username": "u", "password": "p"}, timeout=10).raise_for_status()
    return s.get(app.url + "config", timeout=10).json()


def test_starts_without_a_model_and_says_where_to_put_one(bare_app):
    assert "no checkpoint found" in bare_app.output
    cfg = config(bare_app)
    texts = json.dumps(cfg)
    folder = str(bare_app.data / "models" / "Stable-diffusion")
    assert folder in texts                    # where to put models
    assert "--models-dir" in texts            # which flag points at an existing A1111 folder
    assert "Download default model" in texts  # the download offer
    comps = {c["props"].get("elem_id"): c for c in cfg["components"]}
    assert comps["no_model_box"]["props"]["visible"] is True


def test_a_taken_explicit_port_is_an_error_naming_it(bare_app):
    r = subprocess.run([sys.executable, "-m", "webui", "--ui-debug-mode", "--data-dir", str(bare_app.data),
                        "--port", str(bare_app.port)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"--port {bare_app.port} is taken" in r.stderr, (r.returncode, r.stderr[-500:])
    assert requests.get(bare_app.url, timeout=10).status_code == 200      # the app holding it is untouched


def test_launch_py_becomes_the_app_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import time

    from tests.helpers.app import free_port

    port = free_port()
    env = dict(os.environ, WEBUI_VENV=sys.prefix, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "launch.py", "--skip-install", "--ui-debug-mode", "--data-dir",
                             str(tmp_path), "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "Running on local URL" in line:
                break
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)          # to launch.py's pid: with exec, that is the app
        started = time.monotonic()
        proc.wait(30)
        assert time.monotonic() - started < 15
        with socket.socket() as s:                # nothing is left holding the port
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_share_failure_keeps_serving_locally(bare_app):
    m = bare_app.wait_for(r"(Could not create a share link.*|The share link is not ready.*|Public share link.*)",
                          timeout=40)
    if m.group(0).startswith("Public share link"):
        pytest.skip("this machine has internet: a real share link was created")
    assert "keeps serving locally" in m.group(0)
    assert requests.get(bare_app.url, timeout=10).status_code == 200


def test_help_documents_the_flags():
    r = subprocess.run([sys.executable, "-m", "webui", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for flag in ("--listen", "--port", "--share", "--auth", "--auth-file", "--api", "--ckpt", "--ckpt-dir",
                 "--models-dir", "--outdir", "--device", "--precision", "--lowvram", "--xformers",
                 "--ui-debug-mode", "--autolaunch", "--insecure-no-auth"):
        assert flag in r.stdout, flag


def test_missing_ckpt_flag_does_not_crash(tmp_path):
    with AppProcess(["--data-dir", str(tmp_path), "--outdir", str(tmp_path / "o"), "--ckpt", "nope.safetensors"]) as app:
        assert "--ckpt 'nope.safetensors'" in app.output
        assert requests.get(app.url, timeout=10).status_code == 200
