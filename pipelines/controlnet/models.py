"""ControlNet: models on disk, a cache of loaded ones, units, and the per-job glue to diffusers.

Models
    `ControlNetRegistry` lists `models/ControlNet/` (and A1111 `--models-dir` layouts): single files
    (`.safetensors`, `.pth`/`.pt`/`.ckpt` through the safe loader) in the original layout
    (`control_model.*`, lllyasviel's SD1.5 files) or with diffusers keys (SDXL files such as
    `diffusers_xl_canny_full.safetensors`), and diffusers folders (`config.json` + weights). Titles are
    sd-webui-controlnet's `name [legacy hash]`. The architecture is read from the header: cross-attention
    width of the first `attn2.to_k` and the SDXL `label_emb` / `add_embedding`; only models matching the
    active checkpoint are offered (`choices`), with a note saying why others are hidden.
    Single files load offline with the bundled `configs/controlnet_{sd15,sd21,sdxl}/config.json`, adjusted
    to what the file holds (conditioning channels, transformer depth per level, linear projections,
    global pooling for shuffle models) through `ControlNetModel.from_single_file(config=...)`.

Cache and pipelines
    `ControlNetCache` (owned by the PipelineManager) keeps a few loaded ControlNets (LRU). A job wraps the
    units' modules in one `MultiControlNetModel` subclass and registers it on a ControlNet pipeline built
    once per checkpoint and mode with `from_pipe` from the already-loaded components: enabling, disabling
    or swapping ControlNets never reloads the checkpoint.

Control modes (as sd-webui-controlnet implements them, per unit)
    Balanced: the residuals x weight, on the conditional and unconditional halves of the CFG batch.
    My prompt is more important: "soft injection", residuals scaled from 0.1 (shallowest) to 1 (middle
        block) on a log scale (diffusers' guess-mode scales; sd-webui-controlnet's 0.825**(12-i) is the
        same curve for SD1.5), on both halves.
    ControlNet is more important: soft injection on the conditional half only (the unconditional half
        gets none: the ControlNet steers as strongly as CFG allows; this is diffusers' guess mode).
    Models with global pooling (shuffle) always act on the conditional half only, as in the extension.

Lists
    diffusers silently truncates a per-unit list that is shorter than the number of ControlNets; every
    list that reaches a pipeline here goes through `check_lists`, which refuses any length mismatch.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..models import detect
from ..core.errors import ModelLoadError, ParameterError, UserError
from ..models.hashing import legacy_hash
from ..models.loading import from_pipe
from .preprocessors import (
    CROP_AND_RESIZE, RESIZE_MODES, Annotators, Detected, fit_to_size, get_preprocessor, run_preprocessor,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..core.devices import DevicePolicy
    from ..models.manager import PipelineManager
    from ..models.files import ModelPaths

log = logging.getLogger(__name__)

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
BALANCED, PROMPT_MORE, CONTROL_MORE = CONTROL_MODES
MODEL_EXTS = (".safetensors", ".pth", ".pt", ".ckpt")
CONFIG_DIRS = {detect.SD1: "controlnet_sd15", detect.SD2: "controlnet_sd21", detect.SDXL: "controlnet_sdxl"}
_RESIZE_ALIASES = {
    "inner fit (scale to fit)": CROP_AND_RESIZE, "scale to fit (inner fit)": CROP_AND_RESIZE,
    "outer fit (shrink to fit)": "Resize and Fill", "envelope (outer fit)": "Resize and Fill",
    "just resize (latent upscale)": "Just Resize",
}
_CONTROL_ALIASES = {"balanced": BALANCED, "prompt": PROMPT_MORE, "control": CONTROL_MORE, "controlnet": CONTROL_MORE}


# ============================================================================================ units

def resize_mode_of(value: Any) -> str:
    """'Crop and Resize', an index (0 Just Resize, 1 Crop and Resize, 2 Resize and Fill, 3 = 0) or an
    older name ('Inner Fit (Scale to Fit)', 'Envelope (Outer Fit)', ...)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)) and float(value).is_integer():
        i = int(value)
        if i == 3:
            return RESIZE_MODES[0]
        if 0 <= i < len(RESIZE_MODES):
            return RESIZE_MODES[i]
        raise ValueError(value)
    text = str(value).strip()
    if text.isdigit():
        return resize_mode_of(int(text))
    for mode in RESIZE_MODES:
        if text.lower() == mode.lower():
            return mode
    if text.lower() in _RESIZE_ALIASES:
        return _RESIZE_ALIASES[text.lower()]
    raise ValueError(value)


