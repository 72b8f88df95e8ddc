"""Reading input images, checking output paths and writing renders.

Inputs come from users, so every failure (missing, truncated, hostile or odd files) becomes a
one-line `UserError`. Outputs are the product of renders that can take hours, so
`check_output_path` rejects everything `write_image` would reject *before* the render starts, and
`write_image` writes atomically: a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from hiresnst import leftovers
from hiresnst.config import DEFAULT_MAX_PIXELS
from hiresnst.errors import UserError
from hiresnst.printsize import MAX_DPI

"""Pillow's own default `Image.MAX_IMAGE_PIXELS` (89,478,485 px), written out so that another
library lowering or disabling the global cannot change our default."""

MIN_SIDE = 16
"""Smallest side for which VGG19's conv5_1 (four 2x poolings deep) still has one position."""

OUTPUT_FORMATS: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
}

JPEG_MAX_SIDE = 65_500
"""libjpeg's JPEG_MAX_DIMENSION: the format allows 65,535 px, but libjpeg refuses above 65,500."""

PNG_MAX_SIDE = 1_000_000
"""libpng's default user limit on width and height: larger PNGs are rejected by most readers."""

TIFF_TILE_ABOVE = 4096
"""TIFFs with a side above this are written tiled, so readers can load regions, not whole rows."""

TIFF_TILE = (256, 256)

BIGTIFF_ABOVE_BYTES = 2**31 - 2**25
"""Classic TIFF offsets are 32-bit and many readers treat them as signed: switch to BigTIFF
before the pixel data reaches 2 GiB (with 32 MiB of headroom for tags and offset tables)."""

"""JPEG (JFIF) stores density in 16 bits; the same bound is applied to every format."""

METADATA_KEY = "hiresnst"
SOFTWARE = "hiresnst"

_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_CHUNK_ELEMENTS = 1 << 20  # conversions run in row chunks of ~1M samples to bound temporaries

# Pillow's decompression-bomb limit (and its truncated-image switch) are process-wide globals; we
# change them only temporarily and under this lock, so concurrent reads cannot restore stale values.
_PILLOW_LIMIT_LOCK = threading.RLock()


def _user_error(name: str, problem: str) -> UserError:
    """A `UserError` naming the file, on one line (library messages may hold newlines)."""
    return UserError(" ".join(f"{name}: {problem}".split()))


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int | None) -> Iterator[None]:
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = limit
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated input must fail, not turn grey
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


