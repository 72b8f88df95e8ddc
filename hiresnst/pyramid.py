"""Coarse-to-fine schedule: the sizes of the levels and the steps spent at each.

Large structures form at the coarse levels, where a step is cheap; the fine levels refine
detail from an upsampled start, so they need fewer steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
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


def resize(image: jax.Array | np.ndarray, hw: tuple[int, int]) -> jax.Array:
    """Antialiased resize of an (H, W, 3) float image (Lanczos-3), clipped to [0, 1]."""
    image = jnp.asarray(image, jnp.float32)
    if tuple(image.shape[:2]) == tuple(hw):
        return image
    out = jax.image.resize(image, (*hw, image.shape[2]), method="lanczos3", antialias=True)
    return jnp.clip(out, 0.0, 1.0)


#: Output block side of `resize_into`: its temporaries are a few blocks of this size.
RESIZE_BLOCK = 256
_LANCZOS_RADIUS = 3


def _input_span(out_lo: int, out_len: int, in_size: int, out_size: int) -> tuple[int, int]:
    """Input rows [lo, hi) that Lanczos-3 output rows [out_lo, out_lo + out_len) read, with a
    margin beyond the kernel's reach (so the slice's own edge never changes a weight)."""
    inv = in_size / out_size
    reach = _LANCZOS_RADIUS * max(inv, 1.0) + 2
    lo = int(np.floor((out_lo + 0.5) * inv - 0.5 - reach))
    hi = int(np.ceil((out_lo + out_len - 0.5) * inv - 0.5 + reach)) + 1
    return max(lo, 0), min(hi, in_size)


def resize_into(src: np.ndarray, dst: np.ndarray, block: int = RESIZE_BLOCK) -> np.ndarray:
    """`resize(src, dst.shape[:2])` written into `dst` block by block; a uint8 `dst` gets the
    result quantised (round(255·v)).

    For host-resident levels, whose images may be larger than any temporary should be: each
    output block is resized from only the input it reads, so memory beyond `src` and `dst` is
    a few blocks, and `dst` may be a memory-mapped file. Equal to `resize` up to float rounding
    of the sample positions (the kernel weights are the same, edges included)."""
    (ih, iw), (oh, ow) = src.shape[:2], dst.shape[:2]
    same = ih == oh and iw == ow
    with jax.default_device(jax.devices("cpu")[0]):
        for r0 in range(0, oh, block):
            rl = min(block, oh - r0)
            for c0 in range(0, ow, block):
                cl = min(block, ow - c0)
                if same:
                    out = np.asarray(src[r0 : r0 + rl, c0 : c0 + cl], np.float32)
                else:
                    out = np.asarray(_resize_block(src, (ih, iw), (oh, ow), r0, rl, c0, cl))
                if dst.dtype == np.uint8:
                    out = np.rint(np.clip(out, 0.0, 1.0) * 255.0)
                dst[r0 : r0 + rl, c0 : c0 + cl] = out
    return dst


def _resize_block(src, in_hw, out_hw, r0: int, rl: int, c0: int, cl: int) -> jax.Array:
    """Output rows r0:r0+rl, columns c0:c0+cl of the Lanczos-3 resize of `src` to `out_hw`."""
    spans, dims, scale, shift = [], [], [], []
    for d, (o0, ol) in enumerate(((r0, rl), (c0, cl))):
        if in_hw[d] == out_hw[d]:  # `resize` leaves an unscaled axis untouched
            spans.append((o0, o0 + ol))
            continue
        lo, hi = _input_span(o0, ol, in_hw[d], out_hw[d])
        spans.append((lo, hi))
        s = out_hw[d] / in_hw[d]
        dims.append(d)
        scale.append(s)
        shift.append(lo * s - o0)  # output row o0 + i samples input (o0 + i + ½)/s − ½ − lo
    (y0, y1), (x0, x1) = spans
    part = np.asarray(src[y0:y1, x0:x1], np.float32)
    return _scale_translate(part, (rl, cl), tuple(dims), np.float32(scale), np.float32(shift))


@partial(jax.jit, static_argnums=(1, 2))
def _scale_translate(part, out_hw: tuple[int, int], dims: tuple[int, ...], scale, shift):
    """Jitted per block shape: the interior blocks share a few shapes, so this compiles a
    handful of times per resize and then runs without per-op dispatch."""
    out = jax.image.scale_and_translate(
        part, (*out_hw, part.shape[2]), dims, scale, shift, method="lanczos3", antialias=True
    )
    return jnp.clip(out, 0.0, 1.0)