def control_mode_of(value: Any) -> str:
    """'Balanced' / 'My prompt is more important' / 'ControlNet is more important' or 0 / 1 / 2."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < len(CONTROL_MODES):
        return CONTROL_MODES[int(value)]
    text = str(value).strip()
    if text.isdigit():
        return control_mode_of(int(text))
    for mode in CONTROL_MODES:
        if text.lower() == mode.lower():
            return mode
    if text.lower() in _CONTROL_ALIASES:
        return _CONTROL_ALIASES[text.lower()]
    raise ValueError(value)


@dataclass
class ControlNetUnit:
    """One ControlNet unit, in sd-webui-controlnet's terms (field names are its API names).

    `image`: PIL image or HWC array; None reuses the img2img/inpaint input image. `model`: a title
    ('control_v11p_sd15_canny [d14c016b]') or name; 'None' = no model (the unit is skipped).
    `processor_res`, `threshold_a`, `threshold_b`: the preprocessor's sliders (-1 = its default).
    """

    enabled: bool = True
    image: Any = None
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    resize_mode: str = CROP_AND_RESIZE
    processor_res: float = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = BALANCED

    def checked(self, index: int = 0) -> ControlNetUnit:
        """A normalised copy (canonical module / mode names, slider defaults filled in); ParameterError
        names the field (`controlnet[0].weight`) when a value is out of range."""
        p = f"controlnet[{index}]."
        try:
            pre = get_preprocessor(self.module)
        except UserError as err:
            raise ParameterError(p + "module", str(err)) from None
        weight = _number(p + "weight", self.weight, 0.0, 2.0)
        start = _number(p + "guidance_start", self.guidance_start, 0.0, 1.0)
        end = _number(p + "guidance_end", self.guidance_end, 0.0, 1.0)
        if start > end:
            raise ParameterError(p + "guidance_start", f"{start:g} is after guidance_end {end:g}")
        try:
            resize = resize_mode_of(self.resize_mode)
        except ValueError:
            raise ParameterError(p + "resize_mode", f"{self.resize_mode!r} is not one of: "
                                 f"{', '.join(RESIZE_MODES)} (or 0, 1, 2)") from None
        try:
            mode = control_mode_of(self.control_mode)
        except ValueError:
            raise ParameterError(p + "control_mode", f"{self.control_mode!r} is not one of: "
                                 f"{', '.join(CONTROL_MODES)} (or 0, 1, 2)") from None
        res = _number(p + "processor_res", self.processor_res, -1, 1e9)
        a = _number(p + "threshold_a", self.threshold_a, -1e9, 1e9)
        b = _number(p + "threshold_b", self.threshold_b, -1e9, 1e9)
        res, a, b = pre.resolve(res, a, b, field_prefix=p)
        return replace(self, enabled=bool(self.enabled), module=pre.name, model=str(self.model or "None").strip(),
                       weight=weight, guidance_start=start, guidance_end=end, resize_mode=resize, control_mode=mode,
                       processor_res=res, threshold_a=a, threshold_b=b, pixel_perfect=bool(self.pixel_perfect))

    @property
    def has_model(self) -> bool:
        return bool(self.model) and self.model.strip().lower() != "none"


def _number(field_name: str, value: Any, lo: float, hi: float) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        x = float(value)
        if x != x:
            raise ValueError(value)
    except (TypeError, ValueError):
        raise ParameterError(field_name, f"expected a number, got {value!r}") from None
    if not lo <= x <= hi:
        raise ParameterError(field_name, f"{x:g} is outside {lo:g}..{hi:g}")
    return x


def _flag(field_name: str, value: Any) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ParameterError(field_name, f"expected true or false, got {value!r}")


_API_FIELDS = {"enabled", "image", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
               "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode"}
_API_ALIASES = {"input_image": "image", "guidance": "guidance_end"}
_API_IGNORED = {"lowvram", "low_vram", "mask", "mask_image", "is_ui", "input_mode", "batch_images", "output_dir",
                "loopback", "save_detected_map", "hr_option", "advanced_weighting", "inpaint_crop_input_image",
                "effective_region_mask", "pulid_mode", "ipadapter_input", "animatediff_batch", "batch_image_files",
                "batch_keyframe_idx", "batch_mask_dir", "batch_modifiers", "union_control_type"}


def units_from_api(args: Sequence[dict], decode_image: Callable[[str], Any] | None = None) -> list[ControlNetUnit]:
    """sd-webui-controlnet API units (`alwayson_scripts.controlnet.args`) → checked ControlNetUnits.

    Accepts its field names and older aliases (`input_image`, `guidance`, `guessmode`), resize/control
    modes as names or indices, and `image` as a decoded image, `{"image": ..., "mask": ...}` or
    `[image, mask]`; base64 strings are passed to `decode_image` (the API layer's decoder). A unit
    without `enabled` is enabled (as API clients expect). Unknown fields raise ParameterError.
    """
    if not isinstance(args, (list, tuple)):
        raise ParameterError("controlnet", "expected a list of ControlNet units")
    units = []
    for i, raw in enumerate(args):
        p = f"controlnet[{i}]"
        if not isinstance(raw, dict):
            raise ParameterError(p, f"expected an object, got {type(raw).__name__}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = _API_ALIASES.get(key, key)
            if name == "guessmode":
                if value is not None and "control_mode" not in raw:
                    values["control_mode"] = CONTROL_MORE if _flag(f"{p}.guessmode", value) else BALANCED
                continue
            if name in _API_IGNORED:
                continue
            if name not in _API_FIELDS:
                raise ParameterError(f"{p}.{key}", "unknown ControlNet unit field")
            if name in values and key != name:
                continue  # the canonical name wins over its alias
            values[name] = value
        if "enabled" in values:
            values["enabled"] = _flag(f"{p}.enabled", values["enabled"])
        if "pixel_perfect" in values:
            values["pixel_perfect"] = _flag(f"{p}.pixel_perfect", values["pixel_perfect"])
        for key in ("module", "model"):
            if key in values and values[key] is not None and not isinstance(values[key], str):
                raise ParameterError(f"{p}.{key}", f"expected a string, got {values[key]!r}")
        values = {k: v for k, v in values.items() if v is not None}
        if "image" in values:
            values["image"] = _api_image(values["image"], decode_image, f"{p}.image")
        units.append(ControlNetUnit(**values).checked(i))
    return units


def _api_image(value: Any, decode: Callable[[str], Any] | None, field_name: str):
    if isinstance(value, dict):
        value = value.get("image")
    elif isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[0]["image"] if isinstance(value[0], dict) else value[0]
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if decode is None:
            raise ParameterError(field_name, "a base64 image must be decoded by the API layer")
        try:
            return decode(value)
        except UserError:
            raise
        except Exception as err:
            raise ParameterError(field_name, f"not a readable image ({type(err).__name__})") from None
    return value


# ============================================================================================ infotext

_INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                    "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
_RE_UNIT_KEY = re.compile(r"^ControlNet(?:[ -](\d+))?$")


def _display(field_name: str) -> str:
    return " ".join(w.capitalize() for w in field_name.split("_"))


def unit_infotext(unit: ControlNetUnit, model_title: str | None = None) -> str:
    """One unit as sd-webui-controlnet writes it: `Module: canny, Model: name [hash], Weight: 1.0, ...`
    (its keys and its `str()` of each value; the caller quotes the whole string)."""
    values = {f: getattr(unit, f) for f in _INFOTEXT_FIELDS}
    if model_title:
        values["model"] = model_title
    values["processor_res"] = int(values["processor_res"])
    for f in ("weight", "threshold_a", "threshold_b", "guidance_start", "guidance_end"):
        values[f] = float(values[f])
    parts = []
    for f, v in values.items():
        text = str(v)
        if "," in text or ": " in text:
            text = text.replace(",", " ").replace(": ", " ")  # the format has no quoting
        parts.append(f"{_display(f)}: {text}")
    return ", ".join(parts)


def parse_unit_infotext(text: str) -> ControlNetUnit:
    """A unit from its infotext: the current format (`Module: canny, Model: ..., Weight: 1.0, ...`) or
    the 2023 one (`preprocessor: canny, model: ..., weight: 1, starting/ending: (0, 1), resize mode: ...,
    pixel perfect: False, control mode: Balanced, preprocessor params: (512, 100, 200)`)."""
    pairs = _split_pairs(text)
    lowered = {k.strip().lower(): v.strip() for k, v in pairs}
    values: dict[str, Any] = {}
    if "preprocessor" in lowered or "starting/ending" in lowered:  # legacy format
        values["module"] = lowered.get("preprocessor", "none")
        values["model"] = lowered.get("model", "None")
        if "weight" in lowered:
            values["weight"] = float(lowered["weight"])
        nums = _tuple(lowered.get("starting/ending", ""))
        if len(nums) == 2:
            values["guidance_start"], values["guidance_end"] = nums
        if "resize mode" in lowered:
            values["resize_mode"] = lowered["resize mode"]
        if "pixel perfect" in lowered:
            values["pixel_perfect"] = lowered["pixel perfect"] == "True"
        if "control mode" in lowered:
            values["control_mode"] = lowered["control mode"]
        params = _tuple(lowered.get("preprocessor params", ""))
        for name, v in zip(("processor_res", "threshold_a", "threshold_b"), params):
            values[name] = v
    else:
        for key, raw in pairs:
            name = "_".join(w.lower() for w in key.strip().split(" "))
            if name not in _INFOTEXT_FIELDS:
                continue  # e.g. "Low Vram", "Save Detected Map" of older versions
            raw = raw.strip()
            if name in ("module", "model", "resize_mode", "control_mode"):
                values[name] = raw
            elif name == "pixel_perfect":
                values[name] = raw == "True"
            else:
                values[name] = float(raw)
    unit = ControlNetUnit(enabled=True, **values)
    try:
        return unit.checked()
    except ParameterError as err:
        log.warning("ControlNet infotext value out of range (%s); kept as written", err)
        return unit


def _split_pairs(text: str) -> list[tuple[str, str]]:
    """`k: v, k: (a, b), ...` → pairs; commas inside parentheses do not split."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    pairs = []
    for item in items:
        if ":" in item:
            k, v = item.split(":", 1)
            pairs.append((k.strip(), v.strip()))
    return pairs


def _tuple(text: str) -> list[float]:
    inner = text.strip().strip("()")
    out = []
    for part in inner.split(","):
        part = part.strip()
        if part:
            try:
                out.append(float(part))
            except ValueError:
                return []
    return out


def units_from_infotext(params: dict[str, str]) -> list[ControlNetUnit]:
    """`ControlNet 0`, `ControlNet 1`, ... (or a lone `ControlNet`) of parsed infotext → units placed at
    their index; gaps are disabled default units. Values that do not parse are skipped with a log line."""
    found: dict[int, ControlNetUnit] = {}
    for key, text in params.items():
        m = _RE_UNIT_KEY.match(key.strip())
        if not m:
            continue
        index = int(m.group(1) or 0)
        try:
            found[index] = parse_unit_infotext(text)
        except (ValueError, TypeError) as err:
            log.warning("cannot read %s from infotext (%s): %r", key, err, text)
    if not found:
        return []
    return [found.get(i, ControlNetUnit(enabled=False)) for i in range(max(found) + 1)]


# ============================================================================================ models

@dataclass
class ControlNetFile:
    """One ControlNet on disk."""

    path: Path
    name: str                  # relative to its models folder, with extension
    kind: str                  # "safetensors", "ckpt" (.pth/.pt/.ckpt) or "diffusers"
    hash: str | None = None    # A1111 legacy hash (8 hex) as sd-webui-controlnet shows it

    @property
    def model_name(self) -> str:
        stem = Path(self.name).name
        return stem if self.kind == "diffusers" else os.path.splitext(stem)[0]

    @property
    def title(self) -> str:
        return f"{self.model_name} [{self.hash}]" if self.hash else self.model_name


@dataclass(frozen=True)
class ControlNetArch:
    layout: str                # "ldm" (control_model.*), "diffusers" (single file) or "folder"
    prefix: str                # key prefix of the ControlNet weights in the file
    context_dim: int           # cross-attention width: 768 SD1, 1024 SD2, 2048 SDXL
    sdxl: bool

    @property
    def family(self) -> str:
        if self.sdxl:
            return detect.SDXL
        return detect.SD2 if self.context_dim == 1024 else detect.SD1

    @property
    def label(self) -> str:
        return detect.FAMILY_LABELS[self.family]


def detect_controlnet(shapes: dict[str, Any], name: str = "ControlNet") -> ControlNetArch:
    """Layout and architecture of a ControlNet from key → shape (no tensor data needed)."""
    if "lora_controlnet" in shapes:
        raise ModelLoadError(f"{name}: a Control-LoRA; only full ControlNets are supported")
    hint = sorted(k for k in shapes if k.endswith("input_hint_block.0.weight"))
    if hint:
        layout, prefix = "ldm", hint[0][: -len("input_hint_block.0.weight")]
    elif "controlnet_cond_embedding.conv_in.weight" in shapes:
        layout, prefix = "diffusers", ""
    else:
        if any(k.startswith("model.diffusion_model.") for k in shapes):
            raise ModelLoadError(f"{name}: a Stable Diffusion checkpoint, not a ControlNet; put it in "
                                 "models/Stable-diffusion")
        raise ModelLoadError(f"{name}: not a ControlNet (no input_hint_block / controlnet_cond_embedding weights); "
                             "T2I-Adapter, Control-LoRA and ControlLLLite files are not supported")
    to_k = sorted(k for k in shapes if k.startswith(prefix) and k.endswith("attn2.to_k.weight"))
    if not to_k:
        raise ModelLoadError(f"{name}: ControlNet without cross-attention layers; unsupported variant")
    context = int(list(shapes[to_k[0]])[1])
    sdxl = (prefix + "label_emb.0.0.weight") in shapes if layout == "ldm" else "add_embedding.linear_1.weight" in shapes
    return ControlNetArch(layout, prefix, context, sdxl)


def _read_state(path: Path) -> dict:
    from ..models.loading import read_ckpt_state_dict

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ModelLoadError(f"{path.name}: cannot read ({type(err).__name__}: {err})") from None
    return read_ckpt_state_dict(path)


def _file_shapes(path: Path) -> dict[str, list[int]]:
    if path.suffix.lower() == ".safetensors":
        return detect.shapes_from_header(detect.read_safetensors_header(path))
    return {k: list(v.shape) for k, v in _read_state(path).items() if hasattr(v, "shape")}


class ControlNetRegistry:
    """ControlNet models found under ModelPaths' `controlnet` folders. `refresh()` rescans."""

    def __init__(self, paths: ModelPaths):
        self.paths = paths
        self._lock = threading.Lock()
        self._arch: dict[tuple[str, int, float], ControlNetArch] = {}
        self._hash: dict[tuple[str, int, float], str] = {}
        self.models: list[ControlNetFile] = []
        self.refresh()

    def refresh(self) -> None:
        items: dict[str, ControlNetFile] = {}
        for folder in self.paths.dirs("controlnet"):
            for cf in _scan(folder):
                items.setdefault(cf.name, cf)  # the first folder wins, like the checkpoint list
        models = sorted(items.values(), key=lambda m: m.name.lower())
        for cf in models:
            if cf.kind != "diffusers":
                cf.hash = self._legacy_hash(cf.path)
        with self._lock:
            self.models = models

    def _key(self, path: Path) -> tuple[str, int, float]:
        st = path.stat() if path.is_file() else (path / "config.json").stat()
        return str(path.resolve()), st.st_size, st.st_mtime

    def _legacy_hash(self, path: Path) -> str | None:
        try:
            key = self._key(path)
            if key not in self._hash:
                self._hash[key] = legacy_hash(path)
            return self._hash[key]
        except OSError:
            return None

    def arch(self, cf: ControlNetFile) -> ControlNetArch:
        """Architecture from the header (cached per file size + mtime); ModelLoadError if unusable."""
        if not cf.path.exists():
            raise ModelLoadError(f"{cf.name}: file not found ({cf.path}); press refresh to update the list")
        key = self._key(cf.path)
        with self._lock:
            hit = self._arch.get(key)
        if hit is not None:
            return hit
        if cf.kind == "diffusers":
            try:
                cfg = json.loads((cf.path / "config.json").read_text())
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"{cf.name}: unreadable config.json ({err})") from None
            arch = ControlNetArch("folder", "", int(cfg.get("cross_attention_dim") or 0),
                                  cfg.get("addition_embed_type") == "text_time")
        else:
            arch = detect_controlnet(_file_shapes(cf.path), cf.name)
        with self._lock:
            self._arch[key] = arch
        return arch

    def find(self, query: str) -> ControlNetFile:
        """By title, name, file name or stem (case-insensitive; a different [hash] still finds the name,
        as sd-webui-controlnet does)."""
        q = (query or "").strip()
        if not q or q.lower() == "none":
            raise UserError("no ControlNet model given")
        bare = q.rsplit(" [", 1)[0] if q.endswith("]") else q
        for cf in self.models:
            if q in (cf.title, cf.name) or bare in (cf.name, cf.model_name):
                return cf
        low = bare.lower()
        for cf in self.models:
            if low in (cf.model_name.lower(), cf.name.lower(), Path(cf.name).name.lower()):
                return cf
        where = ", ".join(str(d) for d in self.paths.dirs("controlnet"))
        raise UserError(f"ControlNet model {query!r} not found; put it in {where} and press refresh")


