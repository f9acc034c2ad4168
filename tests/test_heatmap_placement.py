"""The heatmap goes back through the crop preprocessing really applied (issue 21, item 3).

Preprocessing trims uniform padding, the dark surround and a fixed margin
before it resizes to the model input; the crop box it returns must place the
heatmap over the radiograph so that what the model looked at is where the
colour is. Synthetic radiographs with a padded border, a dark surround and
both carry a bright lesion-shaped blob; the heatmap's peak is put where the
blob is in the *model input* (found by image difference, independent of the
box), and the Secondary Capture must show the peak over the blob in the source.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.worker import prediction_from_json, prediction_to_json
from inference.pixels import dicom_to_gray
from inference.preprocess import (
    CROP_MARGIN,
    CropBox,
    crop_box,
    crop_margin,
    padding_box,
    preprocess_gray,
    preprocess_with_box,
    surround_box,
    trim_padding,
    trim_surround,
)
from inference.results import Prediction, combine
from results.evidence import ClassifiedImage
from results.overlay import fit_size, place_heatmap, scaled_heat
from results.secondary_capture import build_heatmap_sc, caption_lines
from tests.dicom_factory import chest_phantom, make_chest
from tests.dicom_validation import dciodvfy
from tests.results_support import IDENTITY, score

NOW = datetime.datetime(2024, 1, 2, 11, 30, 0)
MODEL_INPUT = 224
TOLERANCE = 0.03  # of the picture's longer side: a few pixels of a 640-pixel picture


def _texture(rows: int, columns: int, seed: int = 1) -> NDArray[np.float32]:
    """Content with no flat row or column and nothing dark: neither trim may cut into it."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.35, 1.0, (rows, columns)).astype(np.float32)


def _pad(content: NDArray[np.float32], top: int, bottom: int, left: int,
         right: int) -> NDArray[np.float32]:
    """White bars above and below, black bars beside: uniform padding (a canvas)."""
    out = np.pad(content, ((top, bottom), (0, 0)), constant_values=1.0)
    return np.pad(out, ((0, 0), (left, right)), constant_values=0.0)


def _surround(content: NDArray[np.float32], left: int, right: int, seed: int = 3) -> NDArray[np.float32]:
    """Dark, noisy sides (air outside the body): not flat, so only the surround trim takes them."""
    rng = np.random.default_rng(seed)
    rows = content.shape[0]
    side = lambda n: np.abs(rng.normal(0.0, 0.06, (rows, n))).astype(np.float32)  # noqa: E731
    return np.concatenate([side(left), content, side(right)], axis=1)


def test_crop_box_of_uniform_padding() -> None:
    content = _texture(400, 300)
    image = _pad(content, top=40, bottom=20, left=30, right=50)
    assert padding_box(image) == CropBox(460, 380, 40, 30, 440, 330)
    np.testing.assert_array_equal(padding_box(image).cut(image), trim_padding(image))
    dy, dx = round(400 * CROP_MARGIN), round(300 * CROP_MARGIN)
    assert crop_box(image) == CropBox(460, 380, 40 + dy, 30 + dx, 440 - dy, 330 - dx)
    assert (dy, dx) == (24, 18)


def test_crop_box_of_the_dark_surround() -> None:
    content = _texture(400, 300)
    image = _surround(content, left=80, right=60)  # 400 x 440
    assert padding_box(image) == CropBox(400, 440, 0, 0, 400, 440)  # noisy: not padding
    box = surround_box(image)
    np.testing.assert_array_equal(box.cut(image), trim_surround(image))
    assert (box.top, box.bottom) == (0, 400)
    step = 440 / 128  # the surround is found on a 128-pixel probe
    assert abs(box.left - 80) <= step and abs(box.right - 380) <= step
    assert box == CropBox(400, 440, 0, 79, 400, 382)  # pinned
    dy, dx = round(400 * CROP_MARGIN), round((382 - 79) * CROP_MARGIN)
    assert crop_box(image) == CropBox(400, 440, dy, 79 + dx, 400 - dy, 382 - dx)


