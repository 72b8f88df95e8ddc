"""FLOP counter against a hand count, bf16 against fp32, and the throughput benchmark end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hiresnst.flops import step_flops, tiled_step_flops
from hiresnst.model import DEFAULT_WIDTHS, random_params
from hiresnst.objective import (
    STYLE_LAYERS,
    LossSpec,
    content_target,
    make_loss_fn,
    make_plan,
    style_target,
)

REPO = Path(__file__).resolve().parents[1]
TINY = (2, 2, 2, 2, 2)


def conv(cin: int, cout: int, hw: int) -> int:
    return 2 * 9 * cin * cout * hw * hw


def test_step_flops_matches_a_hand_count():
    # widths (2,2,2,2,2) on 32×32, up to conv5_1: block k runs at 32 / 2**(k-1)
    forward = (
        conv(3, 2, 32)  # conv1_1
        + conv(2, 2, 32)  # conv1_2
        + conv(2, 2, 16)  # conv2_1
        + conv(2, 2, 16)  # conv2_2
        + conv(2, 2, 8)  # conv3_1
        + conv(2, 2, 8)  # conv3_2
        + conv(2, 2, 8)  # conv3_3
        + conv(2, 2, 8)  # conv3_4
        + conv(2, 2, 4)  # conv4_1
        + conv(2, 2, 4)  # conv4_2
        + conv(2, 2, 4)  # conv4_3
        + conv(2, 2, 4)  # conv4_4
        + conv(2, 2, 2)  # conv5_1
    )
    assert forward == 108 * 1024 + 72 * (1024 + 2 * 256 + 4 * 64 + 4 * 16 + 4) == 244_512
    # Grams of conv1_1 … conv5_1: 2·C²·N forward, as much again backward
    gram_fwd = 2 * 4 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)
    got = step_flops(32, 32, TINY, "conv5_1", STYLE_LAYERS)
    assert got == {
        "forward": forward,
        "backward": forward,  # input gradient of every conv, conv1_1 included
        "gram": 2 * gram_fwd,
        "total": 2 * forward + 2 * gram_fwd,
    }
    # weighted (name, weight) pairs as in LossSpec.style_layers; a shallower last layer
    only = step_flops(32, 32, TINY, "conv1_2", (("conv1_1", 0.5),))
    assert only["forward"] == conv(3, 2, 32) + conv(2, 2, 32)
    assert only["gram"] == 2 * (2 * 4 * 1024)


def test_full_vgg19_at_512_and_floor_pooling():
    got = step_flops(512, 512, DEFAULT_WIDTHS, "conv5_1", STYLE_LAYERS)
    assert (
        got["forward"] == 189_347_659_776
    )  # ≈ 189 GFLOP, as usually quoted for VGG19 up to conv5_1
    odd = step_flops(37, 45, TINY, "conv2_1", ())
    assert (
        odd["forward"]
        == conv(3, 2, 1) * 37 * 45 + conv(2, 2, 1) * 37 * 45 + conv(2, 2, 1) * 18 * 22
    )


def test_tiled_step_flops_counts_windows_of_both_passes():
    spec = LossSpec(widths=TINY)
    plan = make_plan(64, 48, spec, 32, None, 1)
    g = plan.grid
    got = tiled_step_flops(64, 48, TINY, "conv5_1", STYLE_LAYERS, g.tile, g.halo)
    window = g.tile + 2 * g.halo
    tiles = 2 * 2  # ⌈64/32⌉ · ⌈48/32⌉
    per_window = step_flops(window, window, TINY, "conv5_1", ())["forward"]
    core_gram = step_flops(g.tile, g.tile, TINY, "conv1_1", STYLE_LAYERS, backward=False)["gram"]
    assert got["tiles"] == tiles
    assert got["forward"] == tiles * 2 * per_window  # pass 1 and pass 2 (same deepest layer)
    assert got["backward"] == tiles * per_window
    assert got["gram"] == tiles * 3 * core_gram
    assert got["total"] == got["pass1"] + got["pass2"]
    # batches are padded with dead tiles, which cost as much as live ones
    assert tiled_step_flops(64, 48, TINY, "conv5_1", STYLE_LAYERS, g.tile, g.halo, 3)["tiles"] == 6


def test_bf16_loss_within_one_percent_of_fp32():
    # Full channel widths at 32×32 (compute is a few ms; compiling dominates): with only 2–16
    # channels per layer bf16 rounding barely averages out and some images miss 1 % by chance
    # (up to ~2 % seen); with the real widths 15 seeds stayed under 0.12 %.
    rng = np.random.default_rng(0)
    params = random_params(0, DEFAULT_WIDTHS)
    content, style = (jnp.asarray(rng.random((32, 32, 3), dtype=np.float32)) for _ in range(2))
    x = 0.5 * (content + style)  # the same image for both, away from either target
    losses = {}
    for dtype in ("float32", "bfloat16"):
        spec = LossSpec(widths=DEFAULT_WIDTHS, dtype=dtype, style_weight=1e5, tv_weight=1.0)

        def loss(params, x, content, style, spec=spec):
            targets = {
                "style": style_target(params, spec, style, None),
                "content": content_target(params, spec, content, None),
            }
            return make_loss_fn(spec, None)(params, x, targets)

        value, terms = jax.jit(loss)(params, x, content, style)
        assert all(bool(jnp.isfinite(v)) for v in terms.values())
        losses[dtype] = float(value)
    assert losses["float32"] > 0
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.01)


def test_throughput_benchmark_runs_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benches" / "throughput.py"),
        "--sizes", "32",
        "--steps", "2",
        "--warmup", "1",
        "--widths", "narrow",
        "--out", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = tmp_path.glob("*.json")
    assert path.name.endswith(".json") and "MP·it/s" in proc.stdout
    report = json.loads(path.read_text())
    for key in ("machine", "date", "device", "versions", "peak_tflops", "results", "comparisons"):
        assert key in report
    assert path.name == f"{report['machine']}-{report['date']}.json"
    jax_rows = [r for r in report["results"] if r["framework"] == "jax"]
    assert {r["precision"] for r in jax_rows} == {"fp32", "bf16"}
    for r in jax_rows:
        assert r["size"] == 32 and len(r["step_times_s"]) == 2
        for key in ("step_s", "mp_it_s", "tflops", "mfu", "compile_s", "peak_memory_bytes"):
            assert key in r
        assert r["step_s"] > 0 and r["mp_it_s"] > 0 and r["finite"]
        assert (
            r["flops_per_step"]
            == step_flops(32, 32, (4, 8, 8, 16, 16), "conv5_1", STYLE_LAYERS)["total"]
        )
    (cmp,) = [c for c in report["comparisons"] if c["kind"] == "bf16_vs_fp32"]
    assert cmp["probe_loss_rel_diff"] < 0.05