def _scan(folder: Path) -> list[ControlNetFile]:
    found: list[ControlNetFile] = []
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_p = Path(root)
        if (root_p / "config.json").is_file() and _is_controlnet_folder(root_p):
            found.append(ControlNetFile(root_p, root_p.relative_to(folder).as_posix(), "diffusers"))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            low = f.lower()
            if low.endswith(MODEL_EXTS) and not low.startswith("."):
                kind = "safetensors" if low.endswith(".safetensors") else "ckpt"
                if os.path.splitext(f)[0] == "None":
                    continue  # would be confused with "no model"
                found.append(ControlNetFile(root_p / f, (root_p / f).relative_to(folder).as_posix(), kind))
    return found


def _is_controlnet_folder(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = any((folder / n).is_file() for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                                                    "diffusion_pytorch_model.fp16.safetensors"))
    return cfg.get("_class_name") == "ControlNetModel" and weights


def incompatibility(arch: ControlNetArch, cf: ControlNetFile, loaded) -> str | None:
    """Why ControlNet `cf` cannot steer the active checkpoint, or None when it can."""
    if loaded.arch.family == detect.SDXL_REFINER:
        return f"{loaded.info.name} is an SDXL refiner; ControlNets work with SD 1.x, SD 2.x and SDXL base models"
    unet = loaded.pipe.unet.config
    ck_sdxl = unet.get("addition_embed_type") == "text_time"
    if arch.sdxl != ck_sdxl or arch.context_dim != int(unet.get("cross_attention_dim") or 0):
        return (f"ControlNet {cf.model_name} is for {arch.label} (cross-attention {arch.context_dim}) but the active "
                f"checkpoint {loaded.info.name} is {loaded.arch.label} (cross-attention "
                f"{unet.get('cross_attention_dim')}); choose a ControlNet for {loaded.arch.label} or another checkpoint")
    return None


