"""The OpenCLIP side of interrogation: loading both on-disk layouts, exact fast text encoding, tokens."""
from __future__ import annotations

import json

import pytest

from bench.interrogate import TINY_CLIP_CFG, noise_image, write_open_clip
from pipelines.core.errors import ModelLoadError, UserError
from pipelines.interrogate import sources
from pipelines.interrogate.clip_model import ClipModel
from pipelines.interrogate.sources import ClipSpec, ModelSources

TINY_ARCH = "tiny-interrogate-test"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip") / "interrogate"
    write_open_clip(root / "tiny-clip", seed=3)
    return ClipModel(ModelSources([root]).clip("tiny-clip"))


def reference(model: ClipModel, texts):
    import torch

    with torch.inference_mode():
        return torch.nn.functional.normalize(model.model.encode_text(model.tokenizer(texts)).float(), dim=-1)


TEXTS = ["a cat", "a painting of a dog by Hokusai, trending on artstation, 8k", "x " * 100,
         "hello!!, world)", "", "(masterpiece:1.2), [blue] sky", "ünïcödé façade — naïve café"]


def test_length_cut_encoding_equals_encode_text(tiny):
    assert tiny._fast
    got = tiny.encode_texts(TEXTS, batch_size=3)
    assert got.shape == (len(TEXTS), 32)
    assert (got - reference(tiny, TEXTS)).abs().max() < 1e-5


@pytest.mark.parametrize("prefix", ["a photo of a cat", "a photo of a cat (sitting)", "word " * 60 + "end",
                                    "a, b, c, 3"])
def test_shared_prefix_encoding_equals_encode_text(tiny, prefix):
    adds = ["by Claude Monet", "trending on artstation", "highly detailed, 8k", ")", "(sfw)", "word " * 80, "é"]
    cont = tiny.continuations(prefix, adds)
    assert cont.texts() == [f"{prefix}, {a}" for a in adds]
    # the ids are exactly the tokenizer's (joined or tokenized whole)
    for text, n, shared_plus_rest in zip(cont.texts(), cont.lengths(), cont.rests):
        full = tiny.token_ids(text)
        assert cont.shared + shared_plus_rest == full and n == len(full)
    got = tiny.encode_continuations(cont, batch_size=2)
    assert (got - reference(tiny, cont.texts())).abs().max() < 1e-5


def test_token_counting_and_truncation(tiny):
    import open_clip

    tok = open_clip.get_tokenizer("ViT-L-14")
    for text in TEXTS:
        assert tiny.token_count(text) == len(tok.encode(text)) + 2
    assert tiny.context_length == 77
    assert tiny.fits("x " * 75) and not tiny.fits("x " * 76)
    long = ", ".join(f"phrase number {i}" for i in range(40))
    cut = tiny.truncate_to_fit(long)
    assert tiny.fits(cut) and long.startswith(cut) and not tiny.fits(cut + ", phrase number 99")
    words = tiny.truncate_to_fit("word " * 120)
    assert tiny.fits(words) and words.startswith("word word")


def test_builtin_layout_loads_with_quick_gelu(tmp_path, monkeypatch):
    """A built-in name loads from `<arch>-<tag>/open_clip_model.safetensors` with open_clip's own
    architecture config (no json) and the tag's activation: same features as the self-described folder."""
    import open_clip
    import torch

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_dir)
    spec = ClipSpec(f"{TINY_ARCH}/test", TINY_ARCH, "test", "example/tiny", True, "sd1")
    monkeypatch.setitem(sources.CLIP_MODELS, spec.name, spec)
    root = tmp_path / "interrogate"
    write_open_clip(root / spec.folder, quick_gelu=True, with_config=False, seed=5)
    write_open_clip(root / "described", quick_gelu=True, seed=5)   # same weights, config json with quick_gelu
    src = ModelSources([root])
    assert spec.name in src.clip_names() and "described" in src.clip_names()
    assert spec.folder not in src.clip_names()        # a built-in folder is listed by its model name
    builtin = ClipModel(src.clip(spec.name))
    described = ClipModel(src.clip("described"))
    assert isinstance(builtin.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    img = noise_image(40)
    assert torch.allclose(builtin.encode_image(img), described.encode_image(img), atol=1e-5)
    assert torch.allclose(builtin.encode_texts(["a cat"]), described.encode_texts(["a cat"]), atol=1e-5)


def test_broken_weights_file_is_a_load_error(tmp_path):
    root = tmp_path / "interrogate"
    write_open_clip(root / "broken")
    (root / "broken" / "open_clip_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="broken"):
        ClipModel(ModelSources([root]).clip("broken"))


def test_incomplete_caption_folder_says_what_is_missing(tmp_path):
    folder = tmp_path / "interrogate" / "blip-base"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "blip"}))
    with pytest.raises(UserError, match="incomplete: missing preprocessor_config.json, model.safetensors"):
        ModelSources([tmp_path / "interrogate"]).caption("blip-base")


def test_family_defaults():
    assert sources.clip_for_family("sd1") == "ViT-L-14/openai"
    assert sources.clip_for_family("sd2") == "ViT-H-14/laion2b_s32b_b79k"
    assert sources.clip_for_family("sdxl") == "ViT-bigG-14/laion2b_s39b_b160k"
    assert sources.clip_for_family(None) == "ViT-L-14/openai"
    # the written-out table agrees with open_clip's own pretrained table
    import open_clip

    for spec in sources.CLIP_MODELS.values():
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        assert cfg["hf_hub"].rstrip("/") == spec.hf_repo
        assert bool(cfg.get("quick_gelu", False)) == spec.quick_gelu


def test_length_batches_bound_padding_and_size():
    from pipelines.interrogate.clip_model import _length_batches

    lengths = [2] * 30 + [3] * 50 + [9] * 5 + [40]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = _length_batches(order, lengths, batch_size=32)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 32
        padded, real = max(lengths[i] for i in b) * len(b), sum(lengths[i] for i in b)
        assert padded <= 1.2 * real or len(b) == 1
