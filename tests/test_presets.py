"""Presets: shipped files validate and apply, save/load round trip, per-key errors, defaults, LoRA tags."""
from __future__ import annotations

import json
import shutil

import pytest

from pipelines.generate import samplers
from pipelines.core.errors import UserError
from pipelines.params.declarations import declared_defaults, make_request
from pipelines.params.presets import PRESETS_DIR, PresetError, PresetLora, PresetStore, load_preset, preset_filename

SHIPPED = {
    "Balanced": {"sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 25, "cfg_scale": 7.0},
    "Quality": {"enable_hr": True, "steps": 35},
    "SDXL 1024": {"width": 1024, "height": 1024},
    "Fast — LCM 4 steps": {"sampler_name": "LCM", "steps": 4},
    "Turbo 1 step": {"steps": 1, "cfg_scale": 0.0, "sampler_name": "Euler a", "scheduler": "SGM Uniform"},
}


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "presets"
    shutil.copytree(PRESETS_DIR, folder)
    return PresetStore(folder)


def test_shipped_presets_validate_and_apply():
    store = PresetStore(PRESETS_DIR)
    assert store.errors == []
    assert store.names()[0] == "Defaults" and set(SHIPPED) <= set(store.names())
    current = dict(declared_defaults(), prompt="a cat", width=768, batch_size=2)
    for preset in store.presets():
        assert preset.warnings == [], preset.warnings
        assert preset.path.name == preset_filename(preset.name) or preset.is_defaults
        values, warnings = store.apply(preset.name, current, family="sd1")
        assert warnings == [], (preset.name, warnings)
        req = make_request(values, strict=True)        # a complete, valid request
        for key, value in SHIPPED.get(preset.name, {}).items():
            assert getattr(req, key) == value, (preset.name, key)
        samplers.build_scheduler({"num_train_timesteps": 1000}, req.sampler_name, req.scheduler)
        if not preset.is_defaults:
            assert req.batch_size == 2          # fields the preset does not set keep the user's values
    fast, _ = store.apply("Fast — LCM 4 steps", current, family="sd1")
    assert fast["prompt"] == "a cat, <lora:lcm-lora-sdv1-5:1>" and 1.0 <= fast["cfg_scale"] <= 2.0
    assert store.apply("Fast — LCM 4 steps", current, family="sdxl")[0]["prompt"] == "a cat, <lora:lcm-lora-sdxl:1>"
    reset, _ = store.apply("Defaults", fast)       # every field back, the prompt kept (without preset LoRAs)
    assert reset == dict(declared_defaults(), prompt="a cat")


def test_preset_loras_swap_and_missing_file_hint(store, tmp_path):
    from pipelines.models.files import ModelPaths
    from pipelines.prompts.networks import NetworkManager

    store.networks = NetworkManager(ModelPaths(tmp_path / "models"))
    values, warnings = store.apply("Fast — LCM 4 steps", {"prompt": "a cat, <lora:mine:0.5>"}, family="sd1")
    assert values["prompt"] == "a cat, <lora:mine:0.5>, <lora:lcm-lora-sdv1-5:1>"
    assert any("lcm-lora-sdv1-5" in w and "huggingface.co/latent-consistency/lcm-lora-sdv1-5" in w for w in warnings)
    # Another preset takes the preset-managed LoRA out again; the user's own tag stays.
    values, _ = store.apply("Balanced", values, family="sd1")
    assert values["prompt"] == "a cat, <lora:mine:0.5>"
    (tmp_path / "models" / "Lora").mkdir(parents=True)
    (tmp_path / "models" / "Lora" / "lcm-lora-sdv1-5.safetensors").write_bytes(b"")
    store.networks.refresh()
    assert store.apply("Fast — LCM 4 steps", values, family="sd1")[1] == []
    _, warnings = store.apply("Fast — LCM 4 steps", values, family="sd2")
    assert any("no LoRA for this architecture (sd2)" in w for w in warnings)


def test_save_load_round_trip(store):
    current = dict(declared_defaults(), prompt="not saved", seed=1234, steps=33, cfg_scale=5.5,
                   sampler_name="DPM++ SDE", scheduler="Karras", enable_hr=True, hr_scale=1.25,
                   styles=("Sharp",), negative_prompt="blurry", sd_model_checkpoint="model.safetensors")
    path = store.save("My portrait — v2 / final", current, description="mine")
    assert path.name == "my-portrait-v2-final.json" and path.parent == store.folder
    assert not [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]
    assert "My portrait — v2 / final" in store.names()
    values, warnings = store.load("my portrait — V2 / final")          # names match case-insensitively
    assert warnings == []
    skipped = ("prompt", "seed", "subseed", "sd_model_checkpoint", "sd_vae")
    assert values == {k: v for k, v in current.items() if k not in skipped}
    assert store.get("My portrait — v2 / final").description == "mine"
    # Saving again under the same name replaces that file; the model is kept only when asked.
    assert store.save("My portrait — v2 / final", dict(current, steps=40), include_model=True) == path
    again = load_preset(path)
    assert again.params["steps"] == 40 and again.checkpoint == "model.safetensors"
    # A different name that maps to the same file name gets its own file.
    assert store.save("my portrait v2 final", current).name == "my-portrait-v2-final-2.json"
    store.delete("My portrait — v2 / final")
    assert not path.exists() and "My portrait — v2 / final" not in store.names()
    with pytest.raises(UserError):
        store.save("", current)
    with pytest.raises(UserError, match="steps"):
        store.save("bad", dict(current, steps=1000))


def test_invalid_keys_are_named_with_the_file_and_the_rest_applies(store):
    path = store.folder / "broken.json"
    path.write_text(json.dumps({
        "name": "Broken", "colour": "red",
        "params": {"stepz": 10, "steps": 500, "cfg_scale": 3, "sampler_name": "Nope", "width": 1004,
                   "sampler_index": "Euler", "styles": [1, 2]},
        "loras": [{"name": "x", "weight": "heavy"}, {"name": {"sd1": "ok-lora"}, "weight": 0.5}],
    }), encoding="utf-8")
    preset = store.get("Broken")
    text = "\n".join(preset.warnings)
    for key in ("'colour'", "'stepz'", "'steps'", "'sampler_name'", "'styles'", "'loras[0].weight'"):
        assert key in text and str(path) in text, key
    values, warnings = store.apply("Broken", {"prompt": "p", "steps": 20}, family="sd1")
    assert values["cfg_scale"] == 3.0 and values["steps"] == 20 and values["sampler_name"] == "Euler"
    assert values["width"] == 512 and any("'width'" in w and "multiple of 8" in w and str(path) in w
                                          for w in warnings)
    assert values["prompt"] == "p, <lora:ok-lora:0.5>"
    make_request(values)


def test_unreadable_files_are_reported_not_fatal(store):
    (store.folder / "bad.json").write_text("{ not json", encoding="utf-8")
    (store.folder / "list.json").write_text("[1, 2]", encoding="utf-8")
    names = store.names()
    assert "Balanced" in names
    assert any("bad.json" in e and "line 1" in e for e in store.errors)
    assert any("list.json" in e for e in store.errors)
    with pytest.raises(PresetError, match="bad.json"):
        load_preset(store.folder / "bad.json")
    with pytest.raises(UserError, match="not found"):
        store.get("Nope")


def test_defaults_preset_is_the_ui_start_up_values(store):
    assert store.defaults() == (declared_defaults(), [])
    store.save_defaults(dict(declared_defaults(), steps=30, sampler_name="DPM++ 2M", scheduler="Karras",
                             prompt="not saved"))
    data = json.loads((store.folder / "defaults.json").read_text(encoding="utf-8"))
    assert data["params"] == {"steps": 30, "sampler_name": "DPM++ 2M", "scheduler": "Karras"}
    values, warnings = store.defaults()
    assert warnings == [] and values == dict(declared_defaults(), steps=30, sampler_name="DPM++ 2M",
                                             scheduler="Karras")
    assert store.apply("Defaults", {"prompt": "keep", "steps": 5})[0]["steps"] == 30
    with pytest.raises(UserError):
        store.delete("Defaults")
    store.reset_defaults()
    assert store.defaults() == (declared_defaults(), [])


def test_filenames_are_sanitized():
    assert preset_filename("Fast — LCM 4 steps") == "fast-lcm-4-steps.json"
    assert preset_filename("../../etc/passwd") == "etc-passwd.json"
    assert preset_filename("Café Crème") == "cafe-creme.json"
    assert preset_filename("CON") == "con-preset.json"
    assert preset_filename("日本語") == "preset.json"
    assert PresetLora({"sd1": "a", "sdxl": "b"}).for_family("sdxl_refiner") is None
