"""Ops shared by the ported Magenta networks: padding/statistics contexts, conditional IN.

The transformer network (see `transform.py`) never pads or normalises by itself: it asks a
*context* to do it. `WholeImage` is the plain network (TF's REFLECT padding, instance-norm
statistics of the tensor at hand); `tiled.TileContext` replaces both so that a tile computes
exactly what the whole image would at its core (reflection emulated at the true image border,
whole-image statistics supplied from a previous pass).
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

STYLE_DIM = 100  # length of Magenta's style vector
IN_EPSILON = 1e-5  # variance epsilon of the conditional instance norm (from the ONNX graph)


class Context(Protocol):
    """How the transformer pads before a conv and where its IN statistics come from."""

    def pad(self, h: jax.Array, p: int, level: int) -> jax.Array:
        """(N, H, W, C) at resolution 1/2**level → (N, H+2p, W+2p, C), reflect-padded."""
        ...

    def stats(self, index: int, h: jax.Array, level: int) -> tuple[jax.Array, jax.Array]:
        """Per-channel (mean, variance), each (N, 1, 1, C), of IN layer `index`'s input."""
        ...


def moments(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Spatial mean and (biased) variance as `tf.nn.moments(h, [1, 2])`: mean((h - mean)²)."""
    mean = jnp.mean(h, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=(1, 2), keepdims=True)
    return mean, var


class WholeImage:
    """The untiled network: reflect padding and statistics of the whole feature map."""

    def pad(self, h: jax.Array, p: int, level: int) -> jax.Array:
        return jnp.pad(h, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")

    def stats(self, index: int, h: jax.Array, level: int) -> tuple[jax.Array, jax.Array]:
        return moments(h)


def reflect_index(pos: jax.Array, size: int) -> jax.Array:
    """Fold positions into [0, size) by mirror reflection without repeating the edge.

    Equals TF's REFLECT / numpy's "reflect" padding for positions within `size - 1` of the
    range (one bounce); positions further out are folded periodically (period 2·(size-1)).
    """
    if size == 1:
        return jnp.zeros_like(pos)
    period = 2 * (size - 1)
    q = jnp.mod(pos, period)
    return jnp.where(q >= size, period - q, q)


def upsample_nearest(h: jax.Array, factor: int) -> jax.Array:
    """Nearest upsampling, as ONNX Resize(nearest, asymmetric, floor): out[i] = in[i // f]."""
    if factor == 1:
        return h
    return jnp.repeat(jnp.repeat(h, factor, axis=1), factor, axis=2)


def relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


class CondInstanceNorm(nn.Module):
    """Conditional instance norm (Ghiasi et al.): γ and β are affine maps of the style vector.

    `tf.nn.batch_normalization` form, as in the graph: inv = rsqrt(var + ε)·γ,
    out = h·inv + (β − mean·inv). `beta` and `gamma` are the 1×1 convs on the style vector
    (`StyleNorm/Conv` and `StyleNorm/Conv_1` in Magenta's graph), here Dense layers.
    """

    features: int

    @nn.compact
    def __call__(
        self, h: jax.Array, style: jax.Array, mean: jax.Array, var: jax.Array
    ) -> jax.Array:
        beta = nn.Dense(self.features, name="beta")(style)
        gamma = nn.Dense(self.features, name="gamma", bias_init=nn.initializers.ones)(style)
        beta = beta[:, None, None, :]
        gamma = gamma[:, None, None, :]
        inv = jax.lax.rsqrt(var + IN_EPSILON) * gamma
        return h * inv + (beta - mean * inv)


def random_init(module: nn.Module, seed: int, *args: Any) -> dict:
    """Untrained parameters for `module` (called on `args`), drawn with NumPy: for tests.

    Shapes come from `jax.eval_shape` (nothing is compiled); kernels are LeCun-normal, biases
    zero, except the CIN γ biases, which are one (so that a random network normalises).
    """
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"]
    rng = np.random.default_rng(seed)

    def fill(path, leaf) -> jax.Array:
        names = [getattr(k, "key", str(k)) for k in path]
        if names[-1] == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            w = rng.standard_normal(leaf.shape).astype(np.float32) / np.sqrt(fan_in)
            return jnp.asarray(w)
        value = 1.0 if len(names) > 1 and names[-2] == "gamma" else 0.0
        return jnp.full(leaf.shape, value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
