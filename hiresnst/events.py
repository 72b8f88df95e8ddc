"""Progress events of a render: what a progress callback (the CLI's display, a series, a
notebook) is told after each optimiser step, and on host-resident levels within one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """One optimiser step (or, on host-resident levels, part of one: `step_fraction` of step
    `step` + 1 is done), reported to the progress callback. `done` and `total` are the whole
    render's work in megapixel-steps (Σ over levels of steps × pixels), for an ETA of all of it.

    `terms` are the loss's parts (content, style, tv, mrf; empty for L-BFGS), `steps_before`
    the optimiser steps of the levels before this one. `image(max_side)` returns the current
    image as uint8 H×W×3 no longer than `max_side` px (see `snapshot.preview`): read by strided
    subsampling of the render's own state, so it is cheap even at a gigapixel level, and only
    valid during the callback (the next step overwrites the state). On device levels it is up
    to one step ahead of `step` (losses are read a step late so the device never waits); on
    host-resident levels, during a step (`step_fraction` > 0), rows are partly updated.
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
    terms: dict[str, float] = field(default_factory=dict)
    steps_before: int = 0
    image: Callable[[int], Any] | None = None
    times: dict[str, float] = field(default_factory=dict)

    @property
    def device_seconds(self) -> float | None:
        return self.times.get("device", 0.0) if self.times else None

    @property
    def host_seconds(self) -> float | None:
        if not self.times:
            return None
        return max(0.0, self.times.get("total", 0.0) - self.times.get("device", 0.0))


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
    steps_before: int = 0  # optimiser steps of the levels before this one
    terms: dict[str, float] = field(default_factory=dict)
    state: Any = None  # the level's current image (device or host array), for `image`
    times: dict[str, float] = field(default_factory=dict)  # the last host step's, by part

    @classmethod
    def for_level(
        cls, plan: Any, index: int, progress: Callable[[Progress], None] | None, t_start: float
    ) -> Reporter:
        """The reporter of level `index` of a `plan.RenderPlan`, with the render's work (in
        megapixel-steps) and optimiser steps before that level, and its whole work."""
        lv = plan.levels[index]
        return cls(
            lv.index,
            len(plan.levels),
            lv.hw,
            lv.steps,
            lv.tiles,
            progress,
            t_start,
            before=sum(plan.work[:index]),
            total=sum(plan.work),
            steps_before=sum(p.steps for p in plan.levels[:index]),
        )

    def __call__(self, step: int, loss: float, terms: dict[str, float] | None = None) -> None:
        self.losses.append(loss)
        self.terms = dict(terms or {})
        self.send(step, 0.0)

    def watch(self, image: Any) -> None:
        """The array that `Progress.image` reads from now on (a runner calls this whenever its
        image array changes: a jitted step donates the old one)."""
        self.state = image

    def image(self, max_side: int) -> Any:
        from .snapshot import preview  # numpy and Pillow only when an image is asked for

        return preview(self.state, max_side)

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
                    dict(self.terms),
                    self.steps_before,
                    None if self.state is None else self.image,
                    dict(self.times),
                )
            )
