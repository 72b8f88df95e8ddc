"""Tests for hiresnst.imageio: hostile and unusual inputs, round trips, atomic writes, path checks.

Inputs are built in tmp_path with Pillow, tifffile and numpy, so the tests need no sample files.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile, ImageOps

from hiresnst import imageio
from hiresnst.errors import UserError

RNG = np.random.default_rng(0)


def _assert_user_error(excinfo: pytest.ExceptionInfo[UserError], name: str, *words: str) -> str:
    assert excinfo.type is UserError
    message = str(excinfo.value)
    assert "\n" not in message
    assert name in message
    for word in words:
        assert word in message, message
    return message


def _noise(h: int, w: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _decode_png16(path: os.PathLike[str]) -> tuple[np.ndarray, list[bytes]]:
    """Independent decoder for 16-bit RGB PNGs (filters 0 and 4), to check our encoder exactly."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, tags = 8, b"", []
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(tag + body)
        tags.append(tag)
        if tag == b"IHDR":
            w, h, depth, colour_type, *_ = struct.unpack(">IIBBBBB", body)
            assert (depth, colour_type) == (16, 2)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, bpp = zlib.decompress(idat), w * 6, 6
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 0:
                pred = 0
            else:
                assert kind == 4
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return np.frombuffer(bytes(out), ">u2").reshape(h, w, 3), tags


# ----------------------------------------------------------------------------- bad inputs


def _truncated(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buf, format=fmt)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


BAD_INPUTS = {
    "missing.png": (None, "no such file"),
    "directory.png": ("dir", "directory"),
    "empty.png": (b"", "empty"),
    "truncated.jpg": (_truncated("JPEG"), "truncated"),
    "truncated.png": (_truncated("PNG"), "truncated"),
    "starry.png": (b"this is not a PNG\n" * 10, "not an image Pillow can read"),
    "unknown.xyz": (b"HIRESNST\x00\xff\xfe" * 40, "not an image"),
    "bomb.png": (_png_header_only(100_000, 100_000), "--max-input-pixels"),
}


@pytest.mark.parametrize("filename", sorted(BAD_INPUTS))
def test_bad_inputs_raise_one_line_user_error(tmp_path, filename):
    content, expected = BAD_INPUTS[filename]
    path = tmp_path / filename
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path)
    _assert_user_error(excinfo, str(path), expected)


def test_truncated_input_fails_even_if_pillow_is_told_to_load_truncated_images(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "cut.jpg"
    path.write_bytes(_truncated("JPEG"))
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path)
    _assert_user_error(excinfo, str(path), "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_decompression_bomb_message_gives_size_and_pillow_limit_is_restored(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path)
    _assert_user_error(excinfo, str(path), "100000x100000", "10,000,000,000")
    assert before == Image.MAX_IMAGE_PIXELS
    assert imageio.DEFAULT_MAX_PIXELS == 89_478_485  # Pillow's default


def test_small_real_image_over_a_low_max_pixels(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_noise(40, 50)).save(path)
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path, max_pixels=1999)
    _assert_user_error(excinfo, str(path), "50x40", "--max-input-pixels 2000")
    assert imageio.read_image(path, max_pixels=2000).shape == (40, 50, 3)
    assert imageio.read_image(path, max_pixels=None).shape == (40, 50, 3)


def test_too_small_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(_noise(40, 15)).save(path)
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path)
    _assert_user_error(excinfo, str(path), "15x40", str(imageio.MIN_SIDE))
    assert imageio.read_image(path, min_side=15).shape == (40, 15, 3)


def test_32bit_integer_image_outside_16bit_range(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.full((20, 20), 70_000, np.int32)).save(path)
    with pytest.raises(UserError) as excinfo:
        imageio.read_image(path)
    _assert_user_error(excinfo, str(path), "0..65535")


# ----------------------------------------------------------------------- unusual good inputs


def _read_from(tmp_path, image: Image.Image, name: str, **save) -> np.ndarray:
    path = tmp_path / name
    image.save(path, **save)
    out = imageio.read_image(path)
    assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3
    assert out.min() >= 0.0 and out.max() <= 1.0
    return out


def test_greyscale_and_bilevel(tmp_path):
    out = _read_from(tmp_path, Image.new("L", (20, 16), 100), "grey.png")
    np.testing.assert_allclose(out, 100 / 255, atol=1e-7)
    out = _read_from(tmp_path, Image.new("1", (20, 16), 1), "bits.png")
    np.testing.assert_allclose(out, 1.0)


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((16, 16, 4), np.uint8)
    arr[:, :8] = (255, 0, 0, 64)
    arr[:, 8:] = (0, 0, 255, 255)
    out = _read_from(tmp_path, Image.fromarray(arr), "rgba.png")
    a = 64 / 255
    np.testing.assert_allclose(out[0, 0], [1.0, 1 - a, 1 - a], atol=1e-6)
    np.testing.assert_allclose(out[0, 15], [0.0, 0.0, 1.0], atol=1e-6)


