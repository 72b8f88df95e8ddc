"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 by test_quality.py: the W2
objective untiled on one device, and tiled on 1 and on 8 devices."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from hiresnst.config import RenderConfig
from hiresnst.render import make_objective

NARROW = (4, 8, 8, 16, 16)


def main() -> None:
    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    content = rng.random((64, 96, 3)).astype(np.float32)
    style = rng.random((48, 48, 3)).astype(np.float32)
    image = rng.random((64, 96, 3)).astype(np.float32)
    out: dict = {}
    base = RenderConfig(size=96, weights="random", widths=NARROW, style_loss="w2", style_weight=1e3)
    # the reference: untiled on one device; then tiles on 1 and on 8 devices
    for name, tile, n in (("untiled", 0, 1), ("1", 32, 1), ("8", 32, 8)):
        cfg = RenderConfig(**{**base.__dict__, "tile": tile, "devices": n})
        loss, grad = make_objective(content, [style], cfg)(image)
        out[name] = (float(loss), np.asarray(grad).tolist())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
