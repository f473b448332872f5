"""Extensions: folders under `extensions/` that add tabs, generation hooks, parameters and API routes.

    manager = ExtensionManager.from_args(args, hooks)     # webui.app.services does this once
    manager.load_all()                                    # import each enabled one, call its setup(ext)

An extension is a folder with an `extension.json` manifest and a Python entry module (default
`main.py`) defining `setup(ext)`, where `ext` is a `pipelines.hooks.ExtensionHooks`. Optional:
`requirements.txt` (installed into the app's environment on first load, skipped when already
satisfied; a content-hash stamp avoids re-checking), `javascript/*.js` and `style.css` (added to the
page). Which extensions are enabled is kept in `<data dir>/config/extensions.json`.

Isolation: an extension whose manifest is bad, whose requirements cannot be installed, whose import or
`setup()` raises, is not loaded; the Extensions tab shows why with the traceback, and everything else
runs. Hook failures at run time are handled by `pipelines.hooks.HookRegistry` the same way.

Installing from a git URL (it runs the clone's code and pip) is possible from the UI only with
`--enable-insecure-extension-access` (AUTOMATIC1111's flag), in every mode: `ExtensionManager.install`
refuses otherwise, whatever the UI shows. A corrupt `extensions.json` is reported and loads no extension
(it may have listed some as disabled) until it is fixed or saved again from the Extensions tab.

No Gradio import at module level: the API-only app (`--nowebui`) loads extensions too.
"""
from __future__ import annotations

import hashlib
import html
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipelines.core.errors import UserError
from pipelines.hooks import HookRegistry




log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "extensions"
APP_NAME = "sd-webui-diffusers"
APP_VERSION = "0.1.0"
MANIFEST = "extension.json"
CONFIG_FILE = Path("config") / "extensions.json"
INSTALL_DISABLED = ("Installing extensions from the UI is disabled: it runs the extension's code and pip on this "
                    "machine for whoever can use the UI. Start the app with --enable-insecure-extension-access to "
                    "allow it, or clone the extension into the extensions folder on the server and restart the app.")
MODULE_PREFIX = "webui_extension_"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GIT_URL = re.compile(r"(https?://|ssh://|git@|file://)[^\s]+")
CLONE_TIMEOUT = 300


class ExtensionError(Exception):
    """An extension cannot be loaded; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class Manifest:
    name: str
    version: str = "0"
    description: str = ""
    requires: tuple[str, ...] = ()       # "app>=0.1" and/or Python requirement specs ("numpy>=1.26")
    entry: str = "main.py"

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ExtensionError(f"cannot read {MANIFEST}: {err.strerror or err}") from None
        except ValueError as err:
            raise ExtensionError(f"{MANIFEST} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ExtensionError(f"{MANIFEST} must be a JSON object")
        requires = data.get("requires", [])
        if isinstance(requires, str):
            requires = [requires]
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise ExtensionError(f"{MANIFEST}: 'requires' must be a list of strings")
        entry = data.get("entry") or "main.py"
        if not isinstance(entry, str) or not entry.endswith(".py") or Path(entry).is_absolute() or ".." in Path(entry).parts:
            raise ExtensionError(f"{MANIFEST}: 'entry' must name a .py file inside the extension folder")
        for key in ("name", "version", "description"):
            if key in data and not isinstance(data[key], str):
                raise ExtensionError(f"{MANIFEST}: '{key}' must be a string")
        return cls(name=data.get("name") or folder.name, version=data.get("version") or "0",
                   description=data.get("description") or "", requires=tuple(requires), entry=entry)


def _requirement_ok(spec: str) -> tuple[bool, str]:
    """(satisfied, why not) for one 'requires' entry: the app's version or an installed distribution."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    try:
        req = Requirement(spec)
    except InvalidRequirement as err:
        return False, f"{spec!r} is not a requirement spec ({err})"
    if req.marker is not None and not req.marker.evaluate():
        return True, ""
    if req.name.lower() in ("app", APP_NAME):
        ok = req.specifier.contains(APP_VERSION, prereleases=True)
        return ok, "" if ok else f"needs app {req.specifier}, this is {APP_VERSION}"
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False, f"needs the Python package {spec} (not installed)"
    try:
        ok = not req.specifier or req.specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        ok = True
    return ok, "" if ok else f"needs {spec}, {req.name} {installed} is installed"


