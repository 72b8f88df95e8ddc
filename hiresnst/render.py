"""The Python API: `render(content, styles, config)` and `make_objective(content, styles, config)`.

The CLI and the series runner are thin layers over this module. A render is planned before any
work (`plan.make_render_plan`: sizes, tiles, residency, memory); then each pyramid level is run
by a runner (`runners.py`: on the device, or streamed from host memory) from the previous
level's result, the initial image, or a checkpoint.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from . import color, pyramid
from .checkpoint import Checkpointer, CheckpointOptions, Saved, stop_on_sigterm
from .config import RenderConfig, image_settings
from .errors import UserError
from .events import Progress, Reporter
from .inputs import ImageLike, Inputs, array_sha256, input_hashes, load_image, prepare_inputs
from .layers import DEFAULT_WIDTHS
from .model import widths_of
from .objective import content_values, make_loss_fn
from .plan import FAST_UNTILED_PIXELS, RenderPlan, make_render_plan
from .runners import Level, LevelState, Runner, make_runner
from .sharding import device_memory_bytes, host_array, make_mesh, platform_name, replicate
from .weights import resolve_weights

__all__ = ["Progress", "RenderResult", "make_objective", "render", "render_with_info"]


@dataclass
class RenderResult:
    image: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def plan_render(
    config: RenderConfig, inputs: Inputs, widths: tuple[int, ...], mesh: Mesh | None
) -> RenderPlan:
    """The render's plan for this machine's devices (or `config.device_memory`, to plan for
    another machine), checked: a render that cannot fit fails here, before any work."""
    plan = make_render_plan(
        config,
        inputs.content.shape[:2],
        [s.shape[:2] for s in inputs.styles],
        widths,
        devices=1 if mesh is None else mesh.devices.size,
        device_memory=config.device_memory or device_memory_bytes(),
        # Planned for other devices (`--device-memory`), not this process's CPU and its RAM.
        platform=platform_name() if config.device_memory is None else "accelerator",
    )
    plan.check(config.state_dir)
    return plan


def dry_run(content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig) -> RenderPlan:
    """The checked plan of a render, without loading weights: for weights other than `random`
    the estimates assume full-width VGG19."""
    styles = list(styles)
    config.validate(len(styles))
    inputs = prepare_inputs(content, styles, config)
    widths = config.widths if config.weights == "random" else DEFAULT_WIDTHS
    return plan_render(config, inputs, widths, make_mesh(config.devices))


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

    With `checkpoint`, the state is saved every `checkpoint.every` seconds and at each level's
    end, and a later call with the same image settings resumes from the newest checkpoint;
    SIGTERM or Ctrl-C stops at the next step with `Preempted` (after saving a checkpoint when
    there is somewhere to). Video frames (`video_render`): `init_image` replaces `config.init`,
    `temporal` adds the temporal loss (see `_frame`).
    """
    t_start = time.perf_counter()
    styles = list(styles)
    config.validate(len(styles))
    inputs = prepare_inputs(content, styles, config)
    if config.method == "fast":
        return _render_fast(inputs.original, inputs.content, inputs.styles, config, t_start)
    params, weights_meta = resolve_weights(config.weights, config.seed, widths=config.widths)
    mesh = make_mesh(config.devices)
    plan = plan_render(config, inputs, widths_of(params), mesh)
    init = "image array" if init_image is not None else resolve_init(config)
    plan, temporal, frame = _frame(plan, config, init_image, temporal)
    fingerprint = {**image_settings(config), **input_hashes(inputs), "weights": weights_meta}
    ckpt = Checkpointer(checkpoint, {**fingerprint, **frame}) if checkpoint else None
    saved = ckpt.restore() if ckpt else None
    records: list[dict] = list(saved.levels) if saved else []
    key = jnp.asarray(saved.key) if saved else jax.random.PRNGKey(config.seed)
    spec = config.loss_spec(plan.widths, temporal=temporal is not None)
    params, image, carry = replicate(params, mesh), None, None
    with stop_on_sigterm() as stop:
        for lv in plan.levels:
            if saved and lv.index < saved.level:
                continue
            t_level = time.perf_counter()
            report = Reporter.for_level(plan, lv.index, progress, t_start)
            level = Level(lv, params, spec, config, inputs, mesh, report, ckpt, stop, records)
            level.temporal = temporal
            runner = make_runner(level)
            resume = saved if saved and saved.level == lv.index else None
            if image is None and resume is None:
                key, sub = jax.random.split(key)
                image = _initial_image(init, config, inputs, lv.hw, sub, init_image)
            state = runner.run(runner.start(image, key, resume, carry))
            if ckpt:  # the level's own state, marked finished: a resume moves straight on
                level.save(state, runner.arrays(state))
            records.append(_level_record(lv, state, resume, time.perf_counter() - t_level))
            image, carry = runner.image(state), runner.handover(state)
            runner.close()
            saved = None if resume else saved
    image = _finish(image, config, inputs, plan.output_hw)
    info = _info(config, init, weights_meta, image, records, mesh, t_start, ckpt)
    return RenderResult(image=image, info=info)


