"""`hiresnst video INPUT STYLE… -o OUTPUT`: stylise a clip with temporal consistency, resumably
(see `hiresnst.video_render`). The main CLI mounts `video_command` as `hiresnst video`."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from types import TracebackType
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from .cli_options import json_line, setting_parameter, settings_from_options
from .config import settings_fields


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


#: Render settings a clip does not take: its frames stay on the device (the temporal loss has
#: no host-resident path), and a print resolution means nothing to a video.
NOT_FOR_VIDEO = ("state", "state_dir", "dpi", "device_memory")
#: Video settings that `render` does not show (config fields with cli=False).
VIDEO_SETTINGS = ("temporal_weight", "temporal_blend")
#: The command's own options: (name, type, default, help).
VIDEO_OPTIONS: tuple[tuple[str, Any, Any, str], ...] = (
    ("frames", str | None, None, "Input frames A:B (from A up to, not including, B), e.g. 0:48."),
    (
        "fps",
        str | None,
        None,
        "Output frame rate (frames dropped or repeated, duration kept); for a frames folder, "
        "its rate (default 24).",
    ),
    ("independent", bool, False, "Every frame on its own: no warp, no temporal term."),
    ("flow_size", int, 1024, "Long edge in px at which optical flow is computed."),
    ("platform", str | None, None, "cpu, gpu or tpu (default: JAX's choice)."),
    ("work_dir", Path | None, None, "Finished frames and manifest (default .OUTPUT.frames)."),
    ("keep_frames", bool, False, "Keep the work folder after writing the output."),
    ("restart", bool, False, "Discard finished frames and start over."),
    ("checkpoint_every", float, 300.0, "Seconds between checkpoints within a frame."),
    ("json_out", bool, False, "Print one JSON line with the results (strict JSON)."),
    ("quiet", bool, False, "No progress display."),
)
FLAGS = {"json_out": ["--json"], "quiet": ["--quiet", "-q"]}


def _parameters() -> list[inspect.Parameter]:
    """The command's parameters: the clip, styles and output, every render setting that applies
    to a clip (as `hiresnst render` shows it, from `config.py`), then the video options."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "source",
            kw,
            default=typer.Argument(
                ..., help="Input clip: a video file (mp4, mov, webm, gif…) or a frames folder."
            ),
            annotation=Path,
        ),
        inspect.Parameter(
            "styles",
            kw,
            default=typer.Argument(..., help="One or more style images."),
            annotation=list[Path],
        ),
        inspect.Parameter(
            "output",
            kw,
            default=typer.Option(
                ...,
                "--output",
                "-o",
                help="Output: .mp4, .mov (H.264), .webm (VP9), .gif, or a new folder of PNGs.",
            ),  # fmt: skip
            annotation=Path,
        ),
    ]
    for name, kind, default, help_text in VIDEO_OPTIONS:
        flags = FLAGS.get(name, ["--" + name.replace("_", "-")])
        option = typer.Option(default, *flags, help=help_text)
        params.append(inspect.Parameter(name, kw, default=option, annotation=kind))
    params += [
        setting_parameter(f)
        for f in settings_fields()
        if (f.metadata["cli"] or f.name in VIDEO_SETTINGS) and f.name not in NOT_FOR_VIDEO
    ]
    return params


def video_command(**kw: Any) -> None:
    """Stylise the clip SOURCE with STYLES into OUTPUT, frame by frame with optical flow.

    Frame 0 is a normal render; each later frame starts from the previous stylised frame warped
    into it, with a temporal loss on the pixels the flow tracks reliably. Running the same
    command again continues at the first frame not yet finished.
    """
    from . import sharding
    from .runtime import enable_compilation_cache
    from .video_render import VideoSettings, parse_fps, render_video

    config = dataclasses.replace(settings_from_options(kw), state="device")
    config.validate(len(kw["styles"]))
    settings = VideoSettings(
        frames=kw["frames"],
        fps=parse_fps(kw["fps"]),
        flow_size=kw["flow_size"],
        independent=kw["independent"],
    )
    settings.validate()
    sharding.select_platform(kw["platform"])
    enable_compilation_cache()
    with VideoDisplay(enabled=not kw["quiet"]) as display:
        record = render_video(
            kw["source"],
            kw["styles"],
            kw["output"],
            config,
            settings,
            work_dir=kw["work_dir"],
            restart=kw["restart"],
            keep_frames=kw["keep_frames"],
            checkpoint_every=kw["checkpoint_every"],
            progress=display.update,
        )
    record["output"] = str(kw["output"])
    if config.weights == "random" and config.method == "optimize":
        typer.echo(
            "note: rendered with untrained random VGG19 weights (--weights random)", err=True
        )
    if kw["json_out"]:
        typer.echo(json_line(record))
    elif not kw["quiet"]:
        resumed = f", {record['resumed_frames']} resumed" if record["resumed_frames"] else ""
        audio = f", audio {record['audio']}" if record["audio"] else ""
        typer.echo(
            f"wrote {kw['output']} ({record['frames']} frames at {record['fps']} fps, "
            f"{record['size'][0]}×{record['size'][1]}{resumed}{audio})",
            err=True,
        )


video_command.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]

__all__ = ["VideoDisplay", "video_command"]
