"""Adam's per-level warm-up: the step size ramps from lr/W to lr over W steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NARROW

from hiresnst.config import RenderConfig
from hiresnst.optimize import make_optimizer
from hiresnst.render import render


def test_warmup_scales_adams_updates_by_the_ramp(rng):
    """Same gradients, same Adam direction: only the step size differs, by min(1, (t+1)/W)."""
    x = jnp.asarray(rng.random((5, 6, 3)), jnp.float32)
    plain, ramped = make_optimizer("adam", 0.05), make_optimizer("adam", 0.05, warmup=4)
    s_plain, s_ramped = plain.init(x), ramped.init(x)
    for t in range(7):
        g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
        u_plain, s_plain = jax.jit(plain.update)(g, s_plain, x)
        u_ramped, s_ramped = jax.jit(ramped.update)(g, s_ramped, x)
        factor = min(1.0, (t + 1) / 4)
        np.testing.assert_allclose(u_ramped, factor * u_plain, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("warmup", [0, 5])
def test_a_finer_level_starts_with_the_warmed_up_step(rng, warmup):
    """One step at the second level moves a pixel by at most lr/W (Adam's first update is
    ±step size); without warm-up, by the full lr. The first level is not warmed up."""
    content = rng.random((48, 64, 3)).astype(np.float32)
    style = rng.random((40, 40, 3)).astype(np.float32)
    base = dict(
        size=64, scales=2, min_size=32, weights="random", widths=NARROW, seed=1, warmup=warmup
    )
    start = render(content, [style], RenderConfig(steps=(3, 0), **base))
    stepped = render(content, [style], RenderConfig(steps=(3, 1), **base))
    moved = np.abs(stepped - start).max()
    step = 0.05 / max(warmup, 1)
    assert 0.9 * step <= moved <= step + 1e-6


def test_restored_warmed_up_adam_state_can_be_donated(rng):
    """A checkpoint's Adam state with a warm-up ramp restores into leaves that a donating step
    takes (the ramp's count and Adam's were once one buffer: 'donate the same buffer twice')."""
    from hiresnst.optimize import make_step, opt_arrays, restore_opt

    x = jnp.asarray(rng.random((5, 6, 3)), jnp.float32)
    opt = make_optimizer("adam", 0.05, warmup=4)
    step = make_step(lambda p, y, t: (jnp.sum((y - t) ** 2), {}), "adam", opt)
    saved = {k: np.asarray(v) for k, v in opt_arrays(opt.init(x)).items()}
    state = restore_opt(opt.init(x), saved)
    x, state, loss, _ = step({}, jnp.zeros_like(x), x, state)
    assert np.isfinite(float(loss))
