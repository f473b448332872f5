"""An OpenCLIP model for interrogation: image features, text features, token counting.

Text encoding takes two shortcuts that give the same features as `model.encode_text` (the text
transformer is causal and pools at the end-of-text token, so nothing after that token matters):

- batches are sorted by token length and cut after their longest end-of-text token instead of
  running all 77 positions (label lists are short phrases: ~7x less work);
- `encode_continuations(prefix, additions)` runs the shared prefix once, keeps its keys/values per
  layer, and runs only each addition's tokens against them (the `best` chain scores thousands of
  "<prompt>, <phrase>" texts per step that share the prompt).

Both apply to open_clip's standard `CLIP` text tower (ViT-L-14, ViT-H-14, ViT-bigG-14, ...); any
other model falls back to `encode_text` on full-length tokens.
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..core.errors import ModelLoadError
from .sources import CLIP_CONFIG_FILE, ClipSource

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def _dtype_name_for(device: str, dtype: str | None) -> str:
    if dtype:
        return dtype
    return "float16" if device.startswith("cuda") else "float32"


_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


class ClipModel:
    """open_clip model + preprocess + tokenizer, loaded from a `ClipSource`."""

    def __init__(self, source: ClipSource, *, device: str = "cpu", dtype: str | None = None):
        import open_clip
        import torch

        self.source = source
        self.name = source.name
        self.device = device
        self.dtype_name = _dtype_name_for(device, dtype)
        t0 = time.perf_counter()
        precision = _PRECISION.get(self.dtype_name, "fp32")
        try:
            if source.spec is not None:
                spec = source.spec
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.arch, pretrained=str(source.weights), precision=precision, device="cpu",
                    force_quick_gelu=spec.quick_gelu, weights_only=True)
                tokenizer = open_clip.get_tokenizer(spec.arch)
            else:
                ident = f"local-dir:{source.folder}"
                model, _, preprocess = open_clip.create_model_and_transforms(
                    ident, precision=precision, device="cpu", weights_only=True)
                tokenizer = open_clip.get_tokenizer(ident)
        except Exception as err:   # wrong architecture, truncated file, bad config: say which file
            raise ModelLoadError(f"could not load CLIP model {source.name} from {source.weights} "
                                 f"({type(err).__name__}: {err}); check that the file matches "
                                 + (f"{source.spec.arch}" if source.spec else f"{source.folder / CLIP_CONFIG_FILE}")
                                 ) from err
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.context_length = int(getattr(tokenizer, "context_length", None) or 77)
        self.fingerprint = source.fingerprint()
        self.load_seconds = time.perf_counter() - t0
        self._fast = _fast_text_path(self.model)
        self._enc_cache: dict[str, list[int]] = {}
        self.to(device)
        self._torch = torch

    # ------------------------------------------------------------------ placement
    def to(self, device: str) -> "ClipModel":
        self.model.to(device)
        self.device = device
        return self

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if proj is not None:
            return int(proj.shape[-1] if not hasattr(proj, "out_features") else proj.out_features)
        return int(self.encode_texts(["a"]).shape[-1])

    # ------------------------------------------------------------------ tokens
    @property
    def _simple(self) -> bool:
        """open_clip's BPE tokenizer (all SD CLIP models): exact token joins are possible."""
        return hasattr(self.tokenizer, "encode") and hasattr(self.tokenizer, "sot_token_id")

    def _encode(self, text: str, remember: bool = False) -> list[int]:
        hit = self._enc_cache.get(text)
        if hit is not None:
            return hit
        ids = list(self.tokenizer.encode(text))
        if remember:
            if len(self._enc_cache) > 250_000:
                self._enc_cache.clear()
            self._enc_cache[text] = ids
        return ids

    def token_ids(self, text: str, remember: bool = False) -> list[int]:
        """All token ids of `text` with start/end tokens, not truncated."""
        tok = self.tokenizer
        if self._simple:
            return [tok.sot_token_id] + self._encode(text, remember) + [tok.eot_token_id]
        ids = tok([text], context_length=4096)[0].tolist() if _accepts_context(tok) else tok([text])[0].tolist()
        while ids and ids[-1] == 0:
            ids.pop()
        return ids

    def token_count(self, text: str) -> int:
        return len(self.token_ids(text))

    def fits(self, text: str) -> bool:
        """True when `text` fits the text encoder's context (77 tokens with start/end) untruncated."""
        return self.token_count(text) <= self.context_length

    def truncate_to_fit(self, text: str, sep: str = ", ") -> str:
        """Drop trailing `sep`-separated parts (then words) until `text` fits the context."""
        if self.fits(text):
            return text
        parts = text.split(sep)
        kept = parts[0]
        if not self.fits(kept):
            words = kept.split(" ")
            while len(words) > 1 and not self.fits(" ".join(words)):
                words.pop()
            return " ".join(words)
        for part in parts[1:]:
            cand = kept + sep + part
            if not self.fits(cand):
                break
            kept = cand
        return kept

    def continuations(self, prefix: str, additions: Sequence[str], sep: str = ", ") -> "Continuations":
        """Token ids of `prefix + sep + a` for every addition, split into the shared start and the rest.

        With the BPE tokenizer and a prefix ending in a letter or digit, the comma starts a new
        pre-token, so ids(prefix, a) == ids(prefix) + ids(",") + ids(a) exactly and each phrase is
        tokenized once per chain (remembered). Otherwise every text is tokenized in full.
        """
        additions = list(additions)
        if self._simple and sep == ", " and prefix[-1:].isalnum():
            tok = self.tokenizer
            shared = [tok.sot_token_id] + self._encode(prefix, True) + self._encode(",", True)
            rests = [self._encode(a, True) + [tok.eot_token_id] for a in additions]
            return Continuations(prefix, sep, additions, shared, rests)
        full = [self.token_ids(f"{prefix}{sep}{a}") for a in additions]
        n = min((len(f) - 1 for f in full), default=0)
        if full:
            n = min(n, min(_common_prefix(full[0], f) for f in full))
        shared = full[0][:n] if full else []
        return Continuations(prefix, sep, additions, shared, [f[n:] for f in full])

    def _clip_ids(self, ids: Sequence[int]) -> list[int]:
        """Truncate like open_clip's tokenizer: keep the context, the last kept token becomes end-of-text."""
        ids = list(ids)
        if len(ids) > self.context_length:
            ids = ids[:self.context_length]
            ids[-1] = self.tokenizer.eot_token_id
        return ids

    def _tokens(self, ids_list: Sequence[Sequence[int]], length: int):
        return _pad(self._torch, [self._clip_ids(ids) for ids in ids_list], length)

    # ------------------------------------------------------------------ encoding
    def encode_image(self, image):
        """(1, D) unit-norm float32 features of a PIL image, on the CPU."""
        torch = self._torch
        pixels = self.preprocess(image.convert("RGB")).unsqueeze(0).to(self.device, dtype=self._param_dtype())
        with torch.inference_mode():
            feats = self.model.encode_image(pixels).float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu()

    def _param_dtype(self):
        return next(self.model.parameters()).dtype

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None,
                     stage: str = "encoding text"):
        """(N, D) unit-norm float32 features on the CPU, in the order of `texts`."""
        torch = self._torch
        texts = list(texts)
        out = None
        if not texts:
            return torch.empty(0, 0)
        ids = [self.token_ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        done = 0
        with torch.inference_mode():
            for idx in _length_batches(order, [min(len(x), self.context_length) for x in ids], batch_size):
                batch = [ids[i] for i in idx]
                if self._fast:
                    length = min(self.context_length, max(len(b) for b in batch))
                    feats = self._encode_short(self._tokens(batch, length).to(self.device))
                else:
                    feats = self.model.encode_text(self._tokens(batch, self.context_length).to(self.device))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
                if out is None:
                    out = torch.empty(len(texts), feats.shape[-1], dtype=torch.float32)
                out[torch.tensor(idx)] = feats
                done += len(idx)
                if progress is not None:
                    progress(stage, done / len(texts))
        return out

    def _encode_short(self, tokens):
        """`encode_text` on tokens cut after the last end-of-text token of the batch (same result)."""
        m = self.model
        n = tokens.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = x[self._torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return _project(m, x)

    def encode_continuations(self, cont: "Continuations", *, batch_size: int = 256):
        """Features of each `prefix + sep + addition` in `cont` (N, D), float32 unit-norm on the CPU.

        Texts longer than the context are truncated like the tokenizer does; callers that must not
        exceed it keep only `cont.lengths() <= context_length` first (`Continuations.select`).
        """
        torch = self._torch
        n = len(cont.rests)
        if not n:
            return torch.empty(0, 0)
        shared = min(len(cont.shared), self.context_length - 1)
        if not self._fast or shared < 1:
            return self.encode_texts(cont.texts(), batch_size=batch_size)
        rows = [self._clip_ids(cont.shared + r)[shared:] for r in cont.rests]
        out = None
        with torch.inference_mode():
            past = _prefix_kv(self.model, torch.tensor([cont.shared[:shared]], device=self.device))
            order = sorted(range(n), key=lambda i: len(rows[i]))
            for idx in _length_batches(order, [len(r) for r in rows], batch_size):
                rest = [rows[i] for i in idx]
                tokens = _pad(torch, rest, max(len(r) for r in rest)).to(self.device)
                eot = torch.tensor([len(r) - 1 for r in rest], device=self.device)
                feats = _continue(self.model, past, shared, tokens, eot)
                feats = torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
                if out is None:
                    out = torch.empty(n, feats.shape[-1])
                out[torch.tensor(idx)] = feats
        return out


@dataclass
class Continuations:
    """`prefix + sep + addition` texts as shared token ids + each addition's own ids (with end token)."""

    prefix: str
    sep: str
    additions: list[str]
    shared: list[int]
    rests: list[list[int]]

    def lengths(self) -> list[int]:
        return [len(self.shared) + len(r) for r in self.rests]

    def texts(self) -> list[str]:
        return [f"{self.prefix}{self.sep}{a}" for a in self.additions]

    def select(self, keep: Sequence[int]) -> "Continuations":
        return Continuations(self.prefix, self.sep, [self.additions[i] for i in keep], self.shared,
                             [self.rests[i] for i in keep])


# ---------------------------------------------------------------------- text tower internals

def _accepts_context(tok) -> bool:
    try:
        return "context_length" in inspect.signature(tok.__call__).parameters
    except (TypeError, ValueError):
        return False


def _length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int,
                    slack: float = 1.2) -> list[list[int]]:
    """Split `order` (indices sorted by length) into batches of at most `batch_size` whose padding
    (every row runs as long as the batch's longest) costs at most `slack` x the real tokens."""
    batches: list[list[int]] = []
    cur: list[int] = []
    tokens = 0
    for i in order:
        n = lengths[i]
        if cur and (len(cur) >= batch_size or n * (len(cur) + 1) > slack * (tokens + n)):
            batches.append(cur)
            cur, tokens = [], 0
        cur.append(i)
        tokens += n
    if cur:
        batches.append(cur)
    return batches


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _pad(torch, rows: Sequence[Sequence[int]], length: int):
    t = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        t[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    return t


def _project(model, x):
    proj = model.text_projection
    if proj is None:
        return x
    if hasattr(proj, "weight"):   # nn.Linear
        return proj(x)
    return x @ proj


def _fast_text_path(model) -> bool:
    """True for open_clip's standard CLIP text tower (causal, argmax pooling, plain attention blocks)."""
    try:
        from open_clip.model import CLIP
        from open_clip.transformer import ResidualAttentionBlock
    except ImportError:  # pragma: no cover
        return False
    if type(model) is not CLIP or getattr(model, "text_pool_type", None) != "argmax":
        return False
    if getattr(model, "attn_mask", None) is None or not getattr(model.transformer, "batch_first", False):
        return False
    for blk in model.transformer.resblocks:
        attn = getattr(blk, "attn", None)
        if type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv") or attn is None:
            return False
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or not attn.batch_first:
            return False
    return True


def _qkv(blk, h):
    import torch.nn.functional as F

    attn = blk.attn
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads = attn.num_heads
    b, s, d = q.shape

    def split(t):
        return t.reshape(b, s, heads, d // heads).transpose(1, 2)

    return split(q), split(k), split(v)


def _attend_out(blk, a):
    import torch.nn.functional as F

    b, h, s, hd = a.shape
    a = a.transpose(1, 2).reshape(b, s, h * hd)
    return F.linear(a, blk.attn.out_proj.weight, blk.attn.out_proj.bias)


def _prefix_kv(model, tokens):
    """Run the (1, P) prefix through the text tower; keys/values per layer."""
    import torch.nn.functional as F

    cast = model.transformer.get_cast_dtype()
    p = tokens.shape[1]
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:p].to(cast)
    past = []
    for blk in model.transformer.resblocks:
        q, k, v = _qkv(blk, blk.ln_1(x))
        past.append((k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + blk.ls_1(_attend_out(blk, a))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    return past


def _continue(model, past, p: int, tokens, eot):
    """Features of prefix + each row of `tokens` (B, S) pooled at `eot` (B,) within the rows."""
    import torch
    import torch.nn.functional as F

    cast = model.transformer.get_cast_dtype()
    b, s = tokens.shape
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[p:p + s].to(cast)
    own = torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril()
    mask = torch.cat([torch.ones(s, p, dtype=torch.bool, device=tokens.device), own], dim=1)
    for blk, (pk, pv) in zip(model.transformer.resblocks, past):
        q, k, v = _qkv(blk, blk.ln_1(x))
        k = torch.cat([pk.expand(b, -1, -1, -1), k], dim=2)
        v = torch.cat([pv.expand(b, -1, -1, -1), v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + blk.ls_1(_attend_out(blk, a))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    x = model.ln_final(x)
    x = x[torch.arange(b, device=x.device), eot]
    return _project(model, x)


def describe(model: ClipModel) -> str:
    return f"{model.name} ({Path(model.source.weights).name}, {model.dtype_name}, {model.device})"
