"""Watching long renders (issue 19): progress lines through a pipe, snapshots from the render
state, the live page's server, zoomable output and `series --shard auto`.

Browser checks (the live page, the DZI viewer) are in test_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from conftest import NARROW
from PIL import Image

from hiresnst import cli, imageio, series, snapshot, zoom
from hiresnst.config import RenderConfig
from hiresnst.errors import UserError
from hiresnst.logprogress import LineLog
from hiresnst.render import Progress, render_with_info
from hiresnst.serve import LiveServer, LiveState, parse_serve
from hiresnst.watch import WatchOptions

WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "vgg19_narrow.pth"
STEP_LINE = "hiresnst: level "


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:50, 0:64] / 64.0
    content = np.stack([yy, xx, 0.5 + 0.3 * np.sin(9 * xx * yy)], -1)
    Image.fromarray((content * 255).astype(np.uint8)).save(tmp_path / "c.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    return tmp_path


def test_piped_render_logs_during_the_render_and_writes_snapshots_and_zoom(inputs):
    """stderr to a pipe: progress lines come while the render runs (the output does not exist
    yet) at every 5th step and each level's end; snapshots at every 10th step of a level and
    at level ends carry their level and step; the DZI and pyramidal TIFF are written."""
    out = inputs / "out.png"
    cmd = [sys.executable, "-m", "hiresnst.cli", "render", str(inputs / "c.png")]
    cmd += [str(inputs / "s.png"), "-o", str(out), "--size", "64", "--scales", "2"]
    cmd += ["--steps", "15,12", "--weights", str(WEIGHTS), "--log-every", "5"]
    cmd += ["--save-every", "10", "--zoom", "dzi,tiff"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines, during = [], []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith(STEP_LINE):
            during.append(not out.exists())
    assert proc.wait(timeout=300) == 0, "\n".join(lines)
    steps = [ln.split(" step ")[1].split()[0] for ln in lines if ln.startswith(STEP_LINE)]
    assert steps == ["5/15", "10/15", "15/15", "5/12", "10/12", "12/12"], lines
    assert all(during), "progress lines arrived only after the output was written"
    assert "loss " in lines[1] and "style " in lines[1] and "MP·it/s" in lines[1]
    assert "ETA level " in lines[1] and " render " in lines[1]

    shots = sorted(inputs.glob("out.step-*.jpg"))
    assert [p.name for p in shots] == [
        f"out.step-{n:05d}.jpg" for n in (10, 15, 25, 27)
    ]  # level 1: 10 and its end (15); level 2: 10 (15 + 10) and its end (15 + 12)
    meta = [snapshot.snapshot_metadata(p) for p in shots]
    assert [(m["level"], m["level_step"]) for m in meta] == [(0, 10), (0, 15), (1, 10), (1, 12)]
    with Image.open(shots[-1]) as im:
        assert im.size == (64, 50)
        last = np.asarray(im, np.float32)
    with Image.open(out) as im:
        final = np.asarray(im, np.float32)
    assert np.abs(last - final).mean() < 3  # the level-end snapshot is the output (JPEG)

    assert (inputs / "out.dzi").exists() and (inputs / "out.html").exists()
    assert (inputs / "out_files" / "6" / "0_0.jpg").exists()  # 64 px: levels 0…6
    assert zoom.read_pyramid_levels(inputs / "out.pyramid.tif") == [(50, 64)]


def _event(**kw) -> Progress:
    base = dict(level=0, levels=2, size=(100, 200), step=1, steps=10, loss=5.0, tiles=4)
    return Progress(**{**base, "elapsed": 1.0, "done": 0.0, "total": 1.0, **kw})


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_line_log_prints_at_least_every_interval_within_long_steps():
    """A host-resident level whose steps take minutes: tile-batch progress still logs."""
    clock, stream = _Clock(), _Stream()
    log = LineLog(every=50, interval=60.0, stream=stream, clock=clock)
    for k in range(10):  # step 1 of 10, in tenths, 20 s apart
        clock.t += 20
        log(_event(step=0, step_fraction=k / 10, elapsed=clock.t))
    assert len(stream.lines) == 3  # at 60, 120 and 180 s
    assert "step 0.20/10" in stream.lines[0]
    clock.t += 1
    log(_event(step=10, elapsed=clock.t, terms={"style": 4.0, "content": 1.0}))
    assert "step 10/10" in stream.lines[-1] and "(content 1 style 4)" in stream.lines[-1]


class _Stream:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines += text.splitlines()

    def flush(self) -> None:
        pass


def test_preview_subsamples_memmaps_and_device_arrays_without_a_full_copy(tmp_path):
    rng = np.random.default_rng(3)
    image = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (2000, 1200, 3))
    image[...] = rng.random((2000, 1200, 3), np.float32)
    image.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    tracemalloc.start()
    small = snapshot.preview(mapped, 100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert small.shape == (100, 60, 3) and small.dtype == np.uint8
    assert peak < image.nbytes / 10  # 29 MB image; a full copy (or a row band) would pass that
    expect = snapshot.halve(imageio.quantize(np.asarray(image[::10, ::10]), 8))  # stride 10
    np.testing.assert_array_equal(small, expect)
    np.testing.assert_array_equal(snapshot.preview(jnp.asarray(image), 100), expect)
    whole = snapshot.preview(np.asarray(image[:40, :30]), 100)  # smaller than asked: as is
    np.testing.assert_array_equal(whole, imageio.quantize(np.asarray(image[:40, :30]), 8))
    odd = snapshot.preview(np.asarray(image[:301, :177]), 100)  # stride 2; halving: too small
    grid = imageio.quantize(np.asarray(image[:301:2, :177:2]), 8)
    np.testing.assert_array_equal(odd, Image.fromarray(grid).resize((59, 100), Image.LANCZOS))


BASE = RenderConfig(size=48, steps=3, scales=1, weights="random", widths=NARROW, seed=1, tile=32)


def test_progress_offers_the_current_image_of_a_memory_mapped_state(rng, tmp_path):
    """The API's callback gets the image on request, here read from the host-resident
    state's memory maps (the device path is checked through the CLI's snapshots above); at
    the level's end it is the result."""
    content = rng.random((40, 48, 3)).astype(np.float32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    seen: list[tuple[int, np.ndarray]] = []
    result = render_with_info(
        content,
        [style],
        replace(BASE, state="host", state_dir=str(tmp_path / "state")),
        progress=lambda p: p.step_fraction or seen.append((p.step, p.image(24))),
    )
    assert [s for s, _ in seen] == [1, 2, 3]
    np.testing.assert_array_equal(seen[-1][1], snapshot.preview(result.image, 24))
    assert seen[-1][1].shape == (20, 24, 3)
    assert not np.array_equal(seen[0][1], seen[-1][1])  # it is the image of that moment


def test_pyramid_tiff_levels_read_back(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.random((700, 530, 3)).astype(np.float32)
    path = zoom.write_pyramid_tiff(tmp_path / "p.tif", image, tile=128, dpi=300, metadata={"a": 1})
    assert zoom.read_pyramid_levels(path) == [(700, 530), (350, 265), (175, 133), (88, 67)]
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        levels = [lv.asarray() for lv in tif.series[0].levels]
        assert json.loads(page.description) == {"a": 1}
    full = imageio.quantize(image, 8)
    np.testing.assert_array_equal(levels[0], full)
    half = full.astype(np.float64)
    half = (half[0::2, 0::2] + half[1::2, 0::2] + half[0::2, 1::2] + half[1::2, 1::2]) / 4
    assert np.abs(levels[1][:, :-1] - half[:, :264]).max() <= 1  # 2×2 means
    assert list(tmp_path.iterdir()) == [path]  # no temporary level files left


def test_dzi_tiles_cover_every_level(tmp_path):
    rng = np.random.default_rng(6)
    image = (rng.random((300, 520, 3)) * 255).astype(np.uint8)
    dzi, files, page = zoom.write_dzi(tmp_path / "a.png", image, fmt="png", tile=128)
    levels = zoom.dzi_levels(300, 520)
    assert len(levels) == 11 and levels[-1] == (300, 520) and levels[0] == (1, 1)
    top = files / "10"
    assert sorted(p.name for p in top.iterdir()) == sorted(
        f"{c}_{r}.png" for c in range(5) for r in range(3)
    )
    with Image.open(top / "1_1.png") as im:  # an inner tile: 128 px and 1 px either side
        np.testing.assert_array_equal(np.asarray(im), image[127:257, 127:257])
    with Image.open(files / "9" / "0_0.png") as im:
        assert im.size == (129, 129)
    assert 'Width="520" Height="300"' in dzi.read_text()
    html = page.read_text()
    assert "a_files/" in html and "Redistribution and use" in html  # licence kept
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_zoom_command_reads_a_written_tiff_a_row_of_tiles_at_a_time(tmp_path, capsys):
    rng = np.random.default_rng(8)
    image = rng.random((4100, 40, 3)).astype(np.float32)  # > 4096 px: written tiled
    path = tmp_path / "tall.tif"
    imageio.write_image(path, image, metadata={"settings": {"dpi": 300}}, dpi=300)
    assert cli.main(["zoom", str(path), "--zoom", "dzi,tiff"]) == 0
    assert "wrote" in capsys.readouterr().err
    with tifffile.TiffFile(tmp_path / "tall.pyramid.tif") as tif:
        np.testing.assert_array_equal(tif.series[0].asarray(), imageio.quantize(image, 8))
        assert tif.pages[0].resolution == (300.0, 300.0)
    assert (tmp_path / "tall.html").exists() and (tmp_path / "tall_files" / "13").is_dir()
    small = rng.random((50, 64, 3)).astype(np.float32)
    imageio.write_image(tmp_path / "s16.tif", small, bit_depth=16)  # 16-bit, in strips
    rows = zoom.TiffRows(tmp_path / "s16.tif")
    got = rows[7:33].astype(int)
    rows.close()
    assert np.abs(got - imageio.quantize(small, 8)[7:33]).max() <= 1  # 16 → 8 bits, rounded


class _FailingSource:
    """An image whose rows past 300 cannot be read (a disk error, say)."""

    shape = (600, 400, 3)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if rows.stop > 300:
            raise OSError(5, "Input/output error")
        return np.full((rows.stop - rows.start, 400, 3), 0.5, np.float32)


def test_a_failed_zoom_output_leaves_the_previous_one_and_no_temporaries(tmp_path):
    image = np.full((300, 200, 3), 0.25, np.float32)
    zoom.write_dzi(tmp_path / "a.png", image)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="cannot write"):
        zoom.write_dzi(tmp_path / "a.png", _FailingSource())
    with pytest.raises(UserError, match="cannot write"):
        zoom.write_pyramid_tiff(tmp_path / "a.pyramid.tif", _FailingSource(), tile=64)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_live_server_serves_only_its_render_and_asks_for_a_token():
    state = LiveState("out.png")
    with LiveServer(state, "127.0.0.1", 0, None) as server:
        url = server.url
        assert _get(url)[0] == 200 and b"hiresnst: out.png" in _get(url)[1]
        assert _get(url + "snapshot.jpg")[0] == 404  # none yet
        state.update(_event(step=3, terms={"style": 2.0}))
        state.set_snapshot(snapshot.Snapshot(b"JPEG", 0, 2, 3, 3, (100, 200), 0.01))
        status = json.loads(_get(url + "status.json")[1])
        assert status["step"] == 3 and status["history"] == [[3, 0, 5.0, {"style": 2.0}]]
        assert status["snapshot"]["seq"] == 1 and _get(url + "snapshot.jpg")[1] == b"JPEG"
        state.update(_event(step=4, loss=float("inf"), terms={"style": float("nan")}))
        status = json.loads(_get(url + "status.json")[1])  # strict JSON: no NaN or Infinity
        assert status["loss"] is None and status["history"][-1] == [4, 0, None, {"style": None}]
        for path in ("../README.md", "%2e%2e/etc/passwd", "out.png", "status.json/.."):
            assert _get(url + path)[0] == 404
        assert _get(url, {"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    with LiveServer(state, "127.0.0.1", 0, "s3cret") as server:
        url = server.url
        assert _get(url)[0] == 200  # the page itself, which asks for the token
        assert _get(url + "status.json")[0] == 401
        assert _get(url + "status.json", {"X-Hiresnst-Token": "wrong"})[0] == 401
        assert _get(url + "status.json", {"X-Hiresnst-Token": "s3cret"})[0] == 200
        assert _get(url + "snapshot.jpg?token=s3cret")[0] == 200


def test_serve_options_are_checked_before_the_render():
    assert parse_serve("8000") == ("127.0.0.1", 8000)
    assert parse_serve("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_serve("[::1]:9") == ("::1", 9)
    for bad in ("80000", "host:", "a:b:1", ""):
        with pytest.raises(UserError, match="--serve"):
            parse_serve(bad)
    with pytest.raises(UserError, match="--serve-token"):
        WatchOptions.parse(serve="0.0.0.0:8000")
    with pytest.raises(UserError, match="--serve-token needs --serve"):
        WatchOptions.parse(serve_token="x")
    with pytest.raises(UserError, match="--zoom"):
        WatchOptions.parse(zoom="png")
    assert WatchOptions.parse(serve="0.0.0.0:1", serve_token="t").serve == ("0.0.0.0", 1)


def test_serve_errors_are_one_line(tmp_path, capsys):
    state = LiveState("x")
    with LiveServer(state, "127.0.0.1", 0, None) as server:
        port = server.url.rsplit(":", 1)[1].strip("/")
        argv = ["render", "c.png", "s.png", "-o", str(tmp_path / "o.png"), "--serve", port]
        assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --serve 127.0.0.1:{port}: cannot listen")
    argv = ["render", str(tmp_path / "none.png"), str(tmp_path / "none.png")]
    assert cli.main([*argv, "-o", str(tmp_path / "o.png"), "--serve", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # refused before a step: no page line
    assert len(err) == 1 and err[0].startswith("error: ") and "none.png" in err[0], err


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            (3, 3),
        ),  # --array=1-5:2
        ({"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETION_COUNT": "2"}, (1, 2)),
    ],
)
def test_shard_auto_reads_array_job_variables(env, shard):
    assert series.shard_from_environment(env) == shard


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no array-job variables"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "whole number"),
        ({"JOB_COMPLETION_INDEX": "1"}, "must both be set"),
        ({"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETION_COUNT": "2"}, "below the count"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            "not on the array",
        ),
    ],
)
def test_shard_auto_without_usable_variables_is_one_line(
    env, message, tmp_path, monkeypatch, capsys
):
    for var in (
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_STEP",
        "JOB_COMPLETION_INDEX",
        "JOB_COMPLETION_COUNT",
    ):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = tmp_path / "spec.toml"
    spec.write_text('[defaults]\nsize = 32\ncontent = "c.png"\nstyle = "s.png"\n')
    code = cli.main(
        ["series", str(spec), "-o", str(tmp_path / "o"), "--shard", "auto", "--dry-run"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --shard auto") and message in err[0]


def test_shard_auto_dry_run_names_the_shard(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("JOB_COMPLETION_COUNT", "3")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[defaults]\nsize = 32\ncontent = "c.png"\n[grid]\nstyle = ["a.png", "b.png"'
        ', "c.png", "d.png"]\n'
    )
    assert (
        cli.main(["series", str(spec), "-o", str(tmp_path / "o"), "--shard", "auto", "--dry-run"])
        == 0
    )
    assert "shard 2/3: 1 of 4 jobs" in capsys.readouterr().out


def test_live_server_stops_its_threads():
    """The live server's threads are daemons and stop with it."""
    before = threading.active_count()
    with LiveServer(LiveState("x"), "127.0.0.1", 0, None):
        time.sleep(0.05)
    time.sleep(0.1)
    assert threading.active_count() <= before
