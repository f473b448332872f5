"""The k-diffusion family of samplers (the ones AUTOMATIC1111 runs), written as coroutines.

Each sampler is a generator: it yields `(x, sigma)` whenever it needs the denoiser's prediction of the
clean latents at that point, receives the (CFG-combined) prediction back through `send`, and returns
the final latents. The caller (`kscheduler.KDiffusionScheduler`) owns the UNet call, so a sampler is just
its update rule, the way the papers write it (Karras et al. 2022; Lu et al., DPM-Solver++ 2022), and the
same code serves diffusers' pipelines (one model evaluation per pipeline step) and a dry run that only
lists the sigmas evaluated. The noise of stochastic steps comes from `noise(sigma, sigma_next)`: the
per-image generators (ancestral samplers) or a Brownian tree (SDE samplers), as A1111 wires them.

Written here rather than imported from the k-diffusion package, which is a development (reference)
requirement only: the parity tests compare these against its sample_* functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np
import torch

Noise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Run = Generator[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Options:
    """Sampler settings A1111 exposes: eta (ancestral/SDE noise amount), churn for Euler/Heun/DPM2, and the
    DPM++ 2M SDE solver type."""
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    solver: str = "midpoint"


def _slope(x, sigma, denoised):
    return (x - denoised) / sigma


def _ancestral_split(sigma, sigma_next, eta):
    """(sigma_down, sigma_up): a step to sigma_next as a deterministic step to sigma_down plus fresh noise
    of std sigma_up (eta = 0: no noise)."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - up ** 2) ** 0.5, up


def _churn(x, sigmas, i, opt: Options, noise: Noise):
    """Karras' stochastic churn: raise the noise level by gamma before the step (gamma = 0 by default)."""
    sigma = sigmas[i]
    gamma = min(opt.s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if opt.s_tmin <= sigma <= opt.s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + noise(sigma, sigmas[i + 1]) * opt.s_noise * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


def _t(sigma):        # the half-log-SNR time the DPM-Solver++ samplers step in
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


def euler(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, opt, noise)
        denoised = yield x, sigma_hat
        x = x + _slope(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


def euler_ancestral(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        down, up = _ancestral_split(sigmas[i], sigmas[i + 1], opt.eta)
        x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * opt.s_noise * up
    return x


def heun(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, opt, noise)
        denoised = yield x, sigma_hat
        d = _slope(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:          # last step: plain Euler
            x = x + d * dt
            continue
        x_2 = x + d * dt
        denoised_2 = yield x_2, sigmas[i + 1]
        x = x + (d + _slope(x_2, sigmas[i + 1], denoised_2)) / 2 * dt
    return x


def dpm_2(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, opt, noise)
        denoised = yield x, sigma_hat
        d = _slope(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
            continue
        sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()   # midpoint in log sigma
        x_2 = x + d * (sigma_mid - sigma_hat)
        denoised_2 = yield x_2, sigma_mid
        x = x + _slope(x_2, sigma_mid, denoised_2) * (sigmas[i + 1] - sigma_hat)
    return x


def dpm_2_ancestral(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        down, up = _ancestral_split(sigmas[i], sigmas[i + 1], opt.eta)
        d = _slope(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
            continue
        sigma_mid = sigmas[i].log().lerp(down.log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigmas[i])
        denoised_2 = yield x_2, sigma_mid
        x = x + _slope(x_2, sigma_mid, denoised_2) * (down - sigmas[i])
        x = x + noise(sigmas[i], sigmas[i + 1]) * opt.s_noise * up
    return x


def _lms_coefficient(nodes: np.ndarray, i: int, j: int, order: int) -> float:
    """Integral over [nodes[i], nodes[i+1]] of the Lagrange basis polynomial of nodes[i-j] among
    nodes[i], nodes[i-1], ..., nodes[i-order+1] (exact: the polynomial is integrated, not sampled)."""
    others = [nodes[i - k] for k in range(order) if k != j]
    roots = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
    basis = roots / np.prod([nodes[i - j] - o for o in others])
    antiderivative = basis.integ()
    return float(antiderivative(nodes[i + 1]) - antiderivative(nodes[i]))


def lms(x, sigmas, noise: Noise, opt: Options, order: int = 4) -> Run:
    nodes = sigmas.detach().cpu().double().numpy()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        slopes = [_slope(x, sigmas[i], denoised)] + slopes[:order - 1]   # newest first
        used = min(i + 1, order)
        x = x + sum(_lms_coefficient(nodes, i, j, used) * slopes[j] for j in range(used))
    return x


def dpmpp_2s_ancestral(x, sigmas, noise: Noise, opt: Options) -> Run:
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        down, up = _ancestral_split(sigmas[i], sigmas[i + 1], opt.eta)
        if down == 0:
            x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = yield x_2, _sigma(s)
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * opt.s_noise * up
    return x


def dpmpp_sde(x, sigmas, noise: Noise, opt: Options, r: float = 0.5) -> Run:
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + _slope(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        # first stage: to the intermediate time s, with its share of the noise
        down, up = _ancestral_split(_sigma(t), _sigma(s), opt.eta)
        s_ = _t(down)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise(_sigma(t), _sigma(s)) * opt.s_noise * up
        denoised_2 = yield x_2, _sigma(s)
        # second stage: the whole step with the two predictions combined
        down, up = _ancestral_split(_sigma(t), _sigma(t_next), opt.eta)
        t_next_ = _t(down)
        fac = 1 / (2 * r)
        combined = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * combined
        x = x + noise(_sigma(t), _sigma(t_next)) * opt.s_noise * up
    return x


def dpmpp_2m(x, sigmas, noise: Noise, opt: Options) -> Run:
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if previous is not None and sigmas[i + 1] != 0:
            r = (t - _t(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        else:
            denoised_d = denoised
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        previous = denoised
    return x


def dpmpp_2m_sde(x, sigmas, noise: Noise, opt: Options) -> Run:
    previous = h_last = None
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = opt.eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if previous is not None:
                r = h_last / h
                if opt.solver == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - previous)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - previous)
            if opt.eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() \
                    * opt.s_noise
            h_last = h
        previous = denoised
    return x


def dpmpp_3m_sde(x, sigmas, noise: Noise, opt: Options) -> Run:
    d_1 = d_2 = h_1 = h_2 = None          # the two previous predictions and step sizes
    for i in range(len(sigmas) - 1):
        denoised = yield x, sigmas[i]
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (opt.eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if opt.eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * opt.eta).expm1().neg().sqrt() \
                    * opt.s_noise
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x


ALGORITHMS: dict[str, Callable[..., Run]] = {
    "euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral, "lms": lms, "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_sde": dpmpp_sde, "dpmpp_2m": dpmpp_2m, "dpmpp_2m_sde": dpmpp_2m_sde, "dpmpp_3m_sde": dpmpp_3m_sde,
}


def evaluated_sigmas(algorithm: str, sigmas: torch.Tensor, opt: Options) -> list[torch.Tensor]:
    """The sigma of every model evaluation, in order: a dry run on a scalar with zero predictions (the
    points a sampler evaluates depend on the schedule only, never on the latents)."""
    run = ALGORITHMS[algorithm](torch.zeros(()), sigmas, lambda s, s_next: torch.zeros(()), opt)
    points = []
    try:
        x, sigma = next(run)
        while True:
            points.append(sigma)
            x, sigma = run.send(torch.zeros(()))
    except StopIteration:
        return points
