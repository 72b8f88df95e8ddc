"""Host-resident render state for outputs that do not fit on the device.

The image, Adam's two moments and the level's content image live in host memory (NumPy arrays,
or memory-mapped files under `state_dir`), and tile windows stream to the device:

- pass 1 sends each batch of windows and gets back its Gram sums (a few MB per batch);
- pass 2 goes tile row by tile row. Each batch's windows (image and content) go to the device,
  which computes the content features and the tile gradients; the gradients are added into a
  band of rows on the host. Once a tile row is done, the rows above the next row's windows have
  their final gradient, so Adam updates them there and then. That is exact: later tile rows never
  read those rows again in this step, and they receive no more gradient.

Host memory per output pixel: image 12 B + Adam moments 24 B (fp32) + content 6 B (fp16) =
42 B, plus one band of gradient rows (tile + 2·halo rows); nothing else scales with the image.
Storing the content in fp16 is the one difference from the on-device path (a relative rounding
of at most 2⁻¹¹ of a pixel value in the content target).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import losses
from .objective import LossSpec, _core, _counts, _local_terms, _zeros_grams, features
from .tiling import TileGrid, valid_masks

BYTES_PER_PIXEL = 12 + 24 + 6


def _alloc(state_dir: Path | None, name: str, shape, dtype, init=None) -> np.ndarray:
    """A zeroed (or `init`) array in RAM, or memory-mapped at state_dir/name.npy."""
    if state_dir is None:
        arr = np.zeros(shape, dtype)
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(state_dir / f"{name}.npy", "w+", dtype, shape)
        if init is None:
            arr[...] = 0
    if init is not None:
        arr[...] = init
    return arr


@dataclass
class HostState:
    """One level's image, Adam moments and content, in host memory or memory-mapped files.

    The moments are allocated at the first Adam update (or restore), so that the caller can
    drop its float32 copies of the start image and content first: peak memory stays at the
    state's own 42 B/px.
    """

    x: np.ndarray
    content: np.ndarray
    state_dir: Path | None = None
    t: int = 0
    _moments: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def create(cls, x: np.ndarray, content: np.ndarray, state_dir: Path | None) -> HostState:
        return cls(
            x=_alloc(state_dir, "image", x.shape, np.float32, x),
            content=_alloc(state_dir, "content", x.shape, np.float16, content),
            state_dir=state_dir,
        )

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
                _alloc(self.state_dir, "adam_m", shape, np.float32),
                _alloc(self.state_dir, "adam_v", shape, np.float32),
            )
        return self._moments

    def opt_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Adam's state as checkpoint leaves."""
        return self.m, self.v, np.asarray(self.t, np.int64)

    def restore(self, leaves: list[np.ndarray]) -> None:
        from .errors import UserError

        if len(leaves) != 3 or leaves[0].shape != self.x.shape:
            raise UserError(
                "checkpoint's optimiser state is not a host-state Adam state; pass --restart"
            )
        self.m[...] = leaves[0]
        self.v[...] = leaves[1]
        self.t = int(leaves[2])


def host_window(arr: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """arr[top:top+size, left:left+size] in float32, zero outside the array."""
    out = np.zeros((size, size, arr.shape[2]), np.float32)
    h, w = arr.shape[:2]
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = arr[y0:y1, x0:x1]
    return out


def _batch_masks(grid: TileGrid, origins: jax.Array, live: jax.Array):
    masks = jax.vmap(lambda o: valid_masks(grid, o))(origins)
    return tuple(m * live[:, None, None, None] for m in masks)


@partial(jax.jit, static_argnums=(1, 2))
def _gram_batch(params, spec: LossSpec, grid: TileGrid, wins, origins, live):
    names = tuple(n for n, _ in spec.style_layers)
    masks = _batch_masks(grid, origins, live)
    feats = features(params, spec, wins, names, masks)
    acc = _zeros_grams(spec, names)
    return {n: acc[n] + losses.gram_sum(_core(grid, feats[n], int(n[4]) - 1)) for n in names}


@partial(jax.jit, static_argnums=(1, 2))
def _grad_batch(params, spec: LossSpec, grid: TileGrid, wins, content_wins, origins, live, cot):
    """Tile gradients of the surrogate (style through fixed ∂L/∂G, content, TV) for a batch."""
    masks = _batch_masks(grid, origins, live)
    counts = _counts(spec, grid.height, grid.width)
    content_names = tuple(n for n, _ in spec.content_layers)
    content_feats = features(params, spec, content_wins, content_names, masks)
    targets = {n: _core(grid, content_feats[n], int(n[4]) - 1) for n in content_names}
    style_names = tuple(n for n, _ in spec.style_layers)

    def surrogate(w):
        feats = features(params, spec, w, spec.outputs, masks)
        s = sum(
            jnp.sum(cot[n] * losses.gram_sum(_core(grid, feats[n], int(n[4]) - 1)))
            for n in style_names
        )
        c, tv, _ = _local_terms(spec, grid, w, masks, feats, targets, counts)  # no MRF here
        return s + c + tv, (c, tv)

    g, (c, tv) = jax.grad(surrogate, has_aux=True)(wins)
    return g, c, tv


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
) -> dict[str, jax.Array]:
    """Σ f fᵀ of each style layer over a host-resident image, one batch of windows at a time."""
    origins = grid.origins()
    grams = _zeros_grams(spec, tuple(n for n, _ in spec.style_layers))
    done = 0
    for idx, pad, live in _batches(np.arange(len(origins)), batch):
        part = _gram_batch(
            params, spec, grid, _windows(image, grid, origins[pad]), origins[pad], live
        )
        grams = {k: grams[k] + part[k] for k in grams}
        done += len(idx)
        if on_tile:
            on_tile("pass 1", done, len(origins))
    return grams


