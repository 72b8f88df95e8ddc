"""VGG19 feature extractor in Flax, with the layer names of the Gatys et al. papers.

The network is the 16-conv VGG19 of Simonyan and Zisserman as torchvision lays it out, cut after the
deepest layer a loss needs. Channel widths are configurable so that tests can use a narrow network
with the same depth, pooling and receptive field as the real one.

For exact tiling (see `tiling.py`) the forward pass accepts per-level validity masks: multiplying
every activation (after normalisation, after every conv+ReLU and after every pooling) by the mask of
its level makes a tile behave as if it were part of the whole, zero-padded image.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from .layers import (
    CONV_LAYERS,
    CONVS_PER_BLOCK,
    DEFAULT_WIDTHS,
    LAYERS,
    conv_width,
    deepest,
    exact_halo,
    layer_level,
    layers_up_to,
)

__all__ = [
    "CONV_LAYERS",
    "CONVS_PER_BLOCK",
    "DEFAULT_WIDTHS",
    "LAYERS",
    "VGG19",
    "conv3x3",
    "conv_width",
    "deepest",
    "exact_halo",
    "layer_level",
    "layers_up_to",
    "param_shapes",
    "random_params",
    "widths_of",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3×3 'SAME' convolution, NHWC × HWIO, whose input gradient is itself a forward conv.

    The input gradient of a stride-1 'SAME' 3×3 conv is the conv of the cotangent with the kernel
    flipped in space and transposed in its channels. Autodiff's own form of that conv runs ~5×
    slower on XLA:CPU inside a while loop (the tile scans); written as a plain forward conv it
    runs at full speed there, and the result is the same.
    """
    return _conv(x, kernel)


def _conv3x3_fwd(x: jax.Array, kernel: jax.Array):
    return _conv(x, kernel), (x, kernel)


def _conv3x3_bwd(res, g: jax.Array):
    x, kernel = res
    dx = _conv(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    dkernel = jax.vjp(lambda k: _conv(x, k), kernel)[1](g)[0]  # dropped by XLA when unused
    return dx, dkernel


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv3x3(nn.Module):
    """`nn.Conv(features, (3, 3), padding="SAME")` with `conv3x3`'s gradient; the same
    parameters ("kernel" HWIO, "bias"), so ported checkpoints load unchanged."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class VGG19(nn.Module):
    """VGG19 features after ReLU, named `conv1_1` … `conv5_4`.

    Input: (N, H, W, 3) RGB in [0, 1]; ImageNet mean/std normalisation happens inside.
    `outputs` names the layers to return; nothing after the deepest of them is computed.
    """

    widths: tuple[int, ...] = DEFAULT_WIDTHS
    pooling: str = "avg"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        outputs: Sequence[str] = ("conv5_1",),
        masks: Sequence[jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        def masked(h: jax.Array, level: int) -> jax.Array:
            return h if masks is None else h * masks[level].astype(h.dtype)

        h = (x - IMAGENET_MEAN) / IMAGENET_STD
        h = masked(h.astype(self.dtype), 0)
        feats: dict[str, jax.Array] = {}
        for name in layers_up_to(deepest(outputs)):
            level = layer_level(name)
            if name.startswith("pool"):
                pool = nn.avg_pool if self.pooling == "avg" else nn.max_pool
                h = masked(pool(h, (2, 2), strides=(2, 2), padding="VALID"), level)
                continue
            conv = Conv3x3(conv_width(name, self.widths), dtype=self.dtype, name=name)
            h = masked(nn.relu(conv(h)), level)
            if name in outputs:
                feats[name] = h
        return feats


def random_params(seed: int, widths: Sequence[int] = DEFAULT_WIDTHS) -> dict:
    """Seeded, untrained VGG19 parameters (He-normal kernels, zero biases).

    Drawn with NumPy's PCG64 so that they are the same on every platform and instant to make.

    He scaling keeps activations at a similar magnitude through all 16 ReLU layers, so that
    random features still carry texture statistics at every depth.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, dict[str, jax.Array]] = {}
    cin = 3
    for name in CONV_LAYERS:
        cout = conv_width(name, widths)
        kernel = rng.standard_normal((3, 3, cin, cout), np.float32) * np.sqrt(2.0 / (9 * cin))
        params[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((cout,), jnp.float32)}
        cin = cout
    return params


def param_shapes(widths: Sequence[int] = DEFAULT_WIDTHS) -> dict[str, dict[str, tuple[int, ...]]]:
    """Expected shapes (HWIO kernels) of every conv layer, for checking imported weights."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    cin = 3
    for name in CONV_LAYERS:
        cout = conv_width(name, widths)
        shapes[name] = {"kernel": (3, 3, cin, cout), "bias": (cout,)}
        cin = cout
    return shapes


def widths_of(params: dict) -> tuple[int, ...]:
    """Channel widths of a parameter tree (one per block)."""
    return tuple(int(params[f"conv{b}_1"]["bias"].shape[0]) for b in range(1, 6))
