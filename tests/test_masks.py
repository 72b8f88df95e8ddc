"""Spatial masks: the masked Gram against a naive reference, masked tiles equal the untiled
objective, an all-white mask is no mask, and a black area is free of the style."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NARROW
from PIL import Image

from hiresnst import losses
from hiresnst.config import parse_style_mask
from hiresnst.errors import UserError
from hiresnst.masks import (
    check_mask_aspect,
    load_mask,
    load_style_masks,
    mask_pyramid,
    masked_targets,
    resize_mask,
)
from hiresnst.model import random_params
from hiresnst.objective import (
    LossSpec,
    content_target,
    make_loss_fn,
    make_plan,
    style_target,
    untiled_loss,
)
from hiresnst.tiling import pooled_sizes

SPEC = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, masked=True)
#: Two shallow style layers: the receptive field of conv2_1 is 10 px, so black areas can be
#: wide enough to be out of reach of every white position.
SHALLOW = LossSpec(
    widths=NARROW,
    content_layers=(("conv2_1", 1.0),),
    style_layers=(("conv1_1", 0.5), ("conv2_1", 0.5)),
    style_weight=1e3,
    masked=True,
)


_untiled_vg = jax.jit(
    jax.value_and_grad(untiled_loss, argnums=1, has_aux=True), static_argnums=(3,)
)


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(b).max(), 1e-30))


def _close(a, b, tol=1e-4):
    return abs(float(a) - float(b)) <= tol * abs(float(b))


def _images(rng, hw, n_styles=2):
    x = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    content = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    styles = [jnp.asarray(rng.random((48, 64, 3)), jnp.float32) for _ in range(n_styles)]
    return x, content, styles


def test_masked_gram_and_content_sum_match_numpy(rng):
    f = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    m = rng.random((2, 2, 5, 7)).astype(np.float32)
    ref = np.zeros((2, 3, 3))
    for s in range(2):
        for b, y, x in np.ndindex(2, 5, 7):
            ref[s] += m[s, b, y, x] * np.outer(f[b, y, x], f[b, y, x])
    got = np.asarray(losses.masked_gram_sum(jnp.asarray(f), jnp.asarray(m)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

    t = rng.standard_normal(f.shape).astype(np.float32)
    ref_c = sum(m[0][i] * np.sum((f[i] - t[i]) ** 2) for i in np.ndindex(2, 5, 7))
    got_c = float(losses.masked_content_sum(jnp.asarray(f), jnp.asarray(t), jnp.asarray(m[0])))
    assert got_c == pytest.approx(ref_c, rel=1e-5)


def test_masked_style_loss_drops_a_style_with_an_empty_mask(rng):
    g = jnp.asarray(rng.random((2, 3, 3)), jnp.float32)
    a = jnp.asarray(rng.random((2, 3, 3)), jnp.float32)
    counts = {"l": jnp.asarray([4.0, 0.0])}
    blend = jnp.asarray([0.25, 0.75])
    loss = losses.masked_style_loss({"l": g}, {"l": a}, counts, blend, {"l": 2.0})
    ref = 2.0 * 0.25 * np.sum((np.asarray(g[0]) / 4 - np.asarray(a[0])) ** 2) / 9
    assert float(loss) == pytest.approx(ref, rel=1e-6)
    cot = losses.masked_style_gram_cotangents({"l": g}, {"l": a}, counts, blend, {"l": 2.0})
    assert np.all(np.asarray(cot["l"][1]) == 0)
    closed = 2 * 2.0 * 0.25 * (np.asarray(g[0]) / 4 - np.asarray(a[0])) / (4 * 9)
    np.testing.assert_allclose(np.asarray(cot["l"][0]), closed, rtol=1e-5, atol=1e-7)


def test_mask_pyramid_is_floor_average_pooling(rng):
    m = rng.random((2, 13, 11)).astype(np.float32)
    pyr = mask_pyramid(m, 3)
    assert [p.shape[1:] for p in pyr] == list(
        zip(pooled_sizes(13, 3), pooled_sizes(11, 3), strict=True)
    )
    ref = m
    for k in range(1, 4):
        h, w = ref.shape[1] // 2, ref.shape[2] // 2
        nxt = np.zeros((2, h, w), np.float32)
        for y, x in np.ndindex(h, w):
            nxt[:, y, x] = ref[:, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean(axis=(1, 2))
        np.testing.assert_allclose(np.asarray(pyr[k]), nxt, rtol=1e-6)
        ref = nxt


def test_masked_tiles_equal_untiled(rng):
    """Two styles split left/right by a soft edge, and a content mask, on an odd size."""
    hw = (97, 131)
    params = random_params(7, NARROW)
    x, content, styles = _images(rng, hw)
    # Masks at another resolution than the image: masked_targets resizes them.
    cols = np.linspace(0.0, 1.0, 90, dtype=np.float32)
    left = np.broadcast_to(np.clip((0.6 - cols) * 5, 0, 1), (70, 90)).copy()
    right = np.zeros((70, 90), np.float32)
    right[:, 50:] = 1.0
    content_mask = rng.random((70, 90)).astype(np.float32)
    args = (styles, [left, right], content_mask, hw)
    ref_t = masked_targets(params, SPEC, *args, None, (1.0, 3.0), content=content)
    assert ref_t["style_masks"][4].shape == (2, 6, 8)
    (loss, terms), grad = _untiled_vg(params, x, ref_t, SPEC)

    plan = make_plan(*hw, SPEC, 48, None, 3)
    assert plan.grid.count > 4
    targets = masked_targets(params, SPEC, *args, plan, (1.0, 3.0), content=content)
    fn = make_loss_fn(SPEC, plan)
    (t_loss, t_terms), t_grad = jax.jit(
        jax.value_and_grad(lambda y: fn(params, y, targets), has_aux=True)
    )(x)
    v_loss, _ = jax.jit(lambda y: fn(params, y, targets))(x)  # the value-only pass
    assert _close(t_loss, loss) and _close(v_loss, loss)
    for name in ("content", "style", "tv"):
        assert float(terms[name]) > 0
        assert _close(t_terms[name], terms[name]), name
    assert _rel(t_grad, grad) <= 1e-4


def test_all_white_masks_equal_no_mask(rng):
    hw = (45, 61)
    params = random_params(3, NARROW)
    x, content, styles = _images(rng, hw, 1)
    plain = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0)
    ref_t = {
        "style": style_target(params, plain, styles[0], None),
        "content": content_target(params, plain, content, None),
    }
    (loss, terms), grad = _untiled_vg(params, x, ref_t, plain)
    white = np.ones((20, 30), np.float32)
    targets = masked_targets(
        params, SPEC, styles, [white], white, hw, None, (2.0,), content=content
    )
    (m_loss, m_terms), m_grad = _untiled_vg(params, x, targets, SPEC)
    assert _close(m_loss, loss, 1e-5)
    for name in ("content", "style"):
        assert _close(m_terms[name], terms[name], 1e-5), name
    assert _rel(m_grad, grad) <= 1e-5


def test_black_half_is_free_of_the_style(rng):
    """The style term's gradient is exactly 0 where no white position's receptive field
    reaches, and a second style whose mask is all black only halves the first's term."""
    hw = (33, 96)
    params = random_params(5, NARROW)
    x, content, styles = _images(rng, hw)
    spec = dataclasses.replace(SHALLOW, content_weight=0.0)
    half = np.zeros(hw, np.float32)
    half[:, :48] = 1.0
    t1 = masked_targets(params, spec, styles[:1], [half], None, hw, None, (1.0,), content=content)
    (loss1, _), grad = _untiled_vg(params, x, t1, spec)
    # conv2_1 at level-1 column j < 24 (white) reads input columns up to 2j + 5 = 51;
    # conv1_1 at a white column (< 48) reads up to 48.
    assert float(jnp.abs(grad[:, :44]).max()) > 0
    assert float(jnp.abs(grad[:, 52:]).max()) == 0.0
    assert float(jnp.abs(grad[:, 51]).max()) > 0

    black = np.zeros(hw, np.float32)
    t2 = masked_targets(
        params, spec, styles, [half, black], None, hw, None, (1.0, 1.0), content=content
    )
    (loss2, _), grad2 = _untiled_vg(params, x, t2, spec)
    assert _close(loss2, 0.5 * loss1, 1e-5)
    assert _rel(grad2, 0.5 * grad) <= 1e-5


