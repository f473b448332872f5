"""CLIP tokenizers, offline, from the vocabulary files shipped in `configs/clip_tokenizer/`.

Every SD text encoder (SD1 CLIP ViT-L, SD2 OpenCLIP ViT-H, SDXL's two, Flux's and SD3's CLIP-L/G) uses the
same OpenAI CLIP BPE; they differ only in the padding token. `vocab.json` / `merges.txt` were written once
from the BPE file packaged in open_clip_torch (`bpe_simple_vocab_16e6.txt.gz`, its first 48894 merges);
tests/test_families.py checks them against open_clip's own tokenizer tables, so a single-file checkpoint
loads with no network and no tokenizer folder on disk.
"""
from __future__ import annotations

import functools
from pathlib import Path

CLIP_TOKENIZER_DIR = Path(__file__).resolve().parent / "configs" / "clip_tokenizer"


@functools.lru_cache(maxsize=4)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A `transformers.CLIPTokenizer` (77 tokens). SD2 and SDXL's second encoder pad with "!"."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR, pad_token=pad_token, local_files_only=True)
