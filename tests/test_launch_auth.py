"""Exposure safety, with the real process: --listen without --auth gets a generated password (printed
once), --auth protects the UI and Gradio's API endpoints, only --insecure-no-auth runs open.

Only 127.0.0.1 is used: with --listen the app binds 0.0.0.0 and still answers on 127.0.0.1.
"""
from __future__ import annotations

import importlib.util
import re

import requests

from tests.helpers.app import AppProcess

PROTECTED = ["/config", "/gradio_api/info"]


def start(tmp_path, *flags):
    return AppProcess(["--ui-debug-mode", "--data-dir", str(tmp_path), "--outdir", str(tmp_path / "out"), *flags])


def assert_protected(url: str):
    base = url.rstrip("/")
    for path in PROTECTED:
        r = requests.get(base + path, timeout=10)
        assert r.status_code in (401, 403), (path, r.status_code)
    # Gradio's API: calling an endpoint or joining the queue without a session is refused
    r = requests.post(base + "/gradio_api/call/txt2img", json={"data": []}, timeout=10)
    assert r.status_code in (401, 403), r.status_code
    r = requests.post(base + "/gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"},
                      timeout=10)
    assert r.status_code in (401, 403), r.status_code
    # the page itself is the login form, not the app
    assert '"auth_required":true' in requests.get(base + "/", timeout=10).text.replace(" ", "")


def login(url: str, user: str, password: str) -> requests.Session:
    s = requests.Session()
    r = s.post(url.rstrip("/") + "/login", data={"username": user, "password": password}, timeout=10)
    r.raise_for_status()
    return s


HAS_API = importlib.util.find_spec("webui.api.routes") is not None
API_PATH = "sdapi/v1/sd-models"


def assert_api_protected(url: str, user: str, password: str):
    """/sdapi/v1 answers 401 (asking for HTTP Basic) without or with wrong credentials, 200 with them."""
    if not HAS_API:
        return
    r = requests.get(url + API_PATH, timeout=10)
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Basic", r.status_code
    assert requests.get(url + API_PATH, auth=(user, password + "x"), timeout=10).status_code == 401
    assert requests.get(url + API_PATH, auth=(user, password), timeout=10).status_code == 200


def test_listen_without_auth_generates_a_password(tmp_path):
    with start(tmp_path, "--listen", "--api") as app:
        assert app.wait_for("Startup time")
        out = app.output
        found = re.findall(r"user 'admin' with password: (\S+)", out)
        assert len(found) == 1, out          # printed once
        password = found[0]
        assert len(password) >= 12
        assert out.count(password) == 1
        assert "installing extensions from the UI is disabled" in out
        assert_protected(app.url)
        bad = requests.post(app.url + "login", data={"username": "admin", "password": "wrong"}, timeout=10)
        assert bad.status_code in (400, 401)
        session = login(app.url, "admin", password)
        assert session.get(app.url + "config", timeout=10).status_code == 200
        assert session.get(app.url + "gradio_api/info", timeout=10).status_code == 200
        assert_api_protected(app.url, "admin", password)


def test_auth_protects_ui_and_api(tmp_path):
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("bob:b0b-secret\n# comment\n")
    with start(tmp_path, "--api", "--auth", "alice:pa:ss", "--auth-file", str(auth_file)) as app:
        assert "password:" not in app.output   # nothing generated when credentials are given
        assert_protected(app.url)
        assert_api_protected(app.url, "bob", "b0b-secret")
        for user, pw in (("alice", "pa:ss"), ("bob", "b0b-secret")):
            assert login(app.url, user, pw).get(app.url + "config", timeout=10).status_code == 200
        r = requests.post(app.url + "login", data={"username": "alice", "password": "b0b-secret"}, timeout=10)
        assert r.status_code in (400, 401)


def test_only_insecure_no_auth_runs_open(tmp_path):
    with start(tmp_path, "--listen", "--insecure-no-auth", "--api") as app:
        app.wait_for("Startup time")
        assert "NO password" in app.output
        assert "password:" not in app.output
        assert requests.get(app.url + "config", timeout=10).status_code == 200
        assert requests.get(app.url + "gradio_api/info", timeout=10).status_code == 200
        if HAS_API:
            assert requests.get(app.url + API_PATH, timeout=10).status_code == 200


def test_bad_auth_value_is_refused_clearly(tmp_path):
    import subprocess
    import sys

    from tests.helpers.app import ROOT

    r = subprocess.run([sys.executable, "-m", "webui", "--ui-debug-mode", "--auth", "no-colon-here"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "must be user:password" in r.stderr
