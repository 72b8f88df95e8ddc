"""Host overhead of a host-resident level (issue 16 §3): its step time minus the device-resident
step time at the same tiles, in ns per pixel-step, with the host step's breakdown.

A one-level render at each size (tile 512, random weights, a narrow VGG19 of 4 channels per
block so that the convolutions are cheap and the host's share shows), `--state device` and
`--state host`, each in its own subprocess; the first step (compilation) is left out and the
median of the other steps' times is taken. `overhead` is the host-resident step time minus
the device-resident one (the issue's measure); `own` is the host step's time not spent waiting
for the device (total − device wait, within one process, so less exposed to other load);
`cpu ovh` is the host-resident step's CPU time minus the device-resident one's (all threads),
`main cpu` the host-resident step's CPU time on the render's own thread (its host work; the
device's work runs on XLA's threads): CPU time is what other processes on a shared machine
disturb least. The
host step's parts come from its progress events (`Progress.times`, `streaming.StepTimes`):
window gathers, transfers, dispatch, device wait, gradient bands, Adam, heap trims. The level's
resizes (content and start image into the host state) happen once per level, not per step;
they are timed on their own.

`--code DIR` (repeatable) runs both variants with the `hiresnst` of another checkout as well
(e.g. `main`; it must report `Progress.times`), interleaved round by round with this one, so
that before and after are measured in the same stretch of time on a shared machine. Writes
benches/results/host_overhead.json (or `--out`) and prints a table.

    python benches/host_overhead.py --sizes 2048 4096 --code /tmp/hc-main
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (4, 4, 4, 4, 4)
PARTS = ("gather", "transfer", "dispatch", "device", "band", "adam", "trim")


def child(state: str, size: int, tile: int, steps: int) -> dict:
    import numpy as np

    from hiresnst import RenderConfig, render_with_info
    from hiresnst.pyramid import resize_into

    rng = np.random.default_rng(0)
    content = rng.random((256, 256, 3)).astype(np.float32)  # upscaled to the output
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size,
        steps=steps,
        scales=1,
        weights="random",
        widths=WIDTHS,
        tile=tile,
        state=state,
        style_scale=256 / size,
        init="content",
    )
    ends: list[tuple[int, float, dict, float, float]] = []

    def progress(p) -> None:  # called on the render's (main) thread
        if not p.step_fraction and p.step > 0:
            clocks = (time.process_time(), time.thread_time())
            ends.append((p.step, time.perf_counter(), dict(p.times), *clocks))

    render_with_info(content, [style], cfg, progress=progress)
    # Step k's time: from the event of step k-1 to that of step k (a device level reports each
    # step's loss one step late, so from its third event on these are whole steps).
    seconds = [b[1] - a[1] for a, b in zip(ends[1:], ends[2:], strict=False)]
    parts = [e[2] for e in ends[2:]]
    row: dict = {"state": state, "size": size, "steps_timed": len(seconds)}
    row["step_seconds"] = [round(s, 4) for s in seconds]
    row["step_s"] = statistics.median(seconds)
    # CPU seconds per step, of the whole process and of the main thread (the host's own work:
    # the device's work runs on XLA's threads): less exposed than wall time to other load.
    row["cpu_s"] = statistics.median(b[3] - a[3] for a, b in zip(ends[1:], ends[2:], strict=False))
    row["main_cpu_s"] = statistics.median(
        b[4] - a[4] for a, b in zip(ends[1:], ends[2:], strict=False)
    )
    if parts and parts[0]:
        row["parts_s"] = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in parts[0]}
        resize = []
        for dtype in (np.float32, np.uint8):
            t = time.perf_counter()
            resize_into(content, np.empty((size, size, 3), dtype))
            resize.append(time.perf_counter() - t)
        row["resize_per_level_s"] = sum(resize)
    return row


def run_child(code: Path, state: str, size: int, tile: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, __file__, "--child", state, "--sizes", str(size), "--tile", str(tile)]
    cmd += ["--steps", str(steps)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ns(seconds: float, size: int) -> float:
    return seconds / (size * size) * 1e9


def summarise(device: list[dict], host: list[dict], size: int) -> dict:
    """Medians over rounds, in ns per pixel-step."""
    dev = statistics.median(r["step_s"] for r in device)
    hst = statistics.median(r["step_s"] for r in host)
    out = {
        "device_step_s": round(dev, 4),
        "host_step_s": round(hst, 4),
        "overhead_ns_per_pixel_step": round(ns(hst - dev, size), 1),
        "device_ns_per_pixel_step": round(ns(dev, size), 1),
        "host_ns_per_pixel_step": round(ns(hst, size), 1),
    }
    for key, name in (("cpu_s", "cpu"), ("main_cpu_s", "main_thread_cpu")):
        d = statistics.median(r[key] for r in device)
        c = statistics.median(r[key] for r in host)
        out[f"device_{name}_ns_per_pixel_step"] = round(ns(d, size), 1)
        out[f"host_{name}_ns_per_pixel_step"] = round(ns(c, size), 1)
        out[f"overhead_{name}_ns_per_pixel_step"] = round(ns(c - d, size), 1)
    if all("parts_s" in r for r in host):
        keys = sorted({k for r in host for k in r["parts_s"]})
        out["host_step_parts_ns_per_pixel_step"] = {
            k: round(ns(statistics.median(r["parts_s"].get(k, 0.0) for r in host), size), 1)
            for k in keys
        }
        own = statistics.median(r["parts_s"]["total"] - r["parts_s"]["device"] for r in host)
        out["host_own_ns_per_pixel_step"] = round(ns(own, size), 1)
        out["resize_per_level_ns_per_pixel"] = round(
            ns(statistics.median(r["resize_per_level_s"] for r in host), size), 1
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--code", type=Path, action="append", default=[], help="another checkout")
    ap.add_argument("--out", type=Path, default=ROOT / "benches/results/host_overhead.json")
    ap.add_argument("--child", choices=("host", "device"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.tile, args.steps)))
        return
    codes = [ROOT, *args.code]
    names = ["this" if c == ROOT else str(c) for c in codes]
    # Each checkout is measured against its own device-resident step: the device path changes
    # too (e.g. what it stores and recomputes per tile), and the overhead is host − device.
    runs: dict = {str(s): {n: {"device": [], "host": []} for n in names} for s in args.sizes}
    for _ in range(args.rounds):
        for size in args.sizes:
            for code, name in zip(codes, names, strict=True):
                for state in ("device", "host"):
                    row = run_child(code, state, size, args.tile, args.steps)
                    runs[str(size)][name][state].append(row)
    results = {
        str(s): {n: summarise(runs[str(s)][n]["device"], runs[str(s)][n]["host"], s) for n in names}
        for s in args.sizes
    }
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    report = {
        "bench": "host_overhead",
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
        "weights": "random",
        "widths": list(WIDTHS),
        "tile": args.tile,
        "steps": args.steps,
        "rounds": args.rounds,
        "codes": dict(zip(names, map(str, codes), strict=True)),
        "results": results,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"host overhead, ns per pixel-step (random weights, widths {WIDTHS}, tile {args.tile})")
    head = f"{'size':>6} {'code':<16} {'device':>8} {'host':>8} {'overhead':>9} {'own':>7} "
    head += f"{'cpu ovh':>8} {'main cpu':>8}  parts"
    print(head)
    for s, by_code in results.items():
        for name, r in by_code.items():
            parts = r.get("host_step_parts_ns_per_pixel_step", {})
            brk = " ".join(f"{k} {parts[k]:.0f}" for k in PARTS if k in parts)
            own = r.get("host_own_ns_per_pixel_step", float("nan"))
            print(
                f"{s:>6} {name[-16:]:<16} {r['device_ns_per_pixel_step']:>8.1f} "
                f"{r['host_ns_per_pixel_step']:>8.1f} {r['overhead_ns_per_pixel_step']:>9.1f} "
                f"{own:>7.1f} {r['overhead_cpu_ns_per_pixel_step']:>8.1f} "
                f"{r['host_main_thread_cpu_ns_per_pixel_step']:>8.1f}  {brk}"
            )


if __name__ == "__main__":
    main()
