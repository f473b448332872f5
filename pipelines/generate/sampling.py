"""Sampling, shared by txt2img and img2img (and the hires pass): one batch through one diffusers call.

`SamplingJob` holds what a call needs (the request, prompt encoder, sizes, seeds, init latents and masks,
noise, ControlNet); `sample` runs it: A1111's own computation for its k-diffusion samplers
(`kscheduler`), the diffusers scheduler for the others, prompt editing and CFG cut-off between steps,
progress and the extensions' step hook. The helpers below hold A1111's rules both modes use (batch seeds,
img2img step counts, the hires schedule length).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import Interrupted
from ..hooks import StepProgress
from ..params import declarations as params
from ..params.declarations import GenerationRequest
from ..prompts.conditioning import PromptEncoder, at_step
from ..models import detect
from . import kscheduler, samplers
from .noise import image_noise
from .results import StepTracker


@dataclass
class SamplingJob:
    """One batch's sampling call. txt2img: no `image`; img2img / inpainting / hires: `image` is the init
    latents (or PIL images), `strength` the denoising strength, `mask` the inpaint masks (PIL, white =
    repaint) with their `latent_mask` and (9-channel UNets) `masked_image_latents`, and `noise` the seeded
    initial noise drawn from `generators`. `steps` is the schedule's length; the hires pass runs
    `hires_steps` of them."""
    req: GenerationRequest            # the request whose prompts are encoded (LoRA tags out)
    encoder: PromptEncoder
    steps: int
    width: int
    height: int
    seeds: list[int]
    subseeds: list[int] | None
    tracker: StepTracker
    image0: int                       # index of the batch's first image in the job (progress)
    label: str                        # progress text: txt2img, hires, img2img (...)
    image: Any = None
    strength: float | None = None
    generators: Any = None
    hires_steps: int | None = None
    mask: list | None = None
    latent_mask: torch.Tensor | None = None
    masked_image_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    controlnet: Any = None            # the job's ControlNet part (pipelines.controlnet), or None


def embeds(encoder: PromptEncoder, req: GenerationRequest, steps: int, hires_steps: int | None = None,
            order: int = 1):
    """Conditioning schedules indexed by callback number. As in A1111, a second-order sampler's schedule
    counts model evaluations (steps x order), and the hires pass uses the hires timeline (`[a:b:0.5]`
    stays switched; 1.5 = halfway through hires)."""
    hires = hires_steps * order if hires_steps else None
    cond_sched = encoder.schedule(req.prompt, steps * order, hires)
    uncond_sched = encoder.schedule(req.negative_prompt, steps * order, hires)
    chunks = max(c.chunks for _, c in cond_sched + uncond_sched)
    cond_sched = [(e, encoder.pad(c, chunks)) for e, c in cond_sched]
    uncond_sched = [(e, encoder.pad(c, chunks)) for e, c in uncond_sched]
    return cond_sched, uncond_sched


def sample(pipe, loaded, job: SamplingJob, hooks) -> tuple[torch.Tensor, Any]:
    """One diffusers call producing a batch's latents (and the generators it drew from); prompt schedules swap
    embeddings between steps. `hooks`: the engine's HookRegistry (on_step). An interrupt raises
    `Interrupted` with `latents` set to the latest prediction (A1111 keeps it as the partial image)."""
    req, batch = job.req, len(job.seeds)
    sdxl = "add_text_embeds" in getattr(pipe, "_callback_tensor_inputs", [])
    kwargs, noise, gens = _image_inputs(pipe, loaded, job)
    gens, order = _set_scheduler(pipe, loaded, job, kwargs, noise, gens)
    if job.hires_steps:
        cond_sched, uncond_sched = embeds(job.encoder, req, req.steps, job.hires_steps, order)
    else:
        cond_sched, uncond_sched = embeds(job.encoder, req, job.steps, None, order)
    cond, uncond = at_step(cond_sched, 0), at_step(uncond_sched, 0)
    kwargs.update(prompt_embeds=cond.embeds.repeat(batch, 1, 1),
                  negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1))
    if sdxl:
        kwargs.update(pooled_prompt_embeds=cond.pooled.repeat(batch, 1),
                      negative_pooled_prompt_embeds=uncond.pooled.repeat(batch, 1))
    latest: dict[str, Any] = {}
    on_step_end, tensor_inputs = _step_callback(loaded, job, hooks, cond_sched, uncond_sched, sdxl, latest)
    accepted = call_params(pipe)
    cn = job.controlnet
    if cn is not None and cn.active:
        kwargs.update(cn.call_kwargs(pipe, job.width, job.height, req.cfg_scale))
    if "eta" in accepted:
        kwargs["eta"] = req.eta
    if "guidance_rescale" in accepted:
        kwargs["guidance_rescale"] = req.guidance_rescale
    if "height" in accepted:  # img2img pipelines take the size from the image
        kwargs.update(height=job.height, width=job.width)
    try:
        latents = pipe(num_inference_steps=job.steps, guidance_scale=req.cfg_scale, generator=gens,
                       output_type="latent", callback_on_step_end=on_step_end,
                       callback_on_step_end_tensor_inputs=tensor_inputs, **kwargs).images
    except Interrupted as stop:
        # A1111 returns the last denoised prediction of an interrupted run; diffusers' samplers: the latents
        stop.latents = getattr(pipe.scheduler, "last_denoised", None)
        if stop.latents is None:
            stop.latents = latest.get("latents")
        raise
    return latents, gens


def _image_inputs(pipe, loaded, job: SamplingJob) -> tuple[dict[str, Any], torch.Tensor | None, Any]:
    """The pipeline's latents / init image / mask arguments, the initial noise and its generators."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    noise, gens, image = job.noise, job.generators, job.image
    kwargs: dict[str, Any] = {}
    if image is None:
        shape = (len(job.seeds), 4, job.height // pipe.vae_scale_factor, job.width // pipe.vae_scale_factor)
        noise, gens = image_noise(shape, job.seeds, job.subseeds, job.req.subseed_strength)
        kwargs["latents"] = noise.to(device, dtype)
    else:
        kwargs["image"] = image
        kwargs["strength"] = job.strength
    if job.mask is not None:
        kwargs["mask_image"] = job.mask
        if job.masked_image_latents is not None:
            kwargs["masked_image_latents"] = job.masked_image_latents.to(device, dtype)
    elif loaded.arch.inpaint:
        kwargs.update(full_mask_inputs(pipe, job.width, job.height, image))
    return kwargs, noise, gens


def _set_scheduler(pipe, loaded, job: SamplingJob, kwargs: dict, noise, gens) -> tuple[Any, int]:
    """Put the request's sampler on the pipeline; returns the generators the pipeline gets and the number
    of model evaluations per step the prompt schedule counts."""
    req, image = job.req, job.image
    device, dtype = pipe.unet.device, pipe.unet.dtype
    sampler = a1111_sampler(loaded, req)
    if sampler is None:
        pipe.scheduler = samplers.build_scheduler(loaded.scheduler_config, req.sampler_name, req.scheduler)
        if noise is not None and image is not None:
            kwargs.update(seeded_noise(pipe, noise.to(device, dtype), job.strength))
        return gens, pipe.scheduler.order
    # A1111's own computation (pipelines.generate.kscheduler)
    pipe_image = image
    if image is not None and not isinstance(image, torch.Tensor):
        image = encode_images(pipe, image).float()   # pixel inputs (hires upscalers, ControlNet inpaint)
    if image is not None and noise is None:           # hires: fresh per-image noise at the new size (A1111)
        noise, gens = image_noise(tuple(image.shape), job.seeds, job.subseeds, req.subseed_strength)
    run_steps = None if image is None else (job.hires_steps or img2img_steps(loaded, req, job.steps, job.strength))
    pipe.scheduler = kscheduler.build(
        loaded.scheduler_config, sampler, k_settings(req, loaded), job.steps, noise=noise.to(device),
        generators=gens, seeds=job.seeds, run_steps=run_steps,
        init_latents=None if image is None else image.to(device, torch.float32),
        mask=job.latent_mask if job.mask is not None else None)
    if image is not None:
        # the scheduler owns the tail: the pipeline runs all its steps
        kwargs.update(image=pipe_image if pipe_image is not image else image.to(device, dtype), strength=1.0)
    return torch.Generator("cpu").manual_seed(0), pipe.scheduler.prompt_steps_multiplier   # (its draws are unused)


def _step_callback(loaded, job: SamplingJob, hooks, cond_sched, uncond_sched, sdxl: bool, latest: dict):
    """diffusers' callback_on_step_end (and the tensors it needs): prompt editing, CFG cut-off, progress,
    the extensions' step hook; it keeps the latest latents in `latest`."""
    req, tracker, batch = job.req, job.tracker, len(job.seeds)
    cn = job.controlnet
    changing = len(cond_sched) > 1 or len(uncond_sched) > 1
    # CFG cut-off: after this fraction of steps the unconditional pass is dropped (about half the UNet
    # work). Pipelines that duplicate other inputs for CFG before the loop (ControlNet images, 9-channel
    # inpainting masks) cannot change batch mid-way, so there it is not applied.
    cutoff = req.cfg_cutoff if req.cfg_cutoff < 1 and req.cfg_scale > 1 and job.mask is None \
        and not loaded.arch.inpaint and not (cn is not None and cn.active) else None
    swaps = changing or cutoff is not None
    tensor_inputs = ["latents"] + (["prompt_embeds"] + (["add_text_embeds", "add_time_ids"] if sdxl else [])
                                   if swaps else [])

    def on_step_end(p, i, t, cb_kwargs):
        out = {}
        if cutoff is not None and p.do_classifier_free_guidance and i + 1 >= cutoff * p.num_timesteps:
            p._guidance_scale = 0.0  # diffusers' documented way to stop CFG from a step-end callback
            for name in ("prompt_embeds", "add_text_embeds", "add_time_ids"):
                if name in cb_kwargs:
                    out[name] = cb_kwargs[name].chunk(2)[1]
        if changing:
            c, u = at_step(cond_sched, i + 1), at_step(uncond_sched, i + 1)
            cfg = p.do_classifier_free_guidance
            out["prompt_embeds"] = torch.cat([u.embeds, c.embeds] if cfg else [c.embeds]) \
                .repeat_interleave(batch, dim=0).to(cb_kwargs["prompt_embeds"].dtype)
            if sdxl:
                out["add_text_embeds"] = torch.cat([u.pooled, c.pooled] if cfg else [c.pooled]) \
                    .repeat_interleave(batch, dim=0).to(cb_kwargs["add_text_embeds"].dtype)
        latest["latents"] = cb_kwargs.get("latents")
        tracker.step(cb_kwargs.get("latents"), i, p.num_timesteps, job.image0, job.label)
        if hooks.active("on_step"):
            stage = job.label if job.label in ("txt2img", "hires") else "img2img"
            hooks.on_step(StepProgress("img2img" if stage == "img2img" else "txt2img", stage,
                                       req, i + 1, p.num_timesteps, job.image0, tracker.images,
                                       min(1.0, tracker.done / tracker.total), cb_kwargs.get("latents")))
        return out

    return on_step_end, tensor_inputs


def batch_seeds(req: GenerationRequest) -> tuple[list[int], list[int]]:
    """Seeds and variation seeds of the batch_size x n_iter images (A1111: seed + i, or one seed for all
    when a variation strength is set; -1 resolved to a random seed)."""
    n_images = req.batch_size * req.n_iter
    seed = params.resolve_seed(req.seed)
    subseed = params.resolve_seed(req.subseed)
    return ([seed + (i if req.subseed_strength == 0 else 0) for i in range(n_images)],
            [subseed + i for i in range(n_images)])


def hires_total(loaded, steps: int, denoising_strength: float) -> int:
    """A1111's img2img schedule length for running `steps` steps at this strength (`setup_img2img_steps`),
    capped at the training timesteps (DDIM and others refuse more)."""
    cap = max(steps, int(loaded.scheduler_config.get("num_train_timesteps", 1000)))
    return min(cap, max(steps, int(steps / min(denoising_strength, 0.999))))


def k_settings(req: GenerationRequest, loaded) -> kscheduler.KSettings:
    """The request's k-diffusion settings. Eta: A1111's ancestral/SDE default is 1 (eta 0 = no noise);
    the request's Eta applies when set."""
    _, schedule = samplers.resolve(req.sampler_name, req.scheduler)
    return kscheduler.KSettings(
        schedule=schedule,
        schedule_options=samplers.ScheduleOptions(sigma_min=getattr(req, "sigma_min", None) or None,
                                                  sigma_max=getattr(req, "sigma_max", None) or None,
                                                  rho=getattr(req, "rho", None) or None),
        eta=req.eta or 1.0, s_churn=getattr(req, "s_churn", 0.0), s_tmin=getattr(req, "s_tmin", 0.0),
        s_tmax=getattr(req, "s_tmax", 0.0), s_noise=getattr(req, "s_noise", 1.0),
        ensd=getattr(req, "eta_noise_seed_delta", 0),
        sdxl=loaded.arch.family in (detect.SDXL, detect.SDXL_REFINER))


def reproduction_notices(req: GenerationRequest) -> list[str]:
    """What of a request's A1111 settings this engine does not reproduce (said, never silently dropped)."""
    notes = []
    if req.randn_source != "CPU":
        notes.append(f"RNG: {req.randn_source} is not available: the noise was drawn on the CPU (A1111's 'CPU' "
                     f"source), so an image made with {req.randn_source} noise is not reproduced exactly")
    return notes


def a1111_sampler(loaded, req: GenerationRequest) -> samplers.Sampler | None:
    """The request's sampler when A1111's computation runs it (its k-diffusion samplers), else None."""
    sampler, _ = samplers.resolve(req.sampler_name, req.scheduler)
    return sampler if sampler.k is not None else None


def img2img_steps(loaded, req: GenerationRequest, steps: int, strength: float) -> int:
    """Steps img2img runs: A1111's t_enc + 1 for its k-diffusion samplers (t_enc = int(min(strength,
    0.999) x steps), for any strength above 0); diffusers' int(steps x strength) for the others."""
    if strength > 0 and a1111_sampler(loaded, req) is not None:
        return int(min(strength, 0.999) * steps) + 1
    return int(steps * strength)


def evaluations(loaded, req: GenerationRequest, steps: int, run: int | None = None) -> int:
    """Step callbacks diffusers makes for `steps` inference steps (the last `run` of them for img2img):
    second-order samplers (Heun, DPM2, DPM++ SDE) call back at every model evaluation, PLMS once more."""
    sampler = a1111_sampler(loaded, req)
    if sampler is not None:
        return kscheduler.evaluations(loaded.scheduler_config, sampler, k_settings(req, loaded), steps, run)
    scheduler = samplers.build_scheduler(loaded.scheduler_config, req.sampler_name, req.scheduler)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if run is not None:
        timesteps = timesteps[(steps - run) * scheduler.order:]
    return len(timesteps)


def seeded_noise(pipe, noise: torch.Tensor, strength: float) -> dict:
    """Make an img2img/inpaint pipeline start from our CPU-seeded noise (variation seeds included) instead of
    noise it draws itself: the pipelines noise the init latents with `scheduler.add_noise(latents, noise, t)`
    (the 4-channel inpaint loop re-noises the kept area with the same call), so the fresh scheduler built for
    this call substitutes `noise` there; at strength 1 the inpaint pipelines take it as `latents`."""
    add_noise = pipe.scheduler.add_noise

    def seeded_add_noise(original_samples, drawn, timesteps):
        return add_noise(original_samples, noise if drawn.shape == noise.shape else drawn, timesteps)

    pipe.scheduler.add_noise = seeded_add_noise
    if strength >= 1.0 and "mask_image" in call_params(pipe):
        return {"latents": noise}
    return {}


def call_params(pipe) -> set[str]:
    import inspect

    return set(inspect.signature(type(pipe).__call__).parameters)


def full_mask_inputs(pipe, width: int, height: int, image) -> dict:
    """9-channel inpainting checkpoints in txt2img / hires: a full white mask over a blank (or given) image."""
    from PIL import Image

    if image is None or isinstance(image, torch.Tensor):
        init = Image.new("RGB", (width, height), (127, 127, 127))
        extra = {"image": init, "strength": 1.0} if image is None else {}
    else:
        extra = {}
    return {"mask_image": Image.new("L", (width, height), 255), **extra}


@torch.no_grad()
def encode_images(pipe, images) -> torch.Tensor:
    tensor = pipe.image_processor.preprocess(images).to(pipe.vae.device, pipe.vae.dtype)
    latents = pipe.vae.encode(tensor).latent_dist.mode()
    return latents * pipe.vae.config.scaling_factor
