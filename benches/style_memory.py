"""Peak host memory of a host-resident render with one and two 1024 px styles (issue 16 §1).

Each render runs in its own subprocess (`--state host`, tile 512, one step, random weights, a
narrow VGG19 unless `--widths`), from the shared Tübingen photo to a 4096² PNG (written, as the
CLI writes it), and its peak RSS (`ru_maxrss` at its end, so the file's writing counts) is
reported. The fixed part is the same render at
512² (one tile: the same window and compiled shapes as the large render's tiles) with one
style; the large renders' cost is (peak − fixed) / (4096² − 512²) bytes per output pixel.
`--old` adds the old policy with one style (resized to the level's size: `--style-size 4096`
for this one-level render). Writes benches/results/style-memory-<machine>-<date>.json.

    nice -n 5 python benches/style_memory.py --size 4096 --old
    nice -n 5 python benches/style_memory.py --size 4096 --timing   # style targets' seconds
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The shared sample images: beside the checkout, or the workspace's (for git worktrees).
IMAGES = next(
    (p for p in (ROOT.parent / "shared" / "images", Path("/work/shared/images")) if p.exists()),
    ROOT.parent / "shared" / "images",
)
STYLES = ("starry_night.jpg", "the_scream.jpg")
NARROW = (16, 32, 64, 128, 128)


def child(args: argparse.Namespace) -> dict:
    """One render and its output file; the render's own peak, before the file is written."""
    from hiresnst import RenderConfig, render_with_info
    from hiresnst.imageio import write_image

    cfg = RenderConfig(
        width=args.size,
        height=args.size,
        steps=1,
        weights="random",
        tile=512,
        state="host",
        init="content",  # not `auto`: a feed-forward start would measure Magenta's network
        widths=tuple(int(w) for w in args.widths.split(",")),
        style_size=args.style_size,
    )
    styles = [args.tmp / s for s in STYLES[: args.styles]]
    t0 = time.perf_counter()
    result = render_with_info(IMAGES / "tubingen.jpg", styles, cfg)
    render_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    write_image(args.tmp / f"out-{args.size}.png", result.image, metadata=result.info)
    return {"render_peak_bytes": render_peak, "seconds": round(time.perf_counter() - t0, 1)}


def style_seconds(size: int, widths: str, tmp: Path, rounds: int = 2) -> dict[str, list[float]]:
    """Seconds to make one level's style targets (`render.prepare_level`: a host-resident
    level's Gram sums, tile by tile) with the style at its own 1024 px (new) and resized to
    the level (old), interleaved in one process so that the machine's load hits both alike;
    the first round includes compiling."""
    from hiresnst import RenderConfig
    from hiresnst.render import prepare_level

    out: dict[str, list[float]] = {"new": [], "old": []}
    for _ in range(rounds):
        for name, style_size in (("new", None), ("old", size)):
            cfg = RenderConfig(
                width=size,
                height=size,
                steps=1,
                weights="random",
                tile=512,
                state="host",
                widths=tuple(int(w) for w in widths.split(",")),
                style_size=style_size,
            )
            t0 = time.perf_counter()
            prepare_level(IMAGES / "tubingen.jpg", [tmp / STYLES[0]], cfg)
            out[name].append(round(time.perf_counter() - t0, 1))
    return out


def make_styles(tmp: Path) -> None:
    """The shared styles at a 1024 px long edge (`the_scream` is 1528 px as shared)."""
    from PIL import Image

    for name in STYLES:
        img = Image.open(IMAGES / name).convert("RGB")
        scale = 1024 / max(img.size)
        img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS).save(
            tmp / name, quality=95
        )


def measure(size: int, styles: int, widths: str, tmp: Path, style_size: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--size", str(size), "--styles", str(styles)]
    cmd += ["--widths", widths, "--tmp", str(tmp)]
    cmd += ["--style-size", str(style_size)] if style_size else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{size}² with {styles} style(s) failed: {proc.stderr.strip()[-800:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(size=size, styles=styles, style_size=style_size, peak_rss_bytes=row.pop("peak"))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--fixed", type=int, default=512)
    ap.add_argument("--widths", default=",".join(map(str, NARROW)))
    ap.add_argument("--old", action="store_true", help="also the old policy (styles at --size)")
    ap.add_argument(
        "--timing", action="store_true", help="only time the style targets, new vs old policy"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--styles", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--style-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        row = child(args)
        row["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(row))
        return
    machine = f"{platform.system()}-{platform.machine()}-cpu{os.cpu_count()}".lower()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_styles(tmp)
        if args.timing:
            seconds = style_seconds(args.size, args.widths, tmp)
        else:
            runs = [(args.fixed, 1, None), (args.size, 1, None), (args.size, 2, None)]
            runs += [(args.size, 1, args.size)] if args.old else []
            rows = []
            for s, n, ss in runs:  # each row printed as it comes: the large renders take minutes
                rows.append(measure(s, n, args.widths, tmp, ss))
                print(json.dumps(rows[-1]), flush=True)
    if args.timing:
        report = {"machine": machine, "cpu": _cpu_name(), "weights": "random", "size": args.size}
        report |= {"widths": args.widths, "tile": 512, "style_target_seconds": seconds}
        path = args.out / f"style-seconds-{machine}-{dt.date.today()}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"style targets at {args.size}², random weights, widths {args.widths}: {seconds}")
        print(f"wrote {path}")
        return
    fixed = rows[0]["peak_rss_bytes"]
    extra_px = args.size**2 - args.fixed**2
    for r in rows[1:]:
        r["bytes_per_pixel_over_fixed"] = round((r["peak_rss_bytes"] - fixed) / extra_px, 1)
    report = {
        "machine": machine,
        "cpu": _cpu_name(),
        "weights": "random",
        "widths": args.widths,
        "tile": 512,
        "fixed": {"size": args.fixed, "peak_rss_bytes": fixed},
        "results": rows,
    }
    path = args.out / f"style-memory-{machine}-{dt.date.today()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"host-resident, tile 512, 1 step, random weights, widths {args.widths}")
    print(f"{'size':>6} {'styles':>6} {'style px':>8} {'s':>7} {'peak MB':>9} {'B/px':>6}")
    for r in rows:
        policy = r["style_size"] or "≤1024"
        print(
            f"{r['size']:>5}² {r['styles']:>6} {policy:>8} {r['seconds']:>7} "
            f"{r['peak_rss_bytes'] / 2**20:>9.1f} {r.get('bytes_per_pixel_over_fixed', '—'):>6}"
        )
    print(f"wrote {path}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