def unsatisfied_requirements(lines: list[str]) -> list[str]:
    """The lines of a requirements.txt that the environment does not satisfy (options count as unsatisfied)."""
    missing = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            missing.append(line)
            continue
        ok, _ = _requirement_ok(line)
        if not ok:
            missing.append(line)
    return missing


def run_pip(requirements: Path, progress: Callable[[str], None]) -> None:
    """`python -m pip install -r requirements.txt` into the app's environment, reporting each line."""
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r", str(requirements)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail = (tail + [line])[-8:]
            if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR")):
                progress(line)
    if proc.wait() != 0:
        raise ExtensionError(f"pip install -r {requirements.name} failed (exit {proc.returncode}):\n" + "\n".join(tail))


# ---------------------------------------------------------------------------------------------- one extension

@dataclass
class Extension:
    id: str                                  # the folder name
    folder: Path
    manifest: Manifest | None = None
    enabled: bool = True
    loaded: bool = False
    error: str | None = None                 # why it is not loaded
    traceback: str | None = None
    notes: list[str] = field(default_factory=list)
    module: Any = None

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.id

    @property
    def version(self) -> str:
        return self.manifest.version if self.manifest else ""

    def fail(self, message: str, tb: str | None = None) -> None:
        self.loaded = False
        self.error = message
        self.traceback = tb

    def assets(self) -> tuple[str, list[tuple[str, str]]]:
        """(style.css text, [(js file name, text)]) of the extension's folder."""
        css_path = self.folder / "style.css"
        css = css_path.read_text(encoding="utf-8") if css_path.is_file() else ""
        js_dir = self.folder / "javascript"
        scripts = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(js_dir.glob("*.js"))] if js_dir.is_dir() else []
        return css, scripts


# ---------------------------------------------------------------------------------------------- the manager

