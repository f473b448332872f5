"""txt2img for flow-matching transformer models (Flux.1), as Forge runs them.

The sampling loop is diffusers' FluxPipeline; around it: A1111/Forge request fields (seeds drawn on the CPU
per image like the UNet engine, batches, styles), Forge's sampler/schedule names on diffusers'
FlowMatchEulerDiscreteScheduler / FlowMatchHeunDiscreteScheduler, `Distilled CFG Scale` (Flux dev's guidance
embedding) and true CFG only when CFG scale > 1 (an extra negative pass, as Forge), `Shift`, progress with
interrupt/skip, and Forge's infotext. Images are finished (infotext, saving, hooks) by the engine.
"""
from __future__ import annotations

from typing import Any

import torch

from ..core.errors import Interrupted, Skipped
from ..models import detect
from ..prompts import styles as styles_mod
from ..prompts.networks import parse_prompt
from .noise import image_noise

# Forge's schedule names on diffusers' flow-matching sigma options ("Simple" is the model's own spacing).
SCHEDULES = {"Automatic": None, "Simple": None, "SGM Uniform": None, "Karras": "use_karras_sigmas",
             "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}
SAMPLERS = {"Euler": "FlowMatchEulerDiscreteScheduler", "Heun": "FlowMatchHeunDiscreteScheduler"}


def handles(loaded) -> bool:
    return loaded.arch.family in detect.FLOW_FAMILIES


def build_scheduler(base_config: dict, sampler: str, schedule: str, shift: float) -> tuple[Any, str, str, list[str]]:
    """(scheduler, sampler name used, schedule name written, notices) for a flow-matching model."""
    import diffusers

    notices = []
    if sampler not in SAMPLERS:
        notices.append(f"{sampler} is not available for flow-matching models (Flux); Euler was used")
        sampler = "Euler"
    cls = getattr(diffusers, SAMPLERS[sampler])
    options: dict[str, Any] = {}
    if shift > 0:   # a fixed shift replaces Flux dev's resolution-dependent one
        options.update(shift=shift, use_dynamic_shifting=False)
    flag = SCHEDULES.get(schedule)
    if flag is not None and sampler == "Euler":
        options[flag] = True
    elif schedule not in ("Automatic", "Simple"):
        notices.append(f"schedule type {schedule} does not apply to {sampler} on flow-matching models; Simple was used")
        schedule = "Simple"
    written = "Simple" if schedule == "Automatic" else schedule
    config = {k: v for k, v in base_config.items() if not k.startswith("use_") or k == "use_dynamic_shifting"}
    return cls.from_config(config, **options), sampler, written, notices


def txt2img(engine, loaded, req, result, batch_seeds, control=None, save: bool = True, controlnet=None):
    """One txt2img request on a Flux pipeline; `result` is the engine's empty GenerationResult and
    `batch_seeds(req)` its seeds and variation seeds (A1111's rules, shared with the UNet engine)."""
    req, notices = styles_mod.apply_to_request(engine.styles, req)
    prompt, tags = parse_prompt(req.prompt)
    negative, neg_tags = parse_prompt(req.negative_prompt)
    if tags or neg_tags:
        notices.append("LoRA tags are not applied to Flux.1 models yet; they were left out of the prompt")
    if controlnet and any(getattr(u, "enabled", False) for u in controlnet):
        notices.append(f"ControlNet is not available for {loaded.arch.label} yet; the image was made without it")
    if req.enable_hr:
        notices.append(f"Hires. fix is not available for {loaded.arch.label} yet; the first pass was kept")
    pipe = engine.manager.pipeline("txt2img")
    scheduler, sampler, schedule, more = build_scheduler(loaded.scheduler_config, req.sampler_name, req.scheduler,
                                                         req.shift)
    notices += more
    req = req.replace(sampler_name=sampler)
    pipe.scheduler = scheduler
    true_cfg = req.cfg_scale > 1   # Forge: CFG 1 runs no negative pass
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(prompt, None, max_sequence_length=_max_tokens(loaded))
        neg_embeds, neg_pooled = (pipe.encode_prompt(negative, None, max_sequence_length=_max_tokens(loaded))[:2]
                                  if true_cfg else (None, None))
    extra = _infotext(loaded, req, schedule)
    seeds, subseeds = batch_seeds(req)
    steps_total = req.steps * req.n_iter * (2 if sampler == "Heun" else 1)
    progress = _Progress(control, steps_total, req.batch_size * req.n_iter)
    for it in range(req.n_iter):
        b0 = it * req.batch_size
        b_seeds, b_subseeds = seeds[b0:b0 + req.batch_size], subseeds[b0:b0 + req.batch_size]
        try:
            if control is not None:
                control.skipped.clear()
                control.check()
            latents = _sample(pipe, req, embeds, pooled, neg_embeds, neg_pooled, b_seeds, b_subseeds, progress, b0)
            images = engine.decode(pipe, pipe._unpack_latents(latents, req.height, req.width, pipe.vae_scale_factor))
        except Skipped:
            result.skipped += 1
            continue
        except Interrupted:
            result.interrupted = True
            break
        for k, image in enumerate(images):
            engine.finish_image(result, loaded, req, image, b_seeds[k], b_subseeds[k], save, extra=extra)
    result.steps_run = progress.done
    result.notices.extend(n for n in notices if n not in result.notices)
    return result


def _max_tokens(loaded) -> int:
    return 256 if loaded.arch.variant == "schnell" else 512   # as diffusers' FluxPipeline documents per variant


def _infotext(loaded, req, schedule: str) -> dict:
    """Forge's keys for Flux: the schedule name it shows, Distilled CFG Scale for guidance-distilled models."""
    extra: dict[str, Any] = {"Schedule type": schedule}
    if loaded.arch.variant == "dev":
        extra["Distilled CFG Scale"] = req.distilled_cfg_scale
    if req.shift > 0:
        extra["Shift"] = req.shift
    return extra


def _sample(pipe, req, embeds, pooled, neg_embeds, neg_pooled, seeds, subseeds, progress, image0):
    batch = len(seeds)
    channels = pipe.transformer.config.in_channels // 4
    h, w = req.height // pipe.vae_scale_factor, req.width // pipe.vae_scale_factor
    noise, gens = image_noise((batch, channels, h, w), seeds, subseeds, req.subseed_strength)
    dtype = pipe.transformer.dtype
    latents = pipe._pack_latents(noise, batch, channels, h, w).to(pipe._execution_device, dtype)
    kwargs: dict[str, Any] = {}
    if neg_embeds is not None:
        kwargs.update(negative_prompt_embeds=neg_embeds.repeat(batch, 1, 1),
                      negative_pooled_prompt_embeds=neg_pooled.repeat(batch, 1), true_cfg_scale=req.cfg_scale)

    def on_step_end(p, i, t, cb_kwargs):
        progress.step(i, p.num_timesteps, image0)
        return {}

    return pipe(prompt_embeds=embeds.repeat(batch, 1, 1), pooled_prompt_embeds=pooled.repeat(batch, 1),
                guidance_scale=req.distilled_cfg_scale, num_inference_steps=req.steps, height=req.height,
                width=req.width, latents=latents, generator=gens, output_type="latent",
                callback_on_step_end=on_step_end, **kwargs).images


class _Progress:
    def __init__(self, control, total: int, images: int):
        self.control, self.total, self.images, self.done = control, max(1, total), images, 0

    def step(self, step: int, steps: int, image: int) -> None:
        self.done += 1
        if self.control is None:
            return
        self.control.update(fraction=min(1.0, self.done / self.total), step=step + 1, steps=steps, image=image,
                            images=self.images, text=f"txt2img step {step + 1}/{steps}, image {image + 1}/{self.images}")
        self.control.check()
