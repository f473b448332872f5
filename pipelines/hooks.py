"""The hook registry: what extensions add to the app, and the calls the engine makes into them.

One `HookRegistry` is created by the app (`webui.app.services`) and handed to the `Engine`; nothing here is
a module global, and nothing here imports Gradio. Each extension receives its own `ExtensionHooks`
(`setup(ext)` in its entry module) and registers through it:

    def setup(ext):
        ext.add_param(Param("my_strength", float, 0.5, "My strength", "My strength", 0.0, 1.0, 0.05),
                      section="My extension")

        @ext.before_generation
        def tweak(req):                      # GenerationRequest in, a new one (or None: unchanged) out
            return req.replace(steps=req.steps + 1) if req.extra["my_strength"] > 0.9 else None

Hooks (all typed; see docs/extensions.md):

    add_tab(title, build_fn)                   a UI tab; build_fn() creates Gradio components
    add_param(Param, modes, section)           a generation parameter: widget, request.extra, infotext, API
    before_generation(fn(req) -> req | None)   adjust the request of every txt2img/img2img job
    run_generation(fn(call) -> result | None)  take a job over (X/Y/Z plot, prompt matrix): see GenerationCall
    after_generation(fn(result))               the GenerationResult of every job
    on_step(fn(progress: StepProgress))        every sampler step
    after_image_saved(fn(path, infotext))      every image written to the outputs folder
    add_api_route(path, fn, methods)           a FastAPI route on the app
    app_started(fn(app))                       once the FastAPI app is assembled

Isolation: an exception raised by an extension's hook is logged with its traceback, recorded in
`failures` (the Extensions tab lists it) and the extension is switched off for the rest of the run;
the job goes on without it. A hook may raise `pipelines.core.errors.UserError` (or `ParameterError`) from
`before_generation` / `run_generation` to refuse a request with a message the user reads; that is not
a failure. `Interrupted` / `Skipped` pass through like the user's own interrupt.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .params import declarations as params_mod
from .core.errors import Interrupted, ParameterError, Skipped, UserError
from .params.declarations import BY_NAME, PARAMS, GenerationRequest, Param

if TYPE_CHECKING:   # no torch import here: generation imports this module
    from .generate.results import GenerationResult

log = logging.getLogger(__name__)

MODES = ("txt2img", "img2img")
HOOKS = ("before_generation", "run_generation", "after_generation", "on_step", "after_image_saved", "app_started")
PARAM_TYPES = (bool, int, float, str)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INFOTEXT_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ /\-]*[A-Za-z0-9_/\-]")   # what the infotext parser reads back
_BUILTIN_INFOTEXT = {p.infotext for p in PARAMS if p.infotext} | {
    "Size", "Model hash", "VAE hash", "Hires resize", "Lora hashes", "TI hashes", "Negative prompt"}


# ---------------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class StepProgress:
    """What `on_step` hooks receive after each sampler step."""

    mode: str                     # "txt2img" or "img2img" (of the whole job)
    stage: str                    # the pass: "txt2img", "hires" or "img2img"
    request: GenerationRequest
    step: int                     # 1-based step of the current pass ...
    steps: int                    # ... out of this many
    image: int                    # index of the first image of the current batch
    images: int                   # images in the job
    fraction: float               # progress of the whole job, 0..1
    latents: Any = None           # the current latents (torch tensor; read them, do not modify)


@dataclass(frozen=True)
class ExtensionParam:
    param: Param
    owner: str
    section: str


@dataclass(frozen=True)
class ExtensionTab:
    title: str
    build: Callable[[], Any]
    owner: str


@dataclass(frozen=True)
class ApiRoute:
    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...]
    owner: str


@dataclass(frozen=True)
class SelectableScript:
    """An AUTOMATIC1111 "selectable script" that API clients name in `script_name` with positional
    `script_args` (the webuiapi client does): here an extension runs it through its own parameters, so
    `to_values(script_args, mode)` turns A1111's argument list into {parameter name: value}."""
    title: str                            # A1111's title; `script_name` matches it case-insensitively
    to_values: Callable[[list, str], dict[str, Any]]
    owner: str
    modes: tuple[str, ...]
    args: tuple[str, ...] = ()            # the positional arguments' labels, for /sdapi/v1/script-info


