"""A device-resident level's memory: ≤ 40 B/px of state, a step that donates it, and 8-bit
content whose per-tile features give the untiled objective exactly."""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
from conftest import NARROW

from hiresnst import RenderConfig
from hiresnst.model import random_params
from hiresnst.objective import (
    LossSpec,
    content_image,
    content_target,
    content_values,
    make_plan,
    style_target,
    tiled_value_and_grad,
    untiled_loss,
)
from hiresnst.plan import DEVICE_STATE_BYTES
from hiresnst.render import prepare_level

SPEC = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, content_weight=1.0)


def _bytes(tree) -> int:
    return sum(int(a.nbytes) for a in jax.tree_util.tree_leaves(tree) if hasattr(a, "nbytes"))


def _started(rng, size: int, tile: int):
    content = rng.random((size, size, 3)).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size, weights="random", widths=NARROW, tile=tile, state="device", scales=1
    )
    gc.collect()
    before = sum(int(a.nbytes) for a in jax.live_arrays())
    runner = prepare_level(content, [style], cfg)
    state = runner.start(content, jax.random.key(0), None)
    after = sum(int(a.nbytes) for a in jax.live_arrays())
    fixed = _bytes(runner.level.params) + _bytes(
        {k: v for k, v in runner.targets.items() if k != "content"}
    )
    return runner, state, after - before - fixed


def test_device_state_is_at_most_40_bytes_per_pixel(rng):
    """What a started tiled level holds on the device besides the weights and the style
    targets: image 12 + Adam 18 (bf16 first moment) + 8-bit content 3. A float32 content
    copy (12 B/px) or stored content features would break the bound."""
    size = 64
    runner, state, held = _started(rng, size, 32)
    assert runner.tplan is not None and runner.tplan.grid.count == 4
    assert runner.targets["content"].dtype == jnp.uint8
    per_px = held / size**2
    assert per_px <= 40, per_px
    assert per_px <= DEVICE_STATE_BYTES + 0.5  # the plan's figure, with the scalars


def test_the_step_donates_the_image_and_the_optimizer_state(rng):
    """XLA's buffer assignment of the compiled step: the new image and Adam state reuse the
    donated buffers (no second copy), and its temporaries grow by the gradient accumulator
    (12 B/px) and at most a copy of Adam's first moment (6): no padded image, no float copy
    of the content (each would add 12). The sizes are large enough for the image-sized
    buffers to outweigh the tile batch's, whose packing varies with the size."""
    temps = {}
    for size in (512, 1024):
        runner, state, _ = _started(rng, size, 128)
        args = (runner.level.params, runner.targets, state.image, state.opt)
        ma = runner.step.lower(*args).compile().memory_analysis()
        state_bytes = _bytes((state.image, state.opt))
        assert ma.alias_size_in_bytes >= state_bytes
        assert ma.output_size_in_bytes - ma.alias_size_in_bytes < 1024  # loss and terms
        temps[size] = ma.temp_size_in_bytes
    per_px = (temps[1024] - temps[512]) / (1024**2 - 512**2)
    assert per_px <= 20, per_px


def test_tiled_8bit_content_equals_untiled(rng):
    """Content given as 8 bits: the tiled step makes each tile's content features from its
    8-bit window and matches the untiled objective of the same (quantised) content."""
    hw = (97, 131)
    params = random_params(7, NARROW)
    x = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    content = jnp.asarray(content_image(rng.random((*hw, 3))))
    style_t = style_target(params, SPEC, jnp.asarray(rng.random((48, 64, 3)), jnp.float32), None)
    ref_t = {
        "style": style_t,
        "content": content_target(params, SPEC, content_values(content), None),
    }
    (loss, terms), grad = jax.value_and_grad(untiled_loss, argnums=1, has_aux=True)(
        params, x, ref_t, SPEC
    )
    plan = make_plan(*hw, SPEC, 32, None, 2)
    targets = {"style": style_t, "content": content}
    (t_loss, t_terms), t_grad = jax.jit(
        lambda y: tiled_value_and_grad(params, y, targets, SPEC, plan)
    )(x)
    assert float(terms["content"]) > 0
    assert abs(float(t_terms["content"]) - float(terms["content"])) <= 1e-4 * float(
        terms["content"]
    )
    assert abs(float(t_loss) - float(loss)) <= 1e-4 * abs(float(loss))
    assert float(jnp.abs(t_grad - grad).max()) <= 1e-4 * float(jnp.abs(grad).max())
    stored = {
        "style": style_t,
        "content": content_target(params, SPEC, content_values(content), plan),
    }
    (s_loss, _), s_grad = jax.jit(lambda y: tiled_value_and_grad(params, y, stored, SPEC, plan))(x)
    assert float(s_loss) == float(t_loss)  # the same features, made in the step
    np.testing.assert_allclose(s_grad, t_grad, rtol=0, atol=1e-6 * float(jnp.abs(grad).max()))
