"""img2img inputs without a model: decoding awkward files, the pixel limit, resize modes, mask processing,
"only masked" geometry, the final composite and the sketch helpers (pipelines.images.inputs)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.images import inputs as ii
from pipelines.core.errors import UserError


def _png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------ decoding


def test_non_image_bytes_and_empty_uploads_are_user_errors():
    with pytest.raises(UserError, match="not an image"):
        ii.load_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(UserError, match="empty"):
        ii.load_image(b"")
    truncated = _png(_noise(64, 64))[:200]
    with pytest.raises(UserError, match="truncated|damaged|could not be read"):
        ii.load_image(truncated)


def test_cmyk_jpeg_converts_to_rgb_colours():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no black ink, full magenta + yellow: red
    image = ii.load_image(_png(cmyk, format="JPEG", quality=95))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    arr[0, 0] = 65535
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    image = ii.load_image(_png(src))
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (128, 128, 128) and image.getpixel((0, 0)) == (255, 255, 255)
    # as a mask too
    assert ii.load_mask(_png(src)).getpixel((4, 4)) == 128


def test_alpha_is_flattened_onto_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))          # transparent
    rgba.putpixel((1, 0), (0, 0, 0, 128))          # half transparent black
    image = ii.load_image(_png(rgba))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((4, 4)) == (255, 0, 0)
    assert 120 <= image.getpixel((1, 0))[0] <= 135
    la = Image.new("LA", (8, 8), (50, 255))
    la.putpixel((0, 0), (0, 0))
    out = ii.load_image(_png(la))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((3, 3)) == (50, 50, 50)
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.putpixel((0, 0), 0)
    out = ii.load_image(_png(pal, transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((3, 3)) == (0, 255, 0)


def test_animated_gif_gives_its_first_frame_with_a_notice():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    notices: list[str] = []
    image = ii.load_image(buf.getvalue(), notices=notices)
    r, g, b = image.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50
    assert any("animated" in n and "3 frames" in n for n in notices)


def test_huge_images_are_refused_with_a_clear_message():
    data = _png(Image.new("RGB", (150, 100)))       # 15,000 px
    with pytest.raises(UserError, match=r"150x100 .*above the 0.01 MP limit"):
        ii.load_image(data, max_pixels=10_000)
    # beyond twice the limit Pillow's own bomb guard stops the decode; that is a UserError too
    with pytest.raises(UserError, match="decompression bomb"):
        ii.load_image(_png(Image.new("RGB", (300, 300))), max_pixels=10_000)
    with pytest.raises(UserError, match="MP limit"):
        ii.load_image(Image.new("RGB", (150, 100)), max_pixels=10_000)  # an already decoded image too
    assert ii.load_image(data).size == (150, 100)   # a one-off limit does not stay
    assert Image.MAX_IMAGE_PIXELS == ii.max_input_pixels() == ii.DEFAULT_MAX_INPUT_PIXELS  # the guard is on
    try:
        ii.set_max_input_pixels(12_000)              # the configured limit (a setting)
        assert Image.MAX_IMAGE_PIXELS == 12_000
        with pytest.raises(UserError, match="0.012 MP limit"):
            ii.load_mask(data)
    finally:
        ii.set_max_input_pixels(ii.DEFAULT_MAX_INPUT_PIXELS)


def test_mask_semantics():
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))   # a painted brush layer: its alpha is the mask
    layer.putpixel((2, 2), (255, 0, 0, 255))
    layer.putpixel((3, 3), (255, 0, 0, 100))
    mask = ii.load_mask(_png(layer))
    assert mask.mode == "L" and mask.getpixel((2, 2)) == 255 and mask.getpixel((3, 3)) == 0
    assert mask.getpixel((0, 0)) == 0
    rgb = Image.new("RGB", (8, 8), (255, 255, 255))   # an uploaded black/white mask: its luminance
    rgb.putpixel((0, 0), (0, 0, 0))
    mask = ii.load_mask(_png(rgb))
    assert mask.getpixel((0, 0)) == 0 and mask.getpixel((1, 1)) == 255


# ------------------------------------------------------------------------------------------ resize modes


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("src, dst", [((100, 50), (64, 64)), ((50, 100), (96, 64)), ((64, 64), (64, 128)),
                                      ((37, 91), (72, 40))])
def test_every_resize_mode_gives_the_requested_size(mode, src, dst):
    assert ii.resize_image(mode, _noise(*src), *dst).size == dst


def test_resize_mode_geometry():
    # a wide image: left half red, right half blue, a green centre column
    src = Image.new("RGB", (200, 100), (255, 0, 0))
    src.paste((0, 0, 255), (100, 0, 200, 100))
    cover = ii.resize_image(1, src, 100, 100)         # crop and resize: the centre 100x100 of the source
    assert cover.getpixel((5, 50))[0] > 200 and cover.getpixel((95, 50))[2] > 200
    fit = ii.resize_image(2, src, 100, 100)           # resize and fill: whole image in the middle band
    assert fit.getpixel((2, 50))[0] > 200 and fit.getpixel((97, 50))[2] > 200
    assert fit.getpixel((2, 2))[0] > 200 and fit.getpixel((97, 97))[2] > 200  # bands: stretched edge rows
    assert ii.size_for_scale(src, 0.6) == (120, 64)   # "resize by": multiples of 8, at least 64


# ------------------------------------------------------------------------------------------ masks


def a1111_mask_blur(mask: Image.Image, blur: float) -> np.ndarray:
    """The outside reference: A1111's processing.py blurs the mask with OpenCV, x then y, in uint8."""
    import cv2

    kernel_size = 2 * int(2.5 * blur + 0.5) + 1
    once = cv2.GaussianBlur(np.array(mask), (kernel_size, 1), blur)
    return cv2.GaussianBlur(once, (1, kernel_size), blur)


