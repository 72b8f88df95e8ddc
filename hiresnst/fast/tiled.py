"""Tile-by-tile transformer with whole-image instance-norm statistics: exact, not approximate.

The transformer (`transform.py`) differs from VGG in three ways that matter for tiling:

1. **Instance norm (13 CIN layers) uses statistics of the whole feature map.** A tile cannot
   compute them alone, and layer k's statistics depend on the outputs of layers < k, which
   depend on their statistics. So the statistics are gathered in order, one pass per CIN layer:
   pass k runs every tile through the network with the already known whole-image statistics of
   layers 0…k-1 and returns, per tile, the count, mean and centred sum of squares of CIN k's
   input over the tile's *core* positions that lie inside the image; the host merges them in
   float64 (Chan et al.'s pairwise update, no E[x²]−E[x]² cancellation). A last pass renders
   the tiles with all 13 statistics known. Cores partition the image at every level, so each
   position is counted exactly once: the statistics equal the untiled ones up to fp32 summation
   order. To compile two functions instead of 14, `known` always holds 13 entries (placeholders
   for layers not yet measured, whose downstream effects are discarded) and passes 0–9 run the
   network up to the first expand CIN, passes 10–13 all of it. In multiply-adds per input pixel
   (contract 2520, residual 5760, expand 4248) that is 10·0.66 + 4·1 ≈ 10.6× the untiled
   network, times the halo overhead ((tile + 112)² / tile²).

2. **REFLECT padding, not zero padding.** Masks cannot emulate it. Instead, before every conv a
   window is "fixed up": each of its positions outside the image takes the value of its mirror
   position inside (`layers.reflect_index`, a gather with indices computed from the window's
   traced origin), then the window is padded by the conv's pad with anything (zeros): only the
   outer `pad` ring of the window is affected, which lies in the halo. For positions inside the
   image this is the identity, and the values the untiled network reads at −p…−1 (or past the
   far edge) are mirror copies of positions 1…p, which are exact: a position i < d reading i − d
   (d ≤ p) gets position d − i, within distance d of i on the inner side, so inside the
   receptive radius that the halo already covers — also for a last tile whose core holds only a
   few image rows. Positions further outside hold garbage that no in-image position reads.

3. **Strided convs and ×2 nearest upsampling.** They stay aligned if every window starts at a
   multiple of 4 image pixels (tile and halo are multiples of 4, as `tiling.TileGrid` enforces for
   `levels=2`): a stride-2 conv's output i reads inputs 2i−1…2i+1 in both the window and the
   image, and the upsampled position j reads j // 2 in both. H and W must be multiples of 4 (the
   network itself needs that for its output to match its input size; `stylize` reflect-pads to
   it and crops), so level sizes are exact halvings.

The halo is the receptive radius computed backwards through the layer list (`exact_halo`):
conv3 9×9 → 4; conv2 3×3 → 5 → ⌈5/2⌉ = 3 at 1/2; conv1 → 4 → 2 at 1/4; ten residual convs
→ 12; contract conv3 (stride 2) → 2·12+1 = 25 at 1/2; conv2 → 51; conv1 9×9 → 55; rounded up to
56 image pixels. Every prefix of the network needs no more (the radius only grows backwards), so
the same grid serves all passes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..sizes import round_up
from ..tiling import TileGrid, extract, make_grid, valid_masks
from .layers import reflect_index
from .transform import CONTRACT, EXPAND, RESIDUAL_BLOCKS, Transformer, norm_levels

LEVELS = 2  # two stride-2 convs: windows must start at multiples of 4


def exact_halo(residual_blocks: int = RESIDUAL_BLOCKS) -> int:
    """Smallest halo (image pixels, a multiple of 4) that makes every tile core exact."""
    m = 0  # margin needed around the core, in positions of the current level
    for _, k, up in reversed(EXPAND):
        m += k // 2  # the conv after the upsampling, at the finer level
        m = -(-m // up)  # out[j] = in[j // up]
    m += 2 * residual_blocks  # two 3×3 convs per block at 1/4 resolution
    for _, k, stride in reversed(CONTRACT):
        m = stride * m + k // 2  # out[i] reads in[stride·i − p … stride·i + p]
    return round_up(m, 2**LEVELS)


class TileContext:
    """`layers.Context` for one window: reflect fix-up at the image border, given statistics.

    `stats` hands out the known whole-image statistics (`known[index]`, placeholders for layers
    not yet measured) and records the tile's core moments of every CIN input it sees.
    """

    def __init__(self, grid: TileGrid, origin: jax.Array, known: Sequence[tuple]):
        self.grid = grid
        self.origin = origin
        self.known = known
        self.moments: list[tuple[jax.Array, jax.Array, jax.Array]] = []

    def _fix(self, h: jax.Array, axis: int, start: jax.Array, size: int) -> jax.Array:
        n = h.shape[axis]
        src = reflect_index(start + jnp.arange(n), size) - start
        return jnp.take(h, jnp.clip(src, 0, n - 1), axis=axis)

    def pad(self, h: jax.Array, p: int, level: int) -> jax.Array:
        g = self.grid
        y0 = (self.origin[0] - g.halo) >> level
        x0 = (self.origin[1] - g.halo) >> level
        h = self._fix(h, 1, y0, g.height >> level)
        h = self._fix(h, 2, x0, g.width >> level)
        return jnp.pad(h, ((0, 0), (p, p), (p, p), (0, 0)))

    def stats(self, index: int, h: jax.Array, level: int) -> tuple[jax.Array, jax.Array]:
        self.moments.append(_tile_moments(self.grid, self.origin, h, level))
        return self.known[index]


def _tile_moments(grid: TileGrid, origin: jax.Array, h: jax.Array, level: int):
    """(count, mean (C,), centred sum of squares (C,)) of a window's in-image core at `level`."""
    core = grid.core_slice(level)
    mask = valid_masks(grid, origin)[level][core, core]  # (t, t, 1)
    x = h[0, core, core]
    n = jnp.sum(mask)
    mean = jnp.sum(x * mask, axis=(0, 1)) / jnp.maximum(n, 1.0)
    m2 = jnp.sum(jnp.square((x - mean) * mask), axis=(0, 1))
    return n, mean, m2


