"""Host-resident steps say where their time goes (host work vs waiting for the device), and the
faster streaming (reused aligned window buffers, pipelined batches, asynchronous band-wise Adam)
keeps the exact gradient and Adam update."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import NARROW

from hiresnst import streaming
from hiresnst.config import RenderConfig
from hiresnst.logprogress import Estimator, LineLog, format_line
from hiresnst.render import render_with_info

CFG = RenderConfig(
    size=64,
    steps=2,
    weights="random",
    widths=NARROW,
    seed=3,
    tile=32,
    scales=1,
    tile_batch=2,
    state="host",
)


def test_progress_splits_host_steps_into_host_and_device_time(rng):
    content = rng.random((48, 64, 3)).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    events = []
    log = io.StringIO()
    line_log = LineLog(every=1, stream=log)

    def progress(p):
        events.append(p)
        line_log(p)

    render_with_info(content, [style], CFG, progress=progress)
    whole = [e for e in events if e.step > 0 and not e.step_fraction]
    assert [e.step for e in whole] == [1, 2]
    for e in whole:
        assert {"gather", "dispatch", "device", "band", "adam", "total"} <= set(e.times)
        assert e.device_seconds > 0 and e.host_seconds > 0
        assert e.host_seconds + e.device_seconds == pytest.approx(e.times["total"])
        assert sum(v for k, v in e.times.items() if k != "total") <= e.times["total"] * 1.01
    line = format_line(whole[-1], Estimator().update(whole[-1]))
    assert "(host " in line and " device " in line
    assert "(host " in log.getvalue()


def test_device_levels_report_no_split(rng):
    content = rng.random((48, 64, 3)).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    events = []
    render_with_info(
        content,
        [style],
        RenderConfig(**{**CFG.__dict__, "state": "device"}),
        progress=events.append,
    )
    assert events and all(not e.times and e.host_seconds is None for e in events)
    assert "(host " not in format_line(events[-1], Estimator().update(events[-1]))


def test_aligned_zeros_reach_the_cpu_backend_uncopied():
    import jax

    a = streaming.aligned_zeros((7, 13, 3), np.float32)
    assert a.ctypes.data % streaming.ALIGN == 0 and not a.any()
    assert np.shares_memory(np.asarray(jax.device_put(a)), a)
