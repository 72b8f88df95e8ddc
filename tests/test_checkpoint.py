"""Checkpoint/resume: SIGKILL loses nothing past the last checkpoint, SIGTERM saves one, a
resumed render is bitwise the uninterrupted one, and changed settings or corrupt checkpoints are
refused with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "vgg19_narrow.pth"


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:50, 0:64] / 64.0
    content = np.stack([yy, xx, 0.5 + 0.3 * np.sin(9 * xx * yy)], -1)
    Image.fromarray((content * 255).astype(np.uint8)).save(tmp_path / "c.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    return tmp_path


def _cmd(d: Path, out: str, *extra: str, quiet: bool = True) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hiresnst.cli",
        "render",
        str(d / "c.png"),
        str(d / "s.png"),
        "-o",
        str(d / out),
        "--size",
        "64",
        "--steps",
        "40",
        "--weights",
        str(WEIGHTS),
        "--bit-depth",
        "16",
        *(["-q"] if quiet else []),
        *extra,
    ]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _wait_for_checkpoint(proc: subprocess.Popen, ck: Path, timeout: float = 120) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = (
            sorted(p for p in ck.glob("ckpt-*") if (p / "meta.json").exists())
            if ck.exists()
            else []
        )
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_resume_equals_uninterrupted(inputs):
    full = subprocess.run(_cmd(inputs, "full.png"), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    ck = inputs / "ck"
    args = ("--checkpoint-dir", str(ck), "--checkpoint-every", "0")
    proc = subprocess.Popen(
        _cmd(inputs, "part.png", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = _wait_for_checkpoint(proc, ck)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (inputs / "part.png").exists()
    assert first.name.startswith("ckpt-00-")
    resumed = subprocess.run(
        _cmd(inputs, "part.png", *args, quiet=False), capture_output=True, text=True, timeout=300
    )  # without -q: prints where it resumed
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert np.array_equal(_read(inputs / "part.png"), _read(inputs / "full.png"))


def test_sigterm_saves_a_checkpoint_and_says_so(inputs):
    ck = inputs / "ck"
    proc = subprocess.Popen(
        _cmd(inputs, "out.png", "--checkpoint-dir", str(ck), "--checkpoint-every", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(proc, ck)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped by SIGTERM; checkpoint saved")
    assert "Traceback" not in err
    saved = Path(lines[0].split("checkpoint saved in ")[1].split(";")[0])
    assert (saved / "meta.json").exists() and (saved / "image.npy").is_file()
    assert not (inputs / "out.png").exists()
    assert not list(ck.glob(".tmp-*"))


def test_changed_settings_and_corrupt_checkpoints_are_refused(inputs, capsys):
    from hiresnst.cli import main

    ck = inputs / "ck"
    base = _cmd(inputs, "out.png", "--checkpoint-dir", str(ck), "--steps", "2")[3:]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--style-weight", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "style_weight" in err[0]
    assert main([*base, "--style-weight", "5", "--restart"]) == 0
    capsys.readouterr()
    newest = sorted(ck.glob("ckpt-*"))[-1]
    (newest / "meta.json").write_text("{not json")
    (inputs / "out.png").unlink()
    assert main([*base, "--style-weight", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is corrupt" in err[0] and "--restart" in err[0]
    assert not (inputs / "out.png").exists()


def test_resume_from_each_level_end_equals_uninterrupted(inputs, capsys):
    """A render killed right after any level's checkpoint resumes and ends bitwise equal to the
    uninterrupted render. Each level-end checkpoint is copied alone into a fresh directory: the
    disk state a SIGKILL just after it was written leaves behind."""
    import shutil

    from hiresnst.cli import main
    from hiresnst.imageio import read_metadata

    ck = inputs / "ck"
    levels = ("--scales", "3", "--min-size", "32", "--steps", "4,3,2", "--checkpoint-every", "1e9")
    base = _cmd(inputs, "full.png", *levels, "--checkpoint-dir", str(ck))[3:]
    assert main(base) == 0
    ends = sorted(ck.glob("ckpt-*"))
    assert [p.name for p in ends] == ["ckpt-00-00000004", "ckpt-01-00000003", "ckpt-02-00000002"]
    for i, end in enumerate(ends):
        one = inputs / f"ck{i}"
        shutil.copytree(end, one / end.name)
        argv = _cmd(inputs, f"part{i}.png", *levels, "--checkpoint-dir", str(one), quiet=False)
        capsys.readouterr()
        assert main(argv[3:]) == 0
        assert "resumed from" in capsys.readouterr().err
        assert np.array_equal(_read(inputs / f"part{i}.png"), _read(inputs / "full.png")), i
        records = read_metadata(inputs / f"part{i}.png")["levels"]
        assert [r["size"][1] for r in records] == [32, 45, 64], i  # one record a level


def test_sigkill_just_after_a_level_end_resumes(inputs):
    ck = inputs / "ck"
    args = ("--scales", "2", "--min-size", "32", "--steps", "6,3", "--checkpoint-dir", str(ck))
    proc = subprocess.Popen(
        _cmd(inputs, "out.png", *args, "--checkpoint-every", "1e9"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = _wait_for_checkpoint(proc, ck)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert first.name == "ckpt-00-00000006"
    resumed = subprocess.run(
        _cmd(inputs, "out.png", *args), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (inputs / "out.png").exists()
