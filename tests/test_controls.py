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
