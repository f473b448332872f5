"""The engine objects the front ends share, created once from the command-line options.

The UI and the API both receive one `Services`; neither creates its own manager or queue. Every piece of
device work (generation, model switches, interrogation, ControlNet previews) is a job on `queue`.
"""
from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.devices import make_policy
from pipelines.generate.engine import Engine, GenerationResult
from pipelines.hooks import HookRegistry
from pipelines.core.errors import UserError
from pipelines.core.jobs import Job, JobQueue
from pipelines.models.manager import PipelineManager
from pipelines.models.files import ModelPaths, ModelRegistry
from pipelines.images.outputs import OutputSaver
from pipelines.params.declarations import GenerationRequest
from pipelines.params.presets import PRESETS_DIR, PresetStore
from pipelines.prompts.styles import StyleDatabase

from .limits import Limits, restrict_pillow_formats

log = logging.getLogger(__name__)


@dataclass
class Services:
    args: argparse.Namespace
    paths: ModelPaths
    registry: ModelRegistry
    manager: PipelineManager
    engine: Engine
    queue: JobQueue
    saver: OutputSaver
    styles: StyleDatabase | None = None     # <data-dir>/styles.csv (A1111's file); also engine.styles
    presets: PresetStore | None = None      # presets/ (shipped + user-saved; defaults.json = UI start-up values)
    extensions: Any = None                  # webui.extensions.loader.ExtensionManager (status); hooks: engine.hooks
    limits: Limits = field(default_factory=Limits)   # per-request bounds (--max-images, ...); the queue has its own
    _interrogator: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------ generation
    def submit_txt2img(self, req: GenerationRequest, *, save: bool = True, controlnet: list | None = None) -> Job:
        """Queue a txt2img job; `job.wait()` gives a GenerationResult. `controlnet`: ControlNetUnits."""
        kw = {"controlnet": controlnet} if controlnet else {}
        self.check_limits(req, "txt2img", controlnet)

        def work(control):
            self.release_interrogator()
            return self.engine.txt2img(req, control, save=save, **kw)

        return self.queue.submit(work, label=f"txt2img: {req.prompt[:40]}")

    def run_txt2img(self, req: GenerationRequest, *, save: bool = True) -> GenerationResult:
        return self.submit_txt2img(req, save=save).wait()

    def submit_img2img(self, req: GenerationRequest, images, mask=None, *, save: bool = True,
                       controlnet: list | None = None) -> Job:
        """Queue an img2img / inpainting job (`pipelines.generate.img2img`): init image(s) + optional mask (white =
        repaint); a ControlNet unit without its own image uses the init image."""
        kw = {"controlnet": controlnet} if controlnet else {}
        self.check_limits(req, "img2img", controlnet)

        def work(control):
            self.release_interrogator()
            return self.engine.img2img(req, images, mask, control, save=save, **kw)

        return self.queue.submit(work, label=f"img2img: {req.prompt[:40]}")

    def submit_img2img_batch(self, req: GenerationRequest, input_dir, output_dir=None, mask_dir=None) -> Job:
        """Queue a folder of init images (+ masks of the same names); `job.wait()` gives a BatchResult.
        Folders are resolved inside --data-dir and must stay there unless --allow-any-batch-folder."""
        input_dir, output_dir, mask_dir = (self.batch_folder(d, label) for d, label in
                                           ((input_dir, "input"), (output_dir, "output"), (mask_dir, "mask")))

        def work(control):
            self.release_interrogator()
            return self.engine.img2img_batch(req, input_dir, output_dir, mask_dir, control)

        return self.queue.submit(work, label=f"img2img batch: {input_dir}")

    def batch_folder(self, folder, label: str) -> Path | None:
        """A batch folder typed in the UI, relative to --data-dir; one outside it is refused (a UI user
        could otherwise read and overwrite any folder the server can reach)."""
        if folder is None or not str(folder).strip():
            return None
        data = Path(getattr(self.args, "data_dir", ".") or ".").resolve()
        path = (data / Path(str(folder).strip()).expanduser()).resolve()
        if not getattr(self.args, "allow_any_batch_folder", False) and not path.is_relative_to(data):
            raise UserError(f"Batch {label} folder: it must be inside the data folder (--data-dir); start the app "
                            "with --allow-any-batch-folder to use folders anywhere on the server")
        return path

    def check_limits(self, req: GenerationRequest, mode: str, controlnet: list | None = None) -> None:
        """ParameterError (naming the field) for a request over --max-images / --max-request-megapixels /
        --max-controlnet-units."""
        self.limits.check_request(req, mode)
        self.limits.check_units(len(controlnet or []), "controlnet")

    def submit(self, fn, label: str = "", *, bounded: bool = True) -> Job:
        """Any other device work (model switch, VAE change) goes through the same queue. The app's own
        start-up jobs pass `bounded=False` (never refused by the queue's bounds)."""
        return self.queue.submit(lambda control: fn(), label=label, bounded=bounded)

    # ------------------------------------------------------------------ interrogation
    @property
    def interrogator(self):
        """The one CLIP interrogator (`pipelines.interrogate`), made on first use; loads no model until a job
        needs one. Its progress goes to whichever queued job is running it (interrupt stops it)."""
        with self._lock:
            if self._interrogator is None:
                from pipelines.interrogate import Interrogator

                lists = Path(getattr(self.args, "data_dir", ".") or ".") / "interrogate"
                it = Interrogator.from_paths(self.paths, device=self.manager.policy.device,
                                             lists_dir=lists if lists.is_dir() else None)
                it.add_listener(self._interrogate_progress)
                self._interrogator = it
            return self._interrogator

    def _interrogate_progress(self, stage: str, fraction: float) -> None:
        job = self.queue.current
        if job is not None:
            job.control.update(fraction=max(0.0, min(1.0, fraction)), text=stage)
            job.control.check()

    def release_interrogator(self) -> None:
        """Generation needs the device: interrogation models leave it (a no-op on a CPU-only setup)."""
        it = self._interrogator
        if it is not None:
            try:
                it.release_device()
            except Exception:  # noqa: BLE001 - freeing memory must never fail a generation
                log.exception("could not move the interrogation models off the device")

    def interrogate_models(self, clip: str | None = None, caption: str | None = None) -> tuple[str, str]:
        """The named models, else the CLIP model matching the active checkpoint's family and the default
        caption model, preferring models already on disk (no download needed)."""
        from pipelines.interrogate import clip_for_family

        it = self.interrogator

        def pick(preferred: str, names: list[str]) -> str:
            on_disk = [n for n in names if it.sources.available_locally(n)]
            return preferred if preferred in on_disk or not on_disk else on_disk[0]

        active = self.manager.active
        if not clip:
            clip = pick(clip_for_family(active.arch.family if active else None), it.clip_models())
        if not caption:
            caption = pick(it.default_caption, it.caption_models())
        return clip, caption

    def submit_interrogate(self, image, mode: str = "classic", *, clip_model: str | None = None,
                           caption_model: str | None = None) -> Job:
        """Queue an interrogation; `job.wait()` gives an InterrogationResult. Missing models offline raise a
        UserError that says which file to put where."""
        clip, caption = self.interrogate_models(clip_model, caption_model)
        it = self.interrogator
        return self.queue.submit(lambda control: it.interrogate(image, mode, clip_model=clip, caption_model=caption),
                                 label=f"interrogate ({mode})")

    def close(self) -> None:
        self.queue.stop()


