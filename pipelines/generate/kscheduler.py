"""A1111's sampling inside diffusers' pipelines: a scheduler that runs the k-diffusion samplers.

diffusers' pipelines (txt2img, img2img, inpaint, their SDXL and ControlNet variants) own the UNet call:
prompt embeddings, CFG, SDXL's added conditioning, ControlNet residuals, 9-channel inpainting inputs.
This scheduler plugs into that loop and does the rest the way AUTOMATIC1111 does (RNG source CPU):

- its `timesteps` are one entry per model evaluation of the sampler, the fractional timestep of each
  sigma (k-diffusion's CompVis denoiser interpolates; diffusers rounds and spaces them otherwise);
- `scale_model_input` gives the UNet x / sqrt(sigma^2 + 1) of the sampler's own fp32 latents (the
  pipeline's copy is only used for its dtype and batch layout), and `step` turns the guided model output
  (eps or v) into the denoised prediction (CFG is linear, so guiding the output or the prediction is the
  same) and sends it to the sampler coroutine (`ksamplers`), which answers with the next point;
- the starting latents are noise x sigma_max (txt2img) or init + noise x sigma_first (img2img); the
  noise of stochastic steps comes from the per-image generators (`ImageNoise`, switched to seed + ENSD)
  or, for the SDE samplers, from per-image Brownian trees seeded with the image seeds (`BrownianNoise`);
- with an inpainting mask the prediction is blended with the init latents outside it (A1111's
  CFGDenoiser), so the kept area converges to the original.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import ConfigMixin, SchedulerMixin

from . import ksamplers, samplers
from .schedules import TrainingSigmas


class ImageNoise:
    """A1111's ImageRNG after the first draw: one CPU generator per image, each drawing its own row."""

    def __init__(self, generators: Sequence[torch.Generator], shape: tuple[int, ...]):
        self.generators, self.shape = list(generators), tuple(shape)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


class BrownianNoise:
    """Noise of the SDE samplers: one Brownian tree per image over [sigma_min, sigma_max], seeded with the
    image's seed, so image k of a batch equals its seed generated alone (torchsde's BrownianTree; the
    increment between two sigmas is normalised to unit variance)."""

    def __init__(self, seeds: Sequence[int], shape: tuple[int, ...], sigma_min, sigma_max,
                 device: torch.device | str = "cpu"):
        import torchsde

        self.t0, self.t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        w0 = torch.zeros(shape, device=device)
        self.trees = [torchsde.BrownianTree(self.t0, w0, self.t1, entropy=int(s)) for s in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)   # the increment W(sigma_next) - W(sigma)
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (hi - lo).abs().sqrt()


@dataclass
class KRun:
    """What one sampling call needs: the sampler, its sigmas (already cut for img2img), the starting
    noise and latents, where its step noise comes from, and an optional inpainting blend."""
    algorithm: str
    sigmas: torch.Tensor                     # float32, decreasing, last 0 (or sigma_min for KL Optimal)
    noise: torch.Tensor                      # initial noise (batch, C, h, w), unit variance, on the UNet's device
    step_noise: object                       # ImageNoise | BrownianNoise: callable(sigma, sigma_next)
    options: ksamplers.Options = ksamplers.Options()
    init_latents: torch.Tensor | None = None   # img2img: the (encoded) init image; txt2img: None
    mask: torch.Tensor | None = None            # 1 = repaint (latent size); None: no blend
    noise_multiplier: float | None = None       # overrides the start: x = init + noise * this


class KDiffusionScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers-compatible scheduler whose steps are a k-diffusion sampler's model evaluations."""

    order = 1
    config_name = "scheduler_config.json"

    def __init__(self, base_config: dict, table: TrainingSigmas, prediction_type: str, run: KRun):
        self.register_to_config(**{k: v for k, v in base_config.items() if not k.startswith("_")})
        self.table = table
        self.v_prediction = prediction_type == "v_prediction"
        self.run = run
        self.points = ksamplers.evaluated_sigmas(run.algorithm, run.sigmas, run.options)
        self.timesteps = self.table.sigma_to_t(torch.stack(self.points))
        self.num_inference_steps = len(self.points)
        self.last_denoised: torch.Tensor | None = None
        self._begin()

    # ---------------------------------------------------------------- sampler state
    def _begin(self) -> None:
        run = self.run
        start = run.noise * (run.noise_multiplier if run.noise_multiplier is not None else run.sigmas[0])
        x = (start if run.init_latents is None else run.init_latents.to(start.device) + start).float()

        def step_noise(sigma, sigma_next):   # drawn where A1111 draws it, used where the latents are
            return run.step_noise(sigma, sigma_next).to(x.device, x.dtype)

        self._coroutine = ksamplers.ALGORITHMS[run.algorithm](x, run.sigmas, step_noise, run.options)
        self._x, self._sigma = next(self._coroutine)
        self._final: torch.Tensor | None = None

    @property
    def init_noise_sigma(self):
        return self.run.sigmas[0]

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs) -> None:
        """The evaluations are fixed by the run; `num_inference_steps` (the pipeline's) is ignored."""
        self.timesteps = self.timesteps.to(device) if device is not None else self.timesteps
        self._begin()

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Pipelines call this for img2img; the run's sigmas are already the schedule's tail."""

    def _current(self, like: torch.Tensor) -> torch.Tensor:
        x = self._final if self._final is not None else self._x
        return x.to(like.device, like.dtype).repeat(like.shape[0] // x.shape[0], 1, 1, 1)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return self._current(sample) / ((self._sigma ** 2 + 1) ** 0.5).to(sample.device, sample.dtype)

    def add_noise(self, original_samples, noise, timesteps):
        """Pipelines noise their own copy of the init latents with this; the sampler starts from its own
        (`KRun`), so only the shape matters (the 4-channel inpaint blend it feeds is also superseded)."""
        sigma = self.table.t_to_sigma(torch.as_tensor(timesteps).reshape(-1)[:1].cpu())
        return original_samples + noise * sigma.to(original_samples.device, original_samples.dtype)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True, **kwargs):
        x, sigma = self._x, self._sigma
        out = model_output.float().to(x.device)
        if self.v_prediction:   # CompVis v-denoiser scalings (sigma_data = 1)
            denoised = x / (sigma ** 2 + 1) - out * sigma / (sigma ** 2 + 1) ** 0.5
        else:
            denoised = x - out * sigma
        if self.run.mask is not None:
            m = self.run.mask.to(denoised.device, denoised.dtype)
            denoised = self.run.init_latents.to(denoised.device) * (1 - m) + m * denoised
        self.last_denoised = denoised
        try:
            self._x, self._sigma = self._coroutine.send(denoised)
        except StopIteration as done:
            self._final = done.value
        prev = self._current(sample)
        return (prev,) if not return_dict else _StepOutput(prev)

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class _StepOutput:
    prev_sample: torch.Tensor


@functools.lru_cache(maxsize=8)
def _training_sigmas(num_train_timesteps, beta_start, beta_end, beta_schedule, rescale_zero_snr) -> TrainingSigmas:
    return TrainingSigmas.from_config(dict(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                                           beta_end=beta_end, beta_schedule=beta_schedule,
                                           rescale_betas_zero_snr=rescale_zero_snr))


def training_sigmas(config: dict) -> TrainingSigmas:
    """The checkpoint's sigma table, from its scheduler config (cached: a handful of checkpoints)."""
    return _training_sigmas(int(config.get("num_train_timesteps", 1000)), float(config.get("beta_start", 0.00085)),
                            float(config.get("beta_end", 0.012)), config.get("beta_schedule", "scaled_linear"),
                            bool(config.get("rescale_betas_zero_snr", False)))


@dataclass(frozen=True)
class KSettings:
    """A request's settings that shape a k-diffusion run (A1111's sampler parameters and options)."""
    schedule: str = "Automatic"
    schedule_options: samplers.ScheduleOptions = samplers.ScheduleOptions()
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 0.0       # 0 = infinity (A1111)
    s_noise: float = 1.0
    ensd: int = 0             # eta noise seed delta: step noise from generators seeded with seed + ENSD
    sdxl: bool = False


def plan_sigmas(config: dict, sampler: samplers.Sampler, settings: KSettings, steps: int,
                run_steps: int | None = None) -> torch.Tensor:
    """The sigmas a job runs: the whole schedule (txt2img) or, with `run_steps` = t_enc + 1, its img2img /
    hires tail."""
    sigmas = samplers.k_sigmas(sampler, settings.schedule, steps, training_sigmas(config), sdxl=settings.sdxl,
                               options=settings.schedule_options)
    return sigmas if run_steps is None else samplers.img2img_tail(sigmas, steps, run_steps - 1)


def sampler_options(sampler: samplers.Sampler, settings: KSettings) -> ksamplers.Options:
    k = sampler.k
    if k.churn:   # A1111 hands s_churn/s_tmin/s_tmax/s_noise to Euler, Heun and DPM2 only
        return ksamplers.Options(eta=settings.eta, s_churn=settings.s_churn, s_tmin=settings.s_tmin,
                                 s_tmax=settings.s_tmax or float("inf"), s_noise=settings.s_noise, solver=k.solver)
    return ksamplers.Options(eta=settings.eta, solver=k.solver)


def evaluations(config: dict, sampler: samplers.Sampler, settings: KSettings, steps: int,
                run_steps: int | None = None) -> int:
    """Model evaluations (= pipeline callbacks) of a run."""
    sigmas = plan_sigmas(config, sampler, settings, steps, run_steps)
    return len(ksamplers.evaluated_sigmas(sampler.k.algorithm, sigmas, sampler_options(sampler, settings)))


def build(config: dict, sampler: samplers.Sampler, settings: KSettings, steps: int, *, noise: torch.Tensor,
          generators: Sequence[torch.Generator], seeds: Sequence[int], run_steps: int | None = None,
          init_latents: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> KDiffusionScheduler:
    """The scheduler for one batch. `generators` continue after the initial `noise` was drawn from them
    (per image); `run_steps`: img2img/hires (t_enc + 1 steps from `init_latents`)."""
    sigmas = plan_sigmas(config, sampler, settings, steps, run_steps)
    shape = tuple(noise.shape[1:])
    if sampler.k.brownian:
        full = plan_sigmas(config, sampler, settings, steps)
        positive = full[full > 0]
        step_noise = BrownianNoise(seeds, shape, positive.min(), full.max(), device=noise.device)
    else:
        if settings.ensd:
            generators = [torch.Generator("cpu").manual_seed(int(s) + int(settings.ensd)) for s in seeds]
        step_noise = ImageNoise(generators, shape)
    run = KRun(sampler.k.algorithm, sigmas, noise, step_noise, sampler_options(sampler, settings),
               init_latents=init_latents, mask=mask)
    scheduler = KDiffusionScheduler(config, training_sigmas(config), config.get("prediction_type", "epsilon"), run)
    scheduler.prompt_steps_multiplier = 2 if sampler.k.second_order else 1
    return scheduler
