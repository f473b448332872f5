"""Loading checkpoints offline: single-file (original LDM layout) and diffusers folders.

Single files go through diffusers' single-file loader with the component configs bundled in
`pipelines/models/configs/<family>/` and CLIP tokenizers built from open_clip's packaged vocabulary, with
`local_files_only=True`: nothing is fetched. The architecture is read from the safetensors header
first, so a wrong or broken file fails before any weights are read.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import detect
from .detect import Architecture
from ..core.errors import ModelLoadError
from .files import ModelFile, ModelPaths
from . import flux
from .tokenizers import clip_tokenizer

log = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
Progress = Callable[[str, float], None]

_PIPELINE_CLASSES = {
    (detect.SD1, False): "StableDiffusionPipeline",
    (detect.SD1, True): "StableDiffusionInpaintPipeline",
    (detect.SD2, False): "StableDiffusionPipeline",
    (detect.SD2, True): "StableDiffusionInpaintPipeline",
    (detect.SDXL, False): "StableDiffusionXLPipeline",
    (detect.SDXL, True): "StableDiffusionXLInpaintPipeline",
    (detect.SDXL_REFINER, False): "StableDiffusionXLImg2ImgPipeline",
    (detect.SDXL_REFINER, True): "StableDiffusionXLInpaintPipeline",
}


@dataclass
class LoadedCheckpoint:
    """A checkpoint's pipeline and what the rest of the engine needs to know about it."""

    info: ModelFile
    arch: Architecture
    pipe: object                        # the base diffusers pipeline (components shared by every mode)
    scheduler_config: dict              # the checkpoint's own scheduler config, base for every sampler
    load_seconds: float = 0.0
    vae_name: str | None = None         # None: the checkpoint's own VAE
    own_vae: object | None = None       # kept to restore after a VAE override
    modes: dict[str, object] = field(default_factory=dict)   # mode → pipeline sharing the components


def _noop(stage: str, fraction: float) -> None:
    pass


def sidecar_prediction_type(path: Path) -> str | None:
    """A1111-style sidecar config next to the checkpoint decides v-prediction when keys cannot.

    `model.yaml` (the original LDM config: `parameterization: "v"`) or `model.json`
    (`{"prediction_type": "v_prediction"}`).
    """
    base = path.with_suffix("")
    yaml_file = Path(str(base) + ".yaml")
    if yaml_file.is_file():
        text = yaml_file.read_text(errors="replace")
        # A full YAML parser is not needed for one well-known key of the LDM config.
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("parameterization:"):
                value = stripped.split(":", 1)[1].strip().strip("'\"")
                return "v_prediction" if value == "v" else "epsilon"
        return "epsilon"
    json_file = Path(str(base) + ".json")
    if json_file.is_file():
        try:
            value = json.loads(json_file.read_text()).get("prediction_type")
        except ValueError as err:
            raise ModelLoadError(f"{json_file.name}: invalid JSON ({err})") from None
        if value in ("epsilon", "v_prediction"):
            return value
    return None


def read_ckpt_state_dict(path: Path) -> dict:
    """A `.ckpt`/`.pt` is a pickle: only tensors and plain containers are accepted (weights_only)."""
    import torch

    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path.name}: not a PyTorch zip checkpoint (legacy or corrupt file); "
                             "convert it to .safetensors")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise ModelLoadError(
            f"{path.name}: refused — this pickle needs to run code to load ({str(err).splitlines()[0][:200]}). "
            "Only plain tensor checkpoints are loaded; use a .safetensors version of this model") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ModelLoadError(f"{path.name}: cannot read checkpoint ({err})") from None
    while isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path.name}: checkpoint holds no state dict")
    return sd


