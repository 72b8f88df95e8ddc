"""`hiresnst` command line: a thin typer layer over `hiresnst.render` and the weights tools.

Errors in the user's input reach the terminal as one line on stderr with exit status 2; no
traceback, and no output file is written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

try:  # typer ≥ 0.20 vendors click; older releases use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, UsageError

from .checkpoint import Preempted
from .config import MAX_SIZE, RenderConfig, parse_layers
from .errors import UserError
from .masks import parse_style_mask

D = RenderConfig()  # the CLI's defaults are the API's
PREVIEW_ABOVE = 4096  # outputs with a longer edge get a *.preview.jpg beside them

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Neural style transfer at print and gigapixel sizes.",
)


def _parse_steps(text: str) -> int | tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--steps must be a number or a comma list like 400,200,100; got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {text!r}") from None


@app.command()
def render(
    content: Path = typer.Argument(..., help="Content image (PNG, JPEG or TIFF)."),
    styles: list[Path] = typer.Argument(..., help="One or more style images."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file: .png, .jpg or .tif."),
    size: int = typer.Option(D.size, help="Long edge of the output in pixels."),
    steps: str = typer.Option(
        str(D.steps),
        help="Steps at the final level (coarser levels get more), or one per level: 400,200.",
    ),
    scales: int = typer.Option(D.scales, help="Pyramid levels, coarse to fine."),
    min_size: int | None = typer.Option(
        None, help="Long edge of the coarsest level (default: octaves below --size, 64–512 px)."
    ),
    weights: str = typer.Option(
        D.weights, help="auto (cached import), random (seeded, untrained), or a weights file."
    ),
    seed: int = typer.Option(D.seed, help="Seed for noise init and random weights."),
    optimizer: str = typer.Option(D.optimizer, help="adam or lbfgs."),
    learning_rate: float = typer.Option(D.learning_rate, help="Adam step size (image in [0, 1])."),
    warmup: int = typer.Option(
        D.warmup,
        help="Adam steps over which the step size ramps up at each level after the first "
        "(a fresh Adam moves every pixel by the full step size at first); 0 = none.",
    ),
    content_weight: float = typer.Option(D.content_weight, help="Weight of the content loss."),
    style_weight: float = typer.Option(D.style_weight, help="Weight of the style loss."),
    tv_weight: float = typer.Option(D.tv_weight, help="Weight of the total-variation loss."),
    init: str = typer.Option(
        D.init,
        help="auto (fast if the Magenta networks are imported, else content), content, noise, "
        "fast, or an image file.",
    ),
    method: str = typer.Option(
        D.method, help="optimize (Gatys) or fast (one feed-forward pass, Magenta networks)."
    ),
    style_strength: float = typer.Option(
        D.style_strength, help="fast: 0 = the content's own style vector, 1 = the style's."
    ),
    content_layers: str | None = typer.Option(
        None, help="Content layers with weights: conv4_2 (default) or conv3_1:0.5,conv4_2:1."
    ),
    style_layers: str | None = typer.Option(
        None, help="Style layers with weights (default conv1_1…conv5_1 at 0.2 each)."
    ),
    pooling: str = typer.Option(D.pooling, help="avg or max pooling in VGG19."),
    style_loss: str = typer.Option(
        D.style_loss, help="gram (Gatys), mrf (neural patches, Li & Wand) or gram+mrf."
    ),
    mrf_weight: float | None = typer.Option(
        None, help="Weight of the MRF (patch) loss (default 0.5 for mrf, 3e4 for gram+mrf)."
    ),
    mrf_layers: str | None = typer.Option(
        None, help="MRF layers with weights (default conv3_1:0.5,conv4_1:0.5)."
    ),
    mrf_patches: int = typer.Option(
        D.mrf_patches, help="Style patches per MRF layer (a lattice over the style)."
    ),
    style_mask: list[str] | None = typer.Option(
        None,
        help="INDEX:MASK.png: style INDEX (from 0) only where the mask is white; repeatable.",
    ),
    content_mask: Path | None = typer.Option(
        None, help="Mask over the content: white keeps the content, black frees it."
    ),
    style_blend: str | None = typer.Option(None, help="Blend weights of the styles: 0.7,0.3."),
    style_scale: float = typer.Option(
        D.style_scale, help="Style image size relative to the output."
    ),
    tile: int | None = typer.Option(
        None, help="Tile core in px (0 = untiled; default: chosen from device memory)."
    ),
    overlap: int | None = typer.Option(
        None, help="Tile halo in px (default: the exact halo of the deepest layer, 80 px)."
    ),
    tile_batch: int = typer.Option(D.tile_batch, help="Tiles processed together in one batch."),
    precision: str = typer.Option(D.precision, help="fp32 or bf16 (convolutions; sums in fp32)."),
    width: int | None = typer.Option(
        None, help="Output width in px (with --height; overrides --size)."
    ),
    height: int | None = typer.Option(None, help="Output height in px (with --width)."),
    print_size: str | None = typer.Option(
        None, "--print", help="Print size, e.g. 60x40cm, 24x16in or 600x400mm (with --dpi)."
    ),
    dpi: float | None = typer.Option(
        None, help="Print resolution: sizes --print and is written to the file."
    ),
    fit: str = typer.Option(
        D.fit, help="How the content meets another aspect: crop or pad (white)."
    ),
    bit_depth: int = typer.Option(8, help="Output bits per channel: 8, or 16 (PNG/TIFF)."),
    preserve_colors: str | None = typer.Option(
        None, help="luminance (keep the content's colours) or histogram (match the style's first)."
    ),
    max_input_pixels: int = typer.Option(
        D.max_input_pixels, help="Refuse larger inputs (decompression-bomb guard); raise knowingly."
    ),
    devices: int | None = typer.Option(None, help="Devices to spread tiles over (default: all)."),
    platform: str | None = typer.Option(None, help="cpu, gpu or tpu (default: JAX's choice)."),
    coordinator: str | None = typer.Option(
        None, help="HOST:PORT of process 0 for a multi-host render (or $HIRESNST_COORDINATOR)."
    ),
    num_processes: int | None = typer.Option(None, help="Processes in a multi-host render."),
    process_id: int | None = typer.Option(None, help="This process's index (0 writes the output)."),
    state: str = typer.Option(
        D.state, help="Where the image and optimiser state live: auto, device, or host (RAM)."
    ),
    state_dir: Path | None = typer.Option(
        None, help="With host state: memory-map it in files here (for machines with less RAM)."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, help="Save the render state here; running the same command again resumes."
    ),
    checkpoint_every: float = typer.Option(300.0, help="Seconds between checkpoints."),
    restart: bool = typer.Option(False, help="Ignore existing checkpoints and start over."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON line with the results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Render CONTENT in the style of STYLES into OUTPUT."""
    from . import imageio, printsize, sharding
    from .checkpoint import CheckpointOptions
    from .render import render_with_info
    from .runtime import enable_compilation_cache

    if print_size is not None:
        if dpi is None:
            raise UserError("--print needs --dpi (e.g. --dpi 300)")
        if width is not None or height is not None:
            raise UserError("give --print or --width/--height, not both")
        width, height = printsize.print_pixels(*printsize.parse_print_size(print_size), dpi)
        if max(width, height) > MAX_SIZE:
            raise UserError(
                f"--print {print_size} at {dpi:g} dpi is {width}×{height} px, beyond the "
                f"{MAX_SIZE} px limit; lower --dpi or the print size"
            )
    if bit_depth not in (8, 16):
        raise UserError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    out_size = (width, height) if width and height else None
    imageio.check_output_path(output, size=out_size, bit_depth=bit_depth, dpi=dpi)
    config = RenderConfig(
        size=size,
        steps=_parse_steps(steps),
        scales=scales,
        min_size=min_size,
        weights=weights,
        seed=seed,
        optimizer=optimizer,
        learning_rate=learning_rate,
        warmup=warmup,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=tv_weight,
        init=init,
        method=method,
        style_strength=style_strength,
        pooling=pooling,
        style_loss=style_loss,
        mrf_weight=mrf_weight,
        mrf_layers=parse_layers(mrf_layers, "--mrf-layers") if mrf_layers else D.mrf_layers,
        mrf_patches=mrf_patches,
        style_masks=tuple(parse_style_mask(t) for t in style_mask or ()),
        content_mask=str(content_mask) if content_mask else None,
        content_layers=(
            parse_layers(content_layers, "--content-layers") if content_layers else D.content_layers
        ),
        style_layers=parse_layers(style_layers, "--style-layers")
        if style_layers
        else D.style_layers,
        style_blend=_parse_floats(style_blend, "--style-blend") if style_blend else None,
        style_scale=style_scale,
        tile=tile,
        overlap=overlap,
        tile_batch=tile_batch,
        precision=precision,
        width=width,
        height=height,
        fit=fit,
        dpi=dpi,
        preserve_colors=preserve_colors,
        max_input_pixels=max_input_pixels,
        devices=devices,
        state=state,
        state_dir=str(state_dir) if state_dir else None,
    )
    config.validate(len(styles))
    sharding.select_platform(platform)
    multi = sharding.init_distributed(coordinator, num_processes, process_id)
    enable_compilation_cache()
    from .progress import RenderProgress

    main_process = sharding.is_main_process()
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = CheckpointOptions(checkpoint_dir, every=checkpoint_every, restart=restart)
    with RenderProgress(enabled=not quiet and main_process) as bar:
        result = render_with_info(content, styles, config, progress=bar.update, checkpoint=ckpt)
    if not main_process:
        return
    info = result.info
    info["inputs"] = {"content": str(content), "styles": [str(s) for s in styles]}
    info["bit_depth"] = bit_depth
    if multi:
        info["processes"] = sharding.process_count()
    if info["weights"].get("kind") == "random":
        typer.echo(
            "note: rendered with untrained random VGG19 weights (--weights random); "
            "this is recorded in the output's metadata",
            err=True,
        )
    imageio.write_image(output, result.image, metadata=info, dpi=dpi, bit_depth=bit_depth)
    if max(result.image.shape[:2]) > PREVIEW_ABOVE:
        imageio.write_preview(output, result.image)
    info["output"] = str(output)
    if "resumed_from" in info and not quiet:
        typer.echo(f"resumed from {info['resumed_from']}", err=True)
    if json_out:
        typer.echo(json.dumps(info, sort_keys=True))
    elif not quiet:
        typer.echo(f"wrote {output} ({info['output_size'][0]}×{info['output_size'][1]})", err=True)


