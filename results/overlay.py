"""Pixel maths of the heatmap picture: place, colour, blend and caption.

Pure functions on numpy arrays, so they are tested without DICOM. The
heatmap comes in model-input geometry: preprocessing trimmed uniform padding,
the dark surround and a fixed margin before it resized the rest to the square
model input, and recorded that rectangle (:class:`inference.preprocess.CropBox`),
so the heatmap is stretched back over exactly that box, not over the whole
radiograph. A prediction stored before the box was kept has none; its heatmap
is placed over the central box of the fixed margin alone, as before.

Colour means the same on every image (:data:`HEATMAP_RULE`): none is drawn
when the TB score is below its threshold; above it the colour is the TB score
times the map's relative strength (JET: blue 0, red 1), so a weak score never
shows red, and the opacity follows the map so the place stays visible.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from inference.preprocess import CROP_MARGIN, CropBox

MAX_SIDE: Final = 2048
"""Longest side of the Secondary Capture; larger radiographs are scaled down to it."""

MIN_COLUMNS: Final = 640
"""Narrowest Secondary Capture; smaller images are scaled up so the caption stays legible."""

BLEND_STRENGTH: Final = 0.55
"""Opacity of the colour at the heatmap's peak; where the model did not look, none."""

CAPTION_FONT_FRACTION: Final = 0.022
"""Caption font height as a fraction of the image width (readable at any size)."""

HEATMAP_RULE: Final = "colour = TB score x relative strength (red = 1.0); none below the threshold"
"""How the heatmap's colour reads; stated in the Secondary Capture's caption."""

MIN_FONT_PX: Final = 12
TEXT_COLOUR: Final = (255, 255, 255)
BAND_COLOUR: Final = (0, 0, 0)


class OverlayError(ValueError):
    """An image or heatmap has the wrong shape or values (the message names the argument)."""


