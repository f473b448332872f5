"""CLIP interrogation end to end with tiny random models of the real architectures.

A tiny BLIP (transformers BlipForConditionalGeneration + BlipProcessor with a BERT tokenizer) and a
tiny OpenCLIP CLIP (real OpenAI BPE tokenizer, 77-token context) are written in the
`models/interrogate/` layout and loaded through the real loading code, with sockets blocked and
HF_HUB_OFFLINE=1. Captions and prompts are noise; the code paths are the real ones.
"""
from __future__ import annotations

import gc
import socket
import weakref

import pytest

from bench.interrogate import noise_image, tiny_label_lists, write_blip, write_open_clip
from pipelines.core.errors import ParameterError, UserError
from pipelines.interrogate import MODES, TABLES, InterrogateOptions, Interrogator, load_label_lists

CLIP = "tiny-clip"
CAPTION = "blip-tiny"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models") / "interrogate"
    write_open_clip(root / CLIP)
    write_blip(root / CAPTION)
    return root


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def make(models_dir, tmp_path, offline):
    def _make(**kw) -> Interrogator:
        kw.setdefault("cache_dir", tmp_path / "cache")
        kw.setdefault("label_lists", tiny_label_lists())
        return Interrogator([models_dir], clip_model=CLIP, caption_model=CAPTION, **kw)

    return _make


@pytest.fixture(scope="module")
def image():
    return noise_image(96)


def clip_tokens(prompt: str) -> int:
    """Token count with open_clip's own tokenizer (start + text + end)."""
    import open_clip

    return len(open_clip.get_tokenizer("ViT-L-14").encode(prompt)) + 2


# ---------------------------------------------------------------------- modes

def test_every_mode_end_to_end(make, image):
    it = make()
    assert set(it.clip_models()) >= {CLIP, "ViT-L-14/openai"}
    assert CAPTION in it.caption_models()
    assert it.sources.available_locally(CLIP) and it.sources.available_locally(CAPTION)
    assert not it.sources.available_locally("ViT-L-14/openai") and not it.sources.available_locally("blip-base")
    results = {mode: it.interrogate(image, mode) for mode in MODES}
    for mode, res in results.items():
        assert isinstance(res.prompt, str) and res.prompt.strip(), mode
        assert res.mode == mode
        assert clip_tokens(res.prompt) <= 77, mode
    cap = results["caption"].caption
    assert cap and results["caption"].prompt == cap and results["caption"].similarity is None
    assert results["fast"].prompt.startswith(cap)
    assert results["classic"].prompt.startswith(cap)
    # classic: "caption, medium artist, trending, movement, 3 flavors"
    lists = tiny_label_lists()
    parts = results["classic"].prompt[len(cap):].split(", ")
    assert any(p in lists["trendings"] for p in parts) and any(p in lists["movements"] for p in parts)
    assert results["negative"].caption is None and results["negative"].caption_model is None
    for mode in ("fast", "classic", "best", "negative"):
        res = results[mode]
        assert res.clip_model == CLIP and -1.0 <= res.similarity <= 1.0
        assert res.tops and all(len(v) <= 5 for v in res.tops.values())
    assert set(results["best"].tops) == {"artists", "flavors", "mediums", "movements", "trendings"}
    scores = [s for _, s in results["best"].tops["flavors"]]
    assert scores == sorted(scores, reverse=True)
    neg = [s for _, s in results["negative"].tops["flavors"]]
    assert neg == sorted(neg)   # least similar first
    # the best mode's answer is at least as similar as the other candidates it considered
    assert results["best"].similarity >= max(results["fast"].similarity, results["classic"].similarity) - 1e-4
    assert results["best"].to_dict()["prompt"] == results["best"].prompt
    assert it.counters.chain_steps > 0


def test_given_caption_skips_caption_model(make, image):
    import numpy as np

    it = make()
    res = it.interrogate(np.asarray(image), "fast", caption="a picture of noise")   # arrays work too
    assert res.prompt.startswith("a picture of noise, ")
    assert it.captioner is None and it.counters.caption_loads == 0


