"""Loss terms against naive NumPy implementations, and the jitted gradient against finite
differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import NARROW

from hiresnst import losses
from hiresnst.model import random_params
from hiresnst.objective import LossSpec, content_target, style_target, untiled_loss


def _naive_gram(f: np.ndarray) -> np.ndarray:
    h, w, c = f.shape
    g = np.zeros((c, c))
    for i in range(h):
        for j in range(w):
            g += np.outer(f[i, j], f[i, j])
    return g


def test_gram_sum_matches_naive(rng):
    f = rng.normal(size=(5, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(losses.gram_sum(jnp.asarray(f))), _naive_gram(f), rtol=1e-5
    )


def test_style_loss_matches_naive(rng):
    grams, targets, counts, weights = {}, {}, {}, {}
    expected = 0.0
    for name, (n, c, w) in {"a": (35, 4, 0.3), "b": (12, 8, 2.0)}.items():
        f = rng.normal(size=(n, c))
        grams[name] = jnp.asarray(f.T @ f, jnp.float32)
        targets[name] = jnp.asarray(rng.normal(size=(c, c)), jnp.float32)
        counts[name], weights[name] = n, w
        diff = (f.T @ f) / n - np.asarray(targets[name], np.float64)
        expected += w * sum(diff[i, j] ** 2 for i in range(c) for j in range(c)) / c**2
    got = float(losses.style_loss_from_grams(grams, targets, counts, weights))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gram_cotangent_is_the_gradient_of_the_style_loss(rng):
    """Against the closed form 2w (G/N − A) / (N C²) (the code takes it by autodiff)."""
    f = rng.normal(size=(10, 3))
    g = {"a": jnp.asarray(f.T @ f, jnp.float32)}
    t = {"a": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)}
    closed = 2 * 0.7 * ((f.T @ f) / 10 - np.asarray(t["a"], np.float64)) / (10 * 9)
    mine = losses.style_gram_cotangents(g, t, {"a": 10}, {"a": 0.7})
    np.testing.assert_allclose(np.asarray(mine["a"]), closed, rtol=1e-5)


def test_tv_matches_naive(rng):
    x = rng.random((6, 9, 3)).astype(np.float32)
    expected = 0.0
    for i in range(6):
        for j in range(9):
            if i + 1 < 6:
                expected += ((x[i + 1, j] - x[i, j]) ** 2).sum()
            if j + 1 < 9:
                expected += ((x[i, j + 1] - x[i, j]) ** 2).sum()
    np.testing.assert_allclose(float(losses.tv_sum(jnp.asarray(x))), expected, rtol=1e-5)


def test_content_sum_matches_naive(rng):
    a, b = rng.normal(size=(2, 4, 5, 3))
    np.testing.assert_allclose(
        float(losses.content_sum(jnp.asarray(a), jnp.asarray(b))), ((a - b) ** 2).sum(), rtol=1e-5
    )


def _problem(rng, hw=(24, 28)):
    params = random_params(0, NARROW)
    spec = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=0.5)
    content = jnp.asarray(rng.random((*hw, 3)), jnp.float32)
    style = jnp.asarray(rng.random((32, 32, 3)), jnp.float32)
    targets = {
        "style": style_target(params, spec, style, None),
        "content": content_target(params, spec, content, None),
    }
    return params, spec, targets


def test_jitted_gradient_matches_finite_differences(rng):
    """In float64 (so that central differences are accurate), along random directions."""
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64), random_params(0, NARROW)
        )
        spec = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=0.5, dtype="float64")
        content = jnp.asarray(rng.random((24, 28, 3)))
        style = jnp.asarray(rng.random((32, 32, 3)))
        targets = {
            "style": style_target(params, spec, style, None),
            "content": content_target(params, spec, content, None),
        }
        x = jnp.asarray(rng.random((24, 28, 3)))

        def loss(y):
            return untiled_loss(params, y, targets, spec)[0]

        grad = jax.jit(jax.grad(loss))(x)
        assert grad.dtype == jnp.float64
        for seed in range(3):
            d = jnp.asarray(np.random.default_rng(seed).normal(size=x.shape))
            eps = 1e-7  # small, so that no ReLU kink lies within ±eps (float64 keeps it exact)
            fd = (float(loss(x + eps * d)) - float(loss(x - eps * d))) / (2 * eps)
            analytic = float(jnp.sum(grad * d))
            assert abs(fd - analytic) <= 1e-5 * abs(analytic), (fd, analytic)


def test_untiled_terms_are_normalised_means(rng):
    """Content is an MSE and TV a per-pixel mean: both independent of the image size."""
    params, spec, targets = _problem(rng)
    x = jnp.asarray(rng.random((24, 28, 3)), jnp.float32)
    _, terms = untiled_loss(params, x, targets, spec)
    xn = np.asarray(x, np.float64)
    tv = (np.sum(np.diff(xn, axis=0) ** 2) + np.sum(np.diff(xn, axis=1) ** 2)) / (24 * 28 * 3)
    np.testing.assert_allclose(float(terms["tv"]), spec.tv_weight * tv, rtol=1e-5)
    assert float(terms["content"]) > 0 and float(terms["style"]) > 0
