"""Minimal `.safetensors` reader and writer in plain Python and numpy.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header
length N, N bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}`, then the data buffer; offsets are relative to the buffer's start.
Tensors are little-endian and C-contiguous. BF16 is widened to float32 (numpy has no bfloat16).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import UserError

# safetensors dtype -> numpy little-endian dtype (BF16 read as uint16, then widened).
DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
_WRITE_DTYPES = {np.dtype(v): k for k, v in DTYPES.items() if k not in ("BF16",)}

MAX_HEADER = 100 * 1024 * 1024
MAX_DIMS = 32  # numpy's limit is 64; no weight tensor has more than a handful


def looks_like_safetensors(head: bytes) -> bool:
    """True when `head` (the file's first bytes) starts like a safetensors file."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


def _bad(path: Path, what: str) -> UserError:
    return UserError(
        f"{path}: corrupt or truncated safetensors file ({what}); download or convert it again"
    )


def read_header(path: str | Path) -> tuple[dict, int]:
    """The parsed JSON header (without `__metadata__`) and the data buffer's file offset."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _bad(path, "shorter than the 8-byte header length")
        n = int.from_bytes(raw, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise _bad(path, f"header length {n} does not fit in the {size}-byte file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad(path, f"header is not valid JSON: {e}") from None
        except RecursionError:  # `[[[[…` a hundred thousand deep
            raise _bad(path, "header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    buffer_size = size - 8 - n
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise _bad(path, f"entry {name!r} is not an object")
        dtype, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPES:
            raise _bad(path, f"tensor {name!r} has unsupported dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= buffer_size
                for d in shape
            )
        ):  # a dimension longer than the data (with another one 0) cannot be a real tensor
            raise _bad(path, f"tensor {name!r} has a bad shape {str(shape)[:80]}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1]
        ):
            raise _bad(path, f"tensor {name!r} has bad data_offsets {offs!r}")
        if offs[1] > buffer_size:
            raise _bad(
                path,
                f"tensor {name!r} ends at byte {offs[1]} of a {buffer_size}-byte data buffer",
            )
        if offs[1] - offs[0] != math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize:
            raise _bad(path, f"tensor {name!r}: data size does not match dtype and shape")
    _check_disjoint(path, header)
    return header, 8 + n


def _check_disjoint(path: Path, header: dict) -> None:
    """Tensors may not share bytes: the format forbids it, and a file whose tensors all point
    at one range would be read (and cached) as a network of copies."""
    spans = sorted((e["data_offsets"][0], e["data_offsets"][1], k) for k, e in header.items())
    end, last = 0, None
    for begin, stop, name in spans:
        if begin == stop:
            continue
        if begin < end:
            raise _bad(path, f"tensors {last!r} and {name!r} overlap in the data buffer")
        end, last = stop, name


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read every tensor of a `.safetensors` file into a writable numpy array."""
    path = Path(path)
    header, start = read_header(path)
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            buf = bytearray(end - begin)
            f.seek(start + begin)
            if f.readinto(buf) != len(buf):
                raise _bad(path, f"tensor {name!r} is cut short")
            arr = np.frombuffer(buf, np.dtype(DTYPES[entry["dtype"]])).reshape(entry["shape"])
            if entry["dtype"] == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return out


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write numpy arrays as a `.safetensors` file (F64/F32/F16 and integer/bool dtypes)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        key = _WRITE_DTYPES.get(a.dtype.newbyteorder("<"))
        if key is None:
            raise ValueError(f"write_safetensors: unsupported dtype {a.dtype} for {name!r}")
        data = np.ascontiguousarray(a, dtype=np.dtype(DTYPES[key])).tobytes()
        header[name] = {
            "dtype": key,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
