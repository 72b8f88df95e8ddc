"""Print sizing: physical print size + dpi -> pixels, and fitting the content to that shape.

* `parse_print_size("60x40cm")` -> (60.0, 40.0, "cm"); width first, then height.
* `print_pixels(60, 40, "cm", 300)` -> PrintPixels(width=7087, height=4724). Lengths are
  converted with 1 in = 2.54 cm = 25.4 mm exactly and px = round_half_up(inches x dpi), computed
  in exact rational arithmetic from the decimal values (so 12.7 mm at 5 dpi is exactly 2.5 -> 3,
  not 2.4999999 -> 2 as binary floats would give).
* `fit_to_print((h, w), (print_w, print_h), "crop" | "pad")` -> FitPlan, and
  `apply_fit(image, plan)` -> the content image at exactly the print size, resized with Pillow's
  Lanczos (a = 3, antialiased when shrinking) on float32 ("F" mode) channels, clipped to [0, 1].

Note the orders: content sizes are (height, width) like array shapes; print sizes are
(width, height) like the text "60x40cm".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from hiresnst.errors import UserError

#: The largest DPI every output format stores (JPEG's JFIF density is 16-bit).
MAX_DPI = 65_535
UNIT_PER_INCH: dict[str, Fraction] = {
    "in": Fraction(1),
    "cm": Fraction(254, 100),
    "mm": Fraction(254, 10),
}
"""Units per inch, exact: 1 in = 2.54 cm = 25.4 mm."""

PAD_VALUE = 1.0
"""Padding colour for mode "pad": white."""

EXAMPLE = "e.g. 60x40cm, 24x16in, 600x400mm or 8.5x11in"

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PRINT_SIZE = re.compile(rf"^\s*{_NUMBER}\s*[x×]\s*{_NUMBER}\s*(cm|mm|in)\s*$", re.IGNORECASE)

FitMode = Literal["crop", "pad"]


class PrintPixels(NamedTuple):
    width: int
    height: int


def _one_line(text: object) -> str:
    """The user's text quoted for a one-line message: repr escapes newlines; long text is cut."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def parse_print_size(text: str) -> tuple[float, float, str]:
    """Parse "WIDTHxHEIGHTunit" -> (width, height, unit).

    Accepts "x", "X" or "×" between the numbers, spaces around the parts, decimals
    ("8.5x11in") and the units cm, mm and in (any case; returned lower-case). Both lengths must be
    greater than 0. Anything else raises `UserError` naming an example of the right form.
    """
    match = _PRINT_SIZE.match(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(
            f"print size {_one_line(text)} is not understood: write WIDTHxHEIGHT and a unit "
            f"(cm, mm or in), {EXAMPLE}"
        )
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise UserError(
            f"print size {_one_line(text)} has a zero side: both sides must be greater than 0, "
            f"{EXAMPLE}"
        )
    return width, height, match.group(3).lower()


def _exact(value: float | int | str, what: str) -> Fraction:
    """The decimal the user wrote, as an exact fraction (floats via their shortest repr)."""
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {_one_line(value)}") from None
    if not math.isfinite(number):
        raise UserError(f"{what} must be a finite number, got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(repr(number))


def _check_dpi(dpi: float | int) -> Fraction:
    d = _exact(dpi, "dpi")
    if not 0 < d <= MAX_DPI:
        raise UserError(
            f"dpi must be a number in (0, {MAX_DPI}], got {dpi}: e.g. --dpi 300"
        )
    return d


def check_dpi(dpi: float | int) -> float:
    """`dpi` as a float if 0 < dpi <= 10000, else `UserError` (for validating options early)."""
    return float(_check_dpi(dpi))


def round_half_up(value: Fraction) -> int:
    """floor(value + 1/2): halves round up (2.5 -> 3, 3.5 -> 4), unlike Python's round()."""
    return math.floor(value + Fraction(1, 2))


def print_pixels(width: float, height: float, unit: str, dpi: float | int) -> PrintPixels:
    """Pixels for a print of width x height `unit` at `dpi` dots per inch.

    px = round_half_up(length / units_per_inch x dpi), exact rational arithmetic, with
    1 in = 2.54 cm = 25.4 mm. `dpi` must satisfy 0 < dpi <= 10000; lengths must be > 0 and each
    side must come to at least 1 px. Violations raise `UserError`.
    """
    d = _check_dpi(dpi)
    key = unit.lower() if isinstance(unit, str) else unit
    if key not in UNIT_PER_INCH:
        raise UserError(f"unknown print unit {_one_line(unit)}: use cm, mm or in, {EXAMPLE}")
    sides = []
    for name, length in (("width", width), ("height", height)):
        exact = _exact(length, f"print {name}")
        if exact <= 0:
            raise UserError(f"print {name} must be greater than 0, got {length}: {EXAMPLE}")
        px = round_half_up(exact / UNIT_PER_INCH[key] * d)
        if px < 1:
            raise UserError(
                f"print {name} {length}{key} at {dpi} dpi is less than one pixel: "
                "use a larger size or dpi"
            )
        sides.append(px)
    return PrintPixels(*sides)


@dataclass(frozen=True)
class FitPlan:
    """How a content image of `content_hw` becomes an image of exactly `output_hw` pixels.

    The content's box `crop_box` (top, left, height, width, in content pixels) is resized to
    `resized_hw` and placed at (`pad[0]`, `pad[2]`) in an `output_hw` canvas filled with
    `pad_value`. For "crop" the box is the largest centred box with the print's aspect (to the
    nearest whole pixel) and there is no padding; for "pad" the box is the whole content and
    `pad` = (top, bottom, left, right) centres it, odd pixels going to bottom/right.
    `scale` is output pixels per content pixel (the larger of the two axes' for "crop", the
    smaller for "pad"), i.e. the resize factor before rounding.
    """

    mode: str
    content_hw: tuple[int, int]
    output_hw: tuple[int, int]
    scale: float
    crop_box: tuple[int, int, int, int]
    resized_hw: tuple[int, int]
    pad: tuple[int, int, int, int]
    pad_value: float = PAD_VALUE

    @property
    def content_area(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the content within the output."""
        return (self.pad[0], self.pad[2], *self.resized_hw)


def _div_half_up(num: int, den: int) -> int:
    """round_half_up(num / den) for non-negative integers, exactly."""
    return (2 * num + den) // (2 * den)


def fit_to_print(
    content_hw: tuple[int, int], print_px: tuple[int, int], mode: FitMode = "crop"
) -> FitPlan:
    """Plan fitting content of (height, width) `content_hw` to a print of (width, height)
    `print_px` (as returned by `print_pixels`).

    "crop": scale to cover the print and crop the centre. The crop box is the full width or
    full height of the content and round_half_up of the other side at the print's aspect; it is
    then resized to the print size (any aspect mismatch is below half a content pixel).
    "pad": scale to fit inside the print and pad centrally with white; the content keeps its full
    extent and the fitted side is round_half_up(other x print side / content side).
    """
    ch, cw = (int(v) for v in content_hw)
    pw, ph = (int(v) for v in print_px)
    if ch < 1 or cw < 1 or ph < 1 or pw < 1:
        raise ValueError(f"sizes must be positive: content_hw={content_hw}, print_px={print_px}")
    if mode == "crop":
        if pw * ch >= ph * cw:  # print relatively wider: keep the full width, crop the height
            box_w = cw
            box_h = min(ch, max(1, _div_half_up(cw * ph, pw)))
        else:
            box_h = ch
            box_w = min(cw, max(1, _div_half_up(ch * pw, ph)))
        top, left = (ch - box_h) // 2, (cw - box_w) // 2
        return FitPlan(
            mode="crop",
            content_hw=(ch, cw),
            output_hw=(ph, pw),
            scale=max(pw / cw, ph / ch),
            crop_box=(top, left, box_h, box_w),
            resized_hw=(ph, pw),
            pad=(0, 0, 0, 0),
        )
    if mode == "pad":
        if pw * ch <= ph * cw:  # content relatively wider: fill the width, pad top and bottom
            in_w = pw
            in_h = min(ph, max(1, _div_half_up(ch * pw, cw)))
        else:
            in_h = ph
            in_w = min(pw, max(1, _div_half_up(cw * ph, ch)))
        top, left = (ph - in_h) // 2, (pw - in_w) // 2
        return FitPlan(
            mode="pad",
            content_hw=(ch, cw),
            output_hw=(ph, pw),
            scale=min(pw / cw, ph / ch),
            crop_box=(0, 0, ch, cw),
            resized_hw=(in_h, in_w),
            pad=(top, ph - in_h - top, left, pw - in_w - left),
        )
    raise UserError(f"unknown fit mode {_one_line(mode)}: use crop or pad")


def _resize_channel(channel: np.ndarray, box: tuple[int, int, int, int], hw: tuple[int, int]):
    top, left, h, w = box
    image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
    resized = image.resize(
        (hw[1], hw[0]), Image.Resampling.LANCZOS, box=(left, top, left + w, top + h)
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def apply_fit(image, plan: FitPlan) -> np.ndarray:
    """The content image (H, W, C) float32 in [0, 1] made into `plan.output_hw` pixels.

    Crops `plan.crop_box`, resizes it to `plan.resized_hw` with Pillow's Lanczos filter per
    channel in float32, clips the ringing to [0, 1], and places it in a canvas of
    `plan.pad_value`. A channel is resized at a time, so peak memory is about the output plus
    one output channel.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[:2] != plan.content_hw:
        raise ValueError(f"image of shape {arr.shape} does not match plan for {plan.content_hw}")
    oh, ow = plan.output_hw
    out = np.full((oh, ow, arr.shape[2]), plan.pad_value, dtype=np.float32)
    top, left, rh, rw = plan.content_area
    whole = plan.crop_box == (0, 0, *plan.content_hw) and plan.resized_hw == plan.content_hw
    for ch in range(arr.shape[2]):
        if whole:
            resized = arr[:, :, ch].astype(np.float32)
        else:
            resized = _resize_channel(arr[:, :, ch], plan.crop_box, plan.resized_hw)
        out[top : top + rh, left : left + rw, ch] = resized
    return out
