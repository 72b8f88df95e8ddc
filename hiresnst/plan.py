"""The render plan, made before any work: per level its size, steps, tiles, residency, style
sizes and estimates of host memory, device memory, disk and FLOPs.

Every "can this render run here" check lives in `RenderPlan.check`, so a render that cannot fit
fails before loading weights, with one line that says what it needs and what to change.
`hiresnst render … --dry-run` prints the plan. The plan depends on settings, input sizes and the
machine (devices, their memory, RAM, disk), never on pixel values.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import flops
from .config import RenderConfig
from .errors import UserError
from .layers import DEFAULT_WIDTHS, LAYERS, deepest
from .sizes import level_sizes, output_shape, round_up, steps_per_level, wrap_tile

#: Device bytes per pixel of an untiled fp32 value-and-grad step of full-width VGG19 to
#: conv5_1 (activations kept for the backward pass); scales with the widths and precision.
STEP_BYTES_PER_PIXEL = 3000
#: Adam's moments per pixel: first bf16 6, second fp32 12.
ADAM_BYTES = 6 + 12
#: Device bytes per pixel of a device-resident level between steps: image 12 (fp32), Adam's
#: moments 18 and the 8-bit content 3 = 33; a tiled step makes the content's features tile by
#: tile (`runners.DeviceRunner`). Measured: benches/device_state.py.
DEVICE_STATE_BYTES = 12 + ADAM_BYTES + 3
#: Device bytes per pixel that a tiled Adam step holds on top of the state (image and state
#: donated, updated in place): the fp32 gradient accumulator 12, and a copy of the old first
#: moment 6 that XLA makes to update it in place (benches/device_state.py, XLA's buffer
#: assignment of the step). Windows are cut from the unpadded image: no padded copy.
DEVICE_STEP_BYTES = 18
#: L-BFGS keeps 20 (s, y) pairs of fp32 images instead of Adam's moments.
LBFGS_BYTES = 2 * 20 * 12
#: The share of a device's memory that the plan fills: the rest is left to XLA's compiled
#: programs and scratch and to the allocator's fragmentation.
DEVICE_FILL = 0.9
#: The smallest tile core a device-resident level runs with when it is planned (px): smaller
#: tiles would spend most of their work on halos.
MIN_DEVICE_TILE = 512
#: Device bytes per pixel of the fp32 average of the iterates (`--average`).
AVERAGE_BYTES = 12
#: Host bytes per pixel of a host-resident level (see `streaming.BYTES_PER_PIXEL`).
HOST_STATE_BYTES = 33
#: A float32 RGB copy, per pixel: an input as loaded, a style at its level's style size, a
#: level's start image.
IMAGE_BYTES = 12
#: By default a style is never resized beyond its own long edge times this. Upsampling adds no
#: brushwork: the fine layers (conv1_1, conv2_1) would describe the blur of an enlarged
#: painting, and every level would pay a forward pass over it (a 100000 px render resized each
#: style to 100000 px: 75 GB of float32 before the first step). `--style-size` overrides it.
STYLE_UPSAMPLE_LIMIT = 1.0
#: Resident memory of the process before any pixel: Python, JAX and XLA's runtime and
#: compiled programs (measured with `benches/memory.py`: see the README).
BASE_BYTES = 0.9e9
#: Feed-forward renders up to this size run untiled (the transformer is cheap; tiles cost ~10×).
FAST_UNTILED_PIXELS = 16 * 2**20

GB = 1e9


@dataclass(frozen=True)
class LevelPlan:
    """One pyramid level: what runs, where, and what it costs."""

    index: int
    hw: tuple[int, int]
    steps: int
    warmup: int
    residency: str  # "device" or "host"
    tile: int  # core size in px; 0 = untiled
    halo: int
    tiles: int
    batch: int
    style_hw: tuple[tuple[int, int], ...]
    device_bytes: float
    host_bytes: float
    disk_bytes: float
    flops_per_step: float

    @property
    def pixels(self) -> int:
        return self.hw[0] * self.hw[1]

    @property
    def host(self) -> bool:
        return self.residency == "host"


@dataclass(frozen=True)
class RenderPlan:
    """The levels of a render and the machine it was planned for."""

    levels: tuple[LevelPlan, ...]
    output_hw: tuple[int, int]
    devices: int
    device_memory: float
    host_memory: float
    platform: str
    widths: tuple[int, ...]
    #: The largest level (px) that stays on one of these devices, with its state, its step's
    #: memory and a batch of the smallest planned tiles (`device_fits`).
    max_device_pixels: float = 0.0

    @property
    def work(self) -> tuple[float, ...]:
        """Megapixel-steps per level, for the whole render's progress and ETA."""
        return tuple(lv.pixels * lv.steps / 1e6 for lv in self.levels)

    @property
    def peak_host_bytes(self) -> float:
        return max(lv.host_bytes for lv in self.levels)

    @property
    def peak_device_bytes(self) -> float:
        return max(lv.device_bytes for lv in self.levels)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["peak_host_bytes"] = self.peak_host_bytes
        out["peak_device_bytes"] = self.peak_device_bytes
        out["flops"] = sum(lv.flops_per_step * lv.steps for lv in self.levels)
        return out

    def table(self) -> str:
        """A plain-text table of the levels, with the machine and totals."""
        head = ("level", "size", "styles", "steps", "where", "tiles", "device GB", "host GB")
        head = (*head, "TFLOP")
        rows = [head]
        for lv in self.levels:
            tiles = f"{lv.tiles}×{lv.tile}+{lv.halo}" if lv.tile else "untiled"
            rows.append(
                (
                    str(lv.index),
                    f"{lv.hw[1]}×{lv.hw[0]}",
                    ",".join(f"{w}×{h}" for h, w in lv.style_hw),
                    str(lv.steps),
                    lv.residency,
                    tiles,
                    f"{lv.device_bytes / GB:.2f}",
                    f"{lv.host_bytes / GB:.2f}"
                    + (f" +{lv.disk_bytes / GB:.1f} disk" if lv.disk_bytes else ""),
                    f"{lv.flops_per_step * lv.steps / 1e12:.2f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.append(
            f"{self.devices} {self.platform} device(s), {self.device_memory / GB:.1f} GB each; "
            f"host RAM {self.host_memory / GB:.1f} GB; peak host {self.peak_host_bytes / GB:.2f} "
            f"GB, peak device {self.peak_device_bytes / GB:.2f} GB"
        )
        h, w = self.output_hw
        side = math.sqrt(self.max_device_pixels / (h * w))
        lines.append(
            f"largest device-resident level: {self.max_device_pixels / 1e6:,.0f} MP "
            f"(≈ {int(w * side)}×{int(h * side)} at this aspect)"
        )
        return "\n".join(lines)

    def check(self, state_dir: str | None = None) -> None:
        """Refuse, before any work, a render that cannot fit in RAM, disk or device memory."""
        for lv in self.levels:
            where = f"level {lv.index} ({lv.hw[1]}×{lv.hw[0]} px)"
            if lv.host_bytes > self.host_memory:
                hint = (
                    "lower --size, --tile or --style-size"
                    if lv.host and state_dir
                    else "pass --state-dir DIR to keep the image state on disk, or lower --size"
                )
                raise UserError(
                    f"{where} needs {lv.host_bytes / GB:.1f} GB of RAM and this machine has "
                    f"{self.host_memory / GB:.1f} GB; {hint}"
                )
            if lv.device_bytes > self.device_memory:
                raise UserError(
                    f"{where} needs {lv.device_bytes / GB:.1f} GB of device memory and the "
                    f"device has {self.device_memory / GB:.1f} GB; use --state host or auto, a "
                    "smaller --tile or --tile-batch, or --precision bf16"
                )
        if state_dir is not None:
            need = max(lv.disk_bytes for lv in self.levels)
            free = _free_disk(Path(state_dir))
            if need > free:
                raise UserError(
                    f"--state-dir {state_dir} needs {need / GB:.1f} GB free and has "
                    f"{free / GB:.1f} GB; free space there or choose another disk"
                )


def make_render_plan(
    config: RenderConfig,
    content_hw: tuple[int, int],
    style_hws: list[tuple[int, int]],
    widths: tuple[int, ...],
    *,
    devices: int,
    device_memory: float,
    host_memory: float | None = None,
    platform: str = "cpu",
) -> RenderPlan:
    """Plan the levels of a render of content `content_hw` (as fitted) with styles of the
    given sizes, for `devices` devices of `device_memory` bytes each."""
    spec = config.loss_spec(widths)
    align = 2**spec.levels
    final_hw = config.output_hw(content_hw)
    _check_size(final_hw, "the output", spec)
    sizes = level_sizes(max(final_hw), config.scales, config.min_size)
    steps = steps_per_level(config.steps, len(sizes))
    host_memory = host_memory if host_memory is not None else physical_memory()
    bpp = STEP_BYTES_PER_PIXEL * sum(widths) / sum(DEFAULT_WIDTHS)
    bpp *= 0.5 if spec.dtype == "bfloat16" else 1.0
    weights_bytes = 4 * sum(9 * a * b + b for a, b in zip((3, *widths[:-1]), widths, strict=False))
    per_px = device_bytes_per_pixel(config, spec.masked, len(style_hws))
    smallest = round_up(config.tile or MIN_DEVICE_TILE, align)
    overlap = spec.halo if config.overlap is None else round_up(config.overlap, align)
    min_window = (smallest + 2 * overlap) ** 2 * config.tile_batch * bpp
    # the inputs as loaded (float32 at their own sizes) stay in RAM for the whole render
    inputs_bytes = sum(a * b for a, b in (content_hw, *style_hws)) * IMAGE_BYTES
    levels = []
    for i, (long_edge, n) in enumerate(zip(sizes, steps, strict=True)):
        hw = output_shape(final_hw, long_edge)
        _check_size(hw, "the image at this level", spec)
        shws = tuple(style_shape(s, long_edge, config, align) for s in style_hws)
        hint = "raise --style-size" if config.style_size else None
        for shw in shws:
            _check_size(shw, "a resized style image", spec, hint)
        px = hw[0] * hw[1]
        host = config.state == "host" or (
            config.state == "auto" and not device_fits(px, per_px, min_window, device_memory)
        )
        _check_quality_options(hw, spec, config, host)
        window_budget = 0.5 * device_memory
        if not host:  # the tiles get what the level's state and step leave
            left = DEVICE_FILL * device_memory - px * per_px  # (`check` refuses a level
            window_budget = max(min(window_budget, left), min_window)  # that cannot fit)
        tile = _choose_tile(hw, config, spec, bpp, devices, window_budget, host)
        if tile and spec.seamless:  # a wrapping grid has no partial tiles
            tile = wrap_tile(*hw, tile, align)
        halo = spec.halo if config.overlap is None else round_up(config.overlap, align)
        if tile:
            tile = round_up(tile, align)
            tiles = -(-hw[0] // tile) * -(-hw[1] // tile)
            batch = max(1, min(config.tile_batch, tiles))
            window_bytes = (tile + 2 * halo) ** 2 * batch * bpp
        else:
            tiles, batch, halo = 1, 1, 0
            window_bytes = hw[0] * hw[1] * bpp
        # the styles at this level's style size, each resized once; on the device too while
        # their targets are made (a host-resident level streams their tiles instead)
        styles_bytes = sum(a * b for a, b in shws) * IMAGE_BYTES
        if host:
            device_bytes = window_bytes
            state = px * HOST_STATE_BYTES
            disk = state if config.state_dir else 0.0
            level_host = (0 if disk else state) + (tile + 2 * halo) * hw[1] * IMAGE_BYTES
        else:
            device_bytes = window_bytes + px * per_px + styles_bytes
            disk, level_host = 0.0, px * IMAGE_BYTES  # the level's start, before it moves over
        if not host and not tile:  # an untiled level takes its style targets in one pass
            device_bytes = max(device_bytes, max(a * b for a, b in shws) * bpp / 2)
        # a tiled level's style targets go tile by tile through windows no larger than the
        # step's (forward only), so `window_bytes` covers them
        host_bytes = BASE_BYTES + weights_bytes + inputs_bytes + level_host + styles_bytes
        if host and spec.masked:  # the mask pyramids live on the device (`device_bytes_…`)
            device_bytes += px * _mask_bytes(len(shws))
        if platform == "cpu":  # the CPU backend's device memory is this process's RAM
            host_bytes += device_bytes
        last = deepest(spec.outputs)
        style_layers = tuple(n for n, _ in spec.style_layers)
        if tile:
            f = flops.tiled_step_flops(*hw, widths, last, style_layers, tile, halo, batch)
        else:
            f = flops.step_flops(*hw, widths, last, style_layers)
        levels.append(
            LevelPlan(
                index=i,
                hw=hw,
                steps=n,
                warmup=config.warmup if i > 0 and config.handover == "reset" else 0,
                residency="host" if host else "device",
                tile=tile,
                halo=halo,
                tiles=tiles,
                batch=batch,
                style_hw=shws,
                device_bytes=float(device_bytes),
                host_bytes=float(host_bytes),
                disk_bytes=float(disk),
                flops_per_step=float(f["total"]),
            )
        )
    return RenderPlan(
        tuple(levels),
        final_hw,
        devices,
        float(device_memory),
        float(host_memory),
        platform,
        tuple(widths),
        max(0.0, (DEVICE_FILL * device_memory - min_window) / per_px),
    )


def device_bytes_per_pixel(config: RenderConfig, masked: bool, styles: int) -> float:
    """Device bytes per pixel of a device-resident tiled level at its step's peak: its state,
    the step's temporaries and the optional state that scales with it."""
    per_px = DEVICE_STATE_BYTES + DEVICE_STEP_BYTES
    if config.optimizer == "lbfgs":  # its memory pairs for Adam's moments
        per_px += LBFGS_BYTES - ADAM_BYTES
    if config.average:
        per_px += AVERAGE_BYTES
    if masked:
        per_px += _mask_bytes(styles)
    return per_px


def _mask_bytes(styles: int) -> float:
    """Each style's mask pyramid and the content's, fp32 (4/3 of level 0), per pixel."""
    return 16 / 3 * (styles + 1)


def device_fits(px: int, per_px: float, window_bytes: float, device_memory: float) -> bool:
    """Whether a level of `px` pixels stays on a device: its state and step (`per_px`) and a
    batch of tile windows fill at most `DEVICE_FILL` of the device's memory."""
    return px * per_px + window_bytes <= DEVICE_FILL * device_memory


def _check_quality_options(
    hw: tuple[int, int], spec: Any, config: RenderConfig, host: bool
) -> None:
    """Host-resident levels have no W2 loss, iterate averaging, carried Adam or wrap-around
    (the host runner streams Gram statistics and a fresh Adam only); a seamless level's sides
    must be multiples of the pooling alignment (floor pooling would cut the wrap)."""
    extras = spec.style_kind == "w2" or config.average or config.handover == "carry"
    if host and (extras or spec.seamless):
        raise UserError(
            f"a {hw[1]}×{hw[0]} px level needs host-resident state, which has no --style-loss "
            "w2, --average, --handover carry or --seamless yet; render smaller"
        )
    align = 2**spec.levels
    if spec.seamless and (hw[0] % align or hw[1] % align):
        raise UserError(
            f"--seamless needs every level's sides to be multiples of {align} px, but one is "
            f"{hw[1]}×{hw[0]}; give --width/--height and --min-size that are"
        )


def _choose_tile(
    hw: tuple[int, int],
    config: RenderConfig,
    spec: Any,
    bpp: float,
    devices: int,
    window_budget: float,
    host: bool,
) -> int:
    """The tile core of a level (0 = untiled): none if it fits in `window_budget` bytes (half
    the device memory, or what a device level's state leaves), else the largest tile (a
    multiple of 256 px) whose batch does. Over several devices, tiles are made small enough
    that every device gets at least one."""
    align = 2**spec.levels
    tile = config.tile
    if tile is None:
        budget = window_budget / bpp
        if hw[0] * hw[1] <= budget and devices == 1 and not host:
            return 0
        side = math.isqrt(int(budget / config.tile_batch)) - 2 * spec.halo
        tile = min(max(256, side // 256 * 256), round_up(max(hw), align))
        while devices > 1 and tile > align and _count(hw, tile) < devices:
            tile = round_up(tile // 2, align)
    if tile == 0:
        if host:
            raise UserError("host-resident state streams tiles: give a --tile size, not 0")
        if devices > 1:
            raise UserError("--tile 0 (untiled) runs on one device; use --devices 1 or a tile size")
        return 0
    # A tile past the level's edge only adds padding to compute (a 4096 tile at a 512 px level
    # of a gigapixel pyramid would be a 4096² window): no bigger than the level.
    return min(tile, round_up(max(hw), align))


def _count(hw: tuple[int, int], tile: int) -> int:
    return -(-hw[0] // tile) * -(-hw[1] // tile)


def style_shape(
    style_hw: tuple[int, int], level_long: int, config: RenderConfig, align: int
) -> tuple[int, int]:
    """A style's (H, W) at a level whose long edge is `level_long`.

    `--style-size` fixes the long edge at every level (the user chose the brushwork's scale).
    Otherwise it follows the level × `--style-scale`, but is at most the style's own long edge
    × `STYLE_UPSAMPLE_LIMIT` (or the least that gives the network its `align` px on the short
    side, for a tiny style): the statistics then cost at most one pass over the style as given,
    whatever the output size."""
    if config.style_size is not None:
        return output_shape(style_hw, config.style_size)
    own = max(1, round(max(style_hw) * STYLE_UPSAMPLE_LIMIT))
    least = math.ceil(align * max(style_hw) / min(style_hw))
    while min(output_shape(style_hw, least)) < align:  # rounding of the short side
        least += 1
    return output_shape(
        style_hw, max(1, min(round(level_long * config.style_scale), max(own, least)))
    )


def _check_size(hw: tuple[int, int], what: str, spec: Any, hint: str | None = None) -> None:
    need = 2**spec.levels
    if min(hw) < need:
        raise UserError(
            f"{what} would be {hw[1]}×{hw[0]} px, smaller than the {need} px that "
            f"{max(spec.outputs, key=LAYERS.index)} needs; {hint or 'raise --size or --min-size'}"
        )


def physical_memory() -> float:
    """This machine's RAM in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _free_disk(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return float(shutil.disk_usage(path).free)