def _frame(
    plan: RenderPlan,
    config: RenderConfig,
    init_image: np.ndarray | None,
    temporal: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[RenderPlan, tuple[np.ndarray, np.ndarray] | None, dict[str, Any]]:
    """A video frame's changes to a render: (plan, temporal targets or None, fingerprint).

    With `init_image` (H×W×3, any size, the previous stylised frame warped into this one), the
    first level warms Adam up as later levels do, since its start is already stylised.
    `temporal` = (that warped frame (H, W, 3), its reliability (H, W)) at the output size adds
    the temporal loss with `config.temporal_weight` (resized to each level; device-resident
    levels only). Both enter the checkpoint fingerprint."""
    extra: dict[str, Any] = {}
    if init_image is not None:
        extra["init_image"] = array_sha256(init_image)
        first = dataclasses.replace(plan.levels[0], warmup=config.warmup)
        plan = dataclasses.replace(plan, levels=(first, *plan.levels[1:]))
    if temporal is None or config.temporal_weight <= 0:
        return plan, None, extra
    _check_temporal(temporal, plan)
    extra["temporal"] = [array_sha256(a) for a in temporal]
    return plan, temporal, extra


def _check_temporal(temporal: tuple[np.ndarray, np.ndarray], plan: RenderPlan) -> None:
    hw = plan.output_hw
    warped, weights = (np.asarray(a) for a in temporal)
    if warped.shape != (*hw, 3) or weights.shape != hw:
        raise UserError(
            f"temporal targets must be {hw[0]}×{hw[1]}×3 and {hw[0]}×{hw[1]} (the output), "
            f"got {warped.shape} and {weights.shape}"
        )
    for lv in plan.levels:
        if lv.host:
            raise UserError(
                f"a {lv.hw[1]}×{lv.hw[0]} px level needs host-resident state, which has no "
                "temporal loss; render the video smaller or with --temporal-weight 0"
            )


def _level_record(lv: Any, state: LevelState, resume: Saved | None, seconds: float) -> dict:
    losses = state.losses
    return {
        "size": list(lv.hw),
        "steps": lv.steps,
        "tile": lv.tile,
        "overlap": lv.halo,
        "tiles": lv.tiles,
        "residency": lv.residency,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(seconds, 3),
        **({"resumed_at_step": resume.step} if resume and resume.step else {}),
    }


def _finish(
    image: Any, config: RenderConfig, inputs: Inputs, hw: tuple[int, int]
) -> np.ndarray:
    """The last level's image as float32 in [0, 1], clipped in place where it is the host
    state's own array, with the content's luminance put back when asked."""
    image = host_array(image)
    image = np.clip(image, 0.0, 1.0, out=image if image.flags.writeable else None)
    image = image.astype(np.float32, copy=False)
    if config.preserve_colors == "luminance":
        original = np.asarray(pyramid.resize(inputs.original, hw))
        image = color.luminance_transfer(image, original).astype(np.float32)
    return image


def _info(
    config: RenderConfig,
    init: str,
    weights_meta: dict,
    image: np.ndarray,
    records: list[dict],
    mesh: Mesh | None,
    t_start: float,
    ckpt: Checkpointer | None = None,
) -> dict[str, Any]:
    resumed = {"resumed_from": str(ckpt.resumed_from)} if ckpt and ckpt.resumed_from else {}
    return {
        **resumed,
        "software": "hiresnst",
        "settings": dataclasses.asdict(config),
        "init": init,
        "weights": weights_meta,
        "output_size": [int(image.shape[1]), int(image.shape[0])],
        "levels": records,
        "devices": [str(d) for d in (mesh.devices.flat if mesh else jax.devices()[:1])],
        "processes": jax.process_count(),
        "seconds": round(time.perf_counter() - t_start, 3),
    }


def prepare_level(
    content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig, index: int = -1
) -> Runner:
    """The runner of one level of a render (its plan, tiling and targets), ready but not run:
    for tests and research."""
    styles = list(styles)
    config.validate(len(styles))
    mesh = make_mesh(config.devices)
    params, _ = resolve_weights(config.weights, config.seed, widths=config.widths)
    inputs = prepare_inputs(content, styles, config)
    plan = plan_render(config, inputs, widths_of(params), mesh)
    lv = plan.levels[index]
    report = Reporter(lv.index, len(plan.levels), lv.hw, lv.steps, lv.tiles, None, 0.0)
    spec = config.loss_spec(plan.widths)
    params = replicate(params, mesh)
    return make_runner(
        Level(lv, params, spec, config, inputs, mesh, report, None, threading.Event(), [])
    )


def make_objective(
    content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig
) -> Callable[[Any], tuple[jax.Array, jax.Array]]:
    """`loss, grad = value_and_grad(image)` at the final level's size, for tests and research.

    `config.tile` and `config.overlap` choose the tiling (0 = untiled); the image is (H, W, 3)
    at the size that `config.size` gives the content. The image lives on the device (the
    host-resident path's gradient is `streaming.host_gradient`).
    """
    config = dataclasses.replace(config, state="device", scales=1, steps=0)
    runner = prepare_level(content, styles, config)
    level, targets = runner.level, runner.targets
    loss_fn = make_loss_fn(level.spec, runner.tplan)
    vg = jax.jit(jax.value_and_grad(lambda x: loss_fn(level.params, x, targets)[0]))
    hw = level.plan.hw

    def value_and_grad(image: Any) -> tuple[jax.Array, jax.Array]:
        x = jnp.asarray(image, jnp.float32)
        if tuple(x.shape) != (*hw, 3):
            raise UserError(f"image must be {hw[0]}×{hw[1]}×3, got {x.shape}")
        return vg(replicate(x, level.mesh))

    value_and_grad.shape = (*hw, 3)  # type: ignore[attr-defined]
    value_and_grad.content = content_values(runner.content)  # type: ignore[attr-defined]
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
    inputs: Inputs,
    hw: tuple[int, int],
    key: jax.Array,
    image: np.ndarray | None = None,
) -> Any:
    """The coarsest level's start, at any size (the runner resizes it to the level): an image
    array given by the caller (a video's warped previous frame), the content, uniform noise,
    the feed-forward rendering of the content (`fast`), or an image file."""
    if image is not None:
        return np.asarray(image, np.float32)
    if init == "noise":
        return jax.random.uniform(key, (*hw, 3), jnp.float32)
    if init == "content":
        return inputs.content
    if init == "fast":
        faststyle = FastStyle.load(inputs.styles, config)
        return faststyle.render(np.asarray(pyramid.resize(inputs.content, hw)), config, None)
    return load_image(config.init, config.max_input_pixels)


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
