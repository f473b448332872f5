"""A hostile client against the real app process (UI + API on a tiny model, local mode, no password).

One server for the module (start-up is the expensive part). What a web page or a misbehaving script
could do to a local app, and what must happen instead:
- DNS rebinding (a foreign Host name) and cross-site requests (a foreign Origin on POST, including Gradio's
  queue/upload and body-less POSTs such as /sdapi/v1/interrupt) are refused with 403;
- installing an extension from the UI is refused without --enable-insecure-extension-access;
- the first txt2img, sent as soon as the server answers (the start-up load is importing diffusers), works;
and after all of it the server still serves.
"""
from __future__ import annotations

import base64
import json
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers.app import ROOT, AppProcess, make_tiny_data_dir, tiny_app_args

EVIL = "http://evil.example"
TINY = {"width": 64, "height": 64, "steps": 1, "sampler_name": "Euler a"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = make_tiny_data_dir(tmp_path_factory.mktemp("hostile"))
    with AppProcess(tiny_app_args(data, "--api", "--queue-max-per-client", "3", "--max-upload-mb", "1")) as running:
        running.data = data
        running.base = running.url.rstrip("/")
        # The first generation is sent the moment the server answers, while the start-up load imports diffusers.
        running.first = requests.post(running.base + "/sdapi/v1/txt2img", json={**TINY, "prompt": "first"}, timeout=180)
        yield running


def post(app, path: str, **kw) -> requests.Response:
    return requests.post(app.base + path, timeout=60, **kw)


def fn_index(config: dict, elem_id: str) -> int:
    """The Gradio event index triggered by the component with `elem_id` (what a page would call)."""
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}
    for index, dep in enumerate(config["dependencies"]):
        if any(ids.get(target[0]) == elem_id for target in dep["targets"]):
            return dep.get("id", index)
    raise AssertionError(f"no event on {elem_id}")


def test_first_request_at_start_up_is_served(app):
    assert app.first.status_code == 200, app.first.text[:500]
    assert len(app.first.json()["images"]) == 1


def test_rebinding_hosts_are_refused(app):
    port = app.port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "localhost.evil"):
        for path in ("/", "/config", "/gradio_api/info", "/sdapi/v1/options", "/docs"):
            r = requests.get(app.base + path, headers={"Host": host}, timeout=10)
            assert r.status_code == 403, (host, path, r.status_code)
            assert "access-control-allow-origin" not in r.headers
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert requests.get(app.base + "/config", headers={"Host": host}, timeout=10).status_code == 200


@pytest.mark.parametrize("path,body", [
    ("/sdapi/v1/interrupt", None), ("/sdapi/v1/skip", None), ("/sdapi/v1/unload-checkpoint", None),
    ("/sdapi/v1/options", {"samples_format": "jpg"}), ("/sdapi/v1/txt2img", {"steps": 1}),
    ("/gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "x"}),
    ("/gradio_api/upload", None),
])
def test_cross_site_requests_are_refused(app, path, body):
    for origin in (EVIL, "null", f"http://127.0.0.1:{app.port + 1}", f"http://localhost:{app.port}"):
        r = post(app, path, json=body, headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.status_code)
        assert "cross-origin" in r.json()["detail"]


def test_own_origin_and_scripts_without_origin_pass(app):
    own = {"Origin": f"http://127.0.0.1:{app.port}"}
    assert post(app, "/sdapi/v1/interrupt", headers=own).status_code == 200
    assert post(app, "/sdapi/v1/interrupt").status_code == 200               # curl / Python: no Origin
    assert requests.get(app.base + "/sdapi/v1/progress", headers={"Origin": EVIL}, timeout=10).status_code == 200


def test_extension_install_from_the_ui_is_refused_without_the_flag(app):
    config = requests.get(app.base + "/config", timeout=10).json()
    index = fn_index(config, "extensions_install")
    r = post(app, "/gradio_api/queue/join", json={"data": ["https://example.com/owner/repo.git"],
                                                  "fn_index": index, "session_hash": "hostile1"})
    assert r.status_code == 200
    with requests.get(app.base + "/gradio_api/queue/data", params={"session_hash": "hostile1"}, stream=True,
                      timeout=60) as stream:
        events = []
        for line in stream.iter_lines():
            if line.startswith(b"data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("msg") == "process_completed":
                    break
    done = events[-1]
    assert done["success"] is False and "--enable-insecure-extension-access" in json.dumps(done)
    assert not (ROOT / "extensions" / "repo").exists()


def txt2img(app, **body) -> requests.Response:
    return post(app, "/sdapi/v1/txt2img", json={**TINY, **body})


def test_a_flood_of_queued_jobs_is_refused_past_the_limit(app):
    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda i: txt2img(app, steps=4, prompt=f"flood {i}"), range(100)))
    codes = Counter(r.status_code for r in answers)
    assert set(codes) == {200, 429} and codes[429] >= 50, codes            # 3 per client (+ the running one)
    refused = next(r for r in answers if r.status_code == 429)
    assert "jobs queued or running" in refused.json()["detail"] and refused.headers["retry-after"]
    assert all(len(r.json()["images"]) == 1 for r in answers if r.status_code == 200)
    assert txt2img(app).status_code == 200                                   # nothing else broken


