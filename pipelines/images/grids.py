"""Labelled image grids (X/Y/Z plot, prompt matrix): cells in rows and columns, labels in the margins.

    grid = labelled_grid([[a, b], [c, d]], col_labels=["Steps: 10", "Steps: 20"],
                         row_labels=["CFG scale: 5", "CFG scale: 7"])

The grid is `left + cols x cell_w` wide and `top + rows x cell_h` high: the column labels sit in a top
margin, the row labels in a left margin (no margin on a side without labels). A label is a string or a
list of `Label`s, one per line; an inactive label is drawn grey (the prompt matrix shows which parts a
column leaves out). Text is wrapped to the margin and drawn with Pillow's bundled default font, so
nothing depends on fonts installed on the machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence, Union

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
INACTIVE = (153, 153, 153)
EMPTY_CELL = (0, 0, 0)


@dataclass(frozen=True)
class Label:
    text: str
    active: bool = True


LabelSpec = Union[str, Label, Sequence[Label], None]


@lru_cache(maxsize=16)
def font(size: int):
    """Pillow's bundled font at `size` px (a bitmap font on Pillow builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):   # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def font_size_for(cell_w: int, cell_h: int) -> int:
    """A1111's (w + h) / 25, kept readable on tiny cells and moderate on huge ones."""
    return max(12, min(48, (cell_w + cell_h) // 25))


def _lines(spec: LabelSpec) -> list[Label]:
    if spec is None or spec == "":
        return []
    if isinstance(spec, str):
        return [Label(spec)]
    if isinstance(spec, Label):
        return [spec]
    return [x if isinstance(x, Label) else Label(str(x)) for x in spec]


def _text_width(draw: ImageDraw.ImageDraw, text: str, fnt) -> int:
    if not text:
        return 0
    left, _, right, _ = draw.textbbox((0, 0), text, font=fnt)
    return right - left


def _wrap(draw: ImageDraw.ImageDraw, label: Label, fnt, width: int) -> list[Label]:
    """Split one label into lines no wider than `width` (at spaces; a long word is cut)."""
    out: list[Label] = []
    line = ""
    for word in label.text.split(" "):
        candidate = f"{line} {word}" if line else word
        if _text_width(draw, candidate, fnt) <= width or not line:
            line = candidate
        else:
            out.append(Label(line, label.active))
            line = word
        while _text_width(draw, line, fnt) > width and len(line) > 1:   # one word wider than the space
            cut = len(line) - 1
            while cut > 1 and _text_width(draw, line[:cut], fnt) > width:
                cut -= 1
            out.append(Label(line[:cut], label.active))
            line = line[cut:]
    out.append(Label(line, label.active))
    return out


def _draw_block(draw: ImageDraw.ImageDraw, lines: list[Label], fnt, line_h: int, box: tuple[int, int, int, int]):
    """Lines centred in `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    y = top + max(0, (bottom - top - line_h * len(lines)) // 2)
    for line in lines:
        w = _text_width(draw, line.text, fnt)
        x = left + max(0, (right - left - w) // 2)
        draw.text((x, y), line.text, font=fnt, fill=TEXT if line.active else INACTIVE)
        y += line_h


def labelled_grid(cells: Sequence[Sequence[Image.Image | None]], col_labels: Sequence[LabelSpec] = (),
                  row_labels: Sequence[LabelSpec] = (), *, font_size: int | None = None) -> Image.Image:
    """Paste `cells[row][col]` (None: a black cell) into a grid with labelled margins.

    Cells take the largest cell size; smaller images sit in their cell's top-left corner. With no
    column labels there is no top margin, with no row labels no left margin."""
    rows = len(cells)
    cols = max((len(r) for r in cells), default=0)
    if rows == 0 or cols == 0:
        raise ValueError("a grid needs at least one cell")
    sizes = [im.size for r in cells for im in r if im is not None]
    cell_w = max((s[0] for s in sizes), default=64)
    cell_h = max((s[1] for s in sizes), default=64)
    size = font_size or font_size_for(cell_w, cell_h)
    fnt = font(size)
    line_h = int(size * 1.25) + 1
    pad = max(4, size // 3)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    col_lines = [[w for lab in _lines(col_labels[c] if c < len(col_labels) else None)
                  for w in _wrap(measure, lab, fnt, cell_w - 2 * pad)] for c in range(cols)]
    top = (max(len(x) for x in col_lines) * line_h + 2 * pad) if any(col_lines) else 0

    row_specs = [_lines(row_labels[r] if r < len(row_labels) else None) for r in range(rows)]
    left = 0
    row_lines: list[list[Label]] = [[] for _ in range(rows)]
    if any(row_specs):
        natural = max(_text_width(measure, lab.text, fnt) for spec in row_specs for lab in spec)
        text_w = min(natural, max(cell_w * 3 // 4, size * 8))
        left = text_w + 2 * pad
        row_lines = [[w for lab in spec for w in _wrap(measure, lab, fnt, text_w)] for spec in row_specs]

    grid = Image.new("RGB", (left + cols * cell_w, top + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(cells):
        for c in range(cols):
            x, y = left + c * cell_w, top + r * cell_h
            im = row[c] if c < len(row) else None
            if im is None:
                grid.paste(EMPTY_CELL, (x, y, x + cell_w, y + cell_h))
            else:
                grid.paste(im.convert("RGB") if im.mode != "RGB" else im, (x, y))
    for c, lines in enumerate(col_lines):
        if lines:
            _draw_block(draw, lines, fnt, line_h, (left + c * cell_w, 0, left + (c + 1) * cell_w, top))
    for r, lines in enumerate(row_lines):
        if lines:
            _draw_block(draw, lines, fnt, line_h, (pad, top + r * cell_h, left - pad, top + (r + 1) * cell_h))
    return grid


def side_by_side(grids: Sequence[Image.Image], titles: Sequence[LabelSpec] = (), *, gap: int = 16,
                 font_size: int | None = None) -> Image.Image:
    """Several grids in one row with a title above each (the Z axis of an X/Y/Z plot)."""
    if len(grids) == 1 and not titles:
        return grids[0]
    cell_w = max(g.width for g in grids) + gap
    cells = [[g if not gap else _with_gap(g, cell_w, max(x.height for x in grids)) for g in grids]]
    out = labelled_grid(cells, titles, font_size=font_size or font_size_for(512, 512))
    return out.crop((0, 0, out.width - gap, out.height)) if gap else out


def _with_gap(image: Image.Image, width: int, height: int) -> Image.Image:
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(image, (0, 0))
    return canvas
