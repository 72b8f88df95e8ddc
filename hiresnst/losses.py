"""Gatys et al. loss terms, written as sums over positions so that tiles can add them up.

Every term here is a *sum* over the positions it is given, with the whole image's normalisation
applied by the caller. That is what makes the tiled objective equal the untiled one: a sum over
the whole image is the sum over tile cores.

Normalisation (chosen so that weights do not depend on the image size):
- style, per layer l: ‖G_l/N_l − A_l‖² / C_l², with G_l = Σ_p f(p) f(p)ᵀ over the N_l positions;
- content, per layer: Σ (F − P)² / (N_l · C_l), a mean squared error;
- total variation: Σ over neighbouring pixel pairs of the squared difference / (H · W · 3).

Neural patches (MRF, Li and Wand 2016), per layer: Σ_p ‖Ψ_p − Ψ_NN(p)‖² / (N'_l · 9 · C_l) over
the N'_l positions whose 3×3 patch Ψ_p lies inside the image: a local sum, like the content term.

Spatial masks (`masks.py`) weight the same sums per position: a style's Gram becomes
Σ_p m(p) f(p) f(p)ᵀ with N = Σ_p m(p), and the content sum Σ_p m(p) ‖F(p) − P(p)‖².

Wasserstein-2 style loss, per layer: the W2 distance between Gaussian fits of the image's and
the style's features, (‖μ − μ_s‖² + tr(Σ + Σ_s − 2(Σ_s^½ Σ Σ_s^½)^½)) / C_l. Its statistics are
the Gram of the features *augmented* with a constant 1 channel, G̃ = Σ_p f̃ f̃ᵀ with f̃ = (f, 1):
G̃ holds Σ f fᵀ, Σ f and N, all sums over positions, so tiles, devices and masks add them
exactly as they add Grams, and the same "held-constant cotangent" surrogate gives the gradient.
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
    total = jnp.float32(0.0)
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
    whole image's style gradient as its own gradient. Derived from `style_loss_from_grams`, so
    the two cannot drift apart.
    """
    return jax.grad(style_loss_from_grams)(grams, targets, counts, layer_weights)


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


def tv_sum(x: jax.Array, wrap: bool = False) -> jax.Array:
    """Σ of squared differences between vertical and horizontal neighbours of (..., H, W, C);
    with `wrap`, the last row (column) neighbours the first (a seamless texture)."""
    if wrap:
        return sum(jnp.sum((jnp.roll(x, -1, axis) - x) ** 2) for axis in (-3, -2))
    return tv_axis_sum(x, None, -3) + tv_axis_sum(x, None, -2)


# ------------------------------------------------------------------ spatial masks


def masked_gram_sum(f: jax.Array, m: jax.Array) -> jax.Array:
    """Σ_p m_s(p) f(p) f(p)ᵀ for each mask s: f (..., C) and m (S, ...) → (S, C, C).

    `m`'s trailing shape is f's without the channel axis. One style at a time, so that the
    temporary m_s·f is one feature map, not S of them.
    """
    c = f.shape[-1]
    f2 = f.reshape(-1, c)
    m2 = m.reshape(m.shape[0], -1).astype(f.dtype)
    return jnp.stack(
        [
            jnp.einsum("pc,pd->cd", f2 * m2[s][:, None], f2, preferred_element_type=acc_dtype(f))
            for s in range(m2.shape[0])
        ]
    )