class ExtensionManager:
    """Finds, enables/disables, loads and installs extensions; the status the Extensions tab shows."""

    def __init__(self, dirs: list[Path], hooks: HookRegistry, *, config_path: Path, data_dir: Path | None = None,
                 exposed: bool = False, disable_all: bool = False, install_allowed: bool = False,
                 pip: Callable[[Path, Callable[[str], None]], None] = run_pip):
        self.dirs = [Path(d) for d in dirs] or [DEFAULT_DIR]
        self.hooks = hooks
        self.config_path = Path(config_path)
        self.data_dir = Path(data_dir) if data_dir else self.config_path.parent.parent
        self.exposed = exposed
        self.install_allowed = install_allowed
        self.config_error: str | None = None     # set when extensions.json cannot be read
        self.disable_all = disable_all
        self.pip = pip
        self.extensions: list[Extension] = []
        self.installed: list[str] = []           # installed from the UI during this run (load after restart)
        self._lock = threading.Lock()

    @classmethod
    def from_args(cls, args, hooks: HookRegistry) -> "ExtensionManager":
        from ..app.auth import is_exposed

        data = Path(getattr(args, "data_dir", ".") or ".")
        dirs = [Path(d) for d in (getattr(args, "extensions_dir", None) or [DEFAULT_DIR])]
        return cls(dirs, hooks, config_path=data / CONFIG_FILE, data_dir=data, exposed=is_exposed(args),
                   disable_all=bool(getattr(args, "disable_all_extensions", False)),
                   install_allowed=bool(getattr(args, "enable_insecure_extension_access", False)))

    @property
    def install_dir(self) -> Path:
        return self.dirs[0]

    # ------------------------------------------------------------------ config (enabled / disabled)
    def _read_config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            # Not "everything enabled": the file may list extensions the user switched off.
            self.config_error = (f"{self.config_path} is unreadable ({err}); no extension is loaded until it is "
                                 "fixed, or saved again from the Extensions tab")
            log.error("%s", self.config_error)
            return {}

    def disabled_ids(self) -> set[str]:
        disabled = self._read_config().get("disabled", [])
        return {d for d in disabled if isinstance(d, str)} if isinstance(disabled, list) else set()

    def set_enabled(self, ext_id: str, enabled: bool) -> None:
        """Persist one extension's switch (applies at the next start)."""
        disabled = self.disabled_ids()
        (disabled.discard if enabled else disabled.add)(ext_id)
        self.save_disabled(disabled)

    def save_disabled(self, disabled: set[str]) -> None:
        with self._lock:
            data = self._read_config()
            data["disabled"] = sorted(disabled)
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.config_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            tmp.replace(self.config_path)
            self.config_error = None
        for ext in self.extensions:
            ext.enabled = ext.id not in disabled

    # ------------------------------------------------------------------ discovery and loading
    def discover(self) -> list[Extension]:
        disabled = self.disabled_ids()
        blocked = self.disable_all or self.config_error is not None
        found: dict[str, Extension] = {}
        for root in self.dirs:
            if not root.is_dir():
                continue
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                ext = Extension(folder.name, folder, enabled=folder.name not in disabled and not blocked)
                if folder.name in found:
                    ext.enabled = False
                    ext.fail(f"another extension named {folder.name!r} is already in {found[folder.name].folder.parent}")
                    found[f"{folder.name}@{root}"] = ext
                    continue
                found[folder.name] = ext
                if not _ID.fullmatch(folder.name):
                    ext.fail("the folder name must be letters, digits, '.', '_' or '-' (it is the extension's id)")
                    continue
                if not (folder / MANIFEST).is_file():
                    ext.fail(f"no {MANIFEST}: not an extension of this app (AUTOMATIC1111 extensions do not run "
                             f"here); see docs/extensions.md")
                    continue
                try:
                    ext.manifest = Manifest.read(folder)
                except ExtensionError as err:
                    ext.fail(str(err))
        self.extensions = list(found.values())
        return self.extensions

    def load_all(self) -> list[Extension]:
        """Discover and load every enabled extension; failures are recorded, never raised."""
        self.discover()
        if self.disable_all:
            log.info("--disable-all-extensions: no extension is loaded")
        for ext in self.extensions:
            if ext.enabled and ext.error is None:
                self.load(ext)
        loaded = [e.id for e in self.extensions if e.loaded]
        if self.extensions:
            log.info("extensions loaded: %s", ", ".join(loaded) or "none")
        return self.extensions

    def load(self, ext: Extension) -> bool:
        assert ext.manifest is not None
        try:
            self._install_requirements(ext)
            problems = [why for ok, why in map(_requirement_ok, ext.manifest.requires) if not ok]
            if problems:
                raise ExtensionError("; ".join(problems))
            module = self._import(ext)
            setup = getattr(module, "setup", None)
            if not callable(setup):
                raise ExtensionError(f"{ext.manifest.entry} defines no setup(ext) function")
            handle = self.hooks.for_extension(ext.id, ext.folder, self.data_dir / "extensions-data" / ext.id)
            setup(handle)
        except ExtensionError as err:
            self.hooks.remove(ext.id)
            ext.fail(str(err))
            log.error("extension %s not loaded: %s", ext.id, err)
            return False
        except (Exception, SystemExit) as err:   # noqa: BLE001 - an extension must never stop the app
            self.hooks.remove(ext.id)
            tb = _extension_traceback(err)
            ext.fail(f"{type(err).__name__}: {err}", tb)
            log.error("extension %s not loaded:\n%s", ext.id, tb.rstrip())
            return False
        ext.loaded = True
        ext.error = ext.traceback = None
        return True

    def _import(self, ext: Extension):
        """Import the entry module as `<prefix><id>.<module>`, so relative imports inside the folder work."""
        assert ext.manifest is not None
        package = MODULE_PREFIX + re.sub(r"\W", "_", ext.id)
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]            # a fresh import (tests build several apps in one process)
        entry = ext.folder / ext.manifest.entry
        if not entry.is_file():
            raise ExtensionError(f"entry module {ext.manifest.entry} not found in {ext.folder}")
        pkg = types.ModuleType(package)
        pkg.__path__ = [str(ext.folder)]
        pkg.__package__ = package
        sys.modules[package] = pkg
        mod_name = f"{package}.{'.'.join(Path(ext.manifest.entry).with_suffix('').parts)}"
        spec = importlib.util.spec_from_file_location(mod_name, entry)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        ext.module = module
        return module

    # ------------------------------------------------------------------ requirements.txt
    def _stamp_path(self, ext: Extension) -> Path:
        return self.data_dir / "cache" / "extensions" / f"{ext.id}.requirements.sha256"

    def _install_requirements(self, ext: Extension) -> None:
        req = ext.folder / "requirements.txt"
        if not req.is_file():
            return
        text = req.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        stamp = self._stamp_path(ext)
        try:
            if stamp.read_text(encoding="utf-8").strip() == digest:
                return                                   # installed (or found satisfied) before
        except OSError:
            pass
        missing = unsatisfied_requirements(text.splitlines())
        if missing:
            log.info("extension %s: installing requirements (%s) ...", ext.id, ", ".join(missing))
            self.pip(req, lambda line: log.info("extension %s: pip: %s", ext.id, line))
            importlib.invalidate_caches()
            ext.notes.append(f"requirements installed: {', '.join(missing)}")
        else:
            ext.notes.append("requirements already satisfied")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n", encoding="utf-8")

    # ------------------------------------------------------------------ page assets
    def loaded(self) -> list[Extension]:
        return [e for e in self.extensions if e.loaded]

    def css(self) -> str:
        parts = []
        for ext in self.loaded():
            try:
                css, _ = ext.assets()
            except OSError as err:
                log.warning("extension %s: cannot read style.css: %s", ext.id, err)
                continue
            if css.strip():
                parts.append(f"/* extension {ext.id} */\n{css}")
        return "\n".join(parts)

    def head(self) -> str:
        """`<script>` tags for the loaded extensions' javascript/*.js (Gradio's `head=`)."""
        tags = [HEAD_HELPERS] if self.loaded() else []
        for ext in self.loaded():
            try:
                _, scripts = ext.assets()
            except OSError as err:
                log.warning("extension %s: cannot read its javascript: %s", ext.id, err)
                continue
            for name, text in scripts:
                body = text.replace("</script", "<\\/script")
                tags.append(f"<script data-extension=\"{html.escape(ext.id)}\" data-file=\"{html.escape(name)}\">\n"
                            f"{body}\n</script>")
        return "\n".join(tags)

    # ------------------------------------------------------------------ install from git
    def install(self, url: str, *, git: str = "git") -> Path:
        """`git clone` a URL into the install folder (loaded at the next start). Refused without
        --enable-insecure-extension-access."""
        if not self.install_allowed:
            raise UserError(INSTALL_DISABLED)
        url = (url or "").strip()
        if not _GIT_URL.fullmatch(url):
            raise UserError("enter a git URL (https://..., ssh://..., git@host:owner/repo.git or file://...)")
        name = re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        if not _ID.fullmatch(name):
            raise UserError(f"cannot make a folder name from {url!r}")
        target = self.install_dir / name
        if target.exists():
            raise UserError(f"{target} already exists: remove it first to install again")
        if shutil.which(git) is None:
            raise UserError("git is not installed on the server")
        self.install_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.install_dir / f".{name}.installing"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            proc = subprocess.run([git, "clone", "--depth", "1", "--", url, str(tmp)], capture_output=True, text=True,
                                  timeout=CLONE_TIMEOUT, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        except subprocess.TimeoutExpired:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"git clone did not finish within {CLONE_TIMEOUT}s") from None
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"git clone failed: {last}")
        if not (tmp / MANIFEST).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"{url} has no {MANIFEST} at its top: not an extension of this app")
        tmp.rename(target)
        self.installed.append(name)
        log.info("extension %s installed into %s; restart the app to load it", name, target)
        return target

    # ------------------------------------------------------------------ status
    def status_rows(self) -> list[dict[str, Any]]:
        rows = []
        known = {e.id for e in self.extensions}
        for ext in self.extensions:
            failures = self.hooks.failures_of(ext.id)
            if ext.error or (ext.loaded and ext.id in self.hooks.disabled):
                kind, status = "error", "error"
            elif ext.loaded:
                kind, status = "loaded", "loaded" if ext.enabled else "loaded (disabled at the next start)"
            elif ext.enabled:
                kind, status = "pending", "enabled (loads at the next start)"
            else:
                kind, status = "disabled", "disabled"
            rows.append({"id": ext.id, "name": ext.name, "version": ext.version, "enabled": ext.enabled, "kind": kind,
                         "loaded": ext.loaded, "status": status, "error": ext.error, "traceback": ext.traceback,
                         "notes": list(ext.notes), "folder": str(ext.folder),
                         "description": ext.manifest.description if ext.manifest else "",
                         "failures": [{"hook": f.hook, "message": f.message, "traceback": f.traceback}
                                      for f in failures]})
        for name in self.installed:
            if name not in known:
                rows.append({"id": name, "name": name, "version": "", "enabled": True, "loaded": False, "kind": "pending",
                             "status": "installed (restart to load)", "error": None, "traceback": None, "notes": [],
                             "folder": str(self.install_dir / name), "description": "", "failures": []})
        return rows


