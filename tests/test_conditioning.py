"""Prompt text → embeddings (PromptEncoder) on the tiny SD1 and SDXL text encoders.

Checked against what a user can verify independently: diffusers' own `encode_prompt` for prompts
that fit one chunk, and the text encoder run by hand on the tokenizer's ids for the rest
(emphasis, >75 tokens, BREAK, clip skip, SDXL's two encoders and pooled embedding, schedules).
"""
from __future__ import annotations

import pytest
import torch

from pipelines.prompts.conditioning import PromptEncoder, at_step
from pipelines.core.devices import make_policy
from pipelines.models.manager import PipelineManager
from pipelines.models.files import ModelPaths, ModelRegistry
from pipelines.prompts.parser import PromptSyntaxError

from conftest import FILES

LONG = "a photo of a red cat sitting on a green chair in the morning light " * 7  # no commas: no backtrack


@pytest.fixture(scope="module")
def manager(tiny_models, tmp_path_factory):
    paths = ModelPaths(tiny_models.models, cache_dir=tmp_path_factory.mktemp("cond-cache"))
    return PipelineManager(ModelRegistry(paths, hashing=False), policy=make_policy("cpu", "fp32"), cache_size=2,
                           config_root=tiny_models.configs)


@pytest.fixture(scope="module")
def sd1(manager):
    manager.load(FILES["sd1"])
    return manager.pipeline("txt2img")


@pytest.fixture(scope="module")
def sd2(manager):
    manager.load(FILES["sd2"])
    return manager.pipeline("txt2img")


@pytest.fixture(scope="module")
def sdxl(manager):
    manager.load(FILES["sdxl"])
    return manager.pipeline("txt2img")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]


def _row(tokenizer, ids: list[int]) -> list[int]:
    """[bos] + ids + [eos], padded to 77 with the tokenizer's pad token (diffusers' layout)."""
    assert len(ids) <= 75
    row = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return row + [tokenizer.pad_token_id] * (77 - len(row))


@torch.no_grad()
def _hidden(model, rows: list[list[int]], layer: int | None = None) -> torch.Tensor:
    """Hidden states of `rows` by hand: last layer (final norm included) or hidden_states[layer] (no norm)."""
    out = model(torch.tensor(rows), output_hidden_states=True)
    h = out.last_hidden_state if layer is None else out.hidden_states[layer]
    return h.reshape(1, -1, h.shape[-1])


@torch.no_grad()
def _diffusers_sd1(pipe, prompt: str) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    return embeds


# ------------------------------------------------------------------------- SD1: one encoder

def test_plain_prompt_matches_diffusers(sd1):
    cond = PromptEncoder(sd1).encode("a photo of a cat")
    assert cond.embeds.shape == (1, 77, sd1.text_encoder.config.hidden_size) and cond.pooled is None
    torch.testing.assert_close(cond.embeds, _diffusers_sd1(sd1, "a photo of a cat"), rtol=0, atol=1e-6)


def test_emphasis_changes_the_embedding_a1111_style(sd1):
    enc = PromptEncoder(sd1)
    plain = enc.encode("a photo of a cat").embeds
    weighted = enc.encode("a photo of a (cat:1.3)").embeds
    assert weighted.shape == plain.shape
    assert not torch.allclose(weighted, plain)
    # weight 1.0 is the plain prompt exactly; (x) == (x:1.1); [x] == (x:1/1.1)
    torch.testing.assert_close(enc.encode("a photo of a (cat:1.0)").embeds, plain, rtol=0, atol=0)
    torch.testing.assert_close(enc.encode("a photo of a (cat)").embeds, enc.encode("a photo of a (cat:1.1)").embeds)
    torch.testing.assert_close(enc.encode("a photo of a ((cat))").embeds,
                               enc.encode(f"a photo of a (cat:{1.1 * 1.1})").embeds)
    torch.testing.assert_close(enc.encode("a photo of a [cat]").embeds,
                               enc.encode(f"a photo of a (cat:{1 / 1.1})").embeds)
    # Only the weighted token's row moves. (The mean restore is a no-op here: a random-init final
    # LayerNorm has zero-mean outputs; the SDXL test below checks it on un-normalised states.)
    ids = _ids(sd1.tokenizer, "a photo of a cat")
    pos = len(ids)  # "cat", after the start token
    changed = (weighted - plain).abs().amax(dim=-1)[0]
    assert changed[pos] > 0.1 and float(changed[torch.arange(77) != pos].max()) < 1e-5
    torch.testing.assert_close(weighted[0, pos], plain[0, pos] * 1.3)


