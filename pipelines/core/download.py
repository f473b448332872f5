"""Downloading a model file the user asked for: streamed, checked, never left half-written.

The bytes go to `<target>.part` while a progress callback is told how far along it is; the sha256
is computed on the fly and checked before the file is renamed to its final name (an atomic rename
in the same folder), so a model folder only ever holds complete, verified files. Offline or on an
HTTP error the message says what happened and where to put the file by hand.

Files of Hugging Face Hub repositories (annotator weights, interrogation models) go through huggingface_hub
instead: `fetch_from_hub`, with `hub_offline` / `hub_reachable` to say early and clearly why it cannot run.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

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

# ============================================================================ files of the Hugging Face Hub
# Models that live in a Hub repository are fetched with huggingface_hub (resumable, its own retries and
# progress bars); `download_file` above is for plain URLs (the default checkpoint, upscalers on GitHub).

HF_URL = "https://huggingface.co"
# Called with (what is happening, fraction done).
HubProgress = Callable[[str, float], None]


def hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is a requirement
        return True


def _remove_if_empty(folder: Path) -> None:
    """Drop a download folder with no model data yet (partial downloads are kept: the next try resumes)."""
    data = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size
            and (".cache" not in p.relative_to(folder).parts or p.suffix == ".incomplete")]
    if not data:
        shutil.rmtree(folder, ignore_errors=True)


def hub_reachable(timeout: float = 5.0) -> str | None:
    """None when the Hub's host accepts a connection, else why not. Skipped (None) behind a proxy.

    huggingface_hub retries a dead network for ~25 s per file; this answers in at most `timeout`.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):  # pragma: no cover
        endpoint = HF_URL
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as err:
        return f"cannot reach {host}: {err}"


def _is_missing_file(err: Exception) -> bool:
    """The Hub answered that the file does not exist (not: the network failed)."""
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        if isinstance(err, LocalEntryNotFoundError):   # "not cached and could not connect"
            return False
        if isinstance(err, EntryNotFoundError):        # the repo has no such file (404)
            return True
    except ImportError:  # pragma: no cover
        pass
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None) == 404


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _progress_tqdm(progress: HubProgress, stage: str, start: float, span: float):
    """A tqdm class for huggingface_hub that prints its usual bar and forwards the fraction."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def update(self, n=1):
            out = super().update(n)
            if self.total:
                progress(stage, start + span * min(1.0, self.n / self.total))
            return out

    return _Forward


def fetch_from_hub(repo: str, files: Sequence[Sequence[str]], target: Path, *, what: str, hint: str,
                   progress: HubProgress | None = None, optional: Sequence[str] = ()) -> None:
    """Fetch `files` of the Hub repository `repo` into the folder `target` with huggingface_hub.

    Each entry of `files` lists alternatives (the first the repository has wins); `optional` files may be
    missing. They arrive in `.download-<target name>` beside `target` and move into it when all are there, so
    an interrupted download never looks like a model (a partial one is kept: the next try resumes it). The
    caller checks `hub_offline()` / `hub_reachable()` first; a failure raises UserError naming the repository,
    the client's error and `hint` (what to put where by hand)."""
    from huggingface_hub import hf_hub_download

    report = progress or (lambda stage, fraction: None)
    tmp = target.parent / f".download-{target.name}"
    tmp.mkdir(parents=True, exist_ok=True)
    wanted = [tuple(alts) for alts in files] + [(name,) for name in optional]
    log.info("downloading %s from %s/%s into %s", what, HF_URL, repo, target)
    for i, alternatives in enumerate(wanted):
        last_err: Exception | None = None
        for filename in alternatives:
            if (tmp / filename).is_file():
                last_err = None
                break
            stage = f"downloading {what}: {filename}"
            report(stage, i / len(wanted))
            try:
                hf_hub_download(repo_id=repo, filename=filename, local_dir=tmp,
                                tqdm_class=_progress_tqdm(report, stage, i / len(wanted), 1 / len(wanted)))
                last_err = None
                break
            except Exception as err:   # 404 → try the next alternative; network errors end below
                last_err = err
                if not _is_missing_file(err):
                    break
        if last_err is not None and i < len(files):
            _remove_if_empty(tmp)
            raise UserError(f"could not download {what} from {HF_URL}/{repo} ({_short(last_err)}): {hint}") \
                from last_err
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    if target.exists():
        for p in tmp.iterdir():
            os.replace(p, target / p.name)
        tmp.rmdir()
    else:
        os.replace(tmp, target)
