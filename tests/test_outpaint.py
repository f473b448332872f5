"""Outpainting (pipelines.upscale.outpaint through img2img): the canvas grows by exactly the pixels asked, the original
pixels are kept outside the blend band at the seam, with regular and inpainting checkpoints; A1111's script names."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.core.errors import ParameterError
from pipelines.generate.engine import Engine
from pipelines.params.declarations import make_request
from pipelines.upscale import outpaint

from conftest import FILES


def picture(w: int = 64, h: int = 64) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], -1).astype(np.uint8))


@pytest.mark.parametrize("arch", ["sd1", "sd1_inpaint"])
def test_canvas_grows_and_the_original_is_kept_outside_the_blend_band(make_manager, arch):
    manager = make_manager()
    manager.load(FILES[arch])
    source = picture()
    req = make_request(prompt="a wall", steps=2, seed=3, denoising_strength=0.8, mask_blur=4, inpainting_fill=0,
                       outpaint_left=16, outpaint_down=8)
    result = Engine(manager).img2img(req, source, save=False)
    out = np.asarray(result.images[0])
    assert out.shape == (64 + 8, 64 + 16, 3)
    # the seam band: mask reaches 2 * blur into the original, the blur's kernel (radius 10 at blur 4) beyond it
    reach = 2 * 4 + 10
    kept = out[:64 - reach, 16 + reach:]
    assert np.array_equal(kept, np.asarray(source)[:64 - reach, reach:])
    new_area = out[:, :16].astype(int)
    assert np.abs(new_area - np.asarray(source)[:, :1].repeat(16, 1)[:1].astype(int)).max() > 0   # painted
    assert "Size: 80x72" in result.infotexts[0]


def test_extend_masks_the_new_area_and_a_band_into_the_original():
    canvas, mask = outpaint.extend(picture(32, 32), None, right=16, up=8, mask_blur=2)
    assert canvas.size == (48, 40) and mask.size == (48, 40)
    m = np.asarray(mask)
    assert (m[:8] == 255).all() and (m[:, 32:] == 255).all()        # new area
    assert (m[8:12] == 255).all() and (m[:, 28:32] == 255).all()     # band of 2 * blur into the original
    assert (m[12:, :28] == 0).all()
    assert np.array_equal(np.asarray(canvas)[8:, :32], np.asarray(picture(32, 32)))


def test_a1111_script_names_map_onto_the_parameters(make_manager):
    hooks = Engine(make_manager()).hooks
    values = hooks.script_values("poor man's outpainting", [64, 8, "latent noise", ["left", "up"]], "img2img")
    assert values == {"outpaint_left": 64, "outpaint_right": 0, "outpaint_up": 64, "outpaint_down": 0,
                      "mask_blur": 8, "inpainting_fill": 2}
    values = hooks.script_values("Outpainting mk2", ["", 32, 4, ["down"], 1.0, 0.05], "img2img")
    assert values["outpaint_down"] == 32 and values["outpaint_left"] == 0 and values["inpainting_fill"] == 0
    with pytest.raises(ParameterError, match="script_args.*direction"):
        hooks.script_values("poor man's outpainting", [64, 8, 1, ["sideways"]], "img2img")
