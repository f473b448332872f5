"""Prompt text → text-encoder embeddings, the AUTOMATIC1111 way.

Emphasis weights, 75-token chunks (never truncated, BREAK forces a chunk), clip skip, SD1/SD2 (one
encoder) and SDXL (two encoders, pooled embedding from the first chunk), and prompt-editing
schedules, whose embeddings the generation code swaps in during sampling. The embeddings go to
diffusers pipelines as `prompt_embeds`, so the sampling itself stays diffusers' own.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from . import parser as prompt_parser


@dataclass
class Conditioning:
    embeds: torch.Tensor                 # [1, 77 * chunks, dim]
    pooled: torch.Tensor | None = None   # [1, dim_pooled] (SDXL)

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // 77


# tokenizer -> its ',</w>' id. Looking it up builds the 49k-entry vocabulary dict (~15 ms), so it is done
# once per tokenizer rather than for every prompt.
_COMMA_IDS: "weakref.WeakKeyDictionary[object, int | None]" = weakref.WeakKeyDictionary()


def _comma_id(tokenizer) -> int | None:
    try:
        return _COMMA_IDS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable / hashable
        return prompt_parser.comma_token_id(tokenizer)
    cid = _COMMA_IDS[tokenizer] = prompt_parser.comma_token_id(tokenizer)
    return cid


@dataclass
class _Encoder:
    tokenizer: object
    model: object
    sdxl: bool           # SDXL encoders use the penultimate hidden state without final norm
    pooled: bool         # this encoder gives the pooled embedding (SDXL's second)


class PromptEncoder:
    """Encodes prompts for one pipeline; results are cached per (text, clip skip) for one job."""

    def __init__(self, pipe, clip_skip: int = 1, embeddings=None):
        self.clip_skip = max(1, int(clip_skip))
        # Textual inversion for this job (`networks.EmbeddingSession`): it rewrites embedding names' tokens
        # into placeholders that its hooks on the text encoders fill in. None: plain tokens.
        self.embeddings = embeddings
        sdxl = hasattr(pipe, "text_encoder_2")
        self.encoders: list[_Encoder] = []
        if getattr(pipe, "text_encoder", None) is not None:
            self.encoders.append(_Encoder(pipe.tokenizer, pipe.text_encoder, sdxl, False))
        if sdxl and getattr(pipe, "text_encoder_2", None) is not None:
            self.encoders.append(_Encoder(pipe.tokenizer_2, pipe.text_encoder_2, True, True))
        self.sdxl = sdxl
        self.dtype = pipe.unet.dtype
        self.device = pipe.unet.device
        self._cache: dict[str, Conditioning] = {}

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str) -> Conditioning:
        cond = self._cache.get(text)
        if cond is None:
            cond = self._encode(text)
            self._cache[text] = cond
        return cond

    def _encode(self, text: str) -> Conditioning:
        parsed = prompt_parser.parse_attention(text)
        parts, pooled = [], None
        n_chunks = None
        for enc in self.encoders:
            emb, pool = self._encode_one(enc, parsed, n_chunks)
            n_chunks = emb.shape[1] // 77
            parts.append(emb)
            if enc.pooled:
                pooled = pool
        embeds = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        return Conditioning(embeds.to(self.dtype), None if pooled is None else pooled.to(self.dtype))

    @torch.no_grad()
    def _encode_one(self, enc: _Encoder, parsed, n_chunks: int | None):
        tok = enc.tokenizer
        flat, breaks = prompt_parser.tokenize_weighted(tok if self.embeddings is None else self.embeddings.wrap(tok),
                                                       parsed)
        chunks = prompt_parser.chunk_tokens(flat, breaks, pad_id=tok.eos_token_id,
                                            comma_id=_comma_id(tok))
        if n_chunks is not None:  # SDXL: both encoders see the same token chunks
            chunks = chunks[:n_chunks]
        framed = [prompt_parser.frame_chunk(ids, w, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
                  for ids, w in chunks]
        device = enc.model.device
        ids = torch.tensor([f[0] for f in framed], device=device)
        weights = torch.tensor([f[1] for f in framed], device=device, dtype=torch.float32)
        out = enc.model(ids, output_hidden_states=True)
        if enc.sdxl:
            # SDXL was trained on the penultimate layer; A1111 ignores clip skip there by default.
            hidden = out.hidden_states[-2]
        elif self.clip_skip > 1:
            # transformers 5 flattened CLIPTextModel (no `.text_model`); older versions nest it.
            text_model = getattr(enc.model, "text_model", enc.model)
            # Clip skip beyond the encoder's depth stops at its first layer rather than failing.
            layer = min(self.clip_skip, len(out.hidden_states) - 1)
            hidden = text_model.final_layer_norm(out.hidden_states[-layer])
        else:
            hidden = out.last_hidden_state
        hidden = hidden.float()
        if bool((weights != 1.0).any()):
            # A1111 "Original" emphasis: scale by weight, then restore the chunk's mean (skipped where the
            # mean is ~0, which would only amplify noise; unweighted chunks are left exactly as encoded).
            original_mean = hidden.mean(dim=(1, 2), keepdim=True)
            hidden = hidden * weights.unsqueeze(-1)
            new_mean = hidden.mean(dim=(1, 2), keepdim=True)
            ratio = torch.where(new_mean.abs() > 1e-6, original_mean / new_mean, torch.ones_like(new_mean))
            hidden = hidden * ratio
        pooled = out.text_embeds[:1].float() if enc.pooled else None
        return hidden.reshape(1, -1, hidden.shape[-1]), pooled

    # ------------------------------------------------------------------ schedules
    def schedule(self, prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, Conditioning]]:
        """[(end_step, conditioning)] for prompt editing / alternation; one entry for a plain prompt.

        With `hires_steps`, the schedule of the hires-fix pass (`steps` = the first pass's), A1111's timeline."""
        prompt_parser.check_supported(prompt)
        return [(end, self.encode(text)) for end, text in prompt_parser.get_schedule(prompt, steps, hires_steps)]

    def pad(self, cond: Conditioning, chunks: int) -> Conditioning:
        """Extend with encoded empty chunks (A1111) so cond and uncond concatenate for CFG."""
        if cond.chunks >= chunks:
            return cond
        empty = self.encode("").embeds[:, :77]
        extra = empty.repeat(1, chunks - cond.chunks, 1)
        return Conditioning(torch.cat([cond.embeds, extra], dim=1), cond.pooled)


def at_step(schedule: list[tuple[int, Conditioning]], step: int) -> Conditioning:
    """The conditioning in force at 0-based sampler step `step` (A1111's rule)."""
    for end, cond in schedule:
        if step <= end:
            return cond
    return schedule[-1][1]
