"""The Python API: `render(content, styles, config)` and `make_objective(content, styles, config)`.

The CLI is a thin layer over this module. A render runs the pyramid's levels in turn; at each
level it resizes the content and styles, computes the targets, and runs jitted optimiser steps
on the image, tiled when the level is too large for one pass (or when asked to).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import color, imageio, masks, pyramid
from .checkpoint import (
    Checkpointer,
    CheckpointOptions,
    Preempted,
    array_sha256,
    restore_opt_state,
    stop_on_sigterm,
)
from .config import RenderConfig
from .errors import UserError
from .model import DEFAULT_WIDTHS, LAYERS, widths_of
from .objective import (
    LossSpec,
    TiledPlan,
    _counts,
    blend_style_targets,
    content_target_jit,
    make_loss_fn,
    make_plan,
    mrf_target,
    style_target_jit,
)
from .optimize import Step, make_optimizer, make_step
from .printsize import apply_fit, fit_to_print
from .sharding import host_array, host_scalar, make_mesh, replicate
from .streaming import HostState, host_adam_step, host_grams
from .tiling import round_up
from .weights import resolve_weights

#: Rough device bytes per pixel of an untiled fp32 value-and-grad step of full-width VGG19
#: to conv5_1 (activations kept for the backward pass); used only to pick a default tile.
STEP_BYTES_PER_PIXEL = 3000
#: Device bytes per pixel of the on-device render state: image, gradient, padded copy and Adam
#: moments (first bf16, second fp32), the content image and its conv4_2 targets.
DEVICE_STATE_BYTES = 98
#: Feed-forward renders up to this size run untiled (the transformer is cheap; tiles cost ~10×).
FAST_UNTILED_PIXELS = 16 * 2**20


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
class _Reporter:
    """Records a level's losses and forwards each step (and, on host-resident levels, each
    tile batch within a step) to the progress callback."""

    level: int
    levels: int
    hw: tuple[int, int]
    steps: int
    tiles: int
    losses: list[float]
    progress: Callable[[Progress], None] | None
    t_start: float
    before: float = 0.0  # megapixel-steps of the levels before this one
    total: float = 0.0  # megapixel-steps of the whole render

    def __call__(self, step: int, loss: jax.Array) -> None:
        self.losses.append(host_scalar(loss))
        self._send(step, 0.0)

    def partial(self, step: int, fraction: float) -> None:
        """Step `step` + 1 is `fraction` done."""
        self._send(step, fraction)

    def _send(self, step: int, fraction: float) -> None:
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


@dataclass
class RenderResult:
    image: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


ImageLike = str | os.PathLike | np.ndarray


def _load(image: ImageLike, max_pixels: int | None = imageio.DEFAULT_MAX_PIXELS) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return imageio.read_image(Path(image), max_pixels=max_pixels)
    arr = np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"an image array must be H×W×3, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


@dataclass
class Inputs:
    """The loaded inputs of a render, fitted to the output's framing."""

    original: np.ndarray  # the fitted content before colour changes
    content: np.ndarray  # the content to render
    styles: list[np.ndarray]
    style_masks: list[np.ndarray | None]  # one per style, on the content's framing; None = white
    content_mask: np.ndarray | None


def prepare_inputs(content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig) -> Inputs:
    """Load the images and masks, fit the content (and the masks drawn over it) to an explicit
    output aspect (crop or pad, at the content's own resolution), and apply colour
    preservation."""
    content_img = _load(content, config.max_input_pixels)
    style_imgs = [_load(s, config.max_input_pixels) for s in styles]
    style_masks = masks.load_style_masks(config.style_masks, len(styles), config.max_input_pixels)
    content_mask = (
        None
        if config.content_mask is None
        else masks.load_mask(config.content_mask, config.max_input_pixels)
    )
    for i, m in enumerate(style_masks):
        if m is not None:
            masks.check_mask_aspect(m, content_img.shape[:2], f"the mask of style {i}")
    if content_mask is not None:
        masks.check_mask_aspect(content_mask, content_img.shape[:2], "--content-mask")
    if config.width is not None and config.height is not None:
        ch, cw = content_img.shape[:2]
        k = (max if config.fit == "pad" else min)(ch / config.height, cw / config.width)
        native = (max(1, round(config.width * k)), max(1, round(config.height * k)))
        fit = fit_to_print((ch, cw), native, config.fit)
        content_img = apply_fit(content_img, fit)
        style_masks = [None if m is None else masks.fit_mask(m, fit) for m in style_masks]
        content_mask = None if content_mask is None else masks.fit_mask(content_mask, fit)
    original = content_img
    if config.preserve_colors == "luminance":
        style_imgs = [color.match_luminance(s, content_img) for s in style_imgs]
        content_img = color.to_luminance_rgb(content_img)
    elif config.preserve_colors == "histogram":
        style_imgs = [color.match_color(s, content_img, "histogram") for s in style_imgs]
    return Inputs(original, content_img, style_imgs, style_masks, content_mask)


