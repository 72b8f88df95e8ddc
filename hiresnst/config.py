"""Settings, as data: the render settings and the output options, each field with its help text,
its range and whether it changes the image. Imports no JAX, so `hiresnst --help` starts fast.

The CLI's options (`cli.py`) and the series spec's keys (`series.py`) are built from these
fields, and `validate` is the one place a setting is checked, before any work is done. The
checkpoint fingerprint keeps only the fields that change the image (`image_settings`), so a
render resumed with another tile size, device count or state directory proceeds.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .layers import CONTENT_LAYERS, DEFAULT_WIDTHS, LAYERS, STYLE_LAYERS, deepest, exact_halo
from .printsize import check_dpi
from .sizes import output_shape, steps_per_level

MAX_SIZE = 131072
#: Pillow's decompression-bomb guard is 89.5 MP; ours is 1 GiB of 8-bit RGB.
DEFAULT_MAX_PIXELS: int = 1024 * 1024 * 1024 // 4 // 3
#: Loss weights above this overflow fp32 sums of squared features (max ≈ 3.4e38).
MAX_WEIGHT = 1e30
#: --overlap beyond this many times the exact halo only adds computation (the exact halo
#: already makes the tiled objective equal the untiled one).
MAX_OVERLAP_HALOS = 4
OPTIMIZERS = ("adam", "lbfgs")
INITS = ("auto", "content", "noise", "fast")
METHODS = ("optimize", "fast")
POOLINGS = ("avg", "max")
FITS = ("crop", "pad")
STATES = ("auto", "device", "host")
COLOR_MODES = (None, "luminance", "histogram")
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
STYLE_LOSSES = ("gram", "mrf", "gram+mrf", "w2", "w2+mrf")
HANDOVERS = ("reset", "carry")
GRAMS = ("exact", "lagged")
MRF_LAYERS: tuple[tuple[str, float], ...] = (("conv3_1", 0.5), ("conv4_1", 0.5))
#: Default MRF weight per --style-loss. Alone, the patch term outweighs the content term at
#: much lower weights than beside the Gram term, whose gradient is ~1e5 times the patch term's
#: at the start (random VGG19 at 256 px; see the README's MRF examples).
MRF_WEIGHTS = {"mrf": 0.5, "gram+mrf": 3e4, "w2+mrf": 3e4}


# ------------------------------------------------------------------ parsers of option text


def parse_steps(text: str) -> int | tuple[int, ...]:
    """`200` or `400,200,100` (one per level)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--steps must be a number or a comma list like 400,200,100; got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def parse_layers(text: str, flag: str) -> tuple[tuple[str, float], ...]:
    """`conv4_2` or `conv1_1:0.2,conv2_1:0.2` → ((name, weight), ...); weight 1 if omitted."""
    out = []
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        try:
            out.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise UserError(f"{flag}: bad weight in {item!r}; write e.g. conv1_1:0.2") from None
    if not out or not all(n for n, _ in out):
        raise UserError(f"{flag} needs layer names, e.g. conv4_2 or conv1_1:0.2,conv2_1:0.2")
    return tuple(out)


def parse_style_mask(text: str) -> tuple[int, str]:
    """`INDEX:PATH` (INDEX counts the styles from 0) → (index, path), for --style-mask."""
    index, sep, path = text.partition(":")
    try:
        i = int(index)
    except ValueError:
        i = -1
    if not sep or not path or i < 0:
        raise UserError(
            f"--style-mask takes INDEX:PATH with INDEX ≥ 0 (0 = first style), got {text!r}"
        )
    return i, path


def check_style_mask_indices(pairs: Sequence[tuple[int, str]], n_styles: int) -> None:
    """Each style index in range and given at most once."""
    seen: set[int] = set()
    for i, path in pairs:
        if not 0 <= i < n_styles:
            raise UserError(
                f"--style-mask {i}:{path}: there are {n_styles} styles (indices 0…{n_styles - 1})"
            )
        if i in seen:
            raise UserError(f"--style-mask gives style {i} more than one mask")
        seen.add(i)


def _show_layers(layers: tuple[tuple[str, float], ...]) -> str:
    return ",".join(f"{n}:{w:g}" for n, w in layers)


