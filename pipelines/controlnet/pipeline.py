"""The ControlNet pipeline of the active checkpoint and its call arguments.

A job wraps the units' modules in one `MultiControlNetModel` subclass (per-unit control modes, see
`units.py`) and registers it on a ControlNet pipeline built once per checkpoint and mode with `from_pipe`
from the already-loaded components: enabling, disabling or swapping ControlNets never reloads the checkpoint.

diffusers silently truncates a per-unit list that is shorter than the number of ControlNets; every list
that reaches a pipeline here goes through `check_lists`, which refuses any length mismatch.
"""
from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Sequence

from ..core.errors import UserError
from ..models.loading import from_pipe
from .units import BALANCED, CONTROL_MORE

if TYPE_CHECKING:  # pragma: no cover
    from ..models.manager import PipelineManager

_CONTROLNET_PIPELINES = {
    "StableDiffusionPipeline": "StableDiffusionControlNetPipeline",
    "StableDiffusionImg2ImgPipeline": "StableDiffusionControlNetImg2ImgPipeline",
    "StableDiffusionInpaintPipeline": "StableDiffusionControlNetInpaintPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLControlNetPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLControlNetImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline": "StableDiffusionXLControlNetInpaintPipeline",
}


@functools.cache
def _unit_controlnets_class():
    """MultiControlNetModel with per-unit control modes (built on first use: diffusers is a heavy import)."""
    import torch
    from diffusers.models import MultiControlNetModel

    class UnitControlNets(MultiControlNetModel):
        """The job's ControlNets; the pipeline treats it as diffusers' MultiControlNetModel."""

        def __init__(self, controlnets, modes: Sequence[str]):
            super().__init__(list(controlnets))
            self.modes = list(modes)
            self.uncond_in_batch = False   # set per call: the batch is [uncond, cond] (CFG)

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                    class_labels=None, timestep_cond=None, attention_mask=None, added_cond_kwargs=None,
                    cross_attention_kwargs=None, guess_mode=False, return_dict=True):
            n = len(self.nets)
            check_lists(n, controlnet_cond=list(controlnet_cond), conditioning_scale=list(conditioning_scale))
            halves = self.uncond_in_batch and not guess_mode  # guess_mode: the pipeline sent the cond half only
            down_total = mid_total = None
            for image, scale, net, mode in zip(controlnet_cond, conditioning_scale, self.nets, self.modes):
                down, mid = net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                                controlnet_cond=image, conditioning_scale=scale, class_labels=class_labels,
                                timestep_cond=timestep_cond, attention_mask=attention_mask,
                                added_cond_kwargs=added_cond_kwargs, cross_attention_kwargs=cross_attention_kwargs,
                                guess_mode=mode != BALANCED, return_dict=False)
                if halves and (mode == CONTROL_MORE or net.config.global_pool_conditions):
                    keep = torch.ones(sample.shape[0], 1, 1, 1, device=sample.device, dtype=mid.dtype)
                    keep[: sample.shape[0] // 2] = 0
                    down = [d * keep for d in down]
                    mid = mid * keep
                if down_total is None:
                    down_total, mid_total = list(down), mid
                else:
                    down_total = [a + b for a, b in zip(down_total, down)]
                    mid_total = mid_total + mid
            return down_total, mid_total

    return UnitControlNets


def unit_controlnets(nets: Sequence[Any], modes: Sequence[str]):
    """Wrap loaded ControlNetModels (one per unit) with their control modes for a pipeline."""
    check_lists(len(nets), control_mode=list(modes))
    return _unit_controlnets_class()(nets, modes)


def check_lists(n: int, **lists: Sequence[Any]) -> None:
    """Every per-unit list must have exactly one value per ControlNet (diffusers would truncate)."""
    for name, values in lists.items():
        if not isinstance(values, (list, tuple)):
            raise UserError(f"{name} must be a list with one value per ControlNet unit ({n}), not "
                            f"{type(values).__name__}")
        if len(values) != n:
            raise UserError(f"{name} has {len(values)} value(s) for {n} ControlNet unit(s); give exactly one per "
                            "unit (a shorter list would silently drop units)")


def controlnet_pipeline(manager: PipelineManager, mode: str, nets):
    """The active checkpoint's ControlNet pipeline for `mode` with `nets` attached. Built once per
    checkpoint and mode from the mode pipeline's loaded components (`from_pipe`), then reused."""
    import diffusers

    base = manager.pipeline(mode)
    loaded = manager.require_active()
    key = f"controlnet:{mode}"
    pipe = loaded.modes.get(key)
    if pipe is None:
        cls_name = _CONTROLNET_PIPELINES.get(type(base).__name__)
        if cls_name is None:
            raise UserError(f"ControlNet is not available for {loaded.arch.label} checkpoints in {mode}")
        pipe = from_pipe(getattr(diffusers, cls_name), base, controlnet=nets)
        pipe.set_progress_bar_config(disable=True)
        loaded.modes[key] = pipe
    else:
        pipe.register_modules(controlnet=nets)
    return pipe


def pipeline_kwargs(pipe, images: Sequence[Any], scales: Sequence[float], starts: Sequence[float],
                    ends: Sequence[float]) -> dict[str, Any]:
    """The ControlNet arguments of a diffusers ControlNet pipeline call, lists checked against its nets."""
    nets = getattr(pipe.controlnet, "nets", None)
    n = len(nets) if nets is not None else 1
    check_lists(n, image=images, controlnet_conditioning_scale=scales, control_guidance_start=starts,
                control_guidance_end=ends)
    for i, (s, e) in enumerate(zip(starts, ends)):
        if not 0.0 <= float(s) < float(e) <= 1.0:
            raise UserError(f"ControlNet unit {i}: guidance start {s} must be before guidance end {e}, within 0..1")
    key = "control_image" if "control_image" in inspect.signature(type(pipe).__call__).parameters else "image"
    single = nets is None
    return {key: images[0] if single else list(images),
            "controlnet_conditioning_scale": float(scales[0]) if single else [float(s) for s in scales],
            "control_guidance_start": [float(s) for s in starts], "control_guidance_end": [float(e) for e in ends],
            "guess_mode": False}
