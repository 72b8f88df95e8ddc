"""Host-resident state (image and Adam moments in RAM or memory-mapped files, tiles streamed to
the device) gives the on-device result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import NARROW
from PIL import Image

from hiresnst import pyramid, streaming
from hiresnst.checkpoint import CheckpointOptions
from hiresnst.config import RenderConfig
from hiresnst.optimize import make_optimizer
from hiresnst.progress import RenderProgress
from hiresnst.render import make_objective, prepare_level, render_with_info
from hiresnst.streaming import HostState, host_window


def _images(rng):
    yy, xx = np.mgrid[0:70, 0:90] / 90.0
    content = np.stack([yy, xx, 0.5 + 0.3 * np.sin(9 * xx * yy)], -1).astype(np.float32)
    return np.clip(content, 0, 1), rng.random((48, 48, 3)).astype(np.float32)


BASE = RenderConfig(
    size=90,
    steps=10,
    weights="random",
    widths=NARROW,
    seed=3,
    tile=32,
    scales=2,
    min_size=48,
    tile_batch=2,
)


def _with(**kw) -> RenderConfig:
    return RenderConfig(**{**BASE.__dict__, **kw})


def test_host_window_zero_fills_outside():
    a = np.arange(5 * 6 * 1, dtype=np.float32).reshape(5, 6, 1)
    w = host_window(a, -2, 4, 4)
    assert w.shape == (4, 4, 1)
    assert (w[:2] == 0).all() and (w[:, 2:] == 0).all()
    np.testing.assert_array_equal(w[2:, :2, 0], a[:2, 4:6, 0])


def test_host_state_equals_device_state(rng, tmp_path):
    """The same objective and Adam. Pixels agree loosely, by design: the host path resizes block
    by block (1e-6 from the device's resize) and targets an 8-bit content, and Adam's first
    step moves every pixel by ±lr whatever its gradient's size, so pixels whose gradient is
    near zero take either sign (a 1e-5 change of the learning rate moves pixels by 0.2 after
    20 steps here). Losses agree tightly; a lost or misplaced gradient band would not."""
    content, style = _images(rng)
    device = render_with_info(content, [style], _with(state="device", steps=5))
    host = render_with_info(content, [style], _with(state="host", steps=5))
    files: set[str] = set()  # the state's files seen during the render

    def look(_):
        files.update(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*.npy"))

    mapped = render_with_info(
        content,
        [style],
        _with(state="host", steps=5, state_dir=str(tmp_path / "s")),
        progress=look,
    )
    assert {"s/level-0/adam_v.npy", "s/level-1/adam_m.npy", "s/level-1/image.npy"} <= files
    assert list((tmp_path / "s").iterdir()) == []  # each level's files go when it is done
    assert host.info["levels"][0]["loss_last"] < 0.5 * host.info["levels"][0]["loss_first"]
    for lv_d, lv_h in zip(device.info["levels"], host.info["levels"], strict=True):
        assert abs(lv_h["loss_first"] - lv_d["loss_first"]) <= 1e-4 * lv_d["loss_first"]
        assert abs(lv_h["loss_last"] - lv_d["loss_last"]) <= 1e-3 * lv_d["loss_last"]
    assert np.abs(host.image - device.image).mean() <= 2e-3
    np.testing.assert_array_equal(mapped.image, host.image)


@pytest.mark.parametrize("extra", ["mask", "gram+mrf"])
def test_host_state_equals_device_state_with_masks_and_mrf(rng, tmp_path, extra):
    """Host-resident levels share the device path's tile functions, so style masks and the MRF
    term give the same render there (within the host path's 8-bit content and block resizes,
    as in the plain test above)."""
    content, style = _images(rng)
    if extra == "mask":
        mask = np.zeros((70, 90, 3), np.uint8)
        mask[:, :45] = 255
        Image.fromarray(mask).save(tmp_path / "left.png")
        Image.fromarray(255 - mask).save(tmp_path / "right.png")
        kw = {"style_masks": ((0, str(tmp_path / "left.png")), (1, str(tmp_path / "right.png")))}
        styles = [style, style[::-1]]
    else:
        kw, styles = {"style_loss": "gram+mrf", "mrf_patches": 256}, [style]
    device = render_with_info(content, styles, _with(state="device", steps=4, **kw))
    host = render_with_info(content, styles, _with(state="host", steps=4, **kw))
    for lv_d, lv_h in zip(device.info["levels"], host.info["levels"], strict=True):
        assert lv_h["residency"] == "host" and lv_d["residency"] == "device"
        assert abs(lv_h["loss_first"] - lv_d["loss_first"]) <= 1e-4 * lv_d["loss_first"]
    assert np.abs(host.image - device.image).mean() <= 1e-3


def test_host_state_resumes_from_a_checkpoint(rng, tmp_path):
    content, style = _images(rng)
    cfg = _with(state="host", scales=1, steps=6)
    full = render_with_info(content, [style], cfg).image
    ck = CheckpointOptions(tmp_path / "ck", every=0)
    render_with_info(content, [style], _with(state="host", scales=1, steps=3), checkpoint=None)
    # A checkpointed run, then a second identical call resumes from its final checkpoint.
    first = render_with_info(content, [style], cfg, checkpoint=ck)
    again = render_with_info(content, [style], cfg, checkpoint=ck)
    assert "resumed_from" in again.info
    np.testing.assert_array_equal(first.image, full)
    np.testing.assert_array_equal(again.image, full)


def test_host_state_holds_its_stated_bytes_per_pixel(rng, tmp_path):
    x = rng.random((40, 30, 3)).astype(np.float32)
    content = rng.random((40, 30, 3)).astype(np.float32)
    for state_dir in (None, tmp_path / "mm"):
        state = HostState.create(x, content, state_dir)
        arrays = (state.x, state.m, state.v, state.content)
        assert sum(a.nbytes for a in arrays) == streaming.BYTES_PER_PIXEL * 40 * 30
        np.testing.assert_array_equal(state.content, np.rint(content * 255).astype(np.uint8))
        np.testing.assert_array_equal(state.x, x)


@pytest.mark.parametrize(
    "src_hw, dst_hw",
    [((37, 53), (101, 77)), ((101, 77), (37, 53)), ((64, 64), (64, 200)), ((30, 40), (30, 40))],
)
def test_resize_into_blocks_equals_the_whole_image_resize(rng, src_hw, dst_hw):
    """Block by block (7 px blocks: many interior and edge blocks) = `pyramid.resize`, for
    up-, down- and one-axis scaling; 8-bit targets get the rounded values."""
    src = rng.random((*src_hw, 3)).astype(np.float32)
    ref = np.asarray(pyramid.resize(src, dst_hw))
    out = pyramid.resize_into(src, np.full((*dst_hw, 3), np.nan, np.float32), block=7)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    q = pyramid.resize_into(src, np.zeros((*dst_hw, 3), np.uint8), block=7)
    expect = np.rint(np.clip(ref, 0, 1) * 255)
    assert np.abs(q.astype(int) - expect).max() <= 1
    assert (q.astype(int) == expect).mean() > 0.999


def test_chunked_host_adam_equals_optax_on_the_whole_image(rng, monkeypatch):
    monkeypatch.setattr(streaming, "ROW_CHUNK_PIXELS", 5 * 9)  # 5 rows a chunk
    x0 = rng.random((23, 9, 3)).astype(np.float32)
    state = HostState.create(x0.copy(), x0, None)
    opt = make_optimizer("adam", 0.05)
    update = jax.jit(opt.update)  # jitted, as in the device step (eager rounds b1·mu to bf16)
    x, opt_state = jnp.asarray(x0), opt.init(jnp.asarray(x0))
    for _ in range(3):
        g = rng.normal(size=x0.shape).astype(np.float32)
        state.t += 1
        streaming._adam_rows(state, slice(0, 13), g[:13], 0.05)  # as the bands arrive
        streaming._adam_rows(state, slice(13, 23), g[13:], 0.05)
        updates, opt_state = update(jnp.asarray(g), opt_state, x)
        x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
    np.testing.assert_allclose(state.x, np.asarray(x), atol=1e-6)
    np.testing.assert_array_equal(state.m, np.asarray(opt_state[0].mu))
    np.testing.assert_allclose(state.v, np.asarray(opt_state[0].nu), rtol=1e-6)


@pytest.mark.parametrize(
    "weights", [{}, {"content_weight": 1e4, "style_weight": 1.0, "tv_weight": 10.0}]
)
def test_host_gradient_equals_the_untiled_gradient(rng, weights):
    """The streamed two-pass gradient, handed on band by band, is the untiled objective's
    gradient: each row once, in order, complete (a band handed on early would be partial).
    The content is on 8-bit levels, so the host state's 8-bit copy of it is exact. Tall, so
    that bands are handed on before the last tile row (the halo is 80 px)."""
    _, style = _images(rng)
    content = (rng.integers(0, 256, (240, 64, 3)) / 255).astype(np.float32)
    x = rng.random(content.shape).astype(np.float32)
    cfg = _with(state="host", scales=1, size=240, **weights)
    runner = prepare_level(content, [style], cfg)
    params, spec, grid = runner.level.params, runner.level.spec, runner.tplan.grid
    assert runner.level.plan.host and grid.count > 4
    state = HostState.create(x, content, None)
    grad, handed = np.zeros_like(x), []

    def on_rows(rows: slice, g: np.ndarray) -> None:
        grad[rows] += g
        handed.append((rows.start, rows.stop))

    loss, terms, _ = streaming.host_gradient(
        params,
        spec,
        grid,
        runner.tplan.batch,
        runner.targets,
        state.x,
        state.content,
        on_rows,
    )
    # The same host-state config: make_objective always evaluates on the device, untiled here.
    ref_loss, ref_grad = make_objective(
        content, [style], _with(state="host", scales=1, size=240, tile=0, **weights)
    )(x)
    assert [a for a, _ in handed] == [0] + [b for _, b in handed[:-1]]
    assert handed[-1][1] == x.shape[0] and len(handed) > 1
    assert loss == pytest.approx(float(ref_loss), rel=1e-5)
    if weights:  # content-heavy: the content term (and the 8-bit content) is in play
        assert terms["content"] > 0.1 * loss
    ref_grad = np.asarray(ref_grad)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-4 * np.abs(ref_grad).max())


def test_progress_covers_the_whole_render_tile_by_tile_on_host_levels(rng):
    """`done` climbs to `total` = Σ steps × pixels over the levels, never backwards; a host-
    resident level also reports within its steps (each tile batch), and the CLI's display
    takes every event."""
    content, style = _images(rng)
    events = []
    cfg = _with(state="host", steps=(2, 1))
    render_with_info(content, [style], cfg, progress=events.append)
    sizes = {e.level: e.size for e in events}
    total = sum(h * w * n for (h, w), n in zip(sizes.values(), (2, 1), strict=True)) / 1e6
    assert all(e.total == pytest.approx(total) for e in events)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == pytest.approx(total)
    within = [e for e in events if 0 < e.step_fraction < 1]
    assert len(within) >= 2 * 2 * events[0].tiles  # both passes, every batch, every step
    with RenderProgress(enabled=False) as display:
        for e in events:
            display.update(e)
