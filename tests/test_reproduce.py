"""The reproduce summary: an image's checkpoint, VAE and LoRAs found among the user's files by name or by
A1111's hashes, LoRA tags renamed to local files, and every difference listed. Files here are small
stand-ins (the lookup reads names and hashes, never weights)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pipelines.images.reproduce import plan_reproduction
from pipelines.models.files import ModelPaths, ModelRegistry
from pipelines.models.hashing import addnet_hash_safetensors, sha256_file
from pipelines.params.infotext import parse_infotext
from pipelines.prompts.networks import NetworkManager


@pytest.fixture()
def models(tmp_path):
    root = tmp_path / "models"
    for sub in ("Stable-diffusion", "VAE", "Lora"):
        (root / sub).mkdir(parents=True)
    (root / "Stable-diffusion" / "dreamshaper_8.safetensors").write_bytes(b"checkpoint one" * 64)
    (root / "Stable-diffusion" / "renamed_by_me.safetensors").write_bytes(b"checkpoint two" * 64)
    (root / "VAE" / "vae-ft-mse.safetensors").write_bytes(b"a vae" * 64)
    save_file({"lora_unet_a.lora_down.weight": torch.ones(2, 2)}, str(root / "Lora" / "my_detail.safetensors"))
    paths = ModelPaths(root, cache_dir=tmp_path / "cache")
    registry = ModelRegistry(paths)
    return registry, NetworkManager(paths, hashes=registry.hashes), root


def _ckpt(registry, name):
    mf = next(m for m in registry.checkpoints if m.name == name)
    registry.ensure_hash(mf)
    return mf


def test_everything_found_is_exact(models):
    registry, networks, _ = models
    text = ("a cat <lora:my_detail:0.7>\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, "
            "Model: dreamshaper_8, VAE: vae-ft-mse")
    plan = plan_reproduction(text, registry, networks)
    assert plan.exact, plan.differences
    assert plan.checkpoint.startswith("dreamshaper_8.safetensors") and plan.vae == "vae-ft-mse.safetensors"
    assert "Reproducible here" in plan.summary()


def test_checkpoint_and_lora_found_by_hash_under_other_names(models):
    registry, networks, root = models
    mine = _ckpt(registry, "renamed_by_me.safetensors")
    lora_hash = addnet_hash_safetensors(root / "Lora" / "my_detail.safetensors")[:12]
    text = ("a cat <lora:detail_tweaker:0.7>\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64, "
            f"Model hash: {mine.sha256[:10]}, Model: original_name, Lora hashes: \"detail_tweaker: {lora_hash}\"")
    plan = plan_reproduction(text, registry, networks)
    assert plan.checkpoint == mine.title
    parsed = parse_infotext(plan.infotext)
    assert parsed.prompt == "a cat <lora:my_detail:0.7>"
    assert parsed.params["Model"] == mine.title
    assert plan.exact, plan.differences


def test_fooocus_lora_sha256_is_matched(models):
    registry, networks, root = models
    digest = sha256_file(root / "Lora" / "my_detail.safetensors")[:10]
    plan = plan_reproduction(f"x <lora:other:1>\nSteps: 2, Seed: 1, Size: 64x64, Lora hashes: \"other: {digest}\"",
                             registry, networks)
    assert parse_infotext(plan.infotext).prompt == "x <lora:my_detail:1>"


def test_missing_models_unsupported_fields_and_notes_are_listed(models):
    registry, networks, _ = models
    text = ("a cat <lora:not_here:1>\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64, Model hash: 0123456789, "
            "Model: someone_elses, VAE: kl-f8-anime2, Lora hashes: \"not_here: aaaabbbbcccc\", "
            "Some future knob: 3")
    plan = plan_reproduction(text, registry, networks, source="ComfyUI",
                             notes=["ComfyUI sampler 'euler_cfg_pp': no counterpart"])
    found = "\n".join(plan.differences)
    assert "checkpoint someone_elses [0123456789] is not among your models" in found
    assert "VAE kl-f8-anime2 is not among your VAEs" in found
    assert "LoRA not_here [aaaabbbbcccc] is not among your LoRAs" in found
    assert "Some future knob: 3" in found
    assert "euler_cfg_pp" in found
    assert not plan.exact and plan.checkpoint is None
    assert "made with ComfyUI" in plan.summary()


def test_other_version_and_other_vae(models):
    registry, networks, _ = models
    mine = _ckpt(registry, "dreamshaper_8.safetensors")
    text = "a\nSteps: 2, Seed: 1, Size: 64x64, Model hash: ffffffffff, Model: dreamshaper_8"
    # The loaded checkpoint is another one: its VAE says nothing about how the image will decode.
    assert "VAE" not in "\n".join(plan_reproduction(text, registry, networks,
                                                    active=("other [0]", "vae-ft-mse.safetensors")).differences)
    plan = plan_reproduction(text, registry, networks, active=(mine.title, "vae-ft-mse.safetensors"))
    found = "\n".join(plan.differences)
    assert "another version" in found
    assert "the image used its checkpoint's own VAE; yours is set to vae-ft-mse.safetensors" in found
    assert plan.checkpoint.startswith("dreamshaper_8")


def test_civitai_hashes_json_and_unhashed_checkpoints(models):
    registry, networks, root = models
    mine = _ckpt(registry, "renamed_by_me.safetensors")
    lora_hash = addnet_hash_safetensors(root / "Lora" / "my_detail.safetensors")[:10]
    text = ("a cat <lora:tweak:1>\nSteps: 20, Seed: 1, Size: 64x64, Model: original_name, "
            f"Hashes: {{\"model\": \"{mine.sha256[:10]}\", \"lora:tweak\": \"{lora_hash}\"}}")
    plan = plan_reproduction(text, registry, networks)
    assert plan.checkpoint == mine.title
    assert parse_infotext(plan.infotext).prompt == "a cat <lora:my_detail:1>"
    assert plan.exact, plan.differences              # the JSON's pieces are not taken for parameters
    # dreamshaper_8 has never been hashed: a hash that is not known may be its
    missing = plan_reproduction("a\nSteps: 2, Seed: 1, Size: 64x64, Model hash: 0123456789, Model: gone",
                                registry, networks)
    assert "1 of yours have no hash yet" in "\n".join(missing.differences)
