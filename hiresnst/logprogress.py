"""Plain progress lines for renders whose stderr is a file or a pipe (nohup, tmux logs, batch
schedulers), where the rich display would draw nothing until the end.

A line every `every` steps of a level, at each level's end, and whenever `interval` seconds
have passed without one (so a host-resident level whose steps take minutes still logs, from
its tile-batch progress). The rate and ETAs come from `Estimator`, shared with the live page.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

#: A line at least this often (seconds), whatever the step cadence.
LOG_INTERVAL = 60.0


@dataclass
class Estimate:
    """Speed and time left, from the current level's progress so far."""

    mp_rate: float | None  # megapixel-steps per second at this level
    eta_level: float | None  # seconds
    eta_render: float | None  # seconds
    percent: float  # of the whole render's megapixel-steps


class Estimator:
    """Rate over the current level (from its first report: compilation and the level's setup
    are not counted), and ETAs: the level's remaining steps, and the whole render's remaining
    megapixel-steps, at that rate."""

    def __init__(self) -> None:
        self._level: int | None = None
        self._start: tuple[float, float] = (0.0, 0.0)  # (steps, elapsed) at the first report

    def update(self, p: Any) -> Estimate:
        at = p.step + p.step_fraction
        if p.level != self._level:
            self._level = p.level
            self._start = (at, p.elapsed)
        steps, t = at - self._start[0], p.elapsed - self._start[1]
        percent = 100.0 * p.done / p.total if p.total else 100.0 * at / max(1, p.steps)
        if steps <= 0 or t <= 0:
            return Estimate(None, None, None, percent)
        per_step = t / steps
        mp = p.size[0] * p.size[1] / 1e6
        rate = mp / per_step
        eta_level = (p.steps - at) * per_step
        eta_render = (p.total - p.done) / rate if p.total else eta_level
        return Estimate(rate, eta_level, max(eta_render, eta_level), percent)


def format_seconds(s: float | None) -> str:
    """1:02:03, 2:03 or 0:05; '?' before a rate is known."""
    if s is None:
        return "?"
    s = max(0, round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def format_split(p: Any) -> str:
    """A host-resident step's wall time split into the host's own work and the time it waited
    for the device: 'step 2.31s (host 0.47s device 1.84s)'. Host time that is large against the
    device's means the device idles (gathers, transfers and Adam are not hidden)."""
    total = p.times.get("total", 0.0)
    return f"step {total:.2f}s (host {p.host_seconds:.2f}s device {p.device_seconds:.2f}s)"


def format_line(p: Any, est: Estimate) -> str:
    """One progress line: where the render is, its loss and terms, speed and time left."""
    step = f"{p.step + p.step_fraction:.2f}" if p.step_fraction else str(p.step)
    parts = [
        f"level {p.level + 1}/{p.levels} {p.size[1]}x{p.size[0]}",
        f"step {step}/{p.steps}",
        "loss -" if p.loss != p.loss else f"loss {p.loss:.4g}",
    ]
    if p.terms:
        parts.append("(" + " ".join(f"{k} {v:.3g}" for k, v in sorted(p.terms.items())) + ")")
    parts.append("- MP·it/s" if est.mp_rate is None else f"{est.mp_rate:.3g} MP·it/s")
    if p.times:  # a host-resident level: where its last step's time went
        parts.append(format_split(p))
    parts.append(f"ETA level {format_seconds(est.eta_level)}")
    if p.levels > 1:
        parts.append(f"render {format_seconds(est.eta_render)} ({est.percent:.1f}%)")
    return "hiresnst: " + " ".join(parts)


class LineLog:
    """A progress callback that prints `format_line` lines to `stream`, flushed at once."""

    def __init__(
        self,
        every: int = 50,
        interval: float = LOG_INTERVAL,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.interval = interval
        self.stream = stream
        self._clock = clock
        self._estimator = Estimator()
        self._last = clock()
        self._printed: set[tuple[int, int]] = set()

    def __call__(self, p: Any) -> None:
        est = self._estimator.update(p)
        now = self._clock()
        whole = not p.step_fraction
        key = (p.level, p.step)
        on_cadence = whole and (
            p.step == p.steps or (self.every > 0 and p.step > 0 and p.step % self.every == 0)
        )
        if (on_cadence and key not in self._printed) or now - self._last >= self.interval:
            if whole:
                self._printed.add(key)
            stream = self.stream or sys.stderr
            stream.write(format_line(p, est) + "\n")
            stream.flush()
            self._last = now
