"""Same infotext, same latents: the engine's k-diffusion samplers against A1111's computation.

The reference is built from the k-diffusion package itself (a development requirement): its
CompVisDenoiser / CompVisVDenoiser over the checkpoint's alphas_cumprod (made as the LDM code makes them:
float64 betas, then float32), its get_sigmas_* and sample_* functions, CFG on the denoised outputs, and the
noise A1111 feeds them (RNG source CPU): the initial noise and the ancestral noise from one CPU generator
per image, seeded with the image seed; a BrownianTreeNoiseSampler seeded with the image seeds for the
SDE samplers. The UNet is the tiny real-architecture one of the test models; the reference calls it
with the conditioning the engine gave it (recorded at its first call), so the comparison is of the
sampling alone, at the level of the final latents (fp32, relative error <= 1e-4).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

k_sampling = pytest.importorskip("k_diffusion.sampling")
k_external = pytest.importorskip("k_diffusion.external")

from pipelines.core.devices import make_policy  # noqa: E402
from pipelines.generate import samplers  # noqa: E402
from pipelines.generate.engine import Engine  # noqa: E402
from pipelines.models.files import ModelPaths, ModelRegistry  # noqa: E402
from pipelines.models.manager import PipelineManager  # noqa: E402
from pipelines.params.declarations import make_request  # noqa: E402

from conftest import FILES  # noqa: E402

TOLERANCE = 1e-4
K_FUNCS = {  # A1111 1.10's table: sampler -> k-diffusion function and extra options
    "Euler a": ("sample_euler_ancestral", {}), "Euler": ("sample_euler", {}), "LMS": ("sample_lms", {}),
    "Heun": ("sample_heun", {}), "DPM2": ("sample_dpm_2", {"discard": True}),
    "DPM2 a": ("sample_dpm_2_ancestral", {"discard": True}), "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", {}),
    "DPM++ 2M": ("sample_dpmpp_2m", {}), "DPM++ SDE": ("sample_dpmpp_sde", {"brownian": True}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {"brownian": True}),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", {"brownian": True, "solver_type": "heun"}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", {"brownian": True, "discard": True}),
}
DEFAULT_SCHEDULE = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential",
                    "DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential", "DPM++ 2S a": "Karras",
                    "DPM2": "Karras", "DPM2 a": "Karras"}


@pytest.fixture(scope="module")
def manager(tiny_models, tmp_path_factory):
    paths = ModelPaths(tiny_models.models, cache_dir=tmp_path_factory.mktemp("parity-cache"))
    return PipelineManager(ModelRegistry(paths), policy=make_policy("cpu", "fp32"), cache_size=3,
                           config_root=tiny_models.configs)


class Captured:
    """The engine's final latents (before decoding) and the conditioning of its first UNet call."""

    def __init__(self, monkeypatch, unet):
        self.latents = []
        self.cond = None
        original = Engine.final_decode

        def capture(engine, pipe, latents, req, result):
            self.latents.append(latents.detach().clone())
            return original(engine, pipe, latents, req, result)

        monkeypatch.setattr(Engine, "final_decode", capture)
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self.cond is None:
            self.cond = {k: v for k, v in kwargs.items() if k in ("encoder_hidden_states", "added_cond_kwargs")}


def ldm_alphas_cumprod(config) -> torch.Tensor:
    n = config["num_train_timesteps"]
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class CompVisUNet(torch.nn.Module):
    """The diffusers UNet behind the interface k-diffusion's CompVis denoisers call."""

    def __init__(self, unet, alphas_cumprod, cond):
        super().__init__()
        self.unet, self.alphas_cumprod, self.cond = unet, alphas_cumprod, cond

    def apply_model(self, x, t, rows):
        kwargs = {"encoder_hidden_states": self.cond["encoder_hidden_states"][rows]}
        if self.cond.get("added_cond_kwargs"):
            kwargs["added_cond_kwargs"] = {k: v[rows] for k, v in self.cond["added_cond_kwargs"].items()}
        return self.unet(x, t, **kwargs).sample


