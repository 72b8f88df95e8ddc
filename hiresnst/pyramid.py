"""Coarse-to-fine schedule: the sizes of the levels and the steps spent at each.

Large structures form at the coarse levels, where a step is cheap; the fine levels refine
detail from an upsampled start, so they need fewer steps.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .imageio import quantize
from .sizes import default_min_size, level_sizes, output_shape, steps_per_level

__all__ = ["default_min_size", "level_sizes", "output_shape", "steps_per_level"]


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


def _span(out_lo: int, block: int, in_size: int, out_size: int) -> tuple[int, int]:
    """(lo, n): the input rows [lo, lo + n) that Lanczos-3 output rows [out_lo, out_lo + block)
    read, with a margin beyond the kernel's reach, so the slice's own edge never changes a
    weight. n is the same for every block of a resize (one compiled shape); lo is clamped so
    that a slice ends at the image's edge rather than past it."""
    inv = in_size / out_size
    reach = _LANCZOS_RADIUS * max(inv, 1.0) + 2
    n = min(in_size, int(np.ceil(block * inv + 2 * reach)) + 2)
    lo = int(np.floor((out_lo + 0.5) * inv - 0.5 - reach))
    return min(max(lo, 0), in_size - n), n


def resize_into(src: np.ndarray, dst: np.ndarray, block: int = RESIZE_BLOCK) -> np.ndarray:
    """`resize(src, dst.shape[:2])` written into `dst` block by block; a uint8 `dst` gets the
    result quantised (round(255·v)).

    For host-resident levels, whose images may be larger than any temporary should be: each
    output block is resized from only the input it reads, so memory beyond `src` and `dst` is
    a few blocks, and `dst` may be a memory-mapped file. Every block has the same shape (edge
    blocks are computed whole and cropped), so a resize compiles once. Equal to `resize` up to
    float rounding of the sample positions (the kernel weights are the same, edges included)."""
    (ih, iw), (oh, ow) = src.shape[:2], dst.shape[:2]
    bh, bw = min(block, oh), min(block, ow)
    with jax.default_device(jax.devices("cpu")[0]):
        for r0 in range(0, oh, bh):
            rl = min(bh, oh - r0)
            for c0 in range(0, ow, bw):
                cl = min(bw, ow - c0)
                if ih == oh and iw == ow:
                    out = np.asarray(src[r0 : r0 + rl, c0 : c0 + cl], np.float32)
                else:
                    out = np.asarray(_resize_block(src, (oh, ow), r0, c0, (bh, bw)))[:rl, :cl]
                dst[r0 : r0 + rl, c0 : c0 + cl] = quantize(out, 8) if dst.dtype == np.uint8 else out
    return dst


def _resize_block(
    src: np.ndarray, out_hw: tuple[int, int], r0: int, c0: int, block: tuple[int, int]
) -> jax.Array:
    """The `block`-sized output block at (r0, c0) of the Lanczos-3 resize of `src` to `out_hw`
    (rows past the image's edge are garbage, for the caller to crop)."""
    slices, dims, scale, shift = [], [], [], []
    for d, o0 in enumerate((r0, c0)):
        if src.shape[d] == out_hw[d]:  # `resize` leaves an unscaled axis untouched
            slices.append((o0, block[d]))
            continue
        lo, n = _span(o0, block[d], src.shape[d], out_hw[d])
        s = out_hw[d] / src.shape[d]
        slices.append((lo, n))
        dims.append(d)
        scale.append(s)
        shift.append(lo * s - o0)  # output row o0 + i samples input (o0 + i + ½)/s − ½ − lo
    (y0, ny), (x0, nx) = slices
    part = np.zeros((ny, nx, src.shape[2]), np.float32)  # zero past an unscaled axis's end
    got = src[y0 : y0 + ny, x0 : x0 + nx]
    part[: got.shape[0], : got.shape[1]] = got
    return _scale_translate(part, block, tuple(dims), np.float32(scale), np.float32(shift))


@partial(jax.jit, static_argnums=(1, 2))
def _scale_translate(part, out_hw: tuple[int, int], dims: tuple[int, ...], scale, shift):
    out = jax.image.scale_and_translate(
        part, (*out_hw, part.shape[2]), dims, scale, shift, method="lanczos3", antialias=True
    )
    return jnp.clip(out, 0.0, 1.0)
