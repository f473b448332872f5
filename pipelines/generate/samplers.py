"""A1111 sampler names: the k-diffusion samplers A1111 runs, and diffusers schedulers for the rest.

The samplers A1111 1.10 takes from k-diffusion (Euler a, Euler, LMS, Heun, DPM2, DPM2 a, DPM++ 2S a,
DPM++ 2M, DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE) run A1111's own computation (`ksamplers` through
`kscheduler`) on A1111's sigma schedules (`schedules`): same infotext, same latents. The others (DDIM,
PLMS, UniPC, LCM, TCD, DEIS) are a diffusers scheduler class plus constructor options, with a "schedule
type" as one more option where the class has it. Swapping either builds a new scheduler from the
checkpoint's scheduler config (its betas and prediction type): no weights move.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch

from ..core.errors import ParameterError
from . import schedules


@dataclass(frozen=True)
class KDiffusion:
    """How A1111 1.10 runs a k-diffusion sampler (its `samplers_k_diffusion` options)."""
    algorithm: str                      # ksamplers.ALGORITHMS key
    second_order: bool = False          # prompt schedules count 2 evaluations per step
    discard_penultimate: bool = False   # "discard next to last sigma": one step more, the next-to-last dropped
    brownian: bool = False              # SDE: noise from per-image Brownian trees
    uses_ensd: bool = False             # draws step noise from the image generators (ENSD applies)
    churn: bool = False                 # takes s_churn/s_tmin/s_tmax/s_noise
    solver: str = "midpoint"


@dataclass(frozen=True)
class Sampler:
    name: str
    cls_name: str
    options: dict = field(default_factory=dict)
    # What "Automatic" means for this sampler, as in A1111's k-diffusion table.
    default_schedule: str = "Automatic"
    aliases: tuple[str, ...] = ()
    k: KDiffusion | None = None         # A1111's k-diffusion computation (None: the diffusers class runs)


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2m",), KDiffusion("dpmpp_2m")),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",),
            KDiffusion("dpmpp_sde", second_order=True, brownian=True)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "Exponential", ("k_dpmpp_2m_sde",),
            KDiffusion("dpmpp_2m_sde", brownian=True)),
    Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}, "Exponential",
            ("k_dpmpp_2m_sde_heun",), KDiffusion("dpmpp_2m_sde", brownian=True, solver="heun")),
    Sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "Exponential", ("k_dpmpp_3m_sde",),
            KDiffusion("dpmpp_3m_sde", discard_penultimate=True, brownian=True)),
    Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2s_a",),
            KDiffusion("dpmpp_2s_ancestral", second_order=True, uses_ensd=True)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}, "Automatic", ("k_euler_a", "k_euler_ancestral"),
            KDiffusion("euler_ancestral", uses_ensd=True)),
    Sampler("Euler", "EulerDiscreteScheduler", {}, "Automatic", ("k_euler",), KDiffusion("euler", churn=True)),
    Sampler("LMS", "LMSDiscreteScheduler", {}, "Automatic", ("k_lms",), KDiffusion("lms")),
    Sampler("Heun", "HeunDiscreteScheduler", {}, "Automatic", ("k_heun",),
            KDiffusion("heun", second_order=True, churn=True)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",),
            KDiffusion("dpm_2", second_order=True, discard_penultimate=True, churn=True)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",),
            KDiffusion("dpm_2_ancestral", second_order=True, discard_penultimate=True, uses_ensd=True)),
    Sampler("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}, "Automatic", ("ddim",)),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, "Automatic", ("plms",)),
    Sampler("UniPC", "UniPCMultistepScheduler", {}, "Automatic", ("unipc",)),
    Sampler("DEIS", "DEISMultistepScheduler", {}, "Automatic", ("deis",)),
    Sampler("LCM", "LCMScheduler", {}, "Automatic", ("lcm",)),
    Sampler("TCD", "TCDScheduler", {}, "Automatic", ("tcd",)),
)

# Schedule type → scheduler constructor option, applied only where the class accepts it.
SCHEDULES: dict[str, tuple[str, object] | None] = {
    "Automatic": None,
    "Karras": ("use_karras_sigmas", True),
    "Exponential": ("use_exponential_sigmas", True),
    "Beta": ("use_beta_sigmas", True),
    "SGM Uniform": ("timestep_spacing", "trailing"),
}

SAMPLER_NAMES = tuple(s.name for s in SAMPLERS)
SCHEDULE_NAMES = schedules.SCHEDULE_TYPES
_BY_NAME = {s.name.lower(): s for s in SAMPLERS} | {a: s for s in SAMPLERS for a in s.aliases}


@functools.lru_cache(maxsize=None)
def _scheduler_class(cls_name: str):
    import diffusers

    return getattr(diffusers, cls_name)


@functools.lru_cache(maxsize=None)
def _accepted_options(cls_name: str) -> frozenset[str]:
    return frozenset(inspect.signature(_scheduler_class(cls_name).__init__).parameters)


def schedules_for(sampler: str | Sampler) -> list[str]:
    """Schedule types this sampler supports: all of A1111's for the k-diffusion samplers, otherwise those
    its diffusers class has ("Automatic" always)."""
    s = get_sampler(sampler) if isinstance(sampler, str) else sampler
    if s.k is not None:
        return list(SCHEDULE_NAMES)
    accepted = _accepted_options(s.cls_name)
    return [name for name, opt in SCHEDULES.items() if opt is None or opt[0] in accepted]


def get_sampler(name: str) -> Sampler:
    s = _BY_NAME.get(name.strip().lower())
    if s is None:
        raise ParameterError("sampler_name", f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}")
    return s


def resolve(name: str, schedule: str | None = None) -> tuple[Sampler, str]:
    """Accept A1111's old combined names ("DPM++ 2M Karras") as well as sampler + schedule type."""
    name = (name or "").strip()
    if name.lower() not in _BY_NAME:
        for sched in SCHEDULE_NAMES:
            if sched != "Automatic" and name.lower().endswith(" " + sched.lower()):
                base = name[: -len(sched) - 1]
                if base.lower() in _BY_NAME:
                    if schedule not in (None, "", "Automatic", sched):
                        raise ParameterError("scheduler", f"{name!r} already names the {sched} schedule")
                    name, schedule = base, sched
                    break
    sampler = get_sampler(name)
    schedule = schedule or "Automatic"
    if schedule not in SCHEDULE_NAMES:
        raise ParameterError("scheduler", f"unknown schedule type {schedule!r}; choose one of: {', '.join(SCHEDULE_NAMES)}")
    if schedule not in schedules_for(sampler):
        raise ParameterError("scheduler", f"sampler {sampler.name!r} does not support the {schedule} schedule; "
                             f"it supports: {', '.join(schedules_for(sampler))}")
    return sampler, schedule


