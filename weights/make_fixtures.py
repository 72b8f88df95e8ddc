"""Build the tiny weight-file fixtures in tests/fixtures/ with real PyTorch and safetensors.

hiresnst itself never imports torch; this script is the one place that does, so that the test
fixtures are written by the real `torch.save` / `safetensors` code rather than by our own writers.
Run it in a throwaway virtualenv (not the project's):

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch safetensors numpy
    /tmp/torchvenv/bin/python weights/make_fixtures.py [OUT_DIR]   # default: tests/fixtures

The network is a NARROW VGG19 (channel widths WIDTHS instead of 64…512) laid out exactly like
torchvision's `vgg19()`: `features.N` convs/ReLUs/max-pools and a (tiny) `classifier`. Every value
is a multiple of 1/64 in [-2, 2), so it is exact in float16, bfloat16, float32 and float64 and
every decoded file must match `vgg19_narrow.npz` bit for bit.

Files written:
  vgg19_narrow.pth             torch.save of model.state_dict(), default zip format, float32
  vgg19_narrow_legacy.pth      same, _use_new_zipfile_serialization=False (legacy pickle stream)
  vgg19_narrow_legacy_v1.pth   legacy stream written like PyTorch 0.1.x did (how torchvision's
                               2017 vgg19-dcbb9e9d.pth is stored): torch._utils._rebuild_tensor
                               (v1) and one storage view; checked with torch.load below
  vgg19_narrow_mixed.pth       zip format, float16/bfloat16/float64 tensors, a non-contiguous
                               tensor, a tensor at a storage offset, two tensors sharing a storage
  vgg19_narrow.safetensors     safetensors, F32
  vgg19_narrow_mixed.safetensors  safetensors, F16/BF16/F64
  vgg19_narrow.npz             the expected float32 arrays, keyed like the state dict (OIHW)
"""

from __future__ import annotations

import io
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as st_load_numpy
from safetensors.torch import save_file as st_save

WIDTHS = (2, 3, 4, 5, 6)
CONVS_PER_BLOCK = (2, 2, 4, 4, 4)
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


class NarrowVGG19(torch.nn.Module):
    """torchvision.models.vgg19's module layout with narrow widths and a tiny classifier."""

    def __init__(self, widths=WIDTHS):
        super().__init__()
        layers: list[torch.nn.Module] = []
        cin = 3
        for w, n in zip(widths, CONVS_PER_BLOCK, strict=True):
            for _ in range(n):
                layers += [torch.nn.Conv2d(cin, w, 3, padding=1), torch.nn.ReLU(inplace=True)]
                cin = w
            layers.append(torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(*layers)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(cin, 4),
            torch.nn.ReLU(True),
            torch.nn.Dropout(),
            torch.nn.Linear(4, 4),
            torch.nn.ReLU(True),
            torch.nn.Dropout(),
            torch.nn.Linear(4, 3),
        )


def grid_values(gen: torch.Generator, shape: torch.Size) -> torch.Tensor:
    """Multiples of 1/64 in [-2, 2): exactly representable in f16, bf16, f32 and f64."""
    return torch.randint(-128, 128, tuple(shape), generator=gen).float() / 64.0


def build_model() -> NarrowVGG19:
    model = NarrowVGG19()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(grid_values(gen, p.shape))
    return model


