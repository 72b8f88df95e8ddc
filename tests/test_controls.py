"""Creative controls through the render API: layers, init image, colour preservation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NARROW
from PIL import Image

from hiresnst import color, pyramid
from hiresnst.config import RenderConfig, parse_layers
from hiresnst.errors import UserError
from hiresnst.model import random_params
from hiresnst.objective import LossSpec, content_target, style_target
from hiresnst.render import render_with_info

BASE = RenderConfig(size=64, steps=3, weights="random", widths=NARROW, seed=2, tile=0)


def _with(**kw) -> RenderConfig:
    return RenderConfig(**{**BASE.__dict__, **kw})


def _images(rng):
    content = rng.random((48, 64, 3)).astype(np.float32)
    return content, rng.random((40, 40, 3)).astype(np.float32)


def test_parse_layers():
    assert parse_layers("conv4_2", "--x") == (("conv4_2", 1.0),)
    assert parse_layers("conv1_1:0.2, conv2_1:0.5", "--x") == (("conv1_1", 0.2), ("conv2_1", 0.5))
    with pytest.raises(UserError, match="bad weight"):
        parse_layers("conv1_1:abc", "--x")


def test_layer_selection_changes_which_layers_are_computed(rng):
    shallow = LossSpec(
        content_layers=(("conv2_2", 1.0),),
        style_layers=(("conv1_1", 0.5), ("conv2_1", 0.5)),
        widths=NARROW,
    )
    assert shallow.outputs == ("conv1_1", "conv2_1", "conv2_2")
    assert shallow.levels == 1 and shallow.halo < LossSpec(widths=NARROW).halo
    # Only the first two blocks' parameters exist: computing any deeper layer would fail.
    params = {k: v for k, v in random_params(0, NARROW).items() if k[4] in "12"}
    image = rng.random((20, 24, 3)).astype(np.float32)
    assert set(style_target(params, shallow, image, None)) == {"conv1_1", "conv2_1"}
    assert set(content_target(params, shallow, image, None)) == {"conv2_2"}
    with pytest.raises(Exception, match="conv3_1"):
        style_target(params, LossSpec(widths=NARROW), image, None)


def test_init_from_an_image_file(rng, tmp_path):
    from hiresnst.render import render

    content, style = _images(rng)
    start = rng.random((30, 40, 3))
    Image.fromarray((start * 255).astype(np.uint8)).save(tmp_path / "start.png")
    out = render(content, [style], _with(steps=0, init=str(tmp_path / "start.png")))
    loaded = np.asarray(Image.open(tmp_path / "start.png"), np.float32) / 255
    np.testing.assert_allclose(out, np.asarray(pyramid.resize(loaded, (48, 64))), atol=1e-6)


def test_luminance_mode_keeps_the_content_chroma(rng):
    from hiresnst.render import render

    content, style = _images(rng)
    content = 0.25 + 0.5 * content  # away from the clip limits
    out = render(content, [style], _with(preserve_colors="luminance", steps=5))
    yiq_out, yiq_content = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
    inside = ((out > 1e-6) & (out < 1 - 1e-6)).all(axis=2)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(yiq_out[inside][:, 1:], yiq_content[inside][:, 1:], atol=1e-5)
    assert np.abs(yiq_out[..., 0] - yiq_content[..., 0]).mean() > 1e-3  # the style did act


def test_all_white_style_mask_renders_like_no_mask(rng, tmp_path):
    from hiresnst.render import render

    content, style = _images(rng)
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(tmp_path / "white.png")
    plain = render(content, [style], _with(steps=4))
    masked = render(
        content, [style], _with(steps=4, style_masks=((0, str(tmp_path / "white.png")),))
    )
    assert np.abs(plain - content).mean() > 1e-3  # the style acted
    np.testing.assert_allclose(masked, plain, atol=1e-4)


def test_two_masked_styles_each_where_its_mask_is(rng, tmp_path):
    """Style 0 (red) left, style 1 (blue) right: each half takes its own style's colour."""
    from hiresnst.render import render

    content = np.full((48, 64, 3), 0.5, np.float32)
    red = np.zeros((40, 40, 3), np.float32)
    red[..., 0] = 0.9
    blue = np.zeros((40, 40, 3), np.float32)
    blue[..., 2] = 0.9
    left = np.zeros((48, 64), np.uint8)
    left[:, :32] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    cfg = _with(
        steps=40,
        content_weight=0.0,
        learning_rate=0.05,
        style_masks=((0, str(tmp_path / "left.png")), (1, str(tmp_path / "right.png"))),
    )
    out = render(content, [red, blue], cfg)
    lft, rgt = out[:, :20].mean(axis=(0, 1)), out[:, 44:].mean(axis=(0, 1))
    assert lft[0] - lft[2] > 0.1 and rgt[2] - rgt[0] > 0.1, (lft, rgt)


def test_fit_crops_masks_like_the_content():
    from hiresnst.masks import fit_mask
    from hiresnst.printsize import fit_to_print

    mask = np.zeros((40, 80), np.float32)
    mask[:, 40:] = 1.0  # right half white
    fit = fit_to_print((40, 80), (40, 40), "crop")  # the central 40×40
    got = fit_mask(mask, fit)
    assert got.shape == (40, 40)
    assert got[:, :18].max() < 0.05 and got[:, 22:].min() > 0.95
    padded = fit_mask(mask, fit_to_print((40, 80), (80, 80), "pad"))
    assert padded.shape == (80, 80) and padded[:15].min() > 0.95  # white margins


def test_mrf_render_records_its_term(rng):

    content, style = _images(rng)
    # A small step: Gram statistics of a noise style under random weights oscillate at 0.05.
    config = _with(steps=6, style_loss="gram+mrf", tile=32, learning_rate=0.01)
    result = render_with_info(content, [style], config)
    level = result.info["levels"][-1]
    assert level["loss_last"] < level["loss_first"]
    assert result.info["settings"]["style_loss"] == "gram+mrf"
    assert result.image.shape == (48, 64, 3)
