"""Saving images like A1111: folders, numbering, names, atomicity, grids."""

from __future__ import annotations

import errno
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from pipelines.images import metadata as image_metadata, outputs
from pipelines.images.metadata import read_infotext
from pipelines.images.outputs import (
    OutputSaver, grid_layout, image_grid, next_sequence_number, prompt_words, sanitize_filename_part,
)

WHEN = datetime(2024, 5, 6, 7, 8, 9)
INFO = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 8x8"


def _img(color=(10, 20, 30)) -> Image.Image:
    return Image.new("RGB", (8, 8), color)


def _folder(root: Path, kind: str = "txt2img-images") -> Path:
    return root / kind / "2024-05-06"


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_basic_save_layout_and_metadata(tmp_path):
    saver = OutputSaver(tmp_path)
    path = saver.save(_img(), INFO, seed=42, prompt="a cat", model_name="m", when=WHEN)
    assert path == _folder(tmp_path) / "00000-42.png"
    assert read_infotext(path)[0] == INFO
    path2 = saver.save(_img(), INFO, seed=43, prompt="a cat", model_name="m", when=WHEN)
    assert path2.name == "00001-43.png"
    path3 = saver.save(_img(), INFO, kind="img2img-images", seed=1, prompt="", model_name="m", when=WHEN)
    assert path3 == _folder(tmp_path, "img2img-images") / "00000-1.png"


@pytest.mark.parametrize("fmt", ["png", "jpg", "jpeg", "webp"])
def test_formats(tmp_path, fmt):
    saver = OutputSaver(tmp_path, fmt=fmt, save_txt=True)
    text = INFO + ", Lora hashes: \"猫: abc\" 🐱"
    path = saver.save(_img(), text, seed=7, prompt="p", model_name="m", when=WHEN)
    assert path.suffix == f".{fmt}"
    assert read_infotext(path)[0] == text
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == text + "\n"


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported image format 'gif'.*png, jpg, jpeg, webp"):
        OutputSaver(tmp_path, fmt="gif")


def test_numbering_continues_after_existing_files(tmp_path):
    folder = _folder(tmp_path)
    folder.mkdir(parents=True)
    for name in ("00007-foo.png", "00003.txt", "notanumber.png", "grid-0012.png", ".00099-x.tmp", "00002-x-y.jpg"):
        (folder / name).write_bytes(b"x")
    assert next_sequence_number(folder) == 8
    assert next_sequence_number(folder, "grid") == 13
    assert next_sequence_number(tmp_path / "missing") == 0
    path = OutputSaver(tmp_path).save(_img(), INFO, seed=5, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00008-5.png"


def test_never_overwrites_existing_file(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "00000-42.png").write_bytes(b"original")
    (folder / "00001-42.png").write_bytes(b"original too")
    # A stale sequence number (another process, a racing thread) must not overwrite.
    monkeypatch.setattr(outputs, "next_sequence_number", lambda *a, **k: 0)
    saver = OutputSaver(tmp_path)
    path = saver.save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00002-42.png"
    assert (folder / "00000-42.png").read_bytes() == b"original"
    assert (folder / "00001-42.png").read_bytes() == b"original too"
    assert read_infotext(path)[0] == INFO


def test_sidecar_collision_takes_next_number(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "00000-42.txt").write_text("someone else's")
    monkeypatch.setattr(outputs, "next_sequence_number", lambda *a, **k: 0)
    path = OutputSaver(tmp_path, save_txt=True).save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00001-42.png"
    assert (folder / "00000-42.txt").read_text() == "someone else's"
    assert not (folder / "00000-42.png").exists()
    assert (folder / "00001-42.txt").read_text(encoding="utf-8") == INFO + "\n"


def test_sidecar_race_undoes_image(tmp_path, monkeypatch):
    """The .txt name appears between the check and the link: the image is withdrawn too."""
    folder = _folder(tmp_path)
    real_place = outputs._place

    def racing_place(tmp, target):
        if target.name == "00000-42.txt":
            target.write_text("racer")
        return real_place(tmp, target)

    monkeypatch.setattr(outputs, "_place", racing_place)
    path = OutputSaver(tmp_path, save_txt=True).save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00001-42.png"
    assert _names(folder) == ["00000-42.txt", "00001-42.png", "00001-42.txt"]


@pytest.mark.parametrize("save_txt", [False, True])
def test_no_partial_files_when_image_save_raises(tmp_path, monkeypatch, save_txt):
    def broken_write(image, handle, infotext, fmt, quality=95):
        handle.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_metadata, "write_image", broken_write)
    saver = OutputSaver(tmp_path, save_txt=save_txt)
    with pytest.raises(OSError, match="No space left"):
        saver.save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert _names(_folder(tmp_path)) == []


