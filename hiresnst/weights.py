"""VGG19 weights: port torchvision's ImageNet VGG19 to Flax parameters, cache and load them.

* `read_state_dict(path)` decodes a `.pth` (torch.save zip or legacy format, see `torch_pickle`)
  or a `.safetensors` file into `{name: numpy array}`, choosing the reader by content.
* `state_dict_to_params(sd)` maps torchvision's `features.N.weight/bias` (or `conv1_1.weight`
  style) keys to the `{"conv1_1": {"kernel", "bias"}, ...}` tree of `model.VGG19`, transposing
  OIHW kernels to HWIO and checking every key and shape (widths are inferred, so narrow test
  networks work).
* `import_weights` converts a file once and stores the parameters as an orbax checkpoint in the
  cache (`home_dir()/weights/vgg19/params`) with `info.json` beside it; `load_cached` restores it
  and verifies the parameters' sha256. `fetch_weights` downloads torchvision's file first.
* `resolve_weights(spec, seed)` is what the CLI's `--weights` option calls.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache import TORCHVISION_URL, install, network_dir, sha256_file
from .errors import UserError
from .model import CONV_LAYERS, CONVS_PER_BLOCK, DEFAULT_WIDTHS, param_shapes, random_params
from .orbax_io import restore_tree, save_tree
from .safetensors_io import looks_like_safetensors, read_safetensors
from .torch_pickle import is_torch_legacy, is_torch_zip, read_torch

CACHE_FORMAT_VERSION = 1
NETWORK = "vgg19"
INFO_NAME = "info.json"
PARAMS_NAME = "params"
SUPPORTED = "PyTorch .pth/.pt state dicts (torch.save zip or legacy format) and .safetensors files"
NO_CACHE_HINT = (
    "run `hiresnst weights fetch` (needs internet) or `hiresnst weights import FILE`, "
    "or pass --weights random for untrained features"
)


# --- torchvision layout ------------------------------------------------------------------


def _vgg_conv_indices(convs_per_block: Sequence[int], batch_norm: bool = False) -> tuple[int, ...]:
    """Indices of the convs in torchvision's `features` Sequential for a VGG config."""
    idx, out = 0, []
    for n in convs_per_block:
        for _ in range(n):
            out.append(idx)
            idx += 3 if batch_norm else 2  # conv, [bn,] relu
        idx += 1  # max-pool
    return tuple(out)


TORCHVISION_INDICES: tuple[int, ...] = _vgg_conv_indices(CONVS_PER_BLOCK)
TORCHVISION_KEYS: dict[str, int] = dict(zip(CONV_LAYERS, TORCHVISION_INDICES, strict=True))
OTHER_VGGS: dict[str, tuple[int, ...]] = {
    "VGG11": _vgg_conv_indices((1, 1, 2, 2, 2)),
    "VGG13": _vgg_conv_indices((2, 2, 2, 2, 2)),
    "VGG16": _vgg_conv_indices((2, 2, 3, 3, 3)),
}
_FEATURES_RE = re.compile(r"^(.*?)features\.(\d+)\.([A-Za-z_]+)$")
_NAMED_RE = re.compile(r"^(.*?)(conv[1-5]_[1-4])\.(weight|bias)$")


def _not_vgg19(what: str) -> UserError:
    return UserError(
        f"not a VGG19 state dict: {what}; expected torchvision's vgg19 layout "
        f"(features.0.weight … features.34.bias), e.g. {TORCHVISION_URL}"
    )


