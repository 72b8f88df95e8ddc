"""Host-resident render state for outputs that do not fit on the device.

The image, Adam's two moments and the level's content image live in host memory (NumPy arrays,
or memory-mapped files under `state_dir`), and tile windows stream to the device:

- pass 1 sends each batch of windows and gets back its Gram sums (a few MB per batch);
- pass 2 goes tile row by tile row. Each batch's windows (image and content) go to the device,
  which computes the content features and the tile gradients; the gradients are added into a
  band of rows on the host. Once a tile row is done, the rows above the next row's windows have
  their final gradient, so Adam updates them there and then. That is exact: later tile rows never
  read those rows again in this step, and they receive no more gradient.

Host memory per output pixel: image 12 B (fp32) + Adam's first moment 6 B (bf16, as optax's
`mu_dtype`) + its second moment 12 B (fp32) + content 3 B (8-bit) = 33 B, plus one band of
gradient rows (tile + 2·halo rows) and Adam's working rows; nothing else scales with the image.
The first moment is bfloat16 on the device path too (`optimize.ADAM_MU_DTYPE`); the one
difference from it is the content target, made from the level's content quantised to 8 bits
(as the source photo was), far below what shows in a print.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .layers import layer_level
from .objective import (
    LossSpec,
    batch_grams,
    features,
    layer_counts,
    padded_masks,
    style_args,
    style_cotangents,
    style_value,
    tile_core,
    tile_surrogate,
    window_masks,
    zeros_grams,
)
from .optimize import ADAM_MU_DTYPE, make_optimizer
from .pyramid import resize_into
from .runtime import trim_heap
from .tiling import TileGrid

BYTES_PER_PIXEL = 12 + 6 + 12 + 3
#: Adam updates this many pixels of rows at a time, so its temporaries stay small at any width.
ROW_CHUNK_PIXELS = 1 << 18


def _alloc(state_dir: Path | None, name: str, shape, dtype) -> np.ndarray:
    """A zeroed array in RAM, or memory-mapped at state_dir/name.npy (a new file reads as
    zeros; its pages are written as the render fills them)."""
    if state_dir is None:
        return np.zeros(shape, dtype)
    state_dir.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(state_dir / f"{name}.npy", "w+", dtype, shape)


@dataclass
class HostState:
    """One level's image, Adam moments and content, in host memory or memory-mapped files.

    The moments are allocated at the first Adam update (or restore), after the image and the
    content have been resized into the state, so peak memory stays at the state's own
    BYTES_PER_PIXEL. The first moment is held as raw bfloat16 bits (uint16 on disk, as .npy
    has no bfloat16) and viewed as bfloat16.
    """

    x: np.ndarray
    content: np.ndarray  # uint8
    state_dir: Path | None = None
    t: int = 0
    _moments: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def allocate(cls, shape: tuple[int, int, int], state_dir: Path | None) -> HostState:
        """Zeroed image (fp32) and content (uint8): fill them with `pyramid.resize_into`."""
        return cls(
            x=_alloc(state_dir, "image", shape, np.float32),
            content=_alloc(state_dir, "content", shape, np.uint8),
            state_dir=state_dir,
        )

    @classmethod
    def create(cls, x: np.ndarray, content: np.ndarray, state_dir: Path | None) -> HostState:
        """The state of start image `x` and float `content` (either at any size)."""
        state = cls.allocate(x.shape, state_dir)
        resize_into(x, state.x)
        resize_into(content, state.content)
        return state

    @property
    def m(self) -> np.ndarray:
        return self._moment_arrays()[0]

    @property
    def v(self) -> np.ndarray:
        return self._moment_arrays()[1]

    def _moment_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._moments is None:
            shape = self.x.shape
            self._moments = (
                _alloc(self.state_dir, "adam_m", shape, np.uint16).view(ADAM_MU_DTYPE),
                _alloc(self.state_dir, "adam_v", shape, np.float32),
            )
        return self._moments

    def unlink_files(self) -> None:
        """Remove the level's memory-mapped files (in RAM mode there are none), as soon as the
        render needs only `x` from the level. The arrays stay usable: a mapped file lives on
        until it is unmapped, so the image can still seed the next level or be written out,
        and its disk space comes back when the last reference goes. A gigapixel pyramid would
        otherwise leave 33 B/px of every level behind."""
        if self.state_dir is None:
            return
        for name in ("image", "content", "adam_m", "adam_v"):
            (self.state_dir / f"{name}.npy").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()

    def arrays(self) -> dict[str, np.ndarray]:
        """The level's state as a checkpoint's named arrays (Adam's as on the device path)."""
        return {"image": self.x, "mu": self.m, "nu": self.v, "count": np.asarray(self.t, np.int32)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy a checkpoint's arrays into this state a block of rows at a time: a gigapixel
        level's state is restored straight into its memory maps, with no full-size copy."""
        from .checkpoint import copy_rows
        from .errors import UserError

        if set(arrays) != {"image", "mu", "nu", "count"}:
            raise UserError("checkpoint's optimiser state is not Adam's; pass --restart")
        copy_rows(arrays["image"], self.x)
        copy_rows(arrays["mu"], self.m)
        copy_rows(arrays["nu"], self.v)
        self.t = int(arrays["count"])


def host_window(arr: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """arr[top:top+size, left:left+size] in arr's dtype, zero outside the array."""
    out = np.zeros((size, size, arr.shape[2]), arr.dtype)
    h, w = arr.shape[:2]
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = arr[y0:y1, x0:x1]
    return out


def _device_masks(padded: dict | None) -> dict | None:
    """The padded mask pyramids as a jit argument (their style count is static)."""
    return None if padded is None else {k: v for k, v in padded.items() if k != "n_styles"}


@partial(jax.jit, static_argnums=(1, 2))
def _gram_batch(params, spec: LossSpec, grid: TileGrid, wins, origins, live, padded):
    return batch_grams(params, spec, grid, wins, window_masks(grid, origins, live), padded, origins)


@partial(jax.jit, static_argnums=(1, 2), static_argnames=("grams",))
def _grad_batch(
    params, spec, grid, wins, content_wins, origins, live, cot, padded, mrf_t, grams=False
):
    """Tile gradients of the device path's surrogate (`objective.tile_surrogate`) for a batch,
    and with `grams` (lagged mode) the batch's Grams last.

    `content_wins` are the 8-bit content windows; they become floats here, on the device, and
    give the batch's content targets."""
    masks = window_masks(grid, origins, live)
    content_wins = content_wins.astype(jnp.float32) / 255.0
    counts = layer_counts(spec, grid.height, grid.width)
    names = tuple(n for n, _ in spec.content_layers)
    content_feats = features(params, spec, content_wins, names, masks)
    content = {n: tile_core(grid, content_feats[n], layer_level(n)) for n in names}
    surrogate = partial(tile_surrogate, params, spec, grid, counts, cot, padded, mrf_t, grams=grams)
    g, aux = jax.grad(surrogate, has_aux=True)(wins, masks, content, origins)
    (c, tv, mrf), batch_grams = aux if grams else (aux, {})
    return g, c, tv, mrf, batch_grams


def _windows(arr: np.ndarray, grid: TileGrid, origins: np.ndarray) -> np.ndarray:
    h, size = grid.halo, grid.window
    return np.stack([host_window(arr, o[0] - h, o[1] - h, size) for o in origins])


def _batches(indices: np.ndarray, batch: int):
    """(indices, indices padded to `batch` by repeating the last, live flags)."""
    for start in range(0, len(indices), batch):
        idx = indices[start : start + batch]
        live = np.ones(batch, np.float32)
        live[len(idx) :] = 0
        yield idx, np.concatenate([idx, np.repeat(idx[-1:], batch - len(idx))]), live


def host_grams(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    image: np.ndarray,
    on_tile: Callable[[str, int, int], None] | None = None,
    padded: dict | None = None,
) -> dict[str, jax.Array]:
    """Σ f fᵀ of each style layer over a host-resident image, one batch of windows at a time
    (with `padded` masks, `objective.padded_masks`: Σ m_s f fᵀ per style)."""
    names = tuple(n for n, _ in spec.style_layers)
    if not names:  # MRF alone: no Gram term
        return {}
    origins = grid.origins()
    styles = None if padded is None else padded["n_styles"]
    grams = zeros_grams(spec, names, styles)
    masks = _device_masks(padded)
    done = 0
    for idx, pad, live in _batches(np.arange(len(origins)), batch):
        wins = _windows(image, grid, origins[pad])
        part = _gram_batch(params, spec, grid, wins, origins[pad], live, masks)
        grams = {k: grams[k] + part[k] for k in grams}
        done += len(idx)
        trim_heap()
        if on_tile:
            on_tile("pass 1", done, len(origins))
    return grams


@functools.lru_cache(maxsize=8)
def _adam_band(lr: float, warmup: int):
    """The on-device Adam update (`make_optimizer`), applied to a band of rows and projected to
    [0, 1]: the same arithmetic, run on the CPU backend next to the host arrays."""
    opt = make_optimizer("adam", lr, warmup)

    def update(x, m, v, g, count):
        adam = optax.ScaleByAdamState(count=count, mu=m, nu=v)
        lr_state = optax.ScaleByScheduleState(count=count) if warmup > 0 else optax.EmptyState()
        updates, (adam, _) = opt.update(g, (adam, lr_state), x)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), adam.mu, adam.nu

    return jax.jit(update)


def _adam_rows(state: HostState, rows: slice, grad: np.ndarray, lr: float, warmup: int = 0) -> None:
    """Adam on the rows whose gradient is final, in place in the host arrays, a fixed-size
    chunk of rows at a time (the last one zero-padded): the update's temporaries stay small at
    any image width, and it compiles once per width."""
    count = np.asarray(state.t - 1, np.int32)  # optax counts the steps taken before this one
    update = _adam_band(float(lr), int(warmup))
    chunk = max(1, ROW_CHUNK_PIXELS // state.x.shape[1])
    with jax.default_device(jax.devices("cpu")[0]):
        for r in range(rows.start, rows.stop, chunk):
            part = slice(r, min(r + chunk, rows.stop))
            g = grad[r - rows.start : part.stop - rows.start]
            args = [_pad_rows(a, chunk) for a in (state.x[part], state.m[part], state.v[part], g)]
            x, m, v = (np.asarray(a)[: len(g)] for a in update(*args, count))
            state.x[part], state.m[part], state.v[part] = x, m, v


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if len(a) == rows:
        return a
    out = np.zeros((rows, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    return out


def host_gradient(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    targets: dict,
    x: np.ndarray,
    content: np.ndarray,
    on_rows: Callable[[slice, np.ndarray], None],
    on_tile: Callable[[str, int, int], None] | None = None,
    lagged: dict | None = None,
) -> tuple[float, dict[str, float], dict]:
    """The whole-image objective's gradient at host image `x`, handed to `on_rows(rows, grad)`
    band by band as soon as those rows' gradient is final. `on_rows` may update `x[rows]` in
    place: later windows never read those rows again.

    `lagged` (`--gram lagged`): an earlier image's whole-image Grams stand in for pass 1's
    (`objective.tiled_value_and_grad`), and pass 2 sums this image's.

    Returns the loss (at `x` before any update), its terms and the Grams of `x`."""
    origins = grid.origins()
    n = len(origins)
    h, size = grid.halo, grid.window
    counts = layer_counts(spec, grid.height, grid.width)
    style_t = style_args(spec, targets, grid.height, grid.width)
    padded = padded_masks(spec, grid, style_t)
    mrf_t = targets.get("mrf")

    def windows(arr, idx):
        return _windows(arr, grid, origins[idx])

    if lagged is None:  # pass 1
        grams = host_grams(params, spec, grid, batch, x, on_tile, padded)
        cot = style_cotangents(spec, grams, style_t, counts) if grams else {}
    else:  # pass 2 sums this image's Grams
        cot = style_cotangents(spec, lagged, style_t, counts) if lagged else {}
        styles = None if padded is None else padded["n_styles"]
        grams = zeros_grams(spec, tuple(lagged), styles)
    masks = _device_masks(padded)

    width = grid.width
    band = np.zeros((grid.tile + 2 * h, width, 3), np.float32)
    band_top = -h  # image row of band[0]
    content_sum = tv_sum = mrf_sum = 0.0
    finished = 0  # rows above this have been handed on
    processed = 0
    for row in range(grid.ny):
        row_idx = np.arange(row * grid.nx, (row + 1) * grid.nx)
        for idx, pad, live in _batches(row_idx, batch):
            g, c, tv, mrf, part = _grad_batch(
                params,
                spec,
                grid,
                windows(x, pad),
                windows(content, pad),
                origins[pad],
                live,
                cot,
                masks,
                mrf_t,
                grams=lagged is not None,
            )
            if lagged is not None:
                grams = {k: grams[k] + part[k] for k in grams}
            content_sum += float(c)
            tv_sum += float(tv)
            mrf_sum += float(mrf)
            g = np.asarray(g)
            for k, tile in enumerate(idx):
                left = origins[tile][1] - h
                x0, x1 = max(left, 0), min(left + size, width)
                band[:, x0:x1] += g[k, :, x0 - left : x1 - left]
            processed += len(idx)
            trim_heap()
            if on_tile:
                on_tile("pass 2", processed, n)
        # Rows above the next tile row's windows are final: hand them on, then slide the band.
        last = row == grid.ny - 1
        upto = grid.height if last else min((row + 1) * grid.tile - h, grid.height)
        if upto > finished:
            on_rows(slice(finished, upto), band[finished - band_top : upto - band_top])
            finished = upto
        if not last:
            shift = grid.tile
            band[:-shift] = band[shift:]
            band[-shift:] = 0
            band_top += shift
    style = float(style_value(spec, grams, style_t, counts)) if grams else 0.0
    terms = {"content": content_sum, "style": style, "tv": tv_sum}
    if spec.mrf_layers:
        terms["mrf"] = mrf_sum
    return sum(terms.values()), terms, grams


def host_adam_step(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    targets: dict,
    state: HostState,
    lr: float,
    warmup: int = 0,
    on_tile: Callable[[str, int, int], None] | None = None,
    lagged: dict | None = None,
) -> tuple[float, dict[str, float], dict]:
    """One Adam step of the whole-image objective with host-resident state, each band of
    rows updated as soon as its gradient is final: exact, or one-pass from `lagged` Grams
    (`host_gradient`). Returns the loss before the step, its terms and the Grams there."""
    state.t += 1
    return host_gradient(
        params,
        spec,
        grid,
        batch,
        targets,
        state.x,
        state.content,
        lambda rows, grad: _adam_rows(state, rows, grad, lr, warmup),
        on_tile,
        lagged,
    )