def test_escaped_brackets_are_literal_text(sd1):
    enc = PromptEncoder(sd1)
    escaped = enc.encode(r"a \(cat\) photo").embeds
    torch.testing.assert_close(escaped, _diffusers_sd1(sd1, "a (cat) photo"), rtol=0, atol=1e-6)
    assert not torch.allclose(escaped, enc.encode("a (cat) photo").embeds)


def test_long_prompt_is_chunked_never_truncated(sd1):
    tok = sd1.tokenizer
    ids = _ids(tok, LONG)
    assert 75 < len(ids) <= 150
    cond = PromptEncoder(sd1).encode(LONG)
    assert cond.embeds.shape[1] == 154 and cond.chunks == 2
    expected = _hidden(sd1.text_encoder, [_row(tok, ids[:75]), _row(tok, ids[75:])])
    torch.testing.assert_close(cond.embeds, expected, rtol=0, atol=1e-6)
    # diffusers alone truncates to 77 tokens: its result is our first chunk, the rest would be lost
    torch.testing.assert_close(cond.embeds[:, :77], _diffusers_sd1(sd1, LONG), rtol=0, atol=1e-6)


def test_break_forces_a_new_chunk(sd1):
    cond = PromptEncoder(sd1).encode("a red cat BREAK a green dog")
    assert cond.chunks == 2
    torch.testing.assert_close(cond.embeds[:, :77], _diffusers_sd1(sd1, "a red cat"), rtol=0, atol=1e-6)
    torch.testing.assert_close(cond.embeds[:, 77:], _diffusers_sd1(sd1, "a green dog"), rtol=0, atol=1e-6)


def test_clip_skip_2_uses_the_penultimate_layer(sd1):
    one = PromptEncoder(sd1, clip_skip=1).encode("a photo of a cat").embeds
    two = PromptEncoder(sd1, clip_skip=2).encode("a photo of a cat").embeds
    assert not torch.allclose(one, two)
    # A1111 "Clip skip: 2": the penultimate layer's hidden state through the final layer norm.
    # (By hand: diffusers' own clip_skip path reaches for `text_model`, which transformers 5 removed.)
    te = sd1.text_encoder
    penultimate = _hidden(te, [_row(sd1.tokenizer, _ids(sd1.tokenizer, "a photo of a cat"))], layer=-2)
    with torch.no_grad():
        expected = getattr(te, "text_model", te).final_layer_norm(penultimate)
    torch.testing.assert_close(two, expected, rtol=0, atol=1e-6)


def test_pad_extends_with_empty_prompt_chunks(sd1):
    enc = PromptEncoder(sd1)
    short = enc.encode("a cat")
    padded = enc.pad(short, 2)
    assert padded.chunks == 2
    torch.testing.assert_close(padded.embeds[:, :77], short.embeds)
    torch.testing.assert_close(padded.embeds[:, 77:], enc.encode("").embeds)
    assert enc.pad(padded, 1) is padded  # never truncates


def test_schedule_for_prompt_editing_and_alternation(sd1):
    enc = PromptEncoder(sd1)
    cat, dog = enc.encode("a cat").embeds, enc.encode("a dog").embeds
    sched = enc.schedule("a [cat:dog:2]", 4)
    assert [end for end, _ in sched] == [2, 4]
    used = [at_step(sched, s).embeds for s in range(4)]
    for s, expected in enumerate([cat, cat, cat, dog]):  # A1111: switch after step 2 (0-based steps 0..2 = cat)
        torch.testing.assert_close(used[s], expected, rtol=0, atol=0)
    alt = enc.schedule("a [cat|dog]", 4)
    got = ["cat" if torch.equal(at_step(alt, s).embeds, cat) else "dog" for s in range(4)]
    assert got == ["cat", "cat", "dog", "cat"]  # A1111's lookup (first entry whose end >= step)
    sched = enc.schedule("a [cat:dog:0.5]", 4)  # fraction of steps
    assert [end for end, _ in sched] == [2, 4]


