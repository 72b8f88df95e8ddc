"""Video clips: reading and writing them, optical flow, warping and the flicker measure.

Clips are files that PyAV (FFmpeg, codecs in its wheel) reads, or folders of numbered frames;
outputs are MP4/MOV (H.264), WebM (VP9), GIF (Pillow) or a folder of PNG frames. Every output is
written beside its final name and renamed into place when complete.

Flow is OpenCV's DIS (no model to download), computed on grey frames at a bounded long edge and
upsampled. Conventions: a flow f from frame a to frame b satisfies a(p) ≈ b(p + f(p)), f in
pixels as (dx, dy). The previous frame t−1 is brought into frame t with the *backward* flow
(t → t−1): warped(p) = out_{t−1}(p + f_b(p)). Its reliability follows Ruder, Dosovitskiy and
Brox (2016): 0 where the forward flow, brought into t the same way, does not undo the backward
flow (disocclusion), at motion boundaries, and where p + f_b(p) leaves the frame; 1 elsewhere.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import imageio
from .errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".gif", ".mkv", ".avi")
#: Outputs: H.264 in MP4/MOV, VP9 in WebM, GIF; no suffix = a folder of PNG frames.
OUTPUT_SUFFIXES = (".mp4", ".mov", ".webm", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Frame rate of a frames folder unless --fps says otherwise.
FOLDER_FPS = Fraction(24)
#: Long edge at which flow is computed (then upsampled): DIS costs grow with the pixels, and
#: motion at video sizes is resolved well below them.
FLOW_MAX_SIDE = 1024
#: Video codec and pixel format per container; both need even sizes (4:2:0 chroma).
VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9"}
CODEC_OPTIONS = {
    "libx264": {"crf": "17", "preset": "medium"},
    "libvpx-vp9": {"crf": "24", "b": "0"},
}
#: Audio codecs each container takes as they are (copied); others are re-encoded to the first.
AUDIO_CODECS = {
    ".mp4": ("aac", "mp3", "alac", "ac3", "opus", "flac"),
    ".mov": ("aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"),
    ".webm": ("opus", "vorbis"),
}
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class ClipInfo:
    """What a clip holds: frame count, rate (exact fraction), size and audio."""

    path: str
    kind: str  # "file" or "frames"
    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None = None  # the audio codec's name; None = no audio track
    files: tuple[str, ...] = ()  # the numbered frames of a folder, in order

    @property
    def seconds(self) -> float:
        return self.frames / float(self.fps)


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - depends on the installation
        raise UserError("video needs PyAV: pip install 'hiresnst[video]'") from None
    return av


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the installation
        raise UserError("video needs OpenCV: pip install 'hiresnst[video]'") from None
    return cv2


# ---------------------------------------------------------------- reading


def probe(path: str | os.PathLike[str], fps: Fraction | None = None) -> ClipInfo:
    """The clip at `path` (a video file or a folder of numbered frames), fully decoded once to
    count its frames and to find an unreadable one now rather than hours into a render.
    `fps` gives a frames folder its rate."""
    p = Path(path)
    if p.is_dir():
        return _probe_folder(p, fps)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    av = _av()
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise UserError(f"{p}: no video track; give a video file or a frames folder")
            vs = c.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
            n, size = 0, None
            for frame in c.decode(vs):
                n += 1
                size = size or (frame.width, frame.height)
    except UserError:
        raise
    except Exception as e:  # FFmpeg's errors: not a video, a codec it cannot decode, damage
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{p}: cannot read as a video ({detail})") from None
    if n == 0 or size is None:
        raise UserError(f"{p}: the video has no frames it can decode")
    if not rate or rate <= 0:
        rate = FOLDER_FPS if fps is None else fps
    return ClipInfo(str(p), "file", n, Fraction(rate), size[0], size[1], audio)


def _probe_folder(p: Path, fps: Fraction | None) -> ClipInfo:
    found: dict[int, Path] = {}
    groups: set[tuple[str, str]] = set()
    for f in p.iterdir():
        m = _NUMBERED.match(f.stem)
        if f.is_file() and f.suffix.lower() in FRAME_SUFFIXES and m:
            n = int(m.group(2))
            if n in found:
                raise UserError(f"{p}: frames {found[n].name} and {f.name} share number {n}")
            found[n] = f
            groups.add((m.group(1), f.suffix.lower()))
    if not found:
        raise UserError(f"{p}: no numbered frames (e.g. frame_0001.png) in this folder")
    if len(groups) > 1:
        raise UserError(f"{p}: frames of several series ({len(groups)} name patterns); keep one")
    numbers = sorted(found)
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise UserError(
            f"{p}: frame number {missing[0]} is missing ({len(missing)} gaps between "
            f"{numbers[0]} and {numbers[-1]}); renumber the frames"
        )
    files = tuple(str(found[n]) for n in numbers)
    first = imageio.read_image(Path(files[0]))
    h, w = first.shape[:2]
    return ClipInfo(
        str(p), "frames", len(files), FOLDER_FPS if fps is None else fps, w, h, None, files
    )


def read_frames(info: ClipInfo, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(position in `indices`, frame as float32 H×W×3 in [0, 1]) for each index, in order;
    `indices` must not decrease (a repeated index repeats its frame)."""
    if list(indices) != sorted(indices):
        raise ValueError("frame indices must not decrease")
    if info.kind == "frames":
        for k, i in enumerate(indices):
            frame = imageio.read_image(Path(info.files[i]))
            if frame.shape[:2] != (info.height, info.width):
                raise UserError(
                    f"{info.files[i]}: {frame.shape[1]}×{frame.shape[0]} px, but the first frame "
                    f"is {info.width}×{info.height}; all frames must be the same size"
                )
            yield k, frame
        return
    av = _av()
    wanted = list(indices)
    k = 0
    with av.open(info.path) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            while k < len(wanted) and wanted[k] == i:
                rgb = frame.to_ndarray(format="rgb24")
                yield k, rgb.astype(np.float32) / 255.0
                k += 1
            if k == len(wanted):
                return
    if k < len(wanted):
        raise UserError(f"{info.path}: the video ended at frame {k} while reading it again")


