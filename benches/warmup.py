"""Per-level loss of pyramid renders with and without Adam's step-size warm-up (`--warmup`).

Each level after the first starts Adam afresh from the upsampled previous result. Without a
warm-up, Adam's first updates move every pixel by the full step size, and a fine level given
few steps can end with a higher loss than its start. For each schedule this renders
tubingen × starry_night (`--weights random --init content`) with `--warmup 0` and with the
default, and records each level's first and last loss. Writes
benches/results/warmup-<machine>-<date>.json.

    python benches/warmup.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
#: (long edge, steps per level)
SCHEDULES = [(256, (20, 10, 10)), (256, (40, 40, 40)), (512, (40, 20, 10, 2))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--content", type=Path, default=IMAGES / "tubingen.jpg")
    ap.add_argument("--style", type=Path, default=IMAGES / "starry_night.jpg")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    args = ap.parse_args()

    from hiresnst import RenderConfig, render_with_info

    default = RenderConfig().warmup
    rows = []
    for size, steps in SCHEDULES:
        for warmup in (0, default):
            cfg = RenderConfig(
                size=size,
                scales=len(steps),
                steps=steps,
                weights="random",
                init="content",
                warmup=warmup,
            )
            info = render_with_info(args.content, [args.style], cfg).info
            levels = [[lv["loss_first"], lv["loss_last"]] for lv in info["levels"]]
            rows.append({"size": size, "steps": list(steps), "warmup": warmup, "levels": levels})
            shown = "  ".join(f"{a:8.0f} → {b:8.0f}" for a, b in levels)
            print(f"{size:>5} {','.join(map(str, steps)):>12} warmup {warmup:>2}: {shown}")
    machine = f"{platform.system()}-{platform.machine()}-cpu{os.cpu_count()}".lower()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"warmup-{machine}-{dt.date.today()}.json"
    path.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