def inspect_checkpoint(mf: ModelFile, default_prediction: str = "epsilon") -> Architecture:
    """Architecture of a checkpoint without reading its weights (safetensors) or with mmap (.ckpt)."""
    if not mf.path.exists():
        raise ModelLoadError(f"{mf.name}: file not found ({mf.path}); press refresh to update the list")
    if mf.kind == "diffusers":
        return detect.detect_diffusers_folder(mf.path)
    if mf.kind == "safetensors":
        shapes = detect.shapes_from_header(detect.read_safetensors_header(mf.path))
    elif mf.kind == "gguf":
        shapes = detect.read_gguf_shapes(mf.path)
    else:
        shapes = {k: list(v.shape) for k, v in read_ckpt_state_dict(mf.path).items() if hasattr(v, "shape")}
    arch = detect.detect_architecture(shapes, mf.name)
    pred = sidecar_prediction_type(mf.path)
    if pred is None:  # the file's own markers (v-pred SDXL), else the setting for SD2's ambiguous files
        pred = default_prediction if arch.family == detect.SD2 else arch.prediction_type
    return dataclasses.replace(arch, prediction_type=pred)


def _derived_config_dir(config_root: Path, arch: Architecture, tmp: Path) -> Path:
    """The family's bundled config with the variant's changes (9-channel UNet, prediction type)."""
    src = config_root / arch.family
    if not (src / "model_index.json").is_file():
        raise ModelLoadError(f"no bundled config for {arch.label} in {src}")
    dst = tmp / arch.family
    shutil.copytree(src, dst)
    index = json.loads((dst / "model_index.json").read_text())
    index["_class_name"] = _PIPELINE_CLASSES[(arch.family, arch.inpaint)]
    (dst / "model_index.json").write_text(json.dumps(index))
    unet_cfg = dst / "unet" / "config.json"
    cfg = json.loads(unet_cfg.read_text())
    cfg["in_channels"] = 9 if arch.inpaint else 4
    unet_cfg.write_text(json.dumps(cfg))
    sched_cfg = dst / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched_cfg.read_text())
    cfg["prediction_type"] = arch.prediction_type
    if arch.zero_snr:
        # diffusers' rescale_betas_zero_snr (Lin et al. 2023, the schedule these models were trained on);
        # the paper's trailing timestep spacing so the first step starts from pure noise.
        cfg.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    sched_cfg.write_text(json.dumps(cfg))
    return dst


def _tokenizers(arch: Architecture) -> dict:
    if arch.family == detect.SD1:
        return {"tokenizer": clip_tokenizer()}
    if arch.family == detect.SD2:
        return {"tokenizer": clip_tokenizer("!")}
    if arch.family == detect.SDXL:
        return {"tokenizer": clip_tokenizer(), "tokenizer_2": clip_tokenizer("!")}
    return {"tokenizer": None, "text_encoder": None, "tokenizer_2": clip_tokenizer("!")}


def _pipeline_class(arch: Architecture):
    import diffusers

    return getattr(diffusers, _PIPELINE_CLASSES[(arch.family, arch.inpaint)])


def load_checkpoint(mf: ModelFile, *, arch: Architecture | None = None, config_root: Path = CONFIG_ROOT,
                    dtype=None, progress: Progress = _noop, paths: ModelPaths | None = None,
                    modules: tuple[Path, ...] = ()) -> LoadedCheckpoint:
    """Load a checkpoint into RAM (CPU) as a diffusers pipeline; the caller moves it to the device.
    `paths`: the models folders, where Flux finds the VAE / text encoders its file does not include."""
    start = time.perf_counter()
    progress("reading header", 0.0)
    arch = arch or inspect_checkpoint(mf)
    if arch.family == detect.FLUX:
        return _loaded(_load_with_errors(mf, arch, lambda: flux.load_flux(
            mf, arch, config_root=config_root, dtype=dtype, paths=paths, modules=modules)), mf, arch, start, progress)
    cls = _pipeline_class(arch)
    modules, _ = cls._get_signature_keys(cls)
    # No safety checker: A1111 ships none either, and it would need weights from the Hub.
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} \
        if "safety_checker" in modules else {}
    try:
        progress("loading weights", 0.1)
        if mf.kind == "diffusers":
            kwargs = dict(extra, local_files_only=True, torch_dtype=dtype)
            for name, tok in _tokenizers(arch).items():
                if tok is not None and not (mf.path / name).is_dir():
                    kwargs[name] = tok  # folders saved without tokenizer files still load offline
            pipe = cls.from_pretrained(mf.path, **kwargs)
        else:
            if mf.kind != "safetensors":
                read_ckpt_state_dict(mf.path)  # refuse code-carrying pickles before diffusers opens the file
            with tempfile.TemporaryDirectory(prefix="webui-config-") as tmp:
                cfg_dir = _derived_config_dir(Path(config_root), arch, Path(tmp))
                pipe = cls.from_single_file(str(mf.path), config=str(cfg_dir), local_files_only=True,
                                            torch_dtype=dtype, **extra, **_tokenizers(arch))
    except ModelLoadError:
        raise
    except Exception as err:  # diffusers/safetensors raise many types for a broken file; name the file
        log.exception("loading %s failed", mf.path)
        if "meta tensor" in str(err):  # weights absent from the file, found when diffusers casts them
            raise ModelLoadError(f"{mf.name}: incomplete {arch.label} checkpoint, some weights are missing; "
                                 "the file may be a partial download or not a full model") from err
        raise ModelLoadError(f"{mf.name}: could not be loaded as {arch.label} ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300] if str(err) else ''})") from err
    return _loaded(pipe, mf, arch, start, progress)


