#!/usr/bin/env python
"""The one-pass tiled step (`--gram lagged`) against the exact one: time per step and loss
against wall time, at equal settings and seed.

    nice -n 5 python benches/onepass.py [--sizes 1024,2048] [--steps 12,6] [--tile 512]
        [--batch 1] [--out benches/results]

One tiled level of a render per size: full-width VGG19 with random weights (`--weights random`
layout), the default loss weights and Adam settings of a level after the first (learning rate
0.05, the 10-step warm-up), the content image (tubingen, squared to the size) as the start, the
style (starry night) at 512 px. Both modes run in one process and are interleaved step by step
(the next step goes to the mode that has used less wall time so far), so both see the same load
on a shared machine and their curves cover the same time span: the exact mode runs `--steps`
steps, the lagged mode runs until it has used as much time. Compilation is done ahead and not
timed; the lagged mode's extra Gram pass at the level's first step is timed, in its first step.

Reported per size: the median step time of each mode past the first step and their ratio
(lagged / exact), each step's (wall time so far, loss), and the loss each reached by equal wall
time: each curve's loss (linear between its points) at the end of the span both curves cover,
with the measured step times and with steady ones (`summarise`). A step's loss is the exact
loss at the image before its update, so the point of step k is (time of steps 0..k-1, loss of
image k). `--report FILE...` merges runs made separately (e.g. one size each) and prints their
table. SIGTERM or Ctrl-C stops the run with the steps measured so far written out
(`stopped_early`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "tests" / "fixtures" / "images"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def problem(size: int, tile: int, batch: int):
    """(params, spec, plan, targets, x0, opt) of one tiled level at size × size."""
    from hiresnst.config import RenderConfig
    from hiresnst.imageio import read_image
    from hiresnst.model import DEFAULT_WIDTHS, random_params
    from hiresnst.objective import (
        content_target_jit,
        make_plan,
        style_target_jit,
    )
    from hiresnst.optimize import make_optimizer
    from hiresnst.pyramid import resize

    config = RenderConfig()
    spec = config.loss_spec(DEFAULT_WIDTHS)
    params = random_params(config.seed, DEFAULT_WIDTHS)
    content = resize(read_image(IMAGES / "tubingen.jpg"), (size, size))
    style = read_image(IMAGES / "starry_night.jpg")
    scale = 512 / max(style.shape[:2])
    style = resize(style, (round(style.shape[0] * scale), round(style.shape[1] * scale)))
    plan = make_plan(size, size, spec, tile, None, batch)
    style_plan = make_plan(*style.shape[:2], spec.for_style_image(), tile, None, batch)
    targets = {
        "style": style_target_jit(params, spec, style, style_plan),
        "content": content_target_jit(params, spec, content, plan),
    }
    opt = make_optimizer("adam", config.learning_rate, config.warmup)
    return params, spec, plan, targets, content, opt


class Mode:
    """One mode's compiled step, state and record."""

    def __init__(self, name, step, x0, opt, grams_fn=None):
        self.name, self.step, self.grams_fn = name, step, grams_fn
        self.x = jnp.array(x0)
        self.state = opt.init(self.x)
        self.grams = None
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # this process's CPU seconds: less load-dependent
        self.losses: list[float] = []

    @property
    def elapsed(self) -> float:
        return sum(self.times)

    def run(self, params, targets) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        if self.grams_fn is None:
            self.x, self.state, loss, _ = self.step(params, targets, self.x, self.state)
        else:
            if self.grams is None:  # the level's first step: one extra Gram pass
                self.grams = self.grams_fn(params, self.x, targets)
            self.x, self.state, loss, _, self.grams = self.step(
                params, targets, self.x, self.state, self.grams
            )
        jax.block_until_ready((self.x, loss))
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - c0)
        self.losses.append(float(loss))

    def curve(self) -> list[tuple[float, float]]:
        """(wall time to reach image k, loss of image k) for each measured k."""
        return [(sum(self.times[:k]), loss) for k, loss in enumerate(self.losses)]


def loss_at(curve: list[tuple[float, float]], t: float) -> float:
    """The loss at wall time t, interpolated linearly between the measured points (t lies
    within the curve: the span both curves cover)."""
    return float(np.interp(t, [w for w, _ in curve], [v for _, v in curve]))


def summarise(r: dict) -> dict:
    """The figures derived from a size's step times and losses.

    Measured: each mode's curve with its own step times (one-off load spikes included).
    Steady: each step at its mode's median time (steps past the first), the lagged mode paying
    its extra Gram pass once, valued at (exact − lagged) median step time."""
    times = r["step_times_s"]
    losses = r.get("losses") or {n: [v for _, v in c] for n, c in r["curves"].items()}
    medians = {n: statistics.median(t[1:]) for n, t in times.items()}
    cpu = r.get("step_cpu_s")
    cpu_medians = {n: statistics.median(t[1:]) for n, t in cpu.items()} if cpu else None
    curves = {n: [(sum(times[n][:k]), v) for k, v in enumerate(losses[n])] for n in times}
    span = min(c[-1][0] for c in curves.values())
    extra = {"exact": 0.0, "lagged": medians["exact"] - medians["lagged"]}
    steady = {
        n: [(0.0 if k == 0 else extra[n] + k * medians[n], v) for k, v in enumerate(losses[n])]
        for n in times
    }
    steady_span = min(c[-1][0] for c in steady.values())
    common = min(len(v) for v in losses.values()) - 1
    return {
        "median_step_s": medians,
        "ratio_lagged_over_exact": medians["lagged"] / medians["exact"],
        "median_step_cpu_s": cpu_medians,
        "cpu_ratio_lagged_over_exact": (
            cpu_medians["lagged"] / cpu_medians["exact"] if cpu_medians else None
        ),
        "curves": curves,
        "equal_time_s": span,
        "loss_at_equal_time": {n: loss_at(c, span) for n, c in curves.items()},
        "steady_equal_time_s": steady_span,
        "steady_loss_at_equal_time": {n: loss_at(c, steady_span) for n, c in steady.items()},
        "losses": losses,
        "equal_step": common,
        "loss_at_equal_step": {n: v[common] for n, v in losses.items()},
    }


