"""VAE tiling: large images encode/decode in tiles when asked or when one pass would not fit in memory."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core import vae_tiling
from pipelines.core.devices import make_policy
from pipelines.generate.engine import Engine
from pipelines.params.declarations import make_request

from conftest import FILES

# The tiny VAE's tile is its sample_size (64 px, 8 latent px): a 128x96 image (16x12 latents) takes 3x2
# overlapping tiles at diffusers' stride of 3/4 tile.
SIZE = dict(width=128, height=96)
TILES = 6


def _tiled(calls, tile: int) -> bool:
    return all(h <= tile and w <= tile for h, w in calls)


def _manager(make_manager, mode: str):
    manager = make_manager()
    manager.policy = dataclasses.replace(manager.policy, vae_tiling=mode)
    manager.load(FILES["sd1"])
    return manager


def _count_calls(module) -> tuple[list, object]:
    calls = []
    handle = module.register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[0].shape[-2:])))
    return calls, handle


def _txt2img(manager, **kw):
    vae = manager.pipeline().vae
    calls, handle = _count_calls(vae.decoder)
    try:
        result = Engine(manager).txt2img(make_request(prompt="a cat", steps=1, seed=3, **SIZE, **kw), save=False)
    finally:
        handle.remove()
    return result, calls


def test_tiling_on_decodes_in_tiles_and_restores_the_vae(make_manager):
    manager = _manager(make_manager, "on")
    result, calls = _txt2img(manager, batch_size=2)
    assert [im.size for im in result.images] == [(128, 96)] * 2
    vae = manager.pipeline().vae
    assert len(calls) == 2 * TILES and _tiled(calls, vae.tile_latent_min_size)   # image by image, in tiles
    assert all(np.asarray(im).std() > 0 for im in result.images)
    assert vae.use_tiling is False and vae.use_slicing is False  # the job's setting does not outlive it


def test_tiled_decode_is_close_to_the_one_pass_decode(make_manager):
    tiled, _ = _txt2img(_manager(make_manager, "on"))
    whole, calls = _txt2img(_manager(make_manager, "off"))
    assert calls == [(12, 16)]
    a, b = (np.asarray(r.images[0], dtype=np.int16) for r in (tiled, whole))
    assert a.shape == b.shape
    # The tiles see the same latents; only the blended seams differ (random-weight VAE: loose bound).
    assert np.abs(a - b).mean() < 40


def test_auto_tiles_only_when_one_pass_would_not_fit(make_manager, monkeypatch):
    manager = _manager(make_manager, "auto")
    vae = manager.pipeline().vae
    need = vae_tiling.pass_bytes(vae, 128, 96)
    monkeypatch.setattr(vae_tiling, "free_bytes", lambda device: 100 * need)
    _, calls = _txt2img(manager)
    assert calls == [(12, 16)]
    monkeypatch.setattr(vae_tiling, "free_bytes", lambda device: need)
    _, calls = _txt2img(manager)
    assert len(calls) == TILES and _tiled(calls, vae.tile_latent_min_size)


def test_hires_fix_decides_by_the_upscaled_size(make_manager, monkeypatch):
    manager = _manager(make_manager, "auto")
    vae = manager.pipeline().vae
    # Enough for the 64x64 first pass, not for the 128x128 second one.
    monkeypatch.setattr(vae_tiling, "free_bytes", lambda device: 4 * vae_tiling.pass_bytes(vae, 64, 64))
    calls, handle = _count_calls(vae.decoder)
    try:
        result = Engine(manager).txt2img(make_request(
            prompt="a cat", steps=1, seed=3, width=64, height=64, enable_hr=True, hr_scale=2,
            hr_upscaler="Lanczos", denoising_strength=0.5), save=False)
    finally:
        handle.remove()
    assert result.images[0].size == (128, 128)
    # The first pass decodes 64x64 whole for the Lanczos upscale; the final 128x128 image in tiles.
    assert calls[0] == (8, 8) and len(calls) > 2 and _tiled(calls[1:], vae.tile_latent_min_size)


def test_img2img_encodes_in_tiles(make_manager):
    manager = _manager(make_manager, "on")
    vae = manager.pipeline().vae
    calls, handle = _count_calls(vae.encoder)
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    try:
        result = Engine(manager).img2img(make_request(prompt="a cat", steps=2, seed=3, denoising_strength=0.5,
                                                      **SIZE), [init], save=False)
    finally:
        handle.remove()
    assert result.images[0].size == (128, 96)
    assert len(calls) == TILES and _tiled(calls, vae.tile_sample_min_size)


def test_out_of_memory_decode_retries_in_tiles(make_manager):
    manager = _manager(make_manager, "off")
    vae = manager.pipeline().vae

    refused = []

    def refuse_large(mod, args):
        if args[0].shape[-1] > vae.tile_latent_min_size:
            refused.append(tuple(args[0].shape[-2:]))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = vae.decoder.register_forward_pre_hook(refuse_large)
    try:
        result, calls = _txt2img(manager)
    finally:
        handle.remove()
    assert result.images[0].size == (128, 96)
    assert refused == [(12, 16)] and len(calls) == TILES   # the refused pass, then the tiles
    assert vae.use_tiling is False


def test_policy_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="tiling"):
        make_policy("cpu", "fp32", vae_tiling="sometimes")


def test_cli_flag_reaches_the_policy():
    from webui.app.cli import parse_args

    assert parse_args(["--vae-tiling", "on"]).vae_tiling == "on"
    assert parse_args([]).vae_tiling == "auto"
    with pytest.raises(SystemExit):
        parse_args(["--vae-tiling", "maybe"])
