"""Device memory of a device-resident level: its state between steps and its step's peak.

For each size, a tiled device level is prepared and started (random weights, full-width VGG19,
one 256-px style) and two figures are taken on this process's JAX backend:

- state: the bytes of `jax.live_arrays()` after `runner.start`, less those before, less the
  weights and the style targets (which do not scale with the level), per level pixel;
- step: XLA's buffer assignment of the compiled step (`memory_analysis`): its arguments (params,
  targets, image, optimiser state), outputs not aliased to a donated argument, and temporaries.
  Across two sizes with the same tile, the temporaries' growth per added pixel is what the step
  holds per pixel (the gradient accumulator) and the rest is one tile batch's working memory.

With `--time-steps N`, the price of making the content features in the step: at the first
size, N steps with the 8-bit content (features per tile in the step) and N with the features
stored (`content_target`, 32 B/px more), interleaved, after one compile-and-run of each.

Writes benches/results/device-state-<machine>-<date>.json and prints a table. Example:
nice -n 5 python benches/device_state.py --sizes 1024,2048 --tile 512 --time-steps 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from hiresnst import RenderConfig
from hiresnst.objective import content_target_jit, content_values
from hiresnst.render import prepare_level

ROOT = Path(__file__).resolve().parents[1]


def tree_bytes(tree) -> int:
    return sum(int(a.nbytes) for a in jax.tree_util.tree_leaves(tree) if hasattr(a, "nbytes"))


def live_bytes() -> int:
    return sum(int(a.nbytes) for a in jax.live_arrays())


def measure(size: int, tile: int, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    content = rng.random((size, size, 3)).astype(np.float32)
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size, weights="random", tile=tile, tile_batch=batch, state="device", scales=1
    )
    gc.collect()
    before = live_bytes()
    runner = prepare_level(content, [style], cfg)
    state = runner.start(content, jax.random.key(seed), None)
    jax.block_until_ready(state.image)
    after = live_bytes()
    level = runner.level
    fixed = {k: v for k, v in runner.targets.items() if k != "content"}
    px = size * size
    state_bytes = after - before - tree_bytes(level.params) - tree_bytes(fixed)
    compiled = runner.step.lower(level.params, runner.targets, state.image, state.opt).compile()
    ma = compiled.memory_analysis()
    args, out = int(ma.argument_size_in_bytes), int(ma.output_size_in_bytes)
    alias, temp = int(ma.alias_size_in_bytes), int(ma.temp_size_in_bytes)
    row = {
        "size": size,
        "tile": tile,
        "halo": runner.tplan.grid.halo,
        "batch": runner.tplan.batch,
        "pixels": px,
        "state_bytes": state_bytes,
        "state_bytes_per_px": round(state_bytes / px, 2),
        "arrays": {
            "image": tree_bytes(state.image) / px,
            "optimizer": tree_bytes(state.opt) / px,
            "content": tree_bytes(runner.targets["content"]) / px,
        },
        "step_arguments": args,
        "step_outputs_not_aliased": out - alias,
        "step_temp": temp,
        "step_peak": args + out - alias + temp,
        "step_peak_bytes_per_px": round((args + out - alias + temp) / px, 2),
    }
    del runner, state, compiled
    gc.collect()
    return row


def time_content(size: int, tile: int, batch: int, steps: int, seed: int = 0) -> dict:
    """Seconds per step with the content as 8 bits (features in the step) and as stored
    features, interleaved so that the machine's load falls on both alike."""
    rng = np.random.default_rng(seed)
    content = rng.random((size, size, 3)).astype(np.float32)
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size, weights="random", tile=tile, tile_batch=batch, state="device", scales=1
    )
    runner = prepare_level(content, [style], cfg)
    state = runner.start(content, jax.random.key(seed), None)
    params, spec = runner.level.params, runner.level.spec
    stored = content_target_jit(params, spec, content_values(runner.content), runner.tplan)
    variants = {"8bit": runner.targets, "stored": {**runner.targets, "content": stored}}
    x, opt = state.image, state.opt
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(steps + 1):
        for name, targets in variants.items():
            t0 = time.perf_counter()
            x, opt, loss, _ = runner.step(params, targets, x, opt)
            jax.block_until_ready(loss)
            if i:  # the first of each compiles
                times[name].append(time.perf_counter() - t0)
    per = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "size": size,
        "tile": tile,
        "steps": steps,
        "step_s": per,
        "ratio_8bit_over_stored": per["8bit"] / per["stored"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--time-steps", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    args = ap.parse_args()
    rows = [measure(int(s), args.tile, args.batch) for s in args.sizes.split(",")]
    slope = None
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        slope = (b["step_temp"] - a["step_temp"]) / (b["pixels"] - a["pixels"])
        window = a["step_temp"] - slope * a["pixels"]
    print("random weights, full-width VGG19, backend", jax.default_backend())
    print(f"{'size':>6} {'tile':>5} {'state B/px':>10} {'step peak B/px':>14} {'temp MB':>8}")
    for r in rows:
        print(
            f"{r['size']:>6} {r['tile']:>5} {r['state_bytes_per_px']:>10} "
            f"{r['step_peak_bytes_per_px']:>14} {r['step_temp'] / 1e6:>8.1f}"
        )
    if slope is not None:
        print(f"step temporaries: {slope:.2f} B/px + {window / 1e6:.1f} MB (the tile batch)")
    timing = None
    if args.time_steps:
        timing = time_content(rows[0]["size"], args.tile, args.batch, args.time_steps)
        s8, sf = timing["step_s"]["8bit"], timing["step_s"]["stored"]
        print(
            f"step at {timing['size']}²: {s8:.2f} s with 8-bit content, {sf:.2f} s with stored "
            f"features (×{timing['ratio_8bit_over_stored']:.3f}), median of {args.time_steps}"
        )
    machine = f"{platform.system().lower()}-{platform.machine()}-{jax.default_backend()}"
    report = {
        "machine": machine,
        "cpu": _cpu_model(),
        "weights": "random",
        "rows": rows,
        "step_temp_bytes_per_px": slope,
        "step_temp_fixed_bytes": None if slope is None else window,
        "content_timing": timing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"device-state-{machine}-{dt.date.today()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
