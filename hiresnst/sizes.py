"""Pyramid level sizes and steps, in plain Python (settings and plans need them without JAX)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import UserError


def output_shape(content_hw: tuple[int, int], long_edge: int) -> tuple[int, int]:
    """(H, W) with the content's aspect ratio and the given long edge (rounded to nearest)."""
    h, w = content_hw
    scale = long_edge / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def default_min_size(size: int, scales: int) -> int:
    """Octaves below the output, but not below 64 px nor above 512 px (the long edge)."""
    return max(min(512, size >> (scales - 1)), min(64, size))


def level_sizes(size: int, scales: int, min_size: int | None = None) -> list[int]:
    """Long edges of the levels, geometric from min(min_size, size) up to size."""
    if scales < 1:
        raise UserError(f"--scales must be at least 1, got {scales}")
    lo = min(default_min_size(size, scales) if min_size is None else min_size, size)
    if scales == 1:
        return [size]
    return [int(round(r)) for r in np.geomspace(lo, size, scales)[:-1]] + [size]


def steps_per_level(steps: int | Sequence[int], levels: int) -> list[int]:
    """One number (coarse levels get more: the last gets `steps`, each coarser one double,
    capped at 4×) or an explicit list with one entry per level."""
    if isinstance(steps, int):
        if steps < 0:
            raise UserError(f"--steps must be ≥ 0, got {steps}")
        return [steps * min(2 ** (levels - 1 - i), 4) for i in range(levels)]
    steps = list(steps)
    if len(steps) != levels:
        raise UserError(f"--steps lists {len(steps)} values but there are {levels} scales")
    if any(s < 0 for s in steps):
        raise UserError(f"--steps must be ≥ 0, got {steps}")
    return steps


def wrap_tile(height: int, width: int, tile: int, align: int) -> int:
    """The largest tile ≤ `tile` (at least `align`) that is a multiple of `align` and divides
    both sides: a wrapping grid has no partial tiles, whose out-of-image positions would be
    wrapped copies that the sums must not count twice."""
    g = math.gcd(height, width)
    if g % align:
        raise ValueError(f"a wrapping grid needs sides that are multiples of {align} px")
    best = align
    for t in range(align, min(tile, g) + 1, align):
        if g % t == 0:
            best = t
    return best


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is ≥ `value` (tiles align to the pooling)."""
    return -(-value // multiple) * multiple
