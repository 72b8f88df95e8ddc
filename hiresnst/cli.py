"""`hiresnst` command line: a thin typer layer over `hiresnst.render` and the weights tools.

Errors in the user's input reach the terminal as one line on stderr with exit status 2; no
traceback, and no output file is written.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

import typer

try:  # typer ≥ 0.20 vendors click; older releases use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, UsageError

from .cli_options import json_line, setting_parameter, settings_from_options
from .config import MAX_SIZE, OutputOptions, settings_fields
from .errors import UserError
from .signals import Stopped, stop_signals

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Neural style transfer at print and gigapixel sizes.",
)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"hiresnst {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Neural style transfer at print and gigapixel sizes."""


#: The render command's options that are not render settings: (name, type, default, help).
CLI_OPTIONS: tuple[tuple[str, Any, Any, str], ...] = (
    (
        "print_size",
        str | None,
        None,
        "Print size, e.g. 60x40cm, 24x16in or 600x400mm (with --dpi).",
    ),
    ("bit_depth", int, 8, "Output bits per channel: 8, or 16 (PNG/TIFF)."),
    ("quality", int, 95, "JPEG quality, 1–100."),
    ("platform", str | None, None, "cpu, gpu or tpu (default: JAX's choice)."),
    ("coordinator", str | None, None, "HOST:PORT of process 0 (or $HIRESNST_COORDINATOR)."),
    ("num_processes", int | None, None, "Processes in a multi-host render."),
    ("process_id", int | None, None, "This process's index (0 writes the output)."),
    ("checkpoint_dir", Path | None, None, "Save the render state here; the same command resumes."),
    ("checkpoint_every", float, 300.0, "Seconds between checkpoints."),
    ("restart", bool, False, "Ignore existing checkpoints and start over."),
    ("dry_run", bool, False, "Print the plan (sizes, tiles, memory) and exit without rendering."),
    ("json_out", bool, False, "Print one JSON line with the results (strict JSON)."),
    ("quiet", bool, False, "No progress display."),
    (
        "log_every",
        int,
        50,
        "When stderr is not a terminal: a progress line every N steps of a level, at each "
        "level's end and at least every minute (0: only those).",
    ),
    (
        "save_every",
        int | None,
        None,
        "Write snapshots NAME.step-NNNNN.jpg (≤ 2048 px; N counts the whole render's steps) "
        "every N steps of a level and at each level's end.",
    ),
    (
        "serve",
        str | None,
        None,
        "[HOST:]PORT: serve a live page of the render (snapshot, loss curves, ETA); "
        "127.0.0.1 unless HOST is given.",
    ),
    (
        "serve_token",
        str | None,
        None,
        "Token the live page asks for (or $HIRESNST_SERVE_TOKEN); needed beyond 127.0.0.1.",
    ),
    (
        "zoom",
        str | None,
        None,
        "Also write a zoomable pyramid: dzi (NAME.dzi, NAME_files/, NAME.html viewer), "
        "tiff (NAME.pyramid.tif, tiled with SubIFD levels), or dzi,tiff.",
    ),
)
FLAGS = {"print_size": ["--print"], "json_out": ["--json"], "quiet": ["--quiet", "-q"]}
ENVVARS = {"serve_token": "HIRESNST_SERVE_TOKEN"}  # secrets that `ps` should not show