def progress(app) -> dict:
    return requests.get(app.base + "/sdapi/v1/progress", timeout=10).json()


def test_a_disconnected_clients_jobs_are_dropped_and_interrupted(app):
    body = json.dumps({**TINY, "steps": 150, "prompt": "abandoned"}).encode()
    socks = []
    for _ in range(2):                        # one runs, one waits in the queue
        sock = socket.create_connection(("127.0.0.1", app.port))
        sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        socks.append(sock)
    deadline = time.monotonic() + 30
    while progress(app)["state"]["job"] == "" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert progress(app)["state"]["queue_pending"] == 1
    for sock in socks:
        sock.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (progress(app)["state"]["job"] or progress(app)["state"]["queue_pending"]):
        time.sleep(0.2)
    state = progress(app)["state"]
    assert state["job"] == "" and state["queue_pending"] == 0, state
    assert "client went away" in app.output


@pytest.mark.parametrize("body,field", [
    ({"batch_size": 8, "n_iter": 100}, "n_iter"),
    ({"width": 2048, "height": 2048, "n_iter": 32}, "batch_size"),
    ({"enable_hr": True, "hr_resize_x": 64, "hr_resize_y": 0, "height": 64, "width": 2048}, "hr_resize_y"),
    ({"alwayson_scripts": {"controlnet": {"args": [{"enabled": False}] * 5}}}, "alwayson_scripts.controlnet.args"),
])
def test_oversized_requests_are_refused_naming_the_field(app, body, field):
    r = txt2img(app, **body)
    assert r.status_code == 422, r.text[:300]
    assert [".".join(map(str, d["loc"][1:])) for d in r.json()["detail"]] == [field]


def test_uploads_are_bounded_and_only_known_image_formats_are_opened(app):
    r = post(app, "/gradio_api/upload", files={"files": ("big.png", b"\0" * (2 * 1024 * 1024), "image/png")})
    assert r.status_code == 413, r.status_code
    eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n").decode()
    for path, payload in (("/sdapi/v1/png-info", {"image": eps}), ("/sdapi/v1/img2img", {**TINY, "init_images": [eps]})):
        r = post(app, path, json=payload)
        assert r.status_code in (400, 415, 422), (path, r.status_code, r.text[:200])