def reference_sigmas(schedule, n, denoiser, sdxl=False):
    """A1111 1.10's schedule table over the k-diffusion denoiser."""
    lo, hi = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    zero = torch.zeros(1)
    if schedule in ("Automatic", "Uniform"):
        return denoiser.get_sigmas(n)
    if schedule == "Karras":
        return k_sampling.get_sigmas_karras(n, lo, hi)
    if schedule == "Exponential":
        return k_sampling.get_sigmas_exponential(n, lo, hi)
    if schedule == "Polyexponential":
        return k_sampling.get_sigmas_polyexponential(n, lo, hi)
    if schedule in ("SGM Uniform", "Normal"):
        start, end = denoiser.sigma_to_t(torch.tensor(hi)), denoiser.sigma_to_t(torch.tensor(lo))
        ts = torch.linspace(start, end, n + 1)[:-1] if schedule == "SGM Uniform" else torch.linspace(start, end, n)
        return torch.cat([torch.stack([denoiser.t_to_sigma(t) for t in ts]), zero])
    if schedule == "KL Optimal":
        k = torch.arange(n + 1) / n
        return torch.tan(k * np.arctan(lo) + (1 - k) * np.arctan(hi)).float()
    if schedule == "Simple":
        table = denoiser.sigmas
        return torch.cat([torch.stack([table[-(1 + int(i * len(table) / n))] for i in range(n)]), zero])
    if schedule == "DDIM":
        table = denoiser.sigmas
        return torch.cat([table[1::max(len(table) // n, 1)].flip(0), zero])
    if schedule == "Beta":
        from scipy import stats
        q = torch.tensor([stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)], dtype=torch.float32)
        return torch.cat([lo + q * (hi - lo), zero])
    if schedule == "Align Your Steps":
        published = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029] if sdxl else \
            [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
        logs = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, 11), np.log(published[::-1]))
        return torch.cat([torch.tensor(np.exp(logs)[::-1].copy(), dtype=torch.float32), zero])
    raise AssertionError(schedule)


def reference_latents(loaded, cond, sampler, schedule, steps, seeds, cfg, *, ensd=0, init=None, t_enc=None,
                      full_steps=None, eta=1.0, noise_shape=None, subseeds=None, subseed_strength=0.0):
    """A1111's k-diffusion sampling of one batch (txt2img, or img2img/hires from `init`)."""
    from pipelines.generate.noise import slerp

    config = loaded.scheduler_config
    vpred = config.get("prediction_type") == "v_prediction"
    model = CompVisUNet(loaded.pipe.unet, ldm_alphas_cumprod(config), cond)
    denoiser = (k_external.CompVisVDenoiser if vpred else k_external.CompVisDenoiser)(model)
    func, opts = K_FUNCS[sampler]
    n = full_steps or steps
    sched = DEFAULT_SCHEDULE.get(sampler, "Uniform") if schedule == "Automatic" else schedule
    sigmas = reference_sigmas(sched, n + 1 if opts.get("discard") else n, denoiser,
                              sdxl="add_text_embeds" in str(cond.keys()) or bool(cond.get("added_cond_kwargs")))
    if opts.get("discard"):
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    batch = len(seeds)

    def cfg_model(x, sigma, **_):
        x_in, s_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        out = denoiser(x_in, s_in, rows=slice(0, 2 * batch))   # rows: [uncond..., cond...] as recorded
        uncond, cond_out = out.chunk(2)
        return uncond + (cond_out - uncond) * cfg

    gens, rows = [], []
    for k, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        row = torch.randn(noise_shape, generator=g)
        if subseed_strength:
            row = slerp(subseed_strength, row, torch.randn(noise_shape, generator=torch.Generator().manual_seed(subseeds[k])))
        rows.append(row)
        gens.append(torch.Generator().manual_seed(seed + ensd) if ensd else g)
    noise = torch.stack(rows)
    if init is None:
        x = noise * sigmas[0]
        run_sigmas = sigmas
    else:
        run_sigmas = sigmas[n - t_enc - 1:]
        x = init + noise * run_sigmas[0]
    kwargs = {}
    params = __import__("inspect").signature(getattr(k_sampling, func)).parameters
    if "noise_sampler" in params:
        if opts.get("brownian"):
            positive = sigmas[sigmas > 0]
            kwargs["noise_sampler"] = k_sampling.BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seeds)
        else:
            kwargs["noise_sampler"] = lambda s, sn: torch.stack([torch.randn(noise_shape, generator=g) for g in gens])
    if "eta" in params:
        kwargs["eta"] = eta
    if "solver_type" in opts:
        kwargs["solver_type"] = opts["solver_type"]
    with torch.no_grad():
        return getattr(k_sampling, func)(cfg_model, x, run_sigmas, disable=True, **kwargs)


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _engine_txt2img(manager, monkeypatch, checkpoint, **values):
    manager.load(FILES[checkpoint])
    loaded = manager.require_active()
    req = make_request({**dict(prompt="a cat", negative_prompt="blurry", steps=3, width=64, height=64, seed=11,
                               cfg_scale=6.0), **values})
    captured = Captured(monkeypatch, loaded.pipe.unet)
    try:
        Engine(manager, None, preview_every=0).txt2img(req, save=False)
    finally:
        captured.handle.remove()
    return loaded, req, captured