def parse_frames(text: str | None, count: int) -> range:
    """`A:B` (from A up to, not including, B; either may be left out) → a range of frames."""
    if text is None:
        return range(count)
    a, sep, b = text.partition(":")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else count
    except ValueError:
        raise UserError(
            f"--frames must be A:B with whole numbers, e.g. 0:48; got {text!r}"
        ) from None
    if not sep:
        raise UserError(f"--frames must be A:B (from A up to B), e.g. 0:48; got {text!r}")
    if not 0 <= start < stop:
        raise UserError(f"--frames {text}: need 0 ≤ A < B")
    if start >= count:
        raise UserError(f"--frames {text}: the clip has {count} frames (0 to {count - 1})")
    return range(start, min(stop, count))


def resample(frames: range, fps_in: Fraction, fps_out: Fraction) -> list[int]:
    """The input frame shown at each output frame when the rate changes (nearest earlier
    frame): the clip keeps its duration, so the audio stays in step."""
    if fps_out == fps_in:
        return list(frames)
    n = max(1, math.floor(len(frames) * fps_out / fps_in))
    return [frames.start + min(len(frames) - 1, int(j * fps_in / fps_out)) for j in range(n)]


# ---------------------------------------------------------------- writing


def output_kind(path: str | os.PathLike[str]) -> str:
    """The output's suffix (.mp4, .mov, .webm, .gif), or "" for a folder of frames."""
    suffix = Path(path).suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return suffix
    if suffix:
        raise UserError(
            f"{path}: unknown video format {suffix!r}; use .mp4, .mov, .webm, .gif, or a "
            "folder name (no suffix) for PNG frames"
        )
    return ""


def check_output(path: str | os.PathLike[str]) -> str:
    """Refuse an output that cannot be written, before any work: returns its kind."""
    kind = output_kind(path)
    p = Path(path)
    if not p.parent.is_dir():
        raise UserError(f"{p}: the folder {p.parent} does not exist")
    if kind == "" and p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise UserError(f"{p}: exists and is not an empty folder; remove it or name another")
    if kind and p.is_dir():
        raise UserError(f"{p}: is a folder; give a file name")
    return kind


