"""Colour preservation: YIQ luminance transfer and style-to-content colour matching."""

from __future__ import annotations

import numpy as np
import pytest

from hiresnst import color


def _correlated(rng, hw, mean, mix, spread=0.08):
    """Random colours with a given mean and a non-diagonal covariance, inside [0, 1] (bounded:
    uniform in [-1, 1] mixed by `mix`, so no channel strays more than spread x row sum)."""
    z = rng.uniform(-1.0, 1.0, size=(*hw, 3))
    img = np.asarray(mean) + spread * z @ np.asarray(mix).T
    assert img.min() > 0.0 and img.max() < 1.0
    return img.astype(np.float32)


def test_matrices():
    assert np.allclose(color.RGB_TO_YIQ @ color.YIQ_TO_RGB, np.eye(3), atol=1e-15)
    assert color.RGB_TO_YIQ[0].sum() == pytest.approx(1.0, abs=1e-15)
    assert np.abs(color.RGB_TO_YIQ[1:].sum(axis=1)).max() < 1e-15
    assert np.allclose(color.YIQ_TO_RGB[:, 0], 1.0, atol=1e-12)


def test_yiq_round_trip(rng):
    img = rng.random((8, 9, 3), dtype=np.float32)
    back = color.yiq_to_rgb(color.rgb_to_yiq(img))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, img, atol=1e-6)


def test_to_luminance_rgb_is_grey_with_same_y(rng):
    img = rng.random((10, 12, 3), dtype=np.float32)
    grey = color.to_luminance_rgb(img)
    assert grey.shape == img.shape and grey.dtype == np.float32
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    yiq = color.rgb_to_yiq(grey)
    np.testing.assert_allclose(yiq[..., 0], color.luminance(img), atol=1e-6)
    np.testing.assert_allclose(yiq[..., 1:], 0.0, atol=1e-6)


def test_luminance_transfer_keeps_content_chroma_and_stylised_y(rng):
    stylised = rng.random((40, 50, 3), dtype=np.float32)
    content = rng.random((40, 50, 3), dtype=np.float32)
    out = color.luminance_transfer(stylised, content)
    assert out.shape == content.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0

    unclipped = (
        content.astype(np.float64)
        + ((stylised.astype(np.float64) - content) @ color.LUMA)[..., None]
    )
    inside = np.all((unclipped >= 0.0) & (unclipped <= 1.0), axis=2)
    assert 0.2 < inside.mean() < 1.0  # random images: some pixels clip, most do not

    out_yiq = color.rgb_to_yiq(out)[inside]
    np.testing.assert_allclose(out_yiq[:, 1:], color.rgb_to_yiq(content)[inside][:, 1:], atol=2e-6)
    np.testing.assert_allclose(out_yiq[:, 0], color.luminance(stylised)[inside], atol=2e-6)


def test_luminance_transfer_of_grey_render_restores_content(rng):
    content = _correlated(
        rng, (16, 16), (0.5, 0.45, 0.4), [[1, 0.3, 0], [0.2, 1, 0.1], [0, 0.4, 1]]
    )
    out = color.luminance_transfer(color.to_luminance_rgb(content), content)
    np.testing.assert_allclose(out, content, atol=2e-6)


def test_luminance_transfer_rejects_size_mismatch(rng):
    with pytest.raises(ValueError, match="resize"):
        color.luminance_transfer(np.zeros((4, 4, 3), np.float32), np.zeros((4, 5, 3), np.float32))


def test_match_luminance(rng):
    style = rng.random((30, 20, 3), dtype=np.float32) * 0.5
    content = _correlated(rng, (25, 25), (0.5, 0.5, 0.5), np.eye(3), spread=0.05)
    out = color.match_luminance(style, content)
    y, yc = color.luminance(out).astype(np.float64), color.luminance(content).astype(np.float64)
    assert out.shape == style.shape
    assert y.mean() == pytest.approx(yc.mean(), rel=1e-4)
    assert y.std() == pytest.approx(yc.std(), rel=1e-4)


