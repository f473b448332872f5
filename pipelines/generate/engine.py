"""txt2img: one typed request in, images + infotext + seeds out (saved with parameters embedded).

The sampling loop is diffusers' own pipeline call; this module supplies what A1111 users expect
around it: A1111 prompt syntax (embeddings from `conditioning`), CPU-drawn seeded noise with
variation seeds, prompt editing during sampling (via `callback_on_step_end`), hires fix, live
progress with previews, interrupt/skip, and saving with infotext.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import detect
from ..params import declarations as params
from . import flow, kscheduler, samplers
from ..core import vae_tiling
from ..prompts.conditioning import Conditioning, PromptEncoder, at_step
from ..core.errors import Interrupted, Skipped, UserError
from ..hooks import HookRegistry, StepProgress
from ..params.infotext import build_infotext
from ..core.jobs import JobControl
from ..models.manager import PipelineManager
from .noise import image_noise
from ..images.outputs import OutputSaver
from ..params.declarations import GenerationRequest
from .preview import approx_rgb
from ..prompts.extras import PromptJob, prompt_job
from .. import upscale
from ..upscale import outpaint

log = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    images: list = field(default_factory=list)            # PIL images, in order
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)       # saved files (empty when not saved)
    grid_path: Path | None = None
    request: GenerationRequest | None = None
    interrupted: bool = False
    skipped: int = 0
    seconds: float = 0.0
    steps_run: int = 0
    notices: list[str] = field(default_factory=list)   # things the user should know (e.g. "mask resized")
    control_maps: list = field(default_factory=list)   # ControlNet maps as applied (PIL), one per unit

    def info(self) -> dict[str, Any]:
        """A1111's `info` object (the API returns it as a JSON string)."""
        r = self.request
        return {
            "prompt": r.prompt if r else "",
            "all_prompts": [r.prompt] * len(self.images) if r else [],
            "negative_prompt": r.negative_prompt if r else "",
            "all_negative_prompts": [r.negative_prompt] * len(self.images) if r else [],
            "seed": self.seeds[0] if self.seeds else None,
            "all_seeds": self.seeds,
            "subseed": self.subseeds[0] if self.subseeds else None,
            "all_subseeds": self.subseeds,
            "subseed_strength": r.subseed_strength if r else 0,
            "width": r.width if r else None,
            "height": r.height if r else None,
            "sampler_name": r.sampler_name if r else None,
            "cfg_scale": r.cfg_scale if r else None,
            "steps": r.steps if r else None,
            "batch_size": r.batch_size if r else None,
            "clip_skip": r.clip_skip if r else None,
            "infotexts": self.infotexts,
            "interrupted": self.interrupted,
        }


class _StepTracker:
    """Counts sampler steps over the whole job for progress, previews, ETA and interrupt checks."""

    def __init__(self, control: JobControl | None, total_steps: int, images: int, sdxl: bool, preview_every: int,
                 tiny_vae=None):
        self.control = control
        self.total = max(1, total_steps)
        self.done = 0
        self.images = images
        self.sdxl = sdxl
        self.preview_every = preview_every
        self.tiny_vae = tiny_vae   # TAESD when its weights are there: a real preview; else the linear one

    def preview(self, latents: torch.Tensor):
        if self.tiny_vae is None:
            return approx_rgb(latents, self.sdxl)
        from PIL import Image

        with torch.no_grad():
            rgb = self.tiny_vae.decode(latents[:1].to(self.tiny_vae.dtype), return_dict=False)[0][0]
        arr = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr, "RGB")

    def step(self, latents: torch.Tensor | None, step: int, steps: int, image: int, label: str) -> None:
        self.done += 1
        if self.control is None:
            return
        changes: dict[str, Any] = dict(fraction=min(1.0, self.done / self.total), step=step + 1, steps=steps,
                                       image=image, images=self.images,
                                       text=f"{label} step {step + 1}/{steps}, image {image + 1}/{self.images}")
        if latents is not None and self.preview_every and ((step + 1) % self.preview_every == 0):
            changes["preview"] = self.preview(latents)
        self.control.update(**changes)
        self.control.check()


