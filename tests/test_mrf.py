"""Neural-patch (MRF) loss: against a brute-force NumPy reference, tiled equals untiled, the
patch bank is the same tiled and untiled, and the halo leaves room for a patch's reach."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import NARROW

from hiresnst import losses
from hiresnst.model import exact_halo, random_params
from hiresnst.objective import (
    LossSpec,
    content_target,
    make_loss_fn,
    make_plan,
    mrf_target,
    style_target,
    untiled_loss,
)

MRF = (("conv3_1", 0.5), ("conv4_1", 0.5))
SPEC = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, mrf_layers=MRF, mrf_weight=10.0)
MRF_ONLY = dataclasses.replace(SPEC, style_layers=())


def _rel(a, b):
    return float(jnp.abs(a - b).max() / jnp.maximum(jnp.abs(b).max(), 1e-30))


def test_mrf_sum_matches_brute_force(rng):
    f = rng.standard_normal((6, 7, 3)).astype(np.float32)
    bank = rng.standard_normal((5, 27)).astype(np.float32)
    inside = rng.random((6, 7)).astype(np.float32)
    padded = np.pad(f, ((1, 1), (1, 1), (0, 0)))
    ref = 0.0
    for y, x in np.ndindex(6, 7):
        q = np.concatenate([padded[y + dy, x + dx] for dy in range(3) for dx in range(3)])
        ncc = [q @ b / np.linalg.norm(b) for b in bank]
        ref += inside[y, x] * np.sum((q - bank[int(np.argmax(ncc))]) ** 2)
    # the bank in two chunks of 3, the last row padding that must never win
    chunked = np.concatenate([bank, 100 * np.ones((1, 27), np.float32)]).reshape(2, 3, 27)
    ok = np.array([[True] * 3, [True, True, False]])
    q = losses.patches3x3(jnp.asarray(f))
    got = losses.mrf_sum(q, jnp.asarray(inside), jnp.asarray(chunked), jnp.asarray(ok))
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_interior_keeps_positions_whose_patch_is_inside():
    valid = np.zeros((7, 9, 1), np.float32)
    valid[:5, :6] = 1.0
    got = np.asarray(losses.interior(jnp.asarray(valid)))[..., 0]
    want = np.zeros((7, 9), np.float32)
    want[1:4, 1:5] = 1.0
    np.testing.assert_array_equal(got, want)


def test_halo_leaves_room_for_the_patch():
    spec = LossSpec(
        widths=NARROW, content_layers=(("conv3_1", 1.0),), style_layers=(), mrf_layers=MRF
    )
    assert spec.halo >= exact_halo("conv4_1") + 8
    assert spec.halo % 2**spec.levels == 0


def _problem(spec, rng, hw, tile):
    params = random_params(0, NARROW)
    x = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    content = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    style = rng.random((56, 72, 3)).astype(np.float32)
    plan = None if tile is None else make_plan(*hw, spec, tile, None, 2)
    targets = {
        "style": style_target(params, spec, jnp.asarray(style), None),
        "content": content_target(params, spec, content, None),
        "mrf": mrf_target(params, spec, [style], [1.0], 64),
        "image": content,
    }
    return params, x, targets, plan


@pytest.mark.parametrize("spec", [SPEC, MRF_ONLY], ids=["gram+mrf", "mrf"])
def test_tiled_mrf_equals_untiled(spec, rng):
    hw = (97, 75)
    params, x, targets, plan = _problem(spec, rng, hw, 32)
    untiled = {**targets, "content": content_target(params, spec, targets["image"], None)}
    tiled = {**targets, "content": content_target(params, spec, targets["image"], plan)}

    def vg(fn, t):
        return jax.jit(jax.value_and_grad(lambda x: fn(params, x, t), has_aux=True))(x)

    (loss_u, terms_u), grad_u = vg(make_loss_fn(spec, None), untiled)
    (loss_t, terms_t), grad_t = vg(make_loss_fn(spec, plan), tiled)
    assert float(terms_u["mrf"]) > 0
    for k in terms_u:
        assert abs(float(terms_t[k]) - float(terms_u[k])) <= 1e-4 * abs(float(terms_u[k])) + 1e-9
    assert abs(float(loss_t) - float(loss_u)) <= 1e-4 * float(loss_u)
    assert _rel(grad_t, grad_u) <= 1e-4


def test_tiled_bank_equals_untiled_bank(rng):
    params = random_params(0, NARROW)
    style = rng.random((83, 70, 3)).astype(np.float32)
    whole = mrf_target(params, SPEC, [style], [1.0], 10_000)
    tiled = mrf_target(params, SPEC, [style], [1.0], 10_000, tile=32)
    for n, _ in MRF:
        np.testing.assert_array_equal(whole[n][1], tiled[n][1])
        np.testing.assert_allclose(whole[n][0], tiled[n][0], rtol=1e-5, atol=1e-6)


def test_bank_lattice_and_blend(rng):
    params = random_params(0, NARROW)
    a = rng.random((64, 64, 3)).astype(np.float32)
    b = rng.random((64, 64, 3)).astype(np.float32)
    full = mrf_target(params, SPEC, [a], [1.0], 10_000)
    bank, ok = full["conv3_1"]
    assert ok.sum() == 14 * 14  # conv3_1 of 64 px is 16×16; its interior 14×14
    capped = mrf_target(params, SPEC, [a], [1.0], 50)["conv3_1"]
    assert capped[1].sum() == 7 * 7  # stride 2 over 14 positions: 7 per axis
    only_a = mrf_target(params, SPEC, [a, b], [1.0, 0.0], 10_000)["conv3_1"]
    np.testing.assert_array_equal(only_a[0], bank)


def test_mrf_gradient_pulls_towards_the_style(rng):
    """Adam steps on the MRF term alone halve it (the matches move, the gradient follows)."""
    spec = dataclasses.replace(MRF_ONLY, content_weight=0.0, tv_weight=0.0)
    params, x, targets, _ = _problem(spec, rng, (48, 48), None)
    vg = jax.jit(jax.value_and_grad(lambda x: untiled_loss(params, x, targets, spec)[0]))
    opt = optax.adam(0.02)
    state = opt.init(x)
    first, _ = vg(x)
    for _ in range(15):
        _, g = vg(x)
        update, state = opt.update(g, state)
        x = jnp.clip(x + update, 0.0, 1.0)
    assert float(vg(x)[0]) < 0.6 * float(first)


def test_tiles_need_the_patch_reach_in_the_halo(rng):
    """conv3_1 alone needs a 12 px halo; its 3×3 patches need 16. With 12 the tiled MRF term
    is wrong, with the spec's halo it is exact: the extra reach is what makes it so."""
    spec = LossSpec(
        widths=NARROW,
        content_layers=(("conv3_1", 1.0),),
        style_layers=(),
        mrf_layers=(("conv3_1", 1.0),),
        content_weight=0.0,
    )
    assert (spec.halo, exact_halo("conv3_1")) == (16, 12)
    params, x, targets, _ = _problem(spec, rng, (61, 50), None)
    want = float(untiled_loss(params, x, targets, spec)[1]["mrf"])
    for overlap, exact in ((None, True), (12, False)):
        plan = make_plan(61, 50, spec, 16, overlap, 2)
        t = {**targets, "content": content_target(params, spec, targets["image"], plan)}
        got = float(make_loss_fn(spec, plan)(params, x, t)[1]["mrf"])
        assert (abs(got - want) <= 1e-4 * want) == exact, (overlap, got, want)
