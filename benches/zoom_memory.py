"""Peak memory and time of the zoomable outputs (`--zoom dzi`, `--zoom tiff`) of a gigapixel-
class image (issue 19): both must stream, their memory bounded by a few bands of rows.

The source is a synthetic 8-bit image memory-mapped from a file (20000×15000 = 300 MP by
default; a smooth pattern with fine noise, so that JPEG and deflate have realistic work), made
band by band. Each output is written in its own subprocess, which reports its peak RSS (VmHWM,
which also counts the source's file pages it has read) and its peak anonymous memory (RssAnon,
sampled every 20 ms: the writer's own buffers). The TIFF's levels are then read back with
tifffile and spot-checked against the source. Writes benches/results/zoom-memory-<machine>-
<date>.json and prints a table.

    python benches/zoom_memory.py --width 20000 --height 15000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_source(path: Path, h: int, w: int) -> None:
    import numpy as np

    image = np.lib.format.open_memmap(path, "w+", np.uint8, (h, w, 3))
    rng = np.random.default_rng(0)
    x = np.arange(w, dtype=np.float32)
    for r0 in range(0, h, 512):
        y = np.arange(r0, min(h, r0 + 512), dtype=np.float32)[:, None]
        band = np.stack(
            [
                128 + 100 * np.sin(x / 97 + y / 131),
                128 + 100 * np.sin((x + 2 * y) / 413),
                128 + 90 * np.cos(np.hypot(x - w / 2, y - h / 2) / 57),
            ],
            -1,
        )
        band += rng.normal(0, 6, band.shape).astype(np.float32)
        image[r0 : r0 + len(y)] = np.clip(band, 0, 255).astype(np.uint8)
    image.flush()
    del image


def child(kind: str, source: Path, out_dir: Path) -> dict:
    import numpy as np

    from hiresnst import zoom

    peak_anon = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon"))
            time.sleep(0.02)

    src = np.load(source, mmap_mode="r")
    baseline_anon = _status_kb("RssAnon")
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if kind == "dzi":
        dzi, files, _ = zoom.write_dzi(out_dir / "big.png", src)
        size = sum(f.stat().st_size for f in files.rglob("*") if f.is_file())
        count = sum(1 for f in files.rglob("*.jpg"))
        extra = {"tiles": count}
    else:
        path = zoom.write_pyramid_tiff(out_dir / "big.pyramid.tif", src)
        size = path.stat().st_size
        extra = {}
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return {
        "kind": kind,
        "seconds": round(seconds, 1),
        "bytes_written": size,
        "peak_rss_bytes": _status_kb("VmHWM") * 1024,
        "baseline_anon_bytes": baseline_anon * 1024,
        "peak_anon_bytes": peak_anon[0] * 1024,
        **extra,
    }


def check_tiff(path: Path, source: Path) -> list[list[int]]:
    """The levels as tifffile reads them; level 0 and the smallest spot-checked."""
    import numpy as np
    import tifffile

    from hiresnst import zoom

    src = np.load(source, mmap_mode="r")
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        shapes = [list(lv.shape) for lv in levels]
        page = levels[0].keyframe
        tile = page.tilelength
        ys, xs = page.imagelength // 2 // tile * tile, page.imagewidth // 3 // tile * tile
        full = levels[0].asarray(out="memmap")  # decoded into a temporary file, not RAM
        assert np.array_equal(
            full[ys : ys + tile, xs : xs + tile], src[ys : ys + tile, xs : xs + tile]
        )
        del full
        smallest = levels[-1].asarray()
    h, w = smallest.shape[:2]
    assert (h, w) == zoom.tiff_levels(*src.shape[:2])[-1]
    return shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=20000)
    ap.add_argument("--height", type=int, default=15000)
    ap.add_argument("--dir", type=Path, default=None, help="Scratch directory (default: /tmp).")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, source, out = args.child
        print(json.dumps(child(kind, Path(source), Path(out))))
        return
    scratch = Path(tempfile.mkdtemp(prefix="zoom-bench-", dir=args.dir))
    try:
        source = scratch / "source.npy"
        t0 = time.perf_counter()
        make_source(source, args.height, args.width)
        print(f"source {args.width}×{args.height} made in {time.perf_counter() - t0:.0f} s")
        rows = []
        for kind in ("dzi", "tiff"):
            out = scratch / kind
            out.mkdir()
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(source), str(out)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if kind == "tiff":
                rows[-1]["levels"] = check_tiff(out / "big.pyramid.tif", source)
            shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mp = args.width * args.height / 1e6
    print(f"{'kind':6} {'MP':>6} {'s':>7} {'written MB':>11} {'peak RSS MB':>12} {'anon MB':>8}")
    for r in rows:
        print(
            f"{r['kind']:6} {mp:6.0f} {r['seconds']:7.1f} {r['bytes_written'] / 1e6:11.1f} "
            f"{r['peak_rss_bytes'] / 2**20:12.0f} {r['peak_anon_bytes'] / 2**20:8.0f}"
        )
    machine = f"{platform.system().lower()}-{platform.machine()}-cpu{os.cpu_count()}"
    result = {
        "machine": machine,
        "width": args.width,
        "height": args.height,
        "megapixels": round(mp, 1),
        "source": "uint8 .npy memory map, synthetic (sinusoids + noise)",
        "results": rows,
    }
    out_dir = ROOT / "benches" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"zoom-memory-{machine}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