# --------------------------------------------------------------------------------------- reading


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Read an image as float32 H x W x 3 RGB in [0, 1], upright as its EXIF orientation says.

    Every Pillow mode is converted: greyscale is replicated to three channels, CMYK uses Pillow's
    conversion, 16-bit greyscale keeps its precision (scaled by 1/65535), and alpha or palette
    transparency is composited over white (transparent areas are paper in a print). 16-bit RGB
    TIFFs keep 16-bit precision when tifffile can decode them; Pillow reads 16-bit RGB PNGs at
    8 bits. The pixel count is checked from the header before decoding (decompression-bomb
    guard); `max_pixels=None` disables the check.
    """
    name = os.fspath(path)
    if max_pixels is not None and max_pixels < 1:
        raise UserError(f"--max-input-pixels must be a positive number, got {max_pixels}")
    _check_input_file(name)
    with _pillow_pixel_limit(None):
        img = _open(name)  # header only: our exact check below replaces Pillow's
    with img, _pillow_pixel_limit(max_pixels):
        _check_size(name, img.size, max_pixels, min_side)
        if _is_tiff_rgb16(img):
            arr = _read_tiff_rgb16(name, img)
            if arr is not None:
                return arr
        try:
            img.load()
        except Image.DecompressionBombError as e:
            raise _user_error(
                name, f"{e}; pass --max-input-pixels to raise the limit knowingly"
            ) from e
        except _DECODE_ERRORS as e:
            raise _user_error(
                name, f"corrupt or truncated image ({e}); re-export or re-download it"
            ) from e
        try:
            ImageOps.exif_transpose(img, in_place=True)
        except (*_DECODE_ERRORS, KeyError, TypeError) as e:
            warnings.warn(f"{name}: ignoring unreadable EXIF orientation ({e})", stacklevel=2)
        return _to_rgb_float(name, img)


def _check_input_file(name: str) -> None:
    if not os.path.exists(name):
        raise _user_error(name, "no such file; check the path")
    if os.path.isdir(name):
        raise _user_error(name, "is a directory, not an image; give the path of an image file")
    if not os.path.isfile(name):  # a FIFO or device would block or never end
        raise _user_error(name, "not a regular file (a pipe or device?); give an image file")
    if os.path.getsize(name) == 0:
        raise _user_error(name, "empty file (0 bytes); give a PNG, JPEG or TIFF")


def _open(name: str) -> Image.Image:
    try:
        return Image.open(name)
    except UnidentifiedImageError as e:
        raise _user_error(
            name,
            "not an image Pillow can read (cannot identify image file); give a PNG, JPEG or TIFF",
        ) from e
    except PermissionError as e:
        raise _user_error(name, f"cannot open ({e.strerror}); check its permissions") from e
    except _DECODE_ERRORS as e:
        raise _user_error(name, f"unreadable image header ({e}); re-export the image") from e


def _check_size(name: str, size: tuple[int, int], max_pixels: int | None, min_side: int) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise _user_error(
            name,
            f"{w}x{h} = {w * h:,} pixels exceeds the input limit of {max_pixels:,} pixels "
            f"(decompression-bomb guard); pass --max-input-pixels {w * h} to allow it knowingly",
        )
    if min(w, h) < min_side:
        raise _user_error(
            name,
            f"{w}x{h} is too small: each side must be at least {min_side} px "
            f"(VGG19's conv5_1 needs it); use a larger image",
        )


def _to_rgb_float(name: str, img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in _GREY16_MODES or mode == "F":
        arr = np.asarray(img)
        if mode == "F":
            grey = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)
        else:
            if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise _user_error(
                    name, "32-bit integer samples outside 0..65535; save it as 8- or 16-bit"
                )
            grey = arr.astype(np.float32) / np.float32(65535)
            if isinstance(img.info.get("transparency"), int):
                grey[arr == img.info["transparency"]] = 1.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    try:
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"))
            return _composite_over_white(rgba, 255)
        rgb = np.asarray(img if mode == "RGB" else img.convert("RGB"))
    except ValueError as e:  # e.g. "conversion from LAB to RGB not supported"
        raise _user_error(name, f"image mode {mode} is not supported ({e}); save it as RGB") from e
    return _scaled(rgb, 255)


def _scaled(arr: np.ndarray, maxval: int) -> np.ndarray:
    out = np.empty(arr.shape, np.float32)
    step = _rows_per_chunk(arr)
    for r in range(0, arr.shape[0], step):
        out[r : r + step] = arr[r : r + step] / np.float32(maxval)
    return out


def _composite_over_white(
    arr: np.ndarray, maxval: int, *, premultiplied: bool = False
) -> np.ndarray:
    """RGB of an RGBA integer array over a white background, as float32 in [0, 1]."""
    out = np.empty((*arr.shape[:2], 3), np.float32)
    step = _rows_per_chunk(arr)
    for r in range(0, arr.shape[0], step):
        c = arr[r : r + step].astype(np.float32) / np.float32(maxval)
        alpha = c[:, :, 3:4]
        rgb = c[:, :, :3] if premultiplied else c[:, :, :3] * alpha
        out[r : r + step] = np.clip(rgb + (1.0 - alpha), 0.0, 1.0)
    return out


def _rows_per_chunk(arr: np.ndarray) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, arr[0].size))


def _is_tiff_rgb16(img: Image.Image) -> bool:
    if img.format != "TIFF":
        return False
    bits = img.tag_v2.get(258, ())
    bits = bits if isinstance(bits, tuple) else (bits,)
    return img.tag_v2.get(262) == 2 and len(bits) >= 3 and all(b == 16 for b in bits)


def _read_tiff_rgb16(name: str, img: Image.Image) -> np.ndarray | None:
    """16-bit RGB(A) TIFF at full precision (Pillow would truncate it to 8 bits).

    Returns None, with a warning, when tifffile cannot decode it (LZW and PackBits need the
    optional imagecodecs package); the caller then reads it with Pillow at 8 bits.
    """
    try:
        with tifffile.TiffFile(name) as tif:
            page = tif.pages.first
            arr = page.asarray()
            arr = np.moveaxis(arr, page.axes.index("S"), -1)
            extra = tuple(page.extrasamples)
    except Exception as e:  # any failure: Pillow still gets its chance below
        warnings.warn(f"{name}: reading at 8 bits per channel ({e})", stacklevel=3)
        return None
    if arr.shape[2] >= 4 and extra and extra[0] in (1, 2):  # 1: associated, 2: unassociated
        out = _composite_over_white(arr, 65535, premultiplied=extra[0] == 1)
    else:
        out = _scaled(arr[:, :, :3], 65535)
    try:
        orientation = img.getexif().get(0x0112, 1)
    except (*_DECODE_ERRORS, KeyError, TypeError):
        orientation = 1
    return np.ascontiguousarray(_orient(out, orientation))


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The numpy equivalent of `ImageOps.exif_transpose` for orientations 1-8."""
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return transforms.get(orientation, lambda a: a)(arr)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The "hiresnst" JSON that `write_image` stored, or None if the file carries none.

    Looks in the PNG text chunk, the JPEG comment (then EXIF ImageDescription) and the TIFF
    ImageDescription. Only the header is read, so this is cheap even for gigapixel files.
    """
    name = os.fspath(path)
    _check_input_file(name)
    with _pillow_pixel_limit(None):  # no pixels are decoded here
        img = _open(name)
    with img:
        text: Any = None
        if img.format == "PNG":
            text = img.info.get(METADATA_KEY)
        elif img.format in ("JPEG", "MPO"):
            text = img.info.get("comment") or img.getexif().get(0x010E)
        elif img.format == "TIFF":
            text = img.tag_v2.get(270)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------ checking paths


def check_output_path(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    bit_depth: int = 8,
    dpi: float | None = None,
    quality: int = 95,
) -> str:
    """Check, before a render starts, that `write_image` will be able to write `path`.

    Returns the format ("png", "jpeg" or "tiff") given by the extension. Checks that the
    directory exists and that a file can really be created there (os.access alone is wrong for
    root, ACLs and read-only mounts). `size` is (width, height) of the render, if known, and is
    checked against the format's limits together with `bit_depth`, `dpi` and `quality`.
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise _user_error(name, "is a directory; give an output file name such as out.png")
    fmt = _output_format(name)
    _check_write_options(name, fmt, size, bit_depth, dpi, quality)
    directory = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise _user_error(name, f"{directory} is not a directory; fix the output path")
        raise _user_error(name, f"output directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _user_error(
            name, f"output directory {directory} is not writable; choose another directory"
        )
    leftovers.clean(directory, leftovers.TEMP_FILE)  # of writers killed before their rename
    try:
        with _create_temp(directory, os.path.basename(name)) as probe:
            pass
        os.unlink(probe.name)
    except OSError as e:
        raise _user_error(
            name, f"cannot create files in {directory} ({e.strerror or e}); choose another one"
        ) from e
    return fmt