def test_choosing_another_clip_model(make, models_dir, image):
    write_open_clip(models_dir / "tiny-clip-b", seed=7)
    it = make()
    a = it.interrogate(image, "best", caption="x")
    b = it.interrogate(image, "best", caption="x", clip_model="tiny-clip-b")
    assert (a.clip_model, b.clip_model, it.clip.name) == (CLIP, "tiny-clip-b", "tiny-clip-b")
    assert it.counters.clip_loads == 2 and it.counters.table_computes == 10   # tables per model
    assert a.similarity != b.similarity


def test_best_and_negative_respect_the_77_token_context(make, image):
    lists = tiny_label_lists()
    long_flavors = [f"{w} " * 6 + f"variant {i}" for i, w in enumerate(
        "red green blue gold silver amber violet teal olive coral ivory azure crimson scarlet ochre".split())]
    lists["flavors"] = long_flavors + lists["flavors"]
    lists["negative"] = [f"ugly {w} artifact " * 3 for w in "one two three four five six seven eight".split()]
    it = make(label_lists=lists)
    opts = InterrogateOptions(min_flavors=60, max_flavors=60)   # the chain only stops at the limit
    cap = "a long caption about a picture of a landscape with many things in it " * 2
    tok_len = it.load_clip().token_count
    for mode in ("best", "negative"):
        steps = it.counters.chain_steps
        res = it.interrogate(image, mode, caption=cap, options=opts)
        n = clip_tokens(res.prompt)
        assert n == tok_len(res.prompt)
        assert n <= 77, (mode, n, res.prompt)
        # 60 steps were forced: only the context limit can have ended the chain earlier
        assert it.counters.chain_steps - steps < 60
    # a caption longer than the context is cut to fit
    res = it.interrogate(image, "fast", caption="word " * 120)
    assert clip_tokens(res.prompt) <= 77


def test_empty_lists_are_allowed(make, image):
    lists = tiny_label_lists()
    lists["movements"] = []
    lists["trendings"] = []
    it = make(label_lists=lists)
    for mode in ("fast", "classic", "best"):
        res = it.interrogate(image, mode, caption="x")
        assert res.prompt.startswith("x, ") and res.tops["movements"] == []


def test_options_and_names_are_validated(make, image):
    it = make()
    with pytest.raises(ParameterError, match="mode"):
        it.interrogate(image, "slow")
    with pytest.raises(ParameterError, match="max_flavors"):
        it.interrogate(image, "fast", options=InterrogateOptions(max_flavors=-1))
    with pytest.raises(UserError, match="unknown CLIP model"):
        it.interrogate(image, "fast", clip_model="../" + CLIP)
    with pytest.raises(UserError, match="unknown caption model"):
        it.interrogate(image, "caption", caption_model="nope")
    with pytest.raises(UserError, match="no image"):
        it.interrogate(None, "fast")


def test_clip_score_and_rank(make, image):
    it = make()
    score = it.clip_score(image, "a photo of noise")
    assert 0.0 <= score <= 100.0
    sims = it.similarities(image, ["a", "b c", "d"])
    assert len(sims) == 3 and all(-1 <= s <= 1 for s in sims)
    top = it.rank(image, "mediums", top_k=3)
    assert len(top) == 3 and all(p in tiny_label_lists()["mediums"] for p, _ in top)


# ---------------------------------------------------------------------- embedding cache

