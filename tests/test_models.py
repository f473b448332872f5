"""Checkpoint discovery, A1111 titles and hashes, header-only architecture detection, safe .ckpt loading."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipelines.models import detect
from pipelines.core.errors import ModelLoadError, UserError
from pipelines.models.hashing import legacy_hash
from pipelines.models.loading import inspect_checkpoint, read_ckpt_state_dict
from pipelines.models.files import ModelFile, ModelPaths, ModelRegistry
from pipelines.models.tokenizers import clip_tokenizer


def test_clip_tokenizer_matches_known_ids():
    assert clip_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = clip_tokenizer("!")("cat", padding="max_length").input_ids
    assert len(padded) == 77 and padded[:3] == [49406, 2368, 49407] and padded[3] == 0


def _touch_ckpt(path: Path, payload: bytes = b"x" * 2_000_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_discovery_a1111_layout_recursive_extra_dirs_and_refresh(tmp_path):
    own = tmp_path / "models"
    a1111 = tmp_path / "a1111" / "models"
    extra = tmp_path / "extra"
    _touch_ckpt(own / "Stable-diffusion" / "mine.safetensors")
    _touch_ckpt(a1111 / "Stable-diffusion" / "deep" / "nested" / "theirs.ckpt")
    _touch_ckpt(a1111 / "Stable-diffusion" / "theirs.vae.safetensors")       # sidecar VAE, not a checkpoint
    _touch_ckpt(a1111 / "VAE" / "vae-ft-mse.safetensors")
    (extra / "folder-model" / "unet").mkdir(parents=True)
    (extra / "folder-model" / "model_index.json").write_text("{}")
    _touch_ckpt(extra / "folder-model" / "unet" / "diffusion_pytorch_model.safetensors")
    reg = ModelRegistry(ModelPaths(own, ckpt_dirs=[extra], extra_models_dirs=[a1111], cache_dir=tmp_path / "c"))
    names = [m.name for m in reg.checkpoints]
    assert names == ["deep/nested/theirs.ckpt", "folder-model", "mine.safetensors"]
    assert [v.name for v in reg.vaes] == ["vae-ft-mse.safetensors"]
    assert reg.find_checkpoint("theirs").name == "deep/nested/theirs.ckpt"
    assert reg.find_checkpoint("folder-model").kind == "diffusers"

    _touch_ckpt(own / "Stable-diffusion" / "new.safetensors")
    assert "new.safetensors" not in [m.name for m in reg.checkpoints]
    reg.refresh()
    assert "new.safetensors" in [m.name for m in reg.checkpoints]


def test_titles_use_a1111_hashes_cached_by_path_size_mtime(tmp_path):
    payload = os.urandom(1_200_000)
    ckpt = _touch_ckpt(tmp_path / "models" / "Stable-diffusion" / "m.safetensors", payload)
    paths = ModelPaths(tmp_path / "models", cache_dir=tmp_path / "cache")
    reg = ModelRegistry(paths)
    mf = reg.find_checkpoint("m.safetensors")
    assert mf.title == "m.safetensors"  # listing never hashes
    full = hashlib.sha256(payload).hexdigest()
    assert reg.ensure_hash(mf) == full
    assert mf.title == f"m.safetensors [{full[:10]}]" and reg.hashes.computed == 1

    reg2 = ModelRegistry(paths)  # a new start reads the cache file: no second hash of a big file
    mf2 = reg2.find_checkpoint(full[:10])
    assert mf2.sha256 == full and reg2.hashes.computed == 0
    assert reg2.find_checkpoint(f"m.safetensors [{full[:10]}]") is mf2
    # legacy A1111 hash: sha256 of 64 KiB at offset 1 MiB, 8 hex chars
    legacy = hashlib.sha256(payload[0x100000:0x110000]).hexdigest()[:8]
    assert legacy_hash(ckpt) == legacy and reg2.find_checkpoint(legacy) is mf2

    os.utime(ckpt, (1, 1))  # changed mtime → re-hash
    reg3 = ModelRegistry(paths)
    assert reg3.find_checkpoint("m").sha256 is None
    reg3.ensure_hash(reg3.find_checkpoint("m"))
    assert reg3.hashes.computed == 1

    off = ModelRegistry(ModelPaths(tmp_path / "models", cache_dir=tmp_path / "cache2"), hashing=False)
    assert off.ensure_hash(off.find_checkpoint("m")) is None


def test_lookup_never_accepts_paths(tmp_path):
    _touch_ckpt(tmp_path / "models" / "Stable-diffusion" / "m.safetensors")
    outside = _touch_ckpt(tmp_path / "secret.safetensors")
    reg = ModelRegistry(ModelPaths(tmp_path / "models", cache_dir=tmp_path / "c"))
    for query in (str(outside), "../secret.safetensors", "../../secret", "nope"):
        with pytest.raises(UserError, match="not found"):
            reg.find_checkpoint(query)


@pytest.mark.parametrize("arch, family, inpaint", [
    ("sd1", "sd1", False), ("sd1_inpaint", "sd1", True), ("sd2", "sd2", False),
    ("sdxl", "sdxl", False), ("sdxl_refiner", "sdxl_refiner", False),
])
def test_detect_architecture_from_header_only(tiny_models, arch, family, inpaint, monkeypatch):
    from conftest import FILES

    path = tiny_models.checkpoints / FILES[arch]
    # The header is enough: no tensor data is read.
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("tensor data read"))
    a = inspect_checkpoint(ModelFile(path, path.name, "safetensors"))
    assert (a.family, a.inpaint, a.prediction_type) == (family, inpaint, "epsilon")


def test_sd2_v_prediction_from_sidecar(tiny_models, tmp_path):
    from conftest import FILES

    src = tiny_models.checkpoints / FILES["sd2"]
    for sidecar, content, expected in (
        ("yaml", "model:\n  params:\n    parameterization: \"v\"\n", "v_prediction"),
        ("json", json.dumps({"prediction_type": "v_prediction"}), "v_prediction"),
        ("yaml", "model:\n  params:\n    linear_start: 0.00085\n", "epsilon"),
    ):
        folder = tmp_path / sidecar / content[:5].strip()
        folder.mkdir(parents=True, exist_ok=True)
        ck = folder / "m.safetensors"
        shutil.copy(src, ck)
        (folder / f"m.{sidecar}").write_text(content)
        assert inspect_checkpoint(ModelFile(ck, ck.name, "safetensors")).prediction_type == expected
    bare = tmp_path / "bare.safetensors"
    shutil.copy(src, bare)
    mf = ModelFile(bare, bare.name, "safetensors")
    assert inspect_checkpoint(mf).prediction_type == "epsilon"
    assert inspect_checkpoint(mf, "v_prediction").prediction_type == "v_prediction"  # the setting decides


def test_detect_rejects_non_checkpoints_and_broken_files(tmp_path):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ModelLoadError, match="lora.safetensors: not a Stable Diffusion checkpoint"):
        inspect_checkpoint(ModelFile(lora, lora.name, "safetensors"))

    good = tmp_path / "t.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
               "cond_stage_model.transformer.x": torch.zeros(1000)}, str(good))
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelLoadError, match="truncated"):
        inspect_checkpoint(ModelFile(trunc, trunc.name, "safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(ModelLoadError, match="garbage.safetensors"):
        inspect_checkpoint(ModelFile(garbage, garbage.name, "safetensors"))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty or truncated"):
        inspect_checkpoint(ModelFile(empty, empty.name, "safetensors"))
    with pytest.raises(ModelLoadError, match="file not found"):
        inspect_checkpoint(ModelFile(tmp_path / "gone.safetensors", "gone.safetensors", "safetensors"))
    unknown = tmp_path / "unknown.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}, str(unknown))
    with pytest.raises(ModelLoadError, match="no known text encoder"):
        inspect_checkpoint(ModelFile(unknown, unknown.name, "safetensors"))


class _Evil:
    """Unpickling this would create a file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_ckpt_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)},
                "payload": _Evil(str(marker))}, evil)
    with pytest.raises(ModelLoadError, match="refused"):
        read_ckpt_state_dict(evil)
    with pytest.raises(ModelLoadError, match="refused"):
        inspect_checkpoint(ModelFile(evil, evil.name, "ckpt"))
    assert not marker.exists()


def test_plain_tensor_ckpt_is_read(tmp_path):
    ck = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2)}, "global_step": 5}, ck)
    assert torch.equal(read_ckpt_state_dict(ck)["a"], torch.ones(2))
    legacy = tmp_path / "legacy.ckpt"
    legacy.write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ModelLoadError, match="not a PyTorch zip checkpoint"):
        read_ckpt_state_dict(legacy)


def test_detect_diffusers_folders(tiny_models):
    from conftest import FOLDERS

    assert detect.detect_diffusers_folder(tiny_models.checkpoints / FOLDERS["sd1"]).family == "sd1"
    assert detect.detect_diffusers_folder(tiny_models.checkpoints / FOLDERS["sdxl"]).family == "sdxl"
