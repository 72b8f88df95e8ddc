"""Render settings: one frozen dataclass shared by the Python API, the CLI and the metadata.

`validate` checks every setting before any work starts, so that a bad option costs nothing and
is reported as one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from . import pyramid
from .errors import UserError
from .imageio import DEFAULT_MAX_PIXELS
from .masks import check_style_mask_indices
from .model import DEFAULT_WIDTHS, LAYERS
from .objective import CONTENT_LAYERS, STYLE_LAYERS, LossSpec
from .optimize import OPTIMIZERS
from .printsize import check_dpi

MAX_SIZE = 131072
INITS = ("auto", "content", "noise", "fast")
METHODS = ("optimize", "fast")
POOLINGS = ("avg", "max")
FITS = ("crop", "pad")
STATES = ("auto", "device", "host")
COLOR_MODES = (None, "luminance", "histogram")
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
STYLE_LOSSES = ("gram", "mrf", "gram+mrf")
MRF_LAYERS: tuple[tuple[str, float], ...] = (("conv3_1", 0.5), ("conv4_1", 0.5))
#: Default MRF weight per --style-loss. Alone, the patch term outweighs the content term at
#: much lower weights than beside the Gram term, whose gradient is ~1e5 times the patch term's
#: at the start (random VGG19 at 256 px; see the README's MRF examples).
MRF_WEIGHTS = {"mrf": 0.5, "gram+mrf": 3e4}


@dataclass(frozen=True)
class RenderConfig:
    """Settings of a render. Every field is recorded in the output's metadata."""

    size: int = 512
    steps: int | tuple[int, ...] = 200
    scales: int = 1
    min_size: int | None = None
    weights: str = "auto"
    seed: int = 0
    optimizer: str = "adam"
    learning_rate: float = 0.05
    warmup: int = 10  # Adam steps of learning-rate ramp at each level after the first
    content_weight: float = 1.0
    style_weight: float = 1e5
    tv_weight: float = 1.0
    content_layers: tuple[tuple[str, float], ...] = tuple((n, 1.0) for n in CONTENT_LAYERS)
    style_layers: tuple[tuple[str, float], ...] = tuple((n, 0.2) for n in STYLE_LAYERS)
    init: str = "auto"
    pooling: str = "avg"
    style_blend: tuple[float, ...] | None = None
    style_scale: float = 1.0
    tile: int | None = None
    overlap: int | None = None
    tile_batch: int = 1
    precision: str = "fp32"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    devices: int | None = None
    width: int | None = None
    height: int | None = None
    fit: str = "crop"
    dpi: float | None = None
    preserve_colors: str | None = None
    max_input_pixels: int | None = DEFAULT_MAX_PIXELS
    state: str = "auto"
    state_dir: str | None = None
    method: str = "optimize"
    style_strength: float = 1.0
    #: (style index from 0, mask path): where each style applies (white), over the content.
    style_masks: tuple[tuple[int, str], ...] = ()
    content_mask: str | None = None
    style_loss: str = "gram"
    mrf_layers: tuple[tuple[str, float], ...] = MRF_LAYERS
    mrf_weight: float | None = None  # None: MRF_WEIGHTS[style_loss]
    mrf_patches: int = 4096
    #: Video (`hiresnst.video`): weight of the temporal loss towards the previous stylised frame
    #: warped into this one; only renders given that warp (`render_with_info(temporal=…)`) use it.
    temporal_weight: float = 3e5
    #: Video with --method fast: how far reliably tracked pixels follow the warped previous frame
    #: (0 = independent frames, 1 = frozen along the flow).
    temporal_blend: float = 0.5

    def output_hw(self, content_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the output: width × height when given, else the content's aspect at
        `size` long edge."""
        if self.width is not None and self.height is not None:
            return self.height, self.width
        return pyramid.output_shape(content_hw, self.size)

    def validate(self, n_styles: int) -> None:
        """Raise UserError for any setting that cannot work, before any work is done."""
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
            if value is not None and (not math.isfinite(value) or value < 0):
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be a finite number ≥ 0, got {value}")
        if self.learning_rate == 0 or self.style_scale == 0:
            raise UserError("--learning-rate and --style-scale must be greater than 0")
        long_edge = max(self.width or 0, self.height or 0) or self.size
        if long_edge * self.style_scale > MAX_SIZE:
            raise UserError(
                f"--style-scale {self.style_scale} would resize the style to "
                f"{long_edge * self.style_scale:.0f} px, beyond {MAX_SIZE} px"
            )
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        if self.init not in INITS and not Path(self.init).suffix:
            raise UserError(
                f"unknown --init {self.init!r}; use {' or '.join(INITS)} or an image file"
            )
        if self.pooling not in POOLINGS:
            raise UserError(f"unknown --pooling {self.pooling!r}; use {' or '.join(POOLINGS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown --precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.tile is not None and self.tile < 0:
            raise UserError(f"--tile must be ≥ 0 (0 = no tiling), got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise UserError(f"--overlap must be ≥ 0, got {self.overlap}")
        if (self.width is None) != (self.height is None):
            raise UserError("give both --width and --height (or --print), or neither")
        for flag, v in (("--width", self.width), ("--height", self.height)):
            if v is not None and not 0 < v <= MAX_SIZE:
                raise UserError(f"{flag} must be a positive size up to {MAX_SIZE} px, got {v}")
        if self.fit not in FITS:
            raise UserError(f"unknown --fit {self.fit!r}; use crop or pad")
        if self.preserve_colors not in COLOR_MODES:
            raise UserError(
                f"unknown --preserve-colors {self.preserve_colors!r}; use luminance or histogram"
            )
        if self.dpi is not None:
            check_dpi(self.dpi)
        if self.max_input_pixels is not None and self.max_input_pixels < 1:
            raise UserError(f"--max-input-pixels must be ≥ 1, got {self.max_input_pixels}")
        if self.method not in METHODS:
            raise UserError(f"unknown --method {self.method!r}; use {' or '.join(METHODS)}")
        if not (math.isfinite(self.style_strength) and 0 <= self.style_strength <= 1):
            raise UserError(f"--style-strength must be in [0, 1], got {self.style_strength}")
        if not (math.isfinite(self.temporal_blend) and 0 <= self.temporal_blend <= 1):
            raise UserError(f"--temporal-blend must be in [0, 1], got {self.temporal_blend}")
        if self.state not in STATES:
            raise UserError(f"unknown --state {self.state!r}; use {', '.join(STATES)}")
        if self.state == "host" and self.optimizer != "adam":
            raise UserError("--state host supports --optimizer adam only")
        if self.devices is not None and self.devices < 1:
            raise UserError(f"--devices must be ≥ 1, got {self.devices}")
        if self.tile_batch < 1:
            raise UserError(f"--tile-batch must be ≥ 1, got {self.tile_batch}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be ≥ 0 steps, got {self.warmup}")
        self._validate_style_loss(n_styles)
        for name, w in (*self.content_layers, *self.style_layers, *self.mrf_layers):
            if name not in LAYERS or not name.startswith("conv"):
                raise UserError(f"unknown layer {name!r}; use conv1_1 … conv5_4")
            if not math.isfinite(w) or w < 0:
                raise UserError(f"layer weight for {name} must be a finite number ≥ 0, got {w}")
        if self.style_blend is not None:
            if len(self.style_blend) != n_styles:
                raise UserError(
                    f"--style-blend has {len(self.style_blend)} weights for {n_styles} styles"
                )
            if any(not math.isfinite(w) or w < 0 for w in self.style_blend) or not sum(
                self.style_blend
            ):
                raise UserError("--style-blend weights must be ≥ 0 and not all 0")
        pyramid.steps_per_level(self.steps, self.scales)

    def _validate_style_loss(self, n_styles: int) -> None:
        if self.style_loss not in STYLE_LOSSES:
            raise UserError(f"unknown --style-loss {self.style_loss!r}; use gram, mrf or gram+mrf")
        if self.mrf_patches < 1:
            raise UserError(f"--mrf-patches must be ≥ 1, got {self.mrf_patches}")
        check_style_mask_indices(self.style_masks, n_styles)
        if self.style_masks and "mrf" in self.style_loss:
            raise UserError(
                "--style-mask weights the Gram statistics; use it with --style-loss gram"
            )
        if self.state == "host" and (self.masked or "mrf" in self.style_loss):
            raise UserError("--state host takes no masks and no MRF loss; use --state device")

    @property
    def masked(self) -> bool:
        return bool(self.style_masks or self.content_mask)

    def loss_spec(self, widths: tuple[int, ...], temporal: bool = False) -> LossSpec:
        """The objective's settings; `temporal`: with the video term (its targets given)."""
        return LossSpec(
            content_layers=self.content_layers,
            style_layers=self.style_layers if "gram" in self.style_loss else (),
            mrf_layers=self.mrf_layers if "mrf" in self.style_loss else (),
            mrf_weight=MRF_WEIGHTS.get(self.style_loss, 0.0)
            if self.mrf_weight is None
            else self.mrf_weight,
            masked=self.masked,
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
            temporal_weight=self.temporal_weight if temporal else 0.0,
            widths=widths,
            pooling=self.pooling,
            dtype=PRECISIONS[self.precision],
        )


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
