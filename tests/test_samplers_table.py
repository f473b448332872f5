"""The sampler table against AUTOMATIC1111's (modules/sd_samplers_kdiffusion.py, 1.9+): names, old aliases,
what "Automatic" means per sampler, the old combined names, and the diffusers scheduler each one builds.
Fast (no model): it is what the mutation run (tests/mutation.py) uses for samplers.py."""
from __future__ import annotations

import pytest

from pipelines.core.errors import ParameterError
from pipelines.generate import samplers

SD_SCHEDULE = {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
               "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
               "steps_offset": 1, "skip_prk_steps": True, "set_alpha_to_one": False, "clip_sample": False,
               "timestep_spacing": "leading"}

# A1111: (name, k-diffusion alias, the schedule its "Automatic" picks)
A1111 = [("DPM++ 2M", "k_dpmpp_2m", "Karras"), ("DPM++ SDE", "k_dpmpp_sde", "Karras"),
         ("DPM++ 2M SDE", "k_dpmpp_2m_sde", "Exponential"),
         ("DPM++ 2M SDE Heun", "k_dpmpp_2m_sde_heun", "Exponential"), ("DPM++ 3M SDE", "k_dpmpp_3m_sde", "Exponential"),
         ("DPM++ 2S a", "k_dpmpp_2s_a", "Karras"), ("Euler a", "k_euler_a", "Automatic"),
         ("Euler", "k_euler", "Automatic"), ("LMS", "k_lms", "Automatic"), ("Heun", "k_heun", "Automatic"),
         ("DPM2", "k_dpm_2", "Karras"), ("DPM2 a", "k_dpm_2_a", "Karras")]
CLASSES = {"DPM++ 2M": "DPMSolverMultistepScheduler", "DPM++ SDE": "DPMSolverSDEScheduler",
           "DPM++ 2M SDE": "DPMSolverMultistepScheduler", "DPM++ 2M SDE Heun": "DPMSolverMultistepScheduler",
           "DPM++ 3M SDE": "DPMSolverMultistepScheduler",
           "DPM++ 2S a": "DPMSolverSinglestepScheduler", "Euler a": "EulerAncestralDiscreteScheduler",
           "Euler": "EulerDiscreteScheduler", "LMS": "LMSDiscreteScheduler", "Heun": "HeunDiscreteScheduler",
           "DPM2": "KDPM2DiscreteScheduler", "DPM2 a": "KDPM2AncestralDiscreteScheduler", "DDIM": "DDIMScheduler",
           "PLMS": "PNDMScheduler", "UniPC": "UniPCMultistepScheduler", "LCM": "LCMScheduler", "TCD": "TCDScheduler",
           "DEIS": "DEISMultistepScheduler"}
FLAGS = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}


@pytest.mark.parametrize("name, alias, automatic", A1111)
def test_a1111_names_aliases_and_automatic_schedule(name, alias, automatic):
    sampler = samplers.get_sampler(name)
    assert sampler.name == name and samplers.get_sampler(alias) is sampler
    assert samplers.get_sampler(f"  {name.upper()} ") is sampler          # case and spaces, as A1111
    assert sampler.default_schedule == automatic
    sched = samplers.build_scheduler(SD_SCHEDULE, name, "Automatic")
    for schedule, flag in FLAGS.items():
        if flag in sched.config:
            assert sched.config[flag] is (schedule == automatic), (name, flag)


def test_every_sampler_builds_its_diffusers_class_with_its_options():
    assert set(samplers.SAMPLER_NAMES) == set(CLASSES)
    for name, cls in CLASSES.items():
        sched = samplers.build_scheduler(SD_SCHEDULE, name)
        assert type(sched).__name__ == cls, name
        assert sched.config.beta_schedule == "scaled_linear" and sched.config.num_train_timesteps == 1000
    two_m = samplers.build_scheduler(SD_SCHEDULE, "DPM++ 2M").config
    assert (two_m.algorithm_type, two_m.solver_order) == ("dpmsolver++", 2)
    sde = samplers.build_scheduler(SD_SCHEDULE, "DPM++ 2M SDE").config
    assert (sde.algorithm_type, sde.solver_order) == ("sde-dpmsolver++", 2)
    assert samplers.build_scheduler(SD_SCHEDULE, "DPM++ 3M SDE").config.solver_order == 3
    assert samplers.build_scheduler(SD_SCHEDULE, "DDIM").config.set_alpha_to_one is False
    assert samplers.build_scheduler(SD_SCHEDULE, "PLMS").config.skip_prk_steps is True


