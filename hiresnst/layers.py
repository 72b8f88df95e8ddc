"""VGG19's layer names, levels and receptive-field arithmetic, in plain Python.

Settings, plans and FLOP counts need these without importing JAX or Flax (`hiresnst --help`
must start quickly); `model.py` builds the network from them.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
CONVS_PER_BLOCK: tuple[int, ...] = (2, 2, 4, 4, 4)


def _layer_sequence() -> tuple[str, ...]:
    names: list[str] = []
    for block, n in enumerate(CONVS_PER_BLOCK, start=1):
        names += [f"conv{block}_{i}" for i in range(1, n + 1)]
        if block < len(CONVS_PER_BLOCK):
            names.append(f"pool{block}")
    return tuple(names)


LAYERS: tuple[str, ...] = _layer_sequence()
CONV_LAYERS: tuple[str, ...] = tuple(n for n in LAYERS if n.startswith("conv"))


def layer_level(name: str) -> int:
    """Number of 2×2 poolings before `name`: its resolution is the input's / 2**level."""
    if name not in LAYERS:
        raise ValueError(f"unknown VGG19 layer {name!r}; known: {', '.join(CONV_LAYERS)}")
    return int(name[4]) - 1 if name.startswith("conv") else int(name[4])


def deepest(names: Sequence[str]) -> str:
    """The layer of `names` that comes last in the network."""
    return max(names, key=LAYERS.index)


def layers_up_to(last: str) -> tuple[str, ...]:
    return LAYERS[: LAYERS.index(last) + 1]


def conv_width(name: str, widths: Sequence[int]) -> int:
    return int(widths[int(name[4]) - 1])


def exact_halo(last: str) -> int:
    """Smallest halo (in input pixels, a multiple of 2**level) that makes tile cores exact.

    A tile's own zero padding at its window edge corrupts activations that are within `e`
    positions of the edge: each 3×3 conv adds one, each 2×2 pooling halves (rounding up). The
    core must start at least `e` positions in at every level, so the halo is the largest
    `e * 2**level` over the layers that are computed.
    """
    e, need = 0, 0
    for name in layers_up_to(last):
        if name.startswith("pool"):
            e = -(-e // 2)
        else:
            e += 1
            need = max(need, e * 2 ** layer_level(name))
    align = 2 ** layer_level(last)
    return -(-need // align) * align


STYLE_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYERS: tuple[str, ...] = ("conv4_2",)
