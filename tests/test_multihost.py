"""Two processes on 127.0.0.1 (2 simulated CPU devices each) render the same image as one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

NARROW_WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "vgg19_narrow.pth"
ARGS = [
    "--size",
    "90",
    "--steps",
    "4",
    "--weights",
    str(NARROW_WEIGHTS),  # a narrow VGG19 compiles in seconds
    "--tile",
    "32",
    "-q",
    "--bit-depth",
    "16",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(tmp: Path, out: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hiresnst.cli",
        "render",
        str(tmp / "c.png"),
        str(tmp / "s.png"),
        "-o",
        str(tmp / out),
        *ARGS,
        *extra,
    ]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, np.float64)


def test_two_processes_render_what_one_renders(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:70, 0:90] / 90.0
    content = np.stack([yy, xx, 0.5 + 0.3 * np.sin(9 * xx * yy)], -1)
    Image.fromarray((content * 255).astype(np.uint8)).save(tmp_path / "c.png")
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    port = _free_port()
    procs = [
        subprocess.Popen(
            _cmd(
                tmp_path,
                f"multi{i}.png",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        results = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert (tmp_path / "multi0.png").exists()
    assert not (tmp_path / "multi1.png").exists()  # only process 0 writes
    single = subprocess.run(
        _cmd(tmp_path, "single.png", "--devices", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = _read(tmp_path / "multi0.png"), _read(tmp_path / "single.png")
    assert a.shape == b.shape == (70, 90, 3)
    assert np.abs(a - b).mean() / 65535 <= 1e-4
