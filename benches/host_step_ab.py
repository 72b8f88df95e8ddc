"""One host-resident step's wall, process CPU and render-thread CPU time, in process (issue 16 §3):
a quick A/B of two checkouts' `streaming.host_adam_step` (run it with each on PYTHONPATH, in
turn), without the render around it. Random weights, widths 4 per block, tile 512; the first
step (compilation) is left out.

    PYTHONPATH=/tmp/old python benches/host_step_ab.py 2048 before
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from hiresnst import RenderConfig, streaming
from hiresnst.render import prepare_level


def main() -> None:
    size, label = int(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(0)
    content = rng.random((256, 256, 3)).astype(np.float32)
    style = rng.random((256, 256, 3)).astype(np.float32)
    cfg = RenderConfig(
        size=size,
        steps=3,
        scales=1,
        weights="random",
        widths=(4, 4, 4, 4, 4),
        tile=512,
        state="host",
        style_scale=256 / size,
        init="content",
    )
    runner = prepare_level(content, [style], cfg)
    hs = runner.start(content, jax.random.PRNGKey(0), None).opt
    lv = runner.level

    def step() -> tuple[float, float, float]:
        t = streaming.StepTimes()
        c0, m0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        grid, batch = runner.tplan.grid, runner.tplan.batch
        streaming.host_adam_step(
            lv.params, lv.spec, grid, batch, runner.targets, hs, 0.01, 0, None, t
        )
        return time.process_time() - c0, time.thread_time() - m0, time.perf_counter() - w0

    step()
    for _ in range(3):
        cpu, main_cpu, wall = step()
        print(f"{label} cpu {cpu:.3f} main {main_cpu:.3f} wall {wall:.3f}")


if __name__ == "__main__":
    main()