def test_label_embeddings_are_cached_on_disk(make, image, tmp_path):
    import torch

    it = make()
    it.interrogate(image, "fast", caption="x")
    c = it.counters
    n_tables = 5
    assert c.table_computes == n_tables and c.table_cache_hits == 0
    assert c.labels_embedded == sum(len(v) for k, v in tiny_label_lists().items() if k != "negative")
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == sorted(f"{CLIP}__{t}.safetensors" for t in ("artists", "flavors", "mediums", "movements",
                                                               "trendings"))
    first = {k: v.embeds.clone() for k, v in it._tables.items()}

    # a second start: every table from the cache, nothing encoded
    again = make()
    res = again.interrogate(image, "fast", caption="x")
    assert again.counters.table_cache_hits == n_tables
    assert again.counters.table_computes == 0 and again.counters.labels_embedded == 0
    for k, v in again._tables.items():
        assert v.from_cache and torch.equal(v.embeds, first[k])
    assert res.prompt

    # a changed list: only that table is recomputed
    lists = tiny_label_lists()
    lists["flavors"] = lists["flavors"] + ["a brand new flavor"]
    changed = make(label_lists=lists)
    changed.interrogate(image, "fast", caption="x")
    assert changed.counters.table_computes == 1 and changed.counters.table_cache_hits == n_tables - 1
    assert changed.counters.labels_embedded == len(lists["flavors"])
    assert len(changed._tables["flavors"]) == len(lists["flavors"])
    # ... and the cache now holds the new list
    third = make(label_lists=lists)
    third.tables(["flavors"])
    assert third.counters.table_cache_hits == 1 and third.counters.table_computes == 0


