"""ControlNet units in infotext: `ControlNet 0: "Module: canny, Model: name [hash], Weight: 1.0, ..."` as
sd-webui-controlnet writes it, read back in that format and in the 2023 one."""
from __future__ import annotations

import logging
import re
from typing import Any

from ..core.errors import ParameterError
from .units import ControlNetUnit

log = logging.getLogger(__name__)

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
