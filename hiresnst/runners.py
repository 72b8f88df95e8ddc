"""One level of a render, run by one of two runners behind one interface.

`DeviceRunner` keeps the image and the optimiser state on the device(s) and runs jitted steps
(tiled or not, sharded or not). `HostRunner` keeps them in host memory or memory-mapped files
and streams tile windows to the device (`streaming.py`). Both take a `LevelState` and return
one, report progress the same way, checkpoint the same named arrays, and answer SIGTERM at the
next step: the render loop (`render.render_with_info`) does not know which one it runs.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import masks, pyramid
from .checkpoint import Checkpointer, Preempted, Saved
from .config import RenderConfig
from .events import Reporter
from .inputs import Inputs
from .objective import (
    LossSpec,
    TiledPlan,
    blend_style_targets,
    content_target_jit,
    content_values,
    layer_counts,
    make_lagged_fn,
    make_loss_fn,
    make_plan,
    mrf_target,
    style_target_jit,
    tiled_style_grams_jit,
)
from .optimize import (
    carry_adam,
    init_state,
    level_result,
    make_optimizer,
    make_step,
    opt_arrays,
    restore_opt,
)
from .plan import LevelPlan
from .sharding import host_array, host_scalar, replicate
from .streaming import HostState, StepTimes, host_adam_step, host_grams


@dataclass(frozen=True)
class LevelState:
    """Where one level stands: its image and optimiser state (device arrays or host arrays,
    as the runner keeps them), the step reached, the RNG key and the losses so far; with
    `--gram lagged` on a tiled level, the last step's whole-image style Grams (None before
    the first step, which makes them with one extra pass)."""

    image: Any
    opt: Any
    step: int
    key: jax.Array
    losses: tuple[float, ...] = ()
    grams: Any = None


@dataclass
class Level:
    """What a runner needs besides the state: the level's plan, the shared render context and
    the hooks for progress, checkpoints and stopping."""

    plan: LevelPlan
    params: Any
    spec: LossSpec
    config: RenderConfig
    inputs: Inputs
    mesh: Mesh | None
    report: Reporter
    ckpt: Checkpointer | None
    stop: threading.Event
    records: list[dict]
    #: Video: (previous frame warped into this one, reliability) at the output size, for the
    #: temporal loss (`spec.temporal_weight`); device-resident levels only.
    temporal: tuple[np.ndarray, np.ndarray] | None = None

    def check_in(self, state: LevelState, arrays: Callable[[], dict[str, Any]]) -> None:
        """After a step: checkpoint when one is due, and on SIGTERM stop (with a checkpoint
        when there is somewhere to save one)."""
        stopping = self.stop.is_set()
        if self.ckpt is None:
            if stopping:
                raise Preempted(None)
            return
        if stopping or self.ckpt.due():
            path = self.save(state, arrays())
            if stopping:
                raise Preempted(path)

    def save(self, state: LevelState, arrays: dict[str, Any]) -> Path:
        assert self.ckpt is not None
        return self.ckpt.save(
            self.plan.index,
            state.step,
            arrays,
            state.key,
            self.records,
            list(state.losses),
        )


class Runner(Protocol):
    """Runs one level: `start` makes its state from a start image (any size) or a checkpoint,
    `run` takes it to the level's last step, `image` is its result for the next level."""

    def start(
        self, image: Any, key: jax.Array, saved: Saved | None, carry: Any = None
    ) -> LevelState: ...

    def run(self, state: LevelState) -> LevelState: ...

    def arrays(self, state: LevelState) -> dict[str, Any]: ...

    def image(self, state: LevelState) -> Any: ...

    def handover(self, state: LevelState) -> Any:
        """What the next level's `start` gets as `carry`: the optimiser state with
        `--handover carry`, else None."""
        ...

    def close(self) -> None: ...


def make_runner(level: Level) -> Runner:
    return HostRunner(level) if level.plan.host else DeviceRunner(level)


def _tiled(
    level: Level,
    hw: tuple[int, int],
    mesh: Mesh | None,
    overlap: int | None = None,
    style: bool = False,
) -> TiledPlan | None:
    """The plan's tiling at size `hw` (a style's, with the exact halo, unless `overlap`; a
    style is never wrapped, `LossSpec.for_style_image`)."""
    lp = level.plan
    if not lp.tile:
        return None
    spec = level.spec.for_style_image() if style else level.spec
    return make_plan(*hw, spec, lp.tile, overlap, lp.batch, mesh)


