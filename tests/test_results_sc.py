"""The heatmap Secondary Capture: pixel maths (unit) and the written object (dciodvfy, read back)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from inference.own_outputs import GATEWAY_MANUFACTURER, HEATMAP_SERIES_DESCRIPTION, gateway_mark
from inference.pixels import dicom_to_gray
from inference.quality import GateCode, check_quality
from inference.results import Prediction
from results.codes import SC_DISCLAIMER
from results.evidence import ClassifiedImage, ResultBuildError
from results.overlay import (
    MAX_SIDE,
    MIN_COLUMNS,
    OverlayError,
    add_caption,
    blend,
    caption_font,
    caption_pixels,
    caption_text,
    colourise,
    fit_size,
    gray_to_uint8,
    place_heatmap,
)
from results.secondary_capture import build_heatmap_sc, caption_lines, render_heatmap_picture
from tests.dicom_validation import dciodvfy
from tests.results_support import IDENTITY, prediction, source, study_images

NOW = datetime.datetime(2024, 1, 2, 11, 30, 0)


def _write(image: ClassifiedImage, tmp_path: Path, name: str = "sc.dcm",
           max_side: int = MAX_SIDE) -> Dataset:
    sc = build_heatmap_sc(image, IDENTITY, now=NOW, max_side=max_side)
    sc.save_as(tmp_path / name, enforce_file_format=True)
    return dcmread(tmp_path / name)


def test_fit_size_caps_the_long_side_and_lifts_narrow_images() -> None:
    assert fit_size((3000, 2400), 2048) == (2048, 1638)
    assert fit_size((1024, 1024), 2048) == (1024, 1024)
    assert fit_size((256, 256), 2048) == (MIN_COLUMNS, MIN_COLUMNS)
    assert fit_size((256, 256), 300) == (300, 300)
    with pytest.raises(OverlayError, match="shape"):
        fit_size((0, 10))


def test_heatmap_is_placed_over_the_crop_box_only() -> None:
    heat = np.ones((8, 8), dtype=np.float32)
    placed = place_heatmap(heat, (100, 200), margin=0.1)
    assert placed[:10].max() == 0.0 and placed[90:].max() == 0.0
    assert placed[:, :20].max() == 0.0 and placed[:, 180:].max() == 0.0
    assert placed[10:90, 20:180].min() == pytest.approx(1.0)
    corner = np.zeros((10, 10), dtype=np.float32)
    corner[0, 9] = 1.0  # top right of the model input
    spot = place_heatmap(corner, (100, 100), margin=0.0)
    row, col = np.unravel_index(int(spot.argmax()), spot.shape)
    assert row < 10 and col > 90


def test_bad_heatmaps_and_images_are_refused() -> None:
    with pytest.raises(OverlayError, match="NaN"):
        place_heatmap(np.full((4, 4), np.nan, dtype=np.float32), (10, 10))
    with pytest.raises(OverlayError, match="2-D"):
        place_heatmap(np.zeros((4, 4, 3), dtype=np.float32), (10, 10))
    with pytest.raises(OverlayError, match="shape"):
        blend(np.zeros((4, 4), dtype=np.uint8), np.zeros((5, 4), dtype=np.float32))
    no_heatmap = prediction(0.9, 0.1)
    with pytest.raises(ResultBuildError, match="heatmap"):
        render_heatmap_picture(np.zeros((64, 64), dtype=np.float32), no_heatmap)


def test_blend_keeps_gray_where_cold_and_colours_where_hot() -> None:
    gray = np.full((2, 2), 100, dtype=np.uint8)
    heat = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    out = blend(gray, heat, strength=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]
    red, green, blue = out[0, 1].tolist()
    assert red > green + 40 and red > blue + 40  # JET at 1.0 is dark red
    assert colourise(np.array([[0.0]], dtype=np.float32))[0, 0, 2] > 100  # JET at 0 is blue


def test_caption_is_burned_into_a_band_below_the_image() -> None:
    rgb = np.full((200, 640, 3), 90, dtype=np.uint8)
    lines = caption_lines(prediction(0.9, 0.1, heatmap=True))
    out = add_caption(rgb, lines)
    assert out.shape[0] > 200 and out.shape[1] == 640
    assert (out[:200] == 90).all()  # the image itself is untouched
    band = out[200:]
    assert band.max() == 255 and (band == 0).mean() > 0.5  # white text on black
    font = caption_font(caption_pixels(lines, 640))
    assert max(font.getlength(caption_text(line)) for line in lines) <= 640
    with pytest.raises(OverlayError, match="lines"):
        add_caption(rgb, [])


def test_caption_says_finding_scores_thresholds_models_and_disclaimer() -> None:
    lines = caption_lines(prediction(0.873, 0.104, heatmap=True))
    text = "\n".join(lines)
    assert "AI finding: TB suspected" in text
    assert "score 0.873, threshold 0.420 (cxr-tb-vs-normal 1.2.0)" in text
    assert "score 0.104, threshold 0.500 (cxr-pneumonia-vs-tb 1.2.0)" in text
    assert lines[-1] == SC_DISCLAIMER
    assert caption_text(SC_DISCLAIMER) == "AI result - not a diagnosis"


def test_sc_passes_dciodvfy_and_keeps_patient_and_study(tmp_path: Path) -> None:
    image = study_images((0.9, 0.1), heatmap=True)[0]
    ds = _write(image, tmp_path)
    report = dciodvfy(tmp_path / "sc.dcm")
    assert report.errors == (), report.output
    assert report.iod == "SCImage"
    src = image.dataset
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert ds[keyword].value == src[keyword].value, keyword
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
    assert ds.BurnedInAnnotation == "YES"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.ImageComments == SC_DISCLAIMER
    assert list(ds.PatientOrientation) == list(src.PatientOrientation)


def test_sc_is_recognised_as_own_output(tmp_path: Path) -> None:
    ds = _write(study_images((0.9, 0.1), heatmap=True)[0], tmp_path)
    assert ds.Manufacturer == GATEWAY_MANUFACTURER
    assert ds.SeriesDescription == HEATMAP_SERIES_DESCRIPTION
    assert gateway_mark(ds) is not None
    assert check_quality(ds).code is GateCode.GATEWAY_OUTPUT
    equipment = [e for e in ds.ContributingEquipmentSequence
                 if e.Manufacturer == GATEWAY_MANUFACTURER]
    assert "cxr-pneumonia-vs-tb" in equipment[0].ManufacturerModelName


def test_sc_pixels_show_the_radiograph_and_the_hot_spot(tmp_path: Path) -> None:
    image = study_images((0.9, 0.1), heatmap=True)[0]
    ds = _write(image, tmp_path)
    pixels = ds.pixel_array.astype(np.int32)
    size = (int(ds.Columns), int(ds.Columns))  # square source: the image part is square
    gray = gray_to_uint8(dicom_to_gray(image.dataset), size).astype(np.int32)
    heat = place_heatmap(image.prediction.heatmap, size)  # type: ignore[arg-type]
    cold = heat < 0.01
    assert np.abs(pixels[:size[0]][cold] - gray[cold][:, None]).max() <= 1
    assert gray[cold].std() > 20  # the radiograph itself, not a flat fill
    hot = np.unravel_index(int(heat.argmax()), heat.shape)
    r, g, b = pixels[hot]
    assert r > b + 40  # red at the peak
    assert int(ds.Rows) > size[0]  # the caption band


def test_monochrome1_source_gives_the_same_picture(tmp_path: Path) -> None:
    p = prediction(0.9, 0.1, heatmap=True)
    mono2 = _write(ClassifiedImage(source(1), p), tmp_path, "m2.dcm")
    mono1 = _write(ClassifiedImage(source(1, photometric="MONOCHROME1"), p), tmp_path, "m1.dcm")
    diff = np.abs(mono1.pixel_array.astype(int) - mono2.pixel_array.astype(int))
    assert diff.max() <= 2


def test_large_images_are_scaled_down(tmp_path: Path) -> None:
    image = ClassifiedImage(source(1, rows=512, columns=400), prediction(0.9, 0.1, heatmap=True))
    ds = _write(image, tmp_path, max_side=300)
    assert int(ds.Columns) == round(400 * 300 / 512)
    assert dciodvfy(tmp_path / "sc.dcm").errors == ()


def test_missing_orientation_is_left_empty_not_invented(tmp_path: Path) -> None:
    src = source(1)
    del src.PatientOrientation
    ds = _write(ClassifiedImage(src, prediction(0.9, 0.1, heatmap=True)), tmp_path)
    assert "PatientOrientation" in ds and not ds.PatientOrientation
    assert dciodvfy(tmp_path / "sc.dcm").errors == ()


def test_sc_uid_is_deterministic_per_image_and_model() -> None:
    images = study_images((0.9, 0.1), (0.2, 0.3), heatmap=True)
    first = build_heatmap_sc(images[0], IDENTITY, now=NOW)
    again = build_heatmap_sc(images[0], IDENTITY, now=NOW + datetime.timedelta(days=1))
    second = build_heatmap_sc(images[1], IDENTITY, now=NOW)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    newer = ClassifiedImage(images[0].dataset, prediction(0.9, 0.1, True, version="2.0.0"))
    assert build_heatmap_sc(newer, IDENTITY, now=NOW).SOPInstanceUID != first.SOPInstanceUID


def test_given_gray_image_is_used_without_decoding() -> None:
    header_only = source(1, pixels=False)
    gray = np.full((300, 300), 0.5, dtype=np.float32)
    p: Prediction = prediction(0.1, 0.1, heatmap=True)
    sc = build_heatmap_sc(ClassifiedImage(header_only, p), IDENTITY, gray=gray, now=NOW)
    assert int(sc.Columns) == MIN_COLUMNS