def test_no_partial_files_when_pillow_raises(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        fp.write(b"half an image")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        OutputSaver(tmp_path, fmt="jpg", save_txt=True).save(_img(), INFO, seed=1, prompt="p", model_name="m", when=WHEN)
    assert _names(_folder(tmp_path)) == []


def test_no_partial_files_when_sidecar_fails(tmp_path, monkeypatch):
    real_write_temp = outputs._write_temp
    calls = []

    def write_temp(folder, write):
        calls.append(1)
        if len(calls) == 2:  # the .txt
            def failing(handle):
                handle.write(b"partial")
                raise OSError(errno.EIO, "I/O error")
            return real_write_temp(folder, failing)
        return real_write_temp(folder, write)

    monkeypatch.setattr(outputs, "_write_temp", write_temp)
    with pytest.raises(OSError, match="I/O error"):
        OutputSaver(tmp_path, save_txt=True).save(_img(), INFO, seed=1, prompt="p", model_name="m", when=WHEN)
    assert _names(_folder(tmp_path)) == []


def test_works_without_hard_links(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    folder = _folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "00000-42.png").write_bytes(b"original")
    monkeypatch.setattr(outputs, "next_sequence_number", lambda *a, **k: 0)
    saver = OutputSaver(tmp_path, save_txt=True)
    path = saver.save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00001-42.png"
    assert (folder / "00000-42.png").read_bytes() == b"original"
    assert read_infotext(path)[0] == INFO
    # a .txt collision with moved (not linked) files puts the image back and moves on
    (folder / "00002-42.txt").write_text("other")
    path = saver.save(_img(), INFO, seed=42, prompt="p", model_name="m", when=WHEN)
    assert path.name == "00003-42.png"
    assert _names(folder) == [
        "00000-42.png", "00001-42.png", "00001-42.txt", "00002-42.txt", "00003-42.png", "00003-42.txt",
    ]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_files_get_normal_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = OutputSaver(tmp_path).save(_img(), INFO, seed=1, prompt="p", model_name="m", when=WHEN)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_thread_safe_numbering(tmp_path):
    saver = OutputSaver(tmp_path, save_txt=True)
    paths: list[Path] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(i):
        try:
            for j in range(5):
                p = saver.save(_img(), INFO, seed=i * 10 + j, prompt="p", model_name="m", when=WHEN)
                with lock:
                    paths.append(p)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    numbers = sorted(int(p.name.split("-")[0]) for p in paths)
    assert numbers == list(range(40))
    assert len(_names(_folder(tmp_path))) == 80


# --- names -----------------------------------------------------------------------------------

def _name(tmp_path, pattern, **kwargs) -> str:
    args = dict(seed=42, prompt="a cat", model_name="v1-5", when=WHEN)
    args.update(kwargs)
    path = OutputSaver(tmp_path, filename_pattern=pattern).save(_img(), INFO, **args)
    assert path.parent == _folder(tmp_path)
    return path.name


@pytest.mark.parametrize(
    "pattern, extra, expected",
    [
        ("[seed]", None, "00000-42.png"),
        ("[seed]-[prompt_words]", None, "00000-42-a cat.png"),
        ("[model_name]-[date]", None, "00000-v1-5-2024-05-06.png"),
        ("[datetime]", None, "00000-20240506070809.png"),
        ("[datetime<%Y/%m>]", None, "00000-2024_05.png"),
        ("[steps]-[cfg]-[sampler]", {"steps": 20, "cfg": 7.0, "sampler": "DPM++ 2M"}, "00000-20-7-DPM++ 2M.png"),
        ("[seed]-[unknown]", None, "00000-42.png"),
        ("[unknown]", None, "00000.png"),
        ("", None, "00000.png"),
        ("[steps]", {}, "00000.png"),
        ("x[seed]y", None, "00000-x42y.png"),
    ],
)
def test_pattern_tokens(tmp_path, pattern, extra, expected):
    assert _name(tmp_path, pattern, extra=extra) == expected


def test_prompt_tokens(tmp_path):
    prompt = "a cat, sitting on a mat (masterpiece:1.2)"
    assert _name(tmp_path / "a", "[prompt]", prompt=prompt) == "00000-a_cat,_sitting_on_a_mat_(masterpiece_1.2).png"
    assert _name(tmp_path / "b", "[prompt_words]", prompt=prompt) == "00000-a cat sitting on a mat masterpiece 1.png"
    assert prompt_words("") == "empty"
    assert prompt_words("one two three four five six seven eight nine ten") == "one two three four five six seven eight"


HOSTILE = "../../etc/passwd\nfoo\\bar:baz*?<>|\"\t\x00\x1b[31m  ..\u202e"


@pytest.mark.parametrize("pattern", ["[prompt]", "[prompt_spaces]", "[prompt_words]", "[model_name]", "../[seed]/.."])
def test_sanitisation(tmp_path, pattern):
    name = _name(tmp_path, pattern, prompt=HOSTILE, model_name=HOSTILE)
    assert "/" not in name and "\\" not in name
    assert not any(c in name for c in '<>:"|?*')
    assert not any(ord(c) < 32 or c == "\u202e" for c in name)
    assert not name.startswith(".")
    assert name.startswith("00000")
    files = _names(_folder(tmp_path))
    assert files == [name]
    assert not (tmp_path.parent / "etc").exists()


def test_sanitize_filename_part():
    assert sanitize_filename_part("a/b\\c:d") == "a_b_c_d"
    assert sanitize_filename_part("  many \n\n spaces\t here ") == "many spaces here"
    assert sanitize_filename_part("with spaces", replace_spaces=True) == "with_spaces"
    assert sanitize_filename_part(None) == ""
    assert sanitize_filename_part("猫 🐱") == "猫 🐱"


def test_very_long_prompts_are_capped(tmp_path):
    name = _name(tmp_path / "a", "[prompt]", prompt="word " * 500)
    assert len(name) <= 128
    assert name.startswith("00000-word_word") and name.endswith(".png")
    name = _name(tmp_path / "b", "[prompt_spaces]", prompt="猫" * 500)
    assert len(name.encode("utf-8")) <= 200
    assert name.startswith("00000-猫猫")
    name = _name(tmp_path / "c", "[prompt_words]-[seed]", prompt="x" * 1000)
    assert len(name) <= 128
    # the sidecar fits too
    path = OutputSaver(tmp_path / "d", filename_pattern="[prompt]", save_txt=True).save(
        _img(), INFO, seed=1, prompt="y" * 1000, model_name="m", when=WHEN
    )
    assert path.with_suffix(".txt").exists()


def test_invalid_kind_rejected(tmp_path):
    saver = OutputSaver(tmp_path)
    for kind in ("../x", "a/b", "..", "", "a\\b"):
        with pytest.raises(ValueError, match="invalid output kind"):
            saver.save(_img(), INFO, kind=kind, seed=1, prompt="p", model_name="m", when=WHEN)


def test_oversized_jpeg_falls_back_to_png(tmp_path, monkeypatch):
    monkeypatch.setattr(image_metadata, "MAX_JPEG_SIDE", 4)
    path = OutputSaver(tmp_path, fmt="jpg").save(_img(), INFO, seed=1, prompt="p", model_name="m", when=WHEN)
    assert path.suffix == ".png"
    assert read_infotext(path)[0] == INFO


# --- grids -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "n, rows_cols",
    [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (3, 3)),
     (9, (3, 3)), (10, (3, 4)), (13, (4, 4)), (16, (4, 4)), (17, (4, 5))],
)
def test_grid_layout(n, rows_cols):
    assert grid_layout(n) == rows_cols
    rows, cols = rows_cols
    import math
    assert cols == math.ceil(math.sqrt(n))