@functools.lru_cache(maxsize=8)
def level_step(
    spec: LossSpec,
    tplan: TiledPlan | None,
    optimizer: str,
    learning_rate: float,
    warmup: int,
    average: float = 0.0,
    lagged: bool = False,
) -> tuple[Any, Callable]:
    """A level's optimiser and jitted step, kept for levels of the same shapes and settings:
    a video renders every frame alike, and a fresh step would be traced and compiled again for
    each (seconds, against a fraction of a second for a small frame's steps). `lagged`: the
    one-pass step of a tiled level (`make_step`'s `lagged`)."""
    opt = make_optimizer(optimizer, learning_rate, warmup)
    one_pass = make_lagged_fn(spec, tplan) if lagged and tplan is not None else None
    return opt, make_step(make_loss_fn(spec, tplan), optimizer, opt, average, one_pass)


#: Checkpoint array names of the lagged mode's Grams: `gram_<layer>`.
GRAM_PREFIX = "gram_"


def gram_arrays(grams: dict | None) -> dict[str, Any]:
    """A level state's lagged Grams as checkpoint arrays (none in exact mode)."""
    return {GRAM_PREFIX + n: g for n, g in (grams or {}).items()}


def split_grams(arrays: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the other arrays, the Grams or None) from a checkpoint's arrays."""
    grams = {k[len(GRAM_PREFIX) :]: v for k, v in arrays.items() if k.startswith(GRAM_PREFIX)}
    rest = {k: v for k, v in arrays.items() if not k.startswith(GRAM_PREFIX)}
    return rest, grams or None


