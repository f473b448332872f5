"""The ControlNet part of one generation against the active checkpoint: which models fit it (`choices`),
`prepare_job` (check units, run preprocessors, load nets), `ControlJob` (maps, call arguments, infotext)
and the preprocessor preview."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image

from ..core.errors import UserError
from .files import ControlNetFile, incompatibility
from .infotext import unit_infotext
from .pipeline import controlnet_pipeline, pipeline_kwargs, unit_controlnets
from .preprocessors import Detected, fit_to_size, run_preprocessor
from .units import ControlNetUnit

if TYPE_CHECKING:  # pragma: no cover
    from ..models.manager import PipelineManager
    from .cache import ControlNetCache

log = logging.getLogger(__name__)


def choices(manager: PipelineManager) -> tuple[list[str], str | None]:
    """Titles for a model dropdown: 'None' then the ControlNets matching the active checkpoint, and a
    note (None when nothing needs saying) about hidden or unreadable models."""
    reg = manager.controlnets.registry
    loaded = manager.active
    titles, hidden, broken = ["None"], [], []
    for cf in reg.models:
        try:
            arch = reg.arch(cf)
        except UserError as err:
            broken.append(f"{cf.name} ({err})")
            continue
        if loaded is None or incompatibility(arch, cf, loaded) is None:
            titles.append(cf.title)
        else:
            hidden.append(f"{cf.model_name} ({arch.label})")
    notes = []
    if loaded is None and reg.models:
        notes.append("no checkpoint is loaded: all ControlNets are listed")
    if hidden:
        notes.append(f"{len(hidden)} ControlNet(s) for other architectures hidden (active: {loaded.arch.label}): "
                     + ", ".join(hidden[:5]) + ("..." if len(hidden) > 5 else ""))
    if broken:
        notes.append("unreadable: " + "; ".join(broken[:3]))
    if not reg.models:
        notes.append(f"no ControlNet models found; put them in {reg.paths.dirs('controlnet')[0]}")
    elif len(titles) == 1 and loaded is not None:
        notes.append(f"no ControlNet for {loaded.arch.label} found in {reg.paths.dirs('controlnet')[0]}")
    return titles, "; ".join(notes) or None

@dataclass
class AppliedUnit:
    index: int                  # position in the request's unit list (the infotext "ControlNet N")
    unit: ControlNetUnit        # checked
    model: ControlNetFile
    detected: Detected
    net: Any = None


@dataclass
class ControlJob:
    """The ControlNet part of one generation: preprocessed maps, loaded nets, notices, infotext."""

    manager: Any
    units: list[AppliedUnit]
    notices: list[str] = field(default_factory=list)
    _nets: Any = None
    _pipes: dict = field(default_factory=dict)
    _maps: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.units)

    @property
    def nets(self):
        if self._nets is None:
            self._nets = unit_controlnets([a.net for a in self.units], [a.unit.control_mode for a in self.units])
        return self._nets

    def pipeline(self, mode: str):
        pipe = controlnet_pipeline(self.manager, mode, self.nets)
        self._pipes[mode] = pipe
        return pipe

    def control_images(self, width: int, height: int) -> list:
        """Each unit's map fitted to width x height by its resize mode (PIL, cached per size)."""
        key = (width, height)
        if key not in self._maps:
            self._maps[key] = [Image.fromarray(fit_to_size(a.detected.image, width, height, a.unit.resize_mode))
                               for a in self.units]
        return self._maps[key]

    def call_kwargs(self, pipe, width: int, height: int, guidance_scale: float) -> dict[str, Any]:
        """Arguments to add to the pipeline call for an image of width x height."""
        kwargs = pipeline_kwargs(pipe, self.control_images(width, height), [a.unit.weight for a in self.units],
                                 [a.unit.guidance_start for a in self.units], [a.unit.guidance_end for a in self.units])
        self.nets.uncond_in_batch = guidance_scale > 1.0 and pipe.unet.config.get("time_cond_proj_dim") is None
        return kwargs

    def maps(self, width: int, height: int) -> list:
        """The detected maps as used, in unit order (A1111 shows them after the images)."""
        images = self.control_images(width, height)
        return [im for _, im in sorted(zip((a.index for a in self.units), images), key=lambda p: p[0])]

    def infotext(self) -> dict[str, str]:
        return {f"ControlNet {a.index}": unit_infotext(a.unit, a.model.title)
                for a in sorted(self.units, key=lambda a: a.index)}

    def release(self) -> None:
        """Detach the nets from the cached pipelines so the ControlNet cache alone decides what stays loaded."""
        for pipe in self._pipes.values():
            pipe.register_modules(controlnet=None)
        self._pipes.clear()


