"""Tiny random models of the newer families, written in the layouts people download.

- SDXL v-prediction: an SDXL single file with the `v_pred` / `ztsnr` marker tensors NoobAI-XL carries.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .ldm_export import save_ldm_file


def with_marker_keys(src: str | os.PathLike, dst: str | os.PathLike, markers=("v_pred", "ztsnr")) -> Path:
    """A copy of the single file `src` with empty marker tensors added (NoobAI-XL v-pred style)."""
    from safetensors.torch import load_file

    state = load_file(str(src))
    state.update({name: torch.tensor([]) for name in markers})
    return save_ldm_file(state, dst)