def choices(manager: PipelineManager) -> tuple[list[str], str | None]:
    """Titles for a model dropdown: 'None' then the ControlNets matching the active checkpoint, and a
    note (None when nothing needs saying) about hidden or unreadable models."""
    reg = manager.controlnets.registry
    loaded = manager.active
    titles, hidden, broken = ["None"], [], []
    for cf in reg.models:
        try:
            arch = reg.arch(cf)
        except UserError as err:
            broken.append(f"{cf.name} ({err})")
            continue
        if loaded is None or incompatibility(arch, cf, loaded) is None:
            titles.append(cf.title)
        else:
            hidden.append(f"{cf.model_name} ({arch.label})")
    notes = []
    if loaded is None and reg.models:
        notes.append("no checkpoint is loaded: all ControlNets are listed")
    if hidden:
        notes.append(f"{len(hidden)} ControlNet(s) for other architectures hidden (active: {loaded.arch.label}): "
                     + ", ".join(hidden[:5]) + ("..." if len(hidden) > 5 else ""))
    if broken:
        notes.append("unreadable: " + "; ".join(broken[:3]))
    if not reg.models:
        notes.append(f"no ControlNet models found; put them in {reg.paths.dirs('controlnet')[0]}")
    elif len(titles) == 1 and loaded is not None:
        notes.append(f"no ControlNet for {loaded.arch.label} found in {reg.paths.dirs('controlnet')[0]}")
    return titles, "; ".join(notes) or None


