"""Read PyTorch `torch.save` state dicts without torch and without running pickled code.

A `.pth` file is a pickle, and unpickling arbitrary data can run arbitrary code. This reader uses a
restricted `pickle.Unpickler`: `find_class` hands out only our own stand-ins for the handful of
globals a plain tensor state dict needs (`collections.OrderedDict`, the `torch.*Storage` types,
`torch._utils._rebuild_tensor[_v2]`, `torch._utils._rebuild_parameter`, `torch.Size`) and refuses
everything else (`os.system`, `builtins.eval`, any class) with a `UserError`. Nothing from torch is
imported and no callable of the file's choosing is ever called.

Two container formats are read:

* the zip format written by `torch.save` since PyTorch 1.6: `<top>/data.pkl` holds the pickle,
  `<top>/data/<key>` the raw bytes of each storage, `<top>/byteorder` their byte order;
* the legacy stream written by PyTorch 0.1.10 … 1.5 (and by `_use_new_zipfile_serialization=False`):
  pickled magic number, protocol version and sys_info, the pickled object, the pickled list of
  storage keys, then each storage as int64 element count + raw bytes. torchvision's ImageNet
  VGG19 (`vgg19-dcbb9e9d.pth`, 2017) is stored this way, with `_rebuild_tensor` (v1).

The older tar format (PyTorch < 0.1.10) is refused with a message.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> (numpy little-endian dtype string, element size). bfloat16 has no
# numpy dtype: it is read as uint16 and widened to float32 (see `_bf16_to_f32`).
STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "DoubleStorage": ("<f8", 8),
    "FloatStorage": ("<f4", 4),
    "HalfStorage": ("<f2", 2),
    "BFloat16Storage": ("<u2", 2),
    "LongStorage": ("<i8", 8),
    "IntStorage": ("<i4", 4),
    "ShortStorage": ("<i2", 2),
    "CharStorage": ("i1", 1),
    "ByteStorage": ("u1", 1),
    "BoolStorage": ("?", 1),
    "UntypedStorage": ("u1", 1),
}

#: Bounds on decoding one file (see `_collect`): objects visited, and decoded bytes per byte of
#: file (a state dict decodes to about its own size; bfloat16 widens to 2×).
MAX_NODES = 200_000
MAX_EXPANSION = 4
FIX_HINT = "re-save it with `torch.save(model.state_dict(), path)` or convert it to .safetensors"


class _Problem(Exception):
    """Raised inside unpickling; turned into a one-line UserError naming the file."""


class _Refused(_Problem):
    pass


def _bf16_to_f32(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << 16).view(np.float32)


class _StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only carries the element type."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str):
        self.name = name
        self.dtype, self.itemsize = STORAGE_DTYPES[name]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused(f"torch.{self.name}(...) (constructing a storage from pickled arguments)")

    def __setstate__(self, state: Any) -> None:
        raise _Problem("unexpected pickled state for a storage type")


class _Storage:
    """A storage referenced by a persistent id; `data` (1-D, file byte order) is filled in later.

    A legacy *view* refers to `root` from element `offset` on, `numel` elements long.
    """

    __slots__ = ("stype", "key", "numel", "data", "root", "offset")

    def __init__(self, stype: _StorageType, key: str, numel: int):
        self.stype, self.key, self.numel = stype, key, numel
        self.data: np.ndarray | None = None
        self.root: _Storage | None = None
        self.offset = 0

    def array(self) -> np.ndarray:
        if self.root is not None:
            base = self.root.array()
            if self.offset + self.numel > base.size:
                raise _Problem(f"storage view {self.key} runs past the end of its storage")
            return base[self.offset : self.offset + self.numel]
        if self.data is None:
            raise _Problem(f"storage {self.key} is referenced but its data is missing")
        return self.data

    def __setstate__(self, state: Any) -> None:
        raise _Problem("unexpected pickled state for a storage")


class _Tensor:
    """What `_rebuild_tensor*` returns: a strided view into a storage, decoded at the end."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _Storage):
            raise _Problem("a tensor refers to something that is not a storage")
        if not _is_int(offset) or offset < 0:
            raise _Problem(f"bad tensor storage offset {offset!r}")
        size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size) != len(stride):
            raise _Problem(f"tensor size {size} and stride {stride} differ in length")
        if any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise _Problem(f"negative tensor size or stride {size} / {stride}")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), size, stride

    def __setstate__(self, state: Any) -> None:
        raise _Problem("unexpected pickled state for a tensor (tensor subclass or attributes?)")

    def to_numpy(self, big_endian: bool) -> np.ndarray:
        base = self.storage.array()
        dt = np.dtype(self.storage.stype.dtype)
        if big_endian:
            dt = dt.newbyteorder(">")
        if math.prod(self.size) == 0:
            out = np.zeros(self.size, dt)
        else:
            last = self.offset + sum(
                (n - 1) * s for n, s in zip(self.size, self.stride, strict=True)
            )
            if last >= base.size:
                raise _Problem(
                    f"tensor of size {self.size} at offset {self.offset} runs past the end of "
                    f"its storage ({base.size} elements)"
                )
            base = base.view(dt)
            out = np.lib.stride_tricks.as_strided(
                base[self.offset :],
                shape=self.size,
                strides=tuple(s * dt.itemsize for s in self.stride),
                writeable=False,
            ).copy()
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if self.storage.stype.name == "BFloat16Storage":
            out = _bf16_to_f32(out)
        return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) for v in x):
        raise _Problem(f"bad tensor {what} {x!r}")
    return tuple(int(v) for v in x)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _Tensor:
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _Tensor:
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    if not isinstance(data, _Tensor):
        raise _Problem("a parameter wraps something that is not a tensor")
    return data


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> Any:
    return _rebuild_parameter(data)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "size")


