#!/usr/bin/env python
"""Communication against computation per step of a sharded tiled render, and the projected
scaling efficiency on 8 devices and on 4 hosts × 8 devices.

    python benches/scaling.py [--size 16384] [--tile 2048] [--tflops X | --measure-size 256]

What a step communicates is read off the code (`objective.tiled_value_and_grad`): every device
scans its own tile batches, then

- pass 1 all-reduces the style Grams: Σ_s C_s² fp32 values (2.4 MB for VGG19);
- pass 2 all-reduces the image gradient, H·W·3 fp32 values (windows are cut from the unpadded
  image), and three loss scalars.

The FLOPs are `hiresnst.flops.tiled_step_flops`. The compute time per device is FLOPs / devices
/ (achieved FLOP/s of one device): `--tflops` gives that rate, or it is measured here by timing
the jitted untiled step at `--measure-size` on the local device. An all-reduce of B bytes costs,
as a ring within a host and then across hosts (each device with its own network link):

    t = 2·(g − 1)/g · B / bw_host + 2·(h − 1)/h · (B / g) / bw_link + 2·(g + h − 2) · latency

for g devices per host and h hosts. Bandwidths default to an H100 HGX node (NVLink 450 GB/s
per direction per GPU; one 400 Gb/s = 50 GB/s InfiniBand link per GPU; 10 µs per hop) and can be
overridden. Nothing is overlapped in the projection (the step is all-reduce-bound at its end),
and dead tiles that pad the last round are counted as lost work. Efficiency = ideal time / (compute
+ communication). Results go to benches/results/scaling-<machine>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hiresnst.flops import step_flops, tiled_step_flops  # noqa: E402
from hiresnst.model import DEFAULT_WIDTHS, conv_width  # noqa: E402
from hiresnst.objective import STYLE_LAYERS, LossSpec  # noqa: E402
from hiresnst.tiling import make_grid  # noqa: E402


def measure_tflops(size: int, steps: int = 3) -> tuple[float, str]:
    """Achieved TFLOP/s of the jitted untiled value-and-grad step on the first local device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hiresnst.model import random_params
    from hiresnst.objective import content_target, make_loss_fn, style_target

    spec = LossSpec(style_weight=1e5, tv_weight=1.0)
    params = random_params(0, DEFAULT_WIDTHS)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((size, size, 3)), jnp.float32)
    targets = {
        "style": style_target(params, spec, x[::-1], None),
        "content": content_target(params, spec, x, None),
    }
    loss_fn = make_loss_fn(spec, None)
    vg = jax.jit(jax.value_and_grad(lambda x: loss_fn(params, x, targets)[0]))
    jax.block_until_ready(vg(x))
    t0 = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(vg(x))
    seconds = (time.perf_counter() - t0) / steps
    flops = step_flops(size, size, DEFAULT_WIDTHS, "conv5_1", STYLE_LAYERS)["total"]
    return flops / seconds / 1e12, str(jax.devices()[0].device_kind)


def allreduce_seconds(nbytes: float, g: int, h: int, a: argparse.Namespace) -> float:
    t = 0.0
    if g > 1:
        t += 2 * (g - 1) / g * nbytes / (a.bw_host * 1e9)
    if h > 1:
        t += 2 * (h - 1) / h * (nbytes / g) / (a.bw_link * 1e9)
    return t + 2 * (g + h - 2) * a.latency_us * 1e-6


def project(a: argparse.Namespace, tflops: float) -> dict:
    spec = LossSpec()
    grid = make_grid(a.size, a.size, a.tile, spec.halo, spec.levels)
    flops = tiled_step_flops(
        a.size, a.size, DEFAULT_WIDTHS, "conv5_1", STYLE_LAYERS, grid.tile, grid.halo
    )
    per_tile = flops["total"] / flops["tiles"]
    gram_bytes = 4 * sum(conv_width(n, DEFAULT_WIDTHS) ** 2 for n in STYLE_LAYERS)
    grad_bytes = 4 * a.size * a.size * 3 + 3 * 4
    rows = []
    for g, h in ((1, 1), (8, 1), (8, 4)):
        n = g * h
        rounds = -(-flops["tiles"] // n)  # tile batches per device: the last may be partial
        compute = rounds * per_tile / (tflops * 1e12)
        comm = allreduce_seconds(gram_bytes, g, h, a) + allreduce_seconds(grad_bytes, g, h, a)
        ideal = flops["total"] / n / (tflops * 1e12)
        rows.append(
            {
                "devices": n,
                "hosts": h,
                "tiles_per_device": rounds,
                "compute_s": compute,
                "comm_s": comm,
                "step_s": compute + comm,
                "efficiency": ideal / (compute + comm),
                "comm_bytes": gram_bytes + grad_bytes if n > 1 else 0,
                "flops_per_byte": flops["total"] / (gram_bytes + grad_bytes),
            }
        )
    return {
        "size": a.size,
        "tile": grid.tile,
        "halo": grid.halo,
        "tiles": flops["tiles"],
        "step_tflop": flops["total"] / 1e12,
        "gram_allreduce_bytes": gram_bytes,
        "gradient_allreduce_bytes": grad_bytes,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=16384, help="square output size (px)")
    p.add_argument("--tile", type=int, default=2048, help="tile core (px)")
    p.add_argument("--tflops", type=float, help="achieved TFLOP/s of one device (else measured)")
    p.add_argument("--measure-size", type=int, default=256, help="size of the measured step")
    p.add_argument("--bw-host", type=float, default=450.0, help="GB/s per device within a host")
    p.add_argument("--bw-link", type=float, default=50.0, help="GB/s per device across hosts")
    p.add_argument("--latency-us", type=float, default=10.0, help="µs per all-reduce hop")
    p.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    a = p.parse_args(argv)
    device = "given"
    tflops = a.tflops
    if tflops is None:
        tflops, device = measure_tflops(a.measure_size)
    result = {
        "machine": f"{platform.system().lower()}-{platform.machine()}",
        "device": device,
        "date": dt.date.today().isoformat(),
        "device_tflops": tflops,
        "tflops_source": "--tflops" if a.tflops else f"measured at {a.measure_size}²",
        "bandwidth_gbs": {"host": a.bw_host, "link": a.bw_link},
        "latency_us": a.latency_us,
        **project(a, tflops),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    name = f"scaling-{result['machine']}-{device.replace(' ', '_')}-{result['date']}.json"
    (a.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{a.size}² in {result['tiles']} tiles of {result['tile']} (+{result['halo']} halo): "
        f"{result['step_tflop']:.1f} TFLOP per step; all-reduce "
        f"{result['gram_allreduce_bytes'] / 1e6:.1f} MB Grams + "
        f"{result['gradient_allreduce_bytes'] / 1e6:.0f} MB gradient; "
        f"one device ({device}) at {tflops:.3g} TFLOP/s"
    )
    print("| devices | hosts | tiles/device | compute s | comm s | efficiency |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result["rows"]:
        print(
            f"| {r['devices']} | {r['hosts']} | {r['tiles_per_device']} | "
            f"{r['compute_s']:.4g} | {r['comm_s']:.3g} | {r['efficiency']:.1%} |"
        )
    print(f"wrote {a.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
