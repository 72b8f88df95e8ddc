"""VGG19: layer names, shapes, and a forward pass against an independent NumPy network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NARROW

from hiresnst.model import (
    CONV_LAYERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAYERS,
    VGG19,
    exact_halo,
    layer_level,
    param_shapes,
    random_params,
)


def test_layer_names_are_the_sixteen_vgg19_convs():
    expected = [
        f"conv{b}_{i}"
        for b, n in zip(range(1, 6), (2, 2, 4, 4, 4), strict=True)
        for i in range(1, n + 1)
    ]
    assert list(CONV_LAYERS) == expected
    assert len(CONV_LAYERS) == 16


def test_full_width_parameter_shapes():
    shapes = param_shapes()
    assert shapes["conv1_1"]["kernel"] == (3, 3, 3, 64)
    assert shapes["conv3_4"]["kernel"] == (3, 3, 256, 256)
    assert shapes["conv4_1"]["kernel"] == (3, 3, 256, 512)
    assert shapes["conv5_4"]["bias"] == (512,)
    n = sum(int(np.prod(s["kernel"])) + s["bias"][0] for s in shapes.values())
    assert n == 20_024_384  # torchvision VGG19 features: 20,024,384 parameters


def test_feature_shapes_and_floor_pooling():
    params = random_params(0, NARROW)
    feats = VGG19(widths=NARROW).apply(
        {"params": params}, jnp.zeros((2, 37, 45, 3)), outputs=CONV_LAYERS
    )
    for name in CONV_LAYERS:
        k = layer_level(name)
        h, w = 37, 45
        for _ in range(k):
            h, w = h // 2, w // 2
        assert feats[name].shape == (2, h, w, NARROW[int(name[4]) - 1]), name


def test_stops_at_the_deepest_requested_layer():
    params = random_params(0, NARROW)
    for name in ("conv5_4", "conv5_1", "conv4_2", "conv1_1"):
        out = VGG19(widths=NARROW).apply(
            {"params": params}, jnp.zeros((1, 32, 32, 3)), outputs=(name,), mutable=False
        )
        assert set(out) == {name}
    # A narrow truncated model does not even need deeper parameters to exist.
    shallow = {k: v for k, v in params.items() if k in ("conv1_1", "conv1_2", "conv2_1")}
    VGG19(widths=NARROW).apply({"params": shallow}, jnp.zeros((1, 16, 16, 3)), outputs=("conv2_1",))


def test_exact_halo_matches_hand_count():
    # conv5_1: five corrupted positions at level 4 → 5·16 = 80 px; conv4_2: 5 at level 3 → 40.
    assert exact_halo("conv5_1") == 80
    assert exact_halo("conv4_2") == 40
    assert exact_halo("conv1_1") == 1


def _numpy_conv3x3(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Naive 'same' 3×3 convolution (cross-correlation) of (H, W, Cin) with HWIO k."""
    h, w, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, k.shape[3]), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += xp[dy : dy + h, dx : dx + w, :] @ k[dy, dx]
    return out + b


def _numpy_vgg(x: np.ndarray, params: dict, pooling: str) -> dict[str, np.ndarray]:
    h = (x - IMAGENET_MEAN) / IMAGENET_STD
    feats = {}
    for name in LAYERS:
        if name.startswith("pool"):
            hh, ww = h.shape[0] // 2 * 2, h.shape[1] // 2 * 2
            blocks = h[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2, -1)
            h = blocks.mean(axis=(1, 3)) if pooling == "avg" else blocks.max(axis=(1, 3))
        else:
            k, b = np.asarray(params[name]["kernel"], np.float64), np.asarray(params[name]["bias"])
            h = feats[name] = np.maximum(_numpy_conv3x3(h, k, b), 0)
    return feats


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_forward_matches_independent_numpy_network(rng, pooling):
    params = random_params(3, NARROW)
    params = {
        n: {
            "kernel": p["kernel"],
            "bias": jnp.asarray(rng.normal(0, 0.1, p["bias"].shape), jnp.float32),
        }
        for n, p in params.items()
    }
    x = rng.random((35, 41, 3)).astype(np.float32)
    ref = _numpy_vgg(x.astype(np.float64), params, pooling)
    out = VGG19(widths=NARROW, pooling=pooling).apply(
        {"params": params}, jnp.asarray(x)[None], outputs=CONV_LAYERS
    )
    for name in CONV_LAYERS:
        got = np.asarray(out[name][0], np.float64)
        assert got.shape == ref[name].shape, name
        rel = np.abs(got - ref[name]).max() / max(np.abs(ref[name]).max(), 1e-12)
        assert rel <= 1e-5, (name, rel)


def test_conv3x3_gradients_equal_autodiffs():
    """The hand-written input gradient (a forward conv with the flipped, transposed kernel)
    and the kernel gradient equal autodiff's of the plain conv."""
    from hiresnst.model import conv3x3

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 9, 7, 5)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 5, 4)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((2, 9, 7, 4)), jnp.float32)

    def plain(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    want = jax.vjp(plain, x, k)[1](g)
    got = jax.vjp(conv3x3, x, k)[1](g)
    np.testing.assert_allclose(plain(x, k), conv3x3(x, k), rtol=1e-6)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
