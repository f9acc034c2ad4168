"""The one preprocessing function shared by training and serving.

A model sees at serve time exactly what it saw in training: the training
pipeline caches the output of :func:`preprocess_gray` and the serving path
calls the same function on the grayscale image that
:mod:`inference.pixels` made from a DICOM or a PNG/JPEG.

The steps remove capture differences that a classifier could otherwise learn
instead of the disease (see "Known traps" in the data README):

1. trim uniform padding: rows and columns at the edges that are one flat
   grey (black or white bars, the canvas a radiograph was pasted or scanned
   onto) are cut away, so that a padded image of a normal chest does not look
   like a framed film (the scanned TB films of the training data);
2. trim the dark surround: columns (rows) at the edges that are mostly air
   outside the body, the dark region connected to the image edge, are cut
   away, so that a wide field of view (a digital radiograph with black sides,
   arms and shoulders) is framed like a tight one (the scanned films); in the
   training data the TB images are tightly framed and the normals are not, so
   a model learns "dark sides = normal" unless they are gone;
3. crop a fixed margin (film borders, collimator edges, burned-in text sit
   there far more often than lung);
4. resize to the model input with area interpolation (size-independent; a
   large image is first block-averaged by a whole factor, OpenCV's fast
   integer path; ``benchmarks/inference_speed.py`` prints the preprocessing time);
5. percentile window (0.5 %–99.5 %) to [0, 1] (bit-depth and exposure
   independent; a 10-bit and a 16-bit image of the same content agree);
6. CLAHE (contrast-limited adaptive histogram equalisation), which evens out
   the global contrast of film photographs and digital radiographs.

Steps 1-3 only cut: :func:`crop_box` says which rectangle of the source
survives them (:class:`CropBox`, source pixel coordinates), and
:func:`preprocess_with_box` returns it with the model input, so a heatmap in
model-input geometry is laid back over exactly that rectangle
(:func:`results.overlay.place_heatmap`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

DEFAULT_INPUT_SIZE = 224
CROP_MARGIN = 0.06
PAD_TOLERANCE = 0.02  # a padding row/column varies by less than 2 % of the image's grey range
PAD_LIMIT = 0.25  # at most a quarter of the height (width) is trimmed from each side
PAD_PROBE = 256  # padding is looked for on a subsample of about this many pixels a side
SURROUND_PROBE = 128  # the dark surround is looked for on a probe of this many pixels a side
SURROUND_DARK = 0.12  # surround: darker than 12 % of the probe's 0.5-99.5 percentile range ...
SURROUND_SHARE = 0.5  # ... and connected to the edge; a column (row) more than half surround goes
FAST_RESIZE_HEADROOM = 3  # block-average a large image down to >= 3x the model input first
WINDOW_PERCENTILES = (0.5, 99.5)
CHECK_SHRINK_SIDE = 256  # the pixel checks' thumbnails come from an image shrunk to about this side
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = 8


class PreprocessError(ValueError):
    """The image cannot be turned into a model input (empty, flat, wrong shape)."""


@dataclass(frozen=True)
class CropBox:
    """The rectangle of the source image the model saw: rows ``top:bottom``, columns
    ``left:right`` (end exclusive) of a ``rows`` x ``columns`` source, in source pixels.

    Every trim (uniform padding, dark surround) and the fixed margin are in it;
    the model input is this rectangle resized to a square.
    """

    rows: int
    columns: int
    top: int
    left: int
    bottom: int
    right: int

    def inner(self, top: int, left: int, bottom: int, right: int) -> CropBox:
        """The box of a further cut, given in this box's own coordinates."""
        return CropBox(self.rows, self.columns, self.top + top, self.left + left,
                       self.top + bottom, self.left + right)

    def cut(self, gray: NDArray[Any]) -> NDArray[Any]:
        return gray[self.top:self.bottom, self.left:self.right]

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "columns": self.columns, "top": self.top, "left": self.left,
                "bottom": self.bottom, "right": self.right}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropBox:
        return cls(**{k: int(data[k]) for k in ("rows", "columns", "top", "left", "bottom", "right")})


def _whole(gray: NDArray[Any]) -> CropBox:
    h, w = gray.shape
    return CropBox(h, w, 0, 0, h, w)


