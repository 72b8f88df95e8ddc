"""What snapshots (`--save-every`) add to a host-resident level (issue 19): seconds and peak RSS.

The same one-step, single-level render with host-resident state memory-mapped under a state
directory, a narrow VGG19 (random weights; widths 4,8,8,16,16, so that the step is cheap and
the snapshot's share is not hidden by it), runs twice, each in its own subprocess: without
snapshots, and with a snapshot at every step (here one, at step 1, which is also the level's
end). Each reports its peak RSS and the time its snapshots took; the snapshot is also timed
again on the finished state (warm). Writes benches/results/snapshot-cost-<machine>-<date>.json.

    python benches/snapshot_cost.py --size 4096 --tile 512
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NARROW = (4, 8, 8, 16, 16)


def child(snapshots: bool, size: int, tile: int, scratch: Path) -> dict:
    import numpy as np

    from hiresnst import RenderConfig, render_with_info
    from hiresnst.snapshot import Snapshots, preview

    rng = np.random.default_rng(0)
    content = rng.random((256, 256, 3)).astype(np.float32)  # upscaled to the output
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size,
        steps=1,
        scales=1,
        weights="random",
        widths=NARROW,
        tile=tile,
        state="host",
        state_dir=str(scratch / "state"),
        style_scale=256 / size,
        init="content",
    )
    shots = Snapshots(scratch / "out.png", every=1) if snapshots else None
    t0 = time.perf_counter()
    result = render_with_info(content, [style], cfg, progress=shots)
    seconds = time.perf_counter() - t0
    row = {
        "snapshots": snapshots,
        "seconds": round(seconds, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "state_is_memmap": isinstance(result.image, np.memmap),
    }
    if shots is not None:
        row["snapshot_seconds"] = round(shots.seconds, 3)
        row["snapshots_written"] = [p.name for p in shots.written]
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            preview(result.image, 2048)
            warm.append(time.perf_counter() - t)
        row["preview_warm_seconds"] = round(min(warm), 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    ap.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "on", args.size, args.tile, args.scratch)))
        return
    rows = []
    for mode in ("off", "on"):
        scratch = Path(tempfile.mkdtemp(prefix="snapshot-bench-"))
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--scratch", str(scratch)]
                + ["--size", str(args.size), "--tile", str(args.tile)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    off, on = rows
    added = {
        "seconds": round(on["seconds"] - off["seconds"], 2),
        "snapshot_seconds": on["snapshot_seconds"],
        "peak_rss_bytes": on["peak_rss_bytes"] - off["peak_rss_bytes"],
    }
    print(f"{args.size}² host-resident level, 1 step, narrow VGG19 (random weights)")
    print(f"{'snapshots':10} {'render s':>9} {'snapshot s':>11} {'peak RSS MB':>12}")
    for r in rows:
        snap = f"{r['snapshot_seconds']:.2f}" if "snapshot_seconds" in r else "-"
        print(
            f"{'on' if r['snapshots'] else 'off':10} {r['seconds']:9.1f} {snap:>11} "
            f"{r['peak_rss_bytes'] / 2**20:12.0f}"
        )
    print(
        f"added: {added['snapshot_seconds']:.2f} s in the snapshot "
        f"(warm: {on['preview_warm_seconds']:.2f} s), "
        f"{added['peak_rss_bytes'] / 2**20:+.0f} MB peak RSS"
    )
    machine = f"{platform.system().lower()}-{platform.machine()}-cpu{os.cpu_count()}"
    result = {
        "machine": machine,
        "size": args.size,
        "tile": args.tile,
        "widths": list(NARROW),
        "weights": "random",
        "results": rows,
        "added": added,
    }
    out_dir = ROOT / "benches" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"snapshot-cost-{machine}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