# Every sampler on its default schedule, and every schedule type on DPM++ 2M, through the engine; the
# sampler x schedule matrix is then closed at the level of the sigmas (a sampler only ever sees its sigmas).
SAMPLER_CASES = [(s, "Automatic") for s in K_FUNCS]
SCHEDULE_CASES = [("DPM++ 2M", sched) for sched in samplers.SCHEDULE_NAMES if sched not in ("Automatic", "Karras")]


@pytest.mark.parametrize("sampler,schedule", SAMPLER_CASES + SCHEDULE_CASES,
                         ids=[f"{a}-{b}" for a, b in SAMPLER_CASES + SCHEDULE_CASES])
def test_txt2img_final_latents_match_a1111(manager, monkeypatch, sampler, schedule):
    loaded, req, captured = _engine_txt2img(manager, monkeypatch, "sd1", sampler_name=sampler, scheduler=schedule)
    ref = reference_latents(loaded, captured.cond, sampler, schedule, 3, [11], 6.0, noise_shape=(4, 8, 8))
    assert _rel(captured.latents[0], ref) <= TOLERANCE


def test_every_sampler_schedule_pair_gets_a1111_sigmas(manager):
    from pipelines.generate import kscheduler

    manager.load(FILES["sd1"])
    config = manager.require_active().scheduler_config
    denoiser = k_external.CompVisDenoiser(CompVisUNet(None, ldm_alphas_cumprod(config), None))
    for name in K_FUNCS:
        sampler = samplers.get_sampler(name)
        for schedule in samplers.schedules_for(name):
            for steps in (3, 10, 20):
                ours = kscheduler.plan_sigmas(config, sampler, kscheduler.KSettings(schedule=schedule), steps)
                sched = DEFAULT_SCHEDULE.get(name, "Uniform") if schedule == "Automatic" else schedule
                discard = K_FUNCS[name][1].get("discard")
                ref = reference_sigmas(sched, steps + 1 if discard else steps, denoiser)
                if discard:
                    ref = torch.cat([ref[:-2], ref[-1:]])
                assert ours.shape == ref.shape and torch.allclose(ours, ref.float(), rtol=1e-5, atol=1e-6), \
                    (name, schedule, steps)


@pytest.mark.parametrize("checkpoint,sampler", [("sd2", "Euler a"), ("sd2", "DPM++ 2M SDE"), ("sdxl", "DPM++ 2M"),
                                                ("sdxl", "Euler a")])
def test_v_prediction_and_sdxl_match_a1111(manager, monkeypatch, checkpoint, sampler):
    loaded, req, captured = _engine_txt2img(manager, monkeypatch, checkpoint, sampler_name=sampler)
    ref = reference_latents(loaded, captured.cond, sampler, "Automatic", 3, [11], 6.0, noise_shape=(4, 8, 8))
    assert _rel(captured.latents[0], ref) <= TOLERANCE


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE"])
def test_batch_of_two_equals_each_seed_alone(manager, monkeypatch, sampler):
    loaded, req, batch = _engine_txt2img(manager, monkeypatch, "sd1", sampler_name=sampler, batch_size=2, seed=40)
    for k in range(2):
        _, _, single = _engine_txt2img(manager, monkeypatch, "sd1", sampler_name=sampler, seed=40 + k)
        assert _rel(batch.latents[0][k:k + 1], single.latents[0]) <= TOLERANCE


