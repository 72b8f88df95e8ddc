"""Weight porting: torch.save / safetensors readers, VGG19 key mapping, orbax cache, CLI.

Fixtures in tests/fixtures/ were written by real torch.save and safetensors (see
weights/make_fixtures.py) for a NARROW VGG19 (widths 2,3,4,5,6); vgg19_narrow.npz holds the
expected arrays. Malicious and corrupt files are built here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hiresnst import weights as W
from hiresnst.cli_weights import app
from hiresnst.errors import UserError
from hiresnst.model import CONV_LAYERS, VGG19, widths_of
from hiresnst.safetensors_io import read_header, read_safetensors, write_safetensors
from hiresnst.torch_pickle import LEGACY_MAGIC, read_torch

FIX = Path(__file__).parent / "fixtures"
WIDTHS = (2, 3, 4, 5, 6)
ALL_FILES = [
    "vgg19_narrow.pth",
    "vgg19_narrow_legacy.pth",
    "vgg19_narrow_legacy_v1.pth",
    "vgg19_narrow_mixed.pth",
    "vgg19_narrow.safetensors",
    "vgg19_narrow_mixed.safetensors",
]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIX / "vgg19_narrow.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HIRESNST_HOME", str(home))
    return home


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --- hand-made pickles ---------------------------------------------------------------------


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(
    numel: int, size: tuple, stride: tuple, offset: int = 0, storage_module: str = "torch"
) -> bytes:
    """data.pkl of {'w': _rebuild_tensor_v2(<FloatStorage '0', numel>, offset, size, stride)}."""
    stype = f"c{storage_module}\nFloatStorage\n".encode()
    pid = _tuple([_str("storage"), stype, _str("0"), _str("cpu"), _int(numel)])
    args = _tuple(
        [
            pid + b"Q",
            _int(offset),
            _tuple([_int(s) for s in size]),
            _tuple([_int(s) for s in stride]),
            b"\x89",
            b"ccollections\nOrderedDict\n)R",
        ]
    )
    return b"\x80\x02}" + _str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


def reduce_pickle(module: str, name: str, arg: str) -> bytes:
    """A pickle that calls module.name(arg) when loaded by a plain unpickler."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + _tuple([_str(arg)]) + b"R."


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return path


def legacy_stream(path: Path, body: bytes) -> Path:
    header = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    path.write_bytes(header + body)
    return path


def vgg_state_dict(convs_per_block, widths=WIDTHS, bn=False) -> dict[str, np.ndarray]:
    sd, idx, cin = {}, 0, 3
    for w, n in zip(widths, convs_per_block, strict=True):
        for _ in range(n):
            sd[f"features.{idx}.weight"] = np.zeros((w, cin, 3, 3), np.float32)
            sd[f"features.{idx}.bias"] = np.zeros((w,), np.float32)
            if bn:
                sd[f"features.{idx + 1}.running_mean"] = np.zeros((w,), np.float32)
            idx += 3 if bn else 2
            cin = w
        idx += 1
    return sd


# --- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILES)
def test_decoded_values_match_independent_copy(name, expected):
    sd = W.read_state_dict(FIX / name)
    conv_keys = {k for k in expected if k.startswith("features.")}
    assert conv_keys <= set(sd)
    for k, v in sd.items():
        assert v.shape == expected[k].shape, k
        np.testing.assert_array_equal(v.astype(np.float32), expected[k], err_msg=f"{name}:{k}")
    if "mixed" not in name:
        assert set(sd) == set(expected)  # classifier.* included
        assert all(v.dtype == np.float32 for v in sd.values())


def test_formats_detected_by_content(tmp_path):
    assert W.detect_format(FIX / "vgg19_narrow.pth") == "torch-zip"
    assert W.detect_format(FIX / "vgg19_narrow_legacy_v1.pth") == "torch-legacy"
    renamed = tmp_path / "weights.bin"
    shutil.copy(FIX / "vgg19_narrow.safetensors", renamed)
    assert W.detect_format(renamed) == "safetensors"


def test_mixed_fixtures_really_hold_half_types():
    header, _ = read_header(FIX / "vgg19_narrow_mixed.safetensors")
    assert {e["dtype"] for e in header.values()} == {"F32", "F16", "BF16", "F64"}
    with zipfile.ZipFile(FIX / "vgg19_narrow_mixed.pth") as z:
        pkl = z.read("vgg19_narrow_mixed/data.pkl")
    for storage in (b"HalfStorage", b"BFloat16Storage", b"DoubleStorage"):
        assert storage in pkl


