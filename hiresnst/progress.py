"""Progress display of a render on stderr, with rich: a bar per level (step, loss, rate) and,
over several levels, one for the whole render, whose ETA counts every level's remaining
megapixel-steps. Host-resident levels move their bars tile batch by tile batch."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .logprogress import format_split
from .render import Progress as Step


class RenderProgress:
    """A context manager whose `update` is the render's progress callback."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("[bold]{task.fields[level]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._tasks: dict[int, int] = {}
        self._whole: int | None = None
        self._last: tuple[int, float] | None = None
        self._started = False

    def __enter__(self) -> RenderProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started:  # a render that fails before its first step prints nothing
            self._bar.__exit__(exc_type, exc, tb)

    def update(self, p: Step) -> None:
        if not self._started:
            self._bar.start()
            self._started = True
        label = f"scale {p.level + 1}/{p.levels} {p.size[1]}×{p.size[0]}"
        if p.tiles > 1:
            label += f" ({p.tiles} tiles)"
        if self._whole is None and p.levels > 1 and p.total > 0:
            self._whole = self._bar.add_task("", total=100, level="all scales, %", loss="", rate="")
        if p.level not in self._tasks:
            self._tasks[p.level] = self._bar.add_task(
                "", total=p.steps, level=label, loss="-", rate=""
            )
            self._last = None
        if self._whole is not None:
            self._bar.update(self._whole, completed=100 * p.done / p.total)
        loss = "-" if p.loss != p.loss else f"{p.loss:.4g}"  # NaN before the first step
        task = self._tasks[p.level]
        if p.step_fraction:  # part of a host-resident step: move the bar, keep the rate
            self._bar.update(task, completed=p.step + p.step_fraction, loss=loss)
            return
        rate = ""
        if self._last is not None and p.elapsed > self._last[1]:
            per_step = (p.elapsed - self._last[1]) / max(1, p.step - self._last[0])
            rate = f"{1 / per_step:.2f} it/s, {p.size[0] * p.size[1] / 1e6 / per_step:.3f} MP·it/s"
        if p.times:  # host-resident: the last step's host and device time
            rate = f"{rate}, {format_split(p)}" if rate else format_split(p)
        self._last = (p.step, p.elapsed)
        self._bar.update(task, completed=p.step, loss=loss, rate=rate)