@pytest.mark.parametrize("body,field", [
    ({"alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "image": [{"mask": "x"}]}]}}}, None),
    ({"prompt": "a cat <lora:x:nan>"}, "prompt"),
    ({"prompt": "a cat <lora:x:1:inf>"}, "prompt"),
    ({"prompt": "a cat <lora:x:unet=-inf>"}, "prompt"),
    ({"enable_hr": True, "hr_resize_x": 8, "hr_resize_y": 0, "width": 512, "height": 64}, "hr_resize_y"),
])
def test_bad_input_is_a_4xx_with_a_message(app, body, field):
    r = txt2img(app, **body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    if field:
        assert [".".join(map(str, d["loc"][1:])) for d in detail] == [field]
    assert str(app.data) not in r.text


def test_messages_carry_no_server_paths(app):
    r = txt2img(app, override_settings={"sd_model_checkpoint": "no-such-model"})
    assert r.status_code == 404
    assert str(app.data) not in r.text and str(ROOT) not in r.text, r.text


def test_server_still_serves(app):
    assert requests.get(app.base + "/sdapi/v1/sd-models", timeout=10).status_code == 200
    assert requests.get(app.base + "/", timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------ with a password

USER, PASSWORD = "jürgen", "pässwörd-✓"        # UTF-8 credentials: the UI and the API take the same ones
UTF8_AUTH = (USER.encode(), PASSWORD.encode())    # what curl and browsers send (requests would try Latin-1)
ROUTE_EXT = '''
def setup(ext):
    @ext.app_started
    def started(app):
        app.add_api_route("/ext-late/secret", lambda: {"secret": 42}, methods=["GET"])
    ext.add_api_route("/ext-hook/secret", lambda: {"secret": 43})
'''


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-auth")
    ext = tmp / "ext" / "late_route"
    ext.mkdir(parents=True)
    (ext / "extension.json").write_text(json.dumps({"name": "late route", "version": "1"}))
    (ext / "main.py").write_text(ROUTE_EXT)
    flags = ["--ui-debug-mode", "--api", "--listen", "--auth", f"{USER}:{PASSWORD}", "--data-dir", str(tmp),
             "--outdir", str(tmp / "out"), "--extensions-dir", str(tmp / "ext")]
    with AppProcess(flags) as running:
        running.base = running.url.rstrip("/")
        yield running


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/sdapi/v1/options", "/ext-late/secret",
                                  "/ext-hook/secret"])
def test_everything_is_behind_auth(locked, path):
    r = requests.get(locked.base + path, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic", (path, r.status_code)
    assert requests.get(locked.base + path, auth=(USER.encode(), PASSWORD.encode() + b"x"), timeout=10).status_code == 401
    assert requests.get(locked.base + path, auth=UTF8_AUTH, timeout=10).status_code == 200


def test_non_ascii_password_logs_in_to_the_ui(locked):
    s = requests.Session()
    s.post(locked.base + "/login", data={"username": USER, "password": PASSWORD}, timeout=10).raise_for_status()
    assert s.get(locked.base + "/config", timeout=10).status_code == 200


def test_password_guessing_is_rate_limited(locked):
    # the other tests of this module are done: this one locks 127.0.0.1 out for a minute
    statuses = [requests.post(locked.base + "/login", data={"username": USER, "password": f"guess{i}"},
                              timeout=10).status_code for i in range(12)]
    assert statuses[0] in (400, 401) and statuses[-1] == 429, statuses
    r = requests.get(locked.base + "/sdapi/v1/options", auth=UTF8_AUTH, timeout=10)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0       # even the right password, for now


def test_api_auth_alone_also_protects_the_ui_programmatic_endpoints(tmp_path):
    """--api-auth without --auth: the UI page stays open, but gradio_api/call/* is an API like /sdapi/v1."""
    from types import SimpleNamespace

    import gradio as gr
    from fastapi.testclient import TestClient

    from webui.app.auth import access_control
    from webui.app.cli import parse_args
    from webui.app.server import create_app

    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda text: text.upper(), box, box, api_name="shout")
    args = parse_args(["--api-auth", f"{USER}:{PASSWORD}", "--data-dir", str(tmp_path)])
    services = SimpleNamespace(args=args, engine=SimpleNamespace(hooks=None), saver=SimpleNamespace(root=tmp_path))
    with TestClient(create_app(services, access_control(args), demo), base_url="http://127.0.0.1") as client:
        assert client.get("/config").status_code == 200
        assert client.post("/gradio_api/call/shout", json={"data": ["hi"]}).status_code == 401
        r = client.post("/gradio_api/call/shout", json={"data": ["hi"]}, auth=UTF8_AUTH)
        assert r.status_code == 200 and r.json()["event_id"]


def test_presets_and_styles_are_read_only_when_exposed(tmp_path):
    from pipelines.core.errors import UserError
    from pipelines.params.presets import PRESETS_DIR
    from webui.app.cli import parse_args
    from webui.app.services import ReadOnlyPresetStore, ReadOnlyStyleDatabase, writes_allowed

    assert not writes_allowed(parse_args(["--listen"])) and not writes_allowed(parse_args(["--share"]))
    assert writes_allowed(parse_args([])) and writes_allowed(parse_args(["--listen", "--enable-insecure-extension-access"]))
    shipped = sorted(p.read_bytes() for p in PRESETS_DIR.glob("*.json"))
    store = ReadOnlyPresetStore(PRESETS_DIR)
    name = store.presets()[0].name
    for write in (lambda: store.delete(name), lambda: store.save(name, {"steps": 3}), store.reset_defaults):
        with pytest.raises(UserError, match="--enable-insecure-extension-access"):
            write()
    assert sorted(p.read_bytes() for p in PRESETS_DIR.glob("*.json")) == shipped
    csv = tmp_path / "styles.csv"
    csv.write_text("name,prompt,negative_prompt\nfox,a fox,\n", encoding="utf-8")
    styles = ReadOnlyStyleDatabase(csv)
    with pytest.raises(UserError, match="--enable-insecure-extension-access"):
        styles.delete("fox")
    assert styles.names() == ["fox"]


def test_sigterm_interrupts_a_long_job_and_exits_within_seconds(app):
    """Last test of the shared server: an accepted long request is running when the app is told to stop."""
    import signal
    import threading

    threading.Thread(target=lambda: txt2img(app, steps=150, n_iter=30, prompt="long"), daemon=True).start()
    deadline = time.monotonic() + 30
    while progress(app)["state"]["job"] == "" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "long" in progress(app)["state"]["job"]
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    app.proc.wait(30)
    assert time.monotonic() - started < 10 and app.proc.returncode == 0
