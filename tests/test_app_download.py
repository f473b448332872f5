"""pipelines.core.download against a local HTTP server: streamed to .part, sha256-checked, atomic, clear errors."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from pipelines.core.download import DownloadError, download_default_model, download_file, DefaultModel

PAYLOAD = bytes(range(256)) * 4096 + b"tail"   # ~1 MB, more than one chunk
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/model.safetensors":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/model.safetensors")
            self.end_headers()
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_with_progress_and_checks_hash(server, tmp_path):
    seen = []
    target = tmp_path / "models" / "model.safetensors"
    out = download_file(f"{server}/model.safetensors", target, sha256=SHA.upper(), chunk_size=65536,
                        progress=lambda done, total: seen.append((done, total)))
    assert out == target and target.read_bytes() == PAYLOAD
    assert leftovers(target.parent) == ["model.safetensors"]          # no .part left behind
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    # already there with the right hash: nothing is fetched again
    assert download_file(f"{server}/missing", target, sha256=SHA) == target


def test_follows_redirects(server, tmp_path):
    target = download_file(f"{server}/redirect", tmp_path / "m.safetensors", sha256=SHA)
    assert target.read_bytes() == PAYLOAD


def test_wrong_hash_leaves_nothing(server, tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError, match="sha256") as err:
        download_file(f"{server}/model.safetensors", target, sha256="0" * 64)
    assert "deleted" in str(err.value)
    assert leftovers(tmp_path) == []


def test_existing_file_with_wrong_hash_is_reported(server, tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"something else")
    with pytest.raises(DownloadError, match="exists but its sha256"):
        download_file(f"{server}/model.safetensors", target, sha256=SHA)
    assert target.read_bytes() == b"something else"


def test_http_error_is_readable(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server}/nope", tmp_path / "x.safetensors")
    assert leftovers(tmp_path) == []


def test_truncated_download_is_removed(server, tmp_path):
    with pytest.raises(DownloadError):
        download_file(f"{server}/truncated", tmp_path / "x.safetensors", sha256=SHA)
    assert leftovers(tmp_path) == []


def test_offline_message(tmp_path):
    with socket.socket() as s:       # a port nobody listens on: connection refused, like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="no network connection") as err:
        download_file(f"http://127.0.0.1:{port}/model.safetensors", tmp_path / "m.safetensors", timeout=5)
    assert "copy it by hand" in str(err.value)
    assert leftovers(tmp_path) == []


def test_default_model_goes_to_checkpoints_folder(server, tmp_path):
    model = DefaultModel(url=f"{server}/model.safetensors", sha256=SHA, filename="v1-5-pruned-emaonly.safetensors")
    path = download_default_model(tmp_path / "Stable-diffusion", model=model)
    assert path == tmp_path / "Stable-diffusion" / "v1-5-pruned-emaonly.safetensors"
    assert path.read_bytes() == PAYLOAD


def test_default_model_constants():
    from pipelines.core import download

    assert download.DEFAULT_MODEL_URL.endswith("/v1-5-pruned-emaonly.safetensors")
    assert download.DEFAULT_MODEL_SHA256 == "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