# ============================================================================================ loading

def _to_diffusers_keys(state: dict, arch: ControlNetArch, base_config: dict, name: str) -> dict:
    """Original-layout weights → ControlNetModel keys (diffusers' converter + SDXL's label_emb, which
    diffusers' converter drops); diffusers-layout files pass through."""
    sub = {k[len(arch.prefix):]: v for k, v in state.items() if k.startswith(arch.prefix)}
    if arch.layout != "ldm":
        return sub
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    out = convert_controlnet_checkpoint(sub, base_config)
    for src, dst in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
        for p in ("weight", "bias"):
            if f"{src}.{p}" in sub:
                out[f"{dst}.{p}"] = sub[f"{src}.{p}"]
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise ModelLoadError(f"{name}: incomplete ControlNet, {len(missing)} weights missing (e.g. {missing[0]})")
    return out


def _per_level(value: Any, n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def config_overrides(shapes: dict[str, tuple], base: dict, name: str = "") -> dict[str, Any]:
    """Config values that differ from the bundled `base` config, read from the weights' shapes
    (diffusers keys): input/conditioning channels, cross-attention width, linear projections,
    transformer depth per level, conditioning embedding widths; global pooling for shuffle models."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if base.get(key) != value:
            out[key] = value

    if "conv_in.weight" in shapes:
        put("in_channels", int(shapes["conv_in.weight"][1]))
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        put("conditioning_channels", int(shapes["controlnet_cond_embedding.conv_in.weight"][1]))
        widths = [int(shapes["controlnet_cond_embedding.conv_in.weight"][0])]
        j = 1
        while f"controlnet_cond_embedding.blocks.{j}.weight" in shapes:
            widths.append(int(shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0]))
            j += 2
        put("conditioning_embedding_out_channels", widths)
    to_k = sorted(k for k in shapes if k.endswith("attn2.to_k.weight"))
    if to_k:
        put("cross_attention_dim", int(shapes[to_k[0]][1]))
    proj = sorted(k for k in shapes if k.endswith(".proj_in.weight"))
    if proj:
        put("use_linear_projection", len(shapes[proj[0]]) == 2)
    n_levels = len(base["block_out_channels"])
    depth = _per_level(base.get("transformer_layers_per_block", 1), n_levels)
    new_depth = list(depth)
    for level in range(n_levels):
        prefix = f"down_blocks.{level}.attentions.0."
        if any(k.startswith(prefix) for k in shapes):
            blocks = {k[len(prefix):].split(".")[1] for k in shapes if k.startswith(prefix + "transformer_blocks.")}
            new_depth[level] = len(blocks)
    if new_depth != depth:
        out["transformer_layers_per_block"] = new_depth
    if "shuffle" in name.lower():
        put("global_pool_conditions", True)  # control_v11e_sd15_shuffle's yaml: global_average_pooling
    return out


@contextmanager
def _quiet_diffusers_cast_warning():
    """diffusers warns "modules ... should be kept in float32: []" on any `ModelMixin.to(dtype)`."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_controlnet(cf: ControlNetFile, arch: ControlNetArch, *, config_root: Path, dtype=None):
    """A ControlNetModel from disk, offline, on the CPU in `dtype`."""
    from diffusers import ControlNetModel

    try:
        if cf.kind == "diffusers":
            model = ControlNetModel.from_pretrained(cf.path, local_files_only=True, torch_dtype=dtype)
        else:
            cfg_dir = Path(config_root) / CONFIG_DIRS[arch.family]
            if not (cfg_dir / "config.json").is_file():
                raise ModelLoadError(f"no bundled ControlNet config for {arch.label} in {cfg_dir}")
            base = json.loads((cfg_dir / "config.json").read_text())
            state = _to_diffusers_keys(_read_state(cf.path), arch, base, cf.name)
            overrides = config_overrides({k: tuple(v.shape) for k, v in state.items()}, base, cf.name)
            if overrides:
                log.info("%s: config adjusted from its weights: %s", cf.name, overrides)
            with _quiet_diffusers_cast_warning():  # its final model.to(dtype) is a no-op here, but it warns
                model = ControlNetModel.from_single_file(state, config=str(cfg_dir), local_files_only=True,
                                                         torch_dtype=dtype, **overrides)
            unexpected = sorted(set(state) - set(model.state_dict()))
            if unexpected:
                raise ModelLoadError(f"{cf.name}: {len(unexpected)} weights do not fit a {arch.label} ControlNet "
                                     f"(e.g. {unexpected[0]}); unsupported variant")
    except ModelLoadError:
        raise
    except Exception as err:  # diffusers/safetensors raise many types for a broken file; name the file
        log.exception("loading ControlNet %s failed", cf.path)
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise ModelLoadError(f"{cf.name}: could not be loaded as a {arch.label} ControlNet "
                             f"({type(err).__name__}: {first})") from err
    missing = [k for k, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ModelLoadError(f"{cf.name}: incomplete ControlNet, {len(missing)} weights missing (e.g. {missing[0]})")
    return model.eval()


class ControlNetCache:
    """Loaded ControlNets, least recently used dropped first; lives on the device with the checkpoint.

    `loads` counts reads from disk (tests and the benchmark check cache hits)."""

    def __init__(self, paths: ModelPaths, policy: DevicePolicy, config_root: Path, size: int = 3):
        self.registry = ControlNetRegistry(paths)
        self.policy = policy
        self.config_root = Path(config_root)
        self.size = max(1, int(size))
        self.annotators = Annotators(paths.dirs("annotators"), device=policy.device)
        self._cache: OrderedDict[str, object] = OrderedDict()
        self.loads = 0

    def get(self, cf: ControlNetFile):
        key = str(cf.path.resolve())
        model = self._cache.get(key)
        if model is not None:
            self._cache.move_to_end(key)
            return model
        model = load_controlnet(cf, self.registry.arch(cf), config_root=self.config_root, dtype=self.policy.dtype)
        if not self.policy.device.startswith("cpu"):
            model.to(self.policy.device)
        self.loads += 1
        self._cache[key] = model
        while len(self._cache) > self.size:
            old_key, _ = self._cache.popitem(last=False)
            log.info("unloaded ControlNet %s", old_key)
        return model

    def clear(self) -> None:
        self._cache.clear()
        self.annotators.clear()


# ============================================================================================ pipelines

_CONTROLNET_PIPELINES = {
    "StableDiffusionPipeline": "StableDiffusionControlNetPipeline",
    "StableDiffusionImg2ImgPipeline": "StableDiffusionControlNetImg2ImgPipeline",
    "StableDiffusionInpaintPipeline": "StableDiffusionControlNetInpaintPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLControlNetPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLControlNetImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline": "StableDiffusionXLControlNetInpaintPipeline",
}


@functools.cache
def _unit_controlnets_class():
    """MultiControlNetModel with per-unit control modes (built on first use: diffusers is a heavy import)."""
    import torch
    from diffusers.models import MultiControlNetModel

    class UnitControlNets(MultiControlNetModel):
        """The job's ControlNets; the pipeline treats it as diffusers' MultiControlNetModel."""

        def __init__(self, controlnets, modes: Sequence[str]):
            super().__init__(list(controlnets))
            self.modes = list(modes)
            self.uncond_in_batch = False   # set per call: the batch is [uncond, cond] (CFG)

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                    class_labels=None, timestep_cond=None, attention_mask=None, added_cond_kwargs=None,
                    cross_attention_kwargs=None, guess_mode=False, return_dict=True):
            n = len(self.nets)
            check_lists(n, controlnet_cond=list(controlnet_cond), conditioning_scale=list(conditioning_scale))
            halves = self.uncond_in_batch and not guess_mode  # guess_mode: the pipeline sent the cond half only
            down_total = mid_total = None
            for image, scale, net, mode in zip(controlnet_cond, conditioning_scale, self.nets, self.modes):
                down, mid = net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                                controlnet_cond=image, conditioning_scale=scale, class_labels=class_labels,
                                timestep_cond=timestep_cond, attention_mask=attention_mask,
                                added_cond_kwargs=added_cond_kwargs, cross_attention_kwargs=cross_attention_kwargs,
                                guess_mode=mode != BALANCED, return_dict=False)
                if halves and (mode == CONTROL_MORE or net.config.global_pool_conditions):
                    keep = torch.ones(sample.shape[0], 1, 1, 1, device=sample.device, dtype=mid.dtype)
                    keep[: sample.shape[0] // 2] = 0
                    down = [d * keep for d in down]
                    mid = mid * keep
                if down_total is None:
                    down_total, mid_total = list(down), mid
                else:
                    down_total = [a + b for a, b in zip(down_total, down)]
                    mid_total = mid_total + mid
            return down_total, mid_total

    return UnitControlNets


def unit_controlnets(nets: Sequence[Any], modes: Sequence[str]):
    """Wrap loaded ControlNetModels (one per unit) with their control modes for a pipeline."""
    check_lists(len(nets), control_mode=list(modes))
    return _unit_controlnets_class()(nets, modes)


def check_lists(n: int, **lists: Sequence[Any]) -> None:
    """Every per-unit list must have exactly one value per ControlNet (diffusers would truncate)."""
    for name, values in lists.items():
        if not isinstance(values, (list, tuple)):
            raise UserError(f"{name} must be a list with one value per ControlNet unit ({n}), not "
                            f"{type(values).__name__}")
        if len(values) != n:
            raise UserError(f"{name} has {len(values)} value(s) for {n} ControlNet unit(s); give exactly one per "
                            "unit (a shorter list would silently drop units)")


def controlnet_pipeline(manager: PipelineManager, mode: str, nets):
    """The active checkpoint's ControlNet pipeline for `mode` with `nets` attached. Built once per
    checkpoint and mode from the mode pipeline's loaded components (`from_pipe`), then reused."""
    import diffusers

    base = manager.pipeline(mode)
    loaded = manager.require_active()
    key = f"controlnet:{mode}"
    pipe = loaded.modes.get(key)
    if pipe is None:
        cls_name = _CONTROLNET_PIPELINES.get(type(base).__name__)
        if cls_name is None:
            raise UserError(f"ControlNet is not available for {loaded.arch.label} checkpoints in {mode}")
        pipe = from_pipe(getattr(diffusers, cls_name), base, controlnet=nets)
        pipe.set_progress_bar_config(disable=True)
        loaded.modes[key] = pipe
    else:
        pipe.register_modules(controlnet=nets)
    return pipe


def pipeline_kwargs(pipe, images: Sequence[Any], scales: Sequence[float], starts: Sequence[float],
                    ends: Sequence[float]) -> dict[str, Any]:
    """The ControlNet arguments of a diffusers ControlNet pipeline call, lists checked against its nets."""
    import inspect

    nets = getattr(pipe.controlnet, "nets", None)
    n = len(nets) if nets is not None else 1
    check_lists(n, image=images, controlnet_conditioning_scale=scales, control_guidance_start=starts,
                control_guidance_end=ends)
    for i, (s, e) in enumerate(zip(starts, ends)):
        if not 0.0 <= float(s) < float(e) <= 1.0:
            raise UserError(f"ControlNet unit {i}: guidance start {s} must be before guidance end {e}, within 0..1")
    key = "control_image" if "control_image" in inspect.signature(type(pipe).__call__).parameters else "image"
    single = nets is None
    return {key: images[0] if single else list(images),
            "controlnet_conditioning_scale": float(scales[0]) if single else [float(s) for s in scales],
            "control_guidance_start": [float(s) for s in starts], "control_guidance_end": [float(e) for e in ends],
            "guess_mode": False}


# ============================================================================================ jobs

@dataclass
class AppliedUnit:
    index: int                  # position in the request's unit list (the infotext "ControlNet N")
    unit: ControlNetUnit        # checked
    model: ControlNetFile
    detected: Detected
    net: Any = None


@dataclass
class ControlJob:
    """The ControlNet part of one generation: preprocessed maps, loaded nets, notices, infotext."""

    manager: Any
    units: list[AppliedUnit]
    notices: list[str] = field(default_factory=list)
    _nets: Any = None
    _pipes: dict = field(default_factory=dict)
    _maps: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.units)

    @property
    def nets(self):
        if self._nets is None:
            self._nets = unit_controlnets([a.net for a in self.units], [a.unit.control_mode for a in self.units])
        return self._nets

    def pipeline(self, mode: str):
        pipe = controlnet_pipeline(self.manager, mode, self.nets)
        self._pipes[mode] = pipe
        return pipe

    def control_images(self, width: int, height: int) -> list:
        """Each unit's map fitted to width x height by its resize mode (PIL, cached per size)."""
        from PIL import Image

        key = (width, height)
        if key not in self._maps:
            self._maps[key] = [Image.fromarray(fit_to_size(a.detected.image, width, height, a.unit.resize_mode))
                               for a in self.units]
        return self._maps[key]

    def call_kwargs(self, pipe, width: int, height: int, guidance_scale: float) -> dict[str, Any]:
        """Arguments to add to the pipeline call for an image of width x height."""
        kwargs = pipeline_kwargs(pipe, self.control_images(width, height), [a.unit.weight for a in self.units],
                                 [a.unit.guidance_start for a in self.units], [a.unit.guidance_end for a in self.units])
        self.nets.uncond_in_batch = guidance_scale > 1.0 and pipe.unet.config.get("time_cond_proj_dim") is None
        return kwargs

    def maps(self, width: int, height: int) -> list:
        """The detected maps as used, in unit order (A1111 shows them after the images)."""
        images = self.control_images(width, height)
        return [im for _, im in sorted(zip((a.index for a in self.units), images), key=lambda p: p[0])]

    def infotext(self) -> dict[str, str]:
        return {f"ControlNet {a.index}": unit_infotext(a.unit, a.model.title)
                for a in sorted(self.units, key=lambda a: a.index)}

    def release(self) -> None:
        """Detach the nets from the cached pipelines so the ControlNet cache alone decides what stays loaded."""
        for pipe in self._pipes.values():
            pipe.register_modules(controlnet=None)
        self._pipes.clear()


