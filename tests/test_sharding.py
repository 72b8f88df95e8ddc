"""Tiles spread over 1, 2 and 8 (simulated CPU) devices give the same objective and render."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sharded_results() -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "_sharded_check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=HERE,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_loss_and_gradient_equal_on_1_2_and_8_devices(sharded_results):
    ref_loss, ref_grad = sharded_results["objective"]["1"]
    ref_grad = np.asarray(ref_grad)
    assert np.abs(ref_grad).max() > 0
    for n in ("2", "8"):
        loss, grad = sharded_results["objective"][n]
        assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss), n
        rel = np.abs(np.asarray(grad) - ref_grad).max() / np.abs(ref_grad).max()
        assert rel <= 1e-5, (n, rel)


def test_render_on_8_devices_equals_1_device(sharded_results):
    one = np.asarray(sharded_results["render"]["1"])
    eight = np.asarray(sharded_results["render"]["8"])
    assert one.shape == eight.shape == (70, 90, 3)
    assert np.abs(one - eight).mean() <= 1e-4
