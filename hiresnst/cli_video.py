"""`hiresnst video INPUT STYLE… -o OUTPUT`: stylise a clip with temporal consistency, resumably
(see `hiresnst.video_render`). The main CLI mounts `video_command` as `hiresnst video`."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from .config import RenderConfig, parse_layers
from .errors import UserError

D = RenderConfig()


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class VideoDisplay:
    """Progress on stderr: a bar over the clip's frames with its ETA, and the current frame's
    optimiser steps."""

    def __init__(self, enabled: bool = True) -> None:
        self._bar = RichProgress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._clip: int | None = None
        self._frame: int | None = None
        self._shown: tuple[int, int] | None = None  # (frame, level) of the step bar

    def __enter__(self) -> VideoDisplay:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.__exit__(exc_type, exc, tb)

    def update(self, p) -> None:
        eta = f"ETA {_hms(p.eta)}" if p.eta is not None else "ETA after the first frames"
        if self._clip is None:
            self._clip = self._bar.add_task("", total=p.frames, label="clip", info="")
        self._bar.update(self._clip, completed=p.done, info=eta)
        if p.step is None:
            return
        s = p.step
        label = f"frame {p.frame + 1}"
        if s.levels > 1:
            label += f" scale {s.level + 1}/{s.levels}"
        if self._frame is None:
            self._frame = self._bar.add_task("", total=s.steps, label=label, info="")
        if (p.frame, s.level) != self._shown:
            self._bar.reset(self._frame, total=s.steps, label=label, info="")
            self._shown = (p.frame, s.level)
        loss = "-" if s.loss != s.loss else f"loss {s.loss:.4g}"
        self._bar.update(self._frame, completed=s.step + s.step_fraction, info=loss)


def video_command(
    source: Path = typer.Argument(
        ..., help="Input clip: a video file (mp4, mov, webm, gif…) or a folder of numbered frames."
    ),
    styles: list[Path] = typer.Argument(..., help="One or more style images."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Output: .mp4, .mov (H.264), .webm (VP9), .gif, or a new folder for PNG frames.",
    ),
    frames: str | None = typer.Option(
        None, help="Input frames A:B (from A up to, not including, B; from 0), e.g. 0:48."
    ),
    fps: str | None = typer.Option(
        None,
        help="Output frame rate (frames dropped or repeated, duration kept); for a frames "
        "folder, its rate (default 24).",
    ),
    method: str = typer.Option(
        D.method, help="optimize (Gatys, per frame) or fast (Magenta network, flow blending)."
    ),
    temporal_weight: float = typer.Option(
        D.temporal_weight,
        help="optimize: weight of the loss tying tracked pixels to the warped previous frame "
        "(0 = off; frames still start from it).",
    ),
    temporal_blend: float = typer.Option(
        D.temporal_blend,
        help="fast: share of the warped previous frame in tracked pixels (0 = independent).",
    ),
    independent: bool = typer.Option(
        False, help="Render every frame on its own: no warp, no temporal term (for comparison)."
    ),
    flow_size: int = typer.Option(
        1024, help="Long edge in px at which optical flow is computed (then upsampled)."
    ),
    size: int = typer.Option(D.size, help="Long edge of the output frames in px."),
    width: int | None = typer.Option(None, help="Output width in px (with --height)."),
    height: int | None = typer.Option(None, help="Output height in px (with --width)."),
    steps: int = typer.Option(
        D.steps if isinstance(D.steps, int) else 200,
        help="Steps per frame (frame 0's coarser pyramid levels get more).",
    ),
    scales: int = typer.Option(D.scales, help="Pyramid levels of frame 0."),
    min_size: int | None = typer.Option(None, help="Long edge of frame 0's coarsest level."),
    weights: str = typer.Option(
        D.weights, help="auto (cached import), random (seeded, untrained), or a weights file."
    ),
    seed: int = typer.Option(D.seed, help="Seed for noise init and random weights."),
    optimizer: str = typer.Option(D.optimizer, help="adam or lbfgs."),
    learning_rate: float = typer.Option(D.learning_rate, help="Adam step size."),
    content_weight: float = typer.Option(D.content_weight, help="Weight of the content loss."),
    style_weight: float = typer.Option(D.style_weight, help="Weight of the style loss."),
    tv_weight: float = typer.Option(D.tv_weight, help="Weight of the total-variation loss."),
    init: str = typer.Option(
        D.init, help="Frame 0's start: auto, content, noise, fast, or an image file."
    ),
    style_strength: float = typer.Option(D.style_strength, help="fast: 0 = content, 1 = style."),
    content_layers: str | None = typer.Option(None, help="Content layers with weights."),
    style_layers: str | None = typer.Option(None, help="Style layers with weights."),
    style_loss: str = typer.Option(D.style_loss, help="gram, mrf or gram+mrf."),
    style_blend: str | None = typer.Option(None, help="Blend weights of the styles: 0.7,0.3."),
    style_scale: float = typer.Option(D.style_scale, help="Style size relative to the output."),
    pooling: str = typer.Option(D.pooling, help="avg or max pooling in VGG19."),
    preserve_colors: str | None = typer.Option(None, help="luminance or histogram."),
    tile: int | None = typer.Option(
        None, help="Tile core in px (0 = untiled; default: from device memory)."
    ),
    overlap: int | None = typer.Option(None, help="Tile halo in px (default: exact)."),
    tile_batch: int = typer.Option(D.tile_batch, help="Tiles processed together."),
    precision: str = typer.Option(D.precision, help="fp32 or bf16."),
    devices: int | None = typer.Option(None, help="Devices to spread tiles over (default: all)."),
    platform: str | None = typer.Option(None, help="cpu, gpu or tpu (default: JAX's choice)."),
    max_input_pixels: int = typer.Option(
        D.max_input_pixels, help="Refuse larger style images (decompression-bomb guard)."
    ),
    work_dir: Path | None = typer.Option(
        None, help="Finished frames and their manifest (default: .OUTPUT.frames beside OUTPUT)."
    ),
    keep_frames: bool = typer.Option(False, help="Keep the work folder after the output."),
    restart: bool = typer.Option(False, help="Discard finished frames and start over."),
    checkpoint_every: float = typer.Option(
        300.0, help="Seconds between checkpoints within a frame."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON line with the results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Stylise the clip SOURCE with STYLES into OUTPUT, frame by frame with optical flow.

    Running the same command again continues at the first frame not yet finished.
    """
    from . import sharding
    from .runtime import enable_compilation_cache
    from .video_render import VideoSettings, parse_fps, render_video

    config = RenderConfig(
        size=size,
        steps=steps,
        scales=scales,
        min_size=min_size,
        weights=weights,
        seed=seed,
        optimizer=optimizer,
        learning_rate=learning_rate,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        init=init,
        method=method,
        style_strength=style_strength,
        content_layers=(
            parse_layers(content_layers, "--content-layers") if content_layers else D.content_layers
        ),
        style_layers=(
            parse_layers(style_layers, "--style-layers") if style_layers else D.style_layers
        ),
        style_loss=style_loss,
        style_blend=_floats(style_blend, "--style-blend") if style_blend else None,
        style_scale=style_scale,
        pooling=pooling,
        preserve_colors=preserve_colors,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        precision=precision,
        devices=devices,
        width=width,
        height=height,
        max_input_pixels=max_input_pixels,
        state="device",
        temporal_weight=temporal_weight,
        temporal_blend=temporal_blend,
    )
    config.validate(len(styles))
    settings = VideoSettings(
        frames=frames, fps=parse_fps(fps), flow_size=flow_size, independent=independent
    )
    settings.validate()
    sharding.select_platform(platform)
    enable_compilation_cache()
    with VideoDisplay(enabled=not quiet) as display:
        record = render_video(
            source,
            styles,
            output,
            config,
            settings,
            work_dir=work_dir,
            restart=restart,
            keep_frames=keep_frames,
            checkpoint_every=checkpoint_every,
            progress=display.update,
        )
    record["output"] = str(output)
    if weights == "random" and method == "optimize":
        typer.echo(
            "note: rendered with untrained random VGG19 weights (--weights random)", err=True
        )
    if json_out:
        from .cli import json_line

        typer.echo(json_line(record))
    elif not quiet:
        resumed = f", {record['resumed_frames']} resumed" if record["resumed_frames"] else ""
        audio = f", audio {record['audio']}" if record["audio"] else ""
        typer.echo(
            f"wrote {output} ({record['frames']} frames at {record['fps']} fps, "
            f"{record['size'][0]}×{record['size'][1]}{resumed}{audio})",
            err=True,
        )


__all__ = ["VideoDisplay", "video_command"]
