"""Host-resident state (image and Adam moments in RAM or memory-mapped files, tiles streamed to
the device) gives the on-device result."""

from __future__ import annotations

import numpy as np
from conftest import NARROW

from hiresnst.checkpoint import CheckpointOptions
from hiresnst.config import RenderConfig
from hiresnst.render import render_with_info
from hiresnst.streaming import host_window


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
    content, style = _images(rng)
    device = render_with_info(content, [style], _with(state="device"))
    host = render_with_info(content, [style], _with(state="host"))
    mapped = render_with_info(content, [style], _with(state="host", state_dir=str(tmp_path / "s")))
    assert (tmp_path / "s" / "level-1" / "adam_v.npy").exists()
    for lv_d, lv_h in zip(device.info["levels"], host.info["levels"], strict=True):
        assert abs(lv_h["loss_first"] - lv_d["loss_first"]) <= 1e-4 * lv_d["loss_first"]
        assert abs(lv_h["loss_last"] - lv_d["loss_last"]) <= 1e-3 * lv_d["loss_last"]
    assert np.abs(host.image - device.image).mean() <= 1e-4
    np.testing.assert_array_equal(mapped.image, host.image)


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