def test_params_are_hwio_and_match_flax_conv(expected):
    import jax.numpy as jnp

    params = W.state_dict_to_params(W.read_state_dict(FIX / "vgg19_narrow_legacy_v1.pth"))
    assert widths_of(params) == WIDTHS
    assert list(params) == list(CONV_LAYERS)
    for name, idx in W.TORCHVISION_KEYS.items():
        np.testing.assert_array_equal(
            params[name]["kernel"], expected[f"features.{idx}.weight"].transpose(2, 3, 1, 0)
        )
        np.testing.assert_array_equal(params[name]["bias"], expected[f"features.{idx}.bias"])
        assert params[name]["kernel"].dtype == np.float32
    # PyTorch's conv2d (cross-correlation, OIHW) computed by hand == Flax VGG19 conv1_1.
    x = np.random.default_rng(0).random((1, 5, 6, 3), dtype=np.float32)
    out = VGG19(widths=WIDTHS).apply({"params": params}, jnp.asarray(x), outputs=("conv1_1",))
    h = (x[0] - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    hp = np.pad(h, ((1, 1), (1, 1), (0, 0)))
    w, b = expected["features.0.weight"], expected["features.0.bias"]
    ref = np.zeros((5, 6, 2))
    for o in range(2):
        for i in range(3):
            for kh in range(3):
                for kw in range(3):
                    ref[:, :, o] += w[o, i, kh, kw] * hp[kh : kh + 5, kw : kw + 6, i]
        ref[:, :, o] += b[o]
    np.testing.assert_allclose(np.asarray(out["conv1_1"][0]), np.maximum(ref, 0), atol=1e-4)


def test_prefixed_and_named_keys(expected):
    module = {f"module.{k}": v for k, v in expected.items()}
    named = {
        f"{name}.{leaf}": expected[f"features.{idx}.{leaf}"]
        for name, idx in W.TORCHVISION_KEYS.items()
        for leaf in ("weight", "bias")
    }
    ref = W.state_dict_to_params(expected)
    for sd in (module, named):
        got = W.state_dict_to_params(sd)
        assert W.params_sha256(got) == W.params_sha256(ref)


# --- bad state dicts -----------------------------------------------------------------------


def test_missing_key(expected):
    sd = dict(expected)
    del sd["features.34.bias"]
    with pytest.raises(UserError, match=r"missing key features\.34\.bias \(conv5_4\)") as e:
        W.state_dict_to_params(sd)
    one_line(e)
    del sd["features.34.weight"]
    with pytest.raises(UserError, match=r"missing key features\.34\.weight"):
        W.state_dict_to_params(sd)


def test_wrong_shape(expected):
    sd = dict(expected)
    sd["features.2.weight"] = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(UserError, match=r"features\.2\.weight \(conv1_2\) has shape") as e:
        W.state_dict_to_params(sd)
    assert "(2, 2, 3, 3)" in one_line(e)
    sd = dict(expected)
    sd["features.0.bias"] = np.zeros((5,), np.float32)
    with pytest.raises(UserError, match=r"features\.0\.bias"):
        W.state_dict_to_params(sd)


def test_other_networks_are_named():
    with pytest.raises(UserError, match="not a VGG19 state dict.*VGG16") as e:
        W.state_dict_to_params(vgg_state_dict((2, 2, 3, 3, 3)))
    one_line(e)
    with pytest.raises(UserError, match="not a VGG19 state dict.*VGG11"):
        W.state_dict_to_params(vgg_state_dict((1, 1, 2, 2, 2)))
    with pytest.raises(UserError, match="batch-norm"):
        W.state_dict_to_params(vgg_state_dict((2, 2, 4, 4, 4), bn=True))
    resnet = {
        "conv1.weight": np.zeros((4, 3, 7, 7), np.float32),
        "bn1.weight": np.zeros(4, np.float32),
        "layer1.0.conv1.weight": np.zeros((4, 4, 3, 3), np.float32),
        "fc.weight": np.zeros((10, 4), np.float32),
    }
    with pytest.raises(UserError, match=r"not a VGG19 state dict: no features\.N\.weight keys"):
        W.state_dict_to_params(resnet)


def test_other_network_in_a_real_file(tmp_path):
    path = tmp_path / "vgg16.safetensors"
    write_safetensors(path, vgg_state_dict((2, 2, 3, 3, 3)))
    with pytest.raises(UserError, match="VGG16"):
        W.import_weights(path)


def test_nan_weights_refused(expected):
    sd = dict(expected)
    sd["features.10.weight"] = sd["features.10.weight"].copy()
    sd["features.10.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        W.state_dict_to_params(sd)


# --- bad files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["vgg19_narrow.pth", "vgg19_narrow_legacy.pth", "vgg19_narrow.safetensors"]
)
def test_truncated_files(tmp_path, name):
    data = (FIX / name).read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}-{name}"
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match="corrupt or truncated") as e:
            W.read_state_dict(path)
        one_line(e)


