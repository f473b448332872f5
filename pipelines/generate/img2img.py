"""img2img and inpainting on the txt2img engine: one code path for prompts, seeds, progress and saving.

    result = engine.img2img(req, [init_image], mask=None, control=None, save=True)

What this module adds around `sampling.sample` (the diffusers call that txt2img also uses):

- Inputs are decoded and checked by `image_inputs` (`load_image` / `load_mask`), resized with A1111's
  four resize modes and, with a mask, processed like A1111 (invert, blur, whole picture or "only masked").
- The init latents are encoded here once and handed to diffusers' img2img / inpaint pipeline as latents,
  so resize mode 3 (latent upscale) and masked content "latent noise" / "latent nothing" work the same way
  for every checkpoint. The initial noise is the same CPU-seeded noise as txt2img (variation seeds too).
- Steps run = int(steps x denoising strength) (diffusers' semantics); the progress text shows both.
  When that is 0 (denoising 0) no sampler runs: the result is the init image through the VAE.
- Inpainting: 9-channel inpainting checkpoints get diffusers' inpaint pipeline with mask + masked-image
  latents; regular checkpoints get the same pipeline with their 4-channel UNet, which blends the kept
  area back into the latents at every step. The final image is composited over the original: outside
  the (blurred) mask every pixel is the original's.
- Batch: `img2img_batch` runs a folder of images (optional masks by name) into an output folder,
  skipping inputs whose outputs exist (resumable); a bad file is reported and skipped.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from ..models import detect
from ..images import inputs as image_inputs, metadata as image_metadata
from ..params import declarations as params
from ..prompts.conditioning import PromptEncoder
from ..core.errors import Interrupted, Skipped, UserError
from . import sampling
from .results import GenerationResult, StepTracker
from .sampling import SamplingJob, batch_seeds, call_params, encode_images, evaluations, img2img_steps
from ..images.inputs import PreparedImage
from ..core.jobs import JobControl
from .noise import image_noise
from ..params.declarations import GenerationRequest
from ..upscale import outpaint

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------- one request

def img2img(engine, req: GenerationRequest, images: Any, mask: Any = None,
            control: JobControl | None = None, *, save: bool = True, controlnet: list | None = None
            ) -> GenerationResult:
    """Generate from init image(s) (+ an optional inpaint mask, white = repaint).

    `images`: one image or a list (PIL images, file bytes, paths or binary files). One image is used for
    every image of the batch; several (A1111's init_images) each start one image of a batch, and the batch
    size becomes their number. `mask`: the same kinds; resized to the image with a notice when its size
    differs. `controlnet`: ControlNetUnits, as for txt2img; a unit without its own image uses the init image
    (the worked crop with "only masked"). Raises UserError for unusable input; `result.notices` lists what
    the user should know.
    """
    params.check_request(req)
    if images is None or not isinstance(images, (list, tuple)):
        images = [images]
    images = [im for im in images if im is not None]
    if not images:
        raise UserError("img2img needs an init image: upload one")
    if len(images) > 1:
        if len(images) > req.batch_size:
            raise UserError(f"{len(images)} init images were given with batch size {req.batch_size}: set the batch "
                            f"size to at least {len(images)} (each image of a batch starts from its own init image)")
        req = req.replace(batch_size=len(images))
    notices: list[str] = []
    many = len(images) > 1
    sources = [image_inputs.load_image(im, what=f"init image {i + 1}" if many else "init image", notices=notices)
               for i, im in enumerate(images)]
    mask_image = image_inputs.load_mask(mask, notices=notices) if mask is not None else None
    if outpaint.requested(req):   # the canvas grows, its new area becomes the mask (pipelines.upscale.outpaint)
        sources, mask_image, req = outpaint.apply(sources, mask_image, req, notices)
        params.check_request(req)
    prepared = [image_inputs.prepare(src, mask_image, width=req.width, height=req.height,
                                     resize_mode=req.resize_mode, mask_blur=req.mask_blur,
                                     inpainting_fill=req.inpainting_fill, inpaint_full_res=req.inpaint_full_res,
                                     inpaint_full_res_padding=req.inpaint_full_res_padding,
                                     inpainting_mask_invert=req.inpainting_mask_invert, notices=notices)
                for src in sources]
    start = time.perf_counter()
    with engine.manager.lock:
        loaded = engine.prepare_model(req)
        cn = engine.controlnet_job(controlnet, req, req.width, req.height, init_image=prepared[0].control)
        try:
            # styles, LoRAs, embeddings: as txt2img
            with engine.prompt_job(loaded, req) as job, engine.vae_tiling(loaded, req):
                result = _run(engine, job.request, loaded, prepared, control, save, notices, cn, job)
            notices.extend(job.notices + sampling.reproduction_notices(req))
        finally:
            if cn is not None:
                cn.release()
    result.notices = list(dict.fromkeys(notices + result.notices))
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def _encode(pipe, prepared: PreparedImage, width: int, height: int) -> torch.Tensor:
    latents = encode_images(pipe, [prepared.init]).float()
    size = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)   # 8 for SD; tiny test VAEs: 2
    if prepared.latent_upscale and latents.shape[-2:] != size:
        latents = torch.nn.functional.interpolate(latents, size=size, mode="bilinear")
    return latents.cpu()


@torch.no_grad()
def _mask_inputs(pipe, prepared: PreparedImage, width: int, height: int, nine_channel: bool):
    """(latent mask 1x1xhxw: 1 = repaint, masked-image latents or None) as diffusers' inpaint pipeline
    computes them (mask binarized at 0.5, nearest-downscaled; init pixels zeroed under the mask)."""
    mask = pipe.mask_processor.preprocess(prepared.mask, height=height, width=width)
    factor = pipe.vae_scale_factor   # 8 for SD; tiny test VAEs: 2
    latent_mask = torch.nn.functional.interpolate(mask, size=(height // factor, width // factor))
    if not nine_channel:
        return latent_mask, None
    pixels = pipe.image_processor.preprocess(prepared.init, height=height, width=width)
    masked = (pixels * (mask < 0.5)).to(pipe.vae.device, pipe.vae.dtype)
    latents = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    return latent_mask, latents.float().cpu()


def _run(engine, req: GenerationRequest, loaded, prepared: list[PreparedImage],
         control: JobControl | None, save: bool, notices: list[str], cn=None, job=None) -> GenerationResult:
    from PIL import Image

    nine_channel = bool(loaded.arch.inpaint)
    masked = any(p.mask is not None for p in prepared)
    if nine_channel and not masked:
        # An inpainting UNet always needs a mask: the whole image (A1111 uses an all-ones mask too).
        for p in prepared:
            p.mask = Image.new("L", (req.width, req.height), 255)
    pipe = engine.mode_pipeline("inpaint" if masked or nine_channel else "img2img", cn)
    with_mask = prepared[0].mask is not None           # masked, or a 9-channel UNet's whole-image mask
    # diffusers' ControlNet inpaint pipelines take no masked-image latents: they get pixels and encode them.
    pixel_input = with_mask and "masked_image_latents" not in call_params(pipe)
    if pixel_input and masked and req.inpainting_fill in (2, 3):
        notices.append(f"masked content '{params.MASKED_CONTENT[req.inpainting_fill]}' is not available with "
                       f"ControlNet inpainting; 'original' was used")
    sdxl = loaded.arch.family in (detect.SDXL, detect.SDXL_REFINER)
    w, h, bs = req.width, req.height, req.batch_size
    n_images = bs * req.n_iter
    seeds, subseeds = batch_seeds(req)
    # what the sampler runs: A1111's t_enc + 1 for the k-diffusion samplers, int(steps x strength) otherwise
    run = img2img_steps(loaded, req, req.steps, req.denoising_strength)
    if run < 1 and req.denoising_strength > 0:
        notices.append(f"denoising strength {req.denoising_strength:g} x {req.steps} steps is less than one step: "
                       f"no sampling was done, the result is the init image")
    per_image = evaluations(loaded, req, req.steps, run) if run >= 1 else 0
    tracker = StepTracker(control, per_image * req.n_iter, n_images, sdxl, engine.preview_every,
                           engine.preview_decoder(control))
    label = f"img2img ({run} of {req.steps} steps at denoising {req.denoising_strength:g})"

    # Per batch row: the init latents; with a mask, the masks (PIL for the pipeline, latent for the fills
    # and the final blend) and the 9-channel UNet's masked-image latents.
    rows = prepared if len(prepared) > 1 else prepared * bs
    encoded = {id(p): _encode(pipe, p, w, h) for p in prepared}
    init = torch.cat([encoded[id(p)] for p in rows])
    mask_pils = latent_mask = masked_latents = pixels = None
    if with_mask:
        inputs = {id(p): _mask_inputs(pipe, p, w, h, nine_channel and not pixel_input) for p in prepared}
        mask_pils = [p.mask for p in rows]
        latent_mask = torch.cat([inputs[id(p)][0] for p in rows])
        if pixel_input:
            pixels = [p.init if p.init.size == (w, h) else image_inputs.resize_image(0, p.init, w, h) for p in rows]
        else:
            masked_latents = torch.cat([inputs[id(p)][1] for p in rows]) if nine_channel else init
    encoder = job.encoder(pipe, req.clip_skip) if job else PromptEncoder(pipe, req.clip_skip)
    enc_req = job.encode_request if job else req   # LoRA tags out of the prompt that is encoded
    result = GenerationResult(request=req)
    for it in range(req.n_iter):
        b0 = it * bs
        batch_seeds_, batch_subseeds = seeds[b0:b0 + bs], subseeds[b0:b0 + bs]
        try:
            if control is not None:
                control.skipped.clear()  # a stale skip from the previous image (see txt2img)
                control.check()
            noise, gens = image_noise(tuple(init.shape), batch_seeds_, batch_subseeds, req.subseed_strength)
            start = init
            if masked and req.inpainting_fill == 2 and not pixel_input:      # latent noise
                start = init * (1 - latent_mask) + noise * latent_mask
            elif masked and req.inpainting_fill == 3 and not pixel_input:    # latent nothing
                start = init * (1 - latent_mask)
            if run >= 1:
                job_ = SamplingJob(enc_req, encoder, req.steps, w, h, batch_seeds_, batch_subseeds, tracker, b0, label,
                                   image=pixels if pixel_input else start, strength=req.denoising_strength,
                                   generators=gens, mask=mask_pils, latent_mask=latent_mask,
                                   masked_image_latents=masked_latents, noise=noise, controlnet=cn)
                try:
                    latents, _ = sampling.sample(pipe, loaded, job_, engine.hooks)
                except Interrupted as stop:   # A1111 keeps the partial image (Engine.keep_interrupted)
                    if not engine.keep_interrupted or getattr(stop, "latents", None) is None:
                        raise
                    result.interrupted, latents = True, stop.latents
            else:
                latents = start
                if control is not None:
                    control.update(fraction=(it + 1) / req.n_iter, step=0, steps=0, image=b0, images=n_images,
                                   text=f"img2img (0 of {req.steps} steps at denoising "
                                        f"{req.denoising_strength:g}), image {b0 + 1}/{n_images}")
            if masked:  # A1111: the kept area is exactly the init latents after the last step
                m = latent_mask.to(latents.device, latents.dtype)
                latents = start.to(latents.device, latents.dtype) * (1 - m) + latents * m
            images = engine.final_decode(pipe, latents, req, result)
        except Skipped:
            result.skipped += 1
            continue
        except Interrupted:
            result.interrupted = True
            break
        extra = job.infotext() if job else None
        for k, image in enumerate(images):
            final = image_inputs.composite(image, rows[k])
            engine.finish_image(result, loaded, req, final, batch_seeds_[k], batch_subseeds[k], save,
                                 mode="img2img", masked=masked, cn=cn, extra=extra)
        if result.interrupted:
            break
    result.steps_run = tracker.done
    engine.controlnet_result(result, cn, w, h)
    return result


# ---------------------------------------------------------------------------------------- batch folders

@dataclass
class BatchResult:
    outputs: list[Path] = field(default_factory=list)            # files written in this run
    processed: list[str] = field(default_factory=list)           # input names done in this run
    skipped_existing: list[str] = field(default_factory=list)    # inputs whose outputs were already there
    errors: list[tuple[str, str]] = field(default_factory=list)  # (input name, message): reported, skipped
    notices: list[str] = field(default_factory=list)
    interrupted: bool = False
    total: int = 0                                               # input images found
    seconds: float = 0.0


class _BatchControl:
    """The job's control seen by one input of a batch: progress is rescaled to the whole batch."""

    def __init__(self, control: JobControl, index: int, total: int, name: str):
        self._control, self._index, self._total, self._name = control, index, total, name

    def __getattr__(self, attr):          # interrupted / skipped events, progress, check()...
        return getattr(self._control, attr)

    def update(self, **changes) -> None:
        if "fraction" in changes:
            changes["fraction"] = (self._index + min(1.0, changes["fraction"])) / self._total
        if "text" in changes:
            changes["text"] = f"batch {self._index + 1}/{self._total} ({self._name}): {changes['text']}"
        self._control.update(**changes)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder(path, what: str) -> Path:
    if path is None or not str(path).strip():
        raise UserError(f"no {what} given")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{what} {str(folder)!r} is not a folder")
    return folder


def batch_output_names(inputs: Iterable[Path], count: int, ext: str = "png") -> dict[Path, list[str]]:
    """Output file names per input: `<stem>.<ext>`, then `<stem>-1.<ext>`... for more images per input
    (A1111); inputs sharing a stem (a.png, a.jpg) keep their extension in the name (a.png.png)."""
    inputs = list(inputs)
    stems = [p.stem for p in inputs]
    names = {}
    for p in inputs:
        base = p.name if stems.count(p.stem) > 1 else p.stem
        names[p] = [f"{base}.{ext}" if k == 0 else f"{base}-{k}.{ext}" for k in range(count)]
    return names


def _write(path: Path, image, infotext: str, fmt: str) -> None:
    """All or nothing: a half-written output would make a resumed batch skip its input."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            image_metadata.write_image(image, handle, infotext, fmt)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def img2img_batch(engine, req: GenerationRequest, input_dir, output_dir=None, mask_dir=None,
                  control: JobControl | None = None) -> BatchResult:
    """img2img (inpainting with `mask_dir`) over every image of `input_dir`.

    Outputs go to `output_dir` as `<input stem>.<format>` with the infotext embedded (without
    `output_dir`: the usual outputs/img2img-images/DATE folder, and nothing is skipped). An input whose
    outputs all exist is skipped, so a stopped batch resumes where it was. Masks: the file of the same stem
    in `mask_dir` (or its only image, for all inputs); an input without one is processed without a mask.
    A file that cannot be used is reported in `errors` and skipped. All inputs use the same seed (A1111).
    """
    start = time.perf_counter()
    params.check_request(req)
    in_dir = _folder(input_dir, "input folder")
    out_dir = Path(output_dir).expanduser() if output_dir is not None and str(output_dir).strip() else None
    if out_dir is not None:
        if out_dir.resolve() == in_dir.resolve():
            raise UserError("the output folder is the input folder: outputs would replace the inputs; "
                            "choose another output folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the output folder {str(out_dir)!r}: {err}") from None
    masks: dict[str, Path] = {}
    single_mask: Path | None = None
    if mask_dir is not None and str(mask_dir).strip():
        mask_files = _image_files(_folder(mask_dir, "mask folder"))
        masks = {p.stem: p for p in mask_files}
        single_mask = mask_files[0] if len(mask_files) == 1 else None
    req = req.replace(seed=params.resolve_seed(req.seed), subseed=params.resolve_seed(req.subseed))

    fmt = engine.saver.fmt if engine.saver is not None else "png"
    inputs = _image_files(in_dir)
    names = batch_output_names(inputs, req.batch_size * req.n_iter, fmt)
    result = BatchResult(total=len(inputs))
    if not inputs:
        result.notices.append(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(in_dir)!r}")
    todo = []
    for path in inputs:
        if out_dir is not None and all((out_dir / n).exists() for n in names[path]):
            result.skipped_existing.append(path.name)
        else:
            todo.append(path)
    if result.skipped_existing:
        result.notices.append(f"{len(result.skipped_existing)} of {len(inputs)} images already have outputs in "
                              f"{str(out_dir)!r} and were skipped")

    for index, path in enumerate(todo):
        sub = _BatchControl(control, index, len(todo), path.name) if control is not None else None
        if sub is not None:
            sub.update(fraction=0.0, text="starting")
            if control.interrupted.is_set():
                result.interrupted = True
                break
        mask = masks.get(path.stem, single_mask) if (masks or single_mask) else None
        if (masks or single_mask) and mask is None:
            result.notices.append(f"{path.name}: no mask of that name in the mask folder; processed without a mask")
        try:
            one = engine.img2img(req, [path], mask, sub, save=out_dir is None)
        except UserError as err:
            result.errors.append((path.name, str(err)))
            log.warning("batch img2img: %s skipped: %s", path.name, err)
            continue
        result.notices.extend(f"{path.name}: {n}" for n in one.notices)
        if out_dir is not None:
            for image, infotext, name in zip(one.images, one.infotexts, names[path]):
                target = out_dir / name
                try:
                    _write(target, image, infotext, fmt)
                except OSError as err:
                    raise UserError(f"cannot write {str(target)!r}: {err}") from None
                result.outputs.append(target)
        else:
            result.outputs.extend(one.paths)
        if one.interrupted:
            result.interrupted = True
            break
        if len(one.images) == req.batch_size * req.n_iter:
            result.processed.append(path.name)
    if control is not None and not result.interrupted:
        control.update(fraction=1.0, text=f"batch done: {len(result.processed)} processed, "
                                          f"{len(result.skipped_existing)} already done, {len(result.errors)} failed")
    result.seconds = time.perf_counter() - start
    return result