def _flat_run(flat: NDArray[np.bool_], limit: int) -> int:
    """How many leading entries of ``flat`` are True, at most ``limit``."""
    if limit <= 0 or flat.all():
        return 0  # nothing but flat lines: leave the image alone (percentile_window refuses it)
    return min(int(np.argmin(flat)), limit)


def trim_padding(gray: NDArray[np.float32], tolerance: float = PAD_TOLERANCE,
                 limit: float = PAD_LIMIT) -> NDArray[np.float32]:
    """Cut the uniform rows and columns off each edge of ``gray`` (:func:`padding_box`)."""
    return padding_box(gray, tolerance, limit).cut(gray)


def padding_box(gray: NDArray[np.float32], tolerance: float = PAD_TOLERANCE,
                limit: float = PAD_LIMIT) -> CropBox:
    """What is left of ``gray`` without the uniform rows and columns at each edge (padding, a flat canvas).

    A row (column) is padding when its standard deviation is below ``tolerance``
    of the image's 0.5–99.5 percentile range, so the rule is bit-depth
    independent; at most ``limit`` of each side goes. Rows and columns are
    trimmed in turns (a white bar below and black bars beside it: the rows of the
    bar are flat only once the black columns are gone). Measured on a subsample
    (every ``k``-th pixel, ``k = min side // PAD_PROBE``), so a 3000-pixel image
    costs about as much as a 256-pixel one; the cut never enters the content and
    leaves at most ``k - 1`` pixels of padding per side.
    """
    h, w = gray.shape
    k = max(1, min(h, w) // PAD_PROBE)
    probe = gray[::k, ::k]
    low, high = np.percentile(probe[::2, ::2], WINDOW_PERCENTILES)  # the grey range, roughly
    if high - low <= 0:
        return _whole(gray)
    tol = tolerance * float(high - low)
    ph, pw = probe.shape
    max_rows, max_cols = int(ph * limit), int(pw * limit)  # per side
    top, bottom, left, right = 0, ph, 0, pw
    for _ in range(3):
        box = probe[top:bottom, left:right]
        rows, cols = box.std(axis=1) < tol, box.std(axis=0) < tol
        cut_top, cut_bottom = _flat_run(rows, max_rows - top), _flat_run(rows[::-1], max_rows - (ph - bottom))
        cut_left, cut_right = _flat_run(cols, max_cols - left), _flat_run(cols[::-1], max_cols - (pw - right))
        if not (cut_top or cut_bottom or cut_left or cut_right):
            break
        top, bottom, left, right = top + cut_top, bottom - cut_bottom, left + cut_left, right - cut_right
    # probe row i is pixel row i * k: the content starts after the last flat probe row and
    # ends before the first flat one, so cut no further (up to k - 1 pixels of padding stay)
    y0, x0 = (top - 1) * k + 1 if top else 0, (left - 1) * k + 1 if left else 0
    return CropBox(h, w, y0, x0, min(h, bottom * k), min(w, right * k))


def _probe(gray: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """A ``size`` x ``size`` area-resized view of ``gray``, strided first when it is large."""
    k = max(1, min(gray.shape) // (2 * size))
    return np.asarray(cv2.resize(gray[::k, ::k], (size, size), interpolation=cv2.INTER_AREA), np.float32)


def surround_mask(gray: NDArray[np.float32], dark: float = SURROUND_DARK,
                  probe: int = SURROUND_PROBE) -> NDArray[np.bool_]:
    """The dark surround of ``gray`` on a ``probe``-pixel grid: dark pixels connected to the edge.

    Dark means below ``dark`` of the probe's 0.5–99.5 percentile range, so the
    rule is bit-depth and exposure independent. Air outside the body (black
    sides, the corners above the shoulders) is connected to the edge; the
    lungs are not, the body's soft tissue lies between.
    """
    small = _probe(gray, probe)
    low, high = np.percentile(small, WINDOW_PERCENTILES)
    if high - low <= 0:
        return np.zeros(small.shape, bool)
    dark_px = ((small - low) < dark * (high - low)).astype(np.uint8)
    _, labels = cv2.connectedComponents(dark_px, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def trim_surround(gray: NDArray[np.float32], share: float = SURROUND_SHARE,
                  limit: float = PAD_LIMIT) -> NDArray[np.float32]:
    """Cut the dark surround off ``gray`` (:func:`surround_box`)."""
    return surround_box(gray, share, limit).cut(gray)


def surround_box(gray: NDArray[np.float32], share: float = SURROUND_SHARE,
                 limit: float = PAD_LIMIT) -> CropBox:
    """What is left of ``gray`` without the edge columns and rows that are mostly dark
    surround (air outside the body).

    A column (row) goes when more than ``share`` of it is in :func:`surround_mask`;
    cuts run inwards from each edge and stop at the first column (row) that is
    not, at most ``limit`` of each side. Found on a small probe, so the cost
    does not grow with the image; the cut is rounded down to whole pixels.
    """
    mask = surround_mask(gray)
    h, w = gray.shape
    p = mask.shape[0]
    most = int(p * limit)
    cols, rows = mask.mean(axis=0) > share, mask.mean(axis=1) > share
    top, bottom = _flat_run(rows, most), _flat_run(rows[::-1], most)
    left, right = _flat_run(cols, most), _flat_run(cols[::-1], most)
    return CropBox(h, w, top * h // p, left * w // p, h - bottom * h // p, w - right * w // p)


def crop_margin(gray: NDArray[np.float32], margin: float = CROP_MARGIN) -> NDArray[np.float32]:
    """Cut ``margin`` of the height and width away on every side."""
    return margin_box(gray.shape, margin).cut(gray)


def margin_box(shape: tuple[int, ...], margin: float = CROP_MARGIN) -> CropBox:
    """The central box of a ``shape`` image without ``margin`` of its height and width on every side."""
    h, w = int(shape[0]), int(shape[1])
    dy, dx = int(round(h * margin)), int(round(w * margin))
    return CropBox(h, w, dy, dx, h - dy, w - dx)


def crop_box(gray: NDArray[np.float32]) -> CropBox:
    """Steps 1-3 as one rectangle of ``gray``: padding trimmed, then the dark surround of
    what is left, then the margin of what is left after that."""
    box = padding_box(gray)
    padded = box.cut(gray)
    surround = surround_box(padded)
    box = box.inner(surround.top, surround.left, surround.bottom, surround.right)
    margin = margin_box((box.bottom - box.top, box.right - box.left))
    return box.inner(margin.top, margin.left, margin.bottom, margin.right)


def whole_factor_shrink(gray: NDArray[np.float32], min_side: int = CHECK_SHRINK_SIDE) -> NDArray[np.float32]:
    """``gray`` block-averaged by the largest whole factor ``k`` that keeps its shorter side at
    ``min_side`` or more (its top-left ``k``-divisible part); unchanged when ``k`` < 2.

    OpenCV's whole-factor area path, several times quicker on a large image than
    one area resize by an arbitrary ratio. The pixel checks (:mod:`inference.ood`,
    :mod:`inference.polarity`) take their thumbnails from it; shrinking an image
    already shrunk this way changes nothing, so the engine shrinks once for both.
    """
    k = min(gray.shape) // min_side if gray.ndim == 2 else 0
    if k < 2:
        return gray
    rows, cols = gray.shape[0] // k, gray.shape[1] // k
    return np.asarray(cv2.resize(gray[:rows * k, :cols * k], (cols, rows),
                                 interpolation=cv2.INTER_AREA), dtype=np.float32)


def area_resize(gray: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Area-average ``gray`` to ``size`` x ``size``.

    An image at least six times the target is first reduced by a whole factor
    ``k`` to no less than three times the target (block means of its centre
    ``k``-divisible part, at most ``k - 1`` pixels left out per axis), OpenCV's
    fast path; the rest of the way is a plain area resize. The geometry then
    differs from one direct area resize by at most a sixth of an output pixel.
    Smaller images (the 256-pixel training images) take the direct path unchanged.
    """
    h, w = gray.shape
    k = min(h, w) // (FAST_RESIZE_HEADROOM * size)
    if k >= 2:
        hh, ww = (h // k) * k, (w // k) * k
        oy, ox = (h - hh) // 2, (w - ww) // 2
        gray = np.asarray(cv2.resize(gray[oy: oy + hh, ox: ox + ww], (ww // k, hh // k),
                                     interpolation=cv2.INTER_AREA), np.float32)
    return np.asarray(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA), np.float32)


def percentile_window(
    gray: NDArray[np.floating], percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> NDArray[np.float32]:
    """Map the [low, high] percentile range to [0, 1], clipping outside it."""
    low, high = np.percentile(gray, percentiles)
    if high - low < 1e-6:
        raise PreprocessError("image has no contrast (all pixels about equal)")
    out = (gray.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0)


def equalise(unit: NDArray[np.float32]) -> NDArray[np.float32]:
    """CLAHE on the 8-bit version of a [0, 1] image; returns [0, 1] float32."""
    u8 = np.round(unit * 255.0).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    return clahe.apply(u8).astype(np.float32) / np.float32(255.0)


def preprocess_gray(gray: NDArray[np.generic], size: int = DEFAULT_INPUT_SIZE) -> NDArray[np.float32]:
    """Turn a 2-D grayscale image (any size, any bit depth, bright = dense) into a model input.

    ``gray`` must already be in presentation space: MONOCHROME2 sense, modality
    and VOI LUTs applied (see :func:`inference.pixels.dicom_to_gray`).
    Returns ``(size, size)`` float32 in [0, 1].
    """
    return preprocess_with_box(gray, size)[0]


def preprocess_with_box(gray: NDArray[np.generic],
                        size: int = DEFAULT_INPUT_SIZE) -> tuple[NDArray[np.float32], CropBox]:
    """:func:`preprocess_gray` and the :class:`CropBox` of ``gray`` the model input shows."""
    units, box = preprocess_sizes(gray, (size,))
    return units[size], box


def preprocess_sizes(gray: NDArray[np.generic],
                     sizes: Iterable[int]) -> tuple[dict[int, NDArray[np.float32]], CropBox]:
    """:func:`preprocess_with_box` for each of ``sizes``: the crop (steps 1-3) does not
    depend on the size, so it is found once and only steps 4-6 run per size."""
    if gray.ndim != 2:
        raise PreprocessError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if min(gray.shape) < 32:
        raise PreprocessError(f"image too small ({gray.shape[1]}x{gray.shape[0]} pixels)")
    image = gray.astype(np.float32, copy=False)
    box = crop_box(image)
    cropped = box.cut(image)
    return {size: equalise(percentile_window(area_resize(cropped, size))) for size in sizes}, box


def to_model_batch(images: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    """Stack preprocessed images into the ``(n, size, size, 1)`` model input."""
    return np.stack(images)[..., np.newaxis].astype(np.float32)


IDENTITY_VIEW = "identity"


def parse_view(name: str) -> tuple[float, bool]:
    """``identity``, ``flip``, ``zoom<F>`` or ``zoom<F>-flip`` -> (zoom factor, mirrored)."""
    text, flip = name.strip().lower(), False
    if text == IDENTITY_VIEW:
        return 1.0, False
    if text == "flip":
        return 1.0, True
    if text.endswith("-flip"):
        text, flip = text[: -len("-flip")], True
    if text.startswith("zoom"):
        try:
            factor = float(text[len("zoom"):])
        except ValueError:
            factor = 0.0
        if 1.0 <= factor <= 2.0:
            return factor, flip
    raise ValueError(f"unknown test-time view {name!r}: expected identity, flip, zoom<F> or "
                     "zoom<F>-flip with 1 <= F <= 2 (e.g. zoom1.2-flip)")


def view_stack(unit: NDArray[np.float32], views: tuple[str, ...]) -> NDArray[np.float32]:
    """The ``(len(views), s, s)`` stack of views of one preprocessed image, first view first.

    A model's score is the mean of its scores over its views (``model.json``
    ``views``); training evaluation and serving both build the views here.
    ``zoom<F>`` keeps the central 1/F of each side (more lung, less border),
    ``flip`` mirrors left and right.
    """
    size = unit.shape[0]
    out = []
    for name in views or (IDENTITY_VIEW,):
        factor, flip = parse_view(name)
        img = unit
        if factor > 1.0:
            cut = int(round(size * (1.0 - 1.0 / factor) / 2.0))
            img = np.asarray(cv2.resize(unit[cut: size - cut, cut: size - cut], (size, size),
                                        interpolation=cv2.INTER_AREA), np.float32)
        out.append(img[:, ::-1] if flip else img)
    return np.stack(out).astype(np.float32)