def test_crop_box_of_padding_around_a_dark_surround() -> None:
    content = _texture(400, 300)
    image = _pad(_surround(content, left=80, right=60), top=30, bottom=50, left=40, right=20)
    box = crop_box(image)
    inner = surround_box(trim_padding(image))
    dy = round(400 * CROP_MARGIN)
    dx = round((inner.right - inner.left) * CROP_MARGIN)
    assert box == CropBox(480, 500, 30 + dy, 40 + inner.left + dx, 430 - dy, 40 + inner.right - dx)
    assert abs(box.left - (40 + 80 + dx)) <= 4 and abs(box.right - (40 + 380 - dx)) <= 4
    assert box == CropBox(480, 500, 54, 137, 406, 404)  # pinned


def test_the_box_is_exactly_what_preprocessing_cut() -> None:
    image = _pad(_surround(_texture(400, 300), 80, 60), 30, 50, 40, 20)
    unit, box = preprocess_with_box(image, 128)
    np.testing.assert_array_equal(unit, preprocess_gray(image, 128))
    np.testing.assert_array_equal(box.cut(image), crop_margin(trim_surround(trim_padding(image))))


# ---- the heatmap lands on the lesion ---------------------------------------------------------

CASES = ("padded", "surround", "padded-and-surround")


def _radiograph(case: str, blob: bool) -> tuple[NDArray[np.float32], tuple[int, int]]:
    """A chest phantom with a bright blob in the right upper lung, framed as ``case``;
    returns the image in [0, 1] and the blob's (row, column) in it."""
    rows, columns = 480, 400
    content = chest_phantom(rows, columns).astype(np.float32)
    cy, cx = int(rows * 0.36), int(columns * 0.28)
    if blob:
        y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
        content = np.clip(content + 0.6 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 9.0 ** 2)),
                          0.0, 1.0).astype(np.float32)
    top, left = 0, 0
    if "surround" in case:
        content, left = _surround(content, left=150, right=90), 150
    if "padded" in case:
        content = _pad(content, top=90, bottom=30, left=120, right=40)
        top, left = top + 90, left + 120
    return content, (cy + top, cx + left)


def _source(image: NDArray[np.float32]) -> Dataset:
    uid = f"1.2.826.0.1.3680043.8.498.77{image.shape[1]}"
    ds = make_chest(rows=image.shape[0], columns=image.shape[1], sop_uid=uid)
    ds.PixelData = np.round(image * 4095).astype(np.uint16).tobytes()
    return ds


def _peak_in_model_input(case: str) -> tuple[int, int]:
    """Where the blob is in the model input: the largest difference the blob makes there."""
    with_blob = preprocess_gray(_radiograph(case, True)[0], MODEL_INPUT)
    without = preprocess_gray(_radiograph(case, False)[0], MODEL_INPUT)
    diff = with_blob - without
    row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return int(row), int(col)


def _heatmap_at(row: int, col: int) -> NDArray[np.float32]:
    y, x = np.mgrid[0:MODEL_INPUT, 0:MODEL_INPUT].astype(np.float32)
    return np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)


def _prediction(heatmap: NDArray[np.float32] | None, box: CropBox | None,
                tb: float = 0.9) -> Prediction:
    tb_score, pn_score = score("tb", tb, 0.42), score("pn", 0.1, 0.5)
    return Prediction(tb_score, pn_score, combine(tb_score, pn_score), heatmap, box)


def _hottest(pixels: NDArray[np.uint8], rows: int) -> tuple[int, int]:
    """The reddest pixel of the picture part (above the caption band)."""
    rgb = pixels[:rows].astype(np.int32)
    redness = rgb[..., 0] - rgb[..., 2]
    row, col = np.unravel_index(int(np.argmax(redness)), redness.shape)
    return int(row), int(col)