@pytest.mark.parametrize("blur", [1, 4, 8])
def test_blur_equals_a1111s_opencv_blur(blur):
    # shapes at the borders and in the middle, a grey block: any shift, scale or border handling shows
    mask = Image.new("L", (200, 120), 0)
    mask.paste(255, (90, 30, 110, 80))
    mask.paste(255, (0, 0, 10, 10))
    mask.paste(128, (150, 100, 200, 120))
    ours = np.asarray(ii.blur_mask(mask, blur)).astype(int)
    # A1111 rounds to uint8 between its two passes, ours once at the end: at most 2 levels apart
    assert np.abs(ours - a1111_mask_blur(mask, blur).astype(int)).max() <= 2


def test_blur_is_centred_and_stays_local():
    mask = Image.new("L", (200, 200), 0)
    mask.paste(255, (90, 90, 110, 110))               # columns/rows 90..109: mirror of j is 199 - j
    blurred = np.asarray(ii.blur_mask(mask, 4))
    radius = int(2.5 * 4 + 0.5)                       # kernel 2*10+1 wide
    assert blurred[100, 100] >= 250 and 100 < blurred[100, 90] < 160
    assert blurred[100, 90 - radius - 1] == 0 and blurred[100, 110 + radius + 1] == 0
    assert (blurred[:, :90 - radius] == 0).all() and (blurred[:90 - radius] == 0).all()
    assert np.array_equal(blurred, blurred[::-1, ::-1])            # symmetric about the square's centre
    assert np.array_equal(blurred, blurred.T)
    assert np.array_equal(np.asarray(ii.blur_mask(mask, 0)), np.asarray(mask))


def test_crop_region_grows_to_the_target_aspect_inside_the_image():
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (80, 80, 100, 96))
    region = ii.crop_region(mask, 8)
    assert region == (72, 72, 108, 104)
    x1, y1, x2, y2 = ii.expand_crop_region(region, 64, 64, 128, 128)
    assert (x2 - x1) == (y2 - y1) == 36 and (x1, x2) == (72, 108)
    # near the border the crop is shifted inside the image
    assert ii.expand_crop_region((100, 0, 128, 8), 64, 64, 128, 128) == (100, 0, 128, 28)
    # wider than tall at the target: grows in x, capped by the image
    x1, y1, x2, y2 = ii.expand_crop_region((0, 0, 10, 100), 128, 64, 150, 100)
    assert (x1, x2) == (0, 150) and (y1, y2) == (0, 100)
    assert ii.crop_region(Image.new("L", (8, 8)), 4) is None


def test_prepare_whole_picture_and_mismatched_mask():
    image = _noise(96, 64)
    mask = Image.new("L", (48, 32), 0)                 # half the size: resized, with a notice
    mask.paste(255, (10, 10, 20, 20))
    notices: list[str] = []
    prep = ii.prepare(image, mask, width=64, height=64, resize_mode=1, mask_blur=0, notices=notices)
    assert any("48x32" in n and "96x64" in n and "resized" in n for n in notices)
    assert prep.init.size == prep.mask.size == prep.original.size == prep.overlay.size == (64, 64)
    assert prep.paste_to is None
    inverted = ii.prepare(image, mask, width=64, height=64, inpainting_mask_invert=1, mask_blur=0)
    assert np.array_equal(np.asarray(inverted.mask), 255 - np.asarray(ii.prepare(image, mask, width=64, height=64,
                                                                                   mask_blur=0).mask))
    filled = ii.prepare(image, mask, width=64, height=64, mask_blur=0, inpainting_fill=0)
    m = np.asarray(filled.mask) > 0
    assert not np.array_equal(np.asarray(filled.init)[m], np.asarray(filled.original)[m])     # painted over
    assert np.array_equal(np.asarray(filled.init)[~m], np.asarray(filled.original)[~m])       # kept


