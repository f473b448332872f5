"""The engine objects the front ends share, created once from the command-line options.

The UI and the API both receive one `Services`; neither creates its own manager or queue.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from pipelines.devices import make_policy
from pipelines.generation import Engine, GenerationResult
from pipelines.jobs import Job, JobQueue
from pipelines.manager import PipelineManager
from pipelines.models import ModelPaths, ModelRegistry
from pipelines.outputs import OutputSaver
from pipelines.params import GenerationRequest
from pipelines.presets import PRESETS_DIR, PresetStore
from pipelines.styles import StyleDatabase

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

    def submit_txt2img(self, req: GenerationRequest, *, save: bool = True) -> Job:
        """Queue a txt2img job; `job.wait()` gives a GenerationResult."""
        return self.queue.submit(lambda control: self.engine.txt2img(req, control, save=save),
                                 label=f"txt2img: {req.prompt[:40]}")

    def run_txt2img(self, req: GenerationRequest, *, save: bool = True) -> GenerationResult:
        return self.submit_txt2img(req, save=save).wait()

    def submit(self, fn, label: str = "") -> Job:
        """Any other device work (model switch, VAE change) goes through the same queue."""
        return self.queue.submit(lambda control: fn(), label=label)

    def close(self) -> None:
        self.queue.stop()


def create_services(args: argparse.Namespace, *, config_root: Path | None = None) -> Services:
    data = Path(args.data_dir)
    paths = ModelPaths(models_dir=data / "models", ckpt_dirs=list(args.ckpt_dir),
                       extra_models_dirs=list(args.models_dir), cache_dir=data / "cache")
    registry = ModelRegistry(paths, hashing=not args.no_hashing)
    policy = make_policy(args.device, args.precision, "xformers" if args.xformers else "auto", args.lowvram,
                         args.compile)
    manager = PipelineManager(registry, policy=policy, cache_size=args.ckpt_cache, config_root=config_root,
                              sd2_prediction=args.sd2_prediction)
    saver = OutputSaver(args.outdir)
    styles = StyleDatabase(data / "styles.csv")
    engine = Engine(manager, saver, styles=styles)
    presets = PresetStore(PRESETS_DIR, networks=engine.networks)
    queue = JobQueue(policy.device).start()
    return Services(args, paths, registry, manager, engine, queue, saver, styles, presets)