def test_la_is_composited_over_white(tmp_path):
    arr = np.zeros((16, 16, 2), np.uint8)
    arr[..., 1] = 128
    out = _read_from(tmp_path, Image.fromarray(arr), "la.png")
    np.testing.assert_allclose(out, 1 - 128 / 255, atol=1e-6)


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_image(tmp_path, transparent):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (8, 0, 16, 16))
    save = {"transparency": 0} if transparent else {}
    out = _read_from(tmp_path, img, "palette.png", **save)
    np.testing.assert_allclose(out[0, 0], [1, 1, 1] if transparent else [1, 0, 0])
    np.testing.assert_allclose(out[0, 15], [0, 0, 1])


def test_cmyk_jpeg(tmp_path):
    out = _read_from(tmp_path, Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "cmyk.jpg")
    np.testing.assert_allclose(out[16, 16], [0, 1, 1], atol=0.03)


def test_16bit_greyscale_png_keeps_precision(tmp_path):
    arr = np.full((20, 24), 1000, np.uint16)
    arr[0, 0] = 65535
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    out = _read_from(tmp_path, img, "grey16.png")
    assert abs(out[5, 5, 1] - 1000 / 65535) < 1e-6
    assert out[0, 0, 0] == 1.0


def test_float_tiff(tmp_path):
    arr = np.full((20, 20), 0.25, np.float32)
    arr[0, 0] = 7.0
    out = _read_from(tmp_path, Image.fromarray(arr), "float.tif")
    np.testing.assert_allclose(out[5, 5], 0.25)
    np.testing.assert_allclose(out[0, 0], 1.0)  # clipped


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[..., 2] = 255
    arr[:8, :8] = (255, 0, 0)  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    out = _read_from(tmp_path, Image.fromarray(arr), "rotated.jpg", exif=exif, quality=95)
    assert out.shape == (40, 20, 3)
    corner = out[1:7, -7:-1].mean(axis=(0, 1))
    assert corner[0] > 0.9 and corner[2] < 0.1  # red now top-right
    assert out[-4, 4, 2] > 0.9 and out[-4, 4, 0] < 0.1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(orientation):
    arr = _noise(5, 7)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(imageio._orient(arr, orientation), expected)


def test_16bit_rgb_tiff_keeps_precision_and_orientation(tmp_path):
    arr = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, arr, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    out = imageio.read_image(path)
    np.testing.assert_allclose(out, np.rot90(arr, -1) / 65535, atol=1e-7)


def test_16bit_rgba_tiff_is_composited_over_white(tmp_path):
    arr = np.zeros((16, 16, 4), np.uint16)
    arr[...] = (0, 65535, 0, 32768)
    path = tmp_path / "rgba16.tif"
    tifffile.imwrite(path, arr, photometric="rgb", extrasamples=["unassalpha"])
    a = 32768 / 65535
    np.testing.assert_allclose(imageio.read_image(path)[3, 3], [1 - a, 1, 1 - a], atol=1e-6)


# ------------------------------------------------------------------------------ round trips


def _image(h: int = 24, w: int = 32) -> np.ndarray:
    return RNG.random((h, w, 3), dtype=np.float32)


def _quantised(image: np.ndarray, maxval: int) -> np.ndarray:
    return np.rint(np.clip(image.astype(np.float64), 0, 1) * maxval)


META = {"style": "starry_night.jpg", "seed": 3, "weights": [1.5, 2], "note": "é"}


def test_png_round_trip(tmp_path):
    path = tmp_path / "out.png"
    image = _image()
    imageio.write_image(path, image, metadata=META, dpi=300)
    with Image.open(path) as img:
        assert img.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert img.info["Software"] == "hiresnst"
        np.testing.assert_array_equal(np.asarray(img), _quantised(image, 255))
    assert imageio.read_metadata(path) == META
    np.testing.assert_allclose(imageio.read_image(path), _quantised(image, 255) / 255, atol=1e-7)


