"""Colour preservation for style transfer (Gatys et al. 2016, "Preserving color in neural artistic
style transfer").

Two approaches, both on float32 (H, W, 3) RGB images in [0, 1]:

* **Luminance-only transfer.** Render on luminance (`to_luminance_rgb` of the style and of the
  content, optionally with `match_luminance` first, as in the paper), then recombine the
  rendered luminance with the content's chroma (`luminance_transfer`).
* **Colour histogram matching.** Recolour the *style* image so its colour statistics match the
  content's before rendering (`match_color`): a linear map that makes the mean and covariance
  equal to the content's ("moments"), optionally followed by per-channel CDF matching
  ("histogram").

The colour space is **YIQ** with the FCC NTSC (1953) coefficients, `RGB_TO_YIQ` below, applied to
the RGB values as given (no gamma decoding: Y is the luma Y', as in the paper's code). The
inverse `YIQ_TO_RGB` is the exact matrix inverse (computed, not the rounded published one), so
RGB -> YIQ -> RGB round-trips to float precision. The I and Q rows each sum to exactly zero and
the Y row to exactly one, hence grey (r = g = b = y) has I = Q = 0 and `YIQ_TO_RGB[:, 0]` is
(1, 1, 1): replacing Y by Y' adds Y' - Y to every channel and leaves I and Q unchanged.

Everything is NumPy (jax arrays are accepted and converted). Statistics are accumulated in
float64; results are float32.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

RGB_TO_YIQ: np.ndarray = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=np.float64,
)
"""Rows give Y, I, Q from column (R, G, B): FCC NTSC 1953 YIQ."""

YIQ_TO_RGB: np.ndarray = np.linalg.inv(RGB_TO_YIQ)
"""Exact inverse of `RGB_TO_YIQ`; approximately
[[1, 0.9563, 0.6210], [1, -0.2721, -0.6474], [1, -1.1070, 1.7046]]."""

LUMA: np.ndarray = RGB_TO_YIQ[0]
"""(0.299, 0.587, 0.114): the Y row (Rec. 601 luma weights)."""

QUANTISATION_VARIANCE: float = (1.0 / 255.0) ** 2 / 12.0
"""Variance of 8-bit rounding noise (~1.28e-6): style colour directions with less variance than
this are noise, and `match_color` does not amplify them beyond it."""

_CHUNK_PIXELS = 1 << 20
"""Pixels per block when streaming over large images (bounds float64 temporaries to ~24 MiB)."""

ColorMatchMode = Literal["moments", "histogram"]
MomentsTransform = Literal["sqrt", "cholesky"]


def _as_rgb(image, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an (H, W, 3) RGB image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a float image in [0, 1], got dtype {arr.dtype}")
    return arr


def _row_blocks(height: int, width: int):
    rows = max(1, _CHUNK_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield slice(top, min(height, top + rows))


def rgb_to_yiq(image) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 3) YIQ (float32), with `RGB_TO_YIQ`."""
    arr = _as_rgb(image, "image")
    return (arr.astype(np.float64) @ RGB_TO_YIQ.T).astype(np.float32)


def yiq_to_rgb(image) -> np.ndarray:
    """(H, W, 3) YIQ -> (H, W, 3) RGB (float32, not clipped), with `YIQ_TO_RGB`."""
    arr = _as_rgb(image, "image")
    return (arr.astype(np.float64) @ YIQ_TO_RGB.T).astype(np.float32)


def luminance(image) -> np.ndarray:
    """The Y channel, (H, W) float32: 0.299 R + 0.587 G + 0.114 B."""
    arr = _as_rgb(image, "image")
    out = np.empty(arr.shape[:2], np.float32)
    for rows in _row_blocks(*arr.shape[:2]):
        out[rows] = arr[rows].astype(np.float64) @ LUMA
    return out


