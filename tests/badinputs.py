"""Builders of hostile, broken and unusual input files for the CLI tests.

Everything is made from scratch with Pillow, numpy and hand-written bytes, so the corpus needs
no sample files beyond the committed narrow-VGG19 weight fixtures.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from hiresnst.safetensors_io import write_safetensors

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NARROW_PTH = FIXTURES / "vgg19_narrow.pth"
NARROW_NPZ = FIXTURES / "vgg19_narrow.npz"

_RNG = np.random.default_rng(7)


def noise(h: int, w: int, channels: int | None = 3, dtype=np.uint8) -> np.ndarray:
    """Random pixels: (h, w, channels), or (h, w) when `channels` is None."""
    shape = (h, w) if channels is None else (h, w, channels)
    return _RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


# --- images -----------------------------------------------------------------------------------


def rgb_png(path: Path, w: int = 40, h: int = 32) -> Path:
    Image.fromarray(noise(h, w)).save(path)
    return path


def rgb_jpeg(path: Path, w: int = 40, h: int = 32, **save) -> Path:
    Image.fromarray(noise(h, w)).save(path, format="JPEG", quality=90, **save)
    return path


def truncated(path: Path, make, **kw) -> Path:
    """`make(path, **kw)` then cut the file to half its length (header intact, pixels missing)."""
    make(path, **kw)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A valid PNG header claiming w×h RGB pixels, with a tiny IDAT (a decompression bomb's
    signature: a reader that trusts the header allocates w·h·3 bytes)."""
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


# Valid but unusual inputs (all 40×32 unless noted), which must render.


def grey_png(path: Path) -> Path:
    Image.fromarray(noise(32, 40, None), "L").save(path)
    return path


def rgba_png(path: Path) -> Path:
    arr = noise(32, 40, 4)
    arr[:8, :, 3] = 0  # a fully transparent band
    Image.fromarray(arr, "RGBA").save(path)
    return path


def grey16_png(path: Path) -> Path:
    img = Image.fromarray(noise(32, 40, None, np.uint16))
    assert img.mode.startswith("I;16"), img.mode
    img.save(path)
    return path


def palette_png_transparent(path: Path) -> Path:
    img = Image.fromarray(noise(32, 40)).quantize(16)
    img.info["transparency"] = 0
    img.save(path, transparency=0)
    return path


def la_png(path: Path) -> Path:
    Image.fromarray(noise(32, 40, 2), "LA").save(path)
    return path


def cmyk_jpeg(path: Path) -> Path:
    Image.fromarray(noise(32, 40)).convert("CMYK").save(path, format="JPEG", quality=90)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """40×32 pixels stored, EXIF orientation 6 (rotate 90° clockwise): upright it is 32×40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return rgb_jpeg(path, exif=exif)


# --- weights ----------------------------------------------------------------------------------


def vgg_state_dict(convs_per_block, widths=(2, 3, 4, 5, 6)) -> dict[str, np.ndarray]:
    """torchvision-style `features.N.weight/bias` of a VGG with these convs per block."""
    sd, idx, cin = {}, 0, 3
    for w, n in zip(widths, convs_per_block, strict=True):
        for _ in range(n):
            sd[f"features.{idx}.weight"] = np.zeros((w, cin, 3, 3), np.float32)
            sd[f"features.{idx}.bias"] = np.zeros((w,), np.float32)
            idx += 2
            cin = w
        idx += 1
    return sd


def vgg16_safetensors(path: Path) -> Path:
    write_safetensors(path, vgg_state_dict((2, 2, 3, 3, 3)))
    return path


def nan_vgg19_safetensors(path: Path) -> Path:
    with np.load(NARROW_NPZ) as z:
        sd = {k: z[k].copy() for k in z.files}
    sd["features.10.weight"][0, 0, 0, 0] = np.nan
    write_safetensors(path, sd)
    return path


def _pickle_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """A protocol-2 pickle that calls module.name(arg) when loaded by a plain unpickler."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(" + _pickle_str(arg) + b"tR."


def torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A torch.save-style zip archive holding `data_pkl` as its pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def evil_pth(path: Path, marker: Path) -> Path:
    """A .pth whose pickle runs `touch marker` through os.system if it is ever unpickled."""
    return torch_zip(path, reduce_pickle("os", "system", f"touch {marker}"))


def expanding_pth(path: Path, fanout: int = 50, depth: int = 8) -> Path:
    """A legacy-format .pth of a few kB whose pickle refers, through its memo, to `fanout`
    copies of a list of `fanout` copies of … (`depth` deep): fanout**depth paths to walk."""
    import pickle

    nested: list = []
    for _ in range(depth):
        nested = [nested] * fanout
    parts = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"x": nested}, []]
    path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in parts))
    return path


def safetensors_raw(path: Path, header: bytes | dict, data: bytes = b"") -> Path:
    """A .safetensors file with this header (JSON text or a dict) and data buffer, unchecked."""
    import json

    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path
