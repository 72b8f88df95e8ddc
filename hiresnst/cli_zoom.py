"""`hiresnst zoom IMAGE --zoom dzi,tiff`: the zoomable outputs of an image already written (an
earlier render, a series' outputs), as `render --zoom` makes them. A TIFF is read a row of tiles
at a time (`zoom.TiffRows`), so a gigapixel output needs no more memory than its render's
`--zoom` would; PNG and JPEG are decoded whole, as those formats require."""

from __future__ import annotations

from pathlib import Path

import typer


def zoom_command(
    image: Path = typer.Argument(..., help="The image: a hiresnst output (TIFF, PNG or JPEG)."),
    zoom: str = typer.Option(
        "dzi", help="dzi (NAME.dzi, NAME_files/, NAME.html viewer), tiff (NAME.pyramid.tif), both."
    ),
    max_input_pixels: int | None = typer.Option(
        None, help="PNG/JPEG: refuse larger images (default: Pillow's decompression-bomb limit)."
    ),
) -> None:
    """Write zoomable versions of IMAGE beside it."""
    from . import imageio
    from .config import DEFAULT_MAX_PIXELS
    from .errors import UserError
    from .zoom import TiffRows, parse_zoom, pyramid_tiff_path, write_dzi, write_pyramid_tiff

    kinds = parse_zoom(zoom)
    if not image.is_file():
        raise UserError(f"{image}: no such file; give the image to zoom")
    metadata = imageio.read_metadata(image)
    dpi = ((metadata or {}).get("settings") or {}).get("dpi")
    if image.suffix.lower() in (".tif", ".tiff"):
        source = TiffRows(image)
    else:
        limit = max_input_pixels or DEFAULT_MAX_PIXELS
        source = imageio.read_image(image, max_pixels=limit)
    written = []
    try:
        for kind in kinds:
            if kind == "dzi":
                dzi, _, page = write_dzi(image, source, title=image.name)
                written += [dzi, page]
            else:
                target = pyramid_tiff_path(image)
                written.append(write_pyramid_tiff(target, source, metadata=metadata, dpi=dpi))
    finally:
        if isinstance(source, TiffRows):
            source.close()
    for path in written:
        typer.echo(f"wrote {path}", err=True)