def merge_moments(n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, ...]:
    """Whole-image (mean, variance) from per-tile (count, mean, M2), in float64."""
    n = np.asarray(n, np.float64)[:, None]
    mean = np.asarray(mean, np.float64)
    total = n.sum()
    mu = (n * mean).sum(0) / total
    var = (np.asarray(m2, np.float64).sum(0) + (n * np.square(mean - mu)).sum(0)) / total
    return mu.astype(np.float32), var.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _pass_fn(grid: TileGrid, full: bool, widths: tuple, blocks: int, batch: int):
    """Jitted pass over all tiles → (per-tile moments of each CIN input reached, cores or None).

    `full=False` stops before the first expand CIN (the residual stage, passes 0…9); `full=True`
    runs the whole network. Two compiled functions serve all passes: `known` always holds all
    13 statistics (placeholders for those not measured yet, whose effects are discarded).
    """
    model = Transformer(widths, blocks)
    until = None if full else 2 * blocks

    def one(params, x_pad, style, known, origin):
        window = extract(x_pad, origin, grid.window)[None]
        ctx = TileContext(grid, origin, known)
        h = model.apply({"params": params}, window, style, ctx, until=until)
        core = grid.core_slice(0)
        return tuple(ctx.moments), (h[0, core, core] if full else None)

    def run(params, x_pad, style, known, origins):
        f = functools.partial(one, params, x_pad, style, known)
        return jax.lax.map(f, origins, batch_size=batch)

    return jax.jit(run)


def transform_tiled(
    params: dict,
    x: jax.Array | np.ndarray,
    style: jax.Array | np.ndarray,
    tile: int,
    *,
    halo: int | None = None,
    batch: int = 1,
) -> jax.Array:
    """Tiled transformer on one (H, W, 3) image (H, W multiples of 4) → (H, W, 3) in [0, 1].

    Equal to `transform.transform` up to fp32 summation order. `tile` is rounded up to a
    multiple of 4; `batch` tiles are vmapped together inside each pass.
    """
    from .transform import residual_blocks_of, widths_of

    x = jnp.asarray(x, jnp.float32)
    h, w = int(x.shape[0]), int(x.shape[1])
    if h % 4 or w % 4:
        raise ValueError(f"image size {h}×{w} must be a multiple of 4 (reflect-pad it first)")
    blocks = residual_blocks_of(params)
    widths = widths_of(params)
    grid = make_grid(h, w, tile, exact_halo(blocks) if halo is None else halo, LEVELS)
    style = jnp.reshape(jnp.asarray(style, jnp.float32), (1, -1))
    x_pad = grid.pad(x)
    origins = jnp.asarray(grid.origins())
    batch = max(1, min(batch, grid.count))
    levels = norm_levels(blocks)
    known = [
        (jnp.zeros((1, 1, 1, c), jnp.float32), jnp.ones((1, 1, 1, c), jnp.float32))
        for c in (widths[2],) * (2 * blocks) + (widths[1], widths[0], 3)
    ]
    for k in range(len(levels)):
        full = k >= 2 * blocks
        moments, _ = _pass_fn(grid, full, widths, blocks, batch)(
            params, x_pad, style, tuple(known), origins
        )
        n, mean, m2 = (np.asarray(a) for a in moments[k])
        mu, var = merge_moments(n, mean, m2)
        known[k] = (jnp.asarray(mu).reshape(1, 1, 1, -1), jnp.asarray(var).reshape(1, 1, 1, -1))
    _, cores = _pass_fn(grid, True, widths, blocks, batch)(
        params, x_pad, style, tuple(known), origins
    )
    t = grid.tile
    out = cores.reshape(grid.ny, grid.nx, t, t, 3).transpose(0, 2, 1, 3, 4)
    return out.reshape(grid.ny * t, grid.nx * t, 3)[:h, :w]