def device_memory_bytes() -> int:
    """Memory of this process's first device (physical RAM for the CPU)."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes_per_pixel(spec: LossSpec) -> float:
    scale = sum(spec.widths) / sum(DEFAULT_WIDTHS)
    return STEP_BYTES_PER_PIXEL * scale * (0.5 if spec.dtype == "bfloat16" else 1.0)


def choose_plan(
    hw: tuple[int, int],
    spec: LossSpec,
    config: RenderConfig,
    mesh: Mesh | None = None,
    force_tiles: bool = False,
) -> TiledPlan | None:
    """The tiling of one level: none if it fits in half the device memory, else the largest
    tile (a multiple of 256 px) whose batch does. Over several devices, tiles are made small
    enough that every device gets at least one."""
    tile = config.tile
    n_dev = 1 if mesh is None else mesh.devices.size
    if tile is None:
        budget = 0.5 * device_memory_bytes() / _bytes_per_pixel(spec)
        if hw[0] * hw[1] <= budget and n_dev == 1 and not force_tiles:
            return None
        side = math.isqrt(int(budget / config.tile_batch)) - 2 * spec.halo
        tile = min(max(256, side // 256 * 256), round_up(max(hw), 2**spec.levels))
        while n_dev > 1 and tile > 2**spec.levels and _count(hw, tile) < n_dev:
            tile = round_up(tile // 2, 2**spec.levels)
    if tile == 0:
        if force_tiles:
            raise UserError("host-resident state streams tiles: give a --tile size, not 0")
        if n_dev > 1:
            raise UserError("--tile 0 (untiled) runs on one device; use --devices 1 or a tile size")
        return None
    # A tile past the level's edge only adds padding to compute (a 4096 tile at a 512 px level
    # of a gigapixel pyramid would be a 4096² window): no bigger than the level.
    tile = min(tile, round_up(max(hw), 2**spec.levels))
    return make_plan(*hw, spec, tile, config.overlap, config.tile_batch, mesh)


def _count(hw: tuple[int, int], tile: int) -> int:
    return -(-hw[0] // tile) * -(-hw[1] // tile)


def _style_hw(style: np.ndarray, long_edge: int, scale: float) -> tuple[int, int]:
    return pyramid.output_shape(style.shape[:2], max(1, round(long_edge * scale)))


def _check_size(hw: tuple[int, int], what: str, spec: LossSpec) -> None:
    need = 2**spec.levels
    if min(hw) < need:
        raise UserError(
            f"{what} would be {hw[1]}×{hw[0]} px, smaller than the {need} px that "
            f"{max(spec.outputs, key=LAYERS.index)} needs; raise --size or --min-size"
        )


@dataclass
class LevelProblem:
    """Everything one pyramid level optimises against."""

    hw: tuple[int, int]
    plan: TiledPlan | None
    targets: dict
    content: jax.Array | np.ndarray | None  # None on host-resident levels
    host: bool = False


def host_resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """`pyramid.resize` for host-resident images: on the CPU backend, block by block (no copy
    to an accelerator, no full-size temporaries)."""
    return pyramid.resize_into(image, np.empty((*hw, image.shape[2]), np.float32))


def use_host_state(hw: tuple[int, int], config: RenderConfig) -> bool:
    """Keep the image and optimiser state on the host when asked, or when the on-device
    state (≈ DEVICE_STATE_BYTES per pixel) would take more than a quarter of the device."""
    if config.state != "auto":
        return config.state == "host"
    return hw[0] * hw[1] * DEVICE_STATE_BYTES > 0.25 * device_memory_bytes()


def _check_host_level(hw: tuple[int, int], spec: LossSpec) -> None:
    """Host-resident levels compute Gram losses only: refuse masks and MRF there."""
    if spec.masked or spec.mrf_layers:
        raise UserError(
            f"a {hw[1]}×{hw[0]} px level needs host-resident state, which has no masks or MRF "
            "loss; render smaller, or drop --style-mask/--content-mask/--style-loss mrf"
        )


def prepare_level(
    params: dict,
    spec: LossSpec,
    config: RenderConfig,
    inputs: Inputs,
    hw: tuple[int, int],
    mesh: Mesh | None = None,
) -> LevelProblem:
    """Resize the inputs for a level and compute its (possibly tiled) targets."""
    long_edge = max(hw)
    _check_size(hw, "the image at this level", spec)
    styles = inputs.styles
    blend = list(config.style_blend) if config.style_blend else [1.0] * len(styles)
    if use_host_state(hw, config):
        _check_host_level(hw, spec)
        plan = choose_plan(hw, spec, config, None, force_tiles=True)
        targets = []
        for s in styles:
            shw = _style_hw(s, long_edge, config.style_scale)
            _check_size(shw, "a resized style image", spec)
            s_grid = make_plan(*shw, spec, plan.grid.tile, None, plan.batch).grid
            grams = host_grams(params, spec, s_grid, plan.batch, host_resize(s, shw))
            counts = {n: v for n, v in _counts(spec, *shw).items() if n in grams}
            targets.append({n: grams[n] / counts[n] for n in grams})
        style_t = blend_style_targets(targets, blend)
        # The content is resized into the level's host state (8-bit) when that is made.
        return LevelProblem(hw, plan, {"style": style_t}, None, host=True)
    plan = choose_plan(hw, spec, config, mesh)
    content_l = replicate(pyramid.resize(inputs.content, hw), mesh)
    per_style, style_levels = [], []
    for s in styles:
        shw = _style_hw(s, long_edge, config.style_scale)
        _check_size(shw, "a resized style image", spec)
        s_plan = (
            None if plan is None else make_plan(*shw, spec, plan.grid.tile, None, plan.batch, mesh)
        )
        style_l = replicate(pyramid.resize(s, shw), mesh)
        style_levels.append(style_l)
        per_style.append(style_target_jit(params, spec, style_l, s_plan))
    content_t = content_target_jit(params, spec, content_l, plan)
    if spec.masked:
        targets = masks.stack_masked_targets(
            spec, per_style, inputs.style_masks, inputs.content_mask, hw, blend, content_t, mesh
        )
    else:
        targets = {"style": blend_style_targets(per_style, blend), "content": content_t}
    if spec.mrf_layers:
        banks = mrf_target(
            params,
            spec,
            [host_array(s) for s in style_levels],
            blend,
            config.mrf_patches,
            None if plan is None else plan.grid.tile,
        )
        targets["mrf"] = replicate(banks, mesh)
    return LevelProblem(hw=hw, plan=plan, targets=targets, content=content_l)


def make_objective(
    content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig
) -> Callable[[Any], tuple[jax.Array, jax.Array]]:
    """`loss, grad = value_and_grad(image)` at the final level's size, for tests and research.

    `config.tile` and `config.overlap` choose the tiling (0 = untiled); the image is (H, W, 3)
    at the size that `config.size` gives the content. The image lives on the device (the
    host-resident path's gradient is `streaming.host_gradient`).
    """
    styles = list(styles)
    config = dataclasses.replace(config, state="device")
    config.validate(len(styles))
    mesh = make_mesh(config.devices)
    params, _ = resolve_weights(config.weights, config.seed, widths=config.widths)
    spec = config.loss_spec(widths_of(params))
    params = replicate(params, mesh)
    inputs = prepare_inputs(content, styles, config)
    hw = config.output_hw(inputs.content.shape[:2])
    problem = prepare_level(params, spec, config, inputs, hw, mesh)
    loss_fn = make_loss_fn(spec, problem.plan)
    vg = jax.jit(jax.value_and_grad(lambda x: loss_fn(params, x, problem.targets)[0]))

    def value_and_grad(image: Any) -> tuple[jax.Array, jax.Array]:
        x = jnp.asarray(image, jnp.float32)
        if tuple(x.shape) != (*problem.hw, 3):
            raise UserError(f"image must be {problem.hw[0]}×{problem.hw[1]}×3, got {x.shape}")
        return vg(replicate(x, mesh))

    value_and_grad.shape = (*problem.hw, 3)  # type: ignore[attr-defined]
    value_and_grad.content = problem.content  # type: ignore[attr-defined]
    return value_and_grad


def resolve_init(config: RenderConfig) -> str:
    """`auto` is `fast` when the Magenta networks are imported, else `content`."""
    if config.init != "auto":
        return config.init
    from .fast import magenta_info

    return "fast" if magenta_info() is not None else "content"


@dataclass
class FastStyle:
    """The feed-forward networks and the blended style vector of a render's styles."""

    params: dict
    vector: np.ndarray

    @classmethod
    def load(cls, styles: Sequence[np.ndarray], config: RenderConfig) -> FastStyle:
        from . import fast

        params = fast.load_fast_params()
        vectors = [fast.style_vector(params, s) for s in styles]
        return cls(params, fast.blend_vectors(vectors, config.style_blend))

    def render(self, content: np.ndarray, config: RenderConfig, tile: int | None) -> np.ndarray:
        from . import fast

        tile = (
            (0 if content.shape[0] * content.shape[1] <= FAST_UNTILED_PIXELS else 1024)
            if tile is None
            else tile
        )
        return fast.stylize(
            self.params, content, self.vector, tile=tile, strength=config.style_strength
        )


def _initial_image(
    init: str,
    config: RenderConfig,
    problem: LevelProblem,
    inputs: Inputs,
    key: jax.Array,
    faststyle: FastStyle | None,
) -> jax.Array | np.ndarray:
    """The coarsest level's start: the content, uniform noise, the feed-forward rendering of
    the content (`fast`), or an image resized to fit. On a host-resident level, `content` and
    `image` come at their own size: the caller resizes them into the state block by block."""
    if init == "noise":
        return jax.random.uniform(key, (*problem.hw, 3), jnp.float32)
    if init == "content":
        return inputs.content if problem.host else problem.content
    if init == "fast":
        assert faststyle is not None
        content = host_resize(inputs.content, problem.hw) if problem.host else problem.content
        return faststyle.render(np.asarray(content), config, None)
    image = _load(config.init, config.max_input_pixels)
    return image if problem.host else pyramid.resize(image, problem.hw)


def _host_state(
    config: RenderConfig,
    level: int,
    inputs: Inputs,
    problem: LevelProblem,
    start: jax.Array | np.ndarray,
) -> HostState:
    """A host-resident level's state: the content (8-bit) and the start (any size) resized into
    it block by block, so that no other full-size array is made (the state may be on disk)."""
    state = HostState.allocate((*problem.hw, 3), _state_dir(config, level))
    pyramid.resize_into(inputs.content, state.content)
    pyramid.resize_into(host_array(start), state.x)
    return state


@dataclass
class _LevelRun:
    """What the step loops of one level share: progress, and checkpoints on time or SIGTERM."""

    level: int
    report: _Reporter
    ckpt: Checkpointer | None
    stop: threading.Event
    key: jax.Array
    levels_info: list[dict]

    def wants_checkpoint(self) -> bool:
        return self.ckpt is not None and (self.stop.is_set() or self.ckpt.due())

    def checkpoint(self, step: int, x: Any, state: Any) -> None:
        assert self.ckpt is not None
        losses = self.report.losses
        path = self.ckpt.save(self.level, step, x, state, self.key, self.levels_info, losses)
        if self.stop.is_set():
            raise Preempted(path)


def _device_level(run: _LevelRun, step: Step, params, targets, x, state, first: int, n: int):
    """Jitted steps; each loss is read one step late so the device never waits for the host."""
    pending = None
    for i in range(first, n):
        x, state, loss, _ = step(params, targets, x, state)
        if pending is not None:
            run.report(i, pending)
        pending = loss
        if run.wants_checkpoint():
            run.report(i + 1, pending)
            pending = None
            run.checkpoint(i + 1, x, state)
    if pending is not None:
        run.report(n, pending)
    return x, state


def _host_level(
    run: _LevelRun,
    params,
    spec: LossSpec,
    problem: LevelProblem,
    hstate: HostState,
    config: RenderConfig,
    first: int,
    n: int,
) -> HostState:
    """Adam steps with the image and its state in host memory, tiles streamed to the device."""
    plan = problem.plan
    assert plan is not None
    for i in range(first, n):
        loss, _ = host_adam_step(
            params,
            spec,
            plan.grid,
            plan.batch,
            problem.targets["style"],
            hstate,
            config.learning_rate,
            _level_warmup(config, run.level),
            partial(_tile_progress, run.report, i),
        )
        run.report(i + 1, loss)
        if run.wants_checkpoint():
            run.checkpoint(i + 1, hstate.x, hstate.opt_state())
    return hstate


def _tile_progress(report: _Reporter, step: int, phase: str, done: int, n: int) -> None:
    """A host-resident step's progress: pass 1 (forward only) is about a third of its work."""
    report.partial(step, done / n / 3 if phase == "pass 1" else (1 + 2 * done / n) / 3)


def _level_warmup(config: RenderConfig, level: int) -> int:
    """Adam's step-size ramp: none at the first level (it starts from the content or noise,
    where large moves are wanted), `config.warmup` steps at each later one."""
    return config.warmup if level > 0 else 0


def _state_dir(config: RenderConfig, level: int) -> Path | None:
    return None if config.state_dir is None else Path(config.state_dir) / f"level-{level}"


@functools.lru_cache(maxsize=8)
def level_step(
    spec: LossSpec, plan: TiledPlan | None, optimizer: str, learning_rate: float, warmup: int
) -> tuple[Any, Step]:
    """A level's optimiser and jitted step, kept for renders of the same shapes and settings:
    a video renders every frame alike, and a fresh step would be traced and compiled again
    for each (seconds of a small frame's render)."""
    opt = make_optimizer(optimizer, learning_rate, warmup)
    return opt, make_step(make_loss_fn(spec, plan), optimizer, opt)


def _check_temporal(temporal: tuple[np.ndarray, np.ndarray], hw: tuple[int, int]) -> None:
    warped, weights = (np.asarray(a) for a in temporal)
    if warped.shape != (*hw, 3) or weights.shape != hw:
        raise UserError(
            f"temporal targets must be {hw[0]}×{hw[1]}×3 and {hw[0]}×{hw[1]} (the output), "
            f"got {warped.shape} and {weights.shape}"
        )


def temporal_targets(
    temporal: tuple[np.ndarray, np.ndarray], hw: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """The temporal loss's (warped, reliability) at a level's size (resized when smaller)."""
    warped, weights = temporal
    if tuple(np.shape(weights)) == tuple(hw):
        return jnp.asarray(warped, jnp.float32), jnp.asarray(weights, jnp.float32)
    c = pyramid.resize(np.asarray(weights, np.float32)[..., None], hw)[..., 0]
    return pyramid.resize(np.asarray(warped, np.float32), hw), c


def render_with_info(
    content: ImageLike,
    styles: Sequence[ImageLike],
    config: RenderConfig = RenderConfig(),
    progress: Callable[[Progress], None] | None = None,
    checkpoint: CheckpointOptions | None = None,
    *,
    init_image: np.ndarray | None = None,
    temporal: tuple[np.ndarray, np.ndarray] | None = None,
) -> RenderResult:
    """Render and return the image with a record of what was done (settings, losses, times).

    With `checkpoint`, the render state is saved every `checkpoint.every` seconds and at the end
    of each level, a later call with the same settings resumes from the newest checkpoint, and
    SIGTERM saves one and raises `Preempted`.

    Video frames (`hiresnst.video`): `init_image` (H×W×3, any size, resized to the first level)
    replaces `config.init`; `temporal` = (warped previous frame (H, W, 3), reliability (H, W)) at
    the output size adds the temporal loss with `config.temporal_weight`, resized per level.
    """
    t_start = time.perf_counter()
    styles = list(styles)
    if not styles:
        raise UserError("give at least one style image")
    config.validate(len(styles))
    inputs = prepare_inputs(content, styles, config)
    original_content, content_img, style_imgs = inputs.original, inputs.content, inputs.styles
    if config.method == "fast":
        return _render_fast(original_content, content_img, style_imgs, config, t_start)
    init = "image array" if init_image is not None else resolve_init(config)
    faststyle = FastStyle.load(style_imgs, config) if init == "fast" else None
    params, weights_meta = resolve_weights(config.weights, config.seed, widths=config.widths)
    use_temporal = temporal is not None and config.temporal_weight > 0
    spec = config.loss_spec(widths_of(params), temporal=use_temporal)
    mesh = make_mesh(config.devices)
    params = replicate(params, mesh)
    final_hw = config.output_hw(content_img.shape[:2])
    _check_size(final_hw, "the output", spec)
    if use_temporal:
        _check_temporal(temporal, final_hw)
    sizes = pyramid.level_sizes(max(final_hw), config.scales, config.min_size)
    steps = pyramid.steps_per_level(config.steps, len(sizes))
    for long_edge in sizes:  # before any work, not at the level that needs host state
        hw = pyramid.output_shape(final_hw, long_edge)
        if use_host_state(hw, config):
            _check_host_level(hw, spec)
            if use_temporal:
                raise UserError(
                    f"a {hw[1]}×{hw[0]} px level needs host-resident state, which has no "
                    "temporal loss; render the video smaller or with --temporal-weight 0"
                )

    ckpt = None
    if checkpoint is not None:
        fingerprint = {
            **{k: v for k, v in dataclasses.asdict(config).items() if k != "devices"},
            "content": array_sha256(content_img),
            "styles": [array_sha256(s) for s in style_imgs],
            "masks": [
                None if m is None else array_sha256(m)
                for m in (*inputs.style_masks, inputs.content_mask)
            ],
            "weights": weights_meta,
        }
        if init_image is not None:
            fingerprint["init_image"] = array_sha256(init_image)
        if use_temporal:
            fingerprint["temporal"] = [array_sha256(a) for a in temporal]
        ckpt = Checkpointer(checkpoint, fingerprint)
    saved = ckpt.restore() if ckpt else None
    resumed_from = str(saved.path) if saved else None
    key = jnp.asarray(saved.key) if saved else jax.random.PRNGKey(config.seed)
    levels_info: list[dict] = list(saved.levels) if saved else []
    x = None
    work = [  # megapixel-steps per level, for the whole render's progress
        math.prod(pyramid.output_shape(final_hw, e)) * n / 1e6
        for e, n in zip(sizes, steps, strict=True)
    ]
    with stop_on_sigterm() as stop:
        for li, (long_edge, n_steps) in enumerate(zip(sizes, steps, strict=True)):
            if saved and li < saved.level:
                continue
            t_level = time.perf_counter()
            hw = pyramid.output_shape(final_hw, long_edge)
            problem = prepare_level(params, spec, config, inputs, hw, mesh)
            if use_temporal:
                problem.targets["temporal"] = replicate(temporal_targets(temporal, hw), mesh)
            tiles = problem.plan.grid.count if problem.plan else 1
            resume = saved if saved and li == saved.level else None
            first = resume.step if resume else 0
            losses = list(resume.losses) if resume else []
            report = _Reporter(
                li,
                len(sizes),
                problem.hw,
                n_steps,
                tiles,
                losses,
                progress,
                t_start,
                before=sum(work[:li]),
                total=sum(work),
            )
            run = _LevelRun(li, report, ckpt, stop, key, levels_info)
            # The level starts from a checkpoint, the initial image, or the previous level's
            # result upsampled.
            if resume:
                start, at_size = resume.x, True
            elif x is None:
                key, sub = jax.random.split(key)
                if init_image is not None:
                    start = pyramid.resize(np.asarray(init_image, np.float32), problem.hw)
                else:
                    start = _initial_image(init, config, problem, inputs, sub, faststyle)
                at_size = True
            else:
                start, at_size = x, False
            if problem.host:
                hstate = _host_state(config, li, inputs, problem, start)
                start = x = None  # the state holds the level's only full-size arrays
                if resume:
                    hstate.restore(resume.opt_leaves)
                hstate = _host_level(run, params, spec, problem, hstate, config, first, n_steps)
                x, state = hstate.x, hstate.opt_state()
            else:
                opt, step = level_step(
                    spec,
                    problem.plan,
                    config.optimizer,
                    config.learning_rate,
                    # an init image (a video's warped previous frame) is already stylised
                    config.warmup if init_image is not None else _level_warmup(config, li),
                )
                if not at_size:
                    start = pyramid.resize(host_array(start), problem.hw)
                x = replicate(jnp.asarray(start), mesh)
                state = opt.init(x)
                if resume:
                    state = replicate(restore_opt_state(state, resume.opt_leaves), mesh)
                x, state = _device_level(
                    run, step, params, problem.targets, x, state, first, n_steps
                )
            levels_info.append(
                {
                    "size": list(problem.hw),
                    "steps": n_steps,
                    "tile": problem.plan.grid.tile if problem.plan else 0,
                    "overlap": problem.plan.grid.halo if problem.plan else 0,
                    "tiles": tiles,
                    "loss_first": losses[0] if losses else None,
                    "loss_last": losses[-1] if losses else None,
                    "seconds": round(time.perf_counter() - t_level, 3),
                    **({"resumed_at_step": first} if first else {}),
                }
            )
            if ckpt:  # the level's own state, marked finished: a resume moves straight on
                ckpt.save(li, n_steps, x, state, key, levels_info[:-1], losses)
            if problem.host:
                hstate.unlink_files()  # only the image is needed on, and it stays mapped
            saved = None if saved and li == saved.level else saved
            state = hstate = problem = None  # the next level or the output needs x only
    image = host_array(x)  # clipped in place where it is the host state's own array
    image = np.clip(image, 0.0, 1.0, out=image if image.flags.writeable else None)
    image = image.astype(np.float32, copy=False)
    if config.preserve_colors == "luminance":
        original = np.asarray(pyramid.resize(original_content, final_hw))
        image = color.luminance_transfer(image, original).astype(np.float32)
    info = {
        "software": "hiresnst",
        "settings": dataclasses.asdict(config),
        "init": init,
        "weights": weights_meta,
        "output_size": [int(image.shape[1]), int(image.shape[0])],
        "levels": levels_info,
        "devices": [str(d) for d in (mesh.devices.flat if mesh else jax.devices()[:1])],
        "processes": jax.process_count(),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    if resumed_from:
        info["resumed_from"] = resumed_from
    return RenderResult(image=image, info=info)


def _render_fast(
    original: np.ndarray,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    config: RenderConfig,
    t_start: float,
) -> RenderResult:
    """One feed-forward pass of Magenta's networks at the output size (no optimisation)."""
    from .fast import magenta_info

    hw = config.output_hw(content.shape[:2])
    faststyle = FastStyle.load(styles, config)
    image = faststyle.render(np.asarray(pyramid.resize(content, hw)), config, config.tile)
    if config.preserve_colors == "luminance":
        image = color.luminance_transfer(image, np.asarray(pyramid.resize(original, hw)))
    info = {
        "software": "hiresnst",
        "settings": dataclasses.asdict(config),
        "weights": {"kind": "magenta", **(magenta_info() or {})},
        "output_size": [hw[1], hw[0]],
        "levels": [],
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    return RenderResult(image=np.asarray(image, np.float32), info=info)


def render(
    content: ImageLike,
    styles: Sequence[ImageLike],
    config: RenderConfig = RenderConfig(),
    progress: Callable[[Progress], None] | None = None,
) -> np.ndarray:
    """Stylise `content` with `styles`: float32 H×W×3 in [0, 1] at `config.size` long edge."""
    return render_with_info(content, styles, config, progress).image
