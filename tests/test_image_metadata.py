"""Embedding / reading the infotext in PNG, JPEG and WEBP files."""

from __future__ import annotations

import io
import json
import struct
import zlib

import piexif
import piexif.helper
import pytest
from PIL import Image, PngImagePlugin

from pipelines.images.metadata import normalize_format, read_infotext, write_image

ASCII_TEXT = (
    "a cat, sitting\nNegative prompt: ugly\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 16x16"
)
UNICODE_TEXT = (
    "猫が座っている, 🐱🎨, café crème, «ёлка»\nNegative prompt: 醜い 😡\n"
    'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 16x16, Lora hashes: "猫: abc"'
)
LATIN1_TEXT = "café, naïve\nSteps: 1, Seed: 2, CFG scale: 3"


def _image(mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, (16, 16))
    img.putpixel((3, 4), (200, 10, 30, 255)[: len(mode)] if mode != "L" else 200)
    return img


def _png_chunk_types(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, first bytes of payload) for each chunk."""
    chunks = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        chunks.append((ctype, data[pos + 8:pos + 8 + min(length, 16)]))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("fmt", ["png", "jpg", "jpeg", "webp"])
@pytest.mark.parametrize("text", [ASCII_TEXT, UNICODE_TEXT, LATIN1_TEXT])
def test_round_trip_all_formats(tmp_path, fmt, text):
    path = tmp_path / f"out.{fmt}"
    write_image(_image(), path, text, fmt)
    geninfo, items = read_infotext(path)
    assert geninfo == text
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in items.items())
    # also from an open image and from bytes
    with Image.open(path) as img:
        assert read_infotext(img)[0] == text
    assert read_infotext(path.read_bytes())[0] == text
    assert read_infotext(str(path))[0] == text


def test_png_uses_text_chunk_for_latin1_and_itxt_otherwise(tmp_path):
    for text, expected in ((ASCII_TEXT, b"tEXt"), (LATIN1_TEXT, b"tEXt"), (UNICODE_TEXT, b"iTXt")):
        buf = io.BytesIO()
        write_image(_image(), buf, text, "png")
        chunks = _png_chunk_types(buf.getvalue())
        assert any(t == expected and p.startswith(b"parameters\x00") for t, p in chunks)


def test_jpeg_and_webp_use_exif_usercomment_unicode(tmp_path):
    for fmt in ("jpg", "webp"):
        path = tmp_path / f"x.{fmt}"
        write_image(_image(), path, UNICODE_TEXT, fmt)
        with Image.open(path) as img:
            exif = piexif.load(img.info["exif"])
        comment = exif["Exif"][piexif.ExifIFD.UserComment]
        assert comment == piexif.helper.UserComment.dump(UNICODE_TEXT, encoding="unicode")
        assert comment.startswith(b"UNICODE\x00")


def test_raw_items_include_exif_comment(tmp_path):
    path = tmp_path / "x.jpg"
    write_image(_image(), path, ASCII_TEXT, "jpg")
    _, items = read_infotext(path)
    assert items["exif comment"] == ASCII_TEXT
    assert items["exif"].startswith("<") and items["exif"].endswith("bytes>")


def test_jpeg_converted_to_rgb_webp_keeps_alpha(tmp_path):
    write_image(_image("RGBA"), tmp_path / "a.jpg", ASCII_TEXT, "jpg")
    write_image(_image("RGBA"), tmp_path / "a.webp", ASCII_TEXT, "webp")
    write_image(_image("L"), tmp_path / "l.jpg", ASCII_TEXT, "jpeg")
    with Image.open(tmp_path / "a.jpg") as img:
        assert img.mode == "RGB" and img.format == "JPEG"
    with Image.open(tmp_path / "l.jpg") as img:
        assert img.mode == "RGB"
    with Image.open(tmp_path / "a.webp") as img:
        assert img.mode == "RGBA" and img.format == "WEBP"


def test_png_pixels_lossless_and_no_text_when_empty(tmp_path):
    src = _image("RGBA")
    write_image(src, tmp_path / "a.png", None, "png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.tobytes() == src.tobytes()
    assert read_infotext(tmp_path / "a.png") == (None, {})
    write_image(_image(), tmp_path / "b.jpg", "", "jpg")
    geninfo, _ = read_infotext(tmp_path / "b.jpg")
    assert geninfo is None


def test_unknown_format_rejected(tmp_path):
    with pytest.raises(ValueError, match="unsupported image format 'bmp'"):
        write_image(_image(), tmp_path / "x.bmp", ASCII_TEXT, "bmp")
    assert normalize_format(".JPG") == "jpg"


def test_too_long_for_jpeg_exif(tmp_path):
    with pytest.raises(ValueError, match="too long for JPEG"):
        write_image(_image(), tmp_path / "x.jpg", "x" * 40000, "jpg")
    # PNG has no such limit
    write_image(_image(), tmp_path / "x.png", "x" * 40000, "png")
    assert read_infotext(tmp_path / "x.png")[0] == "x" * 40000


def _insert_chunk_before_iend(data: bytes, ctype: bytes, payload: bytes) -> bytes:
    chunk = struct.pack(">I", len(payload)) + ctype + payload
    chunk += struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def test_png_text_chunk_after_image_data(tmp_path):
    buf = io.BytesIO()
    _image().save(buf, format="PNG")
    data = _insert_chunk_before_iend(buf.getvalue(), b"tEXt", b"parameters\x00" + ASCII_TEXT.encode("latin-1"))
    path = tmp_path / "late.png"
    path.write_bytes(data)
    geninfo, items = read_infotext(path)
    assert geninfo == ASCII_TEXT
    assert items["parameters"] == ASCII_TEXT


def test_png_extra_chunks_in_raw_items(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", ASCII_TEXT)
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}))
    info.add_itxt("Title", "タイトル")
    path = tmp_path / "c.png"
    _image().save(path, pnginfo=info)
    geninfo, items = read_infotext(path)
    assert geninfo == ASCII_TEXT
    assert items["Title"] == "タイトル"
    assert json.loads(items["prompt"]) == {"3": {"class_type": "KSampler"}}


def test_novelai_png(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Description", "1girl, red hair")
    info.add_text(
        "Comment",
        json.dumps({"steps": 28, "sampler": "k_euler_ancestral", "scale": 11.0, "seed": 12345, "uc": "lowres, bad"}),
    )
    path = tmp_path / "nai.png"
    Image.new("RGB", (64, 32)).save(path, pnginfo=info)
    geninfo, _ = read_infotext(path)
    assert geninfo == (
        "1girl, red hair\nNegative prompt: lowres, bad\n"
        "Steps: 28, Sampler: Euler a, CFG scale: 11, Seed: 12345, Size: 64x32, Clip skip: 2, ENSD: 31337"
    )


def test_jpeg_comment_fallback(tmp_path):
    path = tmp_path / "c.jpg"
    _image().save(path, format="JPEG", comment="a dog\nSteps: 1, Seed: 2, CFG scale: 3".encode())
    assert read_infotext(path)[0] == "a dog\nSteps: 1, Seed: 2, CFG scale: 3"


def test_usercomment_written_as_utf16_le_is_read(tmp_path):
    comment = b"UNICODE\x00" + ASCII_TEXT.encode("utf-16-le")
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
    path = tmp_path / "le.jpg"
    _image().save(path, format="JPEG", exif=exif)
    assert read_infotext(path)[0] == ASCII_TEXT


def test_usercomment_ascii_and_undefined_prefix(tmp_path):
    for comment in (b"ASCII\x00\x00\x00" + b"hello, world", b"\x00" * 8 + b"hello, world"):
        exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
        path = tmp_path / "u.jpg"
        _image().save(path, format="JPEG", exif=exif)
        assert read_infotext(path)[0] == "hello, world"


def test_corrupt_exif_does_not_raise(tmp_path):
    path = tmp_path / "bad.jpg"
    _image().save(path, format="JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    geninfo, items = read_infotext(path)
    assert geninfo is None
    assert "exif" in items


def test_png_parameters_win_over_exif(tmp_path):
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump("other", encoding="unicode")}})
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", ASCII_TEXT)
    path = tmp_path / "both.png"
    _image().save(path, pnginfo=info, exif=exif)
    geninfo, items = read_infotext(path)
    assert geninfo == ASCII_TEXT
    assert items["exif comment"] == "other"
