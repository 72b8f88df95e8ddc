"""The Gatys objective as a pure function of (parameters, image, targets), untiled or tiled.

Untiled: one forward/backward over the whole image. Tiled: two passes over overlapping tiles
(see `tiling.py`):
1. forward only, summing each style layer's Gram over the tile cores (and, for the value alone,
   the local content and TV terms);
2. forward and backward per tile of a surrogate whose gradient is the tile's share of the true
   gradient: the style term enters through ∂L/∂G held constant, content and TV through their
   core-restricted sums. Tile gradients, halos included, are added into the image gradient.
Both passes are `lax.scan`s over batches of equal-shaped tiles, so device memory is bounded by
one batch, and the result equals the untiled objective and gradient up to fp32 summation order.

Spatial masks (`LossSpec.masked`): each style s has a mask pyramid m_s,k (white = this style
here) that weights its Gram, G_sl = Σ_p m_s,k(p) f(p) f(p)ᵀ with N_sl = Σ_p m_s,k(p), and the
style loss is Σ_s b_s Σ_l w_l ‖G_sl/N_sl − A_sl‖²/C_l²; a content mask weights the content
term per position. Masks are whole-image arrays (replicated over a mesh); each tile reads the
core of each level's mask, so the tiled objective stays exact. `masks.masked_targets` builds
the targets; the unmasked path is unchanged when `masked` is False.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from . import losses
from .imageio import quantize
from .layers import CONTENT_LAYERS, LAYERS, STYLE_LAYERS, deepest, exact_halo, layer_level
from .model import VGG19
from .sharding import host_array
from .sizes import round_up
from .tiling import (
    TileGrid,
    batched_origins,
    extract,
    make_grid,
    pooled_sizes,
    valid_masks,
)

Params = dict
Targets = dict
"""Unmasked: {"style": {layer: A (C, C)}, "content": {layer: features}}. A tiled objective also
takes "content" as the 8-bit content image (H, W, 3) uint8 (`content_image`), whose features
it makes tile by tile in the step (`is_content_image`): what a device level holds.

Masked (`LossSpec.masked`): {"style_stack": {layer: A (S, C, C)}, "style_blend": b (S,) summing
to 1, "style_masks": (m_0, …, m_levels) with m_k (S, H_k, W_k), "content_mask": (c_0, …) with
c_k (H_k, W_k) or None, "content": as unmasked}. H_k, W_k are the floor-pooled sizes of the
image at level k (`tiling.pooled_sizes`); `masks.mask_pyramid` makes them.

With `LossSpec.temporal_weight` > 0, also "temporal": (warped (H, W, 3), reliability (H, W)),
whole-image arrays like the masks: a per-pixel term, summed over tile cores when tiled.
"""


@dataclass(frozen=True)
class LossSpec:
    """Everything static about the objective; hashable, so jitted functions close over it."""

    content_layers: tuple[tuple[str, float], ...] = tuple((n, 1.0) for n in CONTENT_LAYERS)
    style_layers: tuple[tuple[str, float], ...] = tuple((n, 1.0 / 5) for n in STYLE_LAYERS)
    content_weight: float = 1.0
    style_weight: float = 1.0
    tv_weight: float = 0.0
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    pooling: str = "avg"
    dtype: str = "float32"
    #: Spatial masks: style Grams and the content term are weighted by the mask pyramids in the
    #: targets (see `Targets`). False keeps the unmasked targets and computation.
    masked: bool = False
    #: Neural-patch (MRF) layers with weights; empty = no MRF term. See `mrf_target`.
    mrf_layers: tuple[tuple[str, float], ...] = ()
    mrf_weight: float = 1.0
    #: Statistics of the style term: "gram" (Gatys) or "w2" (Wasserstein-2 between Gaussian
    #: fits; its "Grams" are augmented, (C + 1, C + 1): see `losses.augment`).
    style_kind: str = "gram"
    #: Wrap-around (toroidal) image: every conv pads by wrapping, the TV term pairs the last
    #: row/column with the first, and tiles wrap around the image edge (`TileGrid.wrap`).
    seamless: bool = False
    #: Video: weight of Σ_p c(p)‖x(p) − w(p)‖² / (H·W·3) against the previous frame warped into
    #: this one (targets["temporal"] = (w (H, W, 3), c (H, W))); 0 = no temporal term.
    temporal_weight: float = 0.0

    @property
    def outputs(self) -> tuple[str, ...]:
        layers = (*self.content_layers, *self.style_layers, *self.mrf_layers)
        return tuple(sorted({n for n, _ in layers}, key=LAYERS.index))

    @property
    def levels(self) -> int:
        """Poolings before the deepest layer used: tiles align to 2**levels pixels."""
        return layer_level(deepest(self.outputs))

    @property
    def halo(self) -> int:
        """`exact_halo` of the deepest layer; an MRF layer needs one more position at its
        level, since a core position's 3×3 patch reaches one position into the halo."""
        need = exact_halo(deepest(self.outputs))
        for name, _ in self.mrf_layers:
            need = max(need, exact_halo(name) + 2 ** layer_level(name))
        return round_up(need, 2**self.levels)

    def model(self) -> VGG19:
        return VGG19(
            widths=self.widths,
            pooling=self.pooling,
            dtype=jnp.dtype(self.dtype),
            wrap=self.seamless,
        )

    def style_weights(self) -> dict[str, float]:
        return {n: self.style_weight * w for n, w in self.style_layers}

    def for_style_image(self) -> LossSpec:
        """The spec that a style image's statistics are computed with: a style is not a tile of
        a torus, so it is never wrapped (its features are seamless's targets all the same)."""
        return dataclasses.replace(self, seamless=False)

    def check_seamless(self, height: int, width: int) -> None:
        """A seamless image pools exactly at every level only if its sides are multiples of
        2**levels (floor pooling would drop the rows that join the edges)."""
        align = 2**self.levels
        if self.seamless and (height % align or width % align):
            raise ValueError(f"a seamless image's sides must be multiples of {align} px")