@functools.lru_cache(maxsize=8)
def _adam_band(lr: float):
    """optax.adam's own update, applied to a band of rows and projected to [0, 1]: the same
    arithmetic as the on-device step, run on the CPU backend next to the host arrays."""
    opt = optax.adam(lr)

    def update(x, m, v, g, count):
        state = (optax.ScaleByAdamState(count=count, mu=m, nu=v), optax.EmptyState())
        updates, (adam, _) = opt.update(g, state, x)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), adam.mu, adam.nu

    return jax.jit(update)


def _adam_rows(state: HostState, rows: slice, grad: np.ndarray, lr: float) -> None:
    """Adam on the rows whose gradient is final, in place in the host arrays."""
    count = np.asarray(state.t - 1, np.int32)  # optax counts the steps taken before this one
    with jax.default_device(jax.devices("cpu")[0]):
        x, m, v = _adam_band(float(lr))(state.x[rows], state.m[rows], state.v[rows], grad, count)
        state.x[rows], state.m[rows], state.v[rows] = np.asarray(x), np.asarray(m), np.asarray(v)


def host_adam_step(
    params,
    spec: LossSpec,
    grid: TileGrid,
    batch: int,
    style_targets: dict[str, jax.Array],
    state: HostState,
    lr: float,
    on_tile: Callable[[str, int, int], None] | None = None,
) -> tuple[float, dict[str, float]]:
    """One exact Adam step of the whole-image objective with host-resident state.

    Returns the loss (at the image before the step) and its terms."""
    origins = grid.origins()
    n = len(origins)
    h, size = grid.halo, grid.window
    counts = _counts(spec, grid.height, grid.width)
    weights = spec.style_weights()

    def windows(arr, idx):
        return _windows(arr, grid, origins[idx])

    grams = host_grams(params, spec, grid, batch, state.x, on_tile)
    style = float(losses.style_loss_from_grams(grams, style_targets, counts, weights))
    cot = losses.style_gram_cotangents(grams, style_targets, counts, weights)

    state.t += 1
    width = grid.width
    band = np.zeros((grid.tile + 2 * h, width, 3), np.float32)
    band_top = -h  # image row of band[0]
    content_sum = tv_sum = 0.0
    finished = 0  # rows above this have been updated
    processed = 0
    for row in range(grid.ny):
        row_idx = np.arange(row * grid.nx, (row + 1) * grid.nx)
        for idx, pad, live in _batches(row_idx, batch):
            g, c, tv = _grad_batch(
                params,
                spec,
                grid,
                windows(state.x, pad),
                windows(state.content, pad),
                origins[pad],
                live,
                cot,
            )
            content_sum += float(c)
            tv_sum += float(tv)
            g = np.asarray(g)
            for k, tile in enumerate(idx):
                left = origins[tile][1] - h
                x0, x1 = max(left, 0), min(left + size, width)
                band[:, x0:x1] += g[k, :, x0 - left : x1 - left]
            processed += len(idx)
            if on_tile:
                on_tile("pass 2", processed, n)
        # Rows above the next tile row's windows are final: update them, then slide the band.
        last = row == grid.ny - 1
        upto = grid.height if last else min((row + 1) * grid.tile - h, grid.height)
        if upto > finished:
            _adam_rows(
                state, slice(finished, upto), band[finished - band_top : upto - band_top], lr
            )
            finished = upto
        if not last:
            shift = grid.tile
            band[:-shift] = band[shift:]
            band[-shift:] = 0
            band_top += shift
    loss = content_sum + style + tv_sum
    return loss, {"content": content_sum, "style": style, "tv": tv_sum}