def test_empty_missing_directory_text(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        W.read_state_dict(tmp_path / "empty.pth")
    with pytest.raises(UserError, match="does not exist"):
        W.read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="is a directory"):
        W.read_state_dict(tmp_path)
    (tmp_path / "notes.pth").write_text("these are not weights\n" * 10)
    with pytest.raises(UserError, match="unsupported weights file format.*safetensors") as e:
        W.read_state_dict(tmp_path / "notes.pth")
    one_line(e)


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("posix", "system"), ("builtins", "eval")]
)
def test_malicious_pickle_is_refused_without_running(tmp_path, module, name):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    payload = reduce_pickle(module, name, arg)
    for path in (
        torch_zip(tmp_path / "evil.pth", payload),
        legacy_stream(tmp_path / "evil_legacy.pth", payload),
    ):
        with pytest.raises(UserError, match=rf"refused to load.*{module}\.{name}") as e:
            W.read_state_dict(path)
        one_line(e)
        assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        W.import_weights(tmp_path / "evil.pth")
    assert not marker.exists()
    # The payload is live: a plain unpickler would have run it.
    pickle.loads(payload)
    assert marker.exists()


def test_pickled_objects_and_whole_models_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = torch_zip(tmp_path / "obj.pth", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"refused.*posix\.getcwd|refused.*os\.getcwd"):
        read_torch(path)
    module_pid = b"\x80\x02" + _tuple([_str("module"), _str("x"), _str("y"), _str("z")]) + b"Q."
    with pytest.raises(UserError, match="refused.*whole model"):
        read_torch(torch_zip(tmp_path / "model.pth", module_pid))


def test_tensor_outside_its_storage_is_refused(tmp_path):
    four = np.arange(4, dtype="<f4").tobytes()
    ok = torch_zip(tmp_path / "ok.pth", tensor_pickle(4, (2, 2), (1, 2)), {"0": four})
    np.testing.assert_array_equal(
        read_torch(ok)["w"], np.arange(4, dtype=np.float32).reshape(2, 2).T
    )
    cuda = torch_zip(
        tmp_path / "cuda.pth", tensor_pickle(4, (4,), (1,), 0, "torch.cuda"), {"0": four}
    )
    np.testing.assert_array_equal(read_torch(cuda)["w"], np.arange(4, dtype=np.float32))
    for size, stride, offset in (((1000,), (1,), 0), ((2, 2), (2, 1), 1), ((2,), (9,), 0)):
        path = torch_zip(tmp_path / "oob.pth", tensor_pickle(4, size, stride, offset), {"0": four})
        with pytest.raises(UserError, match="runs past the end"):
            read_torch(path)
    short = torch_zip(tmp_path / "short.pth", tensor_pickle(8, (8,), (1,)), {"0": four})
    with pytest.raises(UserError, match="holds 16 bytes, expected 32"):
        read_torch(short)
    missing = torch_zip(tmp_path / "missing.pth", tensor_pickle(4, (4,), (1,)))
    with pytest.raises(UserError, match="missing"):
        read_torch(missing)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="without a PyTorch data.pkl"):
        W.read_state_dict(path)


def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(UserError, match="not one written by torch.save"):
        W.read_state_dict(path)


def test_safetensors_corrupt_headers(tmp_path):
    good = (FIX / "vgg19_narrow.safetensors").read_bytes()
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])
    cases = {
        "huge_len": (10**12).to_bytes(8, "little") + good[8:],
        "bad_json": good[:8] + b"{" + b"x" * (n - 1) + good[8 + n :],
    }
    for mutate, label in (
        (lambda h: h["features.0.bias"].update(data_offsets=[0, 10**9]), "past_end"),
        (lambda h: h["features.0.bias"].update(dtype="F8_E4M3"), "dtype"),
        (lambda h: h["features.0.bias"].update(shape=[99]), "size"),
        (lambda h: h["features.0.bias"].update(data_offsets=[8, 4]), "order"),
    ):
        h = json.loads(json.dumps(header))
        mutate(h)
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        cases[label] = len(text).to_bytes(8, "little") + text + good[8 + n :]
    for label, data in cases.items():
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(data)
        with pytest.raises(UserError, match="corrupt or truncated safetensors") as e:
            read_safetensors(path)
        one_line(e)


