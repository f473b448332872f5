"""Noise schedules as AUTOMATIC1111 1.10 computes them (its "Schedule type" table), in sigmas.

A1111 samples with k-diffusion over a CompVis denoiser: the checkpoint's discrete training schedule
(alphas_cumprod, 1000 levels) becomes a table of sigmas, sigma_t = sqrt((1 - a_t) / a_t), and every
sampler walks a decreasing list of sigmas ending in 0. `TrainingSigmas` is that table (and the
sigma <-> timestep maps the UNet call needs: the timestep is interpolated, never rounded);
`schedule_sigmas` builds the list for a schedule type. Written here from the formulas (Karras et al.
2022, the schedules' papers and A1111's table of defaults) because diffusers' schedulers space and
round timesteps differently (the "leading" spacing of SD's config gives other images).
"""
from __future__ import annotations

import math

import numpy as np
import torch

# A1111's Schedule type labels, in its order. "Automatic" = the sampler's own default (see samplers.py).
SCHEDULE_TYPES = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                  "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")
DEFAULT_RHO = {"Karras": 7.0, "Polyexponential": 1.0}   # schedules with a rho ("Schedule rho" in infotext)

# Align Your Steps (NVIDIA's published 10-step sigmas for SD 1.5 and SDXL), interpolated for other counts.
_AYS = {"sd": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
        "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)}


def training_alphas_cumprod(config: dict) -> torch.Tensor:
    """The checkpoint's alphas_cumprod as the original (LDM/SGM) code builds it: float64, then float32."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    elif kind == "squaredcos_cap_v2":
        steps = np.arange(n + 1, dtype=np.float64) / n
        f = np.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    else:
        raise ValueError(f"unsupported beta_schedule {kind!r}")
    if config.get("rescale_betas_zero_snr"):   # zero-terminal-SNR models (NoobAI-XL v-pred; see models.detect)
        from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

        alphas_cumprod = torch.cumprod(1.0 - rescale_zero_terminal_snr(torch.tensor(betas)), 0).float()
        # sigma is infinite at exactly zero SNR; A1111 (rescale_zero_terminal_snr_abar) puts this value there instead
        alphas_cumprod[-1] = 4.8973451890853435e-08
        return alphas_cumprod
    return torch.tensor(np.cumprod(1.0 - betas), dtype=torch.float32)


class TrainingSigmas:
    """The model's training noise levels (ascending) and the timestep <-> sigma maps between them."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @classmethod
    def from_config(cls, config: dict) -> "TrainingSigmas":
        return cls(training_alphas_cumprod(config))

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep of each sigma: linear interpolation of log sigma between the two nearest
        training levels (clamped at both ends)."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        last = self.log_sigmas.shape[0] - 2
        low = (torch.searchsorted(self.log_sigmas, log_sigma.reshape(-1), right=True) - 1).clamp(0, last)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma.reshape(-1)) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).reshape(log_sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t).float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def uniform(self, n: int) -> torch.Tensor:
        """n sigmas at timesteps evenly spaced from the last training step to 0 (A1111's "Automatic")."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return self.t_to_sigma(t)


def _zero_terminated(values) -> torch.Tensor:
    sigmas = torch.as_tensor(values, dtype=torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _karras(n, sigma_min, sigma_max, rho):
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _zero_terminated((hi + ramp * (lo - hi)) ** rho)


def _polyexponential(n, sigma_min, sigma_max, rho):
    ramp = torch.linspace(1, 0, n) ** rho
    return _zero_terminated(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def _timestep_linspace(table: TrainingSigmas, n: int, sigma_min, sigma_max, drop_last: bool):
    """Sigmas at timesteps evenly spaced between those of sigma_max and sigma_min (SGM Uniform / Normal)."""
    start = table.sigma_to_t(torch.tensor(sigma_max))
    end = table.sigma_to_t(torch.tensor(sigma_min))
    t = torch.linspace(start.item(), end.item(), n + 1)[:-1] if drop_last else torch.linspace(start.item(), end.item(), n)
    return _zero_terminated([table.t_to_sigma(x) for x in t])


def _align_your_steps(n: int, sdxl: bool):
    known = np.array(_AYS["sdxl" if sdxl else "sd"])
    if n == len(known):
        return _zero_terminated(known)
    # log-linear interpolation of the published list to n points
    log_rev = np.log(known[::-1])
    interp = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(known)), log_rev)
    return _zero_terminated(np.exp(interp)[::-1].copy())


def _kl_optimal(n, sigma_min, sigma_max):
    a_min, a_max = torch.arctan(torch.tensor(sigma_min)), torch.arctan(torch.tensor(sigma_max))
    k = torch.arange(n + 1)
    return torch.tan(k / n * a_min + (1.0 - k / n) * a_max)   # ends at sigma_min, not 0 (A1111 does the same)


def _simple(table: TrainingSigmas, n: int):
    stride = len(table.sigmas) / n
    return _zero_terminated([float(table.sigmas[-(1 + int(i * stride))]) for i in range(n)])


def _ddim(table: TrainingSigmas, n: int):
    stride = max(len(table.sigmas) // n, 1)
    picked = [float(table.sigmas[i]) for i in range(1, len(table.sigmas), stride)]
    return _zero_terminated(picked[::-1])


def _beta(n, sigma_min, sigma_max, alpha, beta):
    from scipy import stats

    quantiles = [stats.beta.ppf(x, alpha, beta) for x in 1 - np.linspace(0, 1, n)]
    return _zero_terminated([sigma_min + q * (sigma_max - sigma_min) for q in quantiles])


def schedule_sigmas(schedule: str, n: int, table: TrainingSigmas, *, sigma_min: float | None = None,
                    sigma_max: float | None = None, rho: float | None = None, sdxl: bool = False,
                    beta_alpha: float = 0.6, beta_beta: float = 0.6) -> torch.Tensor:
    """The n+1 sigmas (last one 0, except KL Optimal) of a resolved schedule type (not "Automatic").
    `sigma_min`/`sigma_max`/`rho`: A1111's "Schedule min/max sigma" and "Schedule rho" (None: the model's
    own range and the schedule's default rho)."""
    lo = sigma_min or table.sigma_min
    hi = sigma_max or table.sigma_max
    if schedule == "Uniform":
        return _zero_terminated(table.uniform(n))
    if schedule == "Karras":
        return _karras(n, lo, hi, rho or DEFAULT_RHO["Karras"])
    if schedule == "Exponential":
        return _zero_terminated(torch.linspace(math.log(hi), math.log(lo), n).exp())
    if schedule == "Polyexponential":
        return _polyexponential(n, lo, hi, rho or DEFAULT_RHO["Polyexponential"])
    if schedule == "SGM Uniform":
        return _timestep_linspace(table, n, lo, hi, drop_last=True)
    if schedule == "Normal":
        return _timestep_linspace(table, n, lo, hi, drop_last=False)
    if schedule == "KL Optimal":
        return _kl_optimal(n, lo, hi)
    if schedule == "Align Your Steps":
        return _align_your_steps(n, sdxl)
    if schedule == "Simple":
        return _simple(table, n)
    if schedule == "DDIM":
        return _ddim(table, n)
    if schedule == "Beta":
        return _beta(n, lo, hi, beta_alpha, beta_beta)
    raise ValueError(f"unknown schedule type {schedule!r}")
