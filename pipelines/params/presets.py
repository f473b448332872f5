"""Parameter presets: JSON files in `presets/` holding any subset of the declared generation parameters.

    {
      "name": "Fast — LCM 4 steps",
      "description": "...",
      "params": {"sampler_name": "LCM", "steps": 4, "cfg_scale": 1.5},     # fields of pipelines.params.declarations.PARAMS
      "checkpoint": "model.safetensors [abcdef1234]",                      # optional → sd_model_checkpoint
      "vae": "vae.safetensors",                                             # optional → sd_vae
      "loras": [{"name": {"sd1": "lcm-lora-sdv1-5", "sdxl": "lcm-lora-sdxl"}, "weight": 1.0,
                 "source": {"sd1": "https://..."}}],                        # optional; name may be one string
      "controlnet": [{...}],                                                # optional units, kept as given
      "order": 30                                                           # optional: position in the list
    }

Every value is checked against the parameter declarations (`Param.convert`, plus the cross-field checks
of `make_request`). A key that is unknown or a value that is invalid is reported — the message names the
key and the file — and the rest of the preset still applies.

Applying a preset fills fields; the user can still edit them. A preset's LoRAs go into the prompt as
`<lora:name:weight>` tags (visible, editable, recorded in the infotext like any LoRA), picked for the
active checkpoint's architecture; applying another preset takes out the tags of LoRAs any preset manages
(so "Fast" → "Balanced" removes the LCM-LoRA) and leaves the user's own tags alone.

The UI's start-up values are a preset too: `presets/defaults.json` ("Defaults"). Its `params` overlay the
declared defaults, so an empty file means the declared defaults and a user who always wants, say,
DPM++ 2M Karras at 30 steps writes just those two fields there (or uses "save as defaults").
"Reset to defaults" applies it; `reset_defaults()` empties it again.

Files are written atomically (temporary file + rename) with a filename derived from the preset name
(`Fast — LCM 4 steps` → `fast-lcm-4-steps.json`); the name inside the file is what the UI shows.
"""
from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import declarations as params
from ..generate import samplers
from ..core.errors import ParameterError, UserError
from ..core.fileio import atomic_write
from ..prompts.networks import set_lora_tags

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
DEFAULTS_FILE = "defaults.json"
DEFAULTS_NAME = "Defaults"
TOP_KEYS = ("name", "description", "params", "checkpoint", "vae", "loras", "controlnet", "order")
# Not saved by "save current as preset": per-image values, and the model unless asked for.
SAVE_SKIP = ("prompt", "seed", "subseed")
MODEL_FIELDS = {"checkpoint": "sd_model_checkpoint", "vae": "sd_vae"}
MAX_NAME = 100
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


class PresetError(UserError):
    """A preset file that cannot be used at all (not JSON, not an object); names the file."""


@dataclass
class PresetLora:
    names: dict[str, str]            # architecture family ("sd1", "sdxl", ...) or "*" → LoRA name
    weight: float = 1.0
    sources: dict[str, str] = field(default_factory=dict)   # family → where to download it

    def for_family(self, family: str | None) -> str | None:
        if family and family in self.names:
            return self.names[family]
        if family == "sdxl_refiner" and "sdxl" in self.names:
            return None  # the refiner is its own architecture: base LoRAs do not fit
        return self.names.get("*")

    def to_json(self) -> dict[str, Any]:
        name: Any = self.names["*"] if set(self.names) == {"*"} else dict(self.names)
        out: dict[str, Any] = {"name": name, "weight": self.weight}
        if self.sources:
            out["source"] = dict(self.sources)
        return out


@dataclass
class Preset:
    name: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)      # validated request fields
    checkpoint: str | None = None
    vae: str | None = None
    loras: list[PresetLora] = field(default_factory=list)
    controlnet: list[dict] = field(default_factory=list)
    order: int = 1000
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)          # what was ignored when it was read

    @property
    def is_defaults(self) -> bool:
        return self.path is not None and self.path.name == DEFAULTS_FILE

    def values(self) -> dict[str, Any]:
        """The request fields this preset sets (params + checkpoint/VAE)."""
        out = dict(self.params)
        if self.checkpoint:
            out["sd_model_checkpoint"] = self.checkpoint
        if self.vae:
            out["sd_vae"] = self.vae
        return out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "description": self.description,
                                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}
        if self.checkpoint:
            data["checkpoint"] = self.checkpoint
        if self.vae:
            data["vae"] = self.vae
        if self.loras:
            data["loras"] = [lo.to_json() for lo in self.loras]
        if self.controlnet:
            data["controlnet"] = self.controlnet
        if self.order != 1000:
            data["order"] = self.order
        return data


# ======================================================================================= validation

def _where(path: Path | None) -> str:
    return str(path) if path is not None else "preset"