def parse_bytes(text: str) -> float:
    """`80GB`, `512MiB`, `1.5e9` → bytes, for --device-memory."""
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    units |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    try:
        value = float(num) * units[s[len(num) :]]
    except (ValueError, KeyError):
        raise UserError(
            f"--device-memory takes a size such as 80GB or 512MiB, got {text!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"--device-memory must be a positive size, got {text!r}")
    return value


# ------------------------------------------------------------------ fields


def setting(
    default: Any,
    help: str,
    *,
    image: bool = True,
    cli: bool = True,
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    show: str | None = None,
    repeat: bool = False,
    flag: str | None = None,
) -> Any:
    """A settings field: `help` for the CLI and docs; `image` False for settings that do not
    change the rendered pixels (they may differ on resume); `cli_type`/`parse` when the
    command line gives the value as text (`parse(text)` → value); `show` the default as the
    command line writes it; `repeat` for options given once per value; `flag` when the
    option's name is not the field's."""
    meta = {
        "help": help,
        "image": image,
        "cli": cli,
        "cli_type": cli_type,
        "parse": parse,
        "show": show,
        "repeat": repeat,
        "flag": flag,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RenderConfig:
    """Settings of a render. Every field is recorded in the output's metadata."""

    size: int = setting(512, "Long edge of the output in pixels.")
    steps: int | tuple[int, ...] = setting(
        200,
        "Steps at the final level (coarser levels get more), or one per level: 400,200.",
        cli_type=str,
        parse=parse_steps,
    )
    scales: int = setting(1, "Pyramid levels, coarse to fine.")
    min_size: int | None = setting(
        None, "Long edge of the coarsest level (default: octaves below --size, 64–512 px)."
    )
    weights: str = setting(
        "auto", "auto (cached import), random (seeded, untrained), or a weights file."
    )
    seed: int = setting(0, "Seed for noise init and random weights.")
    optimizer: str = setting("adam", "adam or lbfgs.")
    learning_rate: float = setting(0.05, "Adam step size (image in [0, 1]).")
    warmup: int = setting(
        10,
        "Adam steps over which the step size ramps up at each level after the first "
        "(a fresh Adam moves every pixel by the full step size at first); 0 = none.",
    )
    content_weight: float = setting(1.0, "Weight of the content loss.")
    style_weight: float = setting(1e5, "Weight of the style loss.")
    tv_weight: float = setting(1.0, "Weight of the total-variation loss.")
    content_layers: tuple[tuple[str, float], ...] = setting(
        tuple((n, 1.0) for n in CONTENT_LAYERS),
        "Content layers with weights: conv4_2 (default) or conv3_1:0.5,conv4_2:1.",
        cli_type=str,
        parse=lambda t: parse_layers(t, "--content-layers"),
        show=_show_layers(tuple((n, 1.0) for n in CONTENT_LAYERS)),
    )
    style_layers: tuple[tuple[str, float], ...] = setting(
        tuple((n, 0.2) for n in STYLE_LAYERS),
        "Style layers with weights (default conv1_1…conv5_1 at 0.2 each).",
        cli_type=str,
        parse=lambda t: parse_layers(t, "--style-layers"),
        show=_show_layers(tuple((n, 0.2) for n in STYLE_LAYERS)),
    )
    init: str = setting(
        "auto",
        "auto (fast if the Magenta networks are imported, else content), content, noise, "
        "fast, or an image file.",
    )
    pooling: str = setting("avg", "avg or max pooling in VGG19.")
    style_blend: tuple[float, ...] | None = setting(
        None,
        "Blend weights of the styles: 0.7,0.3.",
        cli_type=str,
        parse=lambda t: parse_floats(t, "--style-blend"),
    )
    style_scale: float = setting(
        1.0,
        "Style image size relative to each level (never above the style's own size; see "
        "--style-size).",
    )
    style_size: int | None = setting(
        None,
        "Long edge of the styles in px, the same at every level (default: the level's long "
        "edge × --style-scale, at most the style image's own).",
    )
    tile: int | None = setting(
        None, "Tile core in px (0 = untiled; default: chosen from device memory).", image=False
    )
    overlap: int | None = setting(
        None, "Tile halo in px (default: the exact halo of the deepest layer, 80 px)."
    )
    tile_batch: int = setting(1, "Tiles processed together in one batch.", image=False)
    precision: str = setting("fp32", "fp32 or bf16 (convolutions; sums in fp32).")
    widths: tuple[int, ...] = setting(
        DEFAULT_WIDTHS, "VGG19 channel widths (narrow networks for tests).", cli=False
    )
    devices: int | None = setting(
        None, "Devices to spread tiles over (default: all).", image=False
    )
    width: int | None = setting(None, "Output width in px (with --height; overrides --size).")
    height: int | None = setting(None, "Output height in px (with --width).")
    fit: str = setting("crop", "How the content meets another aspect: crop or pad (white).")
    dpi: float | None = setting(
        None, "Print resolution: sizes --print and is written to the file.", image=False
    )
    preserve_colors: str | None = setting(
        None, "luminance (keep the content's colours) or histogram (match the style's first)."
    )
    max_input_pixels: int | None = setting(
        DEFAULT_MAX_PIXELS,
        "Refuse larger inputs (decompression-bomb guard); raise knowingly.",
        image=False,
    )
    state: str = setting(
        "auto",
        "Where the image and optimiser state live: auto, device, or host (RAM).",
        image=False,
    )
    state_dir: str | None = setting(
        None,
        "With host state: memory-map it in files here (for machines with less RAM).",
        image=False,
        cli_type=Path,
        parse=str,
    )
    method: str = setting(
        "optimize", "optimize (Gatys) or fast (one feed-forward pass, Magenta networks)."
    )
    style_strength: float = setting(
        1.0, "fast: 0 = the content's own style vector, 1 = the style's."
    )
    #: (style index from 0, mask path): where each style applies (white), over the content.
    style_masks: tuple[tuple[int, str], ...] = setting(
        (),
        "INDEX:MASK.png: style INDEX (from 0) only where the mask is white; repeatable.",
        cli_type=list[str],
        parse=lambda texts: tuple(parse_style_mask(t) for t in texts),
        repeat=True,
        flag="--style-mask",
    )
    content_mask: str | None = setting(
        None,
        "Mask over the content: white keeps the content, black frees it.",
        cli_type=Path,
        parse=str,
    )
    style_loss: str = setting(
        "gram",
        "gram (Gatys), w2 (Wasserstein-2 between Gaussian fits), mrf (neural patches, "
        "Li & Wand), gram+mrf or w2+mrf.",
    )
    mrf_layers: tuple[tuple[str, float], ...] = setting(
        MRF_LAYERS,
        "MRF layers with weights (default conv3_1:0.5,conv4_1:0.5).",
        cli_type=str,
        parse=lambda t: parse_layers(t, "--mrf-layers"),
        show=_show_layers(MRF_LAYERS),
    )
    mrf_weight: float | None = setting(
        None, "Weight of the MRF (patch) loss (default 0.5 for mrf, 3e4 for gram+mrf)."
    )
    mrf_patches: int = setting(4096, "Style patches per MRF layer (a lattice over the style).")
    average: float = setting(
        0.0, "EMA decay of each level's iterates; the average is the level's result (0 = off)."
    )
    handover: str = setting(
        "reset",
        "Adam between levels: reset (fresh, --warmup ramp) or carry (moments resized, count "
        "kept, no ramp).",
    )
    gram: str = setting(
        "exact",
        "Tiled levels' Gram statistics: exact (a forward pass for them, then forward and "
        "backward) or lagged (the previous step's, one pass per tile: cheaper, not exact, "
        "can oscillate; Adam only).",
    )
    seamless: bool = setting(
        False, "Output that tiles with itself (wrap-around padding; sides multiples of 16 px)."
    )
    device_memory: float | None = setting(
        None,
        "Plan for devices with this much memory (e.g. 80GB) instead of the ones present.",
        image=False,
        cli_type=str,
        parse=parse_bytes,
    )
    temporal_weight: float = setting(
        1e6,
        "video, optimize: weight of the loss tying reliably tracked pixels to the previous "
        "stylised frame warped into this one (0 = off); used only when that warp is given.",
        cli=False,
    )
    temporal_blend: float = setting(
        0.5,
        "video, fast: share of the warped previous frame in reliably tracked pixels "
        "(0 = independent frames, 1 = frozen along the flow).",
        cli=False,
    )

    def output_hw(self, content_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the output: width × height when given, else the content's aspect at
        `size` long edge."""
        if self.width is not None and self.height is not None:
            return self.height, self.width
        return output_shape(content_hw, self.size)

    def validate(self, n_styles: int) -> None:
        """Raise UserError for any setting that cannot work, before any work is done."""
        if n_styles < 1:
            raise UserError("give at least one style image")
        if not 0 < self.size <= MAX_SIZE:
            raise UserError(
                f"--size must be a positive long edge up to {MAX_SIZE} px, got {self.size}"
            )
        if self.min_size is not None and self.min_size < 1:
            raise UserError(f"--min-size must be a positive long edge in px, got {self.min_size}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"--seed must be an integer from 0 to {2**32 - 1}, got {self.seed}")
        if self.scales < 1 or self.scales > 12:
            raise UserError(f"--scales must be between 1 and 12, got {self.scales}")
        for name in (
            "content_weight",
            "style_weight",
            "tv_weight",
            "learning_rate",
            "style_scale",
            "mrf_weight",
            "temporal_weight",
        ):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_WEIGHT):
                flag = "--" + name.replace("_", "-")
                raise UserError(
                    f"{flag} must be a finite number ≥ 0 (at most {MAX_WEIGHT:g}), got {value}"
                )
        if self.learning_rate == 0 or self.style_scale == 0:
            raise UserError("--learning-rate and --style-scale must be greater than 0")
        if self.style_size is not None and not 0 < self.style_size <= MAX_SIZE:
            raise UserError(
                f"--style-size must be a positive long edge up to {MAX_SIZE} px, "
                f"got {self.style_size}"
            )
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        if self.init not in INITS and not Path(self.init).suffix:
            raise UserError(
                f"unknown --init {self.init!r}; use {' or '.join(INITS)} or an image file"
            )
        _choice("--pooling", self.pooling, POOLINGS)
        _choice("--precision", self.precision, tuple(PRECISIONS))
        if self.tile is not None and self.tile < 0:
            raise UserError(f"--tile must be ≥ 0 (0 = no tiling), got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise UserError(f"--overlap must be ≥ 0, got {self.overlap}")
        self._validate_overlap()
        if (self.width is None) != (self.height is None):
            raise UserError("give both --width and --height (or --print), or neither")
        for flag, v in (("--width", self.width), ("--height", self.height)):
            if v is not None and not 0 < v <= MAX_SIZE:
                raise UserError(f"{flag} must be a positive size up to {MAX_SIZE} px, got {v}")
        _choice("--fit", self.fit, FITS)
        if self.preserve_colors not in COLOR_MODES:
            raise UserError(
                f"unknown --preserve-colors {self.preserve_colors!r}; use luminance or histogram"
            )
        if self.dpi is not None:
            check_dpi(self.dpi)
        if self.max_input_pixels is not None and self.max_input_pixels < 1:
            raise UserError(f"--max-input-pixels must be ≥ 1, got {self.max_input_pixels}")
        _choice("--method", self.method, METHODS)
        if not (math.isfinite(self.style_strength) and 0 <= self.style_strength <= 1):
            raise UserError(f"--style-strength must be in [0, 1], got {self.style_strength}")
        if not (math.isfinite(self.temporal_blend) and 0 <= self.temporal_blend <= 1):
            raise UserError(f"--temporal-blend must be in [0, 1], got {self.temporal_blend}")
        _choice("--state", self.state, STATES)
        if self.state == "host" and self.optimizer != "adam":
            raise UserError("--state host supports --optimizer adam only")
        if self.devices is not None and self.devices < 1:
            raise UserError(f"--devices must be ≥ 1, got {self.devices}")
        if self.tile_batch < 1:
            raise UserError(f"--tile-batch must be ≥ 1, got {self.tile_batch}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be ≥ 0 steps, got {self.warmup}")
        if len(self.widths) != 5 or any(w < 1 for w in self.widths):
            raise UserError(f"widths must be 5 positive channel counts, got {self.widths}")
        self._validate_quality()
        self._validate_style_loss(n_styles)
        for name, w in (*self.content_layers, *self.style_layers, *self.mrf_layers):
            if name not in LAYERS or not name.startswith("conv"):
                raise UserError(f"unknown layer {name!r}; use conv1_1 … conv5_4")
            if not math.isfinite(w) or w < 0:
                raise UserError(f"layer weight for {name} must be a finite number ≥ 0, got {w}")
            if w > MAX_WEIGHT:
                raise UserError(
                    f"layer weight for {name} is too large ({w:g}): at most {MAX_WEIGHT:g}, or "
                    "the loss overflows 32-bit floats"
                )
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise UserError(
                    f"--style-blend has {len(self.style_blend)} weights for {n_styles} styles"
                )
            if any(not math.isfinite(w) or w < 0 for w in self.style_blend) or not sum(
                self.style_blend
            ):
                raise UserError("--style-blend weights must be ≥ 0 and not all 0")
        steps_per_level(self.steps, self.scales)

    def _validate_quality(self) -> None:
        if not (math.isfinite(self.average) and 0 <= self.average < 1):
            raise UserError(
                f"--average must be an EMA decay in [0, 1) (0 = off), got {self.average}"
            )
        _choice("--handover", self.handover, HANDOVERS)
        _choice("--gram", self.gram, GRAMS)
        if self.gram == "lagged" and self.optimizer != "adam":
            raise UserError("--gram lagged is for Adam; use --gram exact with --optimizer lbfgs")
        if self.handover == "carry" and self.optimizer != "adam":
            raise UserError("--handover carry carries Adam's moments; use it with --optimizer adam")
        if self.state == "host" and (
            self.average or self.handover == "carry" or self.seamless or "w2" in self.style_loss
        ):
            raise UserError(
                "--state host has no --average, --handover carry, --seamless or W2 loss yet; "
                "use --state device"
            )

    def _validate_overlap(self) -> None:
        """An overlap far beyond the exact halo buys nothing and would surface later as an
        out-of-memory error blaming the tile size."""
        if self.overlap is None:
            return
        names = [n for n, _ in (*self.content_layers, *self.style_layers, *self.mrf_layers)]
        if not names or any(n not in LAYERS or not n.startswith("conv") for n in names):
            return  # reported with its own message below
        halo = exact_halo(deepest(names))
        if self.overlap > MAX_OVERLAP_HALOS * halo:
            raise UserError(
                f"--overlap {self.overlap} is more than {MAX_OVERLAP_HALOS}× the exact halo of "
                f"these layers ({halo} px, the default), which already makes tiles exact; "
                "leave --overlap out or lower it"
            )

    def _validate_style_loss(self, n_styles: int) -> None:
        _choice("--style-loss", self.style_loss, STYLE_LOSSES)
        if self.mrf_patches < 1:
            raise UserError(f"--mrf-patches must be ≥ 1, got {self.mrf_patches}")
        check_style_mask_indices(self.style_masks, n_styles)
        if self.style_masks and "mrf" in self.style_loss:
            raise UserError(
                "--style-mask weights the Gram statistics; use it with --style-loss gram or w2"
            )

    def loss_spec(self, widths: tuple[int, ...], temporal: bool = False) -> Any:
        """The objective's static `objective.LossSpec` for these settings and weights;
        `temporal`: with the video term (a render given the warped previous frame)."""
        from .objective import LossSpec

        return LossSpec(
            content_layers=self.content_layers,
            style_layers=self.style_layers if self.style_loss.split("+")[0] != "mrf" else (),
            style_kind="w2" if "w2" in self.style_loss else "gram",
            seamless=self.seamless,
            mrf_layers=self.mrf_layers if "mrf" in self.style_loss else (),
            mrf_weight=self.effective_mrf_weight,
            masked=self.masked,
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
            temporal_weight=self.temporal_weight if temporal else 0.0,
            widths=widths,
            pooling=self.pooling,
            dtype=self.dtype,
        )

    @property
    def masked(self) -> bool:
        return bool(self.style_masks or self.content_mask)

    @property
    def dtype(self) -> str:
        return PRECISIONS[self.precision]

    @property
    def effective_mrf_weight(self) -> float:
        return MRF_WEIGHTS.get(self.style_loss, 0.0) if self.mrf_weight is None else self.mrf_weight


def _choice(flag: str, value: Any, options: Sequence[Any]) -> None:
    if value not in options:
        raise UserError(f"unknown {flag} {value!r}; use {', '.join(map(str, options))}")


def image_settings(config: RenderConfig) -> dict[str, Any]:
    """The settings that change the rendered pixels (the checkpoint fingerprint's part)."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.metadata.get("image", True)
    }


def settings_fields() -> tuple[dataclasses.Field, ...]:
    """The render settings' fields, in order (the CLI's options are made from them)."""
    return dataclasses.fields(RenderConfig)


def setting_types() -> dict[str, Any]:
    """Each render setting's type (evaluated hints), for converters such as the series spec's."""
    return typing.get_type_hints(RenderConfig)


# ------------------------------------------------------------------ output options

FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "tif": "tif", "tiff": "tif"}
#: Outputs with a longer edge get a NAME.preview.jpg beside them.
PREVIEW_ABOVE = 4096


@dataclass(frozen=True)
class OutputOptions:
    """How a rendered image is written; none of these change the rendered pixels. (The DPI
    written into the file is the render setting `dpi`, which also sizes `--print`.)"""

    bit_depth: int = 8
    quality: int = 95
    preview: bool = True  # a NAME.preview.jpg beside outputs over PREVIEW_ABOVE px

    def validate(self, output: Path | None = None) -> None:
        if self.bit_depth not in (8, 16):
            raise UserError(f"--bit-depth must be 8 or 16, got {self.bit_depth}")
        if not 1 <= self.quality <= 100:
            raise UserError(f"quality must be an integer from 1 to 100, got {self.quality}")
        if output is not None and self.bit_depth == 16 and output_format(output) == "jpg":
            raise UserError("JPEG holds 8 bits per channel; use .png or .tif for 16-bit")


def output_format(path: Path) -> str | None:
    """png, jpg or tif from a file name, None for another suffix."""
    return FORMATS.get(path.suffix.lower().lstrip("."))