def test_safetensors_write_read_roundtrip(tmp_path):
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1.5, -2.0], np.float16),
        "c": np.array([[1, 2]], np.int64),
        "d": np.zeros((0, 3), np.float64),
        "e": np.arange(6, dtype=">f4").reshape(3, 2).T,  # big-endian, non-contiguous
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, arrays, metadata={"format": "np"})
    got = read_safetensors(path)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        assert got[k].shape == v.shape and got[k].dtype == v.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got[k], v)
    assert (8 + int.from_bytes(path.read_bytes()[:8], "little")) % 8 == 0


# --- cache ---------------------------------------------------------------------------------


def test_import_cache_load_roundtrip(isolated_home, expected):
    info = W.import_weights(FIX / "vgg19_narrow.pth")
    d = isolated_home / "weights" / "vgg19"
    assert info["path"] == str(d) and (d / "info.json").exists() and (d / "params").is_dir()
    assert info["widths"] == list(WIDTHS)
    assert info["source_sha256"] == W.sha256_file(FIX / "vgg19_narrow.pth")
    assert info["source_format"] == "torch-zip"
    params, loaded = W.load_cached()
    ref = W.state_dict_to_params(expected)
    for name in CONV_LAYERS:
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(params[name][leaf], ref[name][leaf])
    assert loaded["params_sha256"] == W.params_sha256(ref)
    assert W.weights_info() == {**json.loads((d / "info.json").read_text()), "path": str(d)}
    # Re-import replaces atomically and leaves no temp/old directories behind.
    info2 = W.import_weights(FIX / "vgg19_narrow_mixed.safetensors")
    assert info2["source_format"] == "safetensors"
    assert info2["params_sha256"] == info["params_sha256"]  # same values, other container
    assert sorted(p.name for p in (isolated_home / "weights").iterdir()) == ["vgg19"]
    assert W.load_cached()[1]["source"].endswith("vgg19_narrow_mixed.safetensors")


def test_failed_import_keeps_previous_cache(isolated_home, tmp_path, monkeypatch):
    W.import_weights(FIX / "vgg19_narrow.pth")
    before = W.weights_info()

    def boom(path, params):
        (path / "partial").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(W, "save_tree", boom)
    with pytest.raises(KeyboardInterrupt):
        W.import_weights(FIX / "vgg19_narrow.safetensors")
    assert W.weights_info() == before
    assert sorted(p.name for p in (isolated_home / "weights").iterdir()) == ["vgg19"]


def test_corrupt_cache_detected(isolated_home):
    W.import_weights(FIX / "vgg19_narrow.pth")
    d = isolated_home / "weights" / "vgg19"
    info = json.loads((d / "info.json").read_text())
    (d / "info.json").write_text(json.dumps({**info, "params_sha256": "0" * 64}))
    with pytest.raises(UserError, match="corrupt.*sha256.*hiresnst weights import") as e:
        W.load_cached()
    one_line(e)
    (d / "info.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt.*info.json"):
        W.load_cached()
    (d / "info.json").write_text(json.dumps(info))
    W.load_cached()  # restored info: fine again
    shutil.rmtree(d / "params")
    with pytest.raises(UserError, match="corrupt.*does not load") as e:
        W.load_cached()
    one_line(e)


def test_auto_without_cache_explains(isolated_home):
    with pytest.raises(UserError) as e:
        W.resolve_weights("auto", seed=0)
    msg = one_line(e)
    assert f"no VGG19 weights cached in {isolated_home}" in msg
    assert "hiresnst weights fetch" in msg and "hiresnst weights import FILE" in msg
    assert "--weights random" in msg
    assert W.weights_info() is None


