#!/usr/bin/env python
"""The README's video preview: a pan and zoom over tubingen.jpg in the style of starry_night.jpg,
rendered with independent frames and with the temporal term (random VGG19 weights, CPU), shown
side by side (input | independent | temporal) in examples/previews/video.gif.

    python examples/make_video_preview.py [--size 160] [--frames 12] [--steps 20]

Runs the `hiresnst video` command itself (the commands are printed) and appends each run's
--json line to examples/previews/video.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMAGES = REPO.parent.parent / "shared" / "images"
if not IMAGES.is_dir():
    IMAGES = Path("/work/shared/images")
OUT = REPO / "examples" / "previews"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    from hiresnst import imageio, video

    hw = (args.size * 3 // 4, args.size)
    clip = video.pan_and_zoom(
        imageio.read_image(IMAGES / "tubingen.jpg"), hw, args.frames, pan=(0.2, 0.08), zoom=1.25
    )
    OUT.mkdir(parents=True, exist_ok=True)
    outs = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pan.mp4"
        video.write_video(src, clip, Fraction(8))
        for mode, extra in (("independent", ["--independent"]), ("temporal", [])):
            frames_dir = Path(tmp) / mode
            cmd = [
                sys.executable, "-m", "hiresnst.cli", "video", str(src),
                str(IMAGES / "starry_night.jpg"), "-o", str(frames_dir), "--size", str(args.size),
                "--steps", str(args.steps), "--weights", "random", "--init", "content",
                "-q", "--json", *extra,
            ]  # fmt: skip
            print(" ".join(cmd[2:]), flush=True)
            line = subprocess.run(
                cmd, check=True, capture_output=True, text=True, cwd=REPO
            ).stdout.strip()
            record = json.loads(line)
            record["preview"] = f"video-{mode}"
            with open(OUT / "video.jsonl", "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
            info = video.probe(frames_dir, Fraction(8))
            outs[mode] = [f for _, f in video.read_frames(info, range(info.frames))]
            print(f"{mode}: flicker {record['flicker']}", flush=True)
    gap = np.ones((hw[0], 4, 3), np.float32)
    panels = [
        np.concatenate([clip[t], gap, outs["independent"][t], gap, outs["temporal"][t]], 1)
        for t in range(args.frames)
    ]
    print(video.write_video(OUT / "video.gif", panels, Fraction(8)))


if __name__ == "__main__":
    main()