def check_directory(path: str | os.PathLike[str], what: str) -> None:
    """UserError unless `path` is, or could be made as, a directory this process can write:
    it, or its nearest existing ancestor, is a writable directory. Nothing is created (a run
    refused later for another reason leaves no empty directory behind)."""
    name = os.fspath(path)
    probe = os.path.abspath(name)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(name) else f"is inside a file, {probe}"
        raise UserError(f"{what} {name} {where}, not a directory; give a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {name}: {probe} is not writable; give a writable directory")


def _path_keys(path: str | os.PathLike[str]) -> list[object]:
    """What identifies a file: its resolved path (symlinks, `..`), and its (device, inode) when
    it exists (hard links, bind mounts)."""
    keys: list[object] = [os.path.realpath(path)]
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(path)
        keys.append((st.st_dev, st.st_ino))
    return keys


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file."""
    return bool(set(_path_keys(a)) & set(_path_keys(b)))


def refuse_overwriting_inputs(
    outputs: Iterable[tuple[str, str | os.PathLike[str] | None]],
    inputs: Iterable[tuple[str, str | os.PathLike[str]]],
) -> None:
    """UserError when an output (`(what, path)`; None = not used) is one of the inputs: writing
    it would destroy that input (`-o photo.png` with photo.png as the content)."""
    known: dict[object, tuple[str, str | os.PathLike[str]]] = {}
    for role, path in inputs:
        for key in _path_keys(path):
            known.setdefault(key, (role, path))
    for what, out in outputs:
        for key in [] if out is None else _path_keys(out):
            if key in known:
                role, path = known[key]
                raise UserError(
                    f"{what} {os.fspath(out)} is the {role} {os.fspath(path)}; writing it would "
                    "destroy that input: choose another path"
                )


def _output_format(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise _user_error(
            name,
            f"unsupported output extension {ext or '(none)'!r}; use one of "
            + ", ".join(OUTPUT_FORMATS),
        )
    return OUTPUT_FORMATS[ext]


def _check_write_options(
    name: str,
    fmt: str,
    size: tuple[int, int] | None,
    bit_depth: int,
    dpi: float | None,
    quality: int,
) -> None:
    if bit_depth not in (8, 16):
        raise _user_error(name, f"bit depth must be 8 or 16, got {bit_depth}")
    if fmt == "jpeg" and bit_depth == 16:
        raise _user_error(name, "JPEG holds 8 bits per channel; use .png or .tif for 16-bit")
    if dpi is not None and not (math.isfinite(dpi) and 0 < dpi <= MAX_DPI):
        raise _user_error(name, f"dpi must be a number in (0, {MAX_DPI}], got {dpi}")
    if fmt == "jpeg" and not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise _user_error(name, f"JPEG quality must be an integer from 1 to 100, got {quality}")
    if size is not None:
        w, h = size
        limit = {"jpeg": JPEG_MAX_SIDE, "png": PNG_MAX_SIDE}.get(fmt)
        if limit is not None and max(w, h) > limit:
            raise _user_error(
                name,
                f"{w}x{h} is too large for {fmt.upper()} (at most {limit:,} px per side); "
                "write a .tif instead",
            )


# --------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    image: np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
    dpi: float | None = None,
    bit_depth: int = 8,
    quality: int = 95,
) -> None:
    """Write a float H x W x 3 RGB image in [0, 1] as PNG, JPEG or TIFF (chosen by extension).

    Values are clipped and rounded to the nearest level; NaN becomes 0 so a broken render is
    still written and visible. `metadata` is stored as sorted-key JSON (PNG iTXt "hiresnst", JPEG
    comment and EXIF ImageDescription, TIFF ImageDescription; see `read_metadata`); `dpi` goes to
    PNG pHYs, JPEG density or TIFF resolution. PNG (8 or 16 bits) and TIFF are streamed from
    `image` a few rows or tiles at a time (own PNG encoder: Pillow cannot write 16-bit RGB PNG
    and copies the whole image); JPEG is quantised whole for Pillow. The file is written to a
    hidden temporary file in the same directory, fsynced and renamed over `path`, so `path` is
    either complete or untouched.
    """
    name = os.fspath(path)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ValueError(f"image must be a non-empty H x W x 3 array, got shape {arr.shape}")
    if arr.dtype.kind in "biu":
        raise ValueError(f"image must be floating point in [0, 1], got {arr.dtype}")
    fmt = _output_format(name)
    height, width = arr.shape[:2]
    _check_write_options(name, fmt, (width, height), bit_depth, dpi, quality)
    # default=str: a stray Path or enum in the metadata must not cost the finished render.
    text = None if metadata is None else json.dumps(dict(metadata), sort_keys=True, default=str)
    if fmt == "tiff":  # streamed: quantised one tile or strip at a time, no full-size copy

        def write(fh: BinaryIO) -> None:
            _encode_tiff(fh, arr, bit_depth, text, dpi)

    elif fmt == "png":  # streamed too: rows quantised, filtered and compressed as they go

        def write(fh: BinaryIO) -> None:
            _encode_png(fh, arr, bit_depth, text, dpi)

    else:  # Pillow's JPEG encoder takes a whole image (JPEG sides are at most 65,500 px)
        data = quantize(arr, bit_depth)

        def write(fh: BinaryIO) -> None:
            _encode_jpeg(fh, data, text, dpi, quality)

    try:
        atomic_write(name, write)
    except OSError as e:
        raise _user_error(
            name, f"cannot write ({e.strerror or e}); check free space and permissions"
        ) from e


def quantize(arr: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] → uint8/uint16 levels: clipped, rounded to the nearest, NaN → 0; a few rows
    at a time, so a huge image needs no full-size float64 copy."""
    maxval, dtype = (255, np.uint8) if bit_depth == 8 else (65535, np.uint16)
    out = np.empty(arr.shape, dtype)
    step = _rows_per_chunk(arr)
    for r in range(0, arr.shape[0], step):
        c = np.nan_to_num(arr[r : r + step].astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(c, 0.0, 1.0, out=c)
        c *= maxval
        out[r : r + step] = np.rint(c, out=c)
    return out


def _create_temp(directory: str, base: str) -> BinaryIO:
    """Create and open `leftovers.temp_file_name(base)` exclusively (mode "xb" honours the
    umask): hidden, never longer than a file name may be, and removable by a later run if this
    process is killed before the rename."""
    for _ in range(100):
        tmp = os.path.join(directory, leftovers.temp_file_name(base))
        try:
            return open(tmp, "xb")  # the caller closes it
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file in {directory}")


def atomic_write(name: str, write: Callable[[BinaryIO], None]) -> None:
    """Write through `write` into a hidden temporary file beside `name`, fsync it and rename it
    over `name`: `name` is either complete or untouched."""
    directory = os.path.dirname(os.path.abspath(name))
    fh = _create_temp(directory, os.path.basename(name))
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(fh.name, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(fh.name)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX only)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _encode_png(
    fh: BinaryIO, arr: np.ndarray, bit_depth: int, text: str | None, dpi: float | None
) -> None:
    """Minimal RGB PNG encoder for float rows (8 or 16 bits; Paeth filter on every row, zlib
    level 6, 1 MiB IDATs): rows are quantised a chunk at a time, so a gigapixel image (or the
    host state's memory-mapped array) is never copied whole, as Pillow's encoder would (4 bytes
    a pixel, beside the 8-bit copy it is given)."""

    def chunk(tag: bytes, body: bytes) -> None:
        fh.write(struct.pack(">I", len(body)) + tag)
        fh.write(body)
        fh.write(struct.pack(">I", zlib.crc32(body, zlib.crc32(tag))))

    height, width = arr.shape[:2]
    bpp = 3 * bit_depth // 8  # bytes per pixel
    fh.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0))
    if dpi:
        ppm = round(dpi / 0.0254)
        chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1))
    chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(srgb_icc()))
    chunk(b"tEXt", b"Software\0" + SOFTWARE.encode("latin-1"))
    if text is not None:  # keyword, then flag, method, language and translated keyword: all empty
        chunk(b"iTXt", METADATA_KEY.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))
    compressor = zlib.compressobj(6)
    pending = bytearray()
    prev = np.zeros(width * bpp, np.uint8)
    step = max(1, _CHUNK_ELEMENTS // (width * bpp))
    for r in range(0, height, step):
        levels = quantize(arr[r : r + step], bit_depth)
        raw = levels.astype(">u2", copy=False) if bit_depth == 16 else levels
        raw = raw.view(np.uint8).reshape(-1, width * bpp)
        pending += compressor.compress(_paeth_filter(raw, prev, bpp))
        prev = raw[-1]
        if len(pending) >= 1 << 20:
            chunk(b"IDAT", bytes(pending))
            pending.clear()
    pending += compressor.flush()
    chunk(b"IDAT", bytes(pending))
    chunk(b"IEND", b"")


def _paeth_filter(raw: np.ndarray, prev: np.ndarray, bpp: int = 6) -> np.ndarray:
    """PNG filter type 4 of byte rows `raw` (n x L); `prev` is the row above the first one."""
    x = raw.astype(np.int16)
    b = np.empty_like(x)
    b[0] = prev
    b[1:] = x[:-1]
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    out = np.empty((x.shape[0], x.shape[1] + 1), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (x - pred) & 0xFF
    return out


def _encode_jpeg(
    fh: BinaryIO, data: np.ndarray, text: str | None, dpi: float | None, quality: int
) -> None:
    extra: dict[str, Any] = {"dpi": (dpi, dpi)} if dpi else {}
    exif = Image.Exif()
    exif[0x0131] = SOFTWARE
    if text is not None:
        if len(text.encode("utf-8")) <= 60_000:  # COM and APP1 segments hold < 64 KiB
            extra["comment"] = text
            exif[0x010E] = text
        else:
            warnings.warn("metadata over 60 kB: not stored in the JPEG", stacklevel=3)
    # 4:4:4 chroma: a print render's brush strokes should not lose colour detail.
    Image.fromarray(data).save(
        fh,
        format="JPEG",
        quality=quality,
        subsampling=0,
        exif=exif,
        icc_profile=srgb_icc(),
        **extra,
    )


ICC_TAG = 34675  # TIFF InterColorProfile


@functools.lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """An sRGB ICC profile (littleCMS's, via Pillow): renders are sRGB, and print shops and
    colour-managed viewers should not have to guess."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _encode_tiff(
    fh: BinaryIO, arr: np.ndarray, bit_depth: int, text: str | None, dpi: float | None
) -> None:
    """Tiled (large) or stripped TIFF whose pixels are quantised as tifffile asks for them, so
    a gigapixel float image is never copied whole. BigTIFF when the data passes ~2 GB."""
    height, width = arr.shape[:2]
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    itemsize = np.dtype(dtype).itemsize
    extra: dict[str, Any] = {}
    if text is not None:
        extra["description"] = text
    if dpi:
        extra["resolution"] = (dpi, dpi)
        extra["resolutionunit"] = "INCH"
    if max(height, width) > TIFF_TILE_ABOVE:
        th, tw = TIFF_TILE
        extra["tile"] = TIFF_TILE
        chunks = (
            _padded(quantize(arr[y : y + th, x : x + tw], bit_depth), th, tw)
            for y in range(0, height, th)
            for x in range(0, width, tw)
        )
    else:  # ~1 MiB strips rather than tifffile's single strip
        rows = max(1, (1 << 20) // (width * 3 * itemsize))
        extra["rowsperstrip"] = rows
        chunks = (quantize(arr[y : y + rows], bit_depth) for y in range(0, height, rows))
    tifffile.imwrite(
        fh,
        data=chunks,
        shape=(height, width, 3),
        dtype=dtype,
        photometric="rgb",
        metadata=None,  # no tifffile shape JSON: the description is exactly ours
        software=SOFTWARE,
        bigtiff=height * width * 3 * itemsize > BIGTIFF_ABOVE_BYTES,
        extratags=[(ICC_TAG, 7, len(srgb_icc()), srgb_icc(), True)],
        **extra,
    )


def _padded(chunk: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Edge tiles are stored full size in a tiled TIFF."""
    if chunk.shape[:2] == (th, tw):
        return chunk
    out = np.zeros((th, tw, chunk.shape[2]), chunk.dtype)
    out[: chunk.shape[0], : chunk.shape[1]] = chunk
    return out


PREVIEW_SIDE = 2048


def preview_path(path: str | os.PathLike[str]) -> Path:
    """`print.tif` → `print.preview.jpg`, beside it (the stem shortened if the name would be
    too long: a valid output name must not fail after the render for its preview's sake)."""
    p = Path(path)
    suffix = ".preview.jpg"
    return p.with_name(leftovers.fit_name(p.stem, leftovers.NAME_MAX - len(suffix)) + suffix)


def write_preview(
    path: str | os.PathLike[str], image: np.ndarray, side: int = PREVIEW_SIDE
) -> Path:
    """A downscaled JPEG beside a large output, for viewers that cannot open the original."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = Image.fromarray(quantize(_box_reduced(image, max(1, max(h, w) // side)), 8))
    small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    out = preview_path(path)
    write_image(out, np.asarray(small, np.float32) / 255.0, quality=90)
    return out


def _box_reduced(image: np.ndarray, k: int) -> np.ndarray:
    """`image` averaged over k×k blocks (edge rows and columns past a whole block dropped), a
    band of rows at a time: a gigapixel output's preview needs no full-size copy."""
    if k == 1:
        return image
    h, w = image.shape[:2]
    ky, kx = min(k, h), min(k, w)
    hh, ww = h // ky, w // kx
    out = np.empty((hh, ww, image.shape[2]), np.float32)
    band = max(1, 4 * _CHUNK_ELEMENTS // (ky * ww * kx * image.shape[2]))
    for r in range(0, hh, band):
        n = min(band, hh - r)
        block = np.asarray(image[r * ky : (r + n) * ky, : ww * kx], np.float32)
        out[r : r + n] = block.reshape(n, ky, ww, kx, -1).mean(axis=(1, 3))
    return out
