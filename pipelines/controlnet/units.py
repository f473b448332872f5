"""ControlNet units in sd-webui-controlnet's terms: the unit dataclass, its checks, and units from the API.

Control modes (as sd-webui-controlnet implements them, per unit; applied in `pipeline.py`)
    Balanced: the residuals x weight, on the conditional and unconditional halves of the CFG batch.
    My prompt is more important: "soft injection", residuals scaled from 0.1 (shallowest) to 1 (middle
        block) on a log scale (diffusers' guess-mode scales; sd-webui-controlnet's 0.825**(12-i) is the
        same curve for SD1.5), on both halves.
    ControlNet is more important: soft injection on the conditional half only (the unconditional half
        gets none: the ControlNet steers as strongly as CFG allows; this is diffusers' guess mode).
    Models with global pooling (shuffle) always act on the conditional half only, as in the extension.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ..core.errors import ParameterError, UserError
from .preprocessors import CROP_AND_RESIZE, RESIZE_MODES, get_preprocessor

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
BALANCED, PROMPT_MORE, CONTROL_MORE = CONTROL_MODES
_RESIZE_ALIASES = {
    "inner fit (scale to fit)": CROP_AND_RESIZE, "scale to fit (inner fit)": CROP_AND_RESIZE,
    "outer fit (shrink to fit)": "Resize and Fill", "envelope (outer fit)": "Resize and Fill",
    "just resize (latent upscale)": "Just Resize",
}
_CONTROL_ALIASES = {"balanced": BALANCED, "prompt": PROMPT_MORE, "control": CONTROL_MORE, "controlnet": CONTROL_MORE}


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
        if isinstance(value[0], dict) and "image" not in value[0]:
            raise ParameterError(field_name, "expected [{\"image\": base64, \"mask\": base64}] or [image, mask]")
        value = value[0]["image"] if isinstance(value[0], dict) else value[0]
    if value is None or value == "":
        return None
    from PIL import Image

    if not isinstance(value, (str, Image.Image)):
        raise ParameterError(field_name, f"expected a base64 image, got {type(value).__name__}")
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