def even_size(hw: tuple[int, int], kind: str) -> tuple[int, int]:
    """The frame size an output can hold: H.264 and VP9 at 4:2:0 need even sides."""
    if kind in VIDEO_CODECS:
        return max(2, hw[0] // 2 * 2), max(2, hw[1] // 2 * 2)
    return hw


@dataclass(frozen=True)
class AudioSpan:
    """The input's audio from `start` to `stop` seconds (None = to the end) of its video."""

    path: str
    start: float = 0.0
    stop: float | None = None


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: Fraction,
    audio: AudioSpan | None = None,
) -> dict:
    """Encode float frames in [0, 1] to `path` atomically; returns what was written
    (frames, fps, audio: "copied", "re-encoded …" or None)."""
    kind = output_kind(path)
    p = Path(path)
    tmp = p.parent / f".{p.name[:200]}.{secrets.token_hex(6)}.tmp{kind}"
    try:
        if kind == "":
            tmp.mkdir()
            n = 0
            for n, frame in enumerate(frames, 1):
                imageio.write_image(tmp / f"frame_{n - 1:06d}.png", frame)
            result = {"frames": n, "fps": str(fps), "audio": None}
        elif kind == ".gif":
            result = _write_gif(tmp, frames, fps)
        else:
            result = _write_av(tmp, kind, frames, fps, audio)
        if kind == "" and p.is_dir():
            p.rmdir()  # empty (check_output); os.replace cannot replace a folder
        os.replace(tmp, p)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    return result


def _write_gif(tmp: Path, frames: Iterable[np.ndarray], fps: Fraction) -> dict:
    from PIL import Image

    images = [Image.fromarray(imageio.quantize(f, 8)) for f in frames]
    if not images:
        raise UserError("no frames to write")
    ms = max(20, round(1000 / float(fps)))  # GIF counts in 10 ms; most players need ≥ 20 ms
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)
    return {"frames": len(images), "fps": str(Fraction(1000, ms)), "audio": None}


def _write_av(
    tmp: Path, kind: str, frames: Iterable[np.ndarray], fps: Fraction, audio: AudioSpan | None
) -> dict:
    av = _av()
    codec = VIDEO_CODECS[kind]
    n = 0
    with av.open(
        str(tmp), "w", format={".mov": "mov", ".mp4": "mp4", ".webm": "webm"}[kind]
    ) as out:
        vs = None
        carry = _AudioCarry(out, kind, audio) if audio is not None else None
        for frame in frames:
            rgb = imageio.quantize(frame, 8)
            if vs is None:
                vs = out.add_stream(codec, rate=fps, options=CODEC_OPTIONS[codec])
                vs.width, vs.height = rgb.shape[1], rgb.shape[0]
                vs.pix_fmt = "yuv420p"
                if carry is not None:
                    carry.add_stream()
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts = n
            vf.time_base = 1 / fps
            for packet in vs.encode(vf):
                out.mux(packet)
            n += 1
        if vs is None:
            raise UserError("no frames to write")
        for packet in vs.encode(None):
            out.mux(packet)
        written = carry.copy() if carry is not None else None
    return {"frames": n, "fps": str(fps), "audio": written}