def test_png16_round_trip_with_independent_decoder(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_CHUNK_ELEMENTS", 160)  # 2-row chunks: rows carry over
    path = tmp_path / "out16.png"
    image = _image(9, 13)
    image[0, 0] = (0.0, 1.0, 0.5)
    imageio.write_image(path, image, metadata=META, dpi=600, bit_depth=16)
    decoded, tags = _decode_png16(path)
    np.testing.assert_array_equal(decoded, _quantised(image, 65535))
    assert tags[0] == b"IHDR" and tags[-1] == b"IEND"
    assert tags.index(b"iTXt") < tags.index(b"IDAT")
    assert imageio.read_metadata(path) == META
    with Image.open(path) as img:  # Pillow reads it too, at 8 bits
        assert img.info["dpi"] == pytest.approx((600, 600), abs=0.02)
        np.testing.assert_array_equal(np.asarray(img), decoded >> 8)


def test_png8_is_streamed_in_row_chunks(tmp_path, monkeypatch):
    """8-bit PNGs go through the same row-streaming encoder (no full-size copy of a gigapixel
    output); rows carry the Paeth filter's context over chunk boundaries."""
    monkeypatch.setattr(imageio, "_CHUNK_ELEMENTS", 80)  # 2-row chunks
    path = tmp_path / "out8.png"
    image = _image(9, 13)
    imageio.write_image(path, image, metadata=META, dpi=600)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.info["icc_profile"] == imageio.srgb_icc()
        np.testing.assert_array_equal(np.asarray(img), _quantised(image, 255))
    assert imageio.read_metadata(path) == META


def test_jpeg_round_trip(tmp_path):
    path = tmp_path / "out.JPG"
    image = np.full((24, 32, 3), 0.5, np.float32)
    image[:, :16, 0] = 0.9
    imageio.write_image(path, image, metadata=META, dpi=300, quality=95)
    with Image.open(path) as img:
        assert img.format == "JPEG"
        assert img.info["dpi"] == (300, 300)
        assert json.loads(img.info["comment"]) == META
        assert json.loads(img.getexif()[0x010E]) == META
    assert imageio.read_metadata(path) == META
    np.testing.assert_allclose(imageio.read_image(path), image, atol=0.02)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_tiff_round_trip(tmp_path, bit_depth):
    path = tmp_path / "out.tiff"
    image = _image()
    imageio.write_image(path, image, metadata=META, dpi=300, bit_depth=bit_depth)
    maxval = 255 if bit_depth == 8 else 65535
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.description == json.dumps(META, sort_keys=True)
        assert page.tags["XResolution"].value == (300, 1)
        assert page.tags["YResolution"].value == (300, 1)
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        np.testing.assert_array_equal(page.asarray(), _quantised(image, maxval))
        assert not page.is_tiled and not tif.is_bigtiff
    assert imageio.read_metadata(path) == META
    np.testing.assert_allclose(imageio.read_image(path), _quantised(image, maxval) / maxval)


def test_large_tiff_is_tiled_and_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "TIFF_TILE_ABOVE", 32)
    monkeypatch.setattr(imageio, "BIGTIFF_ABOVE_BYTES", 1000)
    path = tmp_path / "big.tif"
    image = _image(40, 300)
    imageio.write_image(path, image, bit_depth=16)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.pages.first.is_tiled
        assert tif.pages.first.tilewidth == 256
        np.testing.assert_array_equal(tif.asarray(), _quantised(image, 65535))


def test_values_are_clipped_and_nan_is_black(tmp_path):
    path = tmp_path / "clip.png"
    image = np.full((16, 16, 3), 0.5, np.float64)
    image[0, 0] = (-1.0, 2.0, np.nan)
    image[0, 1] = (0.5 / 255 - 1e-9, 0.5 / 255 + 1e-9, 254.5 / 255 + 1e-9)
    imageio.write_image(path, image)
    with Image.open(path) as img:
        arr = np.asarray(img)
    assert arr[0, 0].tolist() == [0, 255, 0]
    assert arr[0, 1].tolist() == [0, 1, 255]
    assert arr[1, 1].tolist() == [128, 128, 128]


def test_no_metadata(tmp_path):
    for name in ("plain.png", "plain.jpg", "plain.tif"):
        imageio.write_image(tmp_path / name, _image())
        assert imageio.read_metadata(tmp_path / name) is None
    path = tmp_path / "comment.jpg"
    Image.fromarray(_noise(16, 16)).save(path, comment="not json")
    assert imageio.read_metadata(path) is None


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        imageio.write_image(tmp_path / "x.png", np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imageio.write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("x.jpg", {"bit_depth": 16}, "8 bits"),
        ("x.png", {"bit_depth": 12}, "8 or 16"),
        ("x.png", {"dpi": 0}, "dpi"),
        ("x.jpg", {"quality": 0}, "quality"),
        ("x.bmp", {}, ".png"),
    ],
)
def test_write_rejects_bad_options_before_writing(tmp_path, name, kwargs, expected):
    path = tmp_path / name
    with pytest.raises(UserError) as excinfo:
        imageio.write_image(path, _image(), **kwargs)
    _assert_user_error(excinfo, str(path), expected)
    assert os.listdir(tmp_path) == []


