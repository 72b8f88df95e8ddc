"""SIGTERM and Ctrl-C in every phase: start-up, the render without --checkpoint-dir, the output
write, a series. Each ends with one `error:` line, status 143 (130 for Ctrl-C), no output and no
temporary file. The signal is sent by the process to itself from inside the phase (in-process,
through `hiresnst.cli.main`), except for start-up, which needs a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import badinputs as B
import pytest

from hiresnst import imageio, progress, series, signals
from hiresnst.cli import main

FAST = ["--size", "32", "--weights", str(B.NARROW_PTH), "-q"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def ws(tmp_path) -> Path:
    B.rgb_png(tmp_path / "c.png")
    B.rgb_png(tmp_path / "s.png", 32, 32)
    return tmp_path


def _argv(ws: Path, *extra: str) -> list[str]:
    return ["render", str(ws / "c.png"), str(ws / "s.png"), "-o", str(ws / "out.png"), *extra]


def _one_error_line(err: str) -> str:
    lines = [s for s in err.splitlines() if not s.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _kill_self(sig: int = signal.SIGTERM):
    def send(*_args, **_kw):
        os.kill(os.getpid(), sig)

    return send


@pytest.mark.parametrize(
    ("sig", "status", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_signal_mid_render_without_checkpoint_dir(ws, capsys, monkeypatch, sig, status, name):
    """The render stops at its next step (it used to run on to the end and exit 0)."""
    steps: list[int] = []

    def update(self, p):
        steps.append(p.step)
        if p.step == 1:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(progress.RenderProgress, "update", update)
    before = _files(ws)
    assert main(_argv(ws, *FAST, "--steps", "50")) == status
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: stopped by {name}; nothing saved; pass --checkpoint-dir")
    assert max(steps) <= 3  # promptly
    assert _files(ws) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_sigterm_during_the_output_write_removes_the_temp_file(ws, capsys, monkeypatch):
    real = imageio._encode_png
    temps: list[Path] = []

    def encode(fh, *args):  # the signal lands inside the atomic write, its temp file open
        temps.append(Path(fh.name))
        os.kill(os.getpid(), signal.SIGTERM)
        return real(fh, *args)

    monkeypatch.setattr(imageio, "_encode_png", encode)
    before = _files(ws)
    assert main(_argv(ws, *FAST, "--steps", "1")) == 143
    assert _one_error_line(capsys.readouterr().err) == "error: stopped by SIGTERM"
    assert temps and temps[0].parent == ws
    assert _files(ws) == before


def test_sigterm_in_a_series_stops_it_and_cleans_the_job(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.toml"
    B.rgb_png(tmp_path / "c.png", 32, 26)
    B.rgb_png(tmp_path / "s.png", 32, 26)
    spec.write_text(
        '[defaults]\ncontent = "c.png"\nstyle = "s.png"\nsize = 32\nsteps = 30\n'
        f'weights = "{B.NARROW_PTH}"\n[grid]\nseed = [1, 2]\n'
    )
    out = tmp_path / "out"
    monkeypatch.setattr(
        series.SeriesDisplay,
        "render_progress",
        lambda self, p: p.step == 2 and os.kill(os.getpid(), signal.SIGTERM),
    )
    assert main(["series", str(spec), "-o", str(out), "-q"]) == 143
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: stopped by SIGTERM during job ")
    assert "run the same command again" in line
    assert not list(out.glob("*.png")) and not list(out.glob(".*.tmp"))
    assert not (out / series.MANIFEST_NAME).exists()


def _caught(pid: int) -> int:
    """The process's caught-signals mask (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_in_start_up_real_process(ws):
    """Sent as soon as the CLI's handler is in place: before the weights, JAX's back end or the
    render have started, the process still says why it stopped."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hiresnst.cli", *_argv(ws, *FAST, "--steps", "1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    end = time.monotonic() + 120
    while not _caught(proc.pid) >> (signal.SIGTERM - 1) & 1:
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert _one_error_line(err) == "error: stopped by SIGTERM"
    assert not (ws / "out.png").exists() and not list(ws.glob(".*.tmp"))


def test_deferred_block_redelivers_an_unanswered_signal():
    """A stop that arrives after the last step is not lost: it is raised when the block ends."""
    with signals.stop_signals(), pytest.raises(signals.Stopped) as got, signals.deferred() as r:
        os.kill(os.getpid(), signal.SIGTERM)
        assert r.is_set() and r.signum == signal.SIGTERM
    assert got.value.exit_status == 143


def test_second_ctrl_c_in_a_deferred_block_stops_at_once():
    with signals.stop_signals(), pytest.raises(signals.Stopped) as got, signals.deferred() as r:
        os.kill(os.getpid(), signal.SIGINT)
        assert r.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second Ctrl-C did not stop")
    assert got.value.exit_status == 130