def prepare_job(manager: PipelineManager, units: Sequence[ControlNetUnit] | None, width: int, height: int, *,
                init_image=None, seed: int | None = None) -> ControlJob | None:
    """Check units, run preprocessors and load ControlNets for one generation (under the manager lock).

    None when no unit is enabled. Bad settings, unknown or mismatched models raise (UserError /
    ParameterError); a preprocessor that cannot run drops its unit with a notice instead."""
    enabled = [(i, u) for i, u in enumerate(units or []) if u.enabled]
    if not enabled:
        return None
    loaded = manager.require_active()
    cache: ControlNetCache = manager.controlnets
    notices: list[str] = []
    chosen: list[tuple[int, ControlNetUnit, ControlNetFile]] = []
    for i, raw in enabled:
        unit = raw.checked(i)
        if not unit.has_model:
            notices.append(f"ControlNet {i}: no model chosen; unit skipped")
            continue
        if unit.guidance_start >= unit.guidance_end:
            notices.append(f"ControlNet {i}: guidance start equals end ({unit.guidance_start:g}); unit skipped")
            continue
        cf = cache.registry.find(unit.model)
        reason = incompatibility(cache.registry.arch(cf), cf, loaded)
        if reason:
            raise UserError(f"ControlNet {i}: {reason}")
        if unit.image is None and init_image is None:
            raise UserError(f"ControlNet {i}: no input image; give the unit an image (txt2img has no image to reuse)")
        chosen.append((i, unit, cf))
    annotators = cache.annotators.with_seed(seed if seed is not None and seed >= 0 else None)
    applied: list[AppliedUnit] = []
    for i, unit, cf in chosen:
        image = unit.image if unit.image is not None else init_image
        try:
            det = run_preprocessor(unit.module, image, processor_res=unit.processor_res,
                                   threshold_a=unit.threshold_a, threshold_b=unit.threshold_b, annotators=annotators,
                                   target=(width, height), resize_mode=unit.resize_mode,
                                   pixel_perfect=unit.pixel_perfect)
        except UserError as err:
            log.warning("ControlNet %d skipped: %s", i, err)
            notices.append(f"ControlNet {i} skipped: {err}")
            continue
        applied.append(AppliedUnit(i, unit, cf, det))
    for a in applied:
        a.net = cache.get(a.model)
    # diffusers switches the whole call to guess mode when its *first* net pools globally (shuffle models):
    # a non-pooling net goes first so that each unit's own control mode stays in charge.
    applied.sort(key=lambda a: bool(a.net.config.global_pool_conditions))
    return ControlJob(manager, applied, notices)


def preview_unit(manager: PipelineManager, unit: ControlNetUnit, width: int, height: int, *, init_image=None):
    """The control map `unit` would use for a width x height image (PIL), for the UI's preprocessor preview.

    Raises UserError when the preprocessor cannot run (e.g. annotator weights missing offline). Weighted
    preprocessors run on the device: call this through the job queue like a generation."""
    u = unit.checked()
    image = u.image if u.image is not None else init_image
    if image is None:
        raise UserError("no input image to preview: upload one to the ControlNet unit")
    det = run_preprocessor(u.module, image, processor_res=u.processor_res, threshold_a=u.threshold_a,
                           threshold_b=u.threshold_b, annotators=manager.controlnets.annotators,
                           target=(width, height), resize_mode=u.resize_mode, pixel_perfect=u.pixel_perfect)
    return Image.fromarray(fit_to_size(det.image, width, height, u.resize_mode))