def _ordered_dict(items: Any = ()) -> OrderedDict:
    # Python 2 pickles pass [[key, value], ...]; Python 3 ones pass nothing and use SETITEMS.
    try:
        return OrderedDict(items)
    except (TypeError, ValueError) as e:
        raise _Problem(f"bad OrderedDict contents ({e})") from None


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
}


def _text(x: Any) -> Any:
    return x.decode("ascii", "replace") if isinstance(x, bytes) else x


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers, numbers, strings and our tensor stand-ins."""

    def __init__(self, file: BinaryIO, storage_id: Callable[[tuple], _Storage] | None = None):
        super().__init__(file, encoding="latin1")
        self._storage_id = storage_id

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is not None:
            return found
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_id is None:
            raise _Problem("unexpected persistent id in a header pickle")
        if not isinstance(pid, tuple) or not pid:
            raise _Problem(f"bad persistent id {pid!r:.60}")
        kind = _text(pid[0])
        if kind == "module":
            raise _Refused("a pickled nn.Module class (the file holds a whole model object)")
        if kind != "storage":
            raise _Problem(f"unknown persistent id type {kind!r:.40}")
        return self._storage_id(pid)


def _load_pickle(f: BinaryIO, storage_id: Callable[[tuple], _Storage] | None = None) -> Any:
    return _RestrictedUnpickler(f, storage_id).load()


class _Storages:
    """Registry of storages met while unpickling, keyed by their persistent key."""

    def __init__(self) -> None:
        self.by_key: dict[str, _Storage] = {}

    def get(self, stype: Any, key: Any, numel: Any) -> _Storage:
        key = _text(key)
        if not isinstance(stype, _StorageType):
            raise _Problem("a storage's type is not a torch storage class")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise _Problem(f"bad storage key/size {key!r:.40} / {numel!r:.40}")
        st = self.by_key.get(key)
        if st is None:
            st = self.by_key[key] = _Storage(stype, key, int(numel))
        elif st.stype.itemsize != stype.itemsize:
            raise _Problem(f"storage {key} is used with two different element types")
        return st

    def zip_id(self, pid: tuple) -> _Storage:
        if len(pid) != 5:
            raise _Problem(f"storage persistent id has {len(pid)} fields, expected 5")
        _, stype, key, _location, numel = pid
        return self.get(stype, key, numel)

    def legacy_id(self, pid: tuple) -> _Storage:
        if len(pid) != 6:
            raise _Problem(f"storage persistent id has {len(pid)} fields, expected 6")
        _, stype, key, _location, numel, view = pid
        root = self.get(stype, key, numel)
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Problem("bad storage view metadata")
        view_key, offset, view_numel = _text(view[0]), view[1], view[2]
        if not isinstance(view_key, str) or not all(_is_int(v) and v >= 0 for v in view[1:]):
            raise _Problem("bad storage view metadata")
        st = self.by_key.get("view:" + view_key)
        if st is None:
            st = _Storage(root.stype, view_key, int(view_numel))
            st.root, st.offset = root, int(offset)
            self.by_key["view:" + view_key] = st
        return st


def _collect(obj: Any, big_endian: bool, file_size: int) -> dict[str, np.ndarray]:
    """Flatten the unpickled object into {dotted name: array}; non-tensor leaves are dropped.

    The work is bounded: a pickle's memo lets a few bytes refer to one container many times
    (fifty references to a list of fifty references to …: 50⁸ paths), and one storage can be
    viewed by many tensors or by zero strides as a huge tensor. At most MAX_NODES containers
    and tensors are visited and MAX_EXPANSION × the file's size decoded; beyond that the file
    is refused at once instead of running until killed."""
    if isinstance(obj, _Tensor):
        raise _Problem("the file holds a single tensor, not a state dict")
    if not isinstance(obj, dict):
        raise _Problem(f"the file holds a {type(obj).__name__}, not a state dict (dict of tensors)")
    out: dict[str, np.ndarray] = {}
    budget = {"nodes": MAX_NODES, "bytes": MAX_EXPANSION * file_size + (1 << 20)}

    def walk(prefix: str, x: Any, depth: int) -> None:
        budget["nodes"] -= 1  # every call counts, also those that go no deeper
        if budget["nodes"] < 0:
            raise _Problem(f"its pickle expands to more than {MAX_NODES:,} objects")
        if depth > 8:
            return
        if isinstance(x, _Tensor):
            budget["bytes"] -= math.prod(x.size) * x.storage.stype.itemsize
            if budget["bytes"] < 0:
                raise _Problem(
                    f"its tensors would decode to more than {MAX_EXPANSION}× the file's size"
                )
            out[prefix] = x.to_numpy(big_endian)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}.{_text(k)}" if prefix else str(_text(k)), v, depth + 1)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}.{i}" if prefix else str(i), v, depth + 1)

    walk("", obj, 0)
    return out


def _fail(path: Path, e: Exception) -> UserError:
    if isinstance(e, _Refused):
        return UserError(
            f"{path}: refused to load: the pickle asks for {e}, which a plain tensor state dict "
            f"never needs and which could run code; if you trust the file, {FIX_HINT}"
        )
    detail = str(e).replace("\n", " ") or type(e).__name__
    return UserError(
        f"{path}: corrupt or truncated PyTorch file ({detail}); download it again or {FIX_HINT}"
    )


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise _fail(path, e) from None
    with zf:
        names = zf.namelist()
        pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise UserError(
                f"{path}: this is a TorchScript archive (torch.jit.save), not a state dict; "
                f"{FIX_HINT}"
            )
        if len(pkls) != 1:
            raise UserError(f"{path}: zip file without a PyTorch data.pkl; {FIX_HINT}")
        prefix = pkls[0][: -len("data.pkl")]
        try:
            order = (
                zf.read(prefix + "byteorder").decode().strip()
                if (prefix + "byteorder" in names)
                else "little"
            )
            if order not in ("little", "big"):
                raise _Problem(f"unknown byte order {order!r:.20}")
            storages = _Storages()
            obj = _load_pickle(io.BytesIO(zf.read(pkls[0])), storages.zip_id)
            for key, st in storages.by_key.items():
                entry = f"{prefix}data/{key}"
                try:
                    info = zf.getinfo(entry)
                except KeyError:
                    raise _Problem(f"storage file {entry} is missing") from None
                nbytes = st.numel * st.stype.itemsize
                if info.file_size != nbytes:
                    raise _Problem(
                        f"storage {entry} holds {info.file_size} bytes, expected {nbytes}"
                    )
                st.data = np.frombuffer(zf.read(entry), np.dtype(st.stype.dtype))
            return _collect(obj, order == "big", path.stat().st_size)
        except UserError:
            raise
        except (
            _Problem,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
            EOFError,
            OSError,
            RecursionError,
        ) as e:
            raise _fail(path, e) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise _fail(path, _Problem(f"{type(e).__name__}: {e}")) from None


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
        if len(head) >= 262 and head[257:262] == b"ustar":
            raise UserError(
                f"{path}: PyTorch tar checkpoint (format of PyTorch < 0.1.10) is not supported; "
                f"load it with PyTorch and {FIX_HINT}"
            )
        f.seek(0)
        try:
            try:
                magic = _load_pickle(f)
            except (pickle.UnpicklingError, _Problem, EOFError, ValueError) as e:
                raise UserError(
                    f"{path}: not a PyTorch checkpoint (it starts like a pickle but not like "
                    f"torch.save output: {e}); {FIX_HINT}"
                ) from None
            if magic != LEGACY_MAGIC:
                raise UserError(
                    f"{path}: a pickle, but not one written by torch.save (wrong magic number); "
                    f"{FIX_HINT}"
                )
            version = _load_pickle(f)
            if version != LEGACY_PROTOCOL:
                raise _Problem(f"unknown legacy protocol version {version!r:.20}")
            sys_info = _load_pickle(f)
            big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
            storages = _Storages()
            obj = _load_pickle(f, storages.legacy_id)
            keys = _load_pickle(f)
            if not isinstance(keys, list):
                raise _Problem("bad storage key list")
            for key in keys:
                st = storages.by_key.get(_text(key))
                if st is None:
                    raise _Problem(f"storage key {key!r:.40} not used by any tensor")
                header = f.read(8)
                if len(header) < 8:
                    raise _Problem("file ends before all storages were read")
                numel = int.from_bytes(header, "big" if big else "little", signed=True)
                if numel != st.numel:
                    raise _Problem(f"storage {st.key} has {numel} elements, expected {st.numel}")
                nbytes = numel * st.stype.itemsize
                if nbytes > size - f.tell():
                    raise _Problem("file ends before all storages were read")
                buf = bytearray(nbytes)
                if f.readinto(buf) != nbytes:
                    raise _Problem("file ends before all storages were read")
                st.data = np.frombuffer(buf, np.dtype(st.stype.dtype))
            return _collect(obj, big, size)
        except UserError:
            raise
        except (_Problem, pickle.UnpicklingError, EOFError, OSError, RecursionError) as e:
            raise _fail(path, e) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise _fail(path, _Problem(f"{type(e).__name__}: {e}")) from None


def is_torch_zip(head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04"


def is_torch_legacy(head: bytes) -> bool:
    """A pickle stream (protocol 2+ starts with PROTO) or an old tar checkpoint."""
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or (
        len(head) >= 262 and head[257:262] == b"ustar"
    )


def read_torch(path: str | Path) -> dict[str, np.ndarray]:
    """Decode a `torch.save` file (zip or legacy format) into {name: numpy array}.

    Nested dicts are flattened with dots ("state_dict.features.0.weight"), non-tensor leaves are
    dropped. bfloat16 becomes float32; other dtypes are kept, in native byte order.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if is_torch_zip(head):
        return _read_zip(path)
    if is_torch_legacy(head):
        return _read_legacy(path)
    raise UserError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle); {FIX_HINT}")