def prepare_job(manager: PipelineManager, units: Sequence[ControlNetUnit] | None, width: int, height: int, *,
                init_image=None, seed: int | None = None) -> ControlJob | None:
    """Check units, run preprocessors and load ControlNets for one generation (under the manager lock).

    None when no unit is enabled. Bad settings, unknown or mismatched models raise (UserError /
    ParameterError); a preprocessor that cannot run drops its unit with a notice instead."""
    enabled = [(i, u) for i, u in enumerate(units or []) if u.enabled]
    if not enabled:
        return None
    loaded = manager.require_active()
    cache: ControlNetCache = manager.controlnets
    notices: list[str] = []
    chosen: list[tuple[int, ControlNetUnit, ControlNetFile]] = []
    for i, raw in enabled:
        unit = raw.checked(i)
        if not unit.has_model:
            notices.append(f"ControlNet {i}: no model chosen; unit skipped")
            continue
        if unit.guidance_start >= unit.guidance_end:
            notices.append(f"ControlNet {i}: guidance start equals end ({unit.guidance_start:g}); unit skipped")
            continue
        cf = cache.registry.find(unit.model)
        reason = incompatibility(cache.registry.arch(cf), cf, loaded)
        if reason:
            raise UserError(f"ControlNet {i}: {reason}")
        if unit.image is None and init_image is None:
            raise UserError(f"ControlNet {i}: no input image; give the unit an image (txt2img has no image to reuse)")
        chosen.append((i, unit, cf))
    annotators = cache.annotators.with_seed(seed if seed is not None and seed >= 0 else None)
    applied: list[AppliedUnit] = []
    for i, unit, cf in chosen:
        image = unit.image if unit.image is not None else init_image
        try:
            det = run_preprocessor(unit.module, image, processor_res=unit.processor_res,
                                   threshold_a=unit.threshold_a, threshold_b=unit.threshold_b, annotators=annotators,
                                   target=(width, height), resize_mode=unit.resize_mode,
                                   pixel_perfect=unit.pixel_perfect)
        except UserError as err:
            log.warning("ControlNet %d skipped: %s", i, err)
            notices.append(f"ControlNet {i} skipped: {err}")
            continue
        applied.append(AppliedUnit(i, unit, cf, det))
    for a in applied:
        a.net = cache.get(a.model)
    # diffusers switches the whole call to guess mode when its *first* net pools globally (shuffle models):
    # a non-pooling net goes first so that each unit's own control mode stays in charge.
    applied.sort(key=lambda a: bool(a.net.config.global_pool_conditions))
    return ControlJob(manager, applied, notices)


def preview_unit(manager: PipelineManager, unit: ControlNetUnit, width: int, height: int, *, init_image=None):
    """The control map `unit` would use for a width x height image (PIL), for the UI's preprocessor preview.

    Raises UserError when the preprocessor cannot run (e.g. annotator weights missing offline). Weighted
    preprocessors run on the device: call this through the job queue like a generation."""
    from PIL import Image

    u = unit.checked()
    image = u.image if u.image is not None else init_image
    if image is None:
        raise UserError("no input image to preview: upload one to the ControlNet unit")
    det = run_preprocessor(u.module, image, processor_res=u.processor_res, threshold_a=u.threshold_a,
                           threshold_b=u.threshold_b, annotators=manager.controlnets.annotators,
                           target=(width, height), resize_mode=u.resize_mode, pixel_perfect=u.pixel_perfect)
    return Image.fromarray(fit_to_size(det.image, width, height, u.resize_mode))
