"""Host memory per output pixel of a render with host-resident state (issue: gigapixel outputs).

Runs the same single-level, one-step render (`--state host`, tiled) at each size, each in its
own subprocess, and reports their peak RSS. The per-pixel cost is the slope between the two
largest sizes, and the fixed overhead (Python, JAX, the model, compiled steps, one tile batch's
activations) the line's intercept: a one-tile render (512² at tile 512) sits ~0.1 GB below that
line, as it runs none of the multi-tile machinery, so it is listed but not used for the slope.
Writes benches/results/memory-<machine>-<date>.json.

    python benches/memory.py --sizes 512,2048,4096 --tile 512
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(size: int, tile: int, out: Path) -> dict:
    import numpy as np

    from hiresnst import RenderConfig, render_with_info
    from hiresnst.imageio import write_image

    rng = np.random.default_rng(0)
    content = rng.random((256, 256, 3)).astype(np.float32)  # upscaled to the output
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size,
        steps=1,
        weights="random",
        tile=tile,
        state="host",
        style_scale=256 / size,
        init="content",  # not `auto`: a feed-forward start would measure Magenta's network
    )
    from hiresnst.layers import DEFAULT_WIDTHS
    from hiresnst.plan import make_render_plan
    from hiresnst.sharding import device_memory_bytes

    plan = make_render_plan(
        cfg, content.shape[:2], [style.shape[:2]], DEFAULT_WIDTHS, devices=1,
        device_memory=device_memory_bytes(),
    )
    t0 = time.perf_counter()
    result = render_with_info(content, [style], cfg)
    render_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    write_image(out, result.image, bit_depth=16)
    seconds = time.perf_counter() - t0
    return {
        "size": size,
        "pixels": size * size,
        "seconds": round(seconds, 1),
        "peak_rss_render_bytes": render_peak,  # before the output is written
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "plan_estimate_bytes": plan.peak_host_bytes,  # what --dry-run says the render needs
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="512,2048,4096")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp"), help="where outputs go")
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.tile, args.tmp / f"mem-{args.child}.tif")))
        return
    rows = []
    for size in (int(v) for v in args.sizes.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--tile",
            str(args.tile),
            "--tmp",
            str(args.tmp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"size {size} failed: {proc.stderr.strip()[-500:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    small, large = rows[-2], rows[-1]
    per_px = (large["peak_rss_bytes"] - small["peak_rss_bytes"]) / (
        large["pixels"] - small["pixels"]
    )
    fixed = large["peak_rss_bytes"] - per_px * large["pixels"]
    machine = f"{platform.system()}-{platform.machine()}-cpu{os.cpu_count()}".lower()
    report = {
        "machine": machine,
        "tile": args.tile,
        "results": rows,
        "fixed_overhead_mb": round(fixed / 2**20, 1),
        "bytes_per_pixel": round(per_px, 1),
        "bytes_per_pixel_over_smallest": round(
            (large["peak_rss_bytes"] - rows[0]["peak_rss_bytes"])
            / (large["pixels"] - rows[0]["pixels"]),
            1,
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{machine}-{dt.date.today()}.json"
    for r in rows:
        r["estimate_over_measured"] = round(r["plan_estimate_bytes"] / r["peak_rss_bytes"], 3)
        print(
            f"{r['size']:>6}² {r['seconds']:>8} s  peak RSS {r['peak_rss_bytes'] / 2**20:9.1f} MB"
            f"  plan's estimate {r['plan_estimate_bytes'] / 2**20:9.1f} MB"
            f" ({r['estimate_over_measured']:.2f}×)"
        )
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"peak ≈ {report['fixed_overhead_mb']} MB + {report['bytes_per_pixel']} B/px "
        f"(slope of the two largest; {report['bytes_per_pixel_over_smallest']} B/px over the "
        "smallest)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
