"""Downloading a model file the user asked for: streamed, checked, never left half-written.

The bytes go to `<target>.part` while a progress callback is told how far along it is; the sha256
is computed on the fly and checked before the file is renamed to its final name (an atomic rename
in the same folder), so a model folder only ever holds complete, verified files. Offline or on an
HTTP error the message says what happened and where to put the file by hand.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError

log = logging.getLogger(__name__)

# The checkpoint AUTOMATIC1111 downloads on first start when no model is found.
DEFAULT_MODEL_URL = ("https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
                     "v1-5-pruned-emaonly.safetensors")
DEFAULT_MODEL_SHA256 = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
DEFAULT_MODEL_NAME = "v1-5-pruned-emaonly.safetensors"

CHUNK = 1 << 20
# Called with (bytes done, total bytes or None); raising from it (e.g. Interrupted) stops the download.
ProgressCallback = Callable[[int, "int | None"], None]


class DownloadError(UserError):
    """The download failed; nothing was left at the target path."""


@dataclass(frozen=True)
class DefaultModel:
    url: str = DEFAULT_MODEL_URL
    sha256: str = DEFAULT_MODEL_SHA256
    filename: str = DEFAULT_MODEL_NAME


def _describe_network_error(err: Exception, url: str) -> str:
    import requests

    if isinstance(err, requests.exceptions.ConnectionError):
        return (f"could not connect to download {url} (no network connection?). Download the file on a "
                f"machine with internet access and copy it by hand")
    if isinstance(err, requests.exceptions.Timeout):
        return f"the download of {url} timed out; try again later or copy the file by hand"
    return f"download of {url} failed: {err}"


def download_file(url: str, target: str | os.PathLike[str], *, sha256: str | None = None,
                  progress: ProgressCallback | None = None, timeout: float = 30.0,
                  chunk_size: int = CHUNK) -> Path:
    """Download `url` to `target` (a file path) and return it.

    A target that already exists with the right hash is returned at once. Raises DownloadError with
    a readable message when offline, on an HTTP error, or when the sha256 does not match; in every
    failure the `.part` file is removed and `target` is untouched.
    """
    import requests

    target = Path(target)
    expected = sha256.lower() if sha256 else None
    if target.exists():
        if expected is None or _file_sha256(target) == expected:
            return target
        raise DownloadError(f"{target} exists but its sha256 is not {expected}; remove it and try again")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    done = 0
    try:
        with requests.get(url, stream=True, timeout=timeout, allow_redirects=True) as resp:
            if resp.status_code >= 400:
                raise DownloadError(f"download of {url} failed: HTTP {resp.status_code} {resp.reason}")
            total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
            if progress:
                progress(0, total)
            last = 0.0
            with open(part, "wb") as f:
                for chunk in resp.iter_content(chunk_size):
                    if not chunk:
                        continue
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if progress and (now - last > 0.2 or done == total):
                        last = now
                        progress(done, total)
                f.flush()
                os.fsync(f.fileno())
            if total is not None and done != total:
                raise DownloadError(f"download of {url} ended early: got {done} of {total} bytes; try again")
        if progress:
            progress(done, total or done)
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise DownloadError(f"downloaded file from {url} is corrupt or not the expected one: sha256 "
                                f"{actual} instead of {expected}; it was deleted")
        os.replace(part, target)
        log.info("downloaded %s (%d bytes) to %s", url, done, target)
        return target
    except requests.exceptions.RequestException as err:
        raise DownloadError(_describe_network_error(err, url)) from None
    finally:
        part.unlink(missing_ok=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download_default_model(checkpoints_dir: str | os.PathLike[str], progress: ProgressCallback | None = None,
                           model: DefaultModel = DefaultModel()) -> Path:
    """Download the default SD 1.5 checkpoint into `checkpoints_dir` (sha256 checked)."""
    return download_file(model.url, Path(checkpoints_dir) / model.filename, sha256=model.sha256, progress=progress)


def format_progress(done: int, total: int | None) -> str:
    mb = done / 1e6
    if total:
        return f"{mb:,.0f} / {total / 1e6:,.0f} MB ({done / total:.0%})"
    return f"{mb:,.0f} MB"
