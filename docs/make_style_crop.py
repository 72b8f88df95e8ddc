"""The README's style-size comparison: a render of Tübingen in Starry Night (given at `--style-px`)
with the old style policy (the style resized to the output's size: `--style-size SIZE` for this
one-level render) and the new one (the style at its own size), a 100 % crop of each side by
side. RANDOM VGG19 weights (narrow by default), a few steps, CPU.

    python docs/make_style_crop.py --size 2048 --style-px 512   # writes docs/style-size-crop.jpg
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
#: The shared sample images: beside the checkout, or the workspace's (for git worktrees).
IMAGES = next(
    (p for p in (ROOT.parent / "shared" / "images", Path("/work/shared/images")) if p.exists()),
    ROOT.parent / "shared" / "images",
)


def render(
    style: np.ndarray, size: int, steps: int, widths: tuple[int, ...], style_size: int | None
) -> tuple:
    from hiresnst import RenderConfig, render_with_info

    cfg = RenderConfig(
        size=size,
        steps=steps,
        weights="random",
        init="content",
        widths=widths,
        style_size=style_size,
    )
    t0 = time.perf_counter()
    result = render_with_info(IMAGES / "tubingen.jpg", [style], cfg)
    return result.image, time.perf_counter() - t0, result.info["levels"][-1]["loss_last"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--style-px", type=int, default=512, help="the style's long edge as given")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--widths", default="16,32,64,128,128")
    ap.add_argument("--crop", type=int, default=448, help="side of each 100 % crop in px")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "style-size-crop.jpg")
    args = ap.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    img = Image.open(IMAGES / "starry_night.jpg").convert("RGB")
    k = args.style_px / max(img.size)
    img = img.resize((round(img.width * k), round(img.height * k)), Image.LANCZOS)
    style = np.asarray(img, np.float32) / 255
    runs = {}
    for name, style_size in (("old", args.size), ("new", None)):
        image, seconds, loss = render(style, args.size, args.steps, widths, style_size)
        runs[name] = (image, seconds, loss)
        print(json.dumps({"policy": name, "seconds": round(seconds, 1), "loss": loss}))
    h, w = runs["new"][0].shape[:2]
    c = args.crop
    y0, x0 = int(h * 0.30), int(w * 0.45)  # rooftops and sky: edges and flat areas
    gap, label = 8, 22
    sheet = Image.new("RGB", (2 * c + gap, c + label), "white")
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(("old", "new")):
        crop = np.clip(runs[name][0][y0 : y0 + c, x0 : x0 + c], 0, 1)
        sheet.paste(Image.fromarray(np.rint(crop * 255).astype(np.uint8)), (i * (c + gap), label))
        text = (
            f"old: style resized to {args.size} px"
            if name == "old"
            else f"new: style at its own {args.style_px} px"
        )
        draw.text((i * (c + gap) + 4, 5), text, fill="black")
    sheet.save(args.out, quality=88)
    print(
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KB): {args.size} px render of a "
        f"{args.style_px} px style, {args.steps} steps, widths {args.widths}, random weights"
    )


if __name__ == "__main__":
    main()