class _AudioCarry:
    """Carries the input's audio track into an output container: packets copied when the
    container takes the codec and the whole track is wanted, else decoded, trimmed to the span
    and re-encoded."""

    def __init__(self, out, kind: str, span: AudioSpan) -> None:
        self.out, self.kind, self.span = out, kind, span
        self.src = _av().open(span.path)
        self.ins = self.src.streams.audio[0] if self.src.streams.audio else None
        self.stream = None
        self.copying = False

    def add_stream(self) -> None:
        """Add the output's audio stream (before the first packet is written)."""
        if self.ins is None:
            return
        name = self.ins.codec_context.name
        whole = self.span.start == 0 and self.span.stop is None
        video_start = self._video_start()
        if whole and video_start == 0 and name in AUDIO_CODECS[self.kind]:
            self.stream = self.out.add_stream_from_template(self.ins)
            self.copying = True
            return
        encoder = AUDIO_ENCODERS[AUDIO_CODECS[self.kind][0]]
        rate = self.ins.codec_context.sample_rate or 48000
        if encoder == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        layout = self.ins.codec_context.layout.name if self.ins.codec_context.layout else "stereo"
        self.stream = self.out.add_stream(encoder, rate=rate, layout=layout)

    def _video_start(self) -> float:
        vs = self.src.streams.video[0] if self.src.streams.video else None
        if vs is None or vs.start_time is None:
            return 0.0
        return float(vs.start_time * vs.time_base)

    def copy(self) -> str | None:
        try:
            if self.stream is None:
                return None
            if self.copying:
                for packet in self.src.demux(self.ins):
                    if packet.dts is None:
                        continue
                    packet.stream = self.stream
                    self.out.mux(packet)
                return "copied"
            self._reencode()
            return f"re-encoded as {self.stream.codec_context.name}"
        finally:
            self.src.close()

    def _reencode(self) -> None:
        av = _av()
        t0 = self.span.start + self._video_start()
        t1 = None if self.span.stop is None else self.span.stop + self._video_start()
        written = 0
        for frame in self.src.decode(self.ins):
            if frame.pts is None:
                continue
            rate, n = frame.sample_rate, frame.samples
            t = float(frame.pts * frame.time_base)
            i0 = max(0, math.ceil((t0 - t) * rate - 1e-6))
            i1 = n if t1 is None else min(n, math.floor((t1 - t) * rate + 1e-6))
            if i1 <= i0:
                if t1 is not None and t >= t1:
                    break
                continue
            if (i0, i1) != (0, n):
                a = frame.to_ndarray()
                ch = 1 if frame.format.is_planar else len(frame.layout.channels)
                a = a[:, i0 * ch : i1 * ch] if ch > 1 else a[:, i0:i1]
                part = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(a), format=frame.format.name, layout=frame.layout.name
                )
                part.sample_rate = rate
                frame = part
            frame.pts = written
            frame.time_base = Fraction(1, rate)
            written += i1 - i0
            for packet in self.stream.encode(frame):
                self.out.mux(packet)
        for packet in self.stream.encode(None):
            self.out.mux(packet)


# ---------------------------------------------------------------- flow


