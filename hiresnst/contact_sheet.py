"""Contact sheets: a labelled grid of thumbnails, one cell per job of a series.

A cell shows the job's thumbnail (about 160 px) with its name under it, shortened to three lines;
jobs that failed or have not run yet get a plain placeholder, so the grid keeps its layout while a
series is still running. The sheet is written as a JPEG through `imageio.write_image`, i.e. to a
temporary file renamed over the final name: a reader never sees a half-written sheet.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import imageio

THUMB_SIZE = 160
"""Long edge of a thumbnail and side of a cell's picture area, in pixels."""

PAD = 8
FONT_SIZE = 11
TITLE_FONT_SIZE = 13
LABEL_LINES = 3
MAX_AUTO_COLUMNS = 12

BACKGROUND = (246, 246, 246)
PLACEHOLDER = (222, 222, 222)
FAILED = (236, 200, 200)
TEXT = (25, 25, 25)
MUTED = (110, 110, 110)

_FILE_MODES = ("RGB", "RGBA", "L", "LA", "P", "CMYK", "1")


@dataclass
class Cell:
    """One job on the sheet: its label, its thumbnail (any size, fitted to the cell) and status.

    `status` is "ok" (the thumbnail is shown), "failed" or "pending" (a placeholder is shown).
    """

    label: str
    image: Image.Image | None = None
    status: str = "ok"


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow ≥ 10.1)
    except (TypeError, OSError, ImportError):  # pragma: no cover - depends on the Pillow build
        return ImageFont.load_default()


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> float:
    return float(font.getlength(text))


def thumbnail_from_array(image: np.ndarray, size: int = THUMB_SIZE) -> Image.Image:
    """An RGB thumbnail (long edge `size`) of a float H×W×3 image in [0, 1].

    Large images are first subsampled by striding, so a gigapixel render costs little memory.
    """
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    stride = max(1, max(h, w) // (4 * size))
    small = arr[::stride, ::stride, :3].astype(np.float32)
    small = np.rint(np.clip(np.nan_to_num(small, nan=0.0, posinf=1.0, neginf=0.0), 0, 1) * 255)
    img = Image.fromarray(small.astype(np.uint8), "RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def thumbnail_from_file(path: str | os.PathLike[str], size: int = THUMB_SIZE) -> Image.Image:
    """An RGB thumbnail of an image file (PNG, JPEG or TIFF, 8 or 16 bits)."""
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as img:
                if img.mode in _FILE_MODES:
                    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                    img.thumbnail((size, size), Image.Resampling.LANCZOS)
                    return img.convert("RGB")
    except Image.DecompressionBombError:
        pass  # a very large render: read it with our own reader below
    return thumbnail_from_array(imageio.read_image(name, max_pixels=None), size)


def shorten(text: str, width: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """`text`, with its middle replaced by "…" if it is wider than `width` pixels.

    The middle goes because a job name starts with its inputs and ends with its distinguishing
    settings and hash.
    """
    if _text_width(font, text) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head = (keep + 1) // 2
        tail = keep - head
        candidate = text[:head] + "…" + (text[-tail:] if tail else "")
        if _text_width(font, candidate) <= width:
            return candidate
    return "…"


def wrap_label(
    text: str,
    width: float,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    lines: int = LABEL_LINES,
) -> list[str]:
    """`text` broken into at most `lines` lines of `width` px; the last one shortened."""
    out: list[str] = []
    rest = text
    while rest and len(out) < lines - 1 and _text_width(font, rest) > width:
        cut = len(rest)
        while cut > 1 and _text_width(font, rest[:cut]) > width:
            cut -= 1
        # prefer to break after a separator if one is near the end of the line
        seps = [i + 1 for i, c in enumerate(rest[:cut]) if c in "_-+,"]
        if seps and seps[-1] >= cut * 0.6:
            cut = seps[-1]
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        out.append(shorten(rest, width, font))
    return out


def _fit(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled (up or down) to a long edge of `size`."""
    w, h = image.size
    if max(w, h) == size:
        return image
    k = size / max(w, h)
    return image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)


def _auto_columns(n: int) -> int:
    return max(1, min(n, MAX_AUTO_COLUMNS, math.ceil(math.sqrt(n))))


def make_contact_sheet(
    cells: Sequence[Cell],
    *,
    columns: int | None = None,
    size: int = THUMB_SIZE,
    title: str | None = None,
) -> Image.Image:
    """The sheet as an RGB image: `columns` cells a row (default: about square), row-major."""
    n = len(cells)
    cols = _auto_columns(n) if not columns or columns < 1 else min(columns, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    font = _font(FONT_SIZE)
    line_h = FONT_SIZE + 4
    cell_w = size + 2 * PAD
    cell_h = size + PAD + LABEL_LINES * line_h + PAD
    title_h = TITLE_FONT_SIZE + 2 * PAD if title else 0
    sheet = Image.new("RGB", (cols * cell_w, title_h + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        title_font = _font(TITLE_FONT_SIZE)
        draw.text(
            (PAD, PAD),
            shorten(title, sheet.width - 2 * PAD, title_font),
            fill=TEXT,
            font=title_font,
        )
    for i, cell in enumerate(cells):
        x0 = (i % cols) * cell_w + PAD
        y0 = title_h + (i // cols) * cell_h + PAD
        if cell.status == "ok" and cell.image is not None:
            thumb = _fit(cell.image.convert("RGB"), size)
            sheet.paste(thumb, (x0 + (size - thumb.width) // 2, y0 + (size - thumb.height) // 2))
        else:
            failed = cell.status == "failed"
            draw.rectangle(
                (x0, y0, x0 + size - 1, y0 + size - 1), fill=FAILED if failed else PLACEHOLDER
            )
            word = cell.status if cell.status in ("failed", "pending") else "no image"
            tw = _text_width(font, word)
            draw.text(
                (x0 + (size - tw) / 2, y0 + size / 2 - FONT_SIZE / 2), word, fill=MUTED, font=font
            )
        for j, line in enumerate(wrap_label(cell.label, size, font)):
            draw.text((x0, y0 + size + PAD // 2 + j * line_h), line, fill=TEXT, font=font)
    return sheet


def write_contact_sheet(
    path: str | os.PathLike[str],
    cells: Sequence[Cell],
    *,
    columns: int | None = None,
    size: int = THUMB_SIZE,
    title: str | None = None,
    quality: int = 88,
) -> Image.Image:
    """Make the sheet and write it atomically (JPEG, PNG or TIFF by extension); returns it."""
    sheet = make_contact_sheet(cells, columns=columns, size=size, title=title)
    arr = np.asarray(sheet, np.float32) / np.float32(255)
    imageio.write_image(path, arr, quality=quality)
    return sheet
