"""Snapshots of a render in progress: a small JPEG of the current image, made from the render's
own state without a full-size copy.

`preview` reads the state (a device array, a NumPy array or a memory-mapped host-resident
image) with a stride, a band of rows at a time, so that a gigapixel level costs about as much
as a 4-megapixel one; a Lanczos resize of that ≤ 2× oversampled grid then makes the JPEG.
The stride aliases fine detail a little; for watching a render form, that is the right trade.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import imageio
from .errors import UserError

#: Longest side of a snapshot (as the output's *.preview.jpg).
SNAPSHOT_SIDE = imageio.PREVIEW_SIDE
#: Pixels per band of rows read from the state (bounds the temporaries at any width: the
#: quantiser's float64 copies of a band are 6 MB).
BAND_SAMPLES = 1 << 18
#: The live page's snapshots (without --save-every) come at most this often, and at most every
#: LIVE_COST_FACTOR times their own cost, so they take ≤ 1/LIVE_COST_FACTOR of a render.
LIVE_MIN_SECONDS = 2.0
LIVE_COST_FACTOR = 20
JPEG_QUALITY = 90


def preview(image: Any, max_side: int = SNAPSHOT_SIDE) -> np.ndarray:
    """uint8 H×W×3 no longer than `max_side` px of a float image in [0, 1] (NaN → 0).

    The image is sampled every `stride` px, where the stride leaves at most 2·max_side px per
    side, band by band (a memory-mapped state is read only at the sampled rows; a device array
    is sliced on the device and only the samples cross to the host); each band is halved (2×2
    means) when that still covers the output size, and the grid resized to fit. So the only
    arrays made are a band's samples and a grid of at most (2·max_side)² px, at any level size
    (a 4096² level: a 2048² grid)."""
    if max_side < 1:
        raise ValueError(f"max_side must be ≥ 1, got {max_side}")
    image = _addressable(image)
    h, w = image.shape[:2]
    stride = max(1, math.ceil(max(h, w) / (2 * max_side)))
    sh, sw = -(-h // stride), -(-w // stride)
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    halved = -(-max(sh, sw) // 2) >= max(size)  # only while it stays at least the output size
    grid = np.empty((-(-sh // 2), -(-sw // 2), 3) if halved else (sh, sw, 3), np.uint8)
    band = max(2, BAND_SAMPLES // sw // 2 * 2)  # even: halving pairs rows within a band
    for r0 in range(0, sh, band):
        r1 = min(sh, r0 + band)
        block = np.asarray(image[r0 * stride : r1 * stride : stride, ::stride])
        block = block if block.dtype == np.uint8 else imageio.quantize(block, 8)
        if halved:
            grid[r0 // 2 : -(-r1 // 2)] = halve(block)
        else:
            grid[r0:r1] = block
    if size == grid.shape[1::-1]:
        return grid
    return np.asarray(Image.fromarray(grid).resize(size, Image.LANCZOS))


def halve(rows: np.ndarray) -> np.ndarray:
    """uint8 2×2 means, rounded; an odd last row or column is paired with itself."""
    if rows.shape[0] % 2:
        rows = np.concatenate([rows, rows[-1:]])
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, rows[:, -1:]], axis=1)
    s = rows.astype(np.uint16)
    s = s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


def _addressable(image: Any) -> Any:
    """A replicated device array's local copy when other processes hold the rest."""
    if getattr(image, "is_fully_addressable", True):
        return image
    return image.addressable_data(0)


def snapshot_path(output: str | Path, step: int) -> Path:
    """`out.tif`, render step 120 → `out.step-00120.jpg`, beside the output."""
    p = Path(output)
    return p.with_name(f"{p.stem}.step-{step:05d}.jpg")