def test_only_masked_round_trips_to_the_right_place():
    # A gradient whose value encodes position: pasting the worked crop back at a wrong offset would show.
    yy, xx = np.mgrid[0:128, 0:160]
    image = Image.fromarray(np.stack([xx * 1.5, yy * 1.5, (xx + yy) * 0.7], -1).astype(np.uint8))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (100, 30, 130, 60))
    prep = ii.prepare(image, mask, width=64, height=96, inpaint_full_res=True, inpaint_full_res_padding=16,
                      mask_blur=0)
    assert prep.init.size == prep.mask.size == (64, 96)
    assert prep.original.size == prep.overlay.size == (160, 128)    # the output keeps the original size
    x, y, w, h = prep.paste_to
    assert x <= 84 and y <= 14 and x + w >= 146 and y + h >= 76
    assert abs(w / h - 64 / 96) < 0.05
    # "generate" the identity: pasting the prepared crop back must land on the same pixels
    out = np.asarray(ii.composite(prep.init, prep)).astype(int)
    src = np.asarray(image).astype(int)
    inner = (slice(32, 58), slice(102, 128))                         # mask interior (resampling edges aside)
    assert np.abs(out[inner] - src[inner]).max() <= 2
    # a generated image of pure white: changed inside the mask only
    white = ii.composite(Image.new("RGB", (64, 96), (255, 255, 255)), prep)
    m = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(white)[~m], src[~m])
    assert (np.asarray(white)[m] == 255).all()
    # an empty mask cannot be cropped: plain img2img, with a notice
    notices: list[str] = []
    prep = ii.prepare(image, Image.new("L", image.size), width=64, height=64, inpaint_full_res=True,
                      notices=notices)
    assert prep.mask is None and prep.overlay is None and any("empty" in n for n in notices)


def test_composite_keeps_original_pixels_exactly_outside_the_overlay():
    original = _noise(64, 64, 1)
    overlay = Image.new("L", (64, 64), 0)
    overlay.paste(255, (20, 20, 40, 40))
    overlay.paste(128, (40, 20, 44, 40))
    prep = ii.PreparedImage(init=original, mask=overlay, original=original, overlay=overlay)
    out = np.asarray(ii.composite(_noise(64, 64, 2), prep)).astype(int)
    o, g = np.asarray(original).astype(int), np.asarray(_noise(64, 64, 2)).astype(int)
    a = np.asarray(overlay)
    assert np.array_equal(out[a == 0], o[a == 0])
    assert np.array_equal(out[a == 255], g[a == 255])
    half = a == 128
    assert np.abs(out[half] - (o[half] + (g[half] - o[half]) * 128 / 255)).max() <= 0.5 + 1e-6


# ------------------------------------------------------------------------------------------ sketch


def test_sketch_helpers():
    image = Image.new("RGB", (32, 32), (10, 20, 30))
    strokes = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    strokes.paste((255, 0, 0, 255), (4, 4, 12, 12))
    init = ii.sketch_to_init(image, strokes)
    assert init.getpixel((8, 8)) == (255, 0, 0) and init.getpixel((20, 20)) == (10, 20, 30)
    init, mask = ii.inpaint_sketch(image, strokes)
    assert init.getpixel((8, 8)) == (255, 0, 0)
    assert mask.mode == "L" and mask.getpixel((8, 8)) == 255 and mask.getpixel((20, 20)) == 0
    # several layers (Gradio's ImageEditor) merge bottom-up; a layer of another size is scaled to the image
    second = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    second.paste((0, 0, 255, 255), (8, 8, 16, 16))                  # → (16..32, 16..32) on the image
    init, mask = ii.inpaint_sketch(image, [strokes, None, second])
    assert init.getpixel((24, 24)) == (0, 0, 255) and mask.getpixel((24, 24)) == 255
    assert ii.strokes_mask([strokes, second], (32, 32)).getpixel((8, 8)) == 255
    # A1111's softened edges with a blur: the composite fades into the original at the stroke border
    soft, _ = ii.inpaint_sketch(image, strokes, mask_blur=2)
    assert soft.getpixel((30, 30)) == (10, 20, 30) and soft.getpixel((12, 8)) != (255, 0, 0)


def test_latent_upscale_encodes_at_the_images_own_size_in_multiples_of_8():
    # mode 3 (latent upscale): the init image keeps its size, cut down to a multiple of 8 (the VAE's grid)
    notices: list[str] = []
    prep = ii.prepare(_noise(100, 61), None, width=64, height=64, resize_mode=3, notices=notices)
    assert prep.init.size == (96, 56) and notices == []
    assert ii.prepare(_noise(5, 70), None, width=64, height=64, resize_mode=3).init.size == (8, 64)
    # up to 2048x2048 pixels as is; one row more is scaled down first, with a notice
    assert ii.prepare(Image.new("RGB", (2048, 2048)), None, width=64, height=64, resize_mode=3,
                      notices=notices).init.size == (2048, 2048) and notices == []
    big = ii.prepare(Image.new("RGB", (2048, 2056)), None, width=64, height=64, resize_mode=3, notices=notices)
    assert big.init.size[0] < 2048 and big.init.size[0] % 8 == 0 and "latent upscale" in notices[0]