def features(
    params: Params,
    spec: LossSpec,
    x: jax.Array,
    layers: tuple[str, ...],
    masks: tuple[jax.Array, ...] | None = None,
) -> dict[str, jax.Array]:
    return spec.model().apply({"params": params}, x, outputs=layers, masks=masks)


def layer_counts(spec: LossSpec, height: int, width: int) -> dict[str, int]:
    """Positions of each layer in the whole image (floor pooling)."""
    out = {}
    for name in spec.outputs:
        k = layer_level(name)
        h, w = height, width
        for _ in range(k):
            h, w = h // 2, w // 2
        out[name] = h * w
    return out


def _content_term(
    spec: LossSpec,
    feats: dict[str, jax.Array],
    targets: dict,
    counts: dict[str, int],
    masks: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """Content loss; `masks` (per content layer, f's shape without channels) weight positions."""
    total = 0.0
    for name, w in spec.content_layers:
        f = feats[name]
        if masks is None:
            s = losses.content_sum(f, targets[name])
        else:
            s = losses.masked_content_sum(f, targets[name], masks[name])
        total = total + w * s / (counts[name] * f.shape[-1])
    return spec.content_weight * total


def _mrf_counts(spec: LossSpec, height: int, width: int) -> dict[str, int]:
    """Positions of each MRF layer whose 3×3 patch lies inside the whole image (all of them
    on a seamless image, whose patches wrap)."""
    hs, ws = pooled_sizes(height, spec.levels), pooled_sizes(width, spec.levels)
    if spec.seamless:
        return {n: hs[layer_level(n)] * ws[layer_level(n)] for n, _ in spec.mrf_layers}
    return {
        n: max(hs[layer_level(n)] - 2, 0) * max(ws[layer_level(n)] - 2, 0)
        for n, _ in spec.mrf_layers
    }


def _mrf_term(
    spec: LossSpec,
    patches: dict[str, jax.Array],
    inside: dict[str, jax.Array],
    mrf_t: dict,
    counts: dict[str, int],
) -> jax.Array:
    """MRF loss from each layer's 3×3 patches (`losses.patches3x3`) at the positions counted."""
    total = jnp.float32(0.0)
    for name, w in spec.mrf_layers:
        if counts[name] == 0:  # the image is too small for a whole patch at this layer
            continue
        s = losses.mrf_sum(patches[name], inside[name], *mrf_t[name])
        total = total + w * s / (counts[name] * patches[name].shape[-1])
    return spec.mrf_weight * total


def _temporal_args(
    spec: LossSpec, targets: Targets, height: int, width: int
) -> tuple[jax.Array, jax.Array] | None:
    """The (warped, reliability) targets when the temporal term is on, shapes checked."""
    if not spec.temporal_weight:
        return None
    if targets.get("temporal") is None:
        raise ValueError("LossSpec.temporal_weight > 0 but the targets have no 'temporal'")
    warped, weights = targets["temporal"]
    if tuple(warped.shape) != (height, width, 3) or tuple(weights.shape) != (height, width):
        raise ValueError(
            f"temporal targets have shapes {tuple(warped.shape)} and {tuple(weights.shape)}, "
            f"expected {(height, width, 3)} and {(height, width)}"
        )
    return warped, weights


def _temporal_term(spec, x, temporal_t, height: int, width: int) -> jax.Array:
    if temporal_t is None:
        return jnp.float32(0.0)
    s = losses.temporal_sum(x, *temporal_t)
    return spec.temporal_weight * s / (height * width * 3)


def _padded_temporal(grid: TileGrid, temporal_t) -> tuple[jax.Array, jax.Array] | None:
    """The temporal targets zero-padded like the image (reliability 0 outside it)."""
    if temporal_t is None:
        return None
    warped, weights = temporal_t
    return grid.pad(warped.astype(jnp.float32)), grid.pad(weights.astype(jnp.float32)[..., None])


def _temporal_core(
    spec: LossSpec,
    grid: TileGrid,
    wins: jax.Array,
    valid: jax.Array,
    temporal_pad: tuple[jax.Array, jax.Array] | None,
    origins: jax.Array,
) -> jax.Array:
    """The temporal term over a batch's tile cores; `temporal_pad` from `_padded_temporal`,
    `valid` the windows' level-0 masks (zero on dead tiles, which repeat a live origin)."""
    if temporal_pad is None:
        return jnp.float32(0.0)
    h, t = grid.halo, grid.tile
    warped, weights = (jax.vmap(lambda o, a=a: extract(a, o + h, t))(origins) for a in temporal_pad)
    core = (slice(None), slice(h, h + t), slice(h, h + t))
    c = (weights * valid[core])[..., 0]
    return _temporal_term(spec, wins[core], (warped, c), grid.height, grid.width)


def _with_temporal(spec, grid, surrogate, temporal_pad, grams: bool = False):
    """`tile_surrogate` with the temporal term over the batch's cores added to its value and
    to its local terms (the host path has no temporal term and uses `tile_surrogate` as is).
    `grams`: the surrogate also returns its batch's Grams (`tile_surrogate`'s `grams`)."""

    def fn(wins, masks, content, origins):
        value, aux = surrogate(wins, masks, content, origins)
        local, tile_grams = aux if grams else (aux, None)
        temporal = _temporal_core(spec, grid, wins, masks[0], temporal_pad, origins)
        local = (*local, temporal)
        return value + temporal, ((local, tile_grams) if grams else local)

    return fn


# ---------------------------------------------------------------- masks


def style_names(spec: LossSpec) -> tuple[str, ...]:
    return tuple(n for n, _ in spec.style_layers)


def style_args(spec: LossSpec, targets: Targets, height: int, width: int):
    """What the style term needs: {layer: A} unmasked; the masked targets' arrays otherwise.

    The masks' shapes are checked here (a wrong-sized mask would otherwise be clamped by
    `dynamic_slice` into a silently misplaced one).
    """
    if not spec.masked:
        if "style_masks" in targets or targets.get("content_mask") is not None:
            raise ValueError("the targets hold masks but LossSpec.masked is False")
        return targets["style"]
    hs, ws = pooled_sizes(height, spec.levels), pooled_sizes(width, spec.levels)
    style_masks = tuple(targets["style_masks"])
    content_mask = targets.get("content_mask")
    n_styles = targets["style_blend"].shape[0]
    pyramids = [("style_masks", style_masks, (n_styles,))]
    if content_mask is not None:
        content_mask = tuple(content_mask)
        pyramids.append(("content_mask", content_mask, ()))
    for key, pyr, lead in pyramids:
        if len(pyr) < spec.levels + 1:
            raise ValueError(f"{key} has {len(pyr)} levels; the layers need {spec.levels + 1}")
        for k in range(spec.levels + 1):
            if tuple(pyr[k].shape) != (*lead, hs[k], ws[k]):
                raise ValueError(
                    f"{key}[{k}] has shape {tuple(pyr[k].shape)}, expected {(*lead, hs[k], ws[k])}"
                )
    for name, a in targets["style_stack"].items():
        if a.shape[0] != n_styles:
            raise ValueError(f"style_stack[{name!r}] has {a.shape[0]} styles, blend {n_styles}")
    return {
        "stack": targets["style_stack"],
        "blend": targets["style_blend"],
        "masks": style_masks[: spec.levels + 1],
        "content_mask": None if content_mask is None else content_mask[: spec.levels + 1],
    }


def _mask_counts(spec: LossSpec, style_masks: tuple[jax.Array, ...]) -> dict[str, jax.Array]:
    """N_sl = Σ_p m_s,k(p) over the whole image, (S,) per style layer."""
    return {
        n: jnp.sum(style_masks[layer_level(n)].astype(jnp.float32), axis=(-2, -1))
        for n in style_names(spec)
    }


_STYLE_FNS = {
    # (loss, cotangents, masked loss, masked cotangents) per LossSpec.style_kind
    "gram": (
        losses.style_loss_from_grams,
        losses.style_gram_cotangents,
        losses.masked_style_loss,
        losses.masked_style_gram_cotangents,
    ),
    "w2": (
        losses.w2_style_loss,
        losses.w2_gram_cotangents,
        losses.masked_w2_style_loss,
        losses.masked_w2_gram_cotangents,
    ),
}


def style_value(spec, grams, style_t, counts) -> jax.Array:
    plain, _, masked, _ = _STYLE_FNS[spec.style_kind]
    if not spec.masked:
        return plain(grams, style_t, counts, spec.style_weights())
    n = _mask_counts(spec, style_t["masks"])
    return masked(grams, style_t["stack"], n, style_t["blend"], spec.style_weights())


def style_cotangents(spec, grams, style_t, counts) -> dict[str, jax.Array]:
    _, plain, _, masked = _STYLE_FNS[spec.style_kind]
    if not spec.masked:
        return plain(grams, style_t, counts, spec.style_weights())
    n = _mask_counts(spec, style_t["masks"])
    return masked(grams, style_t["stack"], n, style_t["blend"], spec.style_weights())


def _stat_features(spec: LossSpec, f: jax.Array, valid: jax.Array | None) -> jax.Array:
    """The features whose Gram the style term sums: f itself, or f augmented with the counted
    positions' 1 channel for W2 (`valid`: in-image positions, None = all)."""
    return losses.augment(f, valid) if spec.style_kind == "w2" else f


def _stat_width(spec: LossSpec, name: str) -> int:
    return feats_width(spec, name) + (spec.style_kind == "w2")


def _pad_level(grid: TileGrid, m: jax.Array, k: int) -> jax.Array:
    """Zero-pad a level-k mask (..., H_k, W_k) on the bottom/right to cover every tile core.

    A window's core at level k starts at `origin >> k` in the *unpadded* level-k image (the
    window starts `halo >> k` before it in padded coordinates), so the core can be sliced
    straight from the unpadded mask: no top/left padding is needed.
    """
    hp, wp = (grid.ny * grid.tile) >> k, (grid.nx * grid.tile) >> k
    pad = [(0, 0)] * (m.ndim - 2) + [(0, hp - m.shape[-2]), (0, wp - m.shape[-1])]
    return jnp.pad(m.astype(jnp.float32), pad)


def padded_masks(spec: LossSpec, grid: TileGrid, style_t):
    """Each level's style (and content) masks, padded for `_mask_cores`; None unmasked."""
    if not spec.masked:
        return None
    cm = style_t["content_mask"]
    return {
        "n_styles": style_t["blend"].shape[0],
        "style": {
            k: _pad_level(grid, style_t["masks"][k], k)
            for k in {layer_level(n) for n in style_names(spec)}
        },
        "content": None
        if cm is None
        else {
            k: _pad_level(grid, cm[k], k) for k in {layer_level(n) for n, _ in spec.content_layers}
        },
    }


def _mask_cores(grid: TileGrid, m_pad: jax.Array, origins: jax.Array, k: int) -> jax.Array:
    """(..., B, t_k, t_k): the level-k core of each tile (origins (B, 2)) of a padded mask."""
    n = grid.tile >> k
    lead = m_pad.shape[:-2]

    def one(o):
        start = (0,) * len(lead) + (o[0] >> k, o[1] >> k)
        return jax.lax.dynamic_slice(m_pad, start, (*lead, n, n))

    return jnp.stack([one(origins[i]) for i in range(origins.shape[0])], axis=len(lead))


def core_grams(spec, grid, feats, names, padded, origins, valid) -> dict[str, jax.Array]:
    """Σ over a batch's cores of f fᵀ, (C, C); masked: Σ m_s f fᵀ per style, (S, C, C).
    (For W2, f is augmented with the core's in-image mask from `valid`, the windows' masks.)"""
    out = {}
    for n in names:
        k = layer_level(n)
        core = _stat_features(spec, tile_core(grid, feats[n], k), tile_core(grid, valid[k], k))
        if padded is None:
            out[n] = losses.gram_sum(core)
        else:
            out[n] = losses.masked_gram_sum(core, _mask_cores(grid, padded["style"][k], origins, k))
    return out


def content_core_masks(spec, grid, padded, origins) -> dict[str, jax.Array] | None:
    if padded is None or padded["content"] is None:
        return None
    return {
        n: _mask_cores(grid, padded["content"][layer_level(n)], origins, layer_level(n))
        for n, _ in spec.content_layers
    }


def batch_grams(params, spec, grid, wins, masks, padded, origins) -> dict[str, jax.Array]:
    """Σ over one batch of tile windows (with their validity `masks`) of each style layer's
    core Gram (masked: per style): the first pass of the exact tiled step, on the device path
    (inside its scan) and on the host path (one streamed batch) alike."""
    names = style_names(spec)
    feats = features(params, spec, wins, names, masks)
    return core_grams(spec, grid, feats, names, padded, origins, masks)


def tile_surrogate(
    params, spec, grid, counts, cot, padded, mrf_t, wins, masks, content, origins, grams=False
):
    """(value, local terms) of a batch of tiles' surrogate, whose gradient in `wins` is the
    batch's share of the whole image's gradient: the style term through the whole image's
    ∂L/∂G (`cot`) held constant, content, TV and MRF through their core-restricted sums. The
    device and host paths both differentiate this.

    `grams` (the lagged mode): (value, (local terms, the batch's core Grams)), the Grams being
    a by-product of the same forward pass, so one pass yields this step's whole-image Grams."""
    names = style_names(spec)
    feats = features(params, spec, wins, spec.outputs, masks)
    tile_grams = core_grams(spec, grid, feats, names, padded, origins, masks)
    s = sum(jnp.sum(cot[n] * tile_grams[n]) for n in names)
    c_masks = content_core_masks(spec, grid, padded, origins)
    local = local_terms(spec, grid, wins, masks, feats, content, counts, c_masks, mrf_t)
    if grams:
        return s + sum(local), (local, tile_grams)
    return s + sum(local), local


# ---------------------------------------------------------------- untiled


def untiled_loss(
    params: Params, x: jax.Array, targets: Targets, spec: LossSpec
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and its weighted terms for an (H, W, 3) image in [0, 1]."""
    h, w = x.shape[:2]
    spec.check_seamless(h, w)
    counts = layer_counts(spec, h, w)
    style_t = style_args(spec, targets, h, w)
    feats = features(params, spec, x[None], spec.outputs)
    if spec.masked:
        sm = style_t["masks"]
        grams = {
            n: losses.masked_gram_sum(
                _stat_features(spec, feats[n], None), sm[layer_level(n)][:, None]
            )
            for n in style_names(spec)
        }
        cm = style_t["content_mask"]
        c_masks = (
            None if cm is None else {n: cm[layer_level(n)][None] for n, _ in spec.content_layers}
        )
    else:
        grams = {
            n: losses.gram_sum(_stat_features(spec, feats[n], None)) for n in style_names(spec)
        }
        c_masks = None
    style = style_value(spec, grams, style_t, counts)
    content = _content_term(spec, feats, targets["content"], counts, c_masks)
    tv = spec.tv_weight * losses.tv_sum(x, spec.seamless) / (h * w * 3)
    if spec.mrf_layers:
        patches = {n: losses.patches3x3(feats[n], spec.seamless) for n, _ in spec.mrf_layers}
        ones = {n: jnp.ones((*feats[n].shape[:3], 1), jnp.float32) for n, _ in spec.mrf_layers}
        inside = {n: (m if spec.seamless else losses.interior(m))[..., 0] for n, m in ones.items()}
        mrf = _mrf_term(spec, patches, inside, targets["mrf"], _mrf_counts(spec, h, w))
    else:
        mrf = jnp.float32(0.0)
    temporal = _temporal_term(spec, x, _temporal_args(spec, targets, h, w), h, w)
    return _whole_terms(spec, style, (content, tv, mrf, temporal))


# ---------------------------------------------------------------- tiled


def window_masks(grid: TileGrid, origins: jax.Array, live: jax.Array) -> tuple[jax.Array, ...]:
    """Each level's validity masks of a batch of windows (zero for padding tiles)."""
    masks = jax.vmap(lambda o: valid_masks(grid, o))(origins)
    return tuple(m * live[:, None, None, None] for m in masks)


def _windows(
    grid: TileGrid, src: jax.Array, origins: jax.Array, live: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """A batch of windows cut from `grid.source(x)`, with their validity masks."""
    wins = jax.vmap(lambda o: grid.extract(src, o))(origins)
    return wins, window_masks(grid, origins, live)


def content_image(content: jax.Array | np.ndarray) -> np.ndarray:
    """The 8-bit content a device level keeps (round(255·v), as the host state's): 3 B/px
    where its fp32 copy and conv4_2 targets took 44. Its targets are made from
    `content_values` of it, tiled or not, so tiled and untiled levels see the same content."""
    return np.asarray(quantize(np.asarray(content, np.float32), 8))


def content_values(content: jax.Array) -> jax.Array:
    """8-bit content as the floats in [0, 1] that the network sees."""
    return content.astype(jnp.float32) / 255.0


def is_content_image(content: object) -> bool:
    """Whether targets["content"] is the 8-bit content (features made per tile in the step)
    rather than the content layers' features."""
    return not isinstance(content, dict)


def _content_cores(params, spec, grid, content_src, origins, masks) -> dict[str, jax.Array]:
    """A batch's content targets, from the 8-bit content's windows (`grid.source` of it):
    each tile's core features of the content layers, as `tiled_core_features` would store
    them. Constants of the step, made in it so no level holds them (32 B/px at conv4_2)."""
    wins = content_values(jax.vmap(lambda o: grid.extract(content_src, o))(origins))
    names = tuple(n for n, _ in spec.content_layers)
    feats = features(params, spec, wins, names, masks)
    return jax.lax.stop_gradient({n: tile_core(grid, feats[n], layer_level(n)) for n in names})


def tile_core(grid: TileGrid, f: jax.Array, level: int) -> jax.Array:
    s = grid.core_slice(level)
    return f[:, s, s, :]


def _tv_core(grid: TileGrid, wins: jax.Array, valid: jax.Array) -> jax.Array:
    """TV pairs whose first pixel lies in the core (the second may lie in the halo)."""
    h, t = grid.halo, grid.tile
    rows = losses.tv_axis_sum(
        wins[:, h : h + t + 1, h : h + t], valid[:, h : h + t + 1, h : h + t], -3
    )
    cols = losses.tv_axis_sum(
        wins[:, h : h + t, h : h + t + 1], valid[:, h : h + t, h : h + t + 1], -2
    )
    return rows + cols


def local_terms(
    spec: LossSpec,
    grid: TileGrid,
    wins: jax.Array,
    masks: tuple[jax.Array, ...],
    feats: dict[str, jax.Array],
    content: dict[str, jax.Array],
    counts: dict[str, int],
    content_masks: dict[str, jax.Array] | None = None,
    mrf_t: dict | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The tile cores' content, TV and MRF terms: sums of local terms, no whole-image pass.

    A core position's 3×3 MRF patch reaches one position into the halo, which `LossSpec.halo`
    leaves room for; `interior` of the in-image masks keeps the whole image's patch set.
    """
    core = {n: tile_core(grid, feats[n], layer_level(n)) for n, _ in spec.content_layers}
    c = _content_term(spec, core, content, counts, content_masks)
    tv = spec.tv_weight * _tv_core(grid, wins, masks[0]) / (grid.height * grid.width * 3)
    mrf = jnp.float32(0.0)
    if spec.mrf_layers:
        patches, inside = {}, {}
        for n, _ in spec.mrf_layers:
            k = layer_level(n)
            patches[n] = tile_core(grid, losses.patches3x3(feats[n]), k)
            inside[n] = tile_core(grid, losses.interior(masks[k]), k)[..., 0]
        mrf = _mrf_term(spec, patches, inside, mrf_t, _mrf_counts(spec, grid.height, grid.width))
    return c, tv, mrf


AXIS = "tiles"


@dataclass(frozen=True)
class TiledPlan:
    """A grid, the batching of its tiles and, optionally, the device mesh they are spread over.

    With a mesh, the batches are split along the mesh axis `tiles`: each device scans its own
    batches, whole-image sums (Grams, loss terms, the image gradient) are combined with `psum`
    inside the jitted function, and the image itself is replicated.
    """

    grid: TileGrid
    batch: int
    mesh: Mesh | None = None

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    def batches(self) -> tuple[np.ndarray, np.ndarray]:
        return batched_origins(self.grid, self.batch, self.devices)


def make_plan(
    height: int,
    width: int,
    spec: LossSpec,
    tile: int,
    overlap: int | None,
    batch: int,
    mesh: Mesh | None = None,
) -> TiledPlan:
    halo = spec.halo if overlap is None else overlap
    spec.check_seamless(height, width)
    grid = make_grid(height, width, tile, halo, spec.levels, spec.seamless)
    return TiledPlan(grid, max(1, min(batch, grid.count)), mesh)


def _psum(tree, axis: str | None):
    return tree if axis is None else jax.lax.psum(tree, axis)


def _distributed(fn, plan: TiledPlan, n_replicated: int, n_sharded: int, out_specs):
    """Run fn(*replicated, *per_tile) on one device, or sharded over the plan's mesh."""
    if plan.mesh is None:
        return partial(fn, axis=None)
    return jax.shard_map(
        partial(fn, axis=AXIS),
        mesh=plan.mesh,
        in_specs=(P(),) * n_replicated + (P(AXIS),) * n_sharded,
        out_specs=out_specs,
        # Replicated outputs are psums; the per-device scan carries are not annotated as varying.
        check_vma=False,
    )


def zeros_grams(
    spec: LossSpec, names: tuple[str, ...], styles: int | None = None
) -> dict[str, jax.Array]:
    lead = () if styles is None else (styles,)
    return {n: jnp.zeros((*lead, *(_stat_width(spec, n),) * 2), jnp.float32) for n in names}


def _gram_pass(params, spec, grid, src, origins, live, names, padded=None):
    """Σ over this device's tile cores of f fᵀ for each layer in `names`.

    With `padded` masks (`padded_masks`), Σ m_s f fᵀ for each style, (S, C, C).
    """
    if not names:  # MRF alone: no whole-image pass
        return {}
    styles = None if padded is None else padded["n_styles"]

    def body(acc, xs):
        o, lv = xs
        wins, masks = _windows(grid, src, o, lv)
        if names == style_names(spec):
            grams = batch_grams(params, spec, grid, wins, masks, padded, o)
        else:  # other layers' Grams (e.g. `tiled_grams` for any layers)
            feats = features(params, spec, wins, names, masks)
            grams = core_grams(spec, grid, feats, names, padded, o, masks)
        return {n: acc[n] + grams[n] for n in names}, None

    return jax.lax.scan(body, zeros_grams(spec, names, styles), (origins, live))[0]


def tiled_grams(
    params: Params, spec: LossSpec, plan: TiledPlan, x: jax.Array, layers: tuple[str, ...]
) -> dict[str, jax.Array]:
    """Σ over the whole image of f fᵀ for each layer, accumulated over tile cores."""
    grid = plan.grid

    def fn(params, x, origins, live, axis):
        return _psum(_gram_pass(params, spec, grid, grid.source(x), origins, live, layers), axis)

    origins, live = plan.batches()
    return _distributed(fn, plan, 2, 2, P())(params, x, origins, live)


def feats_width(spec: LossSpec, name: str) -> int:
    return int(spec.widths[int(name[4]) - 1])


def tiled_core_features(
    params: Params, spec: LossSpec, plan: TiledPlan, x: jax.Array, layers: tuple[str, ...]
) -> dict[str, jax.Array]:
    """Each tile's core features, shaped (n_batches, batch, t_k, t_k, C): the content targets.

    Sharded plans leave each device holding the targets of its own tiles.
    """
    grid = plan.grid

    def fn(params, x, origins, live, axis):
        src = grid.source(x)

        def body(_, xs):
            o, lv = xs
            wins, masks = _windows(grid, src, o, lv)
            feats = features(params, spec, wins, layers, masks)
            return None, {n: tile_core(grid, feats[n], layer_level(n)) for n in layers}

        return jax.lax.scan(body, None, (origins, live))[1]

    origins, live = plan.batches()
    return _distributed(fn, plan, 2, 2, P(AXIS))(params, x, origins, live)


def _zero_local() -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    return (jnp.float32(0.0),) * 4


def _whole_terms(spec: LossSpec, style: jax.Array, local) -> tuple[jax.Array, dict]:
    """(loss, terms) from the style term and the summed local (content, tv, mrf, temporal)
    terms."""
    content, tv, mrf, temporal = local
    terms = {"content": content, "style": style, "tv": tv}
    if spec.mrf_layers:
        terms["mrf"] = mrf
    if spec.temporal_weight:
        terms["temporal"] = temporal
    return sum(terms.values()), terms


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def tiled_value_and_grad(
    params: Params,
    x: jax.Array,
    targets: Targets,
    spec: LossSpec,
    plan: TiledPlan,
    lagged: dict[str, jax.Array] | None = None,
) -> tuple:
    """((loss, terms), gradient) of the whole-image objective, computed tile by tile.

    `lagged` (the one-pass mode, `--gram lagged`): whole-image style Grams of an earlier image
    (the previous step's), whose ∂L/∂G stand in for this image's in the gradient, so the Gram
    pass is skipped; the same forward pass sums this image's Grams, which are returned third
    ((loss, terms), gradient, grams) for the next step. The loss is still exact at `x`; the
    gradient is exact when `lagged` are this image's Grams (`tiled_style_grams`).
    """
    grid = plan.grid
    counts = layer_counts(spec, grid.height, grid.width)
    snames = style_names(spec)
    one_pass = lagged is not None

    def fn(
        params, x, style_t, mrf_t, temporal_t, content_img, lagged, origins, live, content, axis
    ):
        src = grid.source(x)
        content_src = None if content_img is None else grid.source(content_img)
        padded = padded_masks(spec, grid, style_t)
        temporal_pad = _padded_temporal(grid, temporal_t)
        if one_pass:
            grams = None
            cot = style_cotangents(spec, lagged, style_t, counts)
        else:
            grams = _gram_pass(params, spec, grid, src, origins, live, snames, padded)
            grams = _psum(grams, axis)
            cot = style_cotangents(spec, grams, style_t, counts)

        surrogate = partial(
            tile_surrogate, params, spec, grid, counts, cot, padded, mrf_t, grams=one_pass
        )
        surrogate = _with_temporal(spec, grid, surrogate, temporal_pad, one_pass)

        def body(carry, xs):
            acc, local_sum, gram_sum = carry
            o, lv, content = xs
            wins, masks = _windows(grid, src, o, lv)
            if content_src is not None:
                content = _content_cores(params, spec, grid, content_src, o, masks)
            g, aux = jax.grad(surrogate, has_aux=True)(wins, masks, content, o)
            local, tile_grams = aux if one_pass else (aux, None)
            for i in range(o.shape[0]):
                acc = grid.add_window(acc, o[i], g[i])
            if one_pass:
                gram_sum = {n: gram_sum[n] + tile_grams[n] for n in snames}
            return (acc, _add(local_sum, local), gram_sum), None

        styles = None if padded is None else padded["n_styles"]
        gram_init = zeros_grams(spec, snames, styles) if one_pass else None
        init = (jnp.zeros_like(src), _zero_local(), gram_init)
        (grad_src, local, new_grams), _ = jax.lax.scan(body, init, (origins, live, content))
        grad_src, local, new_grams = _psum((grad_src, local, new_grams), axis)
        grams = new_grams if one_pass else grams
        style = style_value(spec, grams, style_t, counts)
        return _whole_terms(spec, style, local), grid.fold_source(grad_src), new_grams

    value, grad, grams = _run_tiled(fn, spec, plan, params, x, targets, lagged)
    return (value, grad, grams) if one_pass else (value, grad)


def tiled_style_grams(
    params: Params, x: jax.Array, targets: Targets, spec: LossSpec, plan: TiledPlan
) -> dict[str, jax.Array]:
    """The whole-image style Grams of `x` (masked: per style), as the exact step's Gram pass
    sums them: the lagged mode's start, one extra forward pass at a level's first step."""
    grid = plan.grid
    snames = style_names(spec)

    def fn(params, x, style_t, origins, live, axis):
        padded = padded_masks(spec, grid, style_t)
        grams = _gram_pass(params, spec, grid, grid.source(x), origins, live, snames, padded)
        return _psum(grams, axis)

    origins, live = plan.batches()
    style_t = style_args(spec, targets, grid.height, grid.width)
    return _distributed(fn, plan, 3, 2, P())(params, x, style_t, origins, live)


def tiled_loss(
    params: Params, x: jax.Array, targets: Targets, spec: LossSpec, plan: TiledPlan
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The value alone (one forward pass over the tiles), e.g. for L-BFGS line searches."""
    grid = plan.grid
    counts = layer_counts(spec, grid.height, grid.width)
    snames = style_names(spec)

    def fn(params, x, style_t, mrf_t, temporal_t, content_img, origins, live, content, axis):
        src = grid.source(x)
        content_src = None if content_img is None else grid.source(content_img)
        padded = padded_masks(spec, grid, style_t)
        temporal_pad = _padded_temporal(grid, temporal_t)
        styles = None if padded is None else padded["n_styles"]

        def body(carry, xs):
            grams, local_sum = carry
            o, lv, content = xs
            wins, masks = _windows(grid, src, o, lv)
            if content_src is not None:
                content = _content_cores(params, spec, grid, content_src, o, masks)
            feats = features(params, spec, wins, spec.outputs, masks)
            tile_grams = core_grams(spec, grid, feats, snames, padded, o, masks)
            grams = {n: grams[n] + tile_grams[n] for n in snames}
            c_masks = content_core_masks(spec, grid, padded, o)
            local = (
                *local_terms(spec, grid, wins, masks, feats, content, counts, c_masks, mrf_t),
                _temporal_core(spec, grid, wins, masks[0], temporal_pad, o),
            )
            return (grams, _add(local_sum, local)), None

        init = (zeros_grams(spec, snames, styles), _zero_local())
        (grams, local), _ = jax.lax.scan(body, init, (origins, live, content))
        grams, local = _psum((grams, local), axis)
        return _whole_terms(spec, style_value(spec, grams, style_t, counts), local)

    return _run_tiled(fn, spec, plan, params, x, targets)


def _run_tiled(fn, spec: LossSpec, plan: TiledPlan, params: Params, x: jax.Array, targets, *extra):
    """fn(params, x, style, mrf, temporal, content image, *extra, origins, live, content tiles)
    over the plan's devices (`extra`: replicated, e.g. the lagged Grams). The content is the
    8-bit image (replicated; `is_content_image`) or the per-tile features of `content_target`
    (sharded like the tiles): the other one is None."""
    grid = plan.grid
    origins, live = plan.batches()
    run = _distributed(fn, plan, 6 + len(extra), 3, P())
    style_t = style_args(spec, targets, grid.height, grid.width)
    temporal_t = _temporal_args(spec, targets, grid.height, grid.width)
    content = targets["content"]
    image, tiles = (content, None) if is_content_image(content) else (None, content)
    return run(
        params, x, style_t, targets.get("mrf"), temporal_t, image, *extra, origins, live, tiles
    )


# ---------------------------------------------------------------- targets


def style_target(
    params: Params, spec: LossSpec, style: jax.Array, plan: TiledPlan | None
) -> dict[str, jax.Array]:
    """A_l = G_l / N_l of one style image (tiled when a plan is given, for large styles; the
    plan made with `spec.for_style_image()`). W2's are augmented Grams (`losses.augment`)."""
    spec = spec.for_style_image()
    names = tuple(n for n, _ in spec.style_layers)
    if not names:  # MRF alone: no Gram term
        return {}
    counts = layer_counts(spec, *style.shape[:2])
    if plan is None:
        feats = features(params, spec, style[None], names)
        grams = {n: losses.gram_sum(_stat_features(spec, feats[n], None)) for n in names}
    else:
        grams = tiled_grams(params, spec, plan, style, names)
    return {n: grams[n] / counts[n] for n in names}


#: Rows of an MRF patch bank scanned at once (see `losses.nearest_patches`).
MRF_CHUNK = 1024


def mrf_target(
    params: Params,
    spec: LossSpec,
    styles: list[np.ndarray],
    blend: list[float],
    max_patches: int,
    tile: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each MRF layer's patch bank: (bank (n, chunk, 9·C), ok (n, chunk)) for `losses.mrf_sum`.

    The 3×3 patches lying wholly inside each style (weights > 0 in `blend`) at the positions of
    a regular lattice, its stride the smallest that keeps a style's share of `max_patches`;
    every style's share is equal. Features come from one forward pass over the style, or tile
    by tile (`tile`, on this process's device) for styles too large for one; host arrays out.
    """
    used = [s for s, w in zip(styles, blend, strict=True) if w > 0]
    spec = spec.for_style_image()
    names = tuple(n for n, _ in spec.mrf_layers)
    share = max(1, max_patches // len(used))
    banks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    local = jax.tree_util.tree_map(host_array, params)
    for style in used:
        for n, f in _host_features(local, spec, np.asarray(style, np.float32), names, tile).items():
            banks[n].append(_lattice_patches(f, share))
    out = {}
    for n in names:
        bank = np.concatenate(banks[n])
        chunk = min(MRF_CHUNK, len(bank))
        rows = round_up(len(bank), chunk)
        ok = np.arange(rows) < len(bank)
        bank = np.concatenate([bank, np.zeros((rows - len(bank), bank.shape[1]), bank.dtype)])
        out[n] = (bank.reshape(rows // chunk, chunk, -1), ok.reshape(rows // chunk, chunk))
    return out


def _host_features(
    params: Params, spec: LossSpec, image: np.ndarray, names: tuple[str, ...], tile: int | None
) -> dict[str, np.ndarray]:
    """Whole feature maps (H_k, W_k, C) of one image, untiled or stitched from tile cores."""
    if tile is None:
        feats = _features_jit(params, spec, jnp.asarray(image)[None], names)
        return {n: np.asarray(feats[n][0]) for n in names}
    plan = make_plan(*image.shape[:2], spec, tile, None, 1)
    cores = _core_features_jit(params, spec, plan, jnp.asarray(image), names)
    origins, live = plan.batches()
    grid = plan.grid
    out = {}
    for n in names:
        k, t = layer_level(n), grid.tile >> layer_level(n)
        c = np.asarray(cores[n]).reshape(-1, t, t, feats_width(spec, n))
        canvas = np.zeros((grid.ny * t, grid.nx * t, c.shape[-1]), c.dtype)
        for o, alive, core in zip(origins.reshape(-1, 2), live.reshape(-1), c, strict=True):
            if alive:
                y, x = (int(o[0]) >> k), (int(o[1]) >> k)
                canvas[y : y + t, x : x + t] = core
        hs, ws = pooled_sizes(grid.height, spec.levels), pooled_sizes(grid.width, spec.levels)
        out[n] = canvas[: hs[k], : ws[k]]
    return out


def _lattice_patches(f: np.ndarray, max_patches: int) -> np.ndarray:
    """(K, 9·C) 3×3 patches of an (H, W, C) map, centred on a lattice over its interior."""
    h, w = f.shape[0] - 2, f.shape[1] - 2
    if h < 1 or w < 1:
        return np.zeros((0, 9 * f.shape[-1]), f.dtype)
    stride = 1
    while -(-h // stride) * -(-w // stride) > max_patches:
        stride += 1
    patches = np.asarray(losses.patches3x3(jnp.asarray(f)))
    return patches[1 : h + 1 : stride, 1 : w + 1 : stride].reshape(-1, patches.shape[-1])


_features_jit = jax.jit(features, static_argnums=(1, 3))
_core_features_jit = jax.jit(tiled_core_features, static_argnums=(1, 2, 4))


def content_target(
    params: Params, spec: LossSpec, content: jax.Array, plan: TiledPlan | None
) -> dict[str, jax.Array]:
    """Content features: whole maps (untiled) or per-tile cores laid out like the tile batches."""
    names = tuple(n for n, _ in spec.content_layers)
    if plan is None:
        return features(params, spec, content[None], names)
    return tiled_core_features(params, spec, plan, content, names)


style_target_jit = jax.jit(style_target, static_argnums=(1, 3))
tiled_style_grams_jit = jax.jit(tiled_style_grams, static_argnums=(3, 4))
content_target_jit = jax.jit(content_target, static_argnums=(1, 3))


def blend_style_targets(
    targets: list[dict[str, jax.Array]], blend: list[float]
) -> dict[str, jax.Array]:
    """Σ_s w_s A_s with normalised weights: the optimum of Σ_s w_s ‖G − A_s‖² (same gradient)."""
    total = float(sum(blend))
    return {
        n: sum(w / total * t[n] for w, t in zip(blend, targets, strict=True)) for n in targets[0]
    }


def _zero_cotangent(a: jax.Array) -> jax.Array | np.ndarray:
    """A zero cotangent for a target: float0 for integer ones (the 8-bit content)."""
    if jnp.issubdtype(jnp.result_type(a), jnp.inexact):
        return jnp.zeros_like(a)
    return np.zeros(np.shape(a), jax.dtypes.float0)


ValueAndGrad = Callable[[jax.Array], tuple[tuple[jax.Array, dict], jax.Array]]


LossFn = Callable[[Params, jax.Array, Targets], tuple[jax.Array, dict[str, jax.Array]]]

#: (params, x, targets, previous Grams) -> ((loss, terms), gradient, this image's Grams).
LaggedFn = Callable[[Params, jax.Array, Targets, dict], tuple[tuple, jax.Array, dict]]


def make_lagged_fn(spec: LossSpec, plan: TiledPlan) -> LaggedFn:
    """The one-pass tiled value and gradient (`tiled_value_and_grad` with `lagged`)."""

    def fn(params, x, targets, grams):
        return tiled_value_and_grad(params, x, targets, spec, plan, lagged=grams)

    return fn


def make_loss_fn(spec: LossSpec, plan: TiledPlan | None) -> LossFn:
    """(params, x, targets) -> (loss, terms), differentiable in x.

    Tiled, the value is one forward pass and the gradient is the two-pass tiled gradient
    (a `custom_vjp`), so `jax.value_and_grad` and optax's line searches get exact gradients with
    memory bounded by one tile batch. The terms are reported values, not differentiated.
    """
    if plan is None:
        return lambda params, x, targets: untiled_loss(params, x, targets, spec)

    @jax.custom_vjp
    def loss_fn(params, x, targets):
        return tiled_loss(params, x, targets, spec, plan)

    def fwd(params, x, targets):
        (loss, terms), grad = tiled_value_and_grad(params, x, targets, spec, plan)
        return (loss, terms), (grad, params, targets)

    def bwd(res, cotangents):
        grad, params, targets = res
        ct_loss, _ = cotangents
        zeros = jax.tree_util.tree_map(_zero_cotangent, (params, targets))
        return zeros[0], ct_loss * grad, zeros[1]

    loss_fn.defvjp(fwd, bwd)
    return loss_fn