def test_jpeg_side_limit_suggests_tiff(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "JPEG_MAX_SIDE", 20)
    path = tmp_path / "wide.jpg"
    with pytest.raises(UserError) as excinfo:
        imageio.write_image(path, _image(16, 21))
    _assert_user_error(excinfo, str(path), ".tif")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------- atomicity


def _write_then_raise(exc: BaseException):
    def fail(fh, *args, **kwargs):
        fh.write(b"partial data")
        raise exc

    return fail


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.tif", "out16.png"])
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_leaves_no_file(tmp_path, monkeypatch, name, exc):
    fail = _write_then_raise(exc)
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: fail(fp))
    monkeypatch.setattr(tifffile, "imwrite", fail)
    monkeypatch.setattr(imageio, "_encode_png", fail)
    bit_depth = 16 if "16" in name else 8
    with pytest.raises(type(exc)):
        imageio.write_image(tmp_path / name, _image(), bit_depth=bit_depth)
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_file_and_os_errors_are_user_errors(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"previous render")
    fail = _write_then_raise(OSError(28, "No space left on device"))
    monkeypatch.setattr(imageio, "_encode_png", fail)
    with pytest.raises(UserError) as excinfo:
        imageio.write_image(path, _image())
    _assert_user_error(excinfo, str(path), "No space left")
    assert os.listdir(tmp_path) == ["out.png"]
    assert path.read_bytes() == b"previous render"


def test_temp_file_is_hidden_in_the_same_directory(tmp_path, monkeypatch):
    seen = []
    real_save = Image.Image.save

    def spy(self, fp, *args, **kwargs):
        seen.extend(os.listdir(tmp_path))
        assert kwargs["format"] == "JPEG"  # the .tmp suffix cannot choose the format
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", spy)
    imageio.write_image(tmp_path / "out.jpg", _image())
    assert len(seen) == 1 and seen[0].startswith(".out.jpg.") and seen[0].endswith(".tmp")
    assert os.listdir(tmp_path) == ["out.jpg"]


# ------------------------------------------------------------------------ check_output_path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.png", "png"),
        ("a.JPG", "jpeg"),
        ("a.jpeg", "jpeg"),
        ("a.Tif", "tiff"),
        ("a.tiff", "tiff"),
    ],
)
def test_check_output_path_formats(tmp_path, name, fmt):
    assert imageio.check_output_path(tmp_path / name) == fmt
    assert os.listdir(tmp_path) == []  # the probe file is gone


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("out.gif", ".png, .jpg, .jpeg, .tif, .tiff"),
        ("out", "(none)"),
        ("missing/out.png", "does not exist"),
        ("afile.txt/out.png", "is not a directory"),
        ("adir", "is a directory"),
    ],
)
def test_check_output_path_rejects(tmp_path, relpath, expected):
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    path = tmp_path / relpath
    with pytest.raises(UserError) as excinfo:
        imageio.check_output_path(path)
    _assert_user_error(excinfo, str(path), expected)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0,
    reason="root (and Windows) can write to a chmod 0o500 directory; see the monkeypatched tests",
)
def test_check_output_path_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError) as excinfo:
            imageio.check_output_path(locked / "out.png")
        _assert_user_error(excinfo, str(locked / "out.png"), "not writable")
    finally:
        locked.chmod(0o700)


def test_check_output_path_when_os_access_denies(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio.os, "access", lambda *a, **k: False)
    with pytest.raises(UserError) as excinfo:
        imageio.check_output_path(tmp_path / "out.png")
    _assert_user_error(excinfo, str(tmp_path / "out.png"), "not writable")


def test_check_output_path_when_creating_a_file_fails(tmp_path, monkeypatch):
    # os.access says yes (as for root, or on a read-only mount); the real creation attempt fails.
    def refuse(directory, base):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(imageio, "_create_temp", refuse)
    with pytest.raises(UserError) as excinfo:
        imageio.check_output_path(tmp_path / "out.png")
    _assert_user_error(excinfo, str(tmp_path / "out.png"), "Read-only file system")


@pytest.mark.parametrize(
    ("name", "size", "bit_depth", "expected"),
    [
        ("a.jpg", (70_000, 100), 8, ".tif"),
        ("a.png", (100, 2_000_000), 8, ".tif"),
        ("a.jpg", (100, 100), 16, "8 bits"),
    ],
)
def test_check_output_path_format_limits(tmp_path, name, size, bit_depth, expected):
    path = tmp_path / name
    with pytest.raises(UserError) as excinfo:
        imageio.check_output_path(path, size=size, bit_depth=bit_depth)
    _assert_user_error(excinfo, str(path), expected)


def test_check_output_path_accepts_huge_tiff(tmp_path):
    assert imageio.check_output_path(tmp_path / "a.tif", size=(200_000, 100_000)) == "tiff"