def save_legacy_v1(sd: dict[str, torch.Tensor], path: Path, view_key: str) -> None:
    """Write `sd` the way PyTorch 0.1.10-0.3 did: legacy stream, `_rebuild_tensor` (v1).

    Layout: pickle(MAGIC) pickle(1001) pickle(sys_info) pickle(obj, storages as persistent ids
    ('storage', StorageType, root_key, location, root_numel, view_metadata)) pickle(sorted
    root keys) then for each root storage: int64 numel + raw little-endian data. The tensor
    `view_key` is stored through a storage *view* (offset 3 into a larger root storage).
    """
    roots: dict[str, torch.Tensor] = {}

    class Storage:
        def __init__(self, root_key, numel, view):
            self.root_key, self.numel, self.view = root_key, numel, view

    class V1Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, obj.root_key, "cpu", obj.numel, obj.view)
            return None

        def reducer_override(self, obj):
            if isinstance(obj, torch.Tensor):
                name = self.names[id(obj)]
                flat = obj.detach().contiguous().reshape(-1).float()
                key = str(1000 + len(roots))
                if name == view_key:
                    root = torch.cat([torch.full((3,), 9.0), flat, torch.full((2,), 9.0)])
                    roots[key] = root
                    view = (str(5000 + len(roots)), 3, flat.numel())
                    storage = Storage(key, root.numel(), view)
                    offset = 0  # the tensor starts at the view's start
                else:
                    roots[key] = flat
                    storage = Storage(key, flat.numel(), None)
                    offset = 0
                return (
                    torch._utils._rebuild_tensor,
                    (storage, offset, tuple(obj.shape), tuple(obj.contiguous().stride())),
                )
            return NotImplemented

    buf = io.BytesIO()
    for header in (
        0x1950A86A20F9469CFC6C,
        1001,
        {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4},
        },
    ):
        pickle.dump(header, buf, protocol=2)
    pickler = V1Pickler(buf, protocol=2)
    pickler.names = {id(t): k for k, t in sd.items()}
    pickler.dump(OrderedDict(sd))
    keys = sorted(roots)
    pickle.dump(keys, buf, protocol=2)
    for key in keys:
        data = roots[key].numpy().astype("<f4")
        buf.write(np.int64(data.size).astype("<i8").tobytes())
        buf.write(data.tobytes())
    path.write_bytes(buf.getvalue())


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    model = build_model()
    sd = model.state_dict()  # OrderedDict with _metadata, exactly like torchvision's files
    expected = {k: v.numpy().astype(np.float32) for k, v in sd.items()}
    np.savez(out / "vgg19_narrow.npz", **expected)

    torch.save(sd, out / "vgg19_narrow.pth")
    torch.save(sd, out / "vgg19_narrow_legacy.pth", _use_new_zipfile_serialization=False)
    save_legacy_v1(dict(sd), out / "vgg19_narrow_legacy_v1.pth", view_key="features.34.bias")

    # Mixed dtypes and memory layouts, zip format.
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
    conv_idx = sorted({int(k.split(".")[1]) for k in sd if k.startswith("features.")})
    mixed: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(conv_idx):
        dt = dtypes[i % 4]
        mixed[f"features.{idx}.weight"] = sd[f"features.{idx}.weight"].to(dt)
        mixed[f"features.{idx}.bias"] = sd[f"features.{idx}.bias"].to(dt)
    st_save({k: v.contiguous() for k, v in mixed.items()}, out / "vgg19_narrow_mixed.safetensors")
    w0 = sd["features.0.weight"]
    mixed["features.0.weight"] = w0.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    assert not mixed["features.0.weight"].is_contiguous()
    b2 = sd["features.2.bias"]
    mixed["features.2.bias"] = torch.cat([torch.full((3,), 7.0), b2, torch.full((2,), 7.0)])[3:-2]
    w5, b5 = sd["features.5.weight"], sd["features.5.bias"]  # float16 in the cycle above
    shared = torch.cat([w5.reshape(-1), b5]).to(torch.float16)
    mixed["features.5.weight"] = shared[: w5.numel()].view(w5.shape)
    mixed["features.5.bias"] = shared[w5.numel() :]
    mixed["classifier.6.bias"] = sd["classifier.6.bias"]
    torch.save(mixed, out / "vgg19_narrow_mixed.pth")

    st_save({k: v.contiguous() for k, v in sd.items()}, out / "vgg19_narrow.safetensors")

    # Every file must load back, with real torch / safetensors, to the expected values.
    for name in ("vgg19_narrow.pth", "vgg19_narrow_legacy.pth", "vgg19_narrow_mixed.pth"):
        got = torch.load(out / name, weights_only=True)
        for k, v in got.items():
            assert np.array_equal(v.float().numpy(), expected[k]), (name, k)
    got = torch.load(out / "vgg19_narrow_legacy_v1.pth", weights_only=False)
    assert list(got) == list(expected)
    for k, v in got.items():
        assert np.array_equal(v.numpy(), expected[k]), ("legacy_v1", k)
    for name in ("vgg19_narrow.safetensors",):
        got = st_load_numpy(out / name)
        for k, v in got.items():
            assert np.array_equal(v, expected[k]), (name, k)
    for f in sorted(out.iterdir()):
        print(f"{f.stat().st_size:8d}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
