"""The live page and the Deep Zoom viewer in a real headless Chromium (Debian's `chromium`;
`.ci/run` installs it). Without it these tests skip, saying so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hiresnst import imageio, zoom

WEIGHTS = Path(__file__).resolve().parent / "fixtures" / "vgg19_narrow.pth"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium: apt-get install chromium (CI's .ci/run installs it)",
)


def _chromium(profile: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium (its own profile; --no-sandbox for root in containers)."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += [f"--user-data-dir={profile}", "--no-first-run", "--force-device-scale-factor=1"]
    done = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _page_state(dom: str) -> tuple[int, int | None, str]:
    """(step shown in the progress line, loaded snapshot's width, its caption)."""
    progress = re.search(r'id="progress">[^<]*step ([\d.]+)/', dom)
    assert progress, dom[-3000:]
    img = re.search(r'<img id="shot"[^>]*>', dom)
    loaded = re.search(r'data-loaded="(\d+)"', img.group(0)) if img else None
    caption = re.search(r'id="caption">([^<]*)<', dom)
    return (
        int(float(progress.group(1))),
        int(loaded.group(1)) if loaded else None,
        caption.group(1) if caption else "",
    )


def test_live_page_shows_the_snapshot_and_progress_while_the_render_runs(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in (("c.png", (50, 64, 3)), ("s.png", (40, 40, 3))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(tmp_path / name)
    cmd = [sys.executable, "-m", "hiresnst.cli", "render", str(tmp_path / "c.png")]
    cmd += [str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"), "--size", "64"]
    cmd += ["--scales", "1", "--steps", "1000000", "--weights", str(WEIGHTS), "--serve", "0"]
    cmd += ["-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("live page: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(": ", 1)[1].strip()
        end = time.monotonic() + 180
        while True:  # until the first snapshot (compilation takes a while)
            with urllib.request.urlopen(url + "status.json") as r:
                if json.load(r)["snapshot"]:
                    break
            assert time.monotonic() < end and proc.poll() is None, "no snapshot appeared"
            time.sleep(0.2)
        states = []
        for _ in range(2):
            dom = _chromium(tmp_path / "profile", "--virtual-time-budget=4000", "--dump-dom", url)
            states.append(_page_state(dom))
            time.sleep(1.0)
        assert proc.poll() is None  # still rendering
    finally:
        proc.kill()
        proc.wait()
    (step1, width1, caption1), (step2, width2, caption2) = states
    assert width1 == width2 == 64  # the snapshot is shown (decoded, at the render's size)
    assert caption1.startswith("level 1/1, step ") and caption2.startswith("level 1/1, step ")
    assert step2 > step1 > 0, states  # progress moved between the two looks


def test_dzi_viewer_opens_from_files_and_shows_the_deepest_level(tmp_path):
    """Zoomed to full resolution, the page shows the output's own pixels (the level below,
    upsampled, would be blurred): the deepest tiles were loaded from file://."""
    h, w, view_w, view_h = 768, 1024, 400, 300
    rng = np.random.default_rng(0)
    noise = (rng.random((h // 2, w // 2, 3)) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(noise).resize((w, h), Image.BICUBIC), np.float32) / 255
    _, _, page = zoom.write_dzi(tmp_path / "big.png", image, fmt="png")
    y0, x0 = (h - view_h) // 2, (w - view_w) // 2
    truth = imageio.quantize(image, 8).astype(np.float32)
    crop = truth[y0 : y0 + view_h - 40, x0 : x0 + view_w]
    below = zoom.dzi_levels(h, w)[-2]
    coarse = Image.fromarray(imageio.quantize(image, 8)).resize(below[::-1], Image.BOX)
    blurred = np.asarray(coarse.resize((w, h), Image.BILINEAR), np.float32)
    blurred = blurred[y0 : y0 + view_h - 40, x0 : x0 + view_w]
    coarse_error = np.abs(blurred - crop).mean()
    shot, errors = tmp_path / "shot.png", []
    # The screenshot is taken when the virtual-time budget runs out; on a loaded machine the
    # tiles may still be decoding then, so a blank or coarse view is retried with more time.
    for budget in (6000, 15000, 30000):
        _chromium(
            tmp_path / "profile",
            f"--window-size={view_w},{view_h}",
            f"--virtual-time-budget={budget}",
            f"--screenshot={shot}",
            page.as_uri() + "#x=0.5&y=0.5&zoom=1",
        )
        with Image.open(shot) as im:
            seen = np.asarray(im.convert("RGB"), np.float32)[: view_h - 40]  # above the caption
        errors.append(float(np.abs(seen - crop).mean()))
        if errors[-1] < 4:
            break
    error = errors[-1]
    assert error < 4 and coarse_error > 10, (errors, coarse_error)
