"""Spatial masks (creative controls): where each style applies, and where the content counts.

A mask is a greyscale image, white = 1 (apply here), black = 0, greys in between. It is drawn
over the content image (same framing and aspect ratio); at each pyramid level it is resized to
the level's size and average-pooled 2×2 (floor, as VGG19's poolings) once per pooling level, so
that level k of its pyramid lines up with the feature maps there.

- Style mask M_s: the style's Gram at layer l (level k) becomes G_sl = Σ_p m_s,k(p) f(p) f(p)ᵀ,
  normalised by N_sl = Σ_p m_s,k(p), and is compared with that style's own target; the styles'
  terms are added with the normalised blend weights. A style without a mask gets an all-white
  one. A mask with no white at some level drops that style from that layer's term.
- Content mask M_c: weights the content loss per position (white = full weight, black = none);
  the normalisation is still the whole image's N·C.

The objective (`objective.py`, `LossSpec.masked`) computes the same numbers tiled, sharded or
untiled; `masked_targets` builds a level's targets. Masks weight Gram statistics: the MRF loss
(`--style-loss mrf`) and host-resident state do not take them (refused with a message).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import imageio
from .config import DEFAULT_MAX_PIXELS, check_style_mask_indices
from .errors import UserError
from .objective import LossSpec, TiledPlan, content_target_jit, make_plan, style_target_jit
from .printsize import FitPlan, apply_fit
from .sharding import replicate

MaskLike = np.ndarray | jax.Array


def load_mask(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A mask file as float32 H×W in [0, 1]: the mean of its RGB (any image mode; transparent
    areas count as white, as `imageio.read_image` composites them over white)."""
    rgb = imageio.read_image(path, max_pixels=max_pixels)
    mask = np.clip(rgb.mean(axis=2, dtype=np.float32), 0.0, 1.0)
    if not mask.any():
        warnings.warn(f"{os.fspath(path)}: the mask is black everywhere", stacklevel=2)
    return mask


