"""Geometry of overlapping tiles whose cores partition the image exactly at every VGG level.

A tile is a window of `tile + 2·halo` pixels whose central `tile × tile` square is its *core*.
Cores start at multiples of `tile` (itself a multiple of the pooling alignment, 2**levels), so at
every level k the cores' images (÷ 2**k) partition the whole image's positions, and each core
position is computed from a window whose halo covers the receptive field (see
`model.exact_halo`). The conditions and their proof are in the project's design notes
(`exact-tiling.md`).

Windows live in *padded* coordinates: the image is zero-padded by `halo` on the top/left and up to
the last window on the bottom/right, so that every window is an in-bounds static-size slice.

A *wrapping* grid (seamless textures) pads by wrapping around the image instead, so a tile at the
edge sees the opposite edge in its halo, exactly as the untiled circular network does; its tiles
divide the image exactly (`wrap_tile`), so every position of every window is real image.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .sizes import round_up, wrap_tile


def pooled_sizes(size: int, levels: int) -> tuple[int, ...]:
    """Feature-map sizes at levels 0…levels of a floor-pooling network (odd sizes drop a row)."""
    sizes = [size]
    for _ in range(levels):
        sizes.append(sizes[-1] // 2)
    return tuple(sizes)


@dataclass(frozen=True)
class TileGrid:
    """Static tiling of an H×W image; hashable so jitted functions can close over it."""

    height: int
    width: int
    tile: int
    halo: int
    levels: int
    wrap: bool = False

    def __post_init__(self) -> None:
        align = 2**self.levels
        if self.tile <= 0 or self.tile % align or self.halo % align:
            raise ValueError(f"tile {self.tile} and halo {self.halo} must be multiples of {align}")
        if self.wrap and (self.height % self.tile or self.width % self.tile):
            raise ValueError(
                f"a wrapping grid's tile {self.tile} must divide {self.height}×{self.width}"
            )

    @property
    def ny(self) -> int:
        return -(-self.height // self.tile)

    @property
    def nx(self) -> int:
        return -(-self.width // self.tile)

    @property
    def count(self) -> int:
        return self.ny * self.nx

    @property
    def window(self) -> int:
        return self.tile + 2 * self.halo

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.ny * self.tile + 2 * self.halo, self.nx * self.tile + 2 * self.halo

    def origins(self) -> np.ndarray:
        """(count, 2) window origins in padded coordinates, row-major over the tile grid."""
        iy, ix = np.meshgrid(np.arange(self.ny), np.arange(self.nx), indexing="ij")
        return np.stack([iy.ravel(), ix.ravel()], axis=1).astype(np.int32) * self.tile

    def pad(self, x: jax.Array) -> jax.Array:
        """Pad an (H, W, C) image so that every window is in bounds: zeros, or wrapping."""
        ph, pw = self.padded_shape
        h, w = self.halo, self.halo
        widths = ((h, ph - h - self.height), (w, pw - w - self.width), (0, 0))
        return jnp.pad(x, widths, mode="wrap" if self.wrap else "constant")

    def unpad(self, x_pad: jax.Array) -> jax.Array:
        h = self.halo
        return x_pad[h : h + self.height, h : h + self.width]

    def fold(self, g_pad: jax.Array) -> jax.Array:
        """The adjoint of `pad`: a gradient over the padded image → over the image. Wrapping,
        each halo entry is added to the pixel it copies; otherwise the padding is dropped."""
        if not self.wrap:
            return self.unpad(g_pad)
        zeros = jnp.zeros((self.height, self.width, g_pad.shape[-1]), g_pad.dtype)
        return jax.vjp(self.pad, zeros)[1](g_pad)[0]

    def source(self, x: jax.Array) -> jax.Array:
        """What windows are cut from (`extract`): the image itself, whose windows are filled
        with zeros past its edges, so a level holds no padded copy of its image (a
        gigapixel's would be 12 B/px more); a wrapping grid's padded image."""
        return self.pad(x) if self.wrap else x

    def fold_source(self, g_src: jax.Array) -> jax.Array:
        """A gradient over `source(x)` → over x (the adjoint of `source`)."""
        return self.fold(g_src) if self.wrap else g_src

    def _span(self, origin: jax.Array, axis: int) -> tuple[jax.Array, int, jax.Array]:
        """Along one axis, the part of a window that lies inside the image, as the in-bounds
        slice (start, static size) that holds it and the window's start relative to that
        slice. The slice's size is the window's (or the image's, if smaller), its start is
        clamped into the image, and every in-image row of the window lies in it."""
        n = (self.height, self.width)[axis]
        size = min(n, self.window)
        first = origin[axis] - self.halo  # image row of the window's first row
        start = jnp.clip(first, 0, n - size)
        return start, size, first - start

    def extract(self, src: jax.Array, origin: jax.Array) -> jax.Array:
        """The (window, window, C) window at a padded-coordinate origin of `source(x)`: equal
        to `extract(pad(x), origin, window)` without the padded copy."""
        if self.wrap:
            return extract(src, origin, self.window)
        (y, hy, ry), (x, hx, rx) = self._span(origin, 0), self._span(origin, 1)
        part = jax.lax.dynamic_slice(src, (y, x, 0), (hy, hx, src.shape[-1]))
        w, h = self.window, self.halo
        part = jnp.pad(part, ((h, w), (h, w), (0, 0)))
        return jax.lax.dynamic_slice(part, (h + ry, h + rx, 0), (w, w, src.shape[-1]))

    def add_window(self, acc: jax.Array, origin: jax.Array, window: jax.Array) -> jax.Array:
        """acc[window at origin] += window over `source(x)`'s shape (the adjoint of `extract`):
        the same sums, in the same order, as `add_window` over the padded image, less the
        padding's."""
        if self.wrap:
            return add_window(acc, origin, window)
        (y, hy, ry), (x, hx, rx) = self._span(origin, 0), self._span(origin, 1)
        h = self.halo
        pads = ((hy, max(0, hy + h - self.window)), (hx, max(0, hx + h - self.window)), (0, 0))
        g = jnp.pad(window, pads)
        part = jax.lax.dynamic_slice(g, (hy - ry, hx - rx, 0), (hy, hx, acc.shape[-1]))
        current = jax.lax.dynamic_slice(acc, (y, x, 0), part.shape)
        return jax.lax.dynamic_update_slice(acc, current + part, (y, x, 0))

    def core_slice(self, level: int) -> slice:
        """The core's rows (or columns) inside a window at `level`."""
        s = 2**level
        return slice(self.halo // s, (self.halo + self.tile) // s)


def make_grid(
    height: int, width: int, tile: int, halo: int, levels: int, wrap: bool = False
) -> TileGrid:
    """A grid with `tile` and `halo` rounded up to the pooling alignment (2**levels); a
    wrapping grid's tile is `wrap_tile`'s."""
    align = 2**levels
    tile = round_up(max(tile, 1), align)
    if wrap:
        tile = wrap_tile(height, width, tile, align)
    return TileGrid(height, width, tile, round_up(halo, align), levels, wrap)


def valid_masks(grid: TileGrid, origin: jax.Array) -> tuple[jax.Array, ...]:
    """Per-level (window_k, window_k, 1) masks of the positions inside the whole image.

    `origin` is a window's padded-coordinate origin (traced). Multiplying activations by these
    reproduces the untiled network's zero padding and its floor-pooling's dropped rows. A
    wrapping grid's windows hold only real (wrapped) image: all ones.
    """
    if grid.wrap:
        return tuple(jnp.ones((grid.window >> k,) * 2 + (1,)) for k in range(grid.levels + 1))
    oy = origin[0] - grid.halo
    ox = origin[1] - grid.halo
    hs = pooled_sizes(grid.height, grid.levels)
    ws = pooled_sizes(grid.width, grid.levels)
    masks = []
    for k in range(grid.levels + 1):
        n = grid.window >> k
        rows = (oy >> k) + jnp.arange(n)
        cols = (ox >> k) + jnp.arange(n)
        mr = (rows >= 0) & (rows < hs[k])
        mc = (cols >= 0) & (cols < ws[k])
        masks.append((mr[:, None] & mc[None, :]).astype(jnp.float32)[..., None])
    return tuple(masks)


def extract(x_pad: jax.Array, origin: jax.Array, size: int) -> jax.Array:
    """The (size, size, C) window of a padded image at a traced origin."""
    return jax.lax.dynamic_slice(x_pad, (origin[0], origin[1], 0), (size, size, x_pad.shape[-1]))


def add_window(acc: jax.Array, origin: jax.Array, window: jax.Array) -> jax.Array:
    """acc[window at origin] += window; tile gradients are summed this way, halos included."""
    start = (origin[0], origin[1], 0)
    current = jax.lax.dynamic_slice(acc, start, window.shape)
    return jax.lax.dynamic_update_slice(acc, current + window, start)


def batched_origins(grid: TileGrid, batch: int, groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Origins grouped into (n_batches, batch, 2), padded with dead tiles, and a live flag.

    Dead tiles (live = 0) keep every batch the same shape, and the number of batches a multiple
    of `groups` (devices); their masks are zero, so they add nothing to any sum or gradient.
    """
    origins = grid.origins()
    n = round_up(len(origins), batch * groups)
    live = np.zeros(n, np.float32)
    live[: len(origins)] = 1.0
    padded = np.zeros((n, 2), np.int32)
    padded[: len(origins)] = origins
    return padded.reshape(-1, batch, 2), live.reshape(-1, batch)