def test_grid_layout_explicit_rows():
    assert grid_layout(6, rows=1) == (1, 6)
    assert grid_layout(3, rows=10) == (3, 1)
    with pytest.raises(ValueError):
        grid_layout(0)


def test_image_grid_pixels():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (1, 2, 3)]
    grid = image_grid([_img(c) for c in colors])
    assert grid.size == (24, 16)
    assert grid.getpixel((0, 0)) == colors[0]
    assert grid.getpixel((8, 0)) == colors[1]
    assert grid.getpixel((16, 0)) == colors[2]
    assert grid.getpixel((0, 8)) == colors[3]
    assert grid.getpixel((8, 8)) == colors[4]
    assert grid.getpixel((16, 8)) == (0, 0, 0)


def test_save_grid(tmp_path):
    saver = OutputSaver(tmp_path, save_txt=True)
    path = saver.save_grid([_img()] * 4, INFO, when=WHEN)
    assert path == _folder(tmp_path, "txt2img-grids") / "grid-0000.png"
    assert path.with_suffix(".txt").exists()
    with Image.open(path) as img:
        assert img.size == (16, 16)
    assert read_infotext(path)[0] == INFO
    assert saver.save_grid([_img()] * 2, INFO, when=WHEN).name == "grid-0001.png"
    # grids and images in one folder number independently
    p = saver.save(_img(), INFO, kind="txt2img-grids", seed=3, prompt="p", model_name="m", when=WHEN)
    assert p.name == "00000-3.png"
    assert saver.save_grid([_img()], INFO, when=WHEN).name == "grid-0002.png"
    with pytest.raises(ValueError):
        saver.save_grid([], INFO, when=WHEN)


def test_save_grid_extended_filename(tmp_path):
    saver = OutputSaver(tmp_path, filename_pattern="[seed]-[prompt_words]", grid_extended_filename=True)
    path = saver.save_grid([_img()] * 2, INFO, seed=42, prompt="a cat", when=WHEN)
    assert path.name == "grid-0000-42-a cat.png"