def load_style_masks(
    pairs: Sequence[tuple[int, str]],
    n_styles: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[np.ndarray | None]:
    """One entry per style: its mask, or None (all white) where none was given."""
    check_style_mask_indices(pairs, n_styles)
    out: list[np.ndarray | None] = [None] * n_styles
    for i, path in pairs:
        out[i] = load_mask(path, max_pixels)
    return out


def check_mask_aspect(mask: MaskLike, content_hw: tuple[int, int], what: str) -> None:
    """A mask is drawn over the content: refuse one whose aspect ratio differs by over 2 %
    (it would be stretched onto the wrong places)."""
    mh, mw = np.shape(mask)[:2]
    ch, cw = content_hw
    if abs(np.log((mw / mh) / (cw / ch))) > 0.02:
        raise UserError(
            f"{what} is {mw}×{mh} px but the content is {cw}×{ch}: "
            "a mask must have the content's aspect ratio"
        )


def resize_mask(mask: MaskLike, hw: tuple[int, int]) -> jax.Array:
    """An (H, W) mask resized to `hw`, clipped to [0, 1].

    Antialiased *linear* rather than the images' Lanczos: Lanczos rings at a mask's hard edges,
    and its positive lobes would leak a little weight into black areas.
    """
    m = jnp.asarray(mask, jnp.float32)
    if m.ndim != 2:
        raise ValueError(f"a mask is H×W, got shape {m.shape}")
    if tuple(m.shape) != tuple(hw):
        m = jax.image.resize(m, tuple(hw), method="linear", antialias=True)
    return jnp.clip(m, 0.0, 1.0)


def mask_pyramid(mask: MaskLike, levels: int) -> tuple[jax.Array, ...]:
    """(m_0, …, m_levels): m_0 = `mask` (…, H, W), m_k+1 = m_k average-pooled 2×2, floor (VALID).

    m_k has the shape of the feature maps at level k (`tiling.pooled_sizes`).
    """
    m = jnp.asarray(mask, jnp.float32)
    out = [m]
    for _ in range(levels):
        h, w = m.shape[-2] // 2, m.shape[-1] // 2
        m = m[..., : 2 * h, : 2 * w].reshape(*m.shape[:-2], h, 2, w, 2).mean(axis=(-3, -1))
        out.append(m)
    return tuple(out)


def stack_masked_targets(
    spec: LossSpec,
    style_targets: Sequence[dict[str, jax.Array]],
    style_masks: Sequence[MaskLike | None],
    content_mask: MaskLike | None,
    hw: tuple[int, int],
    blend: Sequence[float],
    content_targets: dict[str, jax.Array],
    mesh=None,
) -> dict:
    """The masked targets (see `objective.Targets`) from each style's own targets A_s (as
    `objective.style_target` gives them) and the level's content targets."""
    n = len(style_targets)
    if len(style_masks) != n or len(blend) != n:
        raise ValueError(f"{n} styles, {len(style_masks)} style masks, {len(blend)} blend weights")
    w = np.asarray(blend, np.float64)
    if not (np.all(w >= 0) and w.sum() > 0):
        raise ValueError(f"blend weights must be ≥ 0 and not all 0, got {list(blend)}")
    b = (w / w.sum()).astype(np.float32)
    m0 = jnp.stack(
        [jnp.ones(hw, jnp.float32) if m is None else resize_mask(m, hw) for m in style_masks]
    )
    style_pyr = mask_pyramid(m0, spec.levels)
    content_pyr = (
        None if content_mask is None else mask_pyramid(resize_mask(content_mask, hw), spec.levels)
    )
    style_pyr, content_pyr, b = replicate((style_pyr, content_pyr, jnp.asarray(b)), mesh)
    return {
        "style_stack": {k: jnp.stack([t[k] for t in style_targets]) for k in style_targets[0]},
        "style_blend": b,
        "style_masks": style_pyr,
        "content_mask": content_pyr,
        "content": content_targets,
    }


def masked_targets(
    params: dict,
    spec: LossSpec,
    style_images: Sequence[jax.Array | np.ndarray],
    style_masks: Sequence[MaskLike | None],
    content_mask: MaskLike | None,
    hw: tuple[int, int],
    plan: TiledPlan | None,
    blend: Sequence[float],
    *,
    content: jax.Array | np.ndarray,
) -> dict:
    """A pyramid level's targets for `make_loss_fn(spec, plan)` with `spec.masked` True.

    `style_images`: the styles at this level's size (each its own (H_s, W_s, 3));
    `style_masks`: one per style, any size (resized to `hw`), None = all white;
    `content_mask`: any size, or None (content unmasked); `content`: the content at `hw`;
    `blend`: the styles' weights (normalised here). Style targets are tiled like `plan`, over
    its mesh, as `render.prepare_level` tiles them.
    """
    if not spec.masked:
        raise ValueError("masked_targets needs a LossSpec with masked=True")
    if tuple(np.shape(content)[:2]) != tuple(hw):
        raise ValueError(f"content is {np.shape(content)[:2]}, the level is {hw}")
    mesh = None if plan is None else plan.mesh
    per_style = []
    for s in style_images:
        s_plan = (
            None
            if plan is None
            else make_plan(*np.shape(s)[:2], spec, plan.grid.tile, None, plan.batch, mesh)
        )
        per_style.append(style_target_jit(params, spec, s, s_plan))
    content_t = content_target_jit(params, spec, content, plan)
    return stack_masked_targets(
        spec, per_style, style_masks, content_mask, hw, blend, content_t, mesh
    )


def fit_mask(mask: MaskLike, fit: FitPlan) -> np.ndarray:
    """A mask drawn over the content, given the content's crop or pad (`printsize.apply_fit`):
    resized to the content first, then cropped or padded the same way (padding is white, so
    a style applies to the margin as it does to the rest)."""
    full = np.asarray(resize_mask(mask, fit.content_hw))[..., None]
    return apply_fit(full, dataclasses.replace(fit, pad_value=1.0))[..., 0]
