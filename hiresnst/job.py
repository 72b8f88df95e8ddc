"""One render to files, the same way for the CLI and the series runner: checks before any work,
the render (resumable from its checkpoint directory), then the image written atomically with
its settings in the metadata, a preview beside large outputs, and notes for the user."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import imageio
from .checkpoint import CheckpointOptions
from .config import PREVIEW_ABOVE, OutputOptions, RenderConfig
from .events import Progress


@dataclass(frozen=True)
class RenderJob:
    """A render and where its results go."""

    content: Path
    styles: tuple[Path, ...]
    config: RenderConfig
    output: Path
    options: OutputOptions = OutputOptions()
    checkpoint: CheckpointOptions | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)  # added to the file's metadata

    def inputs(self) -> list[Path]:
        """Every file the render reads (content, styles, masks, an init image)."""
        return [p for _, p in self.labelled_inputs()]

    def labelled_inputs(self) -> list[tuple[str, Path]]:
        """(what it is, path) of every file the render reads, for messages."""
        files = [("content", self.content)]
        files += [(f"style {i}", s) for i, s in enumerate(self.styles)]
        files += [(f"--style-mask {i}", Path(p)) for i, p in self.config.style_masks]
        if self.config.content_mask:
            files.append(("--content-mask", Path(self.config.content_mask)))
        if Path(self.config.init).suffix:
            files.append(("--init", Path(self.config.init)))
        return files


@dataclass
class JobResult:
    image: Any
    info: dict[str, Any]
    notes: list[str]


def check_job(job: RenderJob) -> None:
    """Everything about the job's files that can fail, checked before any work: the output can
    be written, and neither it nor a state or checkpoint directory is one of the inputs."""
    config, options = job.config, job.options
    options.validate(job.output)
    size = (config.width, config.height) if config.width and config.height else None
    imageio.check_output_path(
        job.output, size=size, bit_depth=options.bit_depth, dpi=config.dpi, quality=options.quality
    )
    written: list[tuple[str, Path | None]] = [("the output", job.output)]
    written.append(("--state-dir", Path(config.state_dir) if config.state_dir else None))
    written.append(("--checkpoint-dir", job.checkpoint.directory if job.checkpoint else None))
    imageio.refuse_overwriting_inputs(written, job.labelled_inputs())
    for flag, directory in written[1:]:
        if directory is not None:
            imageio.check_directory(directory, flag)


def run_job(job: RenderJob, progress: Callable[[Progress], None] | None = None) -> JobResult:
    """Render `job` and write its output; returns the image, the record and the notes."""
    from .render import render_with_info
    from .sharding import is_main_process

    check_job(job)
    result = render_with_info(
        job.content, job.styles, job.config, progress=progress, checkpoint=job.checkpoint
    )
    info = result.info
    info["inputs"] = {"content": str(job.content), "styles": [str(s) for s in job.styles]}
    info["bit_depth"] = job.options.bit_depth
    info.update(job.metadata)
    notes = []
    if info["weights"].get("kind") == "random":
        notes.append(
            "rendered with untrained random VGG19 weights (--weights random); "
            "this is recorded in the output's metadata"
        )
    if "resumed_from" in info:
        notes.append(f"resumed from {info['resumed_from']}")
    if not is_main_process():
        return JobResult(result.image, info, notes)
    options = job.options
    imageio.write_image(
        job.output,
        result.image,
        metadata=json_safe(info),  # strict JSON in the file too: a NaN loss is null
        dpi=job.config.dpi,
        bit_depth=options.bit_depth,
        quality=options.quality,
    )
    if options.preview and max(result.image.shape[:2]) > PREVIEW_ABOVE:
        preview = imageio.preview_path(job.output)
        if any(imageio.same_path(preview, p) for p in job.inputs()):
            notes.append(f"no preview written: {preview} is one of the inputs")
        else:
            imageio.write_preview(job.output, result.image)
    info["output"] = str(job.output)
    return JobResult(result.image, info, notes)


def json_safe(value: Any) -> Any:
    """A copy that strict JSON can hold: non-finite floats (a diverged loss) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
