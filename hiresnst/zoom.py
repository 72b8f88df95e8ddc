"""Zoomable output for images too large for an image viewer, built streaming with bounded memory.

- `write_dzi`: a Deep Zoom pyramid (`NAME.dzi` and `NAME_files/<level>/<col>_<row>.jpg`) and a
  self-contained `NAME.html` viewer (OpenSeadragon, BSD licence, vendored in the package data
  with its licence and inlined into the page) that opens from the file system: the descriptor
  is inlined too, as browsers refuse file:// requests for it, while tiles load as plain images.
- `write_pyramid_tiff`: a tiled, deflate-compressed TIFF whose reduced levels are SubIFDs (what
  print RIPs, libvips, QuPath and slide viewers read).

Both read the source (a float image in [0, 1] or uint8; a NumPy array or a memory map, such as
a host-resident render's state) one band of rows at a time. The DZI runs every level at once,
each level holding a band of rows and halving them into the next (2×2 means); the TIFF writes
one level after another, the next level going to a temporary file beside the output as the
current one is written. Memory is a few bands of the widest level, whatever the height.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import secrets
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from . import imageio
from .errors import UserError
from .snapshot import halve

ZOOM_KINDS = ("dzi", "tiff")
DZI_TILE = 254
DZI_OVERLAP = 1
TIFF_TILE = 256
#: Rows read from the source at a time.
SOURCE_BAND = 256
JPEG_QUALITY = 90


def parse_zoom(text: str | None) -> tuple[str, ...]:
    """`dzi`, `tiff` or `dzi,tiff` → the kinds, checked."""
    if not text:
        return ()
    kinds = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in ZOOM_KINDS]
    if bad or not kinds:
        raise UserError(f"--zoom takes dzi, tiff or dzi,tiff; got {text!r}")
    return tuple(dict.fromkeys(kinds))


def dzi_paths(output: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """(`NAME.dzi`, `NAME_files`, `NAME.html`) beside the output."""
    p = Path(output)
    return p.with_suffix(".dzi"), p.with_name(p.stem + "_files"), p.with_suffix(".html")


def pyramid_tiff_path(output: str | os.PathLike[str]) -> Path:
    p = Path(output)
    return p.with_name(p.stem + ".pyramid.tif")


def _source_rows(src: Any, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of the source as uint8 (a copy: the source may be a memory map)."""
    block = np.asarray(src[r0:r1])
    if block.dtype == np.uint8:
        return np.array(block[..., :3])
    return imageio.quantize(block[..., :3], 8)


def _check_source(src: Any) -> tuple[int, int]:
    if len(src.shape) != 3 or src.shape[2] < 3 or 0 in src.shape:
        raise ValueError(f"image must be H×W×3, got shape {src.shape}")
    return int(src.shape[0]), int(src.shape[1])


# ------------------------------------------------------------------------------------ Deep Zoom


