"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 by test_sharding.py."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from hiresnst.config import RenderConfig
from hiresnst.render import make_objective, render

NARROW = (4, 8, 8, 16, 16)


def main() -> None:
    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    content = rng.random((70, 90, 3)).astype(np.float32)
    style = rng.random((48, 48, 3)).astype(np.float32)
    image = rng.random((70, 90, 3)).astype(np.float32)
    out: dict = {"objective": {}, "render": {}}
    base = RenderConfig(size=90, steps=8, weights="random", widths=NARROW, tile=32, seed=1)
    for n in (1, 2, 8):
        cfg = RenderConfig(**{**base.__dict__, "devices": n})
        loss, grad = make_objective(content, [style], cfg)(image)
        out["objective"][n] = (float(loss), np.asarray(grad).tolist())
    for n in (1, 8):
        cfg = RenderConfig(**{**base.__dict__, "devices": n})
        out["render"][n] = render(content, [style], cfg).tolist()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
