"""Whole renders through the Python API: tiling, seams, the pyramid and make_objective."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NARROW

from hiresnst import pyramid
from hiresnst.config import RenderConfig
from hiresnst.plan import make_render_plan
from hiresnst.render import make_objective, render, render_with_info


def _images(rng):
    yy, xx = np.mgrid[0:70, 0:90] / 90.0
    content = np.stack([yy, xx, 0.5 + 0.3 * np.sin(9 * xx * yy)], -1).astype(np.float32)
    style = rng.random((48, 48, 3)).astype(np.float32)
    return np.clip(content, 0, 1), style


BASE = RenderConfig(size=90, steps=20, weights="random", widths=NARROW, seed=3, tile=0)


def test_loss_falls_and_output_is_a_valid_image(rng):
    content, style = _images(rng)
    result = render_with_info(content, [style], BASE)
    assert result.image.shape == (70, 90, 3)
    assert result.image.dtype == np.float32
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    level = result.info["levels"][0]
    assert level["loss_last"] < 0.5 * level["loss_first"]
    assert result.info["weights"]["kind"] == "random"


def test_tiled_render_equals_untiled_and_shows_no_seam(rng):
    content, style = _images(rng)
    untiled = render(content, [style], BASE)
    tiled_result = render_with_info(content, [style], RenderConfig(**{**BASE.__dict__, "tile": 32}))
    tiled = tiled_result.image
    assert tiled_result.info["levels"][0]["tiles"] == 9
    assert np.abs(tiled - untiled).mean() <= 1e-3
    # Seams: differences between neighbours across tile borders (rows/cols 32, 64) are no larger
    # than elsewhere, and the tiled-vs-untiled error is not concentrated there.
    dx = np.abs(np.diff(tiled, axis=1)).mean(axis=(0, 2))
    border = dx[[31, 63]].mean()
    assert border <= 1.5 * np.median(dx)
    err = np.abs(tiled - untiled).mean(axis=(0, 2))
    assert err[[31, 32, 63, 64]].mean() <= 2 * err.mean() + 1e-6


def test_each_level_starts_from_the_upsampled_previous_level(rng):
    content, style = _images(rng)
    cfg = RenderConfig(**{**BASE.__dict__, "scales": 2, "min_size": 48, "steps": (5, 0)})
    two_level = render_with_info(content, [style], cfg)
    assert [lv["size"] for lv in two_level.info["levels"]] == [[37, 48], [70, 90]]
    coarse = render(content, [style], RenderConfig(**{**BASE.__dict__, "size": 48, "steps": 5}))
    expected = np.asarray(pyramid.resize(coarse, (70, 90)))
    np.testing.assert_allclose(two_level.image, expected, atol=1e-6)


def test_default_steps_favour_coarse_levels():
    assert pyramid.steps_per_level(100, 3) == [400, 200, 100]
    assert pyramid.steps_per_level((5, 6), 2) == [5, 6]
    assert pyramid.level_sizes(1024, 3) == [256, 512, 1024]
    assert pyramid.level_sizes(4096, 3, 512) == [512, 1448, 4096]


def test_make_objective_tiled_equals_untiled(rng):
    content, style = _images(rng)
    cfg = RenderConfig(**{**BASE.__dict__, "size": 90})
    untiled = make_objective(content, [style], cfg)
    tiled = make_objective(content, [style], RenderConfig(**{**cfg.__dict__, "tile": 48}))
    image = rng.random(untiled.shape).astype(np.float32)
    loss, grad = untiled(image)
    t_loss, t_grad = tiled(image)
    assert abs(float(t_loss) - float(loss)) <= 1e-4 * float(loss)
    assert float(np.abs(t_grad - grad).max()) <= 1e-4 * float(np.abs(grad).max())


@pytest.mark.parametrize("blend", [(1.0, 0.0), (3.0, 0.0)])
def test_blend_weights_one_zero_equal_a_single_style(rng, blend):
    content, style = _images(rng)
    other = rng.random((40, 56, 3)).astype(np.float32)
    cfg = RenderConfig(**{**BASE.__dict__, "steps": 3})
    single = render(content, [style], cfg)
    blended = render(
        content, [style, other], RenderConfig(**{**cfg.__dict__, "style_blend": blend})
    )
    np.testing.assert_allclose(blended, single, atol=1e-6)


def test_a_tile_larger_than_the_level_is_cut_to_it():
    """A pyramid's coarse levels with a gigapixel tile size get one level-sized tile, not a
    window of the tile's size (which at 4096 px does not fit in memory)."""
    def level(hw, config):
        plan = make_render_plan(config, hw, [hw], NARROW, devices=1, device_memory=2**34)
        return plan.levels[-1]

    small = level((64, 80), RenderConfig(weights="random", widths=NARROW, tile=4096, size=80))
    assert small.tile == 80 and small.tiles == 1
    big = level((400, 300), RenderConfig(weights="random", widths=NARROW, tile=128, size=400))
    assert big.tile == 128 and big.tiles == 4 * 3
