"""The plan made before any work: --dry-run prints it without rendering, a render that cannot
fit fails before any work with what it needs, and settings that do not change the image (tile
batch, device count) may change on resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiresnst.cli import main
from hiresnst.config import RenderConfig
from hiresnst.errors import UserError
from hiresnst.layers import DEFAULT_WIDTHS
from hiresnst.plan import DEVICE_FILL, MIN_DEVICE_TILE, make_render_plan, physical_memory

WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "vgg19_narrow.pth"
NARROW = (4, 8, 8, 16, 16)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(3)
    for name, hw in (("c", (48, 64)), ("s", (40, 40))):
        pixels = (rng.random((*hw, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    return tmp_path


def _argv(d: Path, *extra: str) -> list[str]:
    return ["render", str(d / "c.png"), str(d / "s.png"), "-o", str(d / "o.png"), *extra]


def test_dry_run_json_reports_levels_and_renders_nothing(images, capsys):
    argv = _argv(images, "--size", "2048", "--scales", "3", "--weights", "random", "--state")
    assert main([*argv, "host", "--tile", "512", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    levels = plan["levels"]
    assert [lv["hw"] for lv in levels] == [[384, 512], [768, 1024], [1536, 2048]]
    assert all(lv["residency"] == "host" and lv["tile"] == 512 for lv in levels)
    assert levels[-1]["tiles"] == 3 * 4 and levels[-1]["host_bytes"] > levels[0]["host_bytes"]
    assert plan["peak_host_bytes"] == max(lv["host_bytes"] for lv in levels)
    assert not (images / "o.png").exists()
    assert main([*argv, "auto", "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert "2048×1536" in table and "device" in table


def test_a_render_that_cannot_fit_fails_before_any_work(images, capsys):
    start = time.monotonic()
    code = main(_argv(images, "--size", "100000", "--weights", "random", "--dry-run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "GB of RAM" in err[0] and "needs" in err[0] and "--state-dir" in err[0]
    code = main(_argv(images, "--size", "100000", "--weights", "random", "-q"))
    assert code == 2 and not (images / "o.png").exists()
    assert time.monotonic() - start < 30  # no render started: seconds, not hours


def test_a_render_whose_state_does_not_fit_on_disk_fails_before_any_work(
    images, capsys, monkeypatch
):
    """With --state-dir the state goes to disk and the styles stay at their own size (not the
    level's 75 GB), so the RAM fits and the disk decides."""
    monkeypatch.setattr("hiresnst.plan._free_disk", lambda path: 50e9)
    argv = _argv(images, "--size", "100000", "--weights", "random", "-q")
    code = main([*argv, "--state-dir", str(images / "state")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "needs 247.5 GB free and has 50.0 GB" in err[0] and "another disk" in err[0]
    assert not (images / "o.png").exists()


def test_planning_for_another_device():
    """A 50 MP level stays on an 80 GB device and goes to the host of a 2 GB one: its state
    and step alone (51 B/px, 2.6 GB) would not fit."""
    config = RenderConfig(size=8192, weights="random", device_memory=80e9)
    small = RenderConfig(size=8192, weights="random", device_memory=2e9)
    big, little = (
        make_render_plan(
            c, (6144, 8192), [(512, 512)], NARROW, devices=1, device_memory=c.device_memory
        )
        for c in (config, small)
    )
    assert big.levels[-1].residency == "device" and little.levels[-1].residency == "host"
    assert little.max_device_pixels < 6144 * 8192 < big.max_device_pixels


def test_a_gigapixel_level_stays_on_an_80gb_device():
    """Planned for an 80 GB device, a 1.2-gigapixel level (40000×30000) keeps its state
    (33 B/px) and its step's (18 B/px) on it, with tiles in what is left, within
    `DEVICE_FILL`; a 16 GB device sends it to the host."""
    config = RenderConfig(size=40000, weights="random", device_memory=80e9)
    plans = {
        gb: make_render_plan(
            config,
            (3000, 4000),
            [(512, 512)],
            DEFAULT_WIDTHS,
            devices=1,
            device_memory=gb * 1e9,
            host_memory=64e9,
            platform="gpu",
        )
        for gb in (80, 16)
    }
    last = plans[80].levels[-1]
    assert last.hw == (30000, 40000) and last.pixels >= 1e9
    assert last.residency == "device" and last.tile >= MIN_DEVICE_TILE
    assert last.device_bytes <= DEVICE_FILL * 80e9
    assert plans[80].max_device_pixels >= 1.2e9 > plans[16].max_device_pixels
    assert plans[16].levels[-1].residency == "host"


@pytest.mark.skipif(physical_memory() < 20e9, reason="the level's start image needs 15 GB RAM")
def test_dry_run_of_a_gigapixel_for_an_80gb_device(images, capsys):
    """`hiresnst render … --size 40000 --dry-run --device-memory 80GB` on any machine (this
    one's RAM holds the level's start image): the finest level is on the device, and the table
    says how large a device-resident level can be. The styles are kept small here (a style's
    size at a level is another setting's matter)."""
    argv = _argv(images, "--size", "40000", "--weights", "random", "--style-scale", "0.05")
    assert main([*argv, "--dry-run", "--device-memory", "80GB", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["levels"][-1]["hw"] == [30000, 40000]
    assert plan["levels"][-1]["residency"] == "device"
    assert plan["max_device_pixels"] >= 1.2e9
    assert main([*argv, "--dry-run", "--device-memory", "80GB"]) == 0
    assert "largest device-resident level: 1," in capsys.readouterr().out  # 1.xxx GP


def test_resume_with_another_tile_batch_and_device_count(images):
    """A checkpoint taken with one device and one tile per batch resumes with two devices and
    two tiles per batch (neither changes the image), and ends close to the uninterrupted
    render (tiles sum in another order)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    ck = images / "ck"
    base = [sys.executable, "-m", "hiresnst.cli", *_argv(images, "--size", "64", "--steps", "8")]
    base += ["--weights", str(WEIGHTS), "--bit-depth", "16", "--tile", "32"]
    base += ["--checkpoint-dir", str(ck)]
    first = [*base, "--devices", "1", "--tile-batch", "1", "--checkpoint-every", "0", "-q"]
    done = subprocess.run(first, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Image.open(images / "o.png") as im:
        full = np.asarray(im).astype(np.float64)
    for later in sorted(ck.glob("ckpt-*"))[1:]:
        shutil.rmtree(later)  # as if killed after the first kept checkpoint (mid-level)
    (images / "o.png").unlink()
    again = [*base, "--devices", "2", "--tile-batch", "2"]
    done = subprocess.run(again, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stderr
    with Image.open(images / "o.png") as im:
        resumed = np.asarray(im).astype(np.float64)
    assert np.abs(resumed - full).mean() / 65535 < 1e-3


def _style_sizes(config: RenderConfig, style_hw: tuple[int, int]) -> list[tuple[int, int]]:
    plan = make_render_plan(
        config, (768, 1024), [style_hw], NARROW, devices=1, device_memory=80e9, host_memory=1e12
    )
    return [lv.style_hw[0] for lv in plan.levels]


def test_style_sizes_follow_the_level_up_to_the_styles_own_size():
    """By default a style follows the level (× --style-scale) but is never upsampled beyond
    its own size, so a print-sized render costs no more style work than the style holds."""
    big = RenderConfig(size=4096, scales=3, min_size=512, weights="random")
    assert _style_sizes(big, (640, 1024)) == [(320, 512), (640, 1024), (640, 1024)]
    scaled = RenderConfig(size=4096, scales=3, min_size=512, style_scale=0.25)
    assert _style_sizes(scaled, (640, 1024)) == [(80, 128), (226, 362), (640, 1024)]
    # a style smaller than the network's alignment is enlarged only as far as it needs
    assert _style_sizes(RenderConfig(size=256), (8, 12)) == [(16, 24)]


def test_style_size_fixes_the_style_at_every_level():
    config = RenderConfig(size=4096, scales=3, min_size=512, style_size=300)
    assert _style_sizes(config, (640, 1024)) == [(188, 300)] * 3
    upsampled = RenderConfig(size=512, style_size=2048)  # the user's choice, beyond the style's
    assert _style_sizes(upsampled, (640, 1024)) == [(1280, 2048)]


def test_the_plan_counts_the_styles_at_their_bounded_size():
    """A 1024 px style costs the same RAM in a 4096 px render as in a 2048 px one, beyond the
    level's own state (the old policy resized it to every level's size)."""
    plans = [
        make_render_plan(
            RenderConfig(size=s, state="host", tile=512),
            (768, 1024),
            [(640, 1024)] * n,
            NARROW,
            devices=1,
            device_memory=80e9,
            host_memory=1e12,
        )
        for s in (2048, 4096)
        for n in (1, 2)
    ]
    one_2k, two_2k, one_4k, two_4k = (p.levels[-1].host_bytes for p in plans)
    assert two_4k - one_4k == two_2k - one_2k == 2 * 640 * 1024 * 12  # loaded + resized copy
    assert "1024×640,1024×640" in plans[3].table()


def test_style_size_is_validated():
    for bad in (0, -5, 10**6):
        with pytest.raises(UserError, match="--style-size must be a positive long edge"):
            RenderConfig(style_size=bad).validate(1)
    with pytest.raises(UserError, match="raise --style-size"):
        make_render_plan(
            RenderConfig(style_size=8),
            (48, 64),
            [(40, 40)],
            NARROW,
            devices=1,
            device_memory=8e9,
        )
