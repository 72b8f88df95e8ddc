#!/usr/bin/env python
"""Throughput of one Gatys Adam step: hiresnst (JAX) against the same objective in PyTorch eager.

    python benches/throughput.py [--sizes 256,512,1024] [--precision fp32,bf16] [--steps N]
        [--warmup N] [--tile T] [--out benches/results] [--no-torch]

Each (framework, size, precision) case runs in its own subprocess, so that peak memory and
compile times are per case and JAX never holds the GPU while PyTorch runs. A case builds the
random-weight VGG19 objective of the default `RenderConfig` (content = style = seeded random
images), times `make_step`'s jitted Adam step after warm-up (`jax.block_until_ready` after
every step; the median is reported) and reports MP·it/s, achieved TFLOP/s and MFU from
`hiresnst.flops`, peak memory and the compile time (the first call, minus one step).

The PyTorch baseline (when torch is importable and not --no-torch) is the same objective built
by hand in plain torch.nn with torchvision's VGG19 layout, the same weights (HWIO → OIHW), the
same loss normalisation as `hiresnst.losses` and `torch.optim.Adam` on the image. bf16 there is
`torch.autocast` over the network with Grams and losses in fp32, as hiresnst accumulates them.

Results go to <out>/<machine>-<YYYY-MM-DD>.json (merged with an existing file of that name,
a case replacing the same case) and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "@@RESULT "
WIDTHS = {"full": (64, 128, 256, 512, 512), "narrow": (4, 8, 8, 16, 16)}
# Dense peak TFLOP/s by device kind (first matching substring wins). fp32 is the non-tensor-core
# peak; tf32 is what XLA and cuDNN use by default for fp32 convolutions on these GPUs.
PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.2, "tf32": 378.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0, "tf32": 494.7}),
    ("H200", {"bf16": 989.0, "fp32": 67.0, "tf32": 494.7}),
    ("A100", {"bf16": 312.0, "fp32": 19.5, "tf32": 156.0}),
)


# ------------------------------------------------------------------------------- shared


def parse_widths(text: str) -> tuple[int, ...]:
    if text in WIDTHS:
        return WIDTHS[text]
    widths = tuple(int(w) for w in text.split(","))
    if len(widths) != 5:
        raise SystemExit(f"--widths needs 5 comma-separated channel counts, got {text!r}")
    return widths


def make_images(size: int, seed: int):
    """Seeded smooth random content and style images (size, size, 3) in [0, 1]."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def one(cell: int):
        n = -(-size // cell) + 1
        low = rng.random((n, n, 3), dtype=np.float32)
        img = np.repeat(np.repeat(low, cell, 0), cell, 1)[:size, :size]
        img = img + 0.1 * rng.standard_normal((size, size, 3), dtype=np.float32)
        return np.clip(img, 0.0, 1.0)

    return one(max(1, size // 16)), one(max(1, size // 64))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def render_config(case: dict):
    from hiresnst.config import RenderConfig

    return RenderConfig(size=case["size"], precision=case["precision"], widths=case["widths"])


def flop_count(case: dict, spec, plan) -> dict[str, int]:
    from hiresnst.flops import step_flops, tiled_step_flops
    from hiresnst.model import deepest

    size, last = case["size"], deepest(spec.outputs)
    if plan is None:
        return step_flops(size, size, spec.widths, last, spec.style_layers)
    g = plan.grid
    return tiled_step_flops(
        size, size, spec.widths, last, spec.style_layers, g.tile, g.halo, plan.batch
    )


def timed_loop(step, sync, warmup: int, steps: int) -> tuple[float, list[float]]:
    """(first call seconds, per-step seconds); `step()` runs one step, `sync(out)` waits."""
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    return first, times


def summary(size: int, firsts: list[float], times: list[float], flops: int) -> dict:
    """Timing figures from the first calls and the timed steps of one or more rounds."""
    median = statistics.median(times)
    return {
        "step_s": median,
        "step_s_mean": statistics.fmean(times),
        "step_s_min": min(times),
        "first_call_s": firsts[0],
        "compile_s": max(0.0, firsts[0] - median),
        "mp_it_s": size**2 / 1e6 / median,
        "mp_it_s_best": size**2 / 1e6 / min(times),
        "tflops": flops / median / 1e12,
    }


# ------------------------------------------------------------------------------- JAX case


def jax_case(case: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from hiresnst.model import random_params
    from hiresnst.objective import content_target, make_loss_fn, make_plan, style_target
    from hiresnst.optimize import make_optimizer, make_step
    from hiresnst.runtime import enable_compilation_cache

    cache = None if case["no_cache"] else str(enable_compilation_cache())
    config = render_config(case)
    spec = config.loss_spec(tuple(case["widths"]))
    size = case["size"]
    plan = (
        make_plan(size, size, spec, case["tile"], None, case["tile_batch"])
        if case["tile"]
        else None
    )
    params = random_params(case["seed"], spec.widths)
    content, style = (jnp.asarray(a) for a in make_images(size, case["seed"]))
    targets = {
        "style": jax.jit(lambda p, s: style_target(p, spec, s, plan))(params, style),
        "content": jax.jit(lambda p, c: content_target(p, spec, c, plan))(params, content),
    }
    loss_fn = make_loss_fn(spec, plan)
    probe = 0.5 * (content + style)
    probe_loss, probe_terms = jax.jit(loss_fn)(params, probe, targets)

    opt = make_optimizer("adam", config.learning_rate)
    step = make_step(loss_fn, "adam", opt)
    state = {"x": jnp.array(content), "opt": None}
    state["opt"] = opt.init(state["x"])
    losses: list[float] = []

    def one_step():
        state["x"], state["opt"], loss, _ = step(params, targets, state["x"], state["opt"])
        return loss

    def sync(loss):
        jax.block_until_ready((state["x"], loss))
        losses.append(float(loss))

    events: dict[str, float] = {}

    def on_event(event: str, **_) -> None:
        events[event] = events.get(event, 0.0) + 1

    def on_duration(event: str, duration_secs: float, **_) -> None:
        events[event] = events.get(event, 0.0) + duration_secs

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    first, times = timed_loop(one_step, sync, case["warmup"], case["steps"])
    device = jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        memory, source = int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    else:
        memory, source = peak_rss_bytes(), "process peak RSS"
    out = {"first_call_s": first, "times": times}
    out.update(
        flops=flop_count(case, spec, plan),
        peak_memory_bytes=memory,
        memory_source=source,
        loss_initial=losses[0],
        loss_final=losses[-1],
        probe_loss=float(probe_loss),
        probe_terms={k: float(v) for k, v in probe_terms.items()},
        finite=bool(np.isfinite(losses).all()),
        tiles=None if plan is None else plan.grid.count,
        compilation_cache=cache,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        compile_events={
            "cache_hit": events.get("/jax/compilation_cache/cache_hits", 0) > 0,
            "compile_time_saved_s": events.get("/jax/compilation_cache/compile_time_saved_sec"),
            "trace_s": events.get("/jax/core/compile/jaxpr_trace_duration"),
            "lower_s": events.get("/jax/core/compile/jaxpr_to_mlir_module_duration"),
            "backend_compile_s": events.get("/jax/core/compile/backend_compile_duration"),
        },
        device={
            "platform": device.platform,
            "kind": device.device_kind,
            "count": jax.device_count(),
        },
        versions={"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib")},
    )
    return out


# ------------------------------------------------------------------------------- PyTorch case


def torch_case(case: dict) -> dict:
    import numpy as np
    import torch

    from hiresnst.model import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        conv_width,
        deepest,
        layers_up_to,
        random_params,
    )

    config = render_config(case)
    spec = config.loss_spec(tuple(case["widths"]))
    size = case["size"]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = case["precision"] == "bf16"
    torch.backends.cudnn.benchmark = True
    layout = torch.channels_last if case["torch_channels_last"] else torch.contiguous_format
    weights = random_params(case["seed"], spec.widths)

    class VGG19(torch.nn.Module):
        """torchvision's `vgg19().features` layout (conv, ReLU, …, pool), cut after `last`."""

        def __init__(self, last: str, pooling: str):
            super().__init__()
            layers: list[torch.nn.Module] = []
            self.taps: dict[int, str] = {}
            cin = 3
            for name in layers_up_to(last):
                if name.startswith("pool"):
                    pool = torch.nn.AvgPool2d if pooling == "avg" else torch.nn.MaxPool2d
                    layers.append(pool(2, 2))
                    continue
                cout = conv_width(name, spec.widths)
                conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
                kernel = np.asarray(weights[name]["kernel"]).transpose(3, 2, 0, 1)
                conv.weight.data.copy_(torch.from_numpy(kernel.copy()))
                conv.bias.data.copy_(torch.from_numpy(np.array(weights[name]["bias"])))
                layers += [conv, torch.nn.ReLU(inplace=True)]
                self.taps[len(layers) - 1] = name
                cin = cout
            self.features = torch.nn.Sequential(*layers)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = ((x - self.mean) / self.std).contiguous(memory_format=layout)
            out = {}
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in self.taps:
                    out[self.taps[i]] = h
            return out

    net = VGG19(deepest(spec.outputs), spec.pooling).to(dev).to(memory_format=layout)
    net.requires_grad_(False)
    style_w = spec.style_weights()

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return {k: v.float() for k, v in net(x).items()}

    def gram(f: torch.Tensor) -> torch.Tensor:
        f = f[0].flatten(1)  # (C, N)
        return f @ f.t() / f.shape[1]

    def to_torch(a) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(dev)

    content, style = (to_torch(a) for a in make_images(size, case["seed"]))
    with torch.no_grad():
        fs = features(style)
        style_t = {n: gram(fs[n]) for n in style_w}
        fc = features(content)
        content_t = {n: fc[n] for n, _ in spec.content_layers}
        del fs, fc

    def objective(x: torch.Tensor) -> torch.Tensor:
        f = features(x)
        style_l = sum(
            w * ((gram(f[n]) - style_t[n]) ** 2).sum() / f[n].shape[1] ** 2
            for n, w in style_w.items()
        )
        content_l = spec.content_weight * sum(
            w * ((f[n] - content_t[n]) ** 2).sum() / f[n].numel() for n, w in spec.content_layers
        )
        tv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum() + ((x[..., 1:] - x[..., :-1]) ** 2).sum()
        return content_l + style_l + spec.tv_weight * tv / (size * size * 3)

    with torch.no_grad():
        probe_loss = float(objective(0.5 * (content + style)))

    x = content.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.learning_rate)
    losses: list[float] = []

    def one_step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = objective(x)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        return loss.detach()

    def sync(loss: torch.Tensor) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        losses.append(float(loss))

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first, times = timed_loop(one_step, sync, case["warmup"], case["steps"])
    if dev.type == "cuda":
        memory, source = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        memory, source = peak_rss_bytes(), "process peak RSS"
    out = {"first_call_s": first, "times": times}
    out.update(
        flops=flop_count(case, spec, None),
        peak_memory_bytes=int(memory),
        memory_source=source,
        loss_initial=losses[0],
        loss_final=losses[-1],
        probe_loss=probe_loss,
        finite=bool(np.isfinite(losses).all()),
        channels_last=case["torch_channels_last"],
        torch_threads=torch.get_num_threads(),
        device={
            "platform": dev.type,
            "kind": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        },
        versions={"torch": torch.__version__},
    )
    return out


# ------------------------------------------------------------------------------- driver


def run_case(case: dict, timeout: float) -> dict:
    env = dict(os.environ)
    if case["framework"].startswith("torch"):
        env["JAX_PLATFORMS"] = "cpu"  # JAX only draws the weights there: keep it off the GPU
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case)]
    row = {k: case[k] for k in ("framework", "size", "precision", "tile", "steps", "warmup")}
    row["widths"] = list(case["widths"])
    row["loadavg_before"] = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout:.0f} s"}
    row["loadavg_after"] = os.getloadavg()[0]
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return {**row, **json.loads(line[len(MARKER) :])}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {**row, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def combine(runs: list[dict]) -> dict:
    """One result row from a case's rounds: step times pooled, the first round's first call."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    skip = ("times", "first_call_s", "loadavg_before", "loadavg_after")
    row = {k: v for k, v in good[0].items() if k not in skip}
    times = [t for r in good for t in r["times"]]
    firsts = [r["first_call_s"] for r in good]
    row.update(summary(row["size"], firsts, times, row["flops"]["total"]))
    row.update(
        rounds=len(good),
        flops_per_step=row["flops"]["total"],
        first_call_s_rounds=firsts,
        step_times_s=times,
        peak_memory_bytes=max(r["peak_memory_bytes"] for r in good),
        loadavg_1m=[(r["loadavg_before"], r["loadavg_after"]) for r in good],
    )
    return row


def peaks_for(kind: str, override: float | None) -> dict[str, float | None]:
    if override is not None:
        return {"bf16": override, "fp32": override, "tf32": override}
    for key, peaks in PEAKS:
        if key.lower() in kind.lower():
            return dict(peaks)
    return {"bf16": None, "fp32": None, "tf32": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: dict) -> str:
    name = f"{device.get('platform', 'unknown')}-{device.get('kind', 'unknown')}"
    if device.get("platform") == "cpu":
        name = f"cpu-{cpu_model()}-{os.cpu_count()}core"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def case_key(r: dict) -> tuple:
    return (r["framework"], r["size"], r["precision"], r.get("tile") or 0, tuple(r["widths"]))


def add_mfu(rows: list[dict], peaks: dict[str, float | None]) -> None:
    for r in rows:
        if "tflops" not in r:
            continue
        peak = peaks.get(r["precision"])
        r["peak_tflops"] = peak
        r["mfu"] = r["tflops"] / peak if peak else None
        if r["precision"] == "fp32" and peaks.get("tf32"):
            r["mfu_tf32"] = r["tflops"] / peaks["tf32"]


def comparisons(rows: list[dict]) -> list[dict]:
    """JAX/PyTorch speed and loss agreement per case, and bf16 vs fp32 losses per size."""
    ok = {case_key(r): r for r in rows if "step_s" in r}
    out = []
    for key, r in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        fw, size, prec, tile, widths = key
        if fw != "jax":
            continue
        baselines = [
            t
            for k, t in ok.items()
            if k[0].startswith("torch") and k[1:] == (size, prec, 0, widths)
        ]
        if baselines:
            t = min(baselines, key=lambda t: t["step_s"])  # the fastest PyTorch layout
            out.append(
                {
                    "kind": "jax_vs_torch",
                    "size": size,
                    "precision": prec,
                    "tile": tile,
                    "torch": t["framework"],
                    "speed_ratio": t["step_s"] / r["step_s"],
                    "speed_ratio_best": t["step_s_min"] / r["step_s_min"],
                    "probe_loss_rel_diff": abs(r["probe_loss"] - t["probe_loss"])
                    / abs(t["probe_loss"]),
                }
            )
        f = ok.get(("jax", size, "fp32", tile, widths))
        if prec == "bf16" and f is not None:
            out.append(
                {
                    "kind": "bf16_vs_fp32",
                    "size": size,
                    "tile": tile,
                    "probe_loss_rel_diff": abs(r["probe_loss"] - f["probe_loss"])
                    / abs(f["probe_loss"]),
                    "initial_loss_rel_diff": abs(r["loss_initial"] - f["loss_initial"])
                    / abs(f["loss_initial"]),
                    "speed_ratio": f["step_s"] / r["step_s"],
                }
            )
    return out


def fmt(value, spec: str, none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def table(rows: list[dict], comps: list[dict]) -> str:
    ratio = {
        (c["size"], c["precision"], c["tile"]): (c["speed_ratio"], c["speed_ratio_best"])
        for c in comps
        if c["kind"] == "jax_vs_torch"
    }
    lines = [
        "| framework | size | precision | tile | step median (s) | step best (s) | MP·it/s "
        "| TFLOP/s | MFU | compile (s) | peak mem (MiB) | JAX speed-up (median / best) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], r["precision"], r["framework"])):
        head = f"| {r['framework']} | {r['size']} | {r['precision']} | {r.get('tile') or '-'} "
        if "error" in r:
            lines.append(head + f"| error: {r['error'][:60]} ||||||||")
            continue
        mfu = r.get("mfu")
        rel = (
            ratio.get((r["size"], r["precision"], r.get("tile") or 0))
            if r["framework"] == "jax"
            else None
        )
        hit = " (cached)" if r.get("compile_events", {}).get("cache_hit") else ""
        rel_text = "-" if rel is None else f"×{rel[0]:.2f} / ×{rel[1]:.2f}"
        lines.append(
            head
            + f"| {r['step_s']:.4g} | {r['step_s_min']:.4g} | {r['mp_it_s']:.4g} "
            + f"| {r['tflops']:.3g} "
            + f"| {fmt(None if mfu is None else 100 * mfu, '.1f')}{'' if mfu is None else ' %'} "
            + f"| {r['compile_s']:.3g}{hit} | {r['peak_memory_bytes'] / 2**20:.0f} "
            + f"| {rel_text} |"
        )
    for c in comps:
        if c["kind"] == "bf16_vs_fp32":
            lines.append(
                f"\nbf16 vs fp32 at {c['size']}²: loss rel. diff {c['probe_loss_rel_diff']:.2e} "
                f"(probe image), {c['initial_loss_rel_diff']:.2e} (initial); "
                f"bf16 speed-up ×{c['speed_ratio']:.2f}"
            )
        else:
            lines.append(
                f"\nJAX vs {c['torch']} at {c['size']}² {c['precision']}: ×{c['speed_ratio']:.2f} "
                f"(median step), ×{c['speed_ratio_best']:.2f} (best step); "
                f"loss rel. diff {c['probe_loss_rel_diff']:.2e}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512,1024", help="comma-separated square sizes (px)")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--steps", type=int, default=20, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first call")
    p.add_argument("--tile", type=int, default=0, help="tile size for JAX (0 = untiled)")
    p.add_argument("--tile-batch", type=int, default=1)
    p.add_argument("--widths", default="full", help="full, narrow, or 5 comma-separated widths")
    p.add_argument("--out", type=Path, default=REPO / "benches" / "results")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument(
        "--torch-layouts",
        default="nchw",
        help="PyTorch baseline layouts: nchw (row 'torch'), nhwc (channels_last, 'torch-nhwc')",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (any device)")
    p.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
    p.add_argument("--rounds", type=int, default=1, help="repeat every case, interleaved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        case = json.loads(args.worker)
        fn = jax_case if case["framework"] == "jax" else torch_case
        case["torch_channels_last"] = case["framework"] == "torch-nhwc"
        print(MARKER + json.dumps(fn(case)), flush=True)
        return 0

    precisions = [s.strip() for s in args.precision.split(",") if s.strip()]
    for prec in precisions:
        if prec not in ("fp32", "bf16"):
            raise SystemExit(f"unknown precision {prec!r}; use fp32 and/or bf16")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    frameworks = ["jax"]
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        for layout in args.torch_layouts.split(","):
            if layout.strip() not in ("nchw", "nhwc"):
                raise SystemExit(f"unknown --torch-layouts entry {layout!r}; use nchw, nhwc")
            frameworks.append("torch" if layout.strip() == "nchw" else "torch-nhwc")
    base = {
        "steps": args.steps,
        "warmup": args.warmup,
        "tile": args.tile,
        "tile_batch": args.tile_batch,
        "widths": list(parse_widths(args.widths)),
        "seed": args.seed,
        "no_cache": args.no_cache,
    }
    cases = [
        {**base, "framework": fw, "size": size, "precision": prec}
        | ({"tile": 0} if fw != "jax" else {})
        for size in sizes
        for prec in precisions
        for fw in frameworks
    ]
    runs: dict[int, list[dict]] = {i: [] for i in range(len(cases))}
    for rnd in range(args.rounds):  # interleaved, so that a busy spell hits every case alike
        for i, case in enumerate(cases):
            print(
                f"… round {rnd + 1}/{args.rounds}: {case['framework']} {case['size']}² "
                f"{case['precision']}",
                file=sys.stderr,
                flush=True,
            )
            runs[i].append(run_case(case, args.timeout))
            if "error" in runs[i][-1]:
                print(f"  {runs[i][-1]['error']}", file=sys.stderr, flush=True)
    rows = [combine(runs[i]) for i in range(len(cases))]

    device = next((r["device"] for r in rows if r["framework"] == "jax" and "device" in r), {})
    machine = machine_name(device)
    date = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{machine}-{date}.json"
    merged = (
        {case_key(r): r for r in json.loads(path.read_text())["results"]} if path.exists() else {}
    )
    merged.update({case_key(r): r for r in rows})
    results = sorted(merged.values(), key=lambda r: (r["size"], r["precision"], r["framework"]))
    peaks = peaks_for(device.get("kind", ""), args.peak_tflops)
    add_mfu(results, peaks)
    comps = comparisons(results)
    versions: dict[str, str] = {}
    for r in results:
        versions.update(r.get("versions", {}))
    report = {
        "machine": machine,
        "date": date,
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
        },
        "device": device,
        "versions": versions,
        "peak_tflops": peaks,
        "flops_formula": "per conv: 2·9·Cin·Cout·H·W forward, as much again for the input "
        "gradient; per style layer: 2·C²·N Gram forward + 2·C²·N backward",
        "results": results,
        "comparisons": comps,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    print(table(results, comps))
    print(f"\nwrote {path}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
