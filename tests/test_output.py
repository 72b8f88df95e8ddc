"""Print outputs: the streaming tiled BigTIFF writer, ICC profiles, previews."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from PIL import Image

from hiresnst import imageio


def test_streamed_16bit_tiled_bigtiff_reads_back(tmp_path, monkeypatch, rng):
    # Small thresholds so that a test-sized image takes the tiled BigTIFF path of a huge one.
    monkeypatch.setattr(imageio, "TIFF_TILE_ABOVE", 64)
    monkeypatch.setattr(imageio, "BIGTIFF_ABOVE_BYTES", 1000)
    image = rng.random((300, 517, 3)).astype(np.float32)  # tiles do not divide it
    meta = {"settings": {"size": 517}, "weights": {"kind": "random"}}
    out = tmp_path / "print.tif"
    imageio.write_image(out, image, metadata=meta, dpi=300, bit_depth=16)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == imageio.TIFF_TILE
        assert page.dtype == np.uint16 and page.shape == (300, 517, 3)
        assert page.tags["XResolution"].value == (300, 1)
        assert page.tags["ResolutionUnit"].value == 2  # inch
        assert page.tags[imageio.ICC_TAG].value == imageio.srgb_icc()
        assert json.loads(page.description) == meta
        pixels = page.asarray()
    expected = np.rint(image.astype(np.float64) * 65535)
    np.testing.assert_array_equal(pixels, expected)
    assert imageio.read_metadata(out) == meta
    assert [p.name for p in tmp_path.iterdir()] == ["print.tif"]


def test_icc_profile_in_png_and_jpeg(tmp_path, rng):
    image = rng.random((20, 30, 3)).astype(np.float32)
    for name in ("a.png", "b.jpg"):
        imageio.write_image(tmp_path / name, image, dpi=150)
        with Image.open(tmp_path / name) as im:
            assert im.info["icc_profile"] == imageio.srgb_icc()
            assert round(im.info["dpi"][0]) == 150


def test_preview_is_a_small_jpeg_beside_the_output(tmp_path, rng):
    image = rng.random((100, 300, 3)).astype(np.float32)
    path = imageio.write_preview(tmp_path / "wall.tif", image, side=64)
    assert path == tmp_path / "wall.preview.jpg"
    with Image.open(path) as im:
        assert im.size == (64, 21)