def _options() -> list[inspect.Parameter]:
    """The render command's parameters: its arguments, every render setting as an option
    (default, help and type from `config.py`), then the CLI's own options."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "content",
            kw,
            default=typer.Argument(..., help="Content image (PNG, JPEG or TIFF)."),
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
            default=typer.Option(..., "--output", "-o", help="Output file: .png, .jpg or .tif."),
            annotation=Path,
        ),
    ]
    params += [setting_parameter(f) for f in settings_fields() if f.metadata["cli"]]
    for name, kind, default, help_text in CLI_OPTIONS:
        flags = FLAGS.get(name, ["--" + name.replace("_", "-")])
        option = typer.Option(default, *flags, help=help_text, envvar=ENVVARS.get(name))
        params.append(inspect.Parameter(name, kw, default=option, annotation=kind))
    return params


def render(**kw: Any) -> None:
    """Render CONTENT in the style of STYLES into OUTPUT."""
    from . import job as jobs
    from . import sharding
    from .checkpoint import CheckpointOptions, check_every
    from .runtime import enable_compilation_cache

    if kw["print_size"] is not None:
        kw["width"], kw["height"] = _print_pixels(kw)
    config = settings_from_options(kw)
    config.validate(len(kw["styles"]))
    check_every(kw["checkpoint_every"])
    options = OutputOptions(bit_depth=kw["bit_depth"], quality=kw["quality"])
    from .watch import Watch, WatchOptions

    watching = WatchOptions.parse(
        kw["log_every"], kw["save_every"], kw["serve"], kw["serve_token"], kw["zoom"]
    )
    ckpt = None
    if kw["checkpoint_dir"] is not None:
        ckpt = CheckpointOptions(
            kw["checkpoint_dir"], every=kw["checkpoint_every"], restart=kw["restart"]
        )
    job = jobs.RenderJob(kw["content"], tuple(kw["styles"]), config, kw["output"], options, ckpt)
    jobs.check_job(job)
    sharding.select_platform(kw["platform"])
    multi = sharding.init_distributed(kw["coordinator"], kw["num_processes"], kw["process_id"])
    if kw["dry_run"]:
        from .render import dry_run

        plan = dry_run(job.content, job.styles, config)
        typer.echo(json_line(plan.as_json()) if kw["json_out"] else plan.table())
        return
    enable_compilation_cache()
    main_process = sharding.is_main_process()
    with Watch(watching, job.output, display=not kw["quiet"], enabled=main_process) as watch:
        result = jobs.run_job(job, progress=watch.update)
    if not main_process:
        return
    zoomed = watch.write_zoom(result.image, result.info, config.dpi)
    if zoomed:
        result.info["zoom"] = [str(p) for p in zoomed]
    if multi:
        result.info["processes"] = sharding.process_count()
    for note in result.notes:
        if not kw["quiet"] or note.startswith("rendered with untrained"):
            typer.echo(f"note: {note}", err=True)
    size = result.info["output_size"]
    if kw["json_out"]:
        typer.echo(json_line(result.info))
    elif not kw["quiet"]:
        typer.echo(f"wrote {job.output} ({size[0]}×{size[1]})", err=True)


render.__signature__ = inspect.Signature(_options())  # type: ignore[attr-defined]
app.command()(render)


def _print_pixels(kw: dict[str, Any]) -> tuple[int, int]:
    """--print SIZE at --dpi as (width, height) in pixels."""
    from . import printsize

    if kw["dpi"] is None:
        raise UserError("--print needs --dpi (e.g. --dpi 300)")
    if kw["width"] is not None or kw["height"] is not None:
        raise UserError("give --print or --width/--height, not both")
    width, height = printsize.print_pixels(*printsize.parse_print_size(kw["print_size"]), kw["dpi"])
    if max(width, height) > MAX_SIZE:
        raise UserError(
            f"--print {kw['print_size']} at {kw['dpi']:g} dpi is {width}×{height} px, beyond "
            f"the {MAX_SIZE} px limit; lower --dpi or the print size"
        )
    return width, height



def _add_subcommands() -> None:
    from .cli_series import series_command
    from .cli_video import video_command
    from .cli_weights import app as weights_app
    from .cli_zoom import zoom_command

    app.add_typer(weights_app, name="weights", help="Import, fetch and inspect VGG19 weights.")
    app.command("series")(series_command)
    app.command("video")(video_command)
    app.command("zoom")(zoom_command)


_add_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Run the app and return its exit status; user errors become one line and status 2.

    SIGTERM and Ctrl-C stop any phase (see `signals`): one line, status 143 or 130."""
    with stop_signals():
        try:
            return _main(argv)
        except Stopped as e:  # raised between `_main`'s handlers and here: still one line
            _error(str(e))
            return e.exit_status


def _error(text: str) -> None:
    """Print `error: text` as one line: control characters (a newline in a path) are escaped."""
    typer.echo("error: " + one_line(text), err=True)


def one_line(text: str) -> str:
    """`text` with control characters written as escapes, so a message stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _main(argv: list[str] | None) -> int:
    try:
        status = app(args=argv, standalone_mode=False, prog_name="hiresnst")
    except UserError as e:
        _error(str(e))
        return 2
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(e.format_message(), err=True)
            return 2
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        _error(f"{e.format_message().splitlines()[0]}{hint}")
        return 2
    except ClickException as e:
        _error(e.format_message().splitlines()[0])
        return 2
    except Stopped as e:  # Preempted says where the checkpoint is, or that none was saved
        _error(str(e))
        return e.exit_status
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted")
        return 130
    except Exception as e:  # a bug or an exhausted device, not bad input: still one line
        if os.environ.get("HIRESNST_DEBUG"):
            raise
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "Unable to initialize backend" in text:  # a platform asked for but not usable here
            _error(
                f"the requested JAX platform cannot start here ({text[:200]}); check --platform "
                "and JAX_PLATFORMS, or use --platform cpu"
            )
            return 2
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            _error(
                f"out of device memory ({text[:200]}); lower --tile or "
                "--tile-batch, or use --precision bf16"
            )
        else:
            _error(
                f"internal error: {type(e).__name__}: {text[:300]} "
                "(HIRESNST_DEBUG=1 shows the traceback; please report it)"
            )
        return 1
    return status if isinstance(status, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