def _loaded(pipe, mf: ModelFile, arch: Architecture, start: float, progress: Progress) -> LoadedCheckpoint:
    _check_complete(pipe, mf, arch)
    progress("weights loaded", 0.9)
    pipe.set_progress_bar_config(disable=True)
    loaded = LoadedCheckpoint(mf, arch, pipe, dict(pipe.scheduler.config), time.perf_counter() - start)
    loaded.own_vae = pipe.vae
    return loaded


def _load_with_errors(mf: ModelFile, arch: Architecture, load: Callable[[], object]):
    """`load()`, with the many exception types diffusers/safetensors raise for a broken file named as one."""
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as err:
        log.exception("loading %s failed", mf.path)
        raise ModelLoadError(f"{mf.name}: could not be loaded as {arch.label} ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300] if str(err) else ''})") from err


def _check_complete(pipe, mf: ModelFile, arch: Architecture) -> None:
    """diffusers leaves weights that are absent from the file on the meta device without an error."""
    missing = []
    for name, module in pipe.components.items():
        if hasattr(module, "named_parameters"):
            missing += [f"{name}.{k}" for k, p in module.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ModelLoadError(f"{mf.name}: incomplete {arch.label} checkpoint, {len(missing)} weights missing "
                             f"(e.g. {missing[0]}); the file may be a partial or pruned-too-far model")


def load_vae(path: Path, family: str, *, config_root: Path = CONFIG_ROOT, dtype=None):
    """A standalone VAE file (A1111's models/VAE: .safetensors or .pt/.ckpt) for a checkpoint family."""
    from diffusers import AutoencoderKL

    try:
        if path.suffix != ".safetensors":
            state = read_ckpt_state_dict(path)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
        return AutoencoderKL.from_single_file(state, config=str(Path(config_root) / family), subfolder="vae",
                                              local_files_only=True, torch_dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{path.name}: could not be loaded as a VAE ({type(err).__name__}: {err})") from err


def from_pipe(cls, base, **components):
    """`cls.from_pipe(base, **components)`: a pipeline of another class sharing `base`'s loaded modules.

    diffusers' `from_pipe` ends with `new_pipeline.to(dtype=torch_dtype or torch.float32)`, which casts
    every shared module in place: a bf16/fp16 checkpoint silently became float32 (twice the memory) and
    an fp32 VAE kept for fp16 models would be halved by passing a dtype. Here that final cast is skipped
    (the caller's modules are already where and in the dtype the device policy put them)."""
    had_own = "to" in cls.__dict__
    own = cls.__dict__.get("to")
    cls.to = lambda self, *args, **kwargs: self
    try:
        return cls.from_pipe(base, **components)
    finally:
        if had_own:
            cls.to = own
        else:
            del cls.to