def _extension_traceback(err: BaseException) -> str:
    """The traceback without the loader's own frames (what the extension's author needs to see)."""
    te = traceback.TracebackException.from_exception(err)
    frames = [f for f in te.stack if f.filename != __file__ and not f.filename.startswith("<frozen")]
    te.stack = traceback.StackSummary.from_list(frames or list(te.stack))
    return "".join(te.format())


# A1111-style helpers for extension scripts: onUiLoaded(fn) runs fn once the Gradio app is on the page.
HEAD_HELPERS = """<script>
(() => {
  if (window.onUiLoaded) return;
  const waiting = [];
  let ready = false;
  window.onUiLoaded = (fn) => { if (ready) { try { fn(); } catch (e) { console.error(e); } } else waiting.push(fn); };
  const check = () => {
    if (ready || !document.querySelector('#tabs')) return false;
    ready = true;
    waiting.splice(0).forEach((fn) => { try { fn(); } catch (e) { console.error(e); } });
    return true;
  };
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  const start = () => { if (!check()) obs.observe(document.documentElement, {childList: true, subtree: true}); };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
</script>"""


# ---------------------------------------------------------------------------------------------- app wiring

# ---------------------------------------------------------------------------------------------- UI
# (the Gradio parts, the Extensions tab and the extensions' widgets and tabs, are in webui/ui/extensions.py)