def validate_params(raw: dict[str, Any], where: str = "preset") -> tuple[dict[str, Any], list[str]]:
    """Each key checked on its own against PARAMS: (valid values, warnings naming key and file)."""
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        name = params.ALIASES.get(key, key)
        param = params.BY_NAME.get(name)
        if param is None:
            warnings.append(f"{where}: unknown parameter '{key}' was ignored")
            continue
        if name == "sampler_name" and isinstance(value, str):
            try:  # A1111's combined names ("DPM++ 2M Karras") set the schedule type too
                sampler, schedule = samplers.resolve(value, raw.get("scheduler") if "scheduler" in raw else None)
            except ParameterError as err:
                warnings.append(f"{where}: '{key}': {_reason(err)}; ignored")
                continue
            values["sampler_name"] = sampler.name
            if schedule != "Automatic" and "scheduler" not in raw:
                values["scheduler"] = schedule
            continue
        try:
            values[name] = param.convert(value)
        except ParameterError as err:
            warnings.append(f"{where}: '{key}': {_reason(err)}; ignored")
    return values, warnings


def _reason(err: ParameterError) -> str:
    text = str(err)
    return text.split(": ", 1)[1] if ": " in text else text


def _lora_entries(raw: Any, where: str, warnings: list[str]) -> list[PresetLora]:
    if not isinstance(raw, list):
        warnings.append(f"{where}: 'loras' must be a list of {{\"name\": ..., \"weight\": ...}}; ignored")
        return []
    out = []
    for i, item in enumerate(raw):
        key = f"loras[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            warnings.append(f"{where}: '{key}' must be an object; ignored")
            continue
        name = item.get("name")
        names = {"*": name} if isinstance(name, str) else name
        if not isinstance(names, dict) or not names or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()):
            warnings.append(f"{where}: '{key}.name' must be a LoRA name or {{\"sd1\": name, \"sdxl\": name}}; ignored")
            continue
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not -10 <= weight <= 10:
            warnings.append(f"{where}: '{key}.weight' must be a number from -10 to 10; ignored")
            continue
        sources = item.get("source") or {}
        if isinstance(sources, str):
            sources = {"*": sources}
        unknown = sorted(set(item) - {"name", "weight", "source"})
        if unknown:
            warnings.append(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in '{key}' were ignored")
        out.append(PresetLora({k: v.strip() for k, v in names.items()}, float(weight),
                              {k: v for k, v in sources.items() if isinstance(v, str)}))
    return out


def parse_preset(data: Any, path: Path | None = None) -> Preset:
    """A Preset from decoded JSON; what is invalid is left out and listed in `preset.warnings`."""
    where = _where(path)
    if not isinstance(data, dict):
        raise PresetError(f"{where}: a preset must be a JSON object, got {type(data).__name__}")
    warnings: list[str] = []
    for key in data:
        if key not in TOP_KEYS:
            warnings.append(f"{where}: unknown key '{key}' was ignored "
                            f"(a preset has: {', '.join(TOP_KEYS)}; parameters go inside \"params\")")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        fallback = path.stem if path is not None else "preset"
        warnings.append(f"{where}: 'name' is missing or not a string; using {fallback!r}")
        name = fallback
    description = data.get("description", "")
    if not isinstance(description, str):
        warnings.append(f"{where}: 'description' must be a string; ignored")
        description = ""
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        warnings.append(f"{where}: 'params' must be an object of parameter: value; ignored")
        raw_params = {}
    values, more = validate_params(raw_params, where)
    warnings += more
    model: dict[str, str | None] = {}
    for key, field_name in MODEL_FIELDS.items():
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            warnings.append(f"{where}: '{key}' must be a string; ignored")
            value = None
        model[key] = value or values.pop(field_name, None) or None
    loras = _lora_entries(data["loras"], where, warnings) if "loras" in data else []
    controlnet = data.get("controlnet", [])
    if not isinstance(controlnet, list) or not all(isinstance(u, dict) for u in controlnet):
        warnings.append(f"{where}: 'controlnet' must be a list of unit objects; ignored")
        controlnet = []
    order = data.get("order", 1000)
    if isinstance(order, bool) or not isinstance(order, int):
        warnings.append(f"{where}: 'order' must be an integer; ignored")
        order = 1000
    return Preset(name.strip()[:MAX_NAME], description, values, model["checkpoint"], model["vae"], loras,
                  controlnet, order, path, warnings)


def load_preset(path: str | Path) -> Preset:
    """Read and validate one preset file; PresetError only when nothing of it is usable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise PresetError(f"{path}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PresetError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    return parse_preset(data, path)


def check_values(values: dict[str, Any], preset_keys: set[str], where: str) -> tuple[dict[str, Any], list[str]]:
    """Cross-field checks of a whole request (multiples of 8, pixel limit, sampler + schedule type): a
    field the preset set that fails is dropped with a warning, falling back to `fallback` values."""
    values = dict(values)
    warnings: list[str] = []
    for _ in range(len(params.PARAMS) + 1):
        try:
            params.make_request(values)
            return values, warnings
        except ParameterError as err:
            bad = params.ALIASES.get(err.field, err.field)
            if bad == "width" and "height" in preset_keys and "width" not in preset_keys:
                bad = "height"
            if bad == "scheduler" and "sampler_name" in preset_keys and "scheduler" not in preset_keys:
                values["scheduler"] = "Automatic"
                warnings.append(f"{where}: schedule type reset to Automatic: {_reason(err)}")
                continue
            if bad in preset_keys:
                warnings.append(f"{where}: '{bad}': {_reason(err)}; ignored")
                preset_keys = preset_keys - {bad}
            values[bad] = params.BY_NAME[bad].default if bad in params.BY_NAME else None
    return values, warnings


# ======================================================================================= file names

def preset_filename(name: str) -> str:
    """A safe, portable file name for a preset name: ASCII, lowercase, words joined by '-'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    stem = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60].strip("-") or "preset"
    if stem in _RESERVED:
        stem += "-preset"
    return stem + ".json"


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise UserError("a preset needs a name")
    if len(name) > MAX_NAME:
        raise UserError(f"preset names are at most {MAX_NAME} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise UserError("a preset name cannot contain control characters")
    return name


# ======================================================================================= the store

class PresetStore:
    """The presets of one folder (`presets/` by default): list, load, apply, save, delete, defaults.

    `networks` (a NetworkManager, optional) lets `apply` warn at once when a preset's LoRA file is
    missing, with where to get it.
    """

    def __init__(self, folder: str | Path = PRESETS_DIR, *, networks=None):
        self.folder = Path(folder)
        self.networks = networks
        self._lock = threading.RLock()
        self._presets: list[Preset] | None = None
        self.errors: list[str] = []          # files that could not be read at all

    # ------------------------------------------------------------------ listing
    def refresh(self) -> None:
        with self._lock:
            self._presets = None

    def presets(self) -> list[Preset]:
        with self._lock:
            if self._presets is None:
                found, errors = [], []
                for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
                    try:
                        found.append(load_preset(path))
                    except PresetError as err:
                        errors.append(str(err))
                seen: set[str] = set()
                unique = []
                for p in sorted(found, key=lambda p: (not p.is_defaults, p.order, p.name.lower())):
                    if p.name.lower() in seen:
                        errors.append(f"{p.path}: another preset is already named {p.name!r}; this file was skipped")
                        continue
                    seen.add(p.name.lower())
                    unique.append(p)
                self._presets, self.errors = unique, errors
            return list(self._presets)

    def names(self) -> list[str]:
        """Preset names in display order ("Defaults" first, then by `order`, then by name)."""
        return [p.name for p in self.presets()]

    def get(self, name: str) -> Preset:
        low = (name or "").strip().lower()
        for p in self.presets():
            if p.name.lower() == low:
                return p
        if low == DEFAULTS_NAME.lower():
            return Preset(DEFAULTS_NAME, "the declared defaults", path=self.folder / DEFAULTS_FILE)
        raise UserError(f"preset {name!r} not found in {self.folder}; available: {', '.join(self.names()) or 'none'}")

    # ------------------------------------------------------------------ using
    def load(self, name: str) -> tuple[dict[str, Any], list[str]]:
        """(request field values the preset sets, warnings naming each ignored key and the file)."""
        preset = self.get(name)
        return preset.values(), list(preset.warnings)

    def managed_loras(self) -> set[str]:
        """Every LoRA name some preset adds (applying a preset replaces these tags in the prompt)."""
        return {n for p in self.presets() for lo in p.loras for n in lo.names.values()}

    def apply(self, name: str, current: dict[str, Any] | None = None, *,
              family: str | None = None) -> tuple[dict[str, Any], list[str]]:
        """The field values after applying preset `name` on top of `current` (the UI's values).

        Returns complete, valid values (every declared field) and warnings. The defaults preset resets
        every field except the prompt. `family` (the active checkpoint's architecture: "sd1", "sdxl", ...)
        picks the preset's LoRA files.
        """
        preset = self.get(name)
        warnings = list(preset.warnings)
        where = _where(preset.path)
        base = params.declared_defaults()
        current = dict(current or {})
        if preset.is_defaults:
            base["prompt"] = current.get("prompt", base["prompt"])
        else:
            base.update({k: v for k, v in current.items() if k in params.BY_NAME})
        values = {**base, **preset.values()}
        values, more = check_values(values, set(preset.values()), where)
        warnings += more
        wanted: dict[str, float] = {}
        for lo in preset.loras:
            lora = lo.for_family(family)
            if lora is None:
                arch = family or "no checkpoint loaded"
                options = ", ".join(f"{k}: {v}" for k, v in lo.names.items())
                warnings.append(f"{preset.name}: no LoRA for this architecture ({arch}); it has {options}")
                continue
            wanted[lora] = lo.weight
            if self.networks is not None and self.networks.find_lora(lora) is None:
                source = lo.sources.get(family or "", lo.sources.get("*"))
                folders = " or ".join(str(d) for d in self.networks.paths.dirs("lora"))
                hint = f" (from {source})" if source else ""
                warnings.append(f"{preset.name}: LoRA '{lora}' not found; put {lora}.safetensors in {folders}{hint}")
        values["prompt"] = set_lora_tags(values.get("prompt", ""), wanted, self.managed_loras())
        return values, warnings

    def defaults(self) -> tuple[dict[str, Any], list[str]]:
        """The UI's start-up values: the declared defaults overlaid with defaults.json."""
        values = params.declared_defaults()
        path = self.folder / DEFAULTS_FILE
        if not path.is_file():
            return values, []
        try:
            preset = load_preset(path)
        except PresetError as err:
            return values, [f"{err}; the declared defaults are used"]
        merged, warnings = check_values({**values, **preset.values()}, set(preset.values()), str(path))
        return merged, preset.warnings + warnings

    # ------------------------------------------------------------------ saving
    def save(self, name: str, values: dict[str, Any], *, description: str = "", include_model: bool = False,
             loras: list[PresetLora] | None = None, order: int | None = None) -> Path:
        """Save `values` (current field values) as preset `name`: replaces a preset of that name, else a
        new file. Prompt and seeds are not saved; the checkpoint/VAE only with `include_model`."""
        name = _check_name(name)
        if name.lower() == DEFAULTS_NAME.lower():
            return self.save_defaults(values)
        preset = self._preset_from_values(name, values, description, include_model)
        preset.loras = list(loras or [])
        if order is not None:
            preset.order = int(order)
        with self._lock:
            existing = next((p for p in self.presets() if p.name.lower() == name.lower()), None)
            path = existing.path if existing is not None else self._free_path(name)
            self._write(path, preset)
            return path

    def save_defaults(self, values: dict[str, Any]) -> Path:
        """Save the fields that differ from the declared defaults as the UI's start-up values."""
        declared = params.declared_defaults()
        changed = {k: v for k, v in values.items()
                   if k in params.BY_NAME and k not in SAVE_SKIP and v != declared[k]
                   and k not in MODEL_FIELDS.values()}
        preset = self._preset_from_values(DEFAULTS_NAME, changed, _DEFAULTS_DESCRIPTION, False)
        with self._lock:
            path = self.folder / DEFAULTS_FILE
            self._write(path, preset)
            return path

    def reset_defaults(self) -> Path:
        """defaults.json back to no overrides: the UI starts with the declared defaults."""
        with self._lock:
            path = self.folder / DEFAULTS_FILE
            self._write(path, Preset(DEFAULTS_NAME, _DEFAULTS_DESCRIPTION))
            return path

    def delete(self, name: str) -> Path:
        preset = self.get(name)
        if preset.is_defaults:
            raise UserError("the Defaults preset cannot be deleted; use reset to defaults instead")
        with self._lock:
            if preset.path is None or not preset.path.is_file():
                raise UserError(f"preset {name!r} has no file to delete")
            preset.path.unlink()
            self._presets = None
            return preset.path

    def _preset_from_values(self, name: str, values: dict[str, Any], description: str,
                            include_model: bool) -> Preset:
        kept: dict[str, Any] = {}
        for key, value in values.items():
            field_name = params.ALIASES.get(key, key)
            param = params.BY_NAME.get(field_name)
            if param is None or field_name in SAVE_SKIP or field_name in MODEL_FIELDS.values():
                continue
            kept[field_name] = param.convert(value)   # ParameterError names the field
        preset = Preset(name, description or "", kept)
        if include_model:
            preset.checkpoint = values.get("sd_model_checkpoint") or None
            preset.vae = values.get("sd_vae") or None
        return preset

    def _free_path(self, name: str) -> Path:
        stem = preset_filename(name)[:-5]
        path = self.folder / f"{stem}.json"
        n = 2
        while path.exists() or path.name == DEFAULTS_FILE:
            path = self.folder / f"{stem}-{n}.json"
            n += 1
        return path

    def _write(self, path: Path, preset: Preset) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(preset.to_json(), indent=2, ensure_ascii=False) + "\n"
        atomic_write(path, text.encode("utf-8"))
        self._presets = None


_DEFAULTS_DESCRIPTION = ("The values the UI starts with. Fields listed in params replace the declared defaults "
                         "(pipelines/params/declarations.py); remove a field to get its declared default back.")