def temporal_targets(
    temporal: tuple[np.ndarray, np.ndarray], hw: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """The temporal loss's (warped, reliability) at a level's size (resized when smaller)."""
    warped, weights = temporal
    if tuple(np.shape(weights)) == tuple(hw):
        return jnp.asarray(warped, jnp.float32), jnp.asarray(weights, jnp.float32)
    c = pyramid.resize(np.asarray(weights, np.float32)[..., None], hw)[..., 0]
    return pyramid.resize(np.asarray(warped, np.float32), hw), c


def _resume_losses(saved: Saved | None) -> tuple[float, ...]:
    return tuple(saved.losses) if saved else ()


class DeviceRunner:
    """The image and optimiser state on the device(s); one jitted step.

    The level's content is held as 8 bits (`objective.content_image`, 3 B/px): a tiled level
    makes its content features tile by tile in the step, an untiled one (small by
    construction) keeps them. With Adam (first moment bf16) a tiled level's state is then
    image 12 + moments 18 + content 3 = 33 B/px (`plan.DEVICE_STATE_BYTES`)."""

    def __init__(self, level: Level) -> None:
        self.level = level
        lv, config, spec, mesh = level.plan, level.config, level.spec, level.mesh
        self.tplan = _tiled(level, lv.hw, mesh, config.overlap)
        content = pyramid.resize_into(level.inputs.content, np.empty((*lv.hw, 3), np.uint8))
        self.content = replicate(jnp.asarray(content), mesh)
        self.targets = self._targets()
        self.lagged = config.gram == "lagged" and self.tplan is not None
        self.opt, self.step = level_step(
            spec,
            self.tplan,
            config.optimizer,
            config.learning_rate,
            lv.warmup,
            config.average,
            self.lagged,
        )

    def _targets(self) -> dict:
        level = self.level
        lv, spec, mesh, inputs = level.plan, level.spec, level.mesh, level.inputs
        params = level.params
        blend = _blend(level)
        per_style, style_levels = [], []
        for s, shw in zip(inputs.styles, lv.style_hw, strict=True):
            style_l = replicate(pyramid.resize(s, shw), mesh)
            style_levels.append(style_l)
            s_plan = _tiled(level, shw, mesh, style=True)
            per_style.append(style_target_jit(params, spec, style_l, s_plan))
        content_t = (
            content_target_jit(params, spec, content_values(self.content), None)
            if self.tplan is None
            else self.content
        )
        if spec.masked:
            targets = masks.stack_masked_targets(
                spec,
                per_style,
                inputs.style_masks,
                inputs.content_mask,
                lv.hw,
                blend,
                content_t,
                mesh,
            )
        else:
            targets = {"style": blend_style_targets(per_style, blend), "content": content_t}
        if spec.mrf_layers:
            banks = mrf_target(
                params,
                spec,
                [host_array(s) for s in style_levels],
                blend,
                level.config.mrf_patches,
                lv.tile or None,
            )
            targets["mrf"] = replicate(banks, mesh)
        if level.temporal is not None:
            targets["temporal"] = replicate(temporal_targets(level.temporal, lv.hw), mesh)
        return targets

    def start(
        self, image: Any, key: jax.Array, saved: Saved | None, carry: Any = None
    ) -> LevelState:
        """`carry`: the previous level's optimiser state, whose Adam moments are carried over
        (`--handover carry`), else a fresh state."""
        hw, mesh = self.level.plan.hw, self.level.mesh
        arrays, grams = split_grams(saved.arrays) if saved else ({}, None)
        if saved:
            image = arrays["image"]
        elif tuple(image.shape[:2]) != hw:
            image = pyramid.resize(host_array(image), hw)
        x = replicate(jnp.asarray(image), mesh)
        opt = init_state(self.opt, x, self.level.config.average)
        if saved:
            moments = {k: v for k, v in arrays.items() if k != "image"}
            opt = replicate(restore_opt(opt, moments), mesh)
        elif carry is not None:
            opt = replicate(carry_adam(opt, carry, hw), mesh)
        if grams is not None and self.lagged:
            grams = replicate({n: jnp.asarray(g) for n, g in grams.items()}, mesh)
        step = saved.step if saved else 0
        return LevelState(x, opt, step, key, _resume_losses(saved), grams if self.lagged else None)

    def run(self, state: LevelState) -> LevelState:
        """Jitted steps; each loss is read one step late so the device never waits for the
        host."""
        level, report = self.level, self.level.report
        report.losses[:] = state.losses
        x, opt, pending = state.image, state.opt, None
        # Lagged: the Grams the next step's gradient uses; a level's first step makes them.
        grams = state.grams
        if self.lagged and grams is None and state.step < level.plan.steps:
            grams = tiled_style_grams_jit(level.params, x, self.targets, level.spec, self.tplan)
        lag = (grams,) if self.lagged else ()
        report.watch(x)
        for i in range(state.step, level.plan.steps):
            x, opt, loss, terms, *lag = self.step(level.params, self.targets, x, opt, *lag)
            report.watch(x)  # the previous x was donated to the step
            if pending is not None:
                report(i, *_scalars(*pending))
            pending = loss, terms
            if level.stop.is_set() or (level.ckpt and level.ckpt.due()):
                report(i + 1, *_scalars(*pending))
                pending = None
                now = replace(
                    state,
                    image=x,
                    opt=opt,
                    step=i + 1,
                    losses=tuple(report.losses),
                    grams=lag[0] if lag else None,
                )
                level.check_in(now, lambda now=now: self.arrays(now))
        if pending is not None:
            report(level.plan.steps, *_scalars(*pending))
        return replace(
            state,
            image=x,
            opt=opt,
            step=level.plan.steps,
            losses=tuple(report.losses),
            grams=lag[0] if lag else None,
        )

    def arrays(self, state: LevelState) -> dict[str, Any]:
        return {"image": state.image, **opt_arrays(state.opt), **gram_arrays(state.grams)}

    def image(self, state: LevelState) -> Any:
        """The level's result: the average of its iterates with `--average`, else the last."""
        return level_result(state.image, state.opt)

    def handover(self, state: LevelState) -> Any:
        return state.opt if self.level.config.handover == "carry" else None

    def close(self) -> None:
        pass


class HostRunner:
    """The image and Adam state in host memory (or memory-mapped under --state-dir), tile
    windows streamed to the device, each band of rows updated as soon as its gradient is
    final."""

    def __init__(self, level: Level) -> None:
        self.level = level
        lv, spec, params, config = level.plan, level.spec, level.params, level.config
        self.tplan = _tiled(level, lv.hw, None, config.overlap)
        assert self.tplan is not None, "host-resident levels are tiled"
        inputs, blend = level.inputs, _blend(level)
        per_style, style_levels = [], []
        for s, shw in zip(inputs.styles, lv.style_hw, strict=True):
            style_l = host_resize(s, shw)
            style_levels.append(style_l)
            grid = make_plan(*shw, spec, lv.tile, None, self.tplan.batch).grid
            grams = host_grams(params, spec, grid, self.tplan.batch, style_l)
            counts = layer_counts(spec, *shw)
            per_style.append({n: grams[n] / counts[n] for n in grams})
        if spec.masked:  # the mask pyramids live on the device, at the level's size
            self.targets = masks.stack_masked_targets(
                spec, per_style, inputs.style_masks, inputs.content_mask, lv.hw, blend, {}
            )
        else:
            self.targets = {"style": blend_style_targets(per_style, blend)}
        if spec.mrf_layers:
            self.targets["mrf"] = mrf_target(
                params, spec, style_levels, blend, config.mrf_patches, lv.tile
            )
        del style_levels
        state_dir = config.state_dir
        self.dir = None if state_dir is None else Path(state_dir) / f"level-{lv.index}"
        self.hstate: HostState | None = None

    def start(
        self, image: Any, key: jax.Array, saved: Saved | None, carry: Any = None
    ) -> LevelState:
        """(`carry` is refused before any work on host-resident levels, `plan.py`.) The state:
        the content (8-bit) and the start (any size) or the checkpoint resized
        or copied into it block by block, so that no other full-size array is made (the state
        may be on disk)."""
        hs = HostState.allocate((*self.level.plan.hw, 3), self.dir)
        pyramid.resize_into(self.level.inputs.content, hs.content)
        arrays, grams = split_grams(saved.arrays) if saved else ({}, None)
        if saved:
            hs.restore(arrays)
        else:
            pyramid.resize_into(host_array(image), hs.x)
        self.hstate = hs
        if grams is not None and self.level.config.gram == "lagged":
            grams = {n: jnp.asarray(g) for n, g in grams.items()}
        else:
            grams = None
        step = saved.step if saved else 0
        return LevelState(hs.x, hs, step, key, _resume_losses(saved), grams)

    def run(self, state: LevelState) -> LevelState:
        level, report = self.level, self.level.report
        report.losses[:] = state.losses
        lv, hs = level.plan, state.opt
        report.watch(hs.x)
        lagged = level.config.gram == "lagged"
        grams = state.grams
        for i in range(state.step, lv.steps):
            one_pass = lagged and grams is not None
            times = StepTimes()

            def on_tile(phase: str, done: int, n: int, i: int = i, one: bool = one_pass) -> None:
                report.send(i, _tile_fraction(phase, done, n, one))

            loss, terms, grams = host_adam_step(
                level.params,
                level.spec,
                self.tplan.grid,
                self.tplan.batch,
                self.targets,
                hs,
                level.config.learning_rate,
                lv.warmup,
                on_tile,
                times,
                grams if lagged else None,
            )
            report.times = dict(times.seconds)
            grams = grams if lagged else None
            report(i + 1, *_scalars(loss, terms))
            now = replace(state, step=i + 1, losses=tuple(report.losses), grams=grams)
            level.check_in(now, lambda now=now: self.arrays(now))
        return replace(state, step=lv.steps, losses=tuple(report.losses), grams=grams)

    def arrays(self, state: LevelState) -> dict[str, Any]:
        return {**state.opt.arrays(), **gram_arrays(state.grams)}

    def handover(self, state: LevelState) -> Any:
        return None  # a host level starts a fresh Adam (`--handover carry` is refused)

    def image(self, state: LevelState) -> Any:
        return state.image

    def close(self) -> None:
        """Remove the level's files once only its image is needed (it stays mapped)."""
        if self.hstate is not None:
            self.hstate.unlink_files()


def _scalars(loss: Any, terms: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """A step's loss and its terms as host floats, for the progress report."""
    return host_scalar(loss), {k: host_scalar(v) for k, v in terms.items()}


def _tile_fraction(phase: str, done: int, n: int, one_pass: bool = False) -> float:
    """A host-resident step's progress: pass 1 (forward only) is about a third of its work;
    a one-pass (lagged) step is pass 2 alone."""
    if one_pass:
        return done / n
    return done / n / 3 if phase == "pass 1" else (1 + 2 * done / n) / 3


def _blend(level: Level) -> list[float]:
    blend = level.config.style_blend
    return list(blend) if blend else [1.0] * len(level.inputs.styles)


def host_resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """`pyramid.resize` for host-resident images: on the CPU backend, block by block (no copy
    to an accelerator, no full-size temporaries); an image already at `hw` is used as it is
    (a style at its own size, the default: no second copy)."""
    if tuple(image.shape[:2]) == tuple(hw) and image.dtype == np.float32:
        return image
    return pyramid.resize_into(image, np.empty((*hw, image.shape[2]), np.float32))
