"""Print sizing: parsing, physical size -> pixels, and crop/pad fitting."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from hiresnst.errors import UserError
from hiresnst.printsize import (
    FitPlan,
    apply_fit,
    check_dpi,
    fit_to_print,
    parse_print_size,
    print_pixels,
    round_half_up,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("60x40cm", (60.0, 40.0, "cm")),
        ("24x16in", (24.0, 16.0, "in")),
        ("600x400mm", (600.0, 400.0, "mm")),
        ("24 x 16 in", (24.0, 16.0, "in")),
        ("60×40cm", (60.0, 40.0, "cm")),
        ("60 × 40 cm", (60.0, 40.0, "cm")),
        ("8.5x11in", (8.5, 11.0, "in")),
        ("  .5X2.CM ", (0.5, 2.0, "cm")),
        ("29.7x42.0MM", (29.7, 42.0, "mm")),
    ],
)
def test_parse_print_size(text, expected):
    assert parse_print_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["60cm", "60x40", "60x40ft", "0x40cm", "60x0in", "-1x2in", "", "x40cm", "60x40x2cm",
     "1e2x40cm", "60x40cm\nrm -rf /", "nanxinfin", "60,5x40cm"],
)  # fmt: skip
def test_parse_print_size_rejects(text):
    with pytest.raises(UserError) as info:
        parse_print_size(text)
    message = str(info.value)
    assert "\n" not in message
    assert "60x40cm" in message  # an example of the right form


def test_parse_print_size_rejects_non_string():
    with pytest.raises(UserError):
        parse_print_size(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "size, dpi, expected",
    [
        ((120, 80, "cm"), 300, (14173, 9449)),
        ((24, 16, "in"), 300, (7200, 4800)),
        ((60, 40, "cm"), 300, (7087, 4724)),
        ((8.5, 11, "in"), 300, (2550, 3300)),
        ((600, 400, "mm"), 300, (7087, 4724)),
        ((210, 297, "mm"), 300, (2480, 3508)),  # A4
        ((254, 25.4, "mm"), 100, (1000, 100)),
        ((2.54, 2.54, "cm"), 72, (72, 72)),
        ((1, 1, "IN"), 1, (1, 1)),
    ],
)
def test_print_pixels(size, dpi, expected):
    px = print_pixels(*size, dpi)
    assert px == expected
    assert (px.width, px.height) == expected
    assert all(type(v) is int for v in px)


def test_print_pixels_from_parsed_text():
    assert print_pixels(*parse_print_size("60×40cm"), 300) == (7087, 4724)


def test_round_half_up_differs_from_bankers():
    # 1 in at 2.5 dpi is exactly 2.5 px: half-up gives 3 where round() (banker's) gives 2;
    # 4.5 in at 1 dpi: 5 vs 4.
    assert round(2.5) == 2 and round(4.5) == 4
    assert print_pixels(1, 1, "in", 2.5) == (3, 3)
    assert print_pixels(4.5, 0.5, "in", 1) == (5, 1)
    # 0.381 mm = 0.015 in: at 300 dpi exactly 4.5 px -> 5 (banker's: 4)
    assert print_pixels(0.381, 0.127, "mm", 300) == (5, 2)
    # 3.683 mm at 100 dpi is exactly 14.5 px -> 15; binary floats make it 14.4999... (-> 14)
    assert 3.683 / 25.4 * 100 < 14.5
    assert print_pixels(3.683, 0.3683, "mm", 100)[0] == 15
    assert print_pixels(0.3683, 3.683, "cm", 100) == (15, 145)
    # 12.7 mm = 1.27 cm = 0.5 in; at 5 dpi exactly 2.5 -> 3 in every unit
    assert print_pixels(12.7, 127, "mm", 5) == (3, 25)
    assert print_pixels(1.27, 0.5, "cm", 5)[0] == 3
    assert print_pixels(0.5, 0.5, "in", 5) == (3, 3)
    # just below a half rounds down
    assert print_pixels(0.499, 0.5, "in", 5) == (2, 3)
    assert round_half_up(Fraction(7, 2)) == 4 and round_half_up(Fraction(-5, 2)) == -2


@pytest.mark.parametrize(
    "dpi", [0, -300, 65_535.5, 100_000, float("nan"), float("inf"), "abc", True]
)
def test_print_pixels_rejects_bad_dpi(dpi):
    with pytest.raises(UserError) as info:
        print_pixels(60, 40, "cm", dpi)
    assert "\n" not in str(info.value)
    assert "dpi" in str(info.value)


def test_dpi_bounds_inclusive():
    assert print_pixels(1, 1, "in", 10_000) == (10_000, 10_000)
    assert check_dpi(300) == 300.0 and check_dpi("72") == 72.0
    with pytest.raises(UserError, match="--dpi 300"):
        check_dpi(0)


@pytest.mark.parametrize(
    "width, height, unit",
    [(0, 40, "cm"), (-1, 2, "in"), (60, 40, "ft"), (60, 40, ""), (0.001, 1, "mm")],
)
def test_print_pixels_rejects_bad_sizes(width, height, unit):
    with pytest.raises(UserError) as info:
        print_pixels(width, height, unit, 300)
    assert "\n" not in str(info.value)


# --- fitting -----------------------------------------------------------------------------------

CONTENT_HW = (768, 1024)  # a 1024x768 (4:3 landscape) content image


@pytest.mark.parametrize("print_px", [(3000, 2000), (7200, 4800), (2000, 3000), (301, 200)])
def test_crop_geometry(print_px):
    plan = fit_to_print(CONTENT_HW, print_px, "crop")
    pw, ph = print_px
    assert isinstance(plan, FitPlan) and plan.mode == "crop"
    assert plan.output_hw == (ph, pw) and plan.resized_hw == (ph, pw)
    assert plan.pad == (0, 0, 0, 0)
    top, left, bh, bw = plan.crop_box
    # the box covers one full side of the content and has the print's aspect within half a pixel
    assert bh == 768 or bw == 1024
    assert 0 < bh <= 768 and 0 < bw <= 1024
    if bw == 1024:
        assert abs(bh - 1024 * ph / pw) <= 0.5
    else:
        assert abs(bw - 768 * pw / ph) <= 0.5
    # centred: the margins either side differ by at most one pixel
    assert abs(top - (768 - top - bh)) <= 1 and abs(left - (1024 - left - bw)) <= 1
    assert plan.scale == pytest.approx(max(pw / 1024, ph / 768))


def test_crop_numbers_3x2_landscape():
    plan = fit_to_print(CONTENT_HW, (3000, 2000), "crop")
    assert plan.crop_box == (42, 0, 683, 1024)  # 1024 * 2/3 = 682.67 -> 683, (768-683)//2 = 42


@pytest.mark.parametrize("print_px", [(3000, 2000), (7200, 4800), (2000, 3000), (301, 200)])
def test_pad_geometry(print_px):
    plan = fit_to_print(CONTENT_HW, print_px, "pad")
    pw, ph = print_px
    assert plan.mode == "pad" and plan.output_hw == (ph, pw)
    assert plan.crop_box == (0, 0, 768, 1024)
    rh, rw = plan.resized_hw
    top, bottom, left, right = plan.pad
    assert top + rh + bottom == ph and left + rw + right == pw
    assert min(plan.pad) >= 0
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    assert rh == ph or rw == pw  # fits one side exactly
    assert abs(rw / rh - 1024 / 768) <= 1.0 / min(rh, rw)  # aspect kept to the pixel
    assert plan.scale == pytest.approx(min(pw / 1024, ph / 768))
    assert plan.pad_value == 1.0


def test_pad_numbers_3x2_landscape():
    plan = fit_to_print(CONTENT_HW, (3000, 2000), "pad")
    assert plan.resized_hw == (2000, 2667)  # 1024 * 2000/768 = 2666.67 -> 2667
    assert plan.pad == (0, 0, 166, 167)
    assert plan.content_area == (0, 166, 2000, 2667)


def test_same_aspect_neither_crops_nor_pads():
    for mode in ("crop", "pad"):
        plan = fit_to_print(CONTENT_HW, (2048, 1536), mode)
        assert plan.crop_box == (0, 0, 768, 1024)
        assert plan.pad == (0, 0, 0, 0) and plan.resized_hw == (1536, 2048)


def test_fit_plan_is_frozen():
    plan = fit_to_print(CONTENT_HW, (300, 200), "crop")
    with pytest.raises(AttributeError):
        plan.scale = 2.0  # type: ignore[misc]


def test_fit_rejects_bad_mode():
    with pytest.raises(UserError):
        fit_to_print(CONTENT_HW, (300, 200), "stretch")  # type: ignore[arg-type]


def test_apply_fit_crop(rng):
    content = np.zeros((48, 64, 3), np.float32)
    content[:, :, 0] = np.linspace(0.0, 1.0, 64)[None, :]  # horizontal ramp in red
    content[:, :, 1] = 0.25
    plan = fit_to_print((48, 64), (90, 60), "crop")
    out = apply_fit(content, plan)
    assert out.shape == (60, 90, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[:, :, 1], 0.25, atol=1e-6)
    # the full width is kept, so the ramp still spans (almost) 0..1 left to right
    assert out[30, 0, 0] < 0.02 and out[30, -1, 0] > 0.98
    assert np.all(np.diff(out[30, 5:-5, 0]) > 0)


def test_apply_fit_pad_is_white_around_centred_content():
    content = np.full((48, 64, 3), 0.3, np.float32)
    plan = fit_to_print((48, 64), (90, 60), "pad")
    out = apply_fit(content, plan)
    assert out.shape == (60, 90, 3)
    top, left, h, w = plan.content_area
    inner = out[top : top + h, left : left + w]
    np.testing.assert_allclose(inner, 0.3, atol=1e-6)
    mask = np.ones((60, 90), bool)
    mask[top : top + h, left : left + w] = False
    assert mask.any() and np.all(out[mask] == 1.0)


def test_apply_fit_identity_and_shape_check(rng):
    content = rng.random((30, 40, 3), dtype=np.float32)
    plan = fit_to_print((30, 40), (40, 30), "crop")
    np.testing.assert_array_equal(apply_fit(content, plan), content)
    with pytest.raises(ValueError):
        apply_fit(content[:, :39], plan)