@dataclass(frozen=True)
class HookFailure:
    extension: str
    hook: str                     # "setup", "before_generation", "tab: Title", ...
    message: str                  # "ValueError: ..."
    traceback: str
    when: float = field(default_factory=time.time)


@dataclass
class _Entry:
    fn: Callable[..., Any]
    owner: str


# ---------------------------------------------------------------------------------------------- a job taken over

class _CellControl:
    """The job's control seen by one sub-generation: progress rescaled to the whole job."""

    def __init__(self, control, index: int, total: int):
        self._control, self._index, self._total = control, index, total

    def __getattr__(self, attr):
        return getattr(self._control, attr)

    def update(self, **changes) -> None:
        if "fraction" in changes:
            changes["fraction"] = (self._index + min(1.0, changes["fraction"])) / self._total
        if "text" in changes:
            changes["text"] = f"{self._index + 1}/{self._total}: {changes['text']}"
        self._control.update(**changes)


@dataclass
class GenerationCall:
    """A job offered to `run_generation` hooks. A hook that takes it runs any number of ordinary
    generations with `generate(req)` (saved like normal outputs, with infotext) and returns one
    GenerationResult for the whole job; returning None leaves the job to the next hook / the engine."""

    mode: str                                   # "txt2img" or "img2img"
    request: GenerationRequest                  # after before_generation hooks
    save: bool                                  # whether images are saved (UI: yes; API: save_images)
    _run: Callable[[GenerationRequest, Any], "GenerationResult"] = field(repr=False, default=None)
    _control: Any = field(repr=False, default=None)
    _saver: Any = field(repr=False, default=None)
    _engine_error: BaseException | None = field(repr=False, default=None)

    def generate(self, req: GenerationRequest, *, index: int | None = None, total: int | None = None
                 ) -> "GenerationResult":
        """One ordinary generation of this job's mode (no run_generation hooks). `index`/`total`: the
        progress bar shows the whole job (cell `index` of `total`). An interrupt ends it early with
        `result.interrupted` set: stop there."""
        control = self._control
        if control is not None and index is not None and total:
            control = _CellControl(control, index, total)
        try:
            return self._run(req, control)
        except (UserError, Interrupted, Skipped):
            raise
        except Exception as err:
            self._engine_error = err
            raise

    @property
    def interrupted(self) -> bool:
        control = self._control
        return bool(control is not None and control.interrupted.is_set())

    def grid_result(self, grid, parts: Sequence["GenerationResult"], *, infotext: str | None = None,
                    cell_images: bool = True) -> "GenerationResult":
        """One result for a job made of several generations: `grid` first (saved with `save_grid`; its
        infotext is `infotext`, else the first image's), then, with `cell_images`, every image of `parts`
        in order (already saved by `generate`). Seeds, notices, skips and interrupts are merged."""
        from .generate.results import GenerationResult

        result = GenerationResult(request=self.request)
        first = next((p for p in parts if p.images), None)
        text = infotext if infotext is not None else (first.infotexts[0] if first else "")
        seed = first.seeds[0] if first else None
        path = self.save_grid(grid, text, seed=seed)
        result.images.append(grid)
        result.infotexts.append(text)
        result.seeds.append(seed if seed is not None else 0)
        result.subseeds.append(first.subseeds[0] if first and first.subseeds else 0)
        if path is not None:
            result.paths.append(path)
        for part in parts:
            if cell_images:
                result.images += part.images
                result.infotexts += part.infotexts
                result.seeds += part.seeds
                result.subseeds += part.subseeds
                result.paths += part.paths
            result.notices += [n for n in part.notices if n not in result.notices]
            result.skipped += part.skipped
            result.interrupted = result.interrupted or part.interrupted
            result.steps_run += part.steps_run
        return result

    def save_grid(self, image, infotext: str | None, *, seed: int | None = None) -> Path | None:
        """Save a grid image (`<outdir>/<mode>-grids/<date>/grid-NNNN.png`, infotext embedded);
        None when this job does not save."""
        if not self.save or self._saver is None:
            return None
        return self._saver.save_grid([image], infotext, kind=f"{self.mode}-grids", seed=seed,
                                     prompt=self.request.prompt)


