"""FLOP counts of one Gatys optimisation step, from the VGG19 conv shapes alone.

These are *model* FLOPs (what the algorithm needs, as in MFU figures), not what a compiler
happens to execute. One multiply-add counts as 2 FLOPs.

For an H×W input, every conv layer ℓ computed (``conv1_1`` up to the deepest loss layer, the
layers between loss layers included) runs at H_ℓ×W_ℓ = H // 2**k × W // 2**k after k floor
poolings, with a 3×3 kernel from C_in to C_out channels ("SAME" padding, so the padded border
is counted as a dense conv would compute it):

    forward_ℓ  = 2 · 9 · C_in · C_out · H_ℓ · W_ℓ
    backward_ℓ = forward_ℓ

The backward pass computes the gradient with respect to the conv's *input* only: the weights
are frozen, so there is no weight gradient (which would cost another forward_ℓ). Unlike
training, where the first layer's input gradient is skipped, here it is needed too — the
image is what is optimised — so *every* conv layer, ``conv1_1`` included, has
backward_ℓ = forward_ℓ.

Each style layer s with C_s channels at N_s = H_s·W_s positions adds a Gram matrix:

    gram_s = 2 · C_s² · N_s   (forward, G = Fᵀ F)
           + 2 · C_s² · N_s   (backward, ∂L/∂F = F (D + Dᵀ) for the C_s×C_s cotangent D)

Everything elementwise or linear in the positions — normalisation, bias, ReLU, 2×2 pooling,
masks, the content/style/TV sums and the Adam update — is O(H·W·C) and ignored (well under 1 %
of the total for VGG19).

So for one step: total = Σ_ℓ 2·forward_ℓ + Σ_s 4·C_s²·N_s.
"""

from __future__ import annotations

from collections.abc import Sequence

from .layers import CONV_LAYERS, conv_width, layer_level, layers_up_to

LayerNames = Sequence[str] | Sequence[tuple[str, float]]


def _names(layers: LayerNames) -> tuple[str, ...]:
    """Layer names from names or (name, weight) pairs, as in `LossSpec.style_layers`."""
    return tuple(n if isinstance(n, str) else n[0] for n in layers)


def _size_at(size: int, level: int) -> int:
    for _ in range(level):
        size //= 2
    return size


def conv_layer_flops(
    height: int, width: int, widths: Sequence[int], last_layer: str
) -> dict[str, int]:
    """Forward FLOPs 2·9·C_in·C_out·H_ℓ·W_ℓ of each conv layer up to `last_layer`."""
    out: dict[str, int] = {}
    cin = 3
    for name in layers_up_to(last_layer):
        if name not in CONV_LAYERS:
            continue
        k = layer_level(name)
        cout = conv_width(name, widths)
        out[name] = 2 * 9 * cin * cout * _size_at(height, k) * _size_at(width, k)
        cin = cout
    return out


def gram_flops(height: int, width: int, widths: Sequence[int], style_layers: LayerNames) -> int:
    """Forward Gram FLOPs Σ_s 2·C_s²·N_s (the backward costs as much again)."""
    total = 0
    for name in _names(style_layers):
        k = layer_level(name)
        c = conv_width(name, widths)
        total += 2 * c * c * _size_at(height, k) * _size_at(width, k)
    return total


def step_flops(
    height: int,
    width: int,
    widths: Sequence[int],
    last_layer: str,
    style_layers: LayerNames,
    *,
    backward: bool = True,
) -> dict[str, int]:
    """FLOPs of one untiled step (forward + input-gradient backward) on an H×W image.

    `last_layer` is the deepest layer any loss uses (``LossSpec.outputs``' deepest), and
    `style_layers` the layers whose Grams are taken (names or (name, weight) pairs). Returns
    ``forward`` and ``backward`` (convs), ``gram`` (forward and backward) and ``total``; with
    ``backward=False``, a forward-only evaluation (``backward`` = 0, ``gram`` forward only).
    """
    fwd = sum(conv_layer_flops(height, width, widths, last_layer).values())
    gram = gram_flops(height, width, widths, style_layers)
    bwd = fwd if backward else 0
    gram = 2 * gram if backward else gram
    return {"forward": fwd, "backward": bwd, "gram": gram, "total": fwd + bwd + gram}


def tiled_step_flops(
    height: int,
    width: int,
    widths: Sequence[int],
    last_layer: str,
    style_layers: LayerNames,
    tile: int,
    halo: int,
    batch: int = 1,
) -> dict[str, int]:
    """FLOPs of one tiled step (`objective.make_loss_fn` with a plan), halos included.

    The image is cut into ⌈H/T⌉·⌈W/T⌉ tiles, padded up to a multiple of `batch` with dead tiles
    (which are computed like live ones). Each tile is a (T + 2·halo)² window:

    - pass 1: forward up to the deepest style layer, Grams over the T² core (forward only);
    - pass 2: forward up to `last_layer` and input-gradient backward, Grams over the core
      forward and backward.

    `tile` and `halo` are the grid's (already rounded to the pooling alignment, as
    `TiledPlan.grid` holds them). Returns the `step_flops` keys plus ``pass1``, ``pass2`` and
    ``tiles``; ``forward`` sums both passes' forward convs.
    """
    styles = _names(style_layers)
    tiles = -(-height // tile) * -(-width // tile)
    tiles = -(-tiles // batch) * batch
    window = tile + 2 * halo
    if styles:
        deepest_style = max(styles, key=layers_up_to(last_layer).index)
        p1 = step_flops(window, window, widths, deepest_style, (), backward=False)
    else:
        p1 = {"forward": 0}
    p2 = step_flops(window, window, widths, last_layer, (), backward=True)
    core = gram_flops(tile, tile, widths, styles)
    fwd = tiles * (p1["forward"] + p2["forward"])
    bwd = tiles * p2["backward"]
    gram = tiles * 3 * core  # pass 1 forward; pass 2 forward and backward
    return {
        "forward": fwd,
        "backward": bwd,
        "gram": gram,
        "total": fwd + bwd + gram,
        "pass1": tiles * (p1["forward"] + core),
        "pass2": tiles * (p2["forward"] + p2["backward"] + 2 * core),
        "tiles": tiles,
    }