def _add_subcommands() -> None:
    from .cli_series import series_command
    from .cli_video import video_command
    from .cli_weights import app as weights_app

    app.add_typer(weights_app, name="weights", help="Import, fetch and inspect VGG19 weights.")
    app.command("series")(series_command)
    app.command("video")(video_command)


_add_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Run the app and return its exit status; user errors become one line and status 2."""
    try:
        status = app(args=argv, standalone_mode=False, prog_name="hiresnst")
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(e.format_message(), err=True)
            return 2
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        typer.echo(f"error: {e.format_message().splitlines()[0]}{hint}", err=True)
        return 2
    except ClickException as e:
        typer.echo(f"error: {e.format_message().splitlines()[0]}", err=True)
        return 2
    except Preempted as e:
        typer.echo(f"error: {e}; run the same command again to resume", err=True)
        return 143
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as e:  # a bug or an exhausted device, not bad input: still one line
        if os.environ.get("HIRESNST_DEBUG"):
            raise
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            typer.echo(
                f"error: out of device memory ({text[:200]}); lower --tile or "
                "--tile-batch, or use --precision bf16",
                err=True,
            )
        else:
            typer.echo(
                f"error: internal error: {type(e).__name__}: {text[:300]} "
                "(HIRESNST_DEBUG=1 shows the traceback; please report it)",
                err=True,
            )
        return 1
    return status if isinstance(status, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