# ---------------------------------------------------------------------------------------------- registry

class HookRegistry:
    """Everything extensions registered, and the engine-side calls into them."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[_Entry]] = {name: [] for name in HOOKS}
        self._params: list[ExtensionParam] = []
        self.tabs: list[ExtensionTab] = []
        self.routes: list[ApiRoute] = []
        self.scripts: list[SelectableScript] = []
        self.failures: list[HookFailure] = []
        self.disabled: set[str] = set()          # extensions switched off after a failure (this run)
        self._lock = threading.Lock()
        # Set by the app: run one generation through the job queue (`ExtensionHooks.generate`).
        self.submit: Callable[[str, GenerationRequest], "GenerationResult"] | None = None

    # ------------------------------------------------------------------ registration
    def for_extension(self, name: str, path: Path | None = None, data_dir: Path | None = None) -> "ExtensionHooks":
        return ExtensionHooks(self, name, path, data_dir)

    def add(self, hook: str, fn: Callable[..., Any], owner: str) -> None:
        if hook not in self._hooks:
            raise ValueError(f"unknown hook {hook!r}; hooks: {', '.join(HOOKS)}")
        if not callable(fn):
            raise TypeError(f"{hook}: expected a function, got {type(fn).__name__}")
        self._hooks[hook].append(_Entry(fn, owner))

    def add_param(self, param: Param, owner: str, modes: Sequence[str] = MODES, section: str | None = None) -> Param:
        if not isinstance(param, Param):
            raise TypeError(f"add_param: expected a pipelines.params.declarations.Param, got {type(param).__name__}")
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"parameter {param.name!r}: modes must be among {MODES}, got {modes}")
        if not _NAME.fullmatch(param.name):
            raise ValueError(f"parameter name {param.name!r} must be a Python identifier (it is an API field)")
        taken = set(BY_NAME) | set(params_mod.ALIASES) | {"extra"} | {p.param.name for p in self._params}
        if param.name in taken:
            raise ValueError(f"parameter name {param.name!r} is already declared; prefix it with your extension's name")
        if param.type not in PARAM_TYPES:
            raise TypeError(f"parameter {param.name!r}: type must be one of bool, int, float, str")
        if param.infotext is not None:
            if not _INFOTEXT_KEY.fullmatch(param.infotext):
                raise ValueError(f"parameter {param.name!r}: infotext key {param.infotext!r} cannot be read back; "
                                 "use letters, digits, spaces, '_', '-' or '/'")
            keys = _BUILTIN_INFOTEXT | {p.param.infotext for p in self._params if p.param.infotext}
            if param.infotext in keys:
                raise ValueError(f"parameter {param.name!r}: infotext key {param.infotext!r} is already used")
        param.convert(param.default)     # the default must be a valid value
        section = section or "Extensions"
        declared = dataclasses.replace(param, modes=modes, group=section)
        with self._lock:
            self._params.append(ExtensionParam(declared, owner, section))
        return declared

    def add_tab(self, title: str, build: Callable[[], Any], owner: str) -> None:
        if not isinstance(title, str) or not title.strip():
            raise ValueError("add_tab: the title must be a non-empty string")
        if not callable(build):
            raise TypeError("add_tab: build_fn must be callable")
        self.tabs.append(ExtensionTab(title.strip(), build, owner))

    def add_api_route(self, path: str, endpoint: Callable[..., Any], owner: str, methods: Sequence[str] = ("GET",)) -> None:
        if not isinstance(path, str) or not path.startswith("/") or path.startswith(("/gradio_api", "/sdapi/v1/")):
            raise ValueError(f"add_api_route: path {path!r} must start with '/' and not be under /gradio_api or "
                             "/sdapi/v1/ (use e.g. '/<your extension>/...')")
        if not callable(endpoint):
            raise TypeError("add_api_route: fn must be callable")
        methods = (methods,) if isinstance(methods, str) else tuple(m.upper() for m in methods)
        self.routes.append(ApiRoute(path, endpoint, methods, owner))

    def add_script(self, title: str, to_values: Callable[[list, str], dict[str, Any]], owner: str,
                   modes: Sequence[str] = MODES, args: Sequence[str] = ()) -> None:
        if not isinstance(title, str) or not title.strip() or not callable(to_values):
            raise TypeError("add_script: expected a title and a function (script_args, mode) -> values")
        self.scripts.append(SelectableScript(title.strip(), to_values, owner, tuple(modes), tuple(args)))

    def find_script(self, name: str, mode: str) -> SelectableScript:
        found = [s for s in self.scripts if s.title.lower() == str(name).strip().lower() and s.owner not in self.disabled]
        if not found or mode not in found[0].modes:
            titles = [s.title for s in self.scripts if mode in s.modes and s.owner not in self.disabled]
            raise ParameterError("script_name", f"no script {name!r} for {mode}; scripts: {', '.join(titles) or 'none'}")
        return found[0]

    def script_values(self, name: str, script_args: list, mode: str) -> dict[str, Any]:
        """The parameter values a selectable script's A1111 arguments stand for (ParameterError naming
        `script_args` when they make no sense)."""
        script = self.find_script(name, mode)
        try:
            return dict(script.to_values(list(script_args or []), mode))
        except ParameterError as err:
            raise ParameterError("script_args", f"{script.title}: {str(err).split(': ', 1)[-1]}") from None
        except (TypeError, ValueError, IndexError, KeyError) as err:
            raise ParameterError("script_args", f"{script.title}: {err}") from None

    def remove(self, owner: str) -> None:
        """Forget everything `owner` registered (its setup failed)."""
        with self._lock:
            for entries in self._hooks.values():
                entries[:] = [e for e in entries if e.owner != owner]
            self._params = [p for p in self._params if p.owner != owner]
            self.tabs = [t for t in self.tabs if t.owner != owner]
            self.routes = [r for r in self.routes if r.owner != owner]
            self.scripts = [s for s in self.scripts if s.owner != owner]

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> tuple[Param, ...]:
        """Parameters declared by extensions (all modes)."""
        return tuple(p.param for p in self._params)

    def extension_params(self, mode: str | None = None) -> list[ExtensionParam]:
        return [p for p in self._params if mode is None or mode in p.param.modes]

    def all_params(self, mode: str | None = None) -> tuple[Param, ...]:
        """PARAMS + extension parameters (of `mode`): what the UI and the API schema are built from."""
        return params_mod.all_params(self.params, mode)

    def make_request(self, values: dict[str, Any] | None = None, **kw) -> GenerationRequest:
        """`pipelines.params.declarations.make_request` that also takes the extension parameters (into `extra`)."""
        return params_mod.make_request(values, extra_params=self.params, **kw)

    def values_from_infotext(self, pairs: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        return params_mod.request_values_from_infotext(pairs, extra_params=self.params)

    def infotext(self, req: GenerationRequest, mode: str = "txt2img") -> dict[str, Any]:
        """The infotext pairs of the extension parameters set in `req.extra`, written by the same rules as the
        built-in ones (when they differ from the default, unless the Param's `write_if`/`written` say otherwise)."""
        return params_mod.written_pairs([ep.param for ep in self._params], params_mod.ImageContext(req, mode),
                                        req.extra)

    # ------------------------------------------------------------------ failures
    def active(self, hook: str) -> bool:
        """Whether any enabled extension registered `hook` (the engine skips building arguments otherwise)."""
        return any(e.owner not in self.disabled for e in self._hooks[hook])

    def record_failure(self, owner: str, hook: str, err: BaseException, *, disable: bool = True) -> HookFailure:
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        failure = HookFailure(owner, hook, f"{type(err).__name__}: {err}", tb)
        with self._lock:
            self.failures.append(failure)
            if disable:
                self.disabled.add(owner)
        log.error("extension %s failed in %s and was %s:\n%s", owner, hook,
                  "switched off for this run" if disable else "reported", tb.rstrip())
        return failure

    def failures_of(self, owner: str) -> list[HookFailure]:
        with self._lock:
            return [f for f in self.failures if f.extension == owner]

    def _call(self, entry: _Entry, hook: str, *args, user_errors: bool = False, call: GenerationCall | None = None):
        if entry.owner in self.disabled:
            return None
        try:
            return entry.fn(*args)
        except (Interrupted, Skipped):
            raise
        except Exception as err:
            if isinstance(err, UserError) and user_errors:
                raise
            if call is not None and call._engine_error is err:
                raise                      # the engine failed inside the hook's generate(): not the hook's fault
            self.record_failure(entry.owner, hook, err)
        return None

    def _entries(self, hook: str) -> list[_Entry]:
        return list(self._hooks[hook])

    # ------------------------------------------------------------------ engine-side calls
    def before_generation(self, req: GenerationRequest) -> GenerationRequest:
        for entry in self._entries("before_generation"):
            new = self._call(entry, "before_generation", req, user_errors=True)
            if new is None:
                continue
            if not isinstance(new, GenerationRequest):
                self.record_failure(entry.owner, "before_generation",
                                    TypeError(f"returned {type(new).__name__}, expected a GenerationRequest or None"))
                continue
            try:
                params_mod.check_request(new)
            except UserError as err:
                self.record_failure(entry.owner, "before_generation", err)
                continue
            req = new
        return req

    def after_generation(self, result: "GenerationResult") -> None:
        for entry in self._entries("after_generation"):
            self._call(entry, "after_generation", result)

    def on_step(self, progress: StepProgress) -> None:
        for entry in self._entries("on_step"):
            self._call(entry, "on_step", progress)

    def after_image_saved(self, path: Path, infotext: str) -> None:
        for entry in self._entries("after_image_saved"):
            self._call(entry, "after_image_saved", path, infotext)

    def app_started(self, app: Any) -> None:
        for entry in self._entries("app_started"):
            self._call(entry, "app_started", app)

    def generation(self, mode: str, req: GenerationRequest, run: Callable[[GenerationRequest, Any], "GenerationResult"],
                   *, control: Any = None, save: bool = True, saver: Any = None) -> "GenerationResult":
        """A whole job: before_generation hooks, a run_generation hook or `run(req, control)` (the engine),
        then after_generation hooks. The engine's txt2img/img2img go through here."""
        if not any(self.active(h) for h in ("before_generation", "run_generation", "after_generation")):
            return run(req, control)
        req = self.before_generation(req)
        start = time.perf_counter()
        result = None
        if self.active("run_generation"):
            call = GenerationCall(mode, req, save, run, control, saver)
            for entry in self._entries("run_generation"):
                result = self._call(entry, "run_generation", call, user_errors=True, call=call)
                if result is not None:
                    if not result.seconds:
                        result.seconds = time.perf_counter() - start
                    if result.request is None:
                        result.request = req
                    break
        if result is None:
            result = run(req, control)
        self.after_generation(result)
        return result


# ---------------------------------------------------------------------------------------------- per extension

class ExtensionHooks:
    """What one extension's `setup(ext)` receives: registration methods (usable as decorators) and a
    few services. Everything it registers is owned by `name`, so a failure disables only this one."""

    def __init__(self, registry: HookRegistry, name: str, path: Path | None = None, data_dir: Path | None = None):
        self._registry = registry
        self.name = name
        self.path = path                       # the extension's folder
        self.data_dir = data_dir               # a folder for its own files (<data dir>/extensions-data/<id>; create it when needed)
        self.log = logging.getLogger(f"extensions.{name}")

    # ------------------------------------------------------------------ UI / API
    def add_tab(self, title: str, build_fn: Callable[[], Any]) -> None:
        """A tab after the built-in ones; `build_fn()` runs inside `gr.Tab(title)` and creates components
        (and their events). An exception there shows in the tab and the Extensions tab."""
        self._registry.add_tab(title, build_fn, self.name)

    def add_param(self, param: Param, modes: Sequence[str] = MODES, section: str | None = None) -> Param:
        """Declare a generation parameter like the built-in ones (`pipelines.params.declarations.Param`): it gets a widget
        in the txt2img/img2img tabs (grouped under `section`), a field in the API request schema, its
        value (validated, default filled in) in `request.extra[param.name]`, and its infotext key in the
        saved images' parameters. Returns the declared Param."""
        return self._registry.add_param(param, self.name, modes, section)

    def add_api_route(self, path: str, fn: Callable[..., Any], methods: Sequence[str] = ("GET",)) -> None:
        """A FastAPI route (same credentials as the API when they are set)."""
        self._registry.add_api_route(path, fn, self.name, methods)

    def add_script(self, title: str, to_values: Callable[[list, str], dict[str, Any]], modes: Sequence[str] = MODES,
                   args: Sequence[str] = ()) -> None:
        """Answer A1111's `script_name`/`script_args` in /sdapi/v1/txt2img and img2img: `to_values(script_args,
        mode)` returns the parameter values (yours or built-in) the script's positional arguments mean; raise
        ParameterError/ValueError for arguments that make no sense (the client gets a 422 naming script_args)."""
        self._registry.add_script(title, to_values, self.name, modes, args)

    # ------------------------------------------------------------------ hooks (decorators)
    def _hook(self, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._registry.add(hook, fn, self.name)
        return fn

    def before_generation(self, fn: Callable[[GenerationRequest], GenerationRequest | None]):
        return self._hook("before_generation", fn)

    def run_generation(self, fn: Callable[[GenerationCall], "GenerationResult | None"]):
        return self._hook("run_generation", fn)

    def after_generation(self, fn: Callable[["GenerationResult"], None]):
        return self._hook("after_generation", fn)

    def on_step(self, fn: Callable[[StepProgress], None]):
        return self._hook("on_step", fn)

    def after_image_saved(self, fn: Callable[[Path, str], None]):
        return self._hook("after_image_saved", fn)

    def app_started(self, fn: Callable[[Any], None]):
        return self._hook("app_started", fn)

    # ------------------------------------------------------------------ services
    def all_params(self, mode: str | None = None) -> tuple[Param, ...]:
        """Every declared parameter (built-in + all extensions'), optionally of one mode."""
        return self._registry.all_params(mode)

    def make_request(self, values: dict[str, Any] | None = None, **kw) -> GenerationRequest:
        """A validated request from field values (extension parameters included)."""
        return self._registry.make_request(values, **kw)

    def generate(self, req: GenerationRequest, mode: str = "txt2img") -> "GenerationResult":
        """Run one generation through the app's job queue and wait for it (from a tab's event handler or a
        route; not from inside a hook: use run_generation there)."""
        if self._registry.submit is None:
            raise RuntimeError("generate() is available once the app has started")
        return self._registry.submit(mode, req)