@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Beta"])
def test_schedule_types_set_their_flag_and_only_theirs(schedule):
    sched = samplers.build_scheduler(SD_SCHEDULE, "Euler", schedule)
    assert {flag: sched.config[flag] for flag in FLAGS.values()} == {f: f == FLAGS[schedule] for f in FLAGS.values()}
    assert sched.config.timestep_spacing == "leading"


def test_sgm_uniform_is_trailing_spacing_and_flags_never_leak_from_the_checkpoint():
    assert samplers.build_scheduler(SD_SCHEDULE, "Euler", "SGM Uniform").config.timestep_spacing == "trailing"
    leaky = dict(SD_SCHEDULE, use_karras_sigmas=True, use_exponential_sigmas=True)
    euler = samplers.build_scheduler(leaky, "Euler")
    assert not euler.config.use_karras_sigmas and not euler.config.use_exponential_sigmas
    assert samplers.build_scheduler(leaky, "Euler", "Karras").config.use_karras_sigmas


def test_schedules_offered():
    # the k-diffusion samplers take every A1111 schedule type; the diffusers-only ones what their class has
    for name, _, _ in A1111:
        assert samplers.schedules_for(name) == list(samplers.SCHEDULE_NAMES), name
    assert {"Automatic", "Karras", "Exponential", "Beta", "SGM Uniform"} <= set(samplers.SCHEDULE_NAMES)
    assert samplers.schedules_for("DDIM")[0] == "Automatic"
    assert "Karras" not in samplers.schedules_for("DDIM") and "Karras" in samplers.schedules_for("UniPC")
    assert samplers.schedules_for(samplers.get_sampler("Euler")) == samplers.schedules_for("Euler")


@pytest.mark.parametrize("given, name, schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"), ("Euler Karras", "Euler", "Karras"),
    ("dpm++ 2m sde exponential", "DPM++ 2M SDE", "Exponential"), ("Euler", "Euler", "Automatic"),
    ("DPM++ 2M SGM Uniform", "DPM++ 2M", "SGM Uniform"),
])
def test_old_combined_names(given, name, schedule):
    sampler, got = samplers.resolve(given)
    assert (sampler.name, got) == (name, schedule)
    assert samplers.resolve(given, schedule)[1] == schedule           # naming it twice agrees
    assert samplers.resolve(name, "")[1] == "Automatic"


def test_bad_names_and_conflicts_name_the_field():
    with pytest.raises(ParameterError, match="unknown sampler 'Bogus'") as err:
        samplers.resolve("Bogus")
    assert err.value.field == "sampler_name"
    with pytest.raises(ParameterError, match="unknown schedule type 'Weird'") as err:
        samplers.resolve("Euler", "Weird")
    assert err.value.field == "scheduler"
    with pytest.raises(ParameterError, match="already names the Karras schedule"):
        samplers.resolve("DPM++ 2M Karras", "Exponential")
    with pytest.raises(ParameterError, match="does not support the Karras schedule"):
        samplers.resolve("DDIM", "Karras")
    with pytest.raises(ParameterError, match="unknown sampler"):
        samplers.resolve("Bogus Karras")


def test_k_sigmas_are_k_diffusions_schedules():
    # the outside reference: k-diffusion's own schedule functions on the model's training sigmas
    import torch
    from k_diffusion import sampling

    from pipelines.generate import schedules

    table = schedules.TrainingSigmas.from_config(SD_SCHEDULE)
    lo, hi = table.sigma_min, table.sigma_max
    karras = samplers.k_sigmas(samplers.get_sampler("Euler"), "Karras", 6, table)
    assert torch.allclose(karras.double(), sampling.get_sigmas_karras(6, lo, hi, rho=7.0).double(), rtol=1e-5)
    automatic = samplers.k_sigmas(samplers.get_sampler("DPM++ 2M"), "Automatic", 5, table)      # = Karras
    assert torch.allclose(automatic.double(), sampling.get_sigmas_karras(5, lo, hi).double(), rtol=1e-5)
    # DPM2 discards the next-to-last sigma: one step more, then that one dropped (A1111)
    dpm2 = samplers.k_sigmas(samplers.get_sampler("DPM2"), "Karras", 4, table)
    full = sampling.get_sigmas_karras(5, lo, hi)
    assert torch.allclose(dpm2.double(), torch.cat([full[:-2], full[-1:]]).double(), rtol=1e-5)
    assert samplers.img2img_tail(karras, 6, 2).tolist() == karras[3:].tolist()            # t_enc + 1 steps