def encode_jpeg(pixels: np.ndarray, metadata: dict[str, Any] | None = None) -> bytes:
    """A JPEG of uint8 pixels, sRGB-tagged, with `metadata` as JSON in its comment (where
    `imageio.read_metadata` finds it): straight from the 8-bit grid, no float copy."""
    buf = io.BytesIO()
    extra = {} if metadata is None else {"comment": json.dumps(metadata, sort_keys=True)}
    Image.fromarray(pixels).save(
        buf, format="JPEG", quality=JPEG_QUALITY, icc_profile=imageio.srgb_icc(), **extra
    )
    return buf.getvalue()


@dataclass
class Snapshot:
    """One snapshot: its JPEG and where in the render it was taken."""

    jpeg: bytes
    level: int
    levels: int
    step: int  # optimiser steps over the whole render (levels in turn)
    level_step: int
    size: tuple[int, int]  # the level's (H, W)
    seconds: float  # what making it cost
    path: Path | None = None  # the file written, if any


class Snapshots:
    """A progress callback that writes `NAME.step-NNNNN.jpg` every `every` steps of a level and
    at each level's end (`every` = None: no files), and, with `live`, keeps a fresher in-memory
    snapshot for the live page, paced so that it costs a small share of the render.

    The step in the name counts optimiser steps over the whole render (so names sort in render
    order); the level and its own step are in the JPEG's metadata (`imageio.read_metadata`).
    `on_snapshot` receives each one (the live page)."""

    def __init__(
        self,
        output: str | Path,
        every: int | None,
        *,
        live: bool = False,
        max_side: int = SNAPSHOT_SIDE,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.output = Path(output)
        self.every = every
        self.live = live
        self.max_side = max_side
        self.on_snapshot = on_snapshot
        self.written: list[Path] = []
        self.seconds = 0.0  # spent making snapshots
        self._clock = clock
        self._done: set[tuple[int, int]] = set()
        self._next_live = 0.0

    def __call__(self, p: Any) -> None:
        if p.image is None:
            return
        key = (p.level, p.step)
        level_end = not p.step_fraction and p.step == p.steps and key not in self._done
        due = level_end or (
            bool(self.every)
            and not p.step_fraction
            and p.step > 0
            and p.step % self.every == 0
            and key not in self._done
        )
        if due and self.every is not None:
            self._done.add(key)
            self._take(p, write=True)
        elif self.live and (level_end or self._clock() >= self._next_live):
            self._done.add(key)
            self._take(p, write=False)

    def _take(self, p: Any, write: bool) -> None:
        t0 = self._clock()
        pixels = p.image(self.max_side)
        step = p.steps_before + p.step
        path = None
        if write:
            path = snapshot_path(self.output, step)
            meta = {
                "software": imageio.SOFTWARE,
                "snapshot": {
                    "level": p.level,
                    "levels": p.levels,
                    "level_step": p.step,
                    "level_steps": p.steps,
                    "step": step,
                    "size": [int(p.size[1]), int(p.size[0])],
                    "loss": None if p.loss != p.loss else p.loss,
                    "terms": p.terms,
                },
            }
            jpeg = encode_jpeg(pixels, meta)
            try:
                imageio.atomic_write(os.fspath(path), lambda fh: fh.write(jpeg))
            except OSError as e:
                raise UserError(
                    f"{path}: cannot write a snapshot ({e.strerror or e}); check free space, "
                    "or render without --save-every"
                ) from e
            self.written.append(path)
        else:
            jpeg = encode_jpeg(pixels)
        cost = self._clock() - t0
        self.seconds += cost
        self._next_live = self._clock() + max(LIVE_MIN_SECONDS, LIVE_COST_FACTOR * cost)
        if self.on_snapshot:
            self.on_snapshot(
                Snapshot(jpeg, p.level, p.levels, step, p.step, tuple(p.size), cost, path)
            )


def snapshot_metadata(path: str | Path) -> dict[str, Any] | None:
    """The level and step recorded in a snapshot written by `Snapshots`."""
    meta = imageio.read_metadata(path)
    return None if meta is None else meta.get("snapshot")