def _safe_counts(n: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(n > 0, n with zeros replaced by 1): a style whose mask is black at a level adds 0."""
    ok = n > 0
    return ok, jnp.where(ok, n, 1.0)


def masked_style_loss(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, jax.Array],
    blend: jax.Array,
    layer_weights: dict[str, float],
) -> jax.Array:
    """Σ_s b_s Σ_l w_l ‖G_sl/N_sl − A_sl‖² / C_l² from masked Grams (S, C, C), the styles' own
    normalised targets A (S, C, C), mask sums N (S,) and normalised blend weights b (S,).

    A style whose mask sums to 0 at a layer's level contributes 0 there.
    """
    total = jnp.float32(0.0)
    for name, w in layer_weights.items():
        ok, n = _safe_counts(counts[name])
        g = grams[name] / n[:, None, None]
        c = g.shape[-1]
        err = jnp.sum((g - targets[name]) ** 2, axis=(1, 2))
        total = total + w * jnp.sum(jnp.where(ok, blend * err, 0.0)) / (c * c)
    return total


def masked_style_gram_cotangents(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, jax.Array],
    blend: jax.Array,
    layer_weights: dict[str, float],
) -> dict[str, jax.Array]:
    """∂(masked style loss)/∂G_sl, (S, C, C) per layer: held constant in a tile's gradient pass,
    where the surrogate is Σ_s Σ_l ⟨D_sl, Σ_core m_s f fᵀ⟩. Derived from `masked_style_loss`."""
    return jax.grad(masked_style_loss)(grams, targets, counts, blend, layer_weights)


def masked_content_sum(f: jax.Array, target: jax.Array, m: jax.Array) -> jax.Array:
    """Σ_p m(p) ‖F(p) − P(p)‖² in fp32; `m` has f's shape without the channel axis."""
    dtype = acc_dtype(f)
    d = f.astype(dtype) - target.astype(dtype)
    return jnp.sum(m.astype(dtype) * jnp.sum(d * d, axis=-1))


# ------------------------------------------------------------------ neural patches (MRF)


def patches3x3(f: jax.Array, wrap: bool = False) -> jax.Array:
    """(..., H, W, C) → (..., H, W, 9·C): each position's 3×3 neighbourhood, zeros beyond the
    map's edge (or the opposite edge, with `wrap`). One layout for the style's patch bank and
    the image's patches."""
    pad = [(0, 0)] * (f.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    fp = jnp.pad(f, pad, mode="wrap" if wrap else "constant")
    h, w = f.shape[-3], f.shape[-2]
    views = [fp[..., dy : dy + h, dx : dx + w, :] for dy in range(3) for dx in range(3)]
    return jnp.concatenate(views, axis=-1)


def interior(valid: jax.Array) -> jax.Array:
    """(..., H, W, 1) in-image mask → positions whose whole 3×3 neighbourhood is in the image.

    Li and Wand match only patches that lie wholly inside the image; a window's positions
    beyond the image are 0 in `valid`, so this is the same set in a tile as in the whole image.
    """
    pad = [(0, 0)] * (valid.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    window = (1,) * (valid.ndim - 3) + (3, 3, 1)
    init = jnp.array(jnp.inf, valid.dtype)
    return jax.lax.reduce_window(
        jnp.pad(valid, pad), init, jax.lax.min, window, (1,) * valid.ndim, "VALID"
    )


def nearest_patches(q: jax.Array, bank: jax.Array, bank_ok: jax.Array) -> jax.Array:
    """For patches q (M, D), the bank rows of highest normalised cross-correlation.

    The bank comes in chunks, (n, chunk, D) with `bank_ok` (n, chunk) marking real rows
    (padding rows never win); it is scanned a chunk at a time so that the M×chunk score matrix,
    not M×K, bounds memory. ‖q‖ does not change which row wins, so only the bank is normalised.
    """
    n, chunk, _ = bank.shape
    norms = jnp.sqrt(jnp.sum(jnp.square(bank.astype(jnp.float32)), axis=-1, keepdims=True))
    hat = (bank / jnp.maximum(norms, 1e-12)).astype(q.dtype)

    def body(carry, xs):
        best, idx = carry
        i, h, ok = xs
        s = jnp.einsum("md,kd->mk", q, h, preferred_element_type=jnp.float32)
        s = jnp.where(ok[None, :], s, -jnp.inf)
        j = jnp.argmax(s, axis=1)
        v = jnp.max(s, axis=1)
        better = v > best
        return (jnp.where(better, v, best), jnp.where(better, i * chunk + j, idx)), None

    m = q.shape[0]
    init = (jnp.full((m,), -jnp.inf, jnp.float32), jnp.zeros((m,), jnp.int32))
    (_, idx), _ = jax.lax.scan(body, init, (jnp.arange(n), hat, bank_ok))
    return jnp.take(bank.reshape(n * chunk, -1), idx, axis=0)


def mrf_sum(q: jax.Array, inside: jax.Array, bank: jax.Array, bank_ok: jax.Array) -> jax.Array:
    """Σ_p inside(p) ‖Ψ_p − Ψ_NN(p)‖² over patches q (..., 9·C) from `patches3x3`, in fp32
    (Li and Wand 2016).

    NN(p) is Ψ_p's nearest style patch by normalised cross-correlation. The match is held
    constant (it is piecewise constant in the image), so the gradient pulls each patch towards
    its match. `inside` (q's shape without the last axis) weights the positions.
    """
    flat = q.reshape(-1, q.shape[-1])
    target = nearest_patches(jax.lax.stop_gradient(flat), bank, bank_ok)
    dtype = acc_dtype(q)
    d = flat.astype(dtype) - target.astype(dtype)
    return jnp.sum(inside.reshape(-1).astype(dtype) * jnp.sum(d * d, axis=-1))


# ------------------------------------------------------------------ Wasserstein-2 (Gaussian fits)

#: Newton–Schulz iterations for the matrix square roots. A Frobenius-normalised eigenvalue λ
#: converges after ~log_1.5(1/λ) + 5 iterations; fewer leave the tiny eigenvalues of
#: rank-deficient covariances (few positions, many channels) partly unconverged, which caps
#: the gradient of √λ near 0 instead of letting it blow up.
NS_ITERS = 20

#: W2 is quadratic in the features where the Gram loss is quartic; this factor puts the W2 term
#: on the Gram term's scale so that one `--style-weight` balances either loss against the
#: content. Measured at the content image, default layers, random VGG19, 128 px: the Gram
#: term's style gradient is 2.5× (tubingen/starry_night) and 3.5× (golden_gate/the_scream) the
#: unscaled W2 term's; 3 is about their geometric mean.
W2_SCALE = 3.0


def augment(f: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """(..., C) features → (..., C + 1) with a last channel of 1 where a position is counted
    (`valid`, f's shape with 1 channel; all positions when None)."""
    one = jnp.ones((*f.shape[:-1], 1), f.dtype) if valid is None else valid.astype(f.dtype)
    return jnp.concatenate([f, one], axis=-1)


def sqrtm_ns(a: jax.Array, iters: int = NS_ITERS) -> jax.Array:
    """Square root of a symmetric positive semi-definite (C, C) matrix by the coupled
    Newton–Schulz iteration, in fp32: matrix products only (fast on accelerators, differentiable
    by autodiff), unlike an eigendecomposition."""
    a = a.astype(jnp.float32)
    eye = jnp.eye(a.shape[-1], dtype=jnp.float32)
    norm = jnp.sqrt(jnp.sum(a * a) + 1e-30)  # finite gradient at 0 (an empty masked style)
    y, z = a / norm, eye

    def body(_, yz):
        y, z = yz
        t = 0.5 * (3.0 * eye - z @ y)
        return y @ t, t @ z

    y, _ = jax.lax.fori_loop(0, iters, body, (y, z))
    return y * jnp.sqrt(norm)


def gaussian_fit(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(μ, Σ) from a normalised augmented Gram G̃/N (C + 1, C + 1)."""
    c = a.shape[-1] - 1
    mu = a[:c, c]
    cov = a[:c, :c] - jnp.outer(mu, mu)
    return mu, 0.5 * (cov + cov.T)


def w2_squared(a: jax.Array, target: jax.Array) -> jax.Array:
    """‖μ − μ_s‖² + tr(Σ + Σ_s − 2(Σ_s^½ Σ Σ_s^½)^½) between the Gaussian fits of two
    normalised augmented Grams (the image's `a`, the style's `target`)."""
    mu, cov = gaussian_fit(a.astype(jnp.float32))
    mu_s, cov_s = gaussian_fit(target.astype(jnp.float32))
    root_s = sqrtm_ns(cov_s)
    cross = sqrtm_ns(root_s @ cov @ root_s)
    return jnp.sum((mu - mu_s) ** 2) + jnp.trace(cov) + jnp.trace(cov_s) - 2.0 * jnp.trace(cross)


def w2_style_loss(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, int],
    layer_weights: dict[str, float],
) -> jax.Array:
    """Σ_l w_l · W2_SCALE · W2²(G̃_l/N_l, A_l) / C_l from summed augmented Grams G̃_l and the
    style's normalised augmented Grams A_l."""
    total = jnp.float32(0.0)
    for name, w in layer_weights.items():
        c = grams[name].shape[-1] - 1
        total = total + w * W2_SCALE * w2_squared(grams[name] / counts[name], targets[name]) / c
    return total


def w2_gram_cotangents(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, int],
    layer_weights: dict[str, float],
) -> dict[str, jax.Array]:
    """∂(W2 style loss)/∂G̃_l, held constant in a tile's gradient pass (see
    `style_gram_cotangents`)."""
    return jax.grad(w2_style_loss)(grams, targets, counts, layer_weights)


def masked_w2_style_loss(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, jax.Array],
    blend: jax.Array,
    layer_weights: dict[str, float],
) -> jax.Array:
    """Σ_s b_s Σ_l w_l · W2_SCALE · W2²(G̃_sl/N_sl, A_sl) / C_l from masked augmented Grams
    (S, C + 1, C + 1); a style whose mask sums to 0 at a layer's level contributes 0 there."""
    total = jnp.float32(0.0)
    for name, w in layer_weights.items():
        ok, n = _safe_counts(counts[name])
        c = grams[name].shape[-1] - 1
        err = jax.vmap(w2_squared)(grams[name] / n[:, None, None], targets[name])
        total = total + w * W2_SCALE * jnp.sum(jnp.where(ok, blend * err, 0.0)) / c
    return total


def masked_w2_gram_cotangents(
    grams: dict[str, jax.Array],
    targets: dict[str, jax.Array],
    counts: dict[str, jax.Array],
    blend: jax.Array,
    layer_weights: dict[str, float],
) -> dict[str, jax.Array]:
    """∂(masked W2 style loss)/∂G̃_sl, (S, C + 1, C + 1) per layer."""
    return jax.grad(masked_w2_style_loss)(grams, targets, counts, blend, layer_weights)
# ------------------------------------------------------------------ video


def temporal_sum(x: jax.Array, warped: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_p c(p) ‖x(p) − w(p)‖² in fp32 (Ruder et al. 2016): x and the previous frame warped
    into this one, w, are (..., H, W, 3); the reliability c is (..., H, W). Divide by H·W·3."""
    d = x.astype(jnp.float32) - warped.astype(jnp.float32)
    return jnp.sum(weights.astype(jnp.float32) * jnp.sum(d * d, axis=-1))
