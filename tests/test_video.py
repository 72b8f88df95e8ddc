"""Video: flow and warping against a known shift, the temporal loss against NumPy and tiled
against untiled, flicker with and without the temporal term, resume, the CLI's outputs and its
errors. Clips are made here: a smooth texture translating by SHIFT px a frame (≤ 64 px)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NARROW, sample_image

from hiresnst import imageio, video
from hiresnst.cli import main
from hiresnst.config import RenderConfig
from hiresnst.errors import Preempted, UserError
from hiresnst.model import random_params
from hiresnst.objective import (
    LossSpec,
    content_target,
    make_loss_fn,
    make_plan,
    style_target,
    untiled_loss,
)
from hiresnst.video_render import VideoSettings, render_video

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

SHIFT = (2, 1)  # (dx, dy) px a frame
HW = (48, 64)
FIXTURE_WEIGHTS = os.path.join(os.path.dirname(__file__), "fixtures", "vgg19_narrow.pth")
#: Random narrow VGG19 (the fixture file's values are not a trained network's and saturate the
#: losses, which leaves nothing to compare flicker on).
BASE = RenderConfig(
    size=64, steps=20, weights="random", widths=NARROW, seed=3, tile=0, init="content"
)


def texture(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    big = cv2.GaussianBlur(rng.random((*hw, 3)).astype(np.float32), (0, 0), 1.5)
    return (big - big.min()) / (big.max() - big.min())


def shifting_clip(rng: np.random.Generator, n: int = 5) -> list[np.ndarray]:
    """Frame t is the window at (4 + t·dy, 4 + t·dx): frame t(p) = frame t−1(p + SHIFT)."""
    big = texture(rng, (HW[0] + 8 + n * SHIFT[1], HW[1] + 8 + n * SHIFT[0]))
    dx, dy = SHIFT
    return [big[4 + t * dy : 4 + t * dy + HW[0], 4 + t * dx : 4 + t * dx + HW[1]] for t in range(n)]


def known_flow() -> np.ndarray:
    f = np.zeros((*HW, 2), np.float32)
    f[..., 0], f[..., 1] = SHIFT
    return f


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- flow and warp


def test_warp_with_the_known_flow_reproduces_the_shift(rng):
    clip = shifting_clip(rng, 3)
    dx, dy = SHIFT
    for t in (1, 2):
        warped = video.warp(clip[t - 1], known_flow())
        # every pixel whose source lies inside frame t−1 is reproduced exactly (integer shift)
        np.testing.assert_allclose(warped[:-dy, :-dx], clip[t][:-dy, :-dx], atol=1e-6)
        assert np.abs(warped - clip[t]).max() > 0.01  # the entering edge is not: a real check


def test_estimated_flow_is_close_to_the_shift_and_reliability_marks_the_entering_edge(rng):
    clip = shifting_clip(rng, 2)
    m = video.motion(clip[0], clip[1])
    inner = m.backward[6:-6, 6:-6]
    assert np.abs(np.median(inner.reshape(-1, 2), 0) - SHIFT).max() < 0.1
    assert np.abs(inner - known_flow()[6:-6, 6:-6]).mean() < 0.25
    # forward flow is the opposite motion
    fwd = video.flow(clip[0], clip[1])
    assert np.abs(np.median(fwd[6:-6, 6:-6].reshape(-1, 2), 0) + SHIFT).max() < 0.1
    # pixels entering at the right and bottom edges have no source in frame 0
    assert m.weights[:, -1].mean() == 0 and m.weights[-1, :].mean() == 0
    assert m.weights[6:-6, 6:-6].mean() > 0.95
    # bounded resolution: flow at 32 px then upsampled still finds the shift in full-size px
    small = video.flow(clip[1], clip[0], max_side=32)
    assert small.shape == (*HW, 2)
    assert np.abs(np.median(small[8:-8, 8:-8].reshape(-1, 2), 0) - SHIFT).max() < 0.3


def test_reliability_flags_a_disocclusion():
    """An object moving over a still background: the background it uncovers is unreliable."""
    bg = texture(np.random.default_rng(5), HW)
    obj = texture(np.random.default_rng(6), (16, 16))
    frames = []
    for x in (16, 22):
        f = bg.copy()
        f[16:32, x : x + 16] = obj
        frames.append(f)
    m = video.motion(frames[0], frames[1])
    assert m.weights[18:30, 17:21].mean() < 0.5  # uncovered behind the object
    assert m.weights[4:12, 4:60].mean() > 0.9  # still background above it


# ---------------------------------------------------------------- temporal loss


HW_T = (37, 45)  # odd sizes: floor pooling drops rows, and tiles overhang the image


@pytest.fixture(scope="module")
def temporal_case():
    """A random image, warp target, reliability and targets for the temporal-loss checks."""
    rng = np.random.default_rng(11)
    spec = LossSpec(widths=NARROW, style_weight=1e3, tv_weight=1.0, temporal_weight=250.0)
    params = random_params(7, NARROW)
    x, warped, content = (jnp.asarray(rng.random((*HW_T, 3)), jnp.float32) for _ in range(3))
    c = jnp.asarray(rng.random(HW_T) > 0.3, jnp.float32)
    style_t = style_target(params, spec, jnp.asarray(rng.random((32, 32, 3)), jnp.float32), None)
    targets = {
        "style": style_t,
        "content": content_target(params, spec, content, None),
        "temporal": (warped, c),
    }
    xn, wn, cn = (np.asarray(a, np.float64) for a in (x, warped, c))
    ref = 250.0 * np.sum(cn[..., None] * (xn - wn) ** 2) / (HW_T[0] * HW_T[1] * 3)
    ref_grad = 2 * 250.0 * cn[..., None] * (xn - wn) / (HW_T[0] * HW_T[1] * 3)
    return spec, params, x, content, targets, ref, ref_grad


def test_temporal_loss_and_gradient_equal_the_numpy_reference(temporal_case):
    spec, params, x, _, targets, ref, ref_grad = temporal_case
    terms = jax.jit(lambda y: untiled_loss(params, y, targets, spec)[1])(x)
    assert abs(float(terms["temporal"]) - ref) <= 1e-5 * ref
    # the term's gradient, alone (the other weights 0): 2·w·c·(x − warped)/(H·W·3)
    alone = dataclasses.replace(spec, content_weight=0.0, style_weight=0.0, tv_weight=0.0)
    grad = jax.jit(jax.grad(lambda y: untiled_loss(params, y, targets, alone)[0]))(x)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-5, atol=1e-12)
    # off (weight 0): no term, and no temporal targets needed
    off = dataclasses.replace(spec, temporal_weight=0.0)
    assert "temporal" not in untiled_loss(params, x, {**targets, "temporal": None}, off)[1]


def test_tiled_temporal_term_equals_untiled(temporal_case):
    spec, params, x, content, targets, ref, _ = temporal_case
    plan = make_plan(*HW_T, spec, 16, None, 2)  # 3×3 tiles in batches of 2: one dead tile
    assert plan.grid.count == 9
    tiled_t = {**targets, "content": content_target(params, spec, content, plan)}

    def run(p, t):
        fn = make_loss_fn(spec, p)
        return jax.jit(jax.value_and_grad(lambda y: fn(params, y, t), has_aux=True))(x)

    (loss, terms), grad = run(None, targets)
    (t_loss, t_terms), t_grad = run(plan, tiled_t)
    assert abs(float(t_terms["temporal"]) - ref) <= 1e-5 * ref
    assert abs(float(t_loss) - float(loss)) <= 1e-5 * abs(float(loss))
    assert float(jnp.abs(t_grad - grad).max()) <= 1e-4 * float(jnp.abs(grad).max())


# ---------------------------------------------------------------- flicker


def _frames_dir(tmp_path, frames, name="clip"):
    d = tmp_path / name
    video.write_video(d, frames, Fraction(12))
    return d


def _render_frames(tmp_path, clip_dir, style, config, settings, name):
    work = tmp_path / f"work-{name}"
    rec = render_video(
        clip_dir, [style], tmp_path / f"{name}.gif", config, settings,
        work_dir=work, keep_frames=True,
    )  # fmt: skip
    n = len(json.loads((work / "manifest.json").read_text())["frames"])
    return rec, [imageio.read_image(work / f"frame_{j:06d}.png") for j in range(n)]


def _flicker_pair(tmp_path, frames, style, config):
    clip_dir = _frames_dir(tmp_path, frames)
    _, ind = _render_frames(
        tmp_path, clip_dir, style, config, VideoSettings(independent=True), "independent"
    )
    _, tmp = _render_frames(tmp_path, clip_dir, style, config, VideoSettings(), "temporal")
    return video.flicker(ind, frames), video.flicker(tmp, frames)


def test_temporal_term_flickers_at_least_2x_less_than_independent_frames(tmp_path, rng):
    frames = shifting_clip(rng, 5)
    style = rng.random((48, 48, 3)).astype(np.float32)
    ind, tmp = _flicker_pair(tmp_path, frames, style, BASE)
    assert tmp["ratio"] * 2 <= ind["ratio"], (ind, tmp)


def test_pan_and_zoom_over_tubingen_flickers_at_least_2x_less(tmp_path, rng):
    image = imageio.read_image(sample_image("tubingen.jpg"))
    frames = video.pan_and_zoom(image, HW, 5, pan=(0.1, 0.05), zoom=1.1)
    style = imageio.read_image(sample_image("starry_night.jpg"))
    ind, tmp = _flicker_pair(tmp_path, frames, style, BASE)
    assert tmp["ratio"] * 2 <= ind["ratio"], (ind, tmp)


# ---------------------------------------------------------------- resume, outputs, the CLI


def test_sigterm_mid_frame_then_rerun_equals_an_uninterrupted_run(tmp_path, rng):
    frames = shifting_clip(rng, 4)
    clip_dir = _frames_dir(tmp_path, frames)
    style = rng.random((48, 48, 3)).astype(np.float32)
    config = RenderConfig(**{**BASE.__dict__, "steps": 6})
    _, whole = _render_frames(tmp_path, clip_dir, style, config, VideoSettings(), "whole")
    work = tmp_path / "work-cut"
    out = tmp_path / "cut.mp4"

    def stop_in_frame_2(p):
        if p.frame == 2 and p.step is not None and p.step.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    twelve = VideoSettings(fps=Fraction(12))  # a frames folder's rate (default 24)
    with pytest.raises(Preempted):
        render_video(
            clip_dir, [style], out, config, twelve, work_dir=work, progress=stop_in_frame_2
        )
    assert not out.exists() and not list(tmp_path.glob(".cut.mp4*"))
    manifest = json.loads((work / "manifest.json").read_text())
    assert [f["index"] for f in manifest["frames"]] == [0, 1]
    assert (work / "frame-checkpoint").is_dir()  # frame 2's state at step 3
    seen = []
    rec = render_video(
        clip_dir,
        [style],
        out,
        config,
        twelve,
        work_dir=work,
        keep_frames=True,
        progress=seen.append,
    )
    assert rec["resumed_frames"] == 2 and min(p.frame for p in seen) == 2
    for j, ref in enumerate(whole):
        got = imageio.read_image(work / f"frame_{j:06d}.png")
        assert np.abs(got - ref).max() <= 1 / 255 + 1e-6, j
    info = video.probe(out)
    assert (info.frames, info.fps, (info.height, info.width)) == (4, Fraction(12), HW)
    # other settings in the same work folder are refused, not mixed in
    other = RenderConfig(**{**config.__dict__, "temporal_weight": 1.0})
    with pytest.raises(UserError, match="other settings.*temporal_weight") as e:
        render_video(clip_dir, [style], out, other, twelve, work_dir=work)
    one_line(e)


def _mp4_with_audio(path, frames, fps=12, rate=16000):
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = HW[1], HW[0], "yuv420p"
        aus = c.add_stream("aac", rate=rate, layout="mono")
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(imageio.quantize(f, 8), format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        n = int(rate * len(frames) / fps)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for s in range(0, n, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, s : s + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)


def _audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return sum(f.samples for f in c.decode(s)) / s.codec_context.sample_rate


def test_cli_mp4_with_audio_keeps_rate_and_sound_and_plays(tmp_path, rng, capsys):
    frames = shifting_clip(rng, 6)
    src = tmp_path / "in.mp4"
    _mp4_with_audio(src, frames)
    style = tmp_path / "style.png"
    imageio.write_image(style, rng.random((32, 32, 3)))
    base = ["video", str(src), str(style), "--size", "64", "--steps", "2", "--weights",
            FIXTURE_WEIGHTS, "--init", "content", "-q", "--json"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "all.mp4")]) == 0
    rec = json.loads(capsys.readouterr().out)
    info = video.probe(tmp_path / "all.mp4")
    assert (info.frames, info.fps, info.audio) == (6, Fraction(12), "aac")
    assert rec["audio"] == "copied" and rec["flicker"]["input"] > 0
    assert abs(_audio_seconds(tmp_path / "all.mp4") - 6 / 12) < 0.1
    assert not list(tmp_path.glob(".all.mp4*"))  # work folder removed, no temporary left
    # a span of frames: the sound is cut to the same span; WebM takes it as Opus
    assert main([*base, "--frames", "2:6", "-o", str(tmp_path / "part.webm")]) == 0
    rec = json.loads(capsys.readouterr().out)
    info = video.probe(tmp_path / "part.webm")
    assert (info.frames, info.fps, info.audio) == (4, Fraction(12), "opus")
    assert rec["audio"].startswith("re-encoded") and rec["input_frames"] == [2, 6]
    assert abs(_audio_seconds(tmp_path / "part.webm") - 4 / 12) < 0.1
    # --fps halves the frames and keeps the duration
    assert main([*base, "--fps", "6", "-o", str(tmp_path / "half.mp4")]) == 0
    info = video.probe(tmp_path / "half.mp4")
    assert (info.frames, info.fps) == (3, Fraction(6))


def test_fast_method_blends_along_the_flow(tmp_path, rng):
    from hiresnst.fast import port
    from hiresnst.fast import predict as P
    from hiresnst.fast import transform as T

    params = {"predict": P.random_predict_params(1, scale=0.125)}
    params["transform"] = T.random_transform_params(2, residual_blocks=1)
    port.save_magenta(params, {"source": "test"})
    frames = shifting_clip(rng, 3)
    clip_dir = _frames_dir(tmp_path, frames)
    style = rng.random((48, 48, 3)).astype(np.float32)
    config = RenderConfig(size=64, method="fast", tile=0, temporal_blend=0.8)
    _, ind = _render_frames(tmp_path, clip_dir, style, config, VideoSettings(independent=True), "i")
    _, blend = _render_frames(tmp_path, clip_dir, style, config, VideoSettings(), "b")
    assert len(blend) == 3
    assert video.flicker(blend, frames)["output"] < video.flicker(ind, frames)["output"]


def _run_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, rng, capsys):
    style = tmp_path / "style.png"
    imageio.write_image(style, rng.random((32, 32, 3)))
    out = tmp_path / "out.mp4"
    args = [str(style), "-o", str(out), "--weights", FIXTURE_WEIGHTS, "--steps", "1", "-q"]
    (tmp_path / "notes.mp4").write_text("not a video at all")
    assert "cannot read as a video" in _run_error(
        ["video", str(tmp_path / "notes.mp4"), *args], capsys
    )
    good = tmp_path / "good.mp4"
    video.write_video(good, shifting_clip(rng, 3), Fraction(12))
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:300])  # header without its frames
    assert "cut.mp4" in _run_error(["video", str(tmp_path / "cut.mp4"), *args], capsys)
    (tmp_path / "empty").mkdir()
    assert "no numbered frames" in _run_error(["video", str(tmp_path / "empty"), *args], capsys)
    gaps = _frames_dir(tmp_path, shifting_clip(rng, 3), "gaps")
    (gaps / "frame_000001.png").unlink()
    assert "frame number 1 is missing" in _run_error(["video", str(gaps), *args], capsys)
    assert "has 3 frames" in _run_error(["video", str(good), "--frames", "5:9", *args], capsys)
    assert "A:B" in _run_error(["video", str(good), "--frames", "x", *args], capsys)
    bad_out = ["video", str(good), str(style), "-o", str(tmp_path / "out.avi"), "-q"]
    assert "unknown video format" in _run_error(bad_out, capsys)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["style.png", "notes.mp4", "good.mp4", "cut.mp4", "empty", "gaps"]
    )