def test_content_mask_weights_positions(rng):
    """Black content = no content loss there; the content term scales with a uniform grey."""
    hw = (33, 40)
    params = random_params(5, NARROW)
    x, content, styles = _images(rng, hw, 1)
    spec = dataclasses.replace(SHALLOW, style_weight=0.0)

    def content_term(mask):
        t = masked_targets(params, spec, styles, [None], mask, hw, None, (1.0,), content=content)
        return float(untiled_loss(params, x, t, spec)[1]["content"])

    full = content_term(None)
    assert full > 0
    assert content_term(np.full(hw, 0.25, np.float32)) == pytest.approx(0.25 * full, rel=1e-5)
    assert content_term(np.zeros(hw, np.float32)) == 0.0


def test_unmasked_spec_refuses_masked_targets(rng):
    hw = (33, 40)
    params = random_params(5, NARROW)
    x, content, styles = _images(rng, hw, 1)
    t = masked_targets(params, SPEC, styles, [None], None, hw, None, (1.0,), content=content)
    with pytest.raises(ValueError, match="masked"):
        untiled_loss(params, x, {**t, "style": t["style_stack"]}, LossSpec(widths=NARROW))
    bad = {**t, "style_masks": tuple(m[:, :-1] for m in t["style_masks"])}
    with pytest.raises(ValueError, match="style_masks"):
        untiled_loss(params, x, bad, SPEC)