def bench_size(size: int, steps: int, tile: int, batch: int) -> dict:
    from hiresnst.objective import make_lagged_fn, make_loss_fn, tiled_style_grams
    from hiresnst.optimize import make_step

    params, spec, plan, targets, x0, opt = problem(size, tile, batch)
    exact_step = make_step(make_loss_fn(spec, plan), "adam", opt)
    lagged_step = make_step(
        make_loss_fn(spec, plan), "adam", opt, lagged=make_lagged_fn(spec, plan)
    )
    grams_fn = jax.jit(lambda p, y, t: tiled_style_grams(p, y, t, spec, plan))
    t0 = time.perf_counter()
    s0 = opt.init(x0)
    g0 = jax.eval_shape(grams_fn, params, x0, targets)
    exact_c = exact_step.lower(params, targets, x0, s0).compile()
    lagged_c = lagged_step.lower(params, targets, x0, s0, g0).compile()
    grams_c = grams_fn.lower(params, x0, targets).compile()
    compile_s = time.perf_counter() - t0
    exact = Mode("exact", exact_c, x0, opt)
    lagged = Mode("lagged", lagged_c, x0, opt, grams_c)
    stopped = False
    try:
        while len(exact.times) < steps or lagged.elapsed < exact.elapsed:
            exact_turn = len(exact.times) < steps and exact.elapsed <= lagged.elapsed
            turn = exact if exact_turn else lagged
            if turn is lagged and len(lagged.times) >= 3 * steps:
                break
            turn.run(params, targets)
            print(
                f"  {size} px {turn.name:6s} step {len(turn.times) - 1:2d}: "
                f"{turn.times[-1]:6.2f} s, loss {turn.losses[-1]:.6g}, "
                f"CPU {turn.cpu_times[-1]:.1f} s",
                flush=True,
            )
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: keep the steps measured so far
        stopped = True
    raw = {
        "size": size,
        "tile": tile,
        "batch": batch,
        "tiles": plan.grid.count,
        "compile_s": compile_s,
        "steps": {m.name: len(m.times) for m in (exact, lagged)},
        "step_times_s": {m.name: m.times for m in (exact, lagged)},
        "step_cpu_s": {m.name: m.cpu_times for m in (exact, lagged)},
        "losses": {m.name: m.losses for m in (exact, lagged)},
        "stopped_early": stopped,
    }
    return {**raw, **summarise(raw)}


def print_table(machine: dict, results: list[dict]) -> None:
    print(f"machine: {machine['cpu']} ({machine['backend']}), random weights")
    print(
        "| size | tiles | exact s/step | lagged s/step | ratio | steps (exact, lagged) "
        "| equal time s | loss exact | loss lagged | steady: time s | loss exact | loss lagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, n, loss = r["median_step_s"], r["steps"], r["loss_at_equal_time"]
        steady = r["steady_loss_at_equal_time"]
        print(
            f"| {r['size']} | {r['tiles']} | {m['exact']:.1f} | {m['lagged']:.1f} "
            f"| {r['ratio_lagged_over_exact']:.3f} | {n['exact']}, {n['lagged']} "
            f"| {r['equal_time_s']:.0f} | {loss['exact']:.5g} | {loss['lagged']:.5g} "
            f"| {r['steady_equal_time_s']:.0f} | {steady['exact']:.5g} | {steady['lagged']:.5g} |"
        )
    for r in results:
        if r["cpu_ratio_lagged_over_exact"]:
            c = r["median_step_cpu_s"]
            print(
                f"{r['size']} px CPU s/step: exact {c['exact']:.1f}, lagged {c['lagged']:.1f}, "
                f"ratio {r['cpu_ratio_lagged_over_exact']:.3f}"
            )
        print(f"{r['size']} px loss per step (exact):  {[round(v) for v in r['losses']['exact']]}")
        print(f"{r['size']} px loss per step (lagged): {[round(v) for v in r['losses']['lagged']]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--steps", default="12,6", help="exact steps per size")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    ap.add_argument(
        "--report",
        type=Path,
        nargs="+",
        help="no run: merge these results files (one machine) into --out and print the table",
    )
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"onepass-{platform.machine()}-{jax.default_backend()}-{date}.json"
    if args.report:
        records = [json.loads(p.read_text()) for p in args.report]
        results = [{**r, **summarise(r)} for rec in records for r in rec["results"]]
        record = {**records[0], "results": sorted(results, key=lambda r: r["size"])}
        path.write_text(json.dumps(record, indent=1))
        print_table(record["machine"], record["results"])
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) != len(sizes):
        ap.error("--steps needs one count per size")
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
    }
    record = {"machine": machine, "weights": "random", "date": date, "results": []}
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    for size, n in zip(sizes, steps, strict=True):
        result = bench_size(size, n, args.tile, args.batch)
        record["results"].append(result)
        path.write_text(json.dumps(record, indent=1))  # each size as soon as it is done
        if result["stopped_early"]:
            break
    print(f"-> {path}")
    print_table(machine, record["results"])


if __name__ == "__main__":
    main()