def fit_size(shape: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(rows, columns) scaled so that neither exceeds ``max_side`` and the width reaches
    ``MIN_COLUMNS`` where that is possible; aspect ratio kept."""
    rows, columns = shape
    if rows < 1 or columns < 1:
        raise OverlayError(f"shape: expected positive rows and columns, got {shape}")
    scale = min(max(1.0, MIN_COLUMNS / columns), max_side / max(rows, columns))
    return max(1, round(rows * scale)), max(1, round(columns * scale))


def gray_to_uint8(gray: NDArray[np.floating], size: tuple[int, int]) -> NDArray[np.uint8]:
    """Presentation gray in [0, 1] (bright = dense) as 8-bit, resized to (rows, columns)."""
    if gray.ndim != 2:
        raise OverlayError(f"gray: expected a 2-D image, got shape {gray.shape}")
    resized = cv2.resize(gray.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.round(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)


def place_heatmap(heatmap: NDArray[np.floating], size: tuple[int, int],
                  box: CropBox | None = None, margin: float = CROP_MARGIN) -> NDArray[np.float32]:
    """The heatmap in the geometry of a picture of ``size`` (rows, columns) showing the whole
    source: stretched over ``box`` (the source rectangle the model saw, scaled to ``size``),
    zero outside. Without a box, over the central box of ``margin`` alone (older results)."""
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise OverlayError(f"heatmap: expected a non-empty 2-D array, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise OverlayError("heatmap: contains NaN or infinite values")
    top, left, bottom, right = _box_in(size, box, margin)
    placed = np.zeros(size, dtype=np.float32)
    stretched = cv2.resize(heatmap.astype(np.float32), (right - left, bottom - top),
                           interpolation=cv2.INTER_LINEAR)
    placed[top:bottom, left:right] = np.clip(stretched, 0.0, 1.0)
    return placed


def _box_in(size: tuple[int, int], box: CropBox | None, margin: float) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the crop box in a picture of ``size``, at least 1 pixel."""
    rows, columns = size
    if box is None:
        dy, dx = round(rows * margin), round(columns * margin)
        return dy, dx, max(dy + 1, rows - dy), max(dx + 1, columns - dx)
    if not (0 <= box.top < box.bottom <= box.rows and 0 <= box.left < box.right <= box.columns):
        raise OverlayError(f"box: {box} is not a rectangle inside its source")
    sy, sx = rows / box.rows, columns / box.columns
    top, left = min(rows - 1, round(box.top * sy)), min(columns - 1, round(box.left * sx))
    return top, left, max(top + 1, round(box.bottom * sy)), max(left + 1, round(box.right * sx))


def scaled_heat(heatmap: NDArray[np.floating], score: float,
                threshold: float) -> NDArray[np.float32] | None:
    """The heat to colour under :data:`HEATMAP_RULE`: ``None`` below the threshold, else the
    map (relative strength in [0, 1]) times the score."""
    if score < threshold:
        return None
    return (np.clip(heatmap, 0.0, 1.0) * float(np.clip(score, 0.0, 1.0))).astype(np.float32)


def colourise(heat: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Heat in [0, 1] as RGB through the JET colour map (blue = low, red = high)."""
    index = np.round(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(index, cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[..., ::-1])


def blend(gray: NDArray[np.uint8], heat: NDArray[np.float32],
          strength: float = BLEND_STRENGTH,
          opacity: NDArray[np.float32] | None = None) -> NDArray[np.uint8]:
    """RGB radiograph with the heat colour laid over it; opacity proportional to ``opacity``
    (the map's relative strength) when given, else to the heat."""
    if gray.shape != heat.shape or (opacity is not None and opacity.shape != heat.shape):
        raise OverlayError(f"heat: shape {heat.shape} differs from the image {gray.shape}")
    base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    alpha = (np.clip(heat if opacity is None else opacity, 0.0, 1.0) * strength)[..., None]
    mixed = base * (1.0 - alpha) + colourise(heat).astype(np.float32) * alpha
    return np.round(mixed).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def caption_font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``pixels`` height (FreeType, as in Pillow wheels)."""
    return ImageFont.load_default(size=pixels)


def caption_text(line: str) -> str:
    """``line`` in the characters the bundled font draws: typographic dashes become '-'."""
    return line.replace("\u2014", "-").replace("\u2013", "-")


def caption_pixels(lines: Sequence[str], columns: int) -> int:
    """Font height for the caption: a fraction of the width, smaller if a line would not fit."""
    font_px = max(MIN_FONT_PX, round(columns * CAPTION_FONT_FRACTION))
    while font_px > MIN_FONT_PX:
        font = caption_font(font_px)
        if max(font.getlength(caption_text(line)) for line in lines) + font_px <= columns:
            break
        font_px -= 1
    return font_px


def add_caption(rgb: NDArray[np.uint8], lines: Sequence[str]) -> NDArray[np.uint8]:
    """``rgb`` with a black band below it holding ``lines`` in white (burned-in annotation).

    The band is added below the image rather than drawn over it, so the caption
    never hides anatomy.
    """
    if not lines:
        raise OverlayError("lines: expected at least one caption line")
    font_px = caption_pixels(lines, rgb.shape[1])
    line_px = round(font_px * 1.35)
    band = np.zeros((line_px * len(lines) + font_px, rgb.shape[1], 3), dtype=np.uint8)
    band[:] = BAND_COLOUR
    picture = Image.fromarray(np.concatenate([rgb, band], axis=0))
    draw = ImageDraw.Draw(picture)
    font = caption_font(font_px)
    for index, line in enumerate(caption_text(line) for line in lines):
        draw.text((font_px // 2, rgb.shape[0] + font_px // 2 + index * line_px), line,
                  fill=TEXT_COLOUR, font=font)
    return np.asarray(picture, dtype=np.uint8).copy()


def overlay_heatmap(base: NDArray[np.uint8], heatmap: NDArray[np.floating], box: CropBox | None,
                    score: float, threshold: float) -> NDArray[np.uint8]:
    """``base`` (8-bit gray of the whole source) as RGB with the heatmap placed through ``box``
    and coloured by :data:`HEATMAP_RULE` (plain gray below the threshold)."""
    heat = scaled_heat(heatmap, score, threshold)
    if heat is None:
        return np.repeat(base[..., None], 3, axis=2)
    size = (int(base.shape[0]), int(base.shape[1]))
    return blend(base, place_heatmap(heat, size, box), opacity=place_heatmap(heatmap, size, box))