def to_luminance_rgb(image) -> np.ndarray:
    """A grey RGB image (Y, Y, Y) of `image`'s luminance, float32 in [0, 1].

    Its own Y is the input's Y and its I and Q are zero, so it is the input to render when
    transferring style on luminance only; recombine with `luminance_transfer` afterwards.
    """
    y = np.clip(luminance(image), 0.0, 1.0)
    return np.repeat(y[:, :, None], 3, axis=2)


def match_luminance(style, content) -> np.ndarray:
    """Grey RGB of the style's luminance with its mean and standard deviation set to the
    content's: Y' = (sd_c / sd_s) (Y_s - mean_s) + mean_c, clipped to [0, 1] (Gatys et al. 2016,
    section 2.2, applied before luminance-only rendering). A flat style (sd_s < 1e-6) keeps its
    deviations (none) and only takes the content's mean."""
    ys = luminance(style).astype(np.float64)
    yc = luminance(content).astype(np.float64)
    sd_s, sd_c = ys.std(), yc.std()
    gain = sd_c / sd_s if sd_s > 1e-6 else 1.0
    y = np.clip(gain * (ys - ys.mean()) + yc.mean(), 0.0, 1.0).astype(np.float32)
    return np.repeat(y[:, :, None], 3, axis=2)


def luminance_transfer(stylised, content) -> np.ndarray:
    """The stylised image's luminance with the content's chroma, float32 clipped to [0, 1].

    Both images are converted to YIQ; the result has Y from `stylised` and I, Q from `content`,
    converted back to RGB. Because `YIQ_TO_RGB[:, 0]` is (1, 1, 1) this is computed as
    `content + (Y_stylised - Y_content)` on every channel (the same numbers without the two full
    matrix products). Clipping to [0, 1] afterwards changes I and Q only where a channel left
    the range. The caller resizes `content` to the stylised image's size first.
    """
    s = _as_rgb(stylised, "stylised")
    c = _as_rgb(content, "content")
    if s.shape != c.shape:
        raise ValueError(
            f"stylised {s.shape} and content {c.shape} differ in size: resize the content first"
        )
    out = np.empty(s.shape, np.float32)
    for rows in _row_blocks(*s.shape[:2]):
        cb = c[rows].astype(np.float64)
        dy = (s[rows].astype(np.float64) - cb) @ LUMA
        block = cb + dy[:, :, None]
        np.clip(block, 0.0, 1.0, out=block)
        out[rows] = block
    return out


def color_moments(image) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) of the pixel colours, float64 (population covariance,
    divided by the pixel count). Two passes in row blocks, so large images need no float64 copy."""
    arr = _as_rgb(image, "image")
    h, w = arr.shape[:2]
    n = h * w
    if n == 0:
        raise ValueError("image has no pixels")
    total = np.zeros(3)
    for rows in _row_blocks(h, w):
        total += arr[rows].reshape(-1, 3).astype(np.float64).sum(axis=0)
    mean = total / n
    scatter = np.zeros((3, 3))
    for rows in _row_blocks(h, w):
        d = arr[rows].reshape(-1, 3).astype(np.float64) - mean
        scatter += d.T @ d
    return mean, scatter / n


def _sym_power(cov: np.ndarray, power: float, floor: float) -> np.ndarray:
    """cov ** power for a symmetric PSD matrix, eigenvalues raised to at least `floor`."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    vals = np.maximum(vals, floor)
    return (vecs * vals**power) @ vecs.T


