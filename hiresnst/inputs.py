"""A render's inputs: the content, styles and masks loaded, fitted to the output's framing, and
with colour preservation applied. Everything here is host-side NumPy; no JAX."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import color, imageio, masks
from .config import DEFAULT_MAX_PIXELS, RenderConfig
from .errors import UserError
from .printsize import apply_fit, fit_to_print

ImageLike = str | os.PathLike | np.ndarray


def load_image(image: ImageLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return imageio.read_image(Path(image), max_pixels=max_pixels)
    arr = np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"an image array must be H×W×3, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


@dataclass
class Inputs:
    """The loaded inputs of a render, fitted to the output's framing."""

    original: np.ndarray  # the fitted content before colour changes
    content: np.ndarray  # the content to render
    styles: list[np.ndarray]
    style_masks: list[np.ndarray | None]  # one per style, on the content's framing; None = white
    content_mask: np.ndarray | None


def prepare_inputs(content: ImageLike, styles: Sequence[ImageLike], config: RenderConfig) -> Inputs:
    """Load the images and masks, fit the content (and the masks drawn over it) to an explicit
    output aspect (crop or pad, at the content's own resolution), and apply colour
    preservation."""
    content_img = load_image(content, config.max_input_pixels)
    style_imgs = [load_image(s, config.max_input_pixels) for s in styles]
    style_masks = masks.load_style_masks(config.style_masks, len(styles), config.max_input_pixels)
    content_mask = (
        None
        if config.content_mask is None
        else masks.load_mask(config.content_mask, config.max_input_pixels)
    )
    for i, m in enumerate(style_masks):
        if m is not None:
            masks.check_mask_aspect(m, content_img.shape[:2], f"the mask of style {i}")
    if content_mask is not None:
        masks.check_mask_aspect(content_mask, content_img.shape[:2], "--content-mask")
    if config.width is not None and config.height is not None:
        ch, cw = content_img.shape[:2]
        k = (max if config.fit == "pad" else min)(ch / config.height, cw / config.width)
        native = (max(1, round(config.width * k)), max(1, round(config.height * k)))
        fit = fit_to_print((ch, cw), native, config.fit)
        content_img = apply_fit(content_img, fit)
        style_masks = [None if m is None else masks.fit_mask(m, fit) for m in style_masks]
        content_mask = None if content_mask is None else masks.fit_mask(content_mask, fit)
    original = content_img
    if config.preserve_colors == "luminance":
        style_imgs = [color.match_luminance(s, content_img) for s in style_imgs]
        content_img = color.to_luminance_rgb(content_img)
    elif config.preserve_colors == "histogram":
        style_imgs = [color.match_color(s, content_img, "histogram") for s in style_imgs]
    return Inputs(original, content_img, style_imgs, style_masks, content_mask)


def input_hashes(inputs: Inputs) -> dict[str, object]:
    """Hashes of the inputs as loaded (a re-encoded but identical file matches), for the
    checkpoint fingerprint."""
    return {
        "content": array_sha256(inputs.content),
        "styles": [array_sha256(s) for s in inputs.styles],
        "masks": [
            None if m is None else array_sha256(m)
            for m in (*inputs.style_masks, inputs.content_mask)
        ],
    }


def array_sha256(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a, np.float32)
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()
