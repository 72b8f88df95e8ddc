"""Peak process memory and time of one objective-and-gradient step, untiled vs tiled.

Each configuration runs in its own subprocess (so peak RSS is its own), builds the objective
with `hiresnst.make_objective` on the sample images at `--size`, and times the first call
(compile + run) and a second call (run). Results go to benches/results/ as JSON and a table is
printed. Example (the issue-3 figures): python benches/tile_memory.py --size 2048 --tiles 0,512
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
FALLBACK = ROOT / "tests" / "fixtures" / "images"


def _image(name: str) -> Path:
    return IMAGES / name if (IMAGES / name).exists() else FALLBACK / name


def child(size: int, tile: int) -> dict:
    import jax
    import numpy as np

    from hiresnst import RenderConfig, make_objective

    cfg = RenderConfig(size=size, weights="random", tile=tile, steps=1)
    t0 = time.perf_counter()
    vg = make_objective(_image("tubingen.jpg"), [_image("starry_night.jpg")], cfg)
    t_targets = time.perf_counter() - t0
    image = np.asarray(vg.content)
    t0 = time.perf_counter()
    jax.block_until_ready(vg(image))
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(vg(image))
    t_step = time.perf_counter() - t0
    h, w = vg.shape[:2]
    return {
        "size": [w, h],
        "tile": tile,
        "targets_s": round(t_targets, 2),
        "first_call_s": round(t_first, 2),
        "step_s": round(t_step, 2),
        "mp_iter_per_s": round(h * w / 1e6 / t_step, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tiles", default="0,512", help="comma list; 0 = untiled")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.size, args.child)))
        return
    rows = []
    for tile in (int(t) for t in args.tiles.split(",")):
        cmd = [sys.executable, __file__, "--size", str(args.size), "--child", str(tile)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"tile {tile} failed: {proc.stderr.strip().splitlines()[-1]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    machine = f"{platform.system()}-{platform.machine()}-cpu{__import__('os').cpu_count()}".lower()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tile-memory-{machine}-{dt.date.today()}.json"
    path.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"{'tile':>6} {'size':>11} {'step s':>8} {'MP·it/s':>8} {'peak RSS MB':>12}")
    for r in rows:
        size = f"{r['size'][0]}×{r['size'][1]}"
        cols = (r["tile"], size, r["step_s"], r["mp_iter_per_s"], r["peak_rss_mb"])
        print("{:>6} {:>11} {:>8} {:>8} {:>12}".format(*cols))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
