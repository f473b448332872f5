"""LoRA and textual inversion through the real engine on the tiny SD1 checkpoint (and tiny SDXL encoders).

A kohya-format LoRA with random lora_up/lora_down for the tiny UNet's attention layers and the text
encoder must change the image, with weights that matter, and leave nothing behind: the next image without
it is bit-identical to one made before it was ever loaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.synth.networks import kohya_lora, save_lora, write_embedding
from pipelines.prompts.conditioning import PromptEncoder
from pipelines.prompts.networks import NetworkManager, load_embedding, parse_prompt
from pipelines.params.declarations import make_request


@dataclass
class Env:
    root: Path
    models: Path
    engine: object
    manager: object


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory) -> Env:
    from pipelines.core.devices import make_policy
    from pipelines.generate.engine import Engine
    from pipelines.models.manager import PipelineManager
    from pipelines.models.files import ModelPaths, ModelRegistry
    from pipelines.prompts.styles import StyleDatabase

    root = tmp_path_factory.mktemp("networks")
    models = root / "models"   # our own Lora/ and embeddings/; checkpoints from the shared tiny models
    paths = ModelPaths(models, extra_models_dirs=[tiny_models.models], cache_dir=root / "cache")
    manager = PipelineManager(ModelRegistry(paths), policy=make_policy("cpu", "fp32"), config_root=tiny_models.configs)
    pipe = manager.load("tiny-sd1.safetensors").pipe
    lora_dir = models / "Lora"
    save_lora(kohya_lora(pipe.unet, pipe.text_encoder, seed=1), lora_dir / "tiny_lora.safetensors")
    save_lora(kohya_lora(pipe.unet, None, seed=2), lora_dir / "sub" / "unet_only.safetensors")
    save_lora(kohya_lora(pipe.unet, None, seed=3), lora_dir / "lcm-lora-sdv1-5.safetensors")
    write_embedding(models / "embeddings" / "shinystyle.pt", torch.randn(3, 32, generator=torch.Generator().manual_seed(4)))
    (root / "styles.csv").write_text("name,prompt,negative_prompt\nWith lora,\"{prompt}, <lora:tiny_lora:1>\",\n",
                                     encoding="utf-8")
    engine = Engine(manager, styles=StyleDatabase(root / "styles.csv"))
    return Env(root, models, engine, manager)


def generate(env: Env, prompt: str, **kw):
    values = dict(prompt=prompt, steps=2, width=64, height=64, seed=1, sampler_name="Euler", cfg_scale=7.0)
    values.update(kw)
    return env.engine.txt2img(make_request(values), save=False)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def test_lora_changes_output_then_leaves_no_trace(env):
    networks = env.engine.networks
    base = generate(env, "a cat")
    full = generate(env, "a cat <lora:tiny_lora:1>")
    assert np.abs(pixels(full) - pixels(base)).max() > 0
    assert 'Lora hashes: "tiny_lora: ' in full.infotexts[0]
    assert re.search(r'Lora hashes: "tiny_lora: [0-9a-f]{12}"', full.infotexts[0])
    assert full.infotexts[0].startswith("a cat <lora:tiny_lora:1>\n")     # the infotext keeps the tag
    assert full.notices == []
    after = generate(env, "a cat")
    assert np.array_equal(pixels(after), pixels(base))                     # bit-identical: nothing leaked
    assert "Lora hashes" not in after.infotexts[0]

    loads = networks.lora_loads
    half = generate(env, "a cat <lora:tiny_lora:0.5>")
    again = generate(env, "a cat <lora:tiny_lora>")                        # <lora:name> = weight 1
    assert networks.lora_loads == loads                                     # cached: nothing reloaded
    assert np.abs(pixels(half) - pixels(full)).max() > 0
    assert np.array_equal(pixels(again), pixels(full))
    te_only = generate(env, "a cat <lora:tiny_lora:1:0>")                  # text encoder only
    assert not np.array_equal(pixels(te_only), pixels(full))
    assert not np.array_equal(pixels(te_only), pixels(base))


def test_several_loras_fused_mode_and_removal(env):
    networks = env.engine.networks
    base = generate(env, "a dog")
    one = generate(env, "a dog <lora:tiny_lora:1>")
    both = generate(env, "a dog <lora:tiny_lora:1> <lyco:sub/unet_only:0.8>")   # lyco alias, sub/ path
    assert not np.array_equal(pixels(both), pixels(one))
    assert re.search(r'Lora hashes: "tiny_lora: [0-9a-f]{12}, unet_only: [0-9a-f]{12}"', both.infotexts[0])
    networks.fuse = True
    try:
        fused = generate(env, "a dog <lora:tiny_lora:1> <lyco:sub/unet_only:0.8>")
        assert np.abs(pixels(fused) - pixels(both)).max() <= 2        # same LoRAs merged into the weights
        assert np.array_equal(pixels(generate(env, "a dog")), pixels(base))  # exact restore after unfuse
    finally:
        networks.fuse = False
    unet = env.manager.active.pipe.unet
    assert np.array_equal(pixels(generate(env, "a dog")), pixels(base))
    # Past `max_loaded` the least recently used adapters are deleted from the modules.
    networks.max_loaded = 1
    try:
        generate(env, "a dog <lora:tiny_lora:1>")
        assert networks.loaded_adapters(env.manager.active.pipe) == ["tiny_lora.safetensors"]
        assert np.array_equal(pixels(generate(env, "a dog")), pixels(base))
    finally:
        networks.max_loaded = 4
    assert unet is env.manager.active.pipe.unet


def test_merged_loras_stay_merged_while_asked_for_and_the_originals_come_back_exactly(env, monkeypatch):
    networks = env.engine.networks
    base = generate(env, "a bird")
    merges = []
    merge = networks._fuse
    monkeypatch.setattr(networks, "_fuse", lambda *a, **kw: (merges.append(a[2]), merge(*a, **kw)))
    monkeypatch.setattr(networks, "fuse", True)
    one = generate(env, "a bird <lora:tiny_lora:1>")
    two = generate(env, "a bird <lora:tiny_lora:1>")                 # the same LoRA: still merged
    assert len(merges) == 1 and np.array_equal(pixels(one), pixels(two))
    assert 'Lora hashes: "tiny_lora: ' in two.infotexts[0]
    half = generate(env, "a bird <lora:tiny_lora:0.5>")              # another weight: restore, merge again
    assert len(merges) == 2 and not np.array_equal(pixels(half), pixels(one))
    assert np.array_equal(pixels(generate(env, "a bird")), pixels(base))   # the checkpoint's own weights
    state = networks._states[env.manager.active.pipe.unet]
    assert state.backup is None and state.fused_key == ()


def test_missing_or_unknown_networks_warn_and_generation_continues(env):
    base = generate(env, "a bird")
    result = generate(env, "a bird <lora:no_such_lora:1> <hypernet:old:1>")
    assert any("LoRA 'no_such_lora' not found" in n for n in result.notices)
    assert any("'hypernet'" in n for n in result.notices)
    # The tags are taken out like A1111: the encoded prompt is "a bird  ", not the tag text.
    assert not np.array_equal(pixels(result), pixels(generate(env, "a bird <lora:no_such_lora:1>", sampler_name="Euler a")))
    bad = env.models / "Lora" / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    result = generate(env, "a bird <lora:broken:1>")
    assert any("LoRA 'broken'" in n for n in result.notices)
    assert np.array_equal(pixels(generate(env, "a bird")), pixels(base))


def test_style_with_lora_tag_applies_before_networks(env):
    styled = generate(env, "a cat", styles=["With lora"])
    direct = generate(env, "a cat, <lora:tiny_lora:1>")
    assert np.array_equal(pixels(styled), pixels(direct))
    assert styled.infotexts[0].startswith("a cat, <lora:tiny_lora:1>\n")   # infotext: the final prompt
    assert styled.request.styles == ()


def test_fast_preset_runs_with_its_lcm_lora(env):
    from pipelines.params.presets import PresetStore

    store = PresetStore(networks=env.engine.networks)
    values, warnings = store.apply("Fast — LCM 4 steps", {"prompt": "a cat", "width": 64, "height": 64, "seed": 1},
                                   family=env.manager.active.arch.family)
    assert warnings == []
    result = env.engine.txt2img(make_request(values), save=False)
    info = result.infotexts[0]
    assert "<lora:lcm-lora-sdv1-5:1>" in info and "Sampler: LCM" in info and "Steps: 4" in info
    assert re.search(r'Lora hashes: "lcm-lora-sdv1-5: [0-9a-f]{12}"', info)
    # The preset decodes with TAESD; this models folder has none, so the full VAE did it and the user is told.
    assert "VAE type: Tiny" in info
    assert [n for n in result.notices if "no TAESD weights" not in n] == [] and len(result.notices) == 1


def test_embedding_by_file_name_changes_conditioning(env):
    pipe = env.manager.active.pipe
    networks = env.engine.networks
    plain = PromptEncoder(pipe).encode("a shinystyle cat").embeds
    with networks.activate(pipe, "a shinystyle cat") as job:
        with_emb = PromptEncoder(pipe, embeddings=job.embeddings).encode(job.prompt).embeds
        unrelated = PromptEncoder(pipe, embeddings=job.embeddings).encode("a cat").embeds
        # Three vectors take three token positions: "a" + 3 + "cat" + end, then padding.
        assert job.embeddings.substitute(pipe.tokenizer, pipe.tokenizer(["a shinystyle cat"], add_special_tokens=False)
                                         ["input_ids"][0]) [1:4] == [-1, -2, -3]
        assert job.infotext()["TI hashes"].startswith("shinystyle: ")
    assert not torch.equal(with_emb, plain)
    assert torch.equal(unrelated, PromptEncoder(pipe).encode("a cat").embeds)
    # The hooks are gone after the job: the same text encodes as plain tokens again.
    assert torch.equal(PromptEncoder(pipe).encode("a shinystyle cat").embeds, plain)
    # Through the engine, in the negative prompt: TI hashes in the infotext.
    result = generate(env, "a cat", negative_prompt="shinystyle")
    assert re.search(r'TI hashes: "shinystyle: [0-9a-f]{12}"', result.infotexts[0])


def test_sdxl_two_encoder_embedding_and_misfits(tmp_path):
    from bench.synth.factory import tiny_pipeline
    from pipelines.models.files import ModelPaths

    pipe = tiny_pipeline("sdxl", seed=1)
    emb_dir = tmp_path / "models" / "embeddings"
    gen = torch.Generator().manual_seed(5)
    write_embedding(emb_dir / "xlstyle.safetensors", {"clip_l": torch.randn(2, 32, generator=gen),
                                                      "clip_g": torch.randn(2, 64, generator=gen)})
    write_embedding(emb_dir / "sdonestyle.safetensors", torch.randn(2, 32, generator=gen))
    networks = NetworkManager(ModelPaths(tmp_path / "models"))
    plain = PromptEncoder(pipe).encode("xlstyle sdonestyle dog")
    with networks.activate(pipe, "xlstyle sdonestyle dog") as job:
        cond = PromptEncoder(pipe, embeddings=job.embeddings).encode(job.prompt)
        assert list(job.embeddings.used) == ["xlstyle"]
        assert any("sdonestyle" in w and "does not fit" in w for w in job.all_warnings())
    assert not torch.equal(cond.embeds[..., :32], plain.embeds[..., :32])    # clip_l part
    assert not torch.equal(cond.embeds[..., 32:], plain.embeds[..., 32:])    # clip_g part
    assert not torch.equal(cond.pooled, plain.pooled)
    assert torch.equal(PromptEncoder(pipe).encode("xlstyle sdonestyle dog").embeds, plain.embeds)


def test_embedding_file_formats(tmp_path):
    from pipelines.prompts.networks import NetworkFile

    vec = torch.randn(2, 8)
    cases = {
        "a1111.pt": {"string_to_param": {"*": vec}, "name": "x"},
        "emb.safetensors": {"emb_params": vec},
        "diffusers.bin": {"<tok>": vec[0]},
    }
    for name, data in cases.items():
        path = tmp_path / name
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(data, str(path))
        else:
            torch.save(data, str(path))
        emb = load_embedding(NetworkFile(path.stem, path, name))
        expected = vec if name != "diffusers.bin" else vec[:1]
        assert torch.equal(emb.vectors["single"], expected), name


def test_tag_parsing():
    prompt, tags = parse_prompt("a <lora:one> b <LoRA:two:0.5> <lora:three:0.5:0.25> <lyco:four:te=0.2:unet=0.7> "
                                "<lora:bad:x> <hypernet:h:1>")
    assert prompt == "a  b     "
    got = [(t.kind, t.name, t.te, t.unet, t.error is not None) for t in tags]
    assert got == [("lora", "one", 1.0, 1.0, False), ("lora", "two", 0.5, 0.5, False),
                   ("lora", "three", 0.5, 0.25, False), ("lyco", "four", 0.2, 0.7, False),
                   ("lora", "bad", 1.0, 1.0, True), ("hypernet", "h", 1.0, 1.0, False)]