def _grey(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    cv2 = _cv2()
    g = imageio.quantize(image, 8)
    g = cv2.cvtColor(g, cv2.COLOR_RGB2GRAY)
    if g.shape != hw:
        g = cv2.resize(g, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return g


def flow(a: np.ndarray, b: np.ndarray, max_side: int = FLOW_MAX_SIDE) -> np.ndarray:
    """DIS optical flow from frame a to frame b, (H, W, 2) float32 (dx, dy) in pixels of a:
    a(p) ≈ b(p + flow(p)). Computed at a long edge of at most `max_side`, then upsampled."""
    cv2 = _cv2()
    h, w = a.shape[:2]
    s = min(1.0, max_side / max(h, w))
    hw = (max(1, round(h * s)), max(1, round(w * s)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    f = dis.calc(_grey(a, hw), _grey(b, hw), None)
    if hw != (h, w):
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
        f[..., 0] *= w / hw[1]
        f[..., 1] *= h / hw[0]
    return f.astype(np.float32)


def warp(image: np.ndarray, f: np.ndarray, cubic: bool = True) -> np.ndarray:
    """image(p + f(p)) (edges repeated): with f the flow from frame t to frame t−1, frame t−1
    brought into frame t. Bicubic (clipped to the image's range) by default: a clip warps every
    frame from the last, and bilinear resampling blurs a little more each time; `cubic` False
    for flow fields."""
    cv2 = _cv2()
    h, w = f.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = xs + f[..., 0], ys + f[..., 1]
    src = np.ascontiguousarray(image, np.float32)
    mode = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    out = cv2.remap(src, mx, my, mode, borderMode=cv2.BORDER_REPLICATE).reshape(image.shape)
    return np.clip(out, src.min(), src.max()) if cubic else out


def reliability(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s weights c (H, W) in {0, 1} for frame t, from the forward flow (t−1 → t)
    and the backward flow (t → t−1): 0 at disocclusions, motion boundaries and pixels whose
    source lies outside frame t−1."""
    h, w = backward.shape[:2]
    fw = warp(forward, backward, cubic=False)  # the forward flow at each pixel's source
    both = np.sum((fw + backward) ** 2, -1)
    occluded = both > 0.01 * (np.sum(fw**2, -1) + np.sum(backward**2, -1)) + 0.5
    gy_u, gx_u = np.gradient(backward[..., 0])
    gy_v, gx_v = np.gradient(backward[..., 1])
    edge = gx_u**2 + gy_u**2 + gx_v**2 + gy_v**2 > 0.01 * np.sum(backward**2, -1) + 0.002
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = xs + backward[..., 0], ys + backward[..., 1]
    outside = (sx < 0) | (sx > w - 1) | (sy < 0) | (sy > h - 1)
    return (~(occluded | edge | outside)).astype(np.float32)


@dataclass
class Motion:
    """What frame t needs from frame t−1: the backward flow and its reliability."""

    backward: np.ndarray
    weights: np.ndarray


def motion(prev: np.ndarray, cur: np.ndarray, max_side: int = FLOW_MAX_SIDE) -> Motion:
    """Flows both ways between two input frames of the same size, and the reliability."""
    backward = flow(cur, prev, max_side)
    forward = flow(prev, cur, max_side)
    return Motion(backward, reliability(forward, backward))


def flicker(
    outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], max_side: int = FLOW_MAX_SIDE
) -> dict:
    """Mean |out_t − warp(out_{t−1})| over the reliable pixels of the input's flow, averaged
    over t ≥ 1, for the outputs and for the inputs themselves; `ratio` = output / input, so
    a clip that moves as much as its input scores 1 whatever its motion."""
    if len(outputs) != len(inputs) or len(inputs) < 2:
        raise ValueError("flicker needs two or more frames, as many outputs as inputs")
    out_e, in_e = [], []
    for t in range(1, len(inputs)):
        m = motion(inputs[t - 1], inputs[t], max_side)
        c = m.weights[..., None]
        n = max(float(c.sum()) * 3, 1.0)
        out_e.append(float(np.sum(c * np.abs(outputs[t] - warp(outputs[t - 1], m.backward))) / n))
        in_e.append(float(np.sum(c * np.abs(inputs[t] - warp(inputs[t - 1], m.backward))) / n))
    out_m, in_m = float(np.mean(out_e)), float(np.mean(in_e))
    return {"output": out_m, "input": in_m, "ratio": out_m / max(in_m, 1e-12)}


def pan_and_zoom(
    image: np.ndarray,
    hw: tuple[int, int],
    frames: int,
    pan: tuple[float, float] = (0.25, 0.1),
    zoom: float = 1.25,
) -> list[np.ndarray]:
    """A synthetic clip over a still: a window of the image's aspect `hw` that moves by `pan`
    (fractions of the image's width and height) and narrows by `zoom` over the clip, resampled
    by OpenCV (area filter). For demos, tests and benches: real texture, known smooth motion."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    out = []
    for t in range(frames):
        a = t / max(frames - 1, 1)
        scale = 0.8 / (1 + (zoom - 1) * a)  # the window's share of the image's shorter fit
        s = min(w / hw[1], h / hw[0]) * scale
        cw, ch = hw[1] * s, hw[0] * s
        cx = w * (0.5 - pan[0] / 2 + pan[0] * a)
        cy = h * (0.5 - pan[1] / 2 + pan[1] * a)
        x0 = float(np.clip(cx - cw / 2, 0, w - cw))
        y0 = float(np.clip(cy - ch / 2, 0, h - ch))
        m = np.array([[1 / s, 0, -x0 / s], [0, 1 / s, -y0 / s]], np.float32)
        frame = cv2.warpAffine(
            np.ascontiguousarray(image, np.float32), m, (hw[1], hw[0]),
            flags=cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
        out.append(np.clip(frame, 0.0, 1.0))
    return out
