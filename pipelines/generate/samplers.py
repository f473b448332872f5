"""A1111 sampler names on diffusers scheduler classes.

A sampler is a diffusers scheduler class plus constructor options; a "schedule type" (A1111 1.9+:
Automatic, Karras, Exponential, ...) is one more option on top. Swapping either builds a new
scheduler from the checkpoint's scheduler config (its betas and prediction type): no weights move.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

from ..core.errors import ParameterError


@dataclass(frozen=True)
class Sampler:
    name: str
    cls_name: str
    options: dict = field(default_factory=dict)
    # What "Automatic" means for this sampler, as in A1111's k-diffusion table.
    default_schedule: str = "Automatic"
    aliases: tuple[str, ...] = ()


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2m",)),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "Exponential", ("k_dpmpp_2m_sde",)),
    Sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "Exponential", ("k_dpmpp_3m_sde",)),
    Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2s_a",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}, "Automatic", ("k_euler_a", "k_euler_ancestral")),
    Sampler("Euler", "EulerDiscreteScheduler", {}, "Automatic", ("k_euler",)),
    Sampler("LMS", "LMSDiscreteScheduler", {}, "Automatic", ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", {}, "Automatic", ("k_heun",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",)),
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
SCHEDULE_NAMES = tuple(SCHEDULES)
_BY_NAME = {s.name.lower(): s for s in SAMPLERS} | {a: s for s in SAMPLERS for a in s.aliases}


@functools.lru_cache(maxsize=None)
def _scheduler_class(cls_name: str):
    import diffusers

    return getattr(diffusers, cls_name)


@functools.lru_cache(maxsize=None)
def _accepted_options(cls_name: str) -> frozenset[str]:
    return frozenset(inspect.signature(_scheduler_class(cls_name).__init__).parameters)


def schedules_for(sampler: str | Sampler) -> list[str]:
    """Schedule types this sampler's diffusers class supports ("Automatic" always)."""
    s = get_sampler(sampler) if isinstance(sampler, str) else sampler
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
        for sched in SCHEDULES:
            if sched != "Automatic" and name.lower().endswith(" " + sched.lower()):
                base = name[: -len(sched) - 1]
                if base.lower() in _BY_NAME:
                    if schedule not in (None, "", "Automatic", sched):
                        raise ParameterError("scheduler", f"{name!r} already names the {sched} schedule")
                    name, schedule = base, sched
                    break
    sampler = get_sampler(name)
    schedule = schedule or "Automatic"
    if schedule not in SCHEDULES:
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
    opt = SCHEDULES[effective]
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
