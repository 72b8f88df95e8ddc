"""The tiled objective and gradient equal the untiled ones (the reference), on odd sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NARROW

from hiresnst.model import random_params
from hiresnst.objective import (
    LossSpec,
    content_target,
    make_loss_fn,
    make_plan,
    style_target,
    tiled_value_and_grad,
    untiled_loss,
)
from hiresnst.tiling import make_grid, pooled_sizes

SPEC = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, content_weight=1.0)


def test_cores_partition_every_level():
    """Each position of each level belongs to exactly one tile core."""
    for h, w, tile in ((97, 131, 32), (131, 97, 48), (33, 200, 64)):
        grid = make_grid(h, w, tile, 80, 4)
        hs, ws = pooled_sizes(h, 4), pooled_sizes(w, 4)
        for k in range(5):
            cover = np.zeros((hs[k], ws[k]), int)
            s = grid.core_slice(k)
            n = s.stop - s.start
            for oy, ox in grid.origins():
                y0, x0 = (oy - grid.halo) // 2**k + s.start, (ox - grid.halo) // 2**k + s.start
                ys = slice(max(y0, 0), max(min(y0 + n, hs[k]), 0))
                xs = slice(max(x0, 0), max(min(x0 + n, ws[k]), 0))
                cover[ys, xs] += 1
            assert (cover == 1).all(), (h, w, tile, k)


def _setup(h, w, rng, spec=SPEC):
    params = random_params(7, NARROW)
    x = jnp.asarray(rng.random((h, w, 3)), jnp.float32)
    content = jnp.asarray(rng.random((h, w, 3)), jnp.float32)
    style = jnp.asarray(rng.random((48, 64, 3)), jnp.float32)
    style_t = style_target(params, spec, style, None)
    return params, x, content, style_t


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(b).max(), 1e-30))


@pytest.mark.parametrize("hw,tile,batch", [((97, 131), 32, 1), ((131, 97), 48, 3)])
def test_tiled_loss_and_gradient_equal_untiled(rng, hw, tile, batch):
    params, x, content, style_t = _setup(*hw, rng)
    ref_targets = {"style": style_t, "content": content_target(params, SPEC, content, None)}
    (loss, terms), grad = jax.value_and_grad(untiled_loss, argnums=1, has_aux=True)(
        params, x, ref_targets, SPEC
    )
    plan = make_plan(*hw, SPEC, tile, None, batch)
    assert plan.grid.count > 4  # the tiles do not divide the image
    targets = {"style": style_t, "content": content_target(params, SPEC, content, plan)}
    (t_loss, t_terms), t_grad = jax.jit(
        lambda y: tiled_value_and_grad(params, y, targets, SPEC, plan)
    )(x)
    assert abs(float(t_loss) - float(loss)) <= 1e-4 * abs(float(loss))
    for name in ("content", "style", "tv"):
        assert float(terms[name]) > 0
        assert abs(float(t_terms[name]) - float(terms[name])) <= 1e-4 * float(terms[name]), name
    assert _rel(t_grad, grad) <= 1e-4


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (0.0, 1e3, 0.0), (0.0, 0.0, 1.0)])
def test_each_term_gradient_is_exact_alone(rng, weights):
    """Content, style and TV separately: a compensating error between terms cannot hide."""
    hw = (97, 131)
    cw, sw, tw = weights
    spec = LossSpec(widths=NARROW, content_weight=cw, style_weight=sw, tv_weight=tw)
    params, x, content, style_t = _setup(*hw, rng, spec)
    ref_t = {"style": style_t, "content": content_target(params, spec, content, None)}
    grad = jax.grad(lambda y: untiled_loss(params, y, ref_t, spec)[0])(x)
    plan = make_plan(*hw, spec, 32, None, 2)
    targets = {"style": style_t, "content": content_target(params, spec, content, plan)}
    loss_fn = make_loss_fn(spec, plan)
    t_grad = jax.jit(jax.grad(lambda y: loss_fn(params, y, targets)[0]))(x)
    assert float(jnp.abs(grad).max()) > 0
    assert _rel(t_grad, grad) <= 1e-4


def test_max_pooling_tiles_exactly(rng):
    spec = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, pooling="max")
    params, x, content, style_t = _setup(70, 90, rng, spec)
    ref_t = {"style": style_t, "content": content_target(params, spec, content, None)}
    loss, grad = jax.value_and_grad(lambda y: untiled_loss(params, y, ref_t, spec)[0])(x)
    plan = make_plan(70, 90, spec, 32, None, 1)
    targets = {"style": style_t, "content": content_target(params, spec, content, plan)}
    fn = make_loss_fn(spec, plan)
    t_loss, t_grad = jax.value_and_grad(lambda y: fn(params, y, targets)[0])(x)
    assert abs(float(t_loss) - float(loss)) <= 1e-4 * float(loss)
    assert _rel(t_grad, grad) <= 1e-4


def test_a_halo_below_the_receptive_field_is_not_exact(rng):
    """The check can fail: with a 16 px halo, conv5_1's Grams are wrong near tile borders."""
    params, x, content, style_t = _setup(97, 131, rng)
    ref_t = {"style": style_t, "content": content_target(params, SPEC, content, None)}
    grad = jax.grad(lambda y: untiled_loss(params, y, ref_t, SPEC)[0])(x)
    plan = make_plan(97, 131, SPEC, 32, 16, 1)
    targets = {"style": style_t, "content": content_target(params, SPEC, content, plan)}
    fn = make_loss_fn(SPEC, plan)
    t_grad = jax.grad(lambda y: fn(params, y, targets)[0])(x)
    assert _rel(t_grad, grad) > 1e-3


def test_tiled_style_target_equals_untiled(rng):
    params = random_params(1, NARROW)
    style = jnp.asarray(rng.random((75, 101, 3)), jnp.float32)
    ref = style_target(params, SPEC, style, None)
    tiled = style_target(params, SPEC, style, make_plan(75, 101, SPEC, 32, None, 2))
    for name in ref:
        assert _rel(tiled[name], ref[name]) <= 1e-5
