#!/usr/bin/env python
"""Video flicker and speed: independent frames against the temporal term, at equal steps.

    python benches/video.py [--sizes 256,512] [--frames 6,3] [--steps 20,5] [--weights random]
        [--out benches/results]

Two clips per size: a synthetic one (a smooth random texture translating 2s+1 px right and s+1
px down a frame, s = size/64) and a pan and zoom over /work/shared/images/tubingen.jpg
(`video.pan_and_zoom`), both styled after starry_night.jpg. Each clip is rendered three ways
through `video_render.render_video` with the same steps a frame:

* independent: every frame on its own from the content (no warp, no temporal term);
* warp only: frame t starts from frame t−1 warped into it, --temporal-weight 0;
* temporal: warp and the temporal term at the default --temporal-weight.

The flicker is `video.flicker`: mean |out_t − warp(out_{t−1})| over the pixels the input's flow
tracks reliably, and its ratio to the same on the input. Seconds per frame are frames 1… (frame
0 renders alone, with compilation). --weights random (the default) means untrained VGG19: the
figures measure consistency of the optimisation, not the look of a trained network's render.

Results go to <out>/video-<machine>-<date>.json (merged with an existing file of that name, a
case replacing the same case) and a Markdown table of all its cases is printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMAGES = Path(os.environ.get("HIRESNST_SAMPLES", REPO.parent.parent / "shared" / "images"))
if not IMAGES.is_dir():
    IMAGES = Path("/work/shared/images")


def synthetic(size: int, frames: int) -> list[np.ndarray]:
    import cv2

    hw = (size * 3 // 4, size)
    s = max(1, size // 64)
    # the shift scales with the frame and is no multiple of 4: one of VGG19's pooling strides would
    # make independent renders shift with the clip almost exactly (a flatteringly low flicker)
    dx, dy = 2 * s + 1, s + 1
    rng = np.random.default_rng(0)
    big = rng.random((hw[0] + 16 + frames * dy, hw[1] + 16 + frames * dx, 3)).astype(np.float32)
    big = cv2.GaussianBlur(big, (0, 0), 1.5 * s)
    big = (big - big.min()) / (big.max() - big.min())
    return [
        big[8 + t * dy : 8 + t * dy + hw[0], 8 + t * dx : 8 + t * dx + hw[1]] for t in range(frames)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--frames", default="6,3", help="frames per clip, one per size")
    ap.add_argument("--steps", default="20,5", help="steps a frame, one per size")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--clips", default="synthetic,tubingen")
    ap.add_argument("--modes", default="independent,warp,temporal")
    ap.add_argument("--out", default=str(REPO / "benches" / "results"))
    args = ap.parse_args()

    from hiresnst import imageio, video
    from hiresnst.config import RenderConfig
    from hiresnst.runtime import enable_compilation_cache
    from hiresnst.video_render import VideoSettings, render_video

    enable_compilation_cache()
    sizes = [int(v) for v in args.sizes.split(",")]
    n_frames = [int(v) for v in args.frames.split(",")]
    n_steps = [int(v) for v in args.steps.split(",")]
    style = imageio.read_image(IMAGES / "starry_night.jpg")
    tubingen = imageio.read_image(IMAGES / "tubingen.jpg")
    rows = []
    for size, frames, steps in zip(sizes, n_frames, n_steps, strict=True):
        clips = {
            "synthetic": lambda size=size, frames=frames: synthetic(size, frames),
            "tubingen": lambda size=size, frames=frames: video.pan_and_zoom(
                tubingen, (size * 3 // 4, size), frames, pan=(0.1, 0.05), zoom=1.1
            ),
        }
        for clip_name in args.clips.split(","):
            clip = clips[clip_name]()
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "clip"
                video.write_video(src, clip, Fraction(12))
                for mode in args.modes.split(","):
                    config = RenderConfig(
                        size=size, steps=steps, weights=args.weights, init="content",
                        **({"temporal_weight": 0.0} if mode == "warp" else {}),
                    )  # fmt: skip
                    work = Path(tmp) / f"work-{mode}"
                    t0 = time.perf_counter()
                    rec = render_video(
                        src, [style], Path(tmp) / f"{mode}.mp4", config,
                        VideoSettings(independent=mode == "independent"),
                        work_dir=work, keep_frames=True,
                    )  # fmt: skip
                    wall = time.perf_counter() - t0
                    manifest = json.loads((work / "manifest.json").read_text())
                    later = [f["seconds"] for f in manifest["frames"][1:]]
                    row = {
                        "size": [rec["size"][0], rec["size"][1]],
                        "clip": clip_name,
                        "mode": mode,
                        "frames": rec["frames"],
                        "steps": steps,
                        "temporal_weight": config.temporal_weight if mode == "temporal" else 0.0,
                        "weights": args.weights,
                        "flicker_output": rec["flicker"]["output"],
                        "flicker_input": rec["flicker"]["input"],
                        "flicker_ratio": rec["flicker"]["ratio"],
                        "seconds_frame0": manifest["frames"][0]["seconds"],
                        "seconds_per_frame": float(np.mean(later)) if later else None,
                        "seconds_total": round(wall, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    _report(rows, args)


def _report(rows: list[dict], args) -> None:
    import jax

    machine = f"{platform.machine()}-{jax.devices()[0].platform}{os.cpu_count()}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"video-{machine}-{datetime.date.today().isoformat()}.json"
    meta = {
        "machine": machine,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "note": "shared machine (2 CPU cores, other jobs running): times are contended",
        "weights": args.weights,
    }
    if path.exists():  # merge: a case (size, clip, mode) replaces the same case
        new = {(tuple(r["size"]), r["clip"], r["mode"]) for r in rows}
        old = json.loads(path.read_text())["rows"]
        rows = [r for r in old if (tuple(r["size"]), r["clip"], r["mode"]) not in new] + rows
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    base = {(r["size"][0], r["clip"]): r for r in rows if r["mode"] == "independent"}
    print(f"\n{args.weights} weights; {meta['note']}\n")
    print("| size | clip | mode | frames × steps | flicker | ratio to input "
          "| independent ÷ this | s/frame |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get((r["size"][0], r["clip"]))
        gain = f"{b['flicker_output'] / r['flicker_output']:.2f}" if b else "-"
        spf = "-" if r["seconds_per_frame"] is None else f"{r['seconds_per_frame']:.1f}"
        print(
            f"| {r['size'][0]}×{r['size'][1]} | {r['clip']} | {r['mode']} | "
            f"{r['frames']} × {r['steps']} | {r['flicker_output']:.4f} | "
            f"{r['flicker_ratio']:.3f} | {gain} | {spf} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
