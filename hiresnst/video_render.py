"""Stylise a clip frame by frame with temporal consistency, resumably.

`--method optimize` (Ruder, Dosovitskiy and Brox 2016): frame 0 is a normal render (pyramid
included); frame t starts from the stylised frame t−1 warped into t by the backward flow, at the
output size, and adds the temporal loss Σ c(p)‖x(p) − warped(p)‖² weighted by
`config.temporal_weight` (`objective.LossSpec.temporal_weight`), c the flow's reliability.
`--method fast`: Magenta's network renders each frame; reliably tracked pixels are then pulled
towards the warped previous frame by `config.temporal_blend`.

Each finished frame is a PNG in the work folder, recorded in its `manifest.json` with its hash,
its input frame's hash and the settings' fingerprint. The next frame starts from the PNG as
written (8 bits), so an interrupted clip continues exactly as an uninterrupted one; a frame
interrupted by SIGTERM is checkpointed (`checkpoint.py`) and resumed mid-way. The output is
encoded from the PNGs once all frames are done, and the work folder is then removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from . import color, imageio, pyramid, video
from .cache import sha256_file
from .checkpoint import CheckpointOptions, stop_on_sigterm
from .config import RenderConfig, image_settings
from .errors import Preempted, UserError
from .events import Progress
from .inputs import array_sha256, prepare_inputs
from .printsize import apply_fit, fit_to_print
from .render import FastStyle, render_with_info

FORMAT = 1
MANIFEST = "manifest.json"
FRAME_CHECKPOINTS = "frame-checkpoint"


@dataclass(frozen=True)
class VideoSettings:
    """What a clip render takes besides the per-frame `RenderConfig`."""

    frames: str | None = None  # "A:B" of the input's frames
    fps: Fraction | None = None  # output rate (a frames folder: its rate)
    flow_size: int = video.FLOW_MAX_SIDE
    independent: bool = False  # every frame rendered on its own (no warp, no temporal term)

    def validate(self) -> None:
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise UserError(f"--fps must be between 0 and 1000, got {float(self.fps):g}")
        if self.flow_size < 16:
            raise UserError(f"--flow-size must be at least 16 px, got {self.flow_size}")


@dataclass
class FrameProgress:
    """A clip's progress: `done` of `frames` finished (`resumed` of them before this run),
    the frame being rendered and its optimiser step (None between steps or with --method
    fast), and the clip's ETA from this run's mean seconds per frame."""

    frame: int
    frames: int
    done: int
    resumed: int
    elapsed: float
    eta: float | None
    step: Progress | None = None


def parse_fps(text: str | None) -> Fraction | None:
    """`25`, `29.97` or `30000/1001` → a Fraction."""
    if text is None:
        return None
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise UserError(
            f"--fps must be a number such as 25, 29.97 or 30000/1001; got {text!r}"
        ) from None
    ntsc = round(value * Fraction(1001, 1000))
    if value.denominator != 1 and abs(value * Fraction(1001, 1000) - ntsc) < 0.005:
        return Fraction(ntsc * 1000, 1001)  # 29.97 means 30000/1001
    return value.limit_denominator(1001)


def default_work_dir(output: str | os.PathLike[str]) -> Path:
    p = Path(output)
    return p.parent / f".{p.name}.frames"


def _load_style(s: Any, config: RenderConfig) -> np.ndarray:
    if isinstance(s, np.ndarray):
        return np.clip(np.asarray(s, np.float32), 0.0, 1.0)
    return imageio.read_image(Path(s), max_pixels=config.max_input_pixels)


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, sort_keys=True, indent=1).encode()
    imageio.atomic_write(str(path), lambda fh: fh.write(text))


class WorkDir:
    """The finished frames and their manifest; refuses frames of another render."""

    def __init__(self, path: Path, fingerprint: dict, restart: bool) -> None:
        self.path = path
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        if restart and path.exists():
            shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the work folder {path}: {e.strerror}") from None
        self.frames: list[dict] = []
        manifest = path / MANIFEST
        if manifest.exists():
            try:
                data = json.loads(manifest.read_text())
                frames = list(data["frames"])
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"{manifest} is corrupt; delete it or pass --restart") from None
            if data.get("fingerprint") != self.fingerprint:
                old = data.get("fingerprint") or {}
                changed = sorted(
                    k for k in set(old) | set(self.fingerprint)
                    if old.get(k) != self.fingerprint.get(k)
                )  # fmt: skip
                raise UserError(
                    f"{path} holds frames of a render with other settings (changed: "
                    f"{', '.join(changed)}); pass --restart to start over, or another --work-dir"
                )
            self.frames = self._intact_prefix(frames)

    def _intact_prefix(self, frames: list[dict]) -> list[dict]:
        """The recorded frames up to the first one missing or changed on disk."""
        ok = []
        for j, entry in enumerate(frames):
            f = self.path / str(entry.get("file", ""))
            if entry.get("index") != j or not f.is_file() or sha256_file(f) != entry.get("sha256"):
                break
            ok.append(entry)
        return ok

    @property
    def checkpoints(self) -> Path:
        return self.path / FRAME_CHECKPOINTS

    def frame_path(self, j: int) -> Path:
        return self.path / f"frame_{j:06d}.png"

    def add(self, entry: dict, image: np.ndarray) -> None:
        """Write frame `entry["index"]` and then the manifest that records it."""
        j = entry["index"]
        f = self.frame_path(j)
        imageio.write_image(f, image)
        self.frames = self.frames[:j] + [{**entry, "file": f.name, "sha256": sha256_file(f)}]
        _write_json(
            self.path / MANIFEST,
            {"format": FORMAT, "fingerprint": self.fingerprint, "frames": self.frames},
        )

    def read(self, j: int) -> np.ndarray:
        return imageio.read_image(self.frame_path(j))


def render_video(
    source: str | os.PathLike[str],
    styles: Sequence[str | os.PathLike[str] | np.ndarray],
    output: str | os.PathLike[str],
    config: RenderConfig = RenderConfig(),
    settings: VideoSettings = VideoSettings(),
    *,
    work_dir: str | os.PathLike[str] | None = None,
    restart: bool = False,
    keep_frames: bool = False,
    checkpoint_every: float = 300.0,
    progress: Callable[[FrameProgress], None] | None = None,
) -> dict:
    """Stylise the clip `source` into `output` (see the module's docstring); returns a record
    of what was done: frames, rate, size, audio, seconds per frame and the flicker measure."""
    t_start = time.perf_counter()
    styles = list(styles)
    if not styles:
        raise UserError("give at least one style image")
    config.validate(len(styles))
    settings.validate()
    kind = video.check_output(output)
    clip = video.probe(source, settings.fps)
    span = video.parse_frames(settings.frames, clip.frames)
    fps = settings.fps if settings.fps is not None and clip.kind == "file" else clip.fps
    indices = video.resample(span, clip.fps, fps) if clip.kind == "file" else list(span)
    hw = video.even_size(config.output_hw((clip.height, clip.width)), kind)
    frame_fit = _framing(config, (clip.height, clip.width))
    frame_config = dataclasses.replace(config, width=hw[1], height=hw[0], fit="crop", dpi=None)
    style_imgs = [_load_style(s, config) for s in styles]
    fingerprint = {
        **image_settings(frame_config),  # what changes the pixels: another --tile may resume
        "input": os.path.abspath(clip.path),
        "input_frame_count": clip.frames,
        "input_frames": [span.start, span.stop],
        "fps": str(fps),
        "flow_size": settings.flow_size,
        "independent": settings.independent,
        "styles": [array_sha256(s) for s in style_imgs],
    }
    work = WorkDir(Path(work_dir) if work_dir else default_work_dir(output), fingerprint, restart)
    resumed = len(work.frames)
    runner = _FrameRunner(frame_config, settings, style_imgs, work, checkpoint_every)
    timings: list[float] = []
    prev_in = prev_out = None
    with stop_on_sigterm() as stop:
        for j, frame in video.read_frames(clip, indices):
            if frame_fit is not None:
                frame = apply_fit(frame, frame_fit)
            cur = np.asarray(pyramid.resize(frame, hw))
            in_sha = array_sha256(cur)
            if j < len(work.frames):  # done in an earlier run: check it is this clip's frame
                if work.frames[j].get("input_sha256") != in_sha:
                    raise UserError(
                        f"{work.path}: frame {j} was rendered from another input frame; pass "
                        "--restart to start over, or another --work-dir"
                    )
                prev_in = cur
                prev_out = work.read(j) if j + 1 == len(work.frames) else None
                continue
            if stop.is_set():
                raise Preempted(work.path)
            t0 = time.perf_counter()

            def report(step: Progress | None, j: int = j) -> None:
                if progress is not None:
                    progress(_progress(j, len(indices), resumed, timings, t_start, step))

            report(None)
            out, entry = runner.frame(j, cur, prev_in, prev_out, report)
            entry["input_sha256"] = in_sha
            entry["input_index"] = indices[j]
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            work.add(entry, out)
            shutil.rmtree(work.checkpoints, ignore_errors=True)
            timings.append(time.perf_counter() - t0)
            prev_in, prev_out = cur, imageio.quantize(out, 8).astype(np.float32) / 255.0
            report(None)
        if len(work.frames) < len(indices):
            raise UserError(f"{clip.path}: fewer frames could be read than probed")
        if stop.is_set():
            raise Preempted(work.path)
        audio = None
        if clip.kind == "file" and clip.audio and kind in video.AUDIO_CODECS:
            stop_s = None if span.stop == clip.frames else span.stop / float(clip.fps)
            audio = video.AudioSpan(clip.path, span.start / float(clip.fps), stop_s)
        written = video.write_video(output, (work.read(j) for j in range(len(indices))), fps, audio)
    record = _record(clip, indices, fps, hw, written, work, resumed, config, settings)
    record["seconds"] = round(time.perf_counter() - t_start, 3)
    if not keep_frames:
        shutil.rmtree(work.path, ignore_errors=True)
    return record


def _framing(config: RenderConfig, clip_hw: tuple[int, int]) -> Any:
    """How each frame meets an explicit --width × --height of another aspect (--fit crop or
    pad, as a still's content does), or None."""
    if config.width is None or config.height is None:
        return None
    ch, cw = clip_hw
    k = (max if config.fit == "pad" else min)(ch / config.height, cw / config.width)
    native = (max(1, round(config.width * k)), max(1, round(config.height * k)))
    return fit_to_print(clip_hw, native, config.fit)


def _progress(j, n, resumed, timings, t_start, step) -> FrameProgress:
    later = timings[1:] if len(timings) > 1 else timings  # frame 0 runs the whole pyramid
    per = sum(later) / len(later) if later else None
    done = resumed + len(timings)
    eta = None if per is None else per * (n - done)
    return FrameProgress(j, n, done, resumed, time.perf_counter() - t_start, eta, step)


def _record(clip, indices, fps, hw, written, work, resumed, config, settings) -> dict:
    flick = [f["flicker"] for f in work.frames if f.get("flicker")]
    out_e = [f["output"] for f in flick]
    in_e = [f["input"] for f in flick]
    flicker = None
    if flick:
        mo, mi = float(np.mean(out_e)), float(np.mean(in_e))
        flicker = {"output": mo, "input": mi, "ratio": mo / max(mi, 1e-12)}
    secs = [f["seconds"] for f in work.frames]
    return {
        "software": "hiresnst",
        "input": clip.path,
        "input_frames": [indices[0], indices[-1] + 1] if indices else [],
        "frames": written["frames"],
        "fps": written["fps"],
        "size": [hw[1], hw[0]],
        "audio": written["audio"],
        "method": config.method,
        "temporal_weight": None if config.method == "fast" else config.temporal_weight,
        "temporal_blend": config.temporal_blend if config.method == "fast" else None,
        "independent": settings.independent,
        "weights": config.weights,
        "resumed_frames": resumed,
        "seconds_per_frame": round(float(np.mean(secs)), 3) if secs else None,
        "flicker": flicker,
        "settings": dataclasses.asdict(config),
    }


class _FrameRunner:
    """Renders one frame from the previous one, by the configured method."""

    def __init__(self, config, settings, styles, work, checkpoint_every) -> None:
        self.config, self.settings, self.styles, self.work = config, settings, styles, work
        self.every = checkpoint_every
        self.fast: FastStyle | None = None
        self.fast_styles: list[np.ndarray] | None = None

    def frame(self, j, cur, prev_in, prev_out, report) -> tuple[np.ndarray, dict]:
        linked = j > 0 and prev_in is not None and prev_out is not None
        motion = video.motion(prev_in, cur, self.settings.flow_size) if linked else None
        warped = None if motion is None else video.warp(prev_out, motion.backward)
        chained = motion is not None and not self.settings.independent
        if self.config.method == "fast":
            out, entry = self._fast(cur, motion if chained else None, warped), {}
        else:
            out, entry = self._optimize(cur, motion if chained else None, warped, report)
        out = np.clip(np.asarray(out, np.float32), 0.0, 1.0)
        entry["index"] = j
        if motion is not None:  # the flicker measure against the output as it will be stored
            stored = imageio.quantize(out, 8).astype(np.float32) / 255.0
            c = motion.weights[..., None]
            n = max(float(c.sum()) * 3, 1.0)
            entry["flicker"] = {
                "output": float(np.sum(c * np.abs(stored - warped)) / n),
                "input": float(np.sum(c * np.abs(cur - video.warp(prev_in, motion.backward))) / n),
            }
        return out, entry

    def _optimize(self, cur, motion, warped, report) -> tuple[np.ndarray, dict]:
        ckpt = CheckpointOptions(self.work.checkpoints, every=self.every)
        config = self.config
        kwargs: dict[str, Any] = {}
        if motion is not None:
            steps = config.steps if isinstance(config.steps, int) else config.steps[-1]
            config = dataclasses.replace(config, scales=1, min_size=None, steps=steps)
            kwargs["init_image"] = warped
            if config.temporal_weight > 0:
                kwargs["temporal"] = (warped, motion.weights)
        result = render_with_info(cur, self.styles, config, report, ckpt, **kwargs)
        levels = result.info.get("levels") or [{}]
        return result.image, {
            "loss_first": levels[-1].get("loss_first"),
            "loss_last": levels[-1].get("loss_last"),
            "weights": result.info.get("weights"),
        }

    def _fast(self, cur, motion, warped) -> np.ndarray:
        config = self.config
        if self.fast is None:  # the style vector once, with colours matched to the first frame
            inputs = prepare_inputs(cur, self.styles, config)
            self.fast = FastStyle.load(inputs.styles, config)
        content = color.to_luminance_rgb(cur) if config.preserve_colors == "luminance" else cur
        out = self.fast.render(np.asarray(content, np.float32), config, config.tile)
        if config.preserve_colors == "luminance":
            out = color.luminance_transfer(out, cur)
        if motion is not None and config.temporal_blend > 0:
            a = config.temporal_blend * motion.weights[..., None]
            out = (1 - a) * np.asarray(out, np.float32) + a * warped
        return out
