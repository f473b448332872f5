"""The Engine: one typed request in, images + infotext + seeds out (saved with parameters embedded).

It owns what every mode shares (the model, ControlNet and prompt job of a request, decoding, infotext
and saving) and runs txt2img with hires fix itself; img2img/inpainting (`img2img`) and Flux (`flow`) are
its peers over the same sampling module (`sampling`: A1111's samplers, seeds, prompt editing during
sampling, progress) and result types (`results`). An interrupted batch keeps its partial image (A1111).
"""
from __future__ import annotations

import logging
import time

import torch

from ..models import detect
from ..params import declarations as params
from . import flow, sampling
from ..core import vae_tiling
from ..prompts.conditioning import PromptEncoder
from ..core.errors import Interrupted, Skipped, UserError
from ..hooks import HookRegistry
from ..params.infotext import build_infotext
from ..core.jobs import JobControl
from ..models.manager import PipelineManager
from ..images.outputs import OutputSaver
from ..params.declarations import GenerationRequest
from ..prompts.extras import PromptJob, prompt_job
from .. import upscale
from ..upscale import outpaint
from .results import GenerationResult, StepTracker
from .sampling import SamplingJob, batch_seeds, encode_images, evaluations, hires_total, reproduction_notices

log = logging.getLogger(__name__)


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
            loaded = self.prepare_model(req)
            if flow.handles(loaded):   # Flux: flow-matching transformer (pipelines.generate.flow)
                result = flow.txt2img(self, loaded, req, GenerationResult(request=req), batch_seeds, control, save,
                                      controlnet)
                result.seconds = time.perf_counter() - start
                return result
            cn = self.controlnet_job(controlnet, req, req.width, req.height)
            try:
                with self.prompt_job(loaded, req) as job, self.vae_tiling(loaded, req, self._hires_size(req)):
                    result = self._run_txt2img(job.request, loaded, control, save, cn, job=job)
                result.notices.extend(n for n in job.notices + reproduction_notices(req) if n not in result.notices)
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
    def prepare_model(self, req: GenerationRequest):
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
    def controlnet_job(self, units, req: GenerationRequest, width: int, height: int, init_image=None):
        """The job's ControlNet part (maps, nets, notices) or None when no unit is enabled."""
        if not units:
            return None
        from ..controlnet.job import prepare_job

        return prepare_job(self.manager, units, width, height, init_image=init_image, seed=req.seed)

    def mode_pipeline(self, mode: str, cn=None):
        """The mode's pipeline; with active ControlNet units, its ControlNet twin (same loaded components)."""
        return cn.pipeline(mode) if cn is not None and cn.active else self.manager.pipeline(mode)

    @staticmethod
    def controlnet_result(result: GenerationResult, cn, width: int, height: int) -> None:
        if cn is not None:
            result.notices.extend(n for n in cn.notices if n not in result.notices)
            if cn.active:
                result.control_maps = cn.maps(width, height)

    # ------------------------------------------------------------------ txt2img
    def _run_txt2img(self, req: GenerationRequest, loaded, control: JobControl | None, save: bool,
                     cn=None, job: PromptJob | None = None) -> GenerationResult:
        pipe = self.mode_pipeline("txt2img", cn)
        sdxl = loaded.arch.family in (detect.SDXL, detect.SDXL_REFINER)
        n_images = req.batch_size * req.n_iter
        seeds, subseeds = batch_seeds(req)
        hr_size = self._hires_size(req)
        # A1111: the second pass runs exactly "Hires steps" steps (0 = the first pass's steps), on a
        # schedule of int(steps / denoising strength) steps entered at the denoising strength's level.
        hr_steps = (req.hr_second_pass_steps or req.steps) if hr_size and req.denoising_strength > 0 else 0
        per_image_steps = evaluations(loaded, req, req.steps)
        if hr_steps:
            per_image_steps += evaluations(loaded, req, hires_total(loaded, hr_steps, req.denoising_strength), hr_steps)
        tracker = StepTracker(control, per_image_steps * req.n_iter, n_images, sdxl, self.preview_every,
                               self.preview_decoder(control))

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
                first = SamplingJob(enc_req, encoder, req.steps, req.width, req.height, b_seeds, b_subseeds, tracker,
                                    b0, "txt2img", controlnet=cn)
                latents, gens = sampling.sample(pipe, loaded, first, self.hooks)
                if hr_size:
                    latents = self._hires(loaded, first, latents, gens, hr_size, hr_steps)
                images = self.final_decode(pipe, latents, req, result)
            except Skipped:
                result.skipped += 1
                continue
            except Interrupted as stop:
                result.interrupted = True
                images = self.partial_images(pipe, stop, req, result)
            extra = job.infotext() if job else None
            for k, image in enumerate(images):
                self.finish_image(result, loaded, req, image, b_seeds[k], b_subseeds[k], save, cn=cn, extra=extra)
            if result.interrupted:
                break
        if save and self.saver and len(result.images) > 1 and self.saver_grid:
            result.grid_path = self.saver.save_grid(result.images, result.infotexts[0], seed=result.seeds[0],
                                                    prompt=req.prompt, model_name=loaded.info.model_name)
        result.steps_run = tracker.done
        self.controlnet_result(result, cn, req.width, req.height)
        return result

    saver_grid = False  # A1111's "save grid" option; the UI shows the batch in the gallery either way

    def finish_image(self, result: GenerationResult, loaded, req, image, seed: int, subseed: int, save: bool,
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
    def _hires(self, loaded, first: SamplingJob, latents, generators, size, steps):
        """The second pass of hires fix over the first pass's latents (`first`: that pass's job; `generators`:
        the ones it drew from, which diffusers' samplers continue; A1111's draw fresh noise)."""
        req, cn = first.req, first.controlnet
        w, h = size
        pipe = self.mode_pipeline("img2img", cn)
        # 9-channel inpainting UNets need a real image (+ mask) for the second pass: upscale in pixels.
        if req.hr_upscaler in upscale.LATENT_MODES and not loaded.arch.inpaint:
            factor = pipe.vae_scale_factor
            image = upscale.latent_resize(latents, w // factor, h // factor, req.hr_upscaler)
        else:  # Lanczos, Nearest, None (= Lanczos) or a model upscaler (pipelines.upscale), as A1111's resize_image
            image = [self.upscalers.resize(im, w, h, req.hr_upscaler, field="hr_upscaler")
                     for im in self.decode(pipe, latents)]
        if steps < 1:  # denoising strength 0: upscale only
            return image if isinstance(image, torch.Tensor) else encode_images(pipe, image)
        total = hires_total(loaded, steps, req.denoising_strength)
        # diffusers runs int(total * strength) steps: ask for exactly `steps` (A1111's t_enc + 1)
        strength = min(1.0, (steps + 0.5) / total)
        second = SamplingJob(req, first.encoder, total, w, h, first.seeds, first.subseeds, first.tracker, first.image0,
                             "hires", image=image, strength=strength, generators=generators, hires_steps=steps,
                             controlnet=cn)
        out, _ = sampling.sample(pipe, loaded, second, self.hooks)
        return out

    keep_interrupted = True   # A1111's default: an interrupted batch ends with its partial image; False drops it

    def partial_images(self, pipe, stop: Interrupted, req: GenerationRequest, result: GenerationResult) -> list:
        """The images of a batch interrupted while sampling: its latest prediction decoded (`stop.latents`,
        set by `sampling.sample`), or none when interrupted elsewhere or `keep_interrupted` is off."""
        partial = getattr(stop, "latents", None)
        if not self.keep_interrupted or partial is None:
            return []
        return self.final_decode(pipe, partial, req, result)

    def preview_decoder(self, control: JobControl | None):
        """TAESD for live previews when someone watches (a control) and its weights are there."""
        return self.manager.tiny_vae() if control is not None and self.preview_every else None

    def final_decode(self, pipe, latents: torch.Tensor, req: GenerationRequest, result: GenerationResult) -> list:
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
        return self.decode(pipe, latents)

    @torch.no_grad()
    def decode(self, pipe, latents: torch.Tensor) -> list:
        vae = pipe.vae
        lat = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            lat = lat + vae.config.shift_factor
        decoded = vae_tiling.decode(vae, lat)
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil")