def _source_keys(sd: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """Map each conv layer to its (weight key, bias key) in `sd`, or raise a clear error."""
    feats: dict[str, dict[int, set[str]]] = {}
    for k in sd:
        m = _FEATURES_RE.match(k)
        if m:
            feats.setdefault(m.group(1), {}).setdefault(int(m.group(2)), set()).add(m.group(3))
    if feats:
        # The prefix ("", "module.", "state_dict.", ...) with the most conv-like entries wins.
        prefix = max(feats, key=lambda p: len(feats[p]))
        found = feats[prefix]
        if any("running_mean" in attrs for attrs in found.values()):
            raise _not_vgg19(
                "it has batch-norm layers (vgg19_bn?); only the plain VGG19 is supported"
            )
        convs = tuple(sorted(i for i, attrs in found.items() if "weight" in attrs))
        if convs != TORCHVISION_INDICES:
            for name, idx in OTHER_VGGS.items():
                if convs == idx:
                    raise _not_vgg19(
                        f"its {len(convs)} convs are laid out like torchvision's {name}"
                    )
            missing = [i for i in TORCHVISION_INDICES if i not in found]
            if convs and set(convs) < set(TORCHVISION_INDICES) and len(missing) <= 3:
                raise UserError(
                    "incomplete VGG19 state dict: missing key "
                    + ", ".join(f"{prefix}features.{i}.weight" for i in missing)
                    + f" ({', '.join(n for n, i in TORCHVISION_KEYS.items() if i in missing)})"
                )
            raise _not_vgg19(
                f"its features.N convs are at indices {list(convs)[:20]}, "
                f"expected {list(TORCHVISION_INDICES)}"
            )
        return {
            name: (f"{prefix}features.{i}.weight", f"{prefix}features.{i}.bias")
            for name, i in TORCHVISION_KEYS.items()
        }
    named: dict[str, set[str]] = {}
    for k in sd:
        m = _NAMED_RE.match(k)
        if m:
            named.setdefault(m.group(1), set()).add(m.group(2))
    if named:
        prefix = max(named, key=lambda p: len(named[p]))
        return {name: (f"{prefix}{name}.weight", f"{prefix}{name}.bias") for name in CONV_LAYERS}
    sample = ", ".join(list(sd)[:4]) or "no tensors at all"
    raise _not_vgg19(f"no features.N.weight keys (it has {sample}{', …' if len(sd) > 4 else ''})")


def state_dict_to_params(sd: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Convert a torchvision VGG19 state dict (OIHW kernels) to Flax params (HWIO, float32).

    Channel widths are taken from the file, so any width works as long as the 16 convs have
    VGG19's structure. Extra keys (`classifier.*`) are ignored.
    """
    keys = _source_keys(sd)
    for name in CONV_LAYERS:
        for k in keys[name]:
            if k not in sd:
                raise UserError(f"incomplete VGG19 state dict: missing key {k} ({name})")
    widths = []
    for block in range(1, 6):
        w = np.asarray(sd[keys[f"conv{block}_1"][0]])
        if w.ndim != 4:
            raise UserError(
                f"{keys[f'conv{block}_1'][0]} has shape {tuple(w.shape)}, expected a 4-D "
                "(out, in, 3, 3) conv kernel: not a VGG19 state dict"
            )
        widths.append(int(w.shape[0]))
    shapes = param_shapes(tuple(widths))
    params: dict[str, dict[str, np.ndarray]] = {}
    for name in CONV_LAYERS:
        wkey, bkey = keys[name]
        w, b = np.asarray(sd[wkey]), np.asarray(sd[bkey])
        kh, kw, cin, cout = shapes[name]["kernel"]
        want_w, want_b = (cout, cin, kh, kw), shapes[name]["bias"]
        for key, arr, want in ((wkey, w, want_w), (bkey, b, want_b)):
            if tuple(arr.shape) != want:
                raise UserError(
                    f"{key} ({name}) has shape {tuple(arr.shape)}, expected {want} for a VGG19 "
                    f"with widths {tuple(widths)}: not a matching VGG19 state dict"
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise UserError(f"{key} ({name}) has dtype {arr.dtype}, expected floating point")
            if not np.isfinite(arr).all():
                raise UserError(f"{key} ({name}) contains NaN or infinite values")
        params[name] = {
            "kernel": np.ascontiguousarray(w.astype(np.float32).transpose(2, 3, 1, 0)),
            "bias": np.ascontiguousarray(b.astype(np.float32)),
        }
    return params


def check_params(params: Mapping[str, Any]) -> tuple[int, ...]:
    """Check a parameter tree's keys and shapes; return its widths. Raises ValueError."""
    try:
        widths = tuple(int(np.shape(params[f"conv{b}_1"]["bias"])[0]) for b in range(1, 6))
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"not a VGG19 parameter tree (missing {e})") from None
    shapes = param_shapes(widths)
    if set(params) != set(CONV_LAYERS):
        extra = sorted(set(params) ^ set(CONV_LAYERS))
        raise ValueError(f"layer names differ from VGG19's: {', '.join(extra)[:200]}")
    for name, want in shapes.items():
        if not isinstance(params[name], Mapping) or set(params[name]) != {"kernel", "bias"}:
            raise ValueError(f"{name} must have exactly 'kernel' and 'bias'")
        for leaf, shape in want.items():
            got = tuple(np.shape(params[name][leaf]))
            if got != shape:
                raise ValueError(f"{name}.{leaf} has shape {got}, expected {shape}")
    return widths


def params_sha256(params: Mapping[str, Any]) -> str:
    """sha256 of all kernels and biases as little-endian float32, in layer order."""
    h = hashlib.sha256()
    for name in CONV_LAYERS:
        for leaf in ("kernel", "bias"):
            h.update(np.ascontiguousarray(np.asarray(params[name][leaf]), dtype="<f4").tobytes())
    return h.hexdigest()


# --- reading files ---------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"weights file {path} does not exist")
    if path.is_dir():
        raise UserError(f"{path} is a directory, expected a weights file ({SUPPORTED})")
    if not path.is_file():  # a FIFO or device would block or never end
        raise UserError(f"{path} is not a regular file (a pipe or device?); give a weights file")
    if path.stat().st_size == 0:
        raise UserError(f"weights file {path} is empty (0 bytes): download or copy it again")


def detect_format(path: str | Path) -> str:
    """'torch-zip', 'torch-legacy' or 'safetensors', judged by content (not by file name)."""
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if is_torch_zip(head):
        return "torch-zip"
    if looks_like_safetensors(head):
        return "safetensors"
    if is_torch_legacy(head):
        return "torch-legacy"
    raise UserError(f"{path}: unsupported weights file format; supported: {SUPPORTED}")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Decode a weights file into {name: numpy array}, choosing the reader by content."""
    path = Path(path)
    fmt = detect_format(path)
    return read_safetensors(path) if fmt == "safetensors" else read_torch(path)


# --- cache -----------------------------------------------------------------------------------


def cache_dir(home: Path | None = None) -> Path:
    return network_dir(NETWORK, home)


def _as_float32_tree(tree: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    return {
        name: {leaf: np.asarray(tree[name][leaf], np.float32) for leaf in ("kernel", "bias")}
        for name in CONV_LAYERS
    }


def import_weights(src: str | Path, home: Path | None = None, *, source: str | None = None) -> dict:
    """Convert `src` and store it as the cached VGG19 weights; return the info record.

    The orbax checkpoint and info.json are written to a temporary directory next to the cache
    and renamed into place, so an interrupted import never leaves a half-written cache, and a
    re-import replaces the old weights only once the new ones are complete. `source` overrides
    the recorded source (e.g. the URL a file was downloaded from).
    """
    src = Path(src).expanduser()
    fmt = detect_format(src)
    params = state_dict_to_params(read_state_dict(src))
    widths = check_params(params)
    final = cache_dir(home)
    info = {
        "format_version": CACHE_FORMAT_VERSION,
        "network": NETWORK,
        "source": source or str(src.resolve()),
        "source_sha256": sha256_file(src),
        "source_format": fmt,
        "widths": list(widths),
        "layers": list(CONV_LAYERS),
        "params_sha256": params_sha256(params),
        "imported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }

    def write(tmp: Path) -> None:
        save_tree(tmp / PARAMS_NAME, params)
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")

    install(final, write)
    return {**info, "path": str(final)}


def _corrupt(d: Path, what: str) -> UserError:
    return UserError(
        f"cached VGG19 weights in {d} are corrupt ({what}): re-run `hiresnst weights import "
        "FILE` (or `hiresnst weights fetch`)"
    )


def _load_cache_dir(d: Path) -> tuple[dict, dict]:
    try:
        info = json.loads((d / INFO_NAME).read_text())
        if not isinstance(info, dict) or "params_sha256" not in info:
            raise ValueError("no params_sha256")
    except (OSError, ValueError) as e:
        raise _corrupt(d, f"unreadable {INFO_NAME}: {e}") from None
    try:
        tree = restore_tree(d / PARAMS_NAME)
        check_params(tree)
        params = _as_float32_tree(tree)
    except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore)
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise _corrupt(d, f"checkpoint does not load: {detail}") from None
    if params_sha256(params) != info["params_sha256"]:
        raise _corrupt(d, "parameter sha256 differs from the one recorded at import")
    return params, {**info, "path": str(d)}


def load_cached(home: Path | None = None) -> tuple[dict, dict]:
    """Restore the cached VGG19 params (numpy float32, HWIO) and their info record, verified."""
    d = cache_dir(home)
    if not (d / INFO_NAME).exists() and not (d / PARAMS_NAME).exists():
        raise UserError(f"no VGG19 weights cached in {d.parent.parent}: {NO_CACHE_HINT}")
    return _load_cache_dir(d)


def weights_info(home: Path | None = None) -> dict | None:
    """The info record of the cached weights (not verified), or None if nothing is cached."""
    d = cache_dir(home)
    if not (d / INFO_NAME).exists():
        return None
    try:
        info = json.loads((d / INFO_NAME).read_text())
    except (OSError, ValueError) as e:
        raise _corrupt(d, f"unreadable {INFO_NAME}: {e}") from None
    if not isinstance(info, dict):
        raise _corrupt(d, f"{INFO_NAME} is not a JSON object")
    return {**info, "path": str(d)}


# --- resolving --weights ----------------------------------------------------------------------


def _is_orbax_dir(d: Path) -> bool:
    return any((d / m).exists() for m in ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt"))


def _to_device(params: Mapping[str, Any]) -> dict:
    import jax.numpy as jnp

    return {name: {k: jnp.asarray(v) for k, v in leaves.items()} for name, leaves in params.items()}


def resolve_weights(
    spec: str,
    seed: int = 0,
    home: Path | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
) -> tuple[dict, dict]:
    """Parameters (jax arrays) and a description for a `--weights` value.

    `"random"`: seeded untrained weights of `widths`. `"auto"`: the cached weights (error with
    instructions if none). Anything else is a path: a `.pth`/`.safetensors` file (converted in
    memory, not cached), a cache-style directory (params/ + info.json) or an orbax checkpoint
    directory. `meta["widths"]` gives the widths of the returned network.
    """
    if spec == "random":
        w = tuple(int(x) for x in widths)
        return random_params(seed, w), {
            "kind": "random",
            "seed": seed,
            "widths": list(w),
            "note": "untrained VGG19 (random weights)",
        }
    if spec == "auto":
        params, info = load_cached(home)
        return _to_device(params), {
            "kind": "cached",
            "source": info.get("source"),
            "sha256": info.get("source_sha256"),
            "params_sha256": info["params_sha256"],
            "widths": info.get("widths", list(check_params(params))),
            "path": info["path"],
            "note": f"VGG19 weights imported from {info.get('source')}",
        }
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"--weights {spec!r}: no such file or directory; use 'auto', 'random', or a path to "
            "a .pth/.safetensors file or an orbax checkpoint directory"
        )
    if path.is_dir():
        if (path / INFO_NAME).exists() and (path / PARAMS_NAME).exists():
            params, info = _load_cache_dir(path)
            kind, sha = "checkpoint", info.get("source_sha256")
        elif _is_orbax_dir(path):
            try:
                tree = restore_tree(path)
                check_params(tree)
                params = _as_float32_tree(tree)
            except Exception as e:
                detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise UserError(
                    f"{path}: not a loadable VGG19 orbax checkpoint ({detail})"
                ) from None
            kind, sha = "checkpoint", None
        else:
            raise UserError(
                f"--weights {spec!r} is a directory but not an orbax checkpoint; pass a "
                ".pth/.safetensors file, a checkpoint directory, 'auto' or 'random'"
            )
        psha = params_sha256(params)
        return _to_device(params), {
            "kind": kind,
            "source": str(path.resolve()),
            "sha256": sha or psha,
            "params_sha256": psha,
            "widths": list(check_params(params)),
        }
    fmt = detect_format(path)
    params = state_dict_to_params(read_state_dict(path))
    return _to_device(params), {
        "kind": "file",
        "source": str(path.resolve()),
        "format": fmt,
        "sha256": sha256_file(path),
        "params_sha256": params_sha256(params),
        "widths": list(check_params(params)),
    }


# --- download ----------------------------------------------------------------------------------


def _hash_prefix(url: str) -> tuple[str, str | None]:
    """File name of `url` and torchvision's sha256 prefix in it (`name-<hex>.ext`), if any."""
    name = Path(urllib.parse.urlparse(url).path).name or "vgg19.pth"
    m = re.search(r"-([a-f0-9]{8,64})\.", name)
    return name, (m.group(1) if m else None)


def fetch_weights(
    home: Path | None = None,
    url: str = TORCHVISION_URL,
    timeout: float = 30,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict:
    """Download `url` into the cache, check its sha256 prefix, import it; return the info.

    Like torchvision, the hex digits after the last '-' of the file name must be the start of
    the file's sha256. The download is deleted after the import (the cache keeps the params).
    """
    name, prefix = _hash_prefix(url)
    dl = cache_dir(home).parent / "downloads"
    try:
        dl.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {dl}: {e.strerror or e}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f"{name}.part-", dir=dl)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    done = 0
    try:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "hiresnst"})
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as r:
                length = r.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                while chunk := r.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            reason = str(reason).replace("\n", " ") or type(e).__name__
            raise UserError(
                f"downloading {url} failed ({reason}); without internet access, get {name} "
                f"on another machine and run `hiresnst weights import /path/to/{name}`"
            ) from None
        if total is not None and done != total:
            raise UserError(
                f"download of {url} stopped after {done} of {total} bytes; run "
                "`hiresnst weights fetch` again"
            )
        digest = h.hexdigest()
        if prefix is not None and not digest.startswith(prefix):
            raise UserError(
                f"downloaded {name} has sha256 {digest[:16]}…, which does not start with "
                f"{prefix} as its name promises: corrupt or tampered download; try again"
            )
        return import_weights(tmp, home, source=url)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
