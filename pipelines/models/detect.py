"""Checkpoint architecture from the safetensors header alone (key names and shapes, no tensor data).

diffusers has `infer_diffusers_model_type`, but it needs loaded tensors and compares absolute sizes
(e.g. context dim 1024 for SD2, a 10th resblock for SDXL), so it cannot classify a file before
reading it, nor the small test models; these rules use the structure of the key layout instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelLoadError

# Families, each with a bundled config folder pipelines/models/configs/<family>/.
SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"
FAMILY_LABELS = {SD1: "SD 1.x", SD2: "SD 2.x", SDXL: "SDXL", SDXL_REFINER: "SDXL refiner"}


@dataclass(frozen=True)
class Architecture:
    family: str
    inpaint: bool = False
    prediction_type: str = "epsilon"      # "v_prediction" for SD2 768-v models and v-pred SDXL
    zero_snr: bool = False                # trained on a zero-terminal-SNR schedule (NoobAI-XL v-pred)

    @property
    def label(self) -> str:
        extra = " inpainting" if self.inpaint else ""
        v = " (v-prediction)" if self.prediction_type == "v_prediction" else ""
        z = " zero terminal SNR" if self.zero_snr else ""
        return f"{FAMILY_LABELS[self.family]}{extra}{v}{z}"


def read_safetensors_header(path: str | Path) -> dict[str, dict]:
    """The header of a .safetensors file: {key: {dtype, shape}} (+ "__metadata__": {str: str}).

    Read with the safetensors library (`safe_open`: keys, shapes, dtypes, metadata; no tensor data).
    It also checks that the data section covers every tensor, so a truncated download fails here."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header: dict[str, dict] = {}
            for key in f.keys():
                view = f.get_slice(key)
                header[key] = {"dtype": view.get_dtype(), "shape": list(view.get_shape())}
            metadata = f.metadata()
    except OSError as err:
        raise ModelLoadError(f"{path.name}: cannot read the safetensors header ({err})") from None
    except Exception as err:  # safetensors' SafetensorError (not exported as a stable class)
        text = str(err)
        if "header too small" in text:
            raise ModelLoadError(f"{path.name}: file is empty or truncated (no safetensors header)") from None
        if "not fully covered" in text or "incomplete" in text:
            raise ModelLoadError(f"{path.name}: file is truncated (the header names more data than the file "
                                 "holds); download it again") from None
        raise ModelLoadError(f"{path.name}: not a safetensors file or malformed header ({text})") from None
    if metadata:
        header["__metadata__"] = dict(metadata)
    return header


def detect_architecture(shapes: dict[str, list[int]], name: str = "checkpoint") -> Architecture:
    """Classify a checkpoint in the original (LDM/A1111) key layout from key → shape."""
    unet_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if unet_in is None:
        raise ModelLoadError(
            f"{name}: not a Stable Diffusion checkpoint in the original layout (no UNet keys "
            "'model.diffusion_model.*'); LoRA, VAE, ControlNet and embedding files go in their own folders")
    inpaint = len(unet_in) > 1 and unet_in[1] == 9
    has_label_emb = "model.diffusion_model.label_emb.0.0.weight" in shapes
    if has_label_emb:
        if any(k.startswith("conditioner.embedders.1.") for k in shapes):
            return Architecture(SDXL, inpaint, *_sdxl_markers(shapes))
        if any(k.startswith("conditioner.embedders.0.model.") for k in shapes):
            return Architecture(SDXL_REFINER, inpaint)
        raise ModelLoadError(f"{name}: SDXL-style UNet without the matching text encoders; unsupported variant")
    if any(k.startswith("cond_stage_model.model.") for k in shapes):
        return Architecture(SD2, inpaint)
    if any(k.startswith("cond_stage_model.transformer.") for k in shapes):
        return Architecture(SD1, inpaint)
    raise ModelLoadError(f"{name}: UNet found but no known text encoder (SD1 CLIP, SD2 OpenCLIP or SDXL); "
                         "unsupported architecture")


def _sdxl_markers(shapes: dict[str, list[int]]) -> tuple[str, bool]:
    """v-prediction SDXL fine-tunes (NoobAI-XL v-pred and its merges) mark themselves with empty tensors
    named `v_pred` and `ztsnr` (zero terminal SNR) at the top of the state dict, as ComfyUI and Forge read
    them; without them an SDXL file is epsilon-prediction."""
    prediction = "v_prediction" if "v_pred" in shapes else "epsilon"
    return prediction, prediction == "v_prediction" and "ztsnr" in shapes


def shapes_from_header(header: dict[str, dict]) -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def detect_diffusers_folder(folder: Path) -> Architecture:
    """Architecture of a diffusers folder from its configs."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder.name}: not a usable diffusers folder ({err})") from None
    sched_file = folder / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_file.read_text()) if sched_file.exists() else {}
    pred = sched.get("prediction_type", "epsilon")
    zero_snr = bool(sched.get("rescale_betas_zero_snr", False))
    inpaint = unet.get("in_channels") == 9
    if "text_encoder_2" in index:
        family = SDXL if index.get("text_encoder") and index["text_encoder"][0] else SDXL_REFINER
    elif _text_encoder_act(folder) == "gelu":
        family = SD2  # OpenCLIP text encoder (gelu); SD1's OpenAI CLIP uses quick_gelu
    else:
        family = SD1
    return Architecture(family, inpaint, pred, zero_snr)


def _text_encoder_act(folder: Path) -> str | None:
    try:
        return json.loads((folder / "text_encoder" / "config.json").read_text()).get("hidden_act")
    except (OSError, ValueError):
        return None
