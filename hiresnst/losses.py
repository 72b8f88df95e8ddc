"""Gatys et al. loss terms, written as sums over positions so that tiles can add them up.

Every term here is a *sum* over the positions it is given, with the whole image's normalisation
applied by the caller. That is what makes the tiled objective equal the untiled one: a sum over
the whole image is the sum over tile cores.

Normalisation (chosen so that weights do not depend on the image size):
- style, per layer l: ‖G_l/N_l − A_l‖² / C_l², with G_l = Σ_p f(p) f(p)ᵀ over the N_l positions;
- content, per layer: Σ (F − P)² / (N_l · C_l), a mean squared error;
- total variation: Σ over neighbouring pixel pairs of the squared difference / (H · W · 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def acc_dtype(x: jax.Array) -> jnp.dtype:
    """Accumulation dtype: at least fp32 (bf16 features still sum in fp32)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def gram_sum(f: jax.Array) -> jax.Array:
    """Σ_p f(p) f(p)ᵀ over every position (and batch item) of an (..., C) feature map."""
    f2 = f.reshape(-1, f.shape[-1])
    return jnp.einsum("pc,pd->cd", f2, f2, preferred_element_type=acc_dtype(f))


def style_loss_from_grams(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, int],
    layer_weights: dict[str, float],
) -> jax.Array:
    """Σ_l w_l ‖G_l/N_l − A_l‖² / C_l² from summed Grams G_l and normalised targets A_l."""
    total = 0.0
    for name, w in layer_weights.items():
        g = grams[name] / counts[name]
        c = g.shape[-1]
        total = total + w * jnp.sum((g - targets[name]) ** 2) / (c * c)
    return total


def style_gram_cotangents(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, int],
    layer_weights: dict[str, float],
) -> dict[str, jax.Array]:
    """∂(style loss)/∂G_l for summed Grams: held constant in a tile's gradient pass.

    With these D_l, a tile's surrogate Σ_l ⟨D_l, Σ_core f fᵀ⟩ has the tile's share of the
    whole image's style gradient as its own gradient.
    """
    out = {}
    for name, w in layer_weights.items():
        n = counts[name]
        c = grams[name].shape[-1]
        out[name] = (2.0 * w / (n * c * c)) * (grams[name] / n - targets[name])
    return out


def content_sum(f: jax.Array, target: jax.Array) -> jax.Array:
    """Σ (F − P)² in fp32 (divide by N·C of the whole image)."""
    dtype = acc_dtype(f)
    d = f.astype(dtype) - target.astype(dtype)
    return jnp.sum(d * d)


def tv_axis_sum(x: jax.Array, valid: jax.Array | None, axis: int) -> jax.Array:
    """Σ of squared differences between neighbours along `axis` of (..., H, W, C).

    `valid` (…, H, W, 1) marks pixels inside the whole image; a pair counts only when both of
    its pixels are inside, as in the untiled image.
    """
    n = x.shape[axis]
    d = jax.lax.slice_in_dim(x, 1, n, axis=axis) - jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)
    if valid is not None:
        d = d * (
            jax.lax.slice_in_dim(valid, 1, n, axis=axis)
            * jax.lax.slice_in_dim(valid, 0, n - 1, axis=axis)
        )
    return jnp.sum(d * d)


def tv_sum(x: jax.Array) -> jax.Array:
    """Σ of squared differences between vertical and horizontal neighbours of (..., H, W, C)."""
    return tv_axis_sum(x, None, -3) + tv_axis_sum(x, None, -2)