def test_cache_is_keyed_by_weights(models_dir, tmp_path, offline, image):
    """Same model name, different weights file → the cached embeddings are not reused."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(models_dir / CAPTION, other / CAPTION)
    write_open_clip(other / CLIP, seed=1)
    lists = {"mediums": tiny_label_lists()["mediums"]}
    a = Interrogator([models_dir], cache_dir=tmp_path / "c", clip_model=CLIP, caption_model=CAPTION, label_lists=lists)
    a.tables(["mediums"])
    b = Interrogator([other], cache_dir=tmp_path / "c", clip_model=CLIP, caption_model=CAPTION, label_lists=lists)
    b.tables(["mediums"])
    assert a.counters.table_computes == 1 and b.counters.table_computes == 1 and b.counters.table_cache_hits == 0


def test_damaged_cache_file_is_recomputed(make, tmp_path):
    it = make()
    it.tables(["mediums"])
    path = it.cache.path(CLIP, "mediums")
    path.write_bytes(b"not a safetensors file")
    again = make()
    again.tables(["mediums"])
    assert again.counters.table_computes == 1
    assert make().tables(["mediums"]) and path.stat().st_size > 100


def test_shipped_lists_load_without_embedding(make):
    lists = load_label_lists()
    counts = {k: len(v) for k, v in lists.items()}
    assert set(counts) == set(TABLES)
    assert counts["flavors"] > 100_000 and counts["artists"] > 10_000 and counts["artists"] % 2 == 0
    assert 90 <= counts["mediums"] <= 200 and 150 <= counts["movements"] <= 300
    assert counts["trendings"] == 72 and counts["negative"] >= 40
    assert lists["artists"][0].startswith("by ") and any(a.startswith("inspired by ") for a in lists["artists"])
    assert all(p == p.strip() and p for v in lists.values() for p in v[:1000])
    # an Interrogator without overrides sees the same lists, and reading them embeds nothing
    it = make(label_lists=None)
    assert {k: len(v) for k, v in it.label_lists().items()} == {k: len(set(v)) for k, v in lists.items()}
    assert it.clip is None and it.counters.labels_embedded == 0


def test_lists_dir_overrides_a_shipped_list(tmp_path):
    (tmp_path / "artists.txt").write_text("Alpha\nBeta\n\n")
    (tmp_path / "mediums.txt").write_text("a fresco\n")
    lists = load_label_lists(tmp_path, only=("artists", "mediums", "trendings"))
    assert lists["artists"] == ["by Alpha", "by Beta", "inspired by Alpha", "inspired by Beta"]
    assert lists["mediums"] == ["a fresco"] and len(lists["trendings"]) == 72


def test_interrupt_during_embedding_writes_nothing(make, image, tmp_path):
    from pipelines.core.errors import Interrupted

    def stop(stage, fraction):
        if stage.startswith("embedding flavors"):
            raise Interrupted()

    it = make(batch_size=4)
    it.add_listener(stop)
    with pytest.raises(Interrupted):
        it.interrogate(image, "fast", caption="x")
    assert not (tmp_path / "cache" / f"{CLIP}__flavors.safetensors").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]
    it._listeners.remove(stop)
    assert it.interrogate(image, "fast", caption="x").prompt   # usable afterwards; the lock was released


def test_from_app_model_paths(models_dir, tmp_path, offline, image):
    from pipelines.models.files import ModelPaths

    paths = ModelPaths(models_dir=tmp_path / "models", extra_models_dirs=[models_dir.parent])
    it = Interrogator.from_paths(paths, clip_model=CLIP, caption_model=CAPTION, label_lists=tiny_label_lists())
    assert it.sources.dirs == [tmp_path / "models" / "interrogate", models_dir]
    assert it.cache.dir == tmp_path / "models" / "interrogate" / ".cache"
    assert it.interrogate(image, "classic").prompt
    assert (it.cache.dir / f"{CLIP}__flavors.safetensors").is_file()
    assert ".cache" not in it.clip_models()
    with_cache = Interrogator.from_paths(ModelPaths(models_dir=tmp_path / "m", cache_dir=tmp_path / "c"))
    assert with_cache.cache.dir == tmp_path / "c" / "interrogate"


# ---------------------------------------------------------------------- memory

def test_unload_frees_the_models(make, image):
    it = make()
    it.interrogate(image, "fast")
    clip_ref = weakref.ref(it.clip.model)
    cap_ref = weakref.ref(it.captioner.model)
    it.unload()
    gc.collect()
    assert it.clip is None and it.captioner is None and not it._tables
    assert clip_ref() is None and cap_ref() is None
    assert it.loaded()["clip_model"] is None
    # and it loads again on demand (tables from the disk cache)
    res = it.interrogate(image, "fast")
    assert res.prompt and it.counters.clip_loads == 2 and it.counters.table_cache_hits == 5


def test_release_device_and_offload_hook(make, image, monkeypatch):
    """With an accelerator: the diffusion checkpoint is offloaded around each job, models move to the
    device for the job and back to the CPU on release. ("cpu:0" stands in for the accelerator.)"""
    calls = []

    def offload():
        calls.append("offload")
        return lambda: calls.append("restore")

    monkeypatch.setattr(Interrogator, "_on_gpu", property(lambda self: True))
    it = make(device="cpu:0", offload_diffusion=offload)
    it.interrogate(image, "fast")
    assert calls == ["offload", "restore"]
    assert it.clip.device == "cpu:0" and it.captioner.device == "cpu:0"
    assert it.release_device() is True
    assert it.clip.device == "cpu" and it.captioner.device == "cpu"
    assert it.release_device() is False          # nothing left on the device
    it.interrogate(image, "caption")
    assert calls == ["offload", "restore"] * 2 and it.captioner.device == "cpu:0"
    assert it.release_device(unload=True) is True and it.clip is None and it.captioner is None

    # keep_on_device=False: back to the CPU after every job; low_vram: one model on the device at a time
    it = make(device="cpu:0", keep_on_device=False, low_vram=True)
    seen = []
    orig = type(it)._use

    def spy(self, model):
        out = orig(self, model)
        seen.append(sum(m is not None and m.device == "cpu:0" for m in (self.clip, self.captioner)))
        return out

    monkeypatch.setattr(Interrogator, "_use", spy)
    it.interrogate(image, "best")
    assert seen and max(seen) == 1
    assert it.clip.device == "cpu" and it.captioner.device == "cpu"


def test_offload_hook_not_called_on_cpu(make, image):
    calls = []
    it = make(offload_diffusion=lambda: calls.append(1))
    it.interrogate(image, "caption")
    assert calls == [] and it.release_device() is False


# ---------------------------------------------------------------------- offline

def test_missing_models_offline_say_what_to_put_where(tmp_path, offline, image):
    empty = tmp_path / "models" / "interrogate"
    it = Interrogator([empty], cache_dir=tmp_path / "cache")
    with pytest.raises(UserError) as err:
        it.interrogate(image, "fast", caption="x")
    msg = str(err.value)
    assert "ViT-L-14/openai" in msg and "offline" in msg
    assert str(empty / "ViT-L-14-openai" / "open_clip_model.safetensors") in msg
    assert "huggingface.co/timm/vit_large_patch14_clip_224.openai" in msg
    with pytest.raises(UserError) as err:
        it.interrogate(image, "caption")
    msg = str(err.value)
    assert "blip-large" in msg and str(empty / "blip-large") in msg and "model.safetensors" in msg
    assert not empty.exists() or not any(empty.iterdir())   # nothing half-written


def test_download_without_network_is_a_user_error(tmp_path, monkeypatch):
    """Online mode but no network: a quick connection probe fails, with the same actionable message
    (the Hub client alone would retry for ~25 s per file); a Hub client failure reads the same."""
    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors

    from pipelines.interrogate import sources

    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    empty = tmp_path / "interrogate"
    it = Interrogator([empty], cache_dir=tmp_path / "cache", caption_model="blip-base")
    target = empty / "ViT-L-14-openai" / "open_clip_model.safetensors"
    with pytest.raises(UserError, match=r"CLIP model ViT-L-14/openai is not on disk .*cannot reach") as err:
        it.load_clip()
    assert str(target) in str(err.value)
    with pytest.raises(UserError, match=r"caption model blip-base .*cannot be downloaded"):
        it.load_caption()

    monkeypatch.setattr(sources, "hub_reachable", lambda: None)   # the probe passes, the client fails
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(UserError, match=r"could not download CLIP model ViT-L-14/openai .*blocked") as err:
        it.load_clip()
    assert str(target) in str(err.value)
    assert not empty.exists() or not any(empty.iterdir())   # no half-made folder
    disabled = Interrogator([empty], cache_dir=tmp_path / "cache", allow_download=False)
    with pytest.raises(UserError, match="downloads are disabled"):
        disabled.load_clip()


def test_download_lands_in_the_models_folder(tmp_path, monkeypatch, models_dir, image):
    """A built-in model missing on disk is fetched into models/interrogate/<folder> with progress."""
    import shutil

    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors

    from pipelines.interrogate import sources

    hub = tmp_path / "hub"
    shutil.copytree(models_dir / CAPTION, hub / "Salesforce/blip-image-captioning-base")
    fetched = []

    def fake_download(repo_id, filename, local_dir, tqdm_class=None, **kw):
        src = hub / repo_id / filename
        if not src.is_file():
            err = huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo_id}")
            raise err
        bar = tqdm_class(total=src.stat().st_size, disable=True)
        bar.update(src.stat().st_size)
        fetched.append(filename)
        return shutil.copy(src, local_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(sources, "hub_offline", lambda: False)
    monkeypatch.setattr(sources, "hub_reachable", lambda: None)
    stages = []
    target = tmp_path / "interrogate"
    it = Interrogator([target], cache_dir=tmp_path / "cache", caption_model="blip-base",
                      progress=lambda s, f: stages.append((s, f)))
    assert it.caption(noise_image(64))
    assert (target / "blip-base" / "model.safetensors").is_file()
    assert not (target / ".download-blip-base").exists()
    assert "config.json" in fetched and "model.safetensors" in fetched and "pytorch_model.bin" not in fetched
    assert any(s.startswith("downloading caption model blip-base") for s, _ in stages)
    assert it.sources.downloads == 1
    # the next start finds it on disk
    again = Interrogator([target], cache_dir=tmp_path / "cache", caption_model="blip-base")
    again.load_caption()
    assert again.sources.downloads == 0