@pytest.mark.parametrize("transform", ["sqrt", "cholesky"])
def test_moments_unclipped_equal_content(rng, transform):
    style = rng.random((64, 48, 3), dtype=np.float32) ** 2
    content = rng.random((50, 70, 3), dtype=np.float32)
    content[..., 2] = 0.5 * content[..., 0] + 0.5 * content[..., 2]
    out = color.match_color(style, content, "moments", transform=transform, clip=False)
    mu, cov = color.color_moments(out)
    mu_c, cov_c = color.color_moments(content)
    np.testing.assert_allclose(mu, mu_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, cov_c, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("transform", ["sqrt", "cholesky"])
def test_moments_within_range_equal_content(rng, transform):
    style = _correlated(rng, (60, 80), (0.3, 0.5, 0.6), [[1, 0.5, 0.2], [0, 1, 0.6], [0.1, 0, 1]])
    content = _correlated(
        rng, (70, 50), (0.6, 0.4, 0.45), [[1, -0.4, 0], [0.3, 1, 0], [0.5, 0.2, 0.6]], 0.07
    )
    out = color.match_color(style, content, "moments", transform=transform)
    assert out.dtype == np.float32 and out.shape == style.shape
    unclipped = color.match_color(style, content, "moments", transform=transform, clip=False)
    assert np.array_equal(out, unclipped), "inputs were chosen so that nothing clips"
    mu, cov = color.color_moments(out)
    mu_c, cov_c = color.color_moments(content)
    np.testing.assert_allclose(mu, mu_c, rtol=1e-3)
    np.testing.assert_allclose(cov, cov_c, rtol=1e-3, atol=1e-8)


def test_moments_transforms_differ_but_both_match(rng):
    cov_s = np.array([[0.04, 0.01, 0.0], [0.01, 0.03, 0.005], [0.0, 0.005, 0.02]])
    cov_c = np.array([[0.02, -0.004, 0.003], [-0.004, 0.05, 0.01], [0.003, 0.01, 0.03]])
    a_sqrt = color.moments_transform(cov_s, cov_c, "sqrt")
    a_chol = color.moments_transform(cov_s, cov_c, "cholesky")
    for a in (a_sqrt, a_chol):
        np.testing.assert_allclose(a @ cov_s @ a.T, cov_c, rtol=1e-12, atol=1e-15)
    assert not np.allclose(a_sqrt, a_chol)
    with pytest.raises(ValueError):
        color.moments_transform(cov_s, cov_c, "lu")


def test_moments_grey_style_does_not_blow_up_noise(rng):
    grey = np.repeat(rng.random((32, 32, 1), dtype=np.float32), 3, axis=2)
    content = rng.random((32, 32, 3), dtype=np.float32)
    out = color.match_color(grey, content, "moments")
    assert np.isfinite(out).all()
    # the style has one colour direction only, so the result stays on one line in RGB
    d = out.reshape(-1, 3).astype(np.float64)
    sv = np.linalg.svd(d - d.mean(axis=0), compute_uv=False)
    assert sv[1] < 1e-3 * sv[0]


def test_histogram_matches_per_channel_quantiles(rng):
    style = rng.random((60, 40, 3), dtype=np.float32) ** 3
    content = rng.beta(2.0, 5.0, size=(45, 55, 3)).astype(np.float32)
    out = color.match_color(style, content, "histogram")
    assert out.dtype == np.float32 and out.shape == style.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    q = np.linspace(0.0, 1.0, 257)
    for ch in range(3):
        got = np.quantile(out[..., ch], q)
        want = np.quantile(content[..., ch], q)
        assert np.abs(got - want).max() <= 1.0 / 255.0


def test_histogram_same_size_sorted_values_equal(rng):
    style = rng.random((30, 30, 3), dtype=np.float32)
    content = rng.random((30, 30, 3), dtype=np.float32) ** 2
    out = color.match_color(style, content, "histogram")
    for ch in range(3):
        np.testing.assert_allclose(
            np.sort(out[..., ch].ravel()), np.sort(content[..., ch].ravel()), atol=1e-6
        )


def test_histogram_ties_map_to_equal_values(rng):
    style = (rng.integers(0, 8, size=(20, 20, 3)) / 7.0).astype(np.float32)
    content = rng.random((20, 20, 3), dtype=np.float32)
    out = color.match_color(style, content, "histogram")
    flat_in, flat_out = style.reshape(-1, 3), out.reshape(-1, 3)
    _, first, inverse = np.unique(flat_in, axis=0, return_index=True, return_inverse=True)
    np.testing.assert_array_equal(flat_out, flat_out[first][inverse.reshape(-1)])


def test_match_color_rejects_bad_mode_and_shape(rng):
    img = rng.random((8, 8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="mode"):
        color.match_color(img, img, "reinhard")
    with pytest.raises(ValueError, match="RGB"):
        color.match_color(img[..., :2], img)


def test_large_image_blocks_consistent(rng, monkeypatch):
    """The row-block streaming gives the same numbers as one block."""
    style = rng.random((37, 23, 3), dtype=np.float32)
    content = rng.random((29, 31, 3), dtype=np.float32)
    same_size = rng.random((37, 23, 3), dtype=np.float32)
    whole = color.match_color(style, content, clip=False)
    lt_whole = color.luminance_transfer(style, same_size)
    monkeypatch.setattr(color, "_CHUNK_PIXELS", 50)
    np.testing.assert_allclose(color.match_color(style, content, clip=False), whole, atol=1e-6)
    np.testing.assert_array_equal(color.luminance_transfer(style, same_size), lt_whole)