class Engine:
    """Runs generation requests on a PipelineManager's active checkpoint and saves the results."""

    def __init__(self, manager: PipelineManager, saver: OutputSaver | None = None, *, preview_every: int = 5,
                 styles=None, networks=None, hooks: HookRegistry | None = None):
        self.manager = manager
        # Extensions' hooks (pipelines.hooks), created by the app; an empty registry when none.
        self.hooks = hooks if hooks is not None else HookRegistry()
        self.saver = saver
        self.preview_every = preview_every
        # Prompt extras (pipelines.prompts.extras): a styles.csv StyleDatabase (None: requests naming styles
        # get a notice) and the LoRA / embeddings NetworkManager of the models folders.
        self.styles = styles
        if networks is None:
            from ..prompts.networks import NetworkManager

            registry = manager.registry
            networks = NetworkManager(registry.paths, hashes=registry.hashes, hashing=registry.hashing)
        self.networks = networks
        # Upscalers of the models folders (models/ESRGAN, RealESRGAN, SwinIR, DAT): hires fix and the Extras tab.
        self.upscalers = upscale.from_paths(manager.registry.paths, manager.policy)
        outpaint.register_scripts(self.hooks)   # A1111's outpainting script names (API script_name)

    # ------------------------------------------------------------------ public
    def txt2img(self, req: GenerationRequest, control: JobControl | None = None, *, save: bool = True,
                controlnet: list | None = None, hooks: bool = True) -> GenerationResult:
        """`controlnet`: ControlNetUnits (pipelines.controlnet.units); enabled ones steer the generation.
        `hooks`: run extensions' before/after/run_generation hooks around it (pipelines.hooks)."""
        if hooks:
            return self.hooks.generation("txt2img", req, lambda r, c: self.txt2img(
                r, c, save=save, controlnet=controlnet, hooks=False), control=control, save=save, saver=self.saver)
        params.check_request(req)
        start = time.perf_counter()
        with self.manager.lock:
            loaded = self._prepare_model(req)
            if flow.handles(loaded):   # Flux: flow-matching transformer (pipelines.generate.flow)
                result = flow.txt2img(self, loaded, req, GenerationResult(request=req), batch_seeds, control, save,
                                      controlnet)
                result.seconds = time.perf_counter() - start
                return result
            cn = self._controlnet(controlnet, req, req.width, req.height)
            try:
                with self.prompt_job(loaded, req) as job, self.vae_tiling(loaded, req, self._hires_size(req)):
                    result = self._run_txt2img(job.request, loaded, control, save, cn, job=job)
                result.notices.extend(n for n in job.notices if n not in result.notices)
            finally:
                if cn is not None:
                    cn.release()
        result.seconds = time.perf_counter() - start
        return result

    def img2img(self, req: GenerationRequest, images, mask=None, control: JobControl | None = None, *,
                save: bool = True, controlnet: list | None = None, hooks: bool = True) -> GenerationResult:
        """img2img / inpainting from init image(s) and an optional mask; see `pipelines.generate.img2img`.
        `controlnet`: ControlNetUnits; a unit without an image uses the init image."""
        from .img2img import img2img

        if hooks:
            return self.hooks.generation("img2img", req, lambda r, c: self.img2img(
                r, images, mask, c, save=save, controlnet=controlnet, hooks=False), control=control, save=save,
                saver=self.saver)
        return img2img(self, req, images, mask, control, save=save, controlnet=controlnet)

    def img2img_batch(self, req: GenerationRequest, input_dir, output_dir=None, mask_dir=None,
                      control: JobControl | None = None):
        """A folder of init images (+ optional masks of the same names) → output folder, resumable."""
        from .img2img import img2img_batch

        return img2img_batch(self, req, input_dir, output_dir, mask_dir, control)

    def prompt_job(self, loaded, req: GenerationRequest):
        """Context for one job's prompts: styles applied, LoRAs active, embeddings hooked (see
        `pipelines.prompts.extras`); on exit the checkpoint is its own again."""
        return prompt_job(self.styles, self.networks, loaded.pipe, req)

    # ------------------------------------------------------------------ model
    def _prepare_model(self, req: GenerationRequest):
        if req.sd_model_checkpoint:
            self.manager.load(req.sd_model_checkpoint)
        loaded = self.manager.require_active()
        if req.sd_vae:
            self.manager.set_vae(req.sd_vae)
        return loaded

    def vae_tiling(self, loaded, req: GenerationRequest, size: tuple[int, int] | None = None):
        """The job's VAE tiling (pipelines.core.vae_tiling) for its largest pass, `size` or the request's."""
        width, height = size or (req.width, req.height)
        policy = self.manager.policy
        return vae_tiling.vae_tiling(loaded.pipe.vae, policy.vae_tiling, width, height, req.batch_size, policy.device)

    # ------------------------------------------------------------------ ControlNet
    def _controlnet(self, units, req: GenerationRequest, width: int, height: int, init_image=None):
        """The job's ControlNet part (maps, nets, notices) or None when no unit is enabled."""
        if not units:
            return None
        from ..controlnet.job import prepare_job

        return prepare_job(self.manager, units, width, height, init_image=init_image, seed=req.seed)

    def _mode_pipeline(self, mode: str, cn=None):
        """The mode's pipeline; with active ControlNet units, its ControlNet twin (same loaded components)."""
        return cn.pipeline(mode) if cn is not None and cn.active else self.manager.pipeline(mode)

    @staticmethod
    def _controlnet_result(result: GenerationResult, cn, width: int, height: int) -> None:
        if cn is not None:
            result.notices.extend(n for n in cn.notices if n not in result.notices)
            if cn.active:
                result.control_maps = cn.maps(width, height)

    # ------------------------------------------------------------------ txt2img
    def _run_txt2img(self, req: GenerationRequest, loaded, control: JobControl | None, save: bool,
                     cn=None, job: PromptJob | None = None) -> GenerationResult:
        pipe = self._mode_pipeline("txt2img", cn)
        sdxl = loaded.arch.family in (detect.SDXL, detect.SDXL_REFINER)
        n_images = req.batch_size * req.n_iter
        seeds, subseeds = batch_seeds(req)
        hr_size = self._hires_size(req)
        # A1111: the second pass runs exactly "Hires steps" steps (0 = the first pass's steps), on a
        # schedule of int(steps / denoising strength) steps entered at the denoising strength's level.
        hr_steps = (req.hr_second_pass_steps or req.steps) if hr_size and req.denoising_strength > 0 else 0
        per_image_steps = _callbacks(loaded, req, req.steps)
        if hr_steps:
            per_image_steps += _callbacks(loaded, req, _hires_total(loaded, hr_steps, req.denoising_strength), hr_steps)
        tracker = _StepTracker(control, per_image_steps * req.n_iter, n_images, sdxl, self.preview_every,
                               self._preview_decoder(control))

        encoder = job.encoder(pipe, req.clip_skip) if job else PromptEncoder(pipe, req.clip_skip)
        enc_req = job.encode_request if job else req   # LoRA tags out of the prompt that is encoded
        result = GenerationResult(request=req)
        for it in range(req.n_iter):
            b0 = it * req.batch_size
            b_seeds, b_subseeds = seeds[b0:b0 + req.batch_size], subseeds[b0:b0 + req.batch_size]
            try:
                if control is not None:
                    # A skip that arrived after the previous image's last step (while it was decoded or
                    # saved) is stale: A1111 clears it here rather than dropping an image not yet begun.
                    control.skipped.clear()
                    control.check()
                latents, gens = self._sample(pipe, loaded, encoder, enc_req, req.steps, req.width, req.height,
                                             b_seeds, b_subseeds, tracker, b0, "txt2img", cn=cn)
                if hr_size:
                    latents = self._hires(loaded, encoder, enc_req, latents, gens, hr_size, hr_steps, tracker, b0, cn=cn,
                                          seeds=b_seeds, subseeds=b_subseeds)
                images = self._final_decode(pipe, latents, req, result)
            except Skipped:
                result.skipped += 1
                continue
            except Interrupted:
                result.interrupted = True
                break
            extra = job.infotext() if job else None
            for k, image in enumerate(images):
                self._finish_image(result, loaded, req, image, b_seeds[k], b_subseeds[k], save, cn=cn, extra=extra)
        if save and self.saver and len(result.images) > 1 and self.saver_grid:
            result.grid_path = self.saver.save_grid(result.images, result.infotexts[0], seed=result.seeds[0],
                                                    prompt=req.prompt, model_name=loaded.info.model_name)
        result.steps_run = tracker.done
        self._controlnet_result(result, cn, req.width, req.height)
        return result

    saver_grid = False  # A1111's "save grid" option; the UI shows the batch in the gallery either way

    def _finish_image(self, result: GenerationResult, loaded, req, image, seed: int, subseed: int, save: bool,
                      mode: str = "txt2img", masked: bool = False, cn=None, extra: dict | None = None):
        extra = {**(cn.infotext() if cn is not None and cn.active else {}), **(extra or {}),
                 **self.hooks.infotext(req, mode)}   # extension parameters (their infotext keys)
        infotext = build_infotext(req.prompt, req.negative_prompt, params.infotext_params(
            req, seed=seed, subseed=subseed, model_hash=loaded.info.shorthash,
            model_name=loaded.info.model_name, vae_name=loaded.vae_name, mode=mode, masked=masked,
            extra=extra or None))
        result.images.append(image)
        result.infotexts.append(infotext)
        result.seeds.append(seed)
        result.subseeds.append(subseed)
        if save and self.saver is not None:
            try:
                path = self.saver.save(image, infotext, kind=f"{mode}-images", seed=seed, prompt=req.prompt,
                                       model_name=loaded.info.model_name,
                                       extra={"steps": req.steps, "cfg": req.cfg_scale, "sampler": req.sampler_name})
            except OSError as err:   # disk full, folder gone: the images made so far are returned, not lost
                note = f"image {len(result.images)} was not saved: {err.strerror or type(err).__name__}"
                result.notices.append(note)
                return
            result.paths.append(path)
            self.hooks.after_image_saved(result.paths[-1], infotext)

    @staticmethod
    def _hires_size(req: GenerationRequest) -> tuple[int, int] | None:
        if not req.enable_hr:
            return None
        if req.hr_resize_x or req.hr_resize_y:
            w = req.hr_resize_x or int(req.width * req.hr_resize_y / req.height)
            h = req.hr_resize_y or int(req.height * req.hr_resize_x / req.width)
        else:
            w, h = int(req.width * req.hr_scale), int(req.height * req.hr_scale)
        w, h = w - w % 8, h - h % 8
        if w * h > params.MAX_PIXELS:
            raise UserError(f"hires fix target {w}x{h} exceeds the {params.MAX_PIXELS // 1_000_000} MP limit")
        return w, h

    # ------------------------------------------------------------------ sampling
    def _embeds(self, encoder: PromptEncoder, req: GenerationRequest, steps: int, hires_steps: int | None = None,
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

    def _sample(self, pipe, loaded, encoder, req, steps, width, height, seeds, subseeds, tracker, image0, label,
                image=None, strength=None, gens=None, hires_steps=None, mask=None, masked_image_latents=None,
                noise=None, cn=None, latent_mask=None):
        """One diffusers call producing latents; prompt schedules swap embeddings between steps.

        `steps` is diffusers' num_inference_steps; for the hires pass `hires_steps` of them are run.
        img2img / inpainting (`pipelines.generate.img2img`): `image` is the init latents, `mask` the inpaint mask
        (PIL, white = repaint) with `masked_image_latents`, and `noise` the seeded initial noise."""
        batch = len(seeds)
        device = pipe.unet.device
        dtype = pipe.unet.dtype
        sdxl = "add_text_embeds" in getattr(pipe, "_callback_tensor_inputs", [])
        kwargs: dict[str, Any] = {}
        if image is None:
            shape = (batch, 4, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
            noise, gens = image_noise(shape, seeds, subseeds, req.subseed_strength)
            kwargs["latents"] = noise.to(device, dtype)
        else:
            kwargs["image"] = image
            kwargs["strength"] = strength
        if mask is not None:
            kwargs["mask_image"] = mask
            if masked_image_latents is not None:
                kwargs["masked_image_latents"] = masked_image_latents.to(device, dtype)
        elif loaded.arch.inpaint:
            kwargs.update(_full_mask_inputs(pipe, width, height, image))
        sampler, _ = samplers.resolve(req.sampler_name, req.scheduler)
        if sampler.k is not None:   # A1111's own computation (pipelines.generate.kscheduler)
            pipe_image = image
            if image is not None and not isinstance(image, torch.Tensor):
                image = _encode_images(pipe, image).float()   # pixel inputs (hires upscalers, ControlNet inpaint)
            if image is not None and noise is None:           # hires: fresh per-image noise at the new size (A1111)
                noise, gens = image_noise(tuple(image.shape), seeds, subseeds, req.subseed_strength)
            run_steps = None if image is None else (hires_steps or img2img_steps(sampler, steps, strength))
            pipe.scheduler = kscheduler.build(
                loaded.scheduler_config, sampler, k_settings(req, loaded), steps, noise=noise.to(device),
                generators=gens, seeds=seeds, run_steps=run_steps,
                init_latents=None if image is None else image.to(device, torch.float32),
                mask=latent_mask if mask is not None else None)
            if image is not None:
                # the scheduler owns the tail: the pipeline runs all its steps
                kwargs.update(image=pipe_image if pipe_image is not image else image.to(device, dtype), strength=1.0)
            gens = torch.Generator("cpu").manual_seed(0)                     # what the pipeline draws is unused
            order = pipe.scheduler.prompt_steps_multiplier
        else:
            pipe.scheduler = samplers.build_scheduler(loaded.scheduler_config, req.sampler_name, req.scheduler)
            if noise is not None and image is not None:
                kwargs.update(_seeded_noise(pipe, noise.to(device, dtype), strength))
            order = pipe.scheduler.order
        if hires_steps:
            cond_sched, uncond_sched = self._embeds(encoder, req, req.steps, hires_steps, order)
        else:
            cond_sched, uncond_sched = self._embeds(encoder, req, steps, None, order)

        def embeds_at(step: int) -> tuple[Conditioning, Conditioning]:
            return at_step(cond_sched, step), at_step(uncond_sched, step)

        cond, uncond = embeds_at(0)
        kwargs.update(prompt_embeds=cond.embeds.repeat(batch, 1, 1),
                      negative_prompt_embeds=uncond.embeds.repeat(batch, 1, 1))
        if sdxl:
            kwargs.update(pooled_prompt_embeds=cond.pooled.repeat(batch, 1),
                          negative_pooled_prompt_embeds=uncond.pooled.repeat(batch, 1))
        changing = len(cond_sched) > 1 or len(uncond_sched) > 1
        # CFG cut-off: after this fraction of steps the unconditional pass is dropped (about half the UNet
        # work). Pipelines that duplicate other inputs for CFG before the loop (ControlNet images, 9-channel
        # inpainting masks) cannot change batch mid-way, so there it is not applied.
        cutoff = req.cfg_cutoff if req.cfg_cutoff < 1 and req.cfg_scale > 1 and mask is None \
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
                c, u = embeds_at(i + 1)
                cfg = p.do_classifier_free_guidance
                out["prompt_embeds"] = torch.cat([u.embeds, c.embeds] if cfg else [c.embeds]) \
                    .repeat_interleave(batch, dim=0).to(cb_kwargs["prompt_embeds"].dtype)
                if sdxl:
                    out["add_text_embeds"] = torch.cat([u.pooled, c.pooled] if cfg else [c.pooled]) \
                        .repeat_interleave(batch, dim=0).to(cb_kwargs["add_text_embeds"].dtype)
            tracker.step(cb_kwargs.get("latents"), i, p.num_timesteps, image0, label)
            if self.hooks.active("on_step"):
                stage = label if label in ("txt2img", "hires") else "img2img"
                self.hooks.on_step(StepProgress("img2img" if stage == "img2img" else "txt2img", stage,
                                                req, i + 1, p.num_timesteps, image0, tracker.images,
                                                min(1.0, tracker.done / tracker.total), cb_kwargs.get("latents")))
            return out

        accepted = _call_params(pipe)
        if cn is not None and cn.active:
            kwargs.update(cn.call_kwargs(pipe, width, height, req.cfg_scale))
        if "eta" in accepted:
            kwargs["eta"] = req.eta
        if "guidance_rescale" in accepted:
            kwargs["guidance_rescale"] = req.guidance_rescale
        if "height" in accepted:  # img2img pipelines take the size from the image
            kwargs.update(height=height, width=width)
        latents = pipe(num_inference_steps=steps, guidance_scale=req.cfg_scale, generator=gens, output_type="latent",
                       callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=tensor_inputs,
                       **kwargs).images
        return latents, gens

    def _hires(self, loaded, encoder, req, latents, gens, size, steps, tracker, image0, cn=None, seeds=None,
               subseeds=None):
        w, h = size
        pipe = self._mode_pipeline("img2img", cn)
        # 9-channel inpainting UNets need a real image (+ mask) for the second pass: upscale in pixels.
        if req.hr_upscaler in upscale.LATENT_MODES and not loaded.arch.inpaint:
            factor = pipe.vae_scale_factor
            image = upscale.latent_resize(latents, w // factor, h // factor, req.hr_upscaler)
        else:  # Lanczos, Nearest, None (= Lanczos) or a model upscaler (pipelines.upscale), as A1111's resize_image
            image = [self.upscalers.resize(im, w, h, req.hr_upscaler, field="hr_upscaler")
                     for im in self._decode(pipe, latents)]
        if steps < 1:  # denoising strength 0: upscale only
            return image if isinstance(image, torch.Tensor) else _encode_images(pipe, image)
        total = _hires_total(loaded, steps, req.denoising_strength)
        # diffusers runs int(total * strength) steps: ask for exactly `steps` (A1111's t_enc + 1)
        strength = min(1.0, (steps + 0.5) / total)
        seeds = seeds if seeds is not None else [0] * latents.shape[0]
        out, _ = self._sample(pipe, loaded, encoder, req, total, w, h, seeds, subseeds, tracker,
                              image0, "hires", image=image, strength=strength, gens=gens, hires_steps=steps, cn=cn)
        return out

    def _preview_decoder(self, control: JobControl | None):
        """TAESD for live previews when someone watches (a control) and its weights are there."""
        return self.manager.tiny_vae() if control is not None and self.preview_every else None

    def _final_decode(self, pipe, latents: torch.Tensor, req: GenerationRequest, result: GenerationResult) -> list:
        """The images of a finished batch: TAESD when the request asks for the tiny VAE and it is there."""
        if req.vae_type == "Tiny":
            tiny = self.manager.tiny_vae()
            if tiny is not None:
                with torch.no_grad():
                    # TAESD decodes the scaled latents directly (its scaling factor is 1) to [-1, 1].
                    decoded = tiny.decode(latents.to(tiny.dtype), return_dict=False)[0]
                return pipe.image_processor.postprocess(decoded.float(), output_type="pil")
            note = ("VAE type Tiny: no TAESD weights in models/VAE-approx (taesd / taesdxl, diffusers format); "
                    "the full VAE was used")
            if note not in result.notices:
                result.notices.append(note)
        return self._decode(pipe, latents)

    @torch.no_grad()
    def _decode(self, pipe, latents: torch.Tensor) -> list:
        vae = pipe.vae
        lat = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            lat = lat + vae.config.shift_factor
        decoded = vae_tiling.decode(vae, lat)
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil")


def batch_seeds(req: GenerationRequest) -> tuple[list[int], list[int]]:
    """Seeds and variation seeds of the batch_size x n_iter images (A1111: seed + i, or one seed for all
    when a variation strength is set; -1 resolved to a random seed)."""
    n_images = req.batch_size * req.n_iter
    seed = params.resolve_seed(req.seed)
    subseed = params.resolve_seed(req.subseed)
    return ([seed + (i if req.subseed_strength == 0 else 0) for i in range(n_images)],
            [subseed + i for i in range(n_images)])


def _hires_total(loaded, steps: int, denoising_strength: float) -> int:
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


def img2img_steps(sampler: samplers.Sampler, steps: int, strength: float) -> int:
    """Steps img2img runs: A1111's t_enc + 1 for its k-diffusion samplers (t_enc = int(min(strength,
    0.999) x steps), for any strength above 0); diffusers' int(steps x strength) for the others."""
    if sampler.k is not None and strength > 0:
        return int(min(strength, 0.999) * steps) + 1
    return int(steps * strength)


def _callbacks(loaded, req: GenerationRequest, steps: int, run: int | None = None) -> int:
    """Step callbacks diffusers makes for `steps` inference steps (the last `run` of them for img2img):
    second-order samplers (Heun, DPM2, DPM++ SDE) call back at every model evaluation, PLMS once more."""
    sampler, _ = samplers.resolve(req.sampler_name, req.scheduler)
    if sampler.k is not None:
        return kscheduler.evaluations(loaded.scheduler_config, sampler, k_settings(req, loaded), steps, run)
    scheduler = samplers.build_scheduler(loaded.scheduler_config, req.sampler_name, req.scheduler)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if run is not None:
        timesteps = timesteps[(steps - run) * scheduler.order:]
    return len(timesteps)


def _seeded_noise(pipe, noise: torch.Tensor, strength: float) -> dict:
    """Make an img2img/inpaint pipeline start from our CPU-seeded noise (variation seeds included) instead of
    noise it draws itself: the pipelines noise the init latents with `scheduler.add_noise(latents, noise, t)`
    (the 4-channel inpaint loop re-noises the kept area with the same call), so the fresh scheduler built for
    this call substitutes `noise` there; at strength 1 the inpaint pipelines take it as `latents`."""
    add_noise = pipe.scheduler.add_noise

    def seeded_add_noise(original_samples, drawn, timesteps):
        return add_noise(original_samples, noise if drawn.shape == noise.shape else drawn, timesteps)

    pipe.scheduler.add_noise = seeded_add_noise
    if strength >= 1.0 and "mask_image" in _call_params(pipe):
        return {"latents": noise}
    return {}


def _call_params(pipe) -> set[str]:
    import inspect

    return set(inspect.signature(type(pipe).__call__).parameters)


def _full_mask_inputs(pipe, width: int, height: int, image) -> dict:
    """9-channel inpainting checkpoints in txt2img / hires: a full white mask over a blank (or given) image."""
    from PIL import Image

    if image is None or isinstance(image, torch.Tensor):
        init = Image.new("RGB", (width, height), (127, 127, 127))
        extra = {"image": init, "strength": 1.0} if image is None else {}
    else:
        extra = {}
    return {"mask_image": Image.new("L", (width, height), 255), **extra}


@torch.no_grad()
def _encode_images(pipe, images) -> torch.Tensor:
    tensor = pipe.image_processor.preprocess(images).to(pipe.vae.device, pipe.vae.dtype)
    latents = pipe.vae.encode(tensor).latent_dist.mode()
    return latents * pipe.vae.config.scaling_factor