def test_load_mask_any_mode(tmp_path):
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    m = load_mask(tmp_path / "grey.png")
    assert m.shape == grey.shape and m.dtype == np.float32
    np.testing.assert_allclose(m, grey / 255.0, atol=1e-6)

    rgb = np.zeros((20, 32, 3), np.uint8)
    rgb[:, 16:] = (255, 0, 255)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    m = load_mask(tmp_path / "rgb.png")
    assert float(m[0, 0]) == 0.0 and float(m[0, 20]) == pytest.approx(2 / 3)

    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError):
        load_mask(tmp_path / "bad.png")
    with pytest.raises(UserError):
        load_mask(tmp_path / "missing.png")


def test_style_mask_arguments(tmp_path):
    assert parse_style_mask("1:C:/masks/sky.png") == (1, "C:/masks/sky.png")
    for bad in ("sky.png", "x:sky.png", "-1:sky.png", "0:"):
        with pytest.raises(UserError):
            parse_style_mask(bad)
    Image.fromarray(np.full((16, 16), 255, np.uint8), "L").save(tmp_path / "m.png")
    path = str(tmp_path / "m.png")
    masks = load_style_masks(((1, path),), 2)
    assert masks[0] is None and masks[1].shape == (16, 16)
    with pytest.raises(UserError, match="2 styles"):
        load_style_masks(((2, path),), 2)
    with pytest.raises(UserError, match="more than one"):
        load_style_masks(((0, path), (0, path)), 2)
    check_mask_aspect(np.zeros((100, 150)), (201, 300), "the mask")
    with pytest.raises(UserError, match="aspect"):
        check_mask_aspect(np.zeros((100, 150)), (300, 300), "the mask")


def test_resize_mask_stays_in_range_and_black_stays_black():
    m = np.zeros((40, 60), np.float32)
    m[:, :30] = 1.0
    r = np.asarray(resize_mask(m, (17, 23)))
    assert r.shape == (17, 23) and r.min() >= 0.0 and r.max() <= 1.0
    assert np.all(r[:, 14:] == 0.0) and np.all(r[:, :9] >= 1.0 - 1e-6)
