"""Temporary files of killed processes are removed by the next run in the same place (a dead
process of this machine, or untouched for an hour), and a full disk while checkpointing is one
line with the temporary directory gone."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import badinputs as B
import pytest

from hiresnst import imageio, leftovers
from hiresnst.checkpoint import Checkpointer, CheckpointOptions


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _tag(pid: int) -> str:
    return leftovers.tag().replace(f"-{os.getpid()}-", f"-{pid}-")


def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_output_temp_files_of_dead_or_stale_writers_are_removed(tmp_path):
    dead = tmp_path / f".result.png.{_tag(_dead_pid())}.tmp"
    live = tmp_path / f".result.png.{_tag(os.getppid())}.tmp"
    other_host = tmp_path / f".result.png.abcdef-{_dead_pid()}-0123456789ab.tmp"
    old = tmp_path / ".photo.jpg.0123456789ab.tmp"  # an older version's name: age decides
    fresh = tmp_path / ".photo.jpg.ba9876543210.tmp"
    mine = tmp_path / ".notes.txt"  # not ours at all
    for p in (dead, live, other_host, old, fresh, mine):
        p.write_bytes(b"x")
    _age(old, 2 * leftovers.MAX_AGE)
    _age(mine, 2 * leftovers.MAX_AGE)
    imageio.check_output_path(tmp_path / "result.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, other_host, fresh, mine)
    )
    _age(other_host, 2 * leftovers.MAX_AGE)
    imageio.check_output_path(tmp_path / "other.png")
    assert not other_host.exists() and live.exists()


def test_checkpoint_temp_dirs_of_dead_renders_are_removed(tmp_path):
    dead = tmp_path / f".tmp-{_tag(_dead_pid())}-01-00000040"
    legacy_old = tmp_path / ".tmp-12345-00-00000003"
    legacy_new = tmp_path / ".tmp-12346-00-00000003"
    live = tmp_path / f".tmp-{_tag(os.getppid())}-00-00000001"
    for d in (dead, legacy_old, legacy_new, live):
        (d / "state").mkdir(parents=True)
        (d / "state" / "x").write_bytes(b"x")
    _age(legacy_old, 2 * leftovers.MAX_AGE)
    Checkpointer(CheckpointOptions(tmp_path), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([legacy_new.name, live.name])


def test_temp_names_fit_whatever_the_output_name():
    for name in ("a" * 251 + ".png", "é" * 125 + ".tif", "x.jpg"):
        assert len(name.encode()) <= leftovers.NAME_MAX
        temp = leftovers.temp_file_name(name)
        assert len(temp.encode()) <= leftovers.NAME_MAX
        assert leftovers.TEMP_FILE.match(temp)
        assert len(imageio.preview_path(Path("/d") / name).name.encode()) <= leftovers.NAME_MAX


def test_long_output_name_and_its_preview_are_written(tmp_path, monkeypatch):
    """A valid name (251 bytes of UTF-8) must not fail after the render: neither the output's
    temporary nor the preview's name is longer than a file name may be."""
    import numpy as np

    out = tmp_path / ("é" * 123 + "x.png")
    imageio.check_output_path(out)
    imageio.write_image(out, np.zeros((20, 30, 3), np.float32))
    preview = imageio.write_preview(out, np.zeros((20, 30, 3), np.float32))
    assert out.is_file() and preview.is_file()
    assert sorted(tmp_path.iterdir()) == sorted([out, preview])


#: Runs `python ARGS…` under a file-size limit of LIMIT bytes, SIGXFSZ ignored (so a write past
#: it fails with EFBIG): `python -c LIMITED LIMIT ARGS…`. Set in the child itself, not in a
#: preexec_fn, which is unsafe in a process running JAX's threads.
LIMITED = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_checkpoint_over_a_file_size_limit_is_one_line(tmp_path):
    B.rgb_png(tmp_path / "c.png")
    B.rgb_png(tmp_path / "s.png", 32, 32)
    ck = tmp_path / "ck"
    argv = ["render", str(tmp_path / "c.png"), str(tmp_path / "s.png")]
    argv += ["-o", str(tmp_path / "o.png"), "--size", "32", "--steps", "2", "-q"]
    argv += ["--weights", str(B.NARROW_PTH), "--checkpoint-dir", str(ck), "--checkpoint-every", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", LIMITED, "8000", "-m", "hiresnst.cli", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),

        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: cannot save a checkpoint in {ck}: file too large")
    assert list(ck.iterdir()) == []  # the temporary directory is gone
    assert not (tmp_path / "o.png").exists()


def test_truncated_checkpoint_is_one_line(tmp_path, capsys):
    from hiresnst.cli import main

    B.rgb_png(tmp_path / "c.png")
    B.rgb_png(tmp_path / "s.png", 32, 32)
    ck = tmp_path / "ck"
    argv = ["render", str(tmp_path / "c.png"), str(tmp_path / "s.png")]
    argv += ["-o", str(tmp_path / "o.png"), "--size", "32", "--steps", "2", "-q"]
    argv += ["--weights", str(B.NARROW_PTH), "--checkpoint-dir", str(ck)]
    assert main(argv) == 0
    (tmp_path / "o.png").unlink()
    for f in sorted(ck.glob("ckpt-*"))[-1].glob("*.npy"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "is corrupt" in err and "--restart" in err
    assert not (tmp_path / "o.png").exists()