def test_and_is_refused(sd1):
    with pytest.raises(PromptSyntaxError, match="AND"):
        PromptEncoder(sd1).schedule("a cat AND a dog", 4)


# ------------------------------------------------------------------------- SD2: OpenCLIP, "!" padding

def test_sd2_matches_diffusers_and_chunks_with_its_padding(sd2):
    tok = sd2.tokenizer
    assert tok.pad_token_id != tok.eos_token_id  # SD2 pads with "!" after the end token
    enc = PromptEncoder(sd2)
    torch.testing.assert_close(enc.encode("a photo of a cat").embeds, _diffusers_sd1(sd2, "a photo of a cat"),
                               rtol=0, atol=1e-6)
    ids = _ids(tok, LONG)
    expected = _hidden(sd2.text_encoder, [_row(tok, ids[:75]), _row(tok, ids[75:])])
    torch.testing.assert_close(enc.encode(LONG).embeds, expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------- SDXL: two encoders

def test_sdxl_two_encoders_and_pooled(sdxl):
    enc = PromptEncoder(sdxl)
    assert len(enc.encoders) == 2
    te1, te2 = sdxl.text_encoder, sdxl.text_encoder_2
    cond = enc.encode("a photo of a cat")
    assert cond.embeds.shape == (1, 77, te1.config.hidden_size + te2.config.hidden_size)
    assert cond.pooled.shape == (1, te2.config.projection_dim)
    # same as diffusers' SDXL encode_prompt (penultimate layers, pooled from encoder 2)
    with torch.no_grad():
        embeds, _, pooled, _ = sdxl.encode_prompt("a photo of a cat", device="cpu", num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
    torch.testing.assert_close(cond.embeds, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=1e-6)
    # the pooled embedding comes from encoder 2 alone
    with torch.no_grad():
        own = te2(torch.tensor([_row(sdxl.tokenizer_2, _ids(sdxl.tokenizer_2, "a photo of a cat"))])).text_embeds
    torch.testing.assert_close(cond.pooled, own, rtol=0, atol=1e-6)


def test_sdxl_long_prompt_and_emphasis(sdxl):
    enc = PromptEncoder(sdxl)
    cond = enc.encode(LONG)
    assert cond.embeds.shape == (1, 154, sdxl.text_encoder.config.hidden_size + sdxl.text_encoder_2.config.hidden_size)
    ids = _ids(sdxl.tokenizer, LONG)
    first = _hidden(sdxl.text_encoder, [_row(sdxl.tokenizer, ids[:75]), _row(sdxl.tokenizer, ids[75:])], layer=-2)
    torch.testing.assert_close(cond.embeds[..., :first.shape[-1]], first, rtol=0, atol=1e-6)
    # pooled from the first chunk only (A1111)
    with torch.no_grad():
        ids2 = _ids(sdxl.tokenizer_2, LONG)
        own = sdxl.text_encoder_2(torch.tensor([_row(sdxl.tokenizer_2, ids2[:75])])).text_embeds
    torch.testing.assert_close(cond.pooled, own, rtol=0, atol=1e-6)
    plain, weighted = enc.encode("a cat"), enc.encode("a (cat:1.4)")
    # A1111 "Original" emphasis, per encoder: hidden state × token weight, then the chunk's mean restored
    ids = _ids(sdxl.tokenizer, "a cat")
    z = _hidden(sdxl.text_encoder, [_row(sdxl.tokenizer, ids)], layer=-2)
    w = torch.ones(1, 77, 1)
    w[0, len(ids)] = 1.4
    expected = z * w
    assert abs(float(expected.mean())) > 1e-3  # the mean restore really does something here
    expected = expected * (z.mean() / expected.mean())
    torch.testing.assert_close(weighted.embeds[..., :z.shape[-1]], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain.embeds, weighted.embeds)
    torch.testing.assert_close(plain.pooled, weighted.pooled)  # weights never touch the pooled embedding


def test_sdxl_schedule_swaps_pooled_too(sdxl):
    enc = PromptEncoder(sdxl)
    sched = enc.schedule("a [cat:dog:2]", 4)
    assert torch.equal(at_step(sched, 0).pooled, enc.encode("a cat").pooled)
    assert torch.equal(at_step(sched, 3).pooled, enc.encode("a dog").pooled)
    assert not torch.equal(enc.encode("a cat").pooled, enc.encode("a dog").pooled)