def dzi_levels(h: int, w: int) -> list[tuple[int, int]]:
    """(H, W) of Deep Zoom levels 0 (1×1) … top (full size)."""
    top = math.ceil(math.log2(max(h, w))) if max(h, w) > 1 else 0
    return [(-(-h // 2 ** (top - k)), -(-w // 2 ** (top - k))) for k in range(top + 1)]


class _DziLevel:
    """One Deep Zoom level: takes rows in order, writes each tile row once its rows (with the
    overlap) are in, and passes its rows halved to the level below."""

    def __init__(
        self,
        level: int,
        hw: tuple[int, int],
        folder: Path,
        save: Callable[[list[tuple[np.ndarray, Path]]], None],
        below: _DziLevel | None,
        tile: int,
        overlap: int,
        ext: str,
    ) -> None:
        self.level, (self.h, self.w) = level, hw
        self.folder = folder / str(level)
        self.folder.mkdir()
        self.save, self.below = save, below
        self.tile, self.overlap, self.ext = tile, overlap, ext
        self.buf = np.empty((0, self.w, 3), np.uint8)
        self.top = 0  # image row of buf[0]
        self.next_row = 0  # the next tile row to write
        self.odd: np.ndarray | None = None  # a row waiting for its pair, to halve

    def push(self, rows: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, rows]) if len(self.buf) else rows
        self._write_ready()
        if self.below is not None:
            if self.odd is not None:
                rows = np.concatenate([self.odd, rows])
            even = len(rows) // 2 * 2
            self.odd = rows[even:] if even < len(rows) else None
            if even:
                self.below.push(halve(rows[:even]))

    def finish(self) -> None:
        self._write_ready()
        if self.below is not None:
            if self.odd is not None:
                self.below.push(halve(self.odd))
            self.below.finish()

    def _write_ready(self) -> None:
        t, o = self.tile, self.overlap
        while self.next_row * t < self.h:
            r = self.next_row
            y0, y1 = max(0, r * t - o), min(self.h, (r + 1) * t + o)
            if self.top + len(self.buf) < y1:
                return
            band = self.buf[y0 - self.top : y1 - self.top]
            jobs = []
            for c in range(-(-self.w // t)):
                x0, x1 = max(0, c * t - o), min(self.w, (c + 1) * t + o)
                jobs.append((band[:, x0:x1], self.folder / f"{c}_{r}.{self.ext}"))
            self.save(jobs)
            self.next_row += 1
            keep = max(0, (r + 1) * t - o)
            self.buf = self.buf[keep - self.top :]
            self.top = keep


def _save_tiles(pool: ThreadPoolExecutor, ext: str) -> Callable[[list], None]:
    options: dict[str, Any] = {"quality": JPEG_QUALITY} if ext == "jpg" else {}

    def save_one(job: tuple[np.ndarray, Path]) -> None:
        pixels, path = job
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, **options)

    def save(jobs: list[tuple[np.ndarray, Path]]) -> None:
        list(pool.map(save_one, jobs))  # a tile row at a time: bounded, and errors surface

    return save


def write_dzi(
    output: str | os.PathLike[str],
    src: Any,
    *,
    fmt: str = "jpg",
    tile: int = DZI_TILE,
    overlap: int = DZI_OVERLAP,
    title: str | None = None,
) -> tuple[Path, Path, Path]:
    """Write `NAME.dzi`, `NAME_files/` and the viewer `NAME.html` beside `output` from `src`
    (H×W×3, float in [0, 1] or uint8). The tiles are written into a temporary folder renamed
    into place at the end, and the descriptor and page atomically, so an interrupted run
    leaves the previous pyramid (or none), never a half one."""
    if fmt not in ("jpg", "png"):
        raise ValueError(f"DZI tiles are jpg or png, got {fmt!r}")
    h, w = _check_source(src)
    dzi, files, page = dzi_paths(output)
    try:
        _write_dzi(src, h, w, dzi, files, page, fmt, tile, overlap, title)
    except OSError as e:
        raise UserError(f"{dzi}: cannot write ({e.strerror or e}); check free space") from e
    return dzi, files, page


def _write_dzi(
    src: Any,
    h: int,
    w: int,
    dzi: Path,
    files: Path,
    page: Path,
    fmt: str,
    tile: int,
    overlap: int,
    title: str | None,
) -> None:
    tmp = files.with_name(f".{files.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            save = _save_tiles(pool, fmt)
            below = None
            for k, hw in enumerate(dzi_levels(h, w)):
                below = _DziLevel(k, hw, tmp, save, below, tile, overlap, fmt)
            assert below is not None
            for r0 in range(0, h, SOURCE_BAND):
                below.push(_source_rows(src, r0, min(h, r0 + SOURCE_BAND)))
            below.finish()
        old = files.with_name(f".{files.name}.{secrets.token_hex(6)}.old")
        if files.exists():
            files.rename(old)
        tmp.rename(files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    descriptor = dzi_descriptor(h, w, fmt, tile, overlap)
    _write_text(dzi, descriptor)
    url = urllib.parse.quote(files.name) + "/"
    _write_text(page, viewer_html(url, h, w, fmt, tile, overlap, title or dzi.stem))


def dzi_descriptor(h: int, w: int, fmt: str, tile: int, overlap: int) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="{fmt}" Overlap="{overlap}" TileSize="{tile}">\n'
        f'  <Size Width="{w}" Height="{h}"/>\n</Image>\n'
    )


def _write_text(path: Path, text: str) -> None:
    imageio.atomic_write(os.fspath(path), lambda fh: fh.write(text.encode("utf-8")))


def openseadragon() -> tuple[str, str]:
    """The vendored OpenSeadragon (minified script, licence text)."""
    base = resources.files("hiresnst") / "data" / "openseadragon"
    return (
        (base / "openseadragon.min.js").read_text("utf-8"),
        (base / "LICENSE.txt").read_text("utf-8"),
    )


def viewer_html(
    tiles_url: str, h: int, w: int, fmt: str, tile: int, overlap: int, title: str
) -> str:
    """A page that shows the pyramid with OpenSeadragon, needing nothing but its tile folder.

    The view can be set from the address: `#x=0.5&y=0.5&zoom=1` (centre as fractions of the
    width and height, zoom in screen pixels per image pixel: 1 shows the full resolution);
    the page's `data-view` holds the visible image rectangle (x,y,w,h in image pixels)."""
    script, licence = openseadragon()
    source = {
        "Image": {
            "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
            "Url": tiles_url,
            "Format": fmt,
            "Overlap": str(overlap),
            "TileSize": str(tile),
            "Size": {"Width": str(w), "Height": str(h)},
        }
    }
    safe_title = html.escape(title)
    licence_comment = licence.replace("-->", "- ->")
    source_json = json.dumps(source).replace("<", "\\u003c")  # no "</script>" from a name
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{safe_title}</title>
<!-- OpenSeadragon {_osd_version(script)}, vendored by hiresnst; its licence:
{licence_comment}
-->
<style>html,body{{margin:0;height:100%;background:#111}}#view{{width:100%;height:100%}}
#info{{position:fixed;left:8px;bottom:6px;color:#aaa;font:12px sans-serif}}</style>
</head><body><div id="view"></div>
<div id="info">{safe_title}: {w}×{h} px. Scroll or pinch to zoom, drag to pan.</div>
<script>{script}</script>
<script>
"use strict";
const viewer = OpenSeadragon({{
  id: "view", tileSources: {source_json}, drawer: "canvas", showNavigationControl: false,
  maxZoomPixelRatio: 4, visibilityRatio: 0.5, preserveImageSizeOnResize: true,
  imageLoaderLimit: 8, animationTime: 0.6
}});
window.hiresnstViewer = viewer;
function applyHash() {{
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.has("zoom")) return;
  const vp = viewer.viewport, x = +p.get("x") || 0.5, y = +p.get("y") || 0.5;
  vp.zoomTo(vp.imageToViewportZoom(+p.get("zoom")), null, true);
  vp.panTo(new OpenSeadragon.Point(x, y * {h / w!r}), true);
}}
let moved = false;  // the address's view holds through window resizes until the user moves
viewer.addHandler("open", applyHash);
viewer.addHandler("resize", () => moved || applyHash());
for (const e of ["canvas-press", "canvas-scroll", "canvas-key"]) {{
  viewer.addHandler(e, () => {{ moved = true; }});
}}
window.addEventListener("hashchange", applyHash);
viewer.addHandler("update-viewport", () => {{
  const vp = viewer.viewport, r = vp.viewportToImageRectangle(vp.getBounds(true));
  document.body.dataset.view = [r.x, r.y, r.width, r.height].map((v) => v.toFixed(2)).join(",");
}});
</script></body></html>
"""


def _osd_version(script: str) -> str:
    first = script.splitlines()[0] if script else ""
    return first.removeprefix("//! openseadragon ").strip()


# -------------------------------------------------------------------------- pyramidal TIFF


def tiff_levels(h: int, w: int, tile: int = TIFF_TILE) -> list[tuple[int, int]]:
    """(H, W) of the full image and each halving until it fits in one tile."""
    levels = [(h, w)]
    while max(levels[-1]) > tile:
        lh, lw = levels[-1]
        levels.append((-(-lh // 2), -(-lw // 2)))
    return levels


class _RawLevel:
    """A reduced level on disk as raw uint8 rows, appended band by band and read back the same
    way (explicit reads and writes, so the pages do not stay in this process's memory)."""

    def __init__(self, path: Path, w: int) -> None:
        self.path, self.w, self.rows = path, w, 0
        self._fh = open(path, "w+b")  # noqa: SIM115 - closed by close()

    def append(self, rows: np.ndarray) -> None:
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def read(self, r0: int, r1: int) -> np.ndarray:
        self._fh.seek(r0 * self.w * 3)
        data = self._fh.read((r1 - r0) * self.w * 3)
        return np.frombuffer(data, np.uint8).reshape(r1 - r0, self.w, 3)

    def close(self) -> None:
        self._fh.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _tiles(
    read: Callable[[int, int], np.ndarray],
    hw: tuple[int, int],
    tile: int,
    reduced: _RawLevel | None,
) -> Iterator[np.ndarray]:
    """A level's tiles in row-major order from bands of `tile` rows, each band halved into
    `reduced` (the next level) first: the TIFF writer stops asking after the last tile."""
    h, w = hw
    for r0 in range(0, h, tile):
        band = read(r0, min(h, r0 + tile))
        if reduced is not None:
            reduced.append(halve(band))
        for c0 in range(0, w, tile):
            part = band[:, c0 : c0 + tile]
            if part.shape[:2] != (tile, tile):
                full = np.zeros((tile, tile, 3), np.uint8)
                full[: part.shape[0], : part.shape[1]] = part
                part = full
            yield part


def write_pyramid_tiff(
    path: str | os.PathLike[str],
    src: Any,
    *,
    tile: int = TIFF_TILE,
    compression: str = "zlib",
    metadata: dict[str, Any] | None = None,
    dpi: float | None = None,
) -> Path:
    """A tiled RGB TIFF of `src` with its halvings as SubIFDs of the first page (reduced-
    resolution subfiles), deflate-compressed with the horizontal predictor, sRGB-tagged,
    written atomically. `src` is H×W×3, float in [0, 1] or uint8."""
    h, w = _check_source(src)
    path = Path(path)
    levels = tiff_levels(h, w, tile)
    text = None if metadata is None else json.dumps(metadata, sort_keys=True, default=str)
    icc = imageio.srgb_icc()
    common: dict[str, Any] = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "predictor": compression != "jpeg",
        "dtype": np.uint8,
        "metadata": None,
    }
    if dpi:
        common.update(resolution=(dpi, dpi), resolutionunit="INCH")
    raw: list[_RawLevel] = []
    bigtiff = h * w * 4 > imageio.BIGTIFF_ABOVE_BYTES  # all levels: 4/3 of the full image

    def write(fh: Any) -> None:
        read: Callable[[int, int], np.ndarray] = partial(_source_rows, src)
        with tifffile.TiffWriter(fh, bigtiff=bigtiff) as tif:
            for k, hw in enumerate(levels):
                nxt = None
                if k + 1 < len(levels):
                    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.level{k + 1}")
                    nxt = _RawLevel(tmp, levels[k + 1][1])
                    raw.append(nxt)
                first = {
                    "subifds": len(levels) - 1,
                    "software": imageio.SOFTWARE,
                    "description": text,
                    "extratags": [(imageio.ICC_TAG, 7, len(icc), icc, True)],
                }
                extra = first if k == 0 else {"subfiletype": 1}
                tif.write(data=_tiles(read, hw, tile, nxt), shape=(*hw, 3), **common, **extra)
                if k > 0:
                    raw[k - 1].close()  # its level is written: the file goes
                if nxt is not None:
                    read = nxt.read

    try:
        imageio.atomic_write(os.fspath(path), write)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e}); check free space") from e
    finally:
        for r in raw:
            r.close()
    return path


class TiffRows:
    """The rows of an RGB TIFF's first page (tiled or in strips, 8 or 16 bits, any compression
    tifffile decodes) as uint8, decoded a row of tiles (or a strip) at a time: a gigapixel
    output can be zoomed from its file with memory for a few rows of tiles. Supports
    `shape` and `rows[r0:r1]`, what `write_dzi` and `write_pyramid_tiff` read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._tif = tifffile.TiffFile(path)
        page = self._tif.pages[0]
        if (
            page.samplesperpixel < 3
            or page.dtype not in (np.uint8, np.uint16)
            or page.planarconfig != tifffile.PLANARCONFIG.CONTIG
        ):
            self._tif.close()
            raise UserError(
                f"{os.fspath(path)}: not an 8- or 16-bit interleaved RGB TIFF; "
                "zoom a hiresnst output or convert it first"
            )
        self.page = page
        self.shape = (int(page.imagelength), int(page.imagewidth), 3)
        self.band_rows = int(page.tilelength if page.is_tiled else page.rowsperstrip)
        self.per_band = -(-self.shape[1] // int(page.tilewidth)) if page.is_tiled else 1
        self._band: tuple[int, np.ndarray] | None = None

    def _load(self, k: int) -> np.ndarray:
        """Band `k` (rows k·band_rows …) as uint8."""
        if self._band is not None and self._band[0] == k:
            return self._band[1]
        page, fh = self.page, self._tif.filehandle
        h, w = self.shape[:2]
        rows = min(self.band_rows, h - k * self.band_rows)
        band = np.empty((rows, w, 3), np.uint8)
        for i in range(k * self.per_band, (k + 1) * self.per_band):
            fh.seek(page.dataoffsets[i])
            segment, (_, _, _, x0, _), _ = page.decode(fh.read(page.databytecounts[i]), i)
            part = segment[0, :rows, : w - x0, :3]
            if part.dtype == np.uint16:  # round(v · 255 / 65535), as quantising v / 65535
                part = ((part.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            band[:, x0 : x0 + part.shape[1]] = part
        self._band = (k, band)
        return band

    def __getitem__(self, rows: slice) -> np.ndarray:
        r0, r1, _ = rows.indices(self.shape[0])
        n = self.band_rows
        parts = [
            self._load(k)[max(r0 - k * n, 0) : r1 - k * n] for k in range(r0 // n, -(-r1 // n))
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self._tif.close()


def read_pyramid_levels(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """(H, W) of a pyramidal TIFF's full image and its SubIFD levels, as tifffile reads them."""
    with tifffile.TiffFile(path) as tif:
        return [tuple(s.shape[:2]) for s in tif.series[0].levels]  # type: ignore[misc]