WRITES_DISABLED = ("Saving and deleting {what} is disabled while the app is reachable from other machines "
                   "(--listen / --share): start it with --enable-insecure-extension-access to allow it")


class ReadOnlyPresetStore(PresetStore):
    """Presets when exposed without --enable-insecure-extension-access: listed and applied, never written
    (any logged-in remote user could otherwise delete or overwrite the shipped presets)."""

    def _refuse(self, *args, **kwargs):
        raise UserError(WRITES_DISABLED.format(what="presets"))

    save = save_defaults = reset_defaults = delete = _refuse


class ReadOnlyStyleDatabase(StyleDatabase):
    """styles.csv under the same rule as the presets."""

    def _refuse(self, *args, **kwargs):
        raise UserError(WRITES_DISABLED.format(what="styles"))

    set = delete = save = _refuse


def writes_allowed(args: argparse.Namespace) -> bool:
    """Presets and styles may be written from the UI: a local app, or the explicit flag."""
    from .auth import is_exposed

    return not is_exposed(args) or bool(getattr(args, "enable_insecure_extension_access", False))


def create_services(args: argparse.Namespace, *, config_root: Path | None = None) -> Services:
    data = Path(args.data_dir)
    paths = ModelPaths(models_dir=data / "models", ckpt_dirs=list(args.ckpt_dir),
                       extra_models_dirs=list(args.models_dir), cache_dir=data / "cache")
    registry = ModelRegistry(paths, hashing=not args.no_hashing)
    policy = make_policy(args.device, args.precision, "xformers" if args.xformers else "auto", args.lowvram,
                         args.compile, args.vae_tiling)
    manager = PipelineManager(registry, policy=policy, cache_size=args.ckpt_cache, config_root=config_root,
                              sd2_prediction=args.sd2_prediction)
    saver = OutputSaver(args.outdir)
    writable = writes_allowed(args)
    styles = (StyleDatabase if writable else ReadOnlyStyleDatabase)(data / "styles.csv")
    if styles.load_error:
        log.warning("%s", styles.load_error)
    engine = Engine(manager, saver, styles=styles, hooks=HookRegistry())   # extensions register here
    engine.networks.fuse = not args.no_lora_merge
    presets = (PresetStore if writable else ReadOnlyPresetStore)(PRESETS_DIR, networks=engine.networks)
    limits = Limits.from_args(args)
    restrict_pillow_formats()
    queue = JobQueue(policy.device, max_pending=limits.queue_max, max_per_client=limits.queue_max_per_client).start()
    services = Services(args, paths, registry, manager, engine, queue, saver, styles, presets, limits=limits)
    from ..extensions.app import attach

    services.extensions = attach(services)   # load extensions/ (a failing one is listed, never fatal)
    return services