def moments_transform(
    style_cov: np.ndarray,
    content_cov: np.ndarray,
    transform: MomentsTransform = "sqrt",
    floor: float = QUANTISATION_VARIANCE,
) -> np.ndarray:
    """The 3x3 matrix A with A Σ_s Aᵀ = Σ_c (Gatys et al. 2016, section 2.1).

    "sqrt" (default; the symmetric / PCA "image analogies" transform): A = Σ_c^½ Σ_s^-½ with
    symmetric matrix square roots from the eigendecomposition. "cholesky": A = L_c L_s⁻¹ with
    Σ = L Lᵀ. Eigenvalues of Σ_s below `floor` are raised to it first (the equality then holds for
    the floored Σ_s: a near-grey style's noise is not blown up to the content's colour spread).
    Σ_c's eigenvalues are floored at 0 for "sqrt" and at 1e-12 for "cholesky" (which needs it
    positive definite); that changes Σ_c by at most 1e-12.
    """
    if transform == "sqrt":
        return _sym_power(content_cov, 0.5, 0.0) @ _sym_power(style_cov, -0.5, floor)
    if transform == "cholesky":
        l_s = np.linalg.cholesky(_sym_power(style_cov, 1.0, floor))
        l_c = np.linalg.cholesky(_sym_power(content_cov, 1.0, 1e-12))
        return l_c @ np.linalg.inv(l_s)
    raise ValueError(f"unknown moments transform {transform!r}: use 'sqrt' or 'cholesky'")


def _histogram_match_channel(source: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """Map `source` (flat) so its empirical CDF follows the reference's (given sorted).

    Each distinct source value v goes to the reference quantile at its mid-rank
    p = (#values < v + #values == v / 2) / n, read off the sorted reference by linear
    interpolation at position p * m - 0.5. Equal inputs therefore get equal outputs (8-bit inputs
    are full of ties), and with distinct inputs and equal sizes the output's sorted values are the
    reference's sorted values exactly.
    """
    uniq, inverse, counts = np.unique(source, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts, dtype=np.float64) - counts / 2.0
    positions = mid / source.size * reference_sorted.size - 0.5
    mapped = np.interp(positions, np.arange(reference_sorted.size), reference_sorted)
    return mapped[inverse.reshape(-1)]


def match_color(
    style,
    content,
    mode: ColorMatchMode = "moments",
    *,
    transform: MomentsTransform = "sqrt",
    clip: bool = True,
) -> np.ndarray:
    """Recolour the STYLE image to the content's colour statistics; float32, same shape as style.

    "moments": x' = A (x - μ_s) + μ_c with A from `moments_transform` (`transform` = "sqrt" or
    "cholesky"), so before clipping the result's mean is μ_c and its covariance Σ_c, to float
    precision. Clipping to [0, 1] (`clip=True`, the default) then moves whatever fell outside
    the range, which pulls the mean in and shrinks the covariance; the effect grows with how
    different the two palettes are (measure it with `color_moments` on the result).

    "histogram": the moments transform first (gets the cross-channel correlation right), then
    each channel separately CDF-matched to the content's channel (gets each channel's marginal
    distribution exactly, up to ties and the two images' sizes). The CDF step maps into the
    content's values, so it needs no clipping; the mean and covariance end near, not exactly at,
    the content's.
    """
    s = _as_rgb(style, "style")
    c = _as_rgb(content, "content")
    if mode not in ("moments", "histogram"):
        raise ValueError(f"unknown colour matching mode {mode!r}: use 'moments' or 'histogram'")
    mu_s, cov_s = color_moments(s)
    mu_c, cov_c = color_moments(c)
    a = moments_transform(cov_s, cov_c, transform)
    out = np.empty(s.shape, np.float32)
    for rows in _row_blocks(*s.shape[:2]):
        block = (s[rows].astype(np.float64) - mu_s) @ a.T + mu_c
        if clip and mode == "moments":
            np.clip(block, 0.0, 1.0, out=block)
        out[rows] = block
    if mode == "histogram":
        for ch in range(3):
            ref = np.sort(c[:, :, ch].reshape(-1).astype(np.float64))
            out[:, :, ch] = _histogram_match_channel(out[:, :, ch].reshape(-1), ref).reshape(
                s.shape[:2]
            )
        if clip:
            np.clip(out, 0.0, 1.0, out=out)
    return out