def test_resolve_weights_kinds(isolated_home, tmp_path, monkeypatch):
    # model.random_params itself is tested elsewhere (and takes seconds to compile on CPU).
    calls = []
    monkeypatch.setattr(W, "random_params", lambda seed, w: calls.append((seed, w)) or "P")
    params, meta = W.resolve_weights("random", seed=3, widths=WIDTHS)
    assert (params, calls) == ("P", [(3, WIDTHS)])
    assert meta == {
        "kind": "random",
        "seed": 3,
        "widths": list(WIDTHS),
        "note": "untrained VGG19 (random weights)",
    }

    pth = FIX / "vgg19_narrow.pth"
    p_file, m_file = W.resolve_weights(str(pth), seed=0)
    assert m_file["kind"] == "file" and m_file["sha256"] == W.sha256_file(pth)
    assert m_file["widths"] == list(WIDTHS)
    assert not (isolated_home / "weights").exists()  # direct load does not cache

    W.import_weights(pth)
    p_auto, m_auto = W.resolve_weights("auto", seed=0)
    assert m_auto["kind"] == "cached" and m_auto["sha256"] == m_file["sha256"]
    assert m_auto["params_sha256"] == m_file["params_sha256"]
    assert W.params_sha256(p_auto) == W.params_sha256(p_file)

    d = isolated_home / "weights" / "vgg19"
    for ckpt in (d, d / "params"):
        p_ck, m_ck = W.resolve_weights(str(ckpt), seed=0)
        assert m_ck["kind"] == "checkpoint"
        assert m_ck["params_sha256"] == m_file["params_sha256"]

    with pytest.raises(UserError, match="no such file or directory"):
        W.resolve_weights(str(tmp_path / "nope.pth"), seed=0)
    with pytest.raises(UserError, match="not an orbax checkpoint"):
        W.resolve_weights(str(tmp_path), seed=0)


def test_home_dir(monkeypatch, tmp_path):
    from hiresnst.cache import home_dir

    monkeypatch.setenv("HIRESNST_HOME", str(tmp_path / "h"))
    assert home_dir() == tmp_path / "h"
    monkeypatch.delenv("HIRESNST_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_dir() == tmp_path / ".cache" / "hiresnst"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home_dir() == tmp_path / "xdg" / "hiresnst"
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HIRESNST_HOME", str(tmp_path / "file"))
    with pytest.raises(UserError, match="HIRESNST_HOME .* is a file"):
        home_dir()


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_offline_error(isolated_home):
    with pytest.raises(UserError) as e:
        W.fetch_weights(url="http://127.0.0.1:9/vgg19-dcbb9e9d.pth", timeout=5)
    msg = one_line(e)
    assert msg.startswith("downloading http://127.0.0.1:9/vgg19-dcbb9e9d.pth failed")
    assert "hiresnst weights import /path/to/vgg19-dcbb9e9d.pth" in msg
    assert W.weights_info() is None
    assert list((isolated_home / "weights" / "downloads").iterdir()) == []


def test_fetch_checks_hash_prefix_and_imports(isolated_home, tmp_path):
    src = FIX / "vgg19_narrow.pth"
    digest = W.sha256_file(src)
    good = tmp_path / f"vgg19narrow-{digest[:8]}.pth"
    shutil.copy(src, good)
    info = W.fetch_weights(url=good.as_uri())
    assert info["source"] == good.as_uri() and info["source_sha256"] == digest
    assert list((isolated_home / "weights" / "downloads").iterdir()) == []

    bad = tmp_path / "vgg19narrow-deadbeef.pth"
    shutil.copy(src, bad)
    with pytest.raises(UserError, match="does not start with deadbeef") as e:
        W.fetch_weights(url=bad.as_uri())
    one_line(e)
    assert W.weights_info()["source"] == good.as_uri()  # previous cache untouched


def test_torchvision_url_constant():
    assert W.TORCHVISION_URL == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert W._hash_prefix(W.TORCHVISION_URL) == ("vgg19-dcbb9e9d.pth", "dcbb9e9d")


# --- CLI -----------------------------------------------------------------------------------


def test_cli_import_and_info(isolated_home):
    runner = CliRunner()
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 0 and "no VGG19 weights cached" in r.output
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["cached"] is False

    r = runner.invoke(app, ["import", str(FIX / "vgg19_narrow_legacy_v1.pth")])
    assert r.exit_code == 0, r.output
    assert str(isolated_home / "weights" / "vgg19") in r.output
    assert "torch-legacy" in r.output

    r = runner.invoke(app, ["info", "--json"])
    data = json.loads(r.output)
    assert data["cached"] is True and data["widths"] == list(WIDTHS)
    r = runner.invoke(app, ["info"])
    assert data["params_sha256"] in r.output

    r = runner.invoke(app, ["import", str(isolated_home / "missing.pth")])
    assert isinstance(r.exception, UserError) and "does not exist" in str(r.exception)


def test_cli_fetch_offline(isolated_home):
    r = CliRunner().invoke(app, ["fetch", "--url", "http://127.0.0.1:9/x.pth", "--timeout", "5"])
    assert isinstance(r.exception, UserError)
    assert "hiresnst weights import /path/to/x.pth" in str(r.exception)