def build_scheduler(base_config: dict, name: str, schedule: str | None = None):
    """A fresh scheduler for `name` + `schedule` from a checkpoint's scheduler config."""
    sampler, schedule = resolve(name, schedule)
    effective = sampler.default_schedule if schedule == "Automatic" else schedule
    options = dict(sampler.options)
    opt = SCHEDULES.get(effective)
    accepted = _accepted_options(sampler.cls_name)
    if opt is not None and opt[0] in accepted:
        options[opt[0]] = opt[1]
    # Options from another scheduler class in the base config (e.g. PNDM's skip_prk_steps) are ignored by
    # from_config; sigma-schedule flags are reset so they never leak from the checkpoint's own scheduler.
    for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if flag in accepted:
            options.setdefault(flag, False)
    cls = _scheduler_class(sampler.cls_name)
    return cls.from_config(dict(base_config), **options)


@dataclass(frozen=True)
class ScheduleOptions:
    """A1111's schedule overrides ("Schedule max sigma/min sigma/rho"; None = the model's and the
    schedule's own) and the Beta schedule's parameters."""
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    beta_alpha: float = 0.6
    beta_beta: float = 0.6


def k_sigmas(sampler: Sampler, schedule: str, steps: int, table: schedules.TrainingSigmas, *, sdxl: bool = False,
             options: ScheduleOptions = ScheduleOptions()) -> torch.Tensor:
    """The full sigma schedule of `steps` steps of a k-diffusion sampler, as A1111's get_sigmas makes it."""
    discard = sampler.k.discard_penultimate
    n = steps + 1 if discard else steps
    effective = sampler.default_schedule if schedule == "Automatic" else schedule
    if effective == "Automatic":
        sigmas = schedules.schedule_sigmas("Uniform", n, table)
    else:
        sigmas = schedules.schedule_sigmas(effective, n, table, sigma_min=options.sigma_min,
                                           sigma_max=options.sigma_max, rho=options.rho, sdxl=sdxl,
                                           beta_alpha=options.beta_alpha, beta_beta=options.beta_beta)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def img2img_tail(sigmas: torch.Tensor, steps: int, t_enc: int) -> torch.Tensor:
    """The part of a `steps`-step schedule img2img and hires fix run: t_enc + 1 steps (A1111)."""
    return sigmas[steps - t_enc - 1:]