def test_ensd_switches_the_step_noise_to_seed_plus_delta(manager, monkeypatch):
    loaded, req, captured = _engine_txt2img(manager, monkeypatch, "sd1", sampler_name="Euler a",
                                            eta_noise_seed_delta=31337)
    ref = reference_latents(loaded, captured.cond, "Euler a", "Automatic", 3, [11], 6.0, noise_shape=(4, 8, 8),
                            ensd=31337)
    assert _rel(captured.latents[0], ref) <= TOLERANCE


@pytest.mark.parametrize("sampler,strength", [("Euler a", 0.6), ("DPM++ 2M SDE", 0.5), ("Heun", 1.0)])
def test_img2img_runs_a1111s_tail_of_the_schedule(manager, monkeypatch, sampler, strength):
    from PIL import Image

    from pipelines.generate import kscheduler

    manager.load(FILES["sd1"])
    loaded = manager.require_active()
    init = {}
    build = kscheduler.build

    def recording_build(*args, **kwargs):
        init.setdefault("latents", kwargs["init_latents"].detach().clone())
        return build(*args, **kwargs)

    monkeypatch.setattr(kscheduler, "build", recording_build)
    captured = Captured(monkeypatch, loaded.pipe.unet)
    steps = 4
    req = make_request(dict(prompt="a cat", negative_prompt="blurry", steps=steps, width=64, height=64, seed=7,
                            cfg_scale=5.0, sampler_name=sampler, denoising_strength=strength))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    try:
        Engine(manager, None, preview_every=0).img2img(req, [image], save=False)
    finally:
        captured.handle.remove()
    t_enc = int(min(strength, 0.999) * steps)
    ref = reference_latents(loaded, captured.cond, sampler, "Automatic", steps, [7], 5.0, init=init["latents"],
                            t_enc=t_enc, noise_shape=(4, 8, 8))
    assert _rel(captured.latents[0], ref) <= TOLERANCE


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE"])
def test_hires_second_pass_is_a1111s(manager, monkeypatch, sampler):
    steps, hr_steps, strength = 3, 2, 0.55
    loaded, req, captured = _engine_txt2img(manager, monkeypatch, "sd1", sampler_name=sampler, steps=steps,
                                            enable_hr=True, hr_scale=1.5, hr_second_pass_steps=hr_steps,
                                            denoising_strength=strength, hr_upscaler="Latent")
    first = reference_latents(loaded, captured.cond, sampler, "Automatic", steps, [11], 6.0, noise_shape=(4, 8, 8))
    upscaled = torch.nn.functional.interpolate(first, size=(12, 12), mode="bilinear")
    total = int(hr_steps / min(strength, 0.999))
    ref = reference_latents(loaded, captured.cond, sampler, "Automatic", hr_steps, [11], 6.0, init=upscaled,
                            t_enc=hr_steps - 1, full_steps=total, noise_shape=(4, 12, 12))
    assert _rel(captured.latents[0], ref) <= TOLERANCE


def test_zero_terminal_snr_checkpoints_get_their_own_sigma_table():
    from pipelines.generate import kscheduler

    assert kscheduler.training_sigmas({"rescale_betas_zero_snr": True}).sigma_max == pytest.approx(4518.8, abs=0.5)
    assert kscheduler.training_sigmas({}).sigma_max == pytest.approx(14.61, abs=0.01)


def test_rng_source_a1111_offers_but_we_cannot_is_a_notice(manager, monkeypatch):
    _, req, _ = _engine_txt2img(manager, monkeypatch, "sd1", randn_source="GPU")
    result = Engine(manager, None, preview_every=0).txt2img(req, save=False)
    assert any(n.startswith("RNG: GPU") for n in result.notices) and "RNG: GPU" in result.infotexts[0]
