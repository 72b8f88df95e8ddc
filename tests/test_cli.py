"""The `hiresnst render` command end to end, on tiny images (a few seconds of JIT each).

Renders run in-process through `hiresnst.cli.main` (which returns the exit status); one test
runs the real interpreter in a subprocess to prove that no traceback reaches the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import badinputs as B
import pytest
from PIL import Image

from hiresnst import imageio
from hiresnst.cli import main
from hiresnst.config import RenderConfig

RANDOM_NOTE = "note: rendered with untrained random VGG19 weights (--weights random)"


@pytest.fixture
def images(tmp_path) -> tuple[Path, Path]:
    """A 48×40 content and a 40×40 style PNG."""
    return B.rgb_png(tmp_path / "content.png", 48, 40), B.rgb_png(tmp_path / "style.png", 40, 40)


def _losses(info: dict) -> list:
    return [lv[k] for lv in info["levels"] for k in ("loss_first", "loss_last")]


def _as_json(obj):
    return json.loads(json.dumps(obj))


def test_render_random_weights_json(tmp_path, images, capsys):
    content, style = images
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir()
    argv = ["render", str(content), str(style), "-o", str(out)]
    code = main([*argv, "--size", "48", "--steps", "3", "--weights", "random", "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "Traceback" not in stderr

    # stdout: exactly one JSON line describing the render
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    info = json.loads(lines[0])
    assert info["output"] == str(out)
    assert info["output_size"] == [48, 40]
    assert info["inputs"] == {"content": str(content), "styles": [str(style)]}
    assert info["weights"]["kind"] == "random"
    assert [lv["steps"] for lv in info["levels"]] == [3]
    assert all(isinstance(v, float) and math.isfinite(v) for v in _losses(info)), info["levels"]

    # stderr: the random-weights note
    assert RANDOM_NOTE in stderr

    # the file: long edge 48, complete metadata, nothing else left in the directory
    with Image.open(out) as img:
        assert img.size == (48, 40)
        assert img.mode == "RGB"
    meta = imageio.read_metadata(out)
    assert meta is not None
    assert meta["weights"]["kind"] == "random"
    assert meta["weights"]["seed"] == 0
    expected = RenderConfig(size=48, steps=3, weights="random")
    assert meta["settings"] == _as_json(dataclasses.asdict(expected))
    assert meta["levels"] == info["levels"]
    assert [p.name for p in out.parent.iterdir()] == ["result.png"]


def test_render_with_weights_file_plain_output(tmp_path, images, capsys):
    """A real (narrow) weights file: no random-weights note; without --json and -q a summary
    line is printed."""
    content, style = images
    out = tmp_path / "result.jpg"
    argv = ["render", str(content), str(style), "-o", str(out), "--size", "48", "--steps", "2"]
    code = main([*argv, "--weights", str(B.NARROW_PTH)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert stdout == ""
    assert f"wrote {out} (48×40)" in stderr
    assert RANDOM_NOTE not in stderr
    meta = imageio.read_metadata(out)
    assert meta["weights"]["kind"] == "file"
    assert meta["weights"]["widths"] == [2, 3, 4, 5, 6]
    assert meta["weights"]["source"] == str(B.NARROW_PTH.resolve())
    with Image.open(out) as img:
        assert img.size == (48, 40)


def test_render_lbfgs(tmp_path, images, capsys):
    content, style = images
    out = tmp_path / "result.png"
    argv = ["render", str(content), str(style), "-o", str(out), "--size", "48"]
    code = main([*argv, "--steps", "4", "--optimizer", "lbfgs", "--weights", "random", "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["settings"]["optimizer"] == "lbfgs"
    losses = _losses(info)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    with Image.open(out) as img:
        assert img.size == (48, 40)


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "render" in capsys.readouterr().out
    assert main(["render", "--help"]) == 0
    assert "--weights" in capsys.readouterr().out


@pytest.mark.parametrize(
    "quiet",
    [
        pytest.param(True, id="quiet"),
        pytest.param(False, id="default"),
    ],
)
def test_subprocess_bad_weights_one_line_no_traceback(tmp_path, images, quiet):
    """The real interpreter: a truncated weights file (found after the images are read and JAX
    is imported) gives one `error:` line on stderr, status 2, and no output."""
    content, style = images
    data = B.NARROW_PTH.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "result.png"
    out.parent.mkdir()
    argv = ["render", str(content), str(style), "-o", str(out), "--size", "48", "--steps", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "hiresnst.cli", *argv, "--weights", str(cut)]
        + (["-q"] if quiet else []),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "corrupt or truncated" in lines[0]
    assert proc.stdout == ""
    assert list(out.parent.iterdir()) == []