@pytest.mark.parametrize("case", CASES)
def test_heatmap_peak_lands_on_the_blob_in_the_secondary_capture(case: str, tmp_path: Path) -> None:
    image, (blob_row, blob_col) = _radiograph(case, True)
    source = _source(image)
    gray = dicom_to_gray(source)
    _, box = preprocess_with_box(gray, MODEL_INPUT)
    heatmap = _heatmap_at(*_peak_in_model_input(case))
    sc = build_heatmap_sc(ClassifiedImage(source, _prediction(heatmap, box)), IDENTITY, now=NOW)
    sc.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    assert dciodvfy(tmp_path / "sc.dcm").errors == ()
    written = dcmread(tmp_path / "sc.dcm")
    size = fit_size(image.shape)  # type: ignore[arg-type]
    assert (int(written.Columns), int(written.Rows) > size[0]) == (size[1], True)
    peak = _hottest(written.pixel_array, size[0])
    expected = (blob_row * size[0] / image.shape[0], blob_col * size[1] / image.shape[1])
    limit = TOLERANCE * max(size)
    assert abs(peak[0] - expected[0]) <= limit and abs(peak[1] - expected[1]) <= limit, (peak, expected)
    # the placement of the fixed margin alone (before the crop box) misses the blob
    old = place_heatmap(heatmap, size, None)
    old_peak = np.unravel_index(int(np.argmax(old)), old.shape)
    assert max(abs(old_peak[0] - expected[0]), abs(old_peak[1] - expected[1])) > 2 * limit


def test_the_crop_box_travels_in_the_journal_json_and_old_rows_have_none() -> None:
    box = CropBox(480, 500, 54, 120, 426, 410)
    stored = prediction_to_json(_prediction(None, box))
    assert json.loads(stored)["crop_box"] == {"rows": 480, "columns": 500, "top": 54,
                                              "left": 120, "bottom": 426, "right": 410}
    assert prediction_from_json(stored).crop_box == box
    old = json.loads(stored)
    del old["crop_box"], old["notes"]
    restored = prediction_from_json(json.dumps(old))
    assert restored.crop_box is None and restored.notes == ()
    placed = place_heatmap(np.ones((8, 8), np.float32), (100, 100), restored.crop_box)
    assert placed[:6].max() == 0 and placed[6:94, 6:94].min() == 1.0  # the margin alone, as before


def test_colour_means_the_same_on_every_image(tmp_path: Path) -> None:
    heat = _heatmap_at(112, 112)
    assert scaled_heat(heat, 0.001, 0.42) is None
    assert float(scaled_heat(heat, 0.5, 0.42).max()) == pytest.approx(0.5, abs=0.01)  # type: ignore[union-attr]
    image = chest_phantom(300, 300).astype(np.float32)
    source = _source(image)
    box = preprocess_with_box(dicom_to_gray(source), MODEL_INPUT)[1]
    pictures = {}
    for tb in (0.001, 0.5, 0.99):
        prediction = _prediction(heat, box, tb)
        sc = build_heatmap_sc(ClassifiedImage(source, prediction), IDENTITY, now=NOW)
        rows = fit_size(image.shape)[0]  # type: ignore[arg-type]
        pictures[tb] = sc.pixel_array[:rows].astype(np.int32)
        lines = caption_lines(prediction)
        if tb < 0.42:
            assert any("none drawn, TB score below its threshold" in line for line in lines)
        else:
            assert any("colour = TB score x relative strength" in line for line in lines)
    low = pictures[0.001]
    assert (low[..., 0] == low[..., 1]).all() and (low[..., 1] == low[..., 2]).all()  # gray only
    redness = {tb: int((p[..., 0] - p[..., 2]).max()) for tb, p in pictures.items() if tb > 0.1}
    assert redness[0.99] > redness[0.5] + 40  # a weaker score is never as red
