"""Progress events of a render: what a progress callback (the CLI's display, a series, a
notebook) is told after each optimiser step, and on host-resident levels within one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """One optimiser step (or, on host-resident levels, part of one: `step_fraction` of step
    `step` + 1 is done), reported to the progress callback. `done` and `total` are the whole
    render's work in megapixel-steps (Σ over levels of steps × pixels), for an ETA of all of it.
    """

    level: int
    levels: int
    size: tuple[int, int]
    step: int
    steps: int
    loss: float
    tiles: int
    elapsed: float
    done: float = 0.0
    total: float = 0.0
    step_fraction: float = 0.0


@dataclass
class Reporter:
    """Records a level's losses and forwards each step (and, on host-resident levels, each
    tile batch within a step) to the progress callback."""

    level: int
    levels: int
    hw: tuple[int, int]
    steps: int
    tiles: int
    progress: Callable[[Progress], None] | None
    t_start: float
    before: float = 0.0  # megapixel-steps of the levels before this one
    total: float = 0.0  # megapixel-steps of the whole render
    losses: list[float] = field(default_factory=list)

    def __call__(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        self.send(step, 0.0)

    def send(self, step: int, fraction: float) -> None:
        """Step `step` + 1 is `fraction` done."""
        if self.progress:
            mp = self.hw[0] * self.hw[1] / 1e6
            self.progress(
                Progress(
                    self.level,
                    self.levels,
                    self.hw,
                    step,
                    self.steps,
                    self.losses[-1] if self.losses else float("nan"),
                    self.tiles,
                    time.perf_counter() - self.t_start,
                    self.before + (step + fraction) * mp,
                    self.total,
                    fraction,
                )
            )