def status_html(manager: ExtensionManager | None) -> str:
    if manager is None:
        return "<p>Extensions are not available in this build.</p>"
    warning = f"<p class='ext-error'>{html.escape(manager.config_error)}</p>" if manager.config_error else ""
    return warning + _status_table(manager)


def _status_table(manager: ExtensionManager) -> str:
    rows = manager.status_rows()
    if not rows:
        folders = ", ".join(f"<code>{html.escape(str(d))}</code>" for d in manager.dirs)
        return f"<p class='ext-empty'>No extensions found in {folders}.</p>"
    out = ["<table class='extensions-table'><thead><tr><th>Extension</th><th>Version</th><th>Status</th>"
           "<th>Folder</th></tr></thead><tbody>"]
    details = []
    for r in rows:
        badge = html.escape(r["status"])
        note = "; ".join(r["notes"])
        desc = f"<div class='ext-desc'>{html.escape(r['description'])}</div>" if r["description"] else ""
        out.append(f"<tr class='ext-{r['kind']}' data-extension='{html.escape(r['id'])}'>"
                   f"<td><b>{html.escape(r['name'])}</b> <code>{html.escape(r['id'])}</code>{desc}</td>"
                   f"<td>{html.escape(r['version'])}</td><td><span class='ext-status'>{badge}</span>"
                   f"{'<div>' + html.escape(note) + '</div>' if note else ''}</td>"
                   f"<td><code>{html.escape(r['folder'])}</code></td></tr>")
        if r["error"]:
            details.append(f"<details class='ext-error' open><summary>{html.escape(r['name'])}: "
                           f"{html.escape(r['error'])}</summary>"
                           f"<pre>{html.escape(r['traceback'] or r['error'])}</pre></details>")
        for f in r["failures"]:
            details.append(f"<details class='ext-error'><summary>{html.escape(r['name'])} failed in "
                           f"{html.escape(f['hook'])}: {html.escape(f['message'])} (switched off until restart)"
                           f"</summary><pre>{html.escape(f['traceback'])}</pre></details>")
    out.append("</tbody></table>")
    return "".join(out + details)


EXTENSIONS_CSS = """
.extensions-table { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.extensions-table th, .extensions-table td { text-align: left; padding: 5px 8px; vertical-align: top;
    border-bottom: 1px solid var(--border-color-primary); }
.extensions-table .ext-desc { opacity: 0.75; font-size: 0.9em; }
.extensions-table .ext-status { font-weight: 600; }
.extensions-table tr.ext-error .ext-status { color: var(--error-text-color, #b91c1c); }
.extensions-table tr.ext-disabled .ext-status { opacity: 0.6; }
.ext-error pre { white-space: pre-wrap; font-size: 0.85em; max-height: 320px; overflow: auto; }
"""


def page_assets(services) -> tuple[str, str]:
    """(css, head) to add to the page: the Extensions tab's style, the extensions' style.css and scripts."""
    manager = getattr(services, "extensions", None)
    if manager is None:
        return EXTENSIONS_CSS, ""
    return EXTENSIONS_CSS + "\n" + manager.css(), manager.head()
