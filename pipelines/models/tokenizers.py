"""CLIP tokenizers built offline from the BPE vocabulary that ships inside open_clip_torch.

Every SD text encoder (SD1 CLIP ViT-L, SD2 OpenCLIP ViT-H, SDXL's two) uses the same OpenAI CLIP BPE;
they differ only in the padding token. Building it from the packaged file means a single-file
checkpoint loads with no network and no tokenizer folder on disk.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

# Number of BPE merges CLIP uses from the file (open_clip / OpenAI CLIP constant).
_N_MERGES = 49152 - 256 - 2


def _bpe_path() -> Path:
    # Located without importing open_clip: its package __init__ imports torch (seconds), and the
    # tokenizer is wanted early (the UI's token counter) where torch is not needed.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships the CLIP vocabulary")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (the BPE vocabulary is written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    symbols = symbols + [s + "</w>" for s in symbols]
    symbols += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, merges


@functools.lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A `transformers.CLIPTokenizer` (77 tokens). SD2 and SDXL's second encoder pad with "!".

    transformers 5 silently ignores the `vocab_file=`/`merges_file=` keywords, so the in-memory
    `vocab=`/`merges=` form is used.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token=pad_token,
        model_max_length=77,
    )
