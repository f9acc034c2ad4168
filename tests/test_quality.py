"""The quality gate: every rule, every reason, and the real samples."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    MPEG2MPML,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
)

from inference.own_outputs import GATEWAY_MANUFACTURER, SR_SERIES_DESCRIPTION, gateway_mark
from inference.pixels import PixelError, load_dicom
from inference.quality import (
    GateCode,
    QualityVerdict,
    check_quality,
    verdict_for_pixel_error,
)
from tests.conftest import require_shared_data
from tests.dicom_factory import (
    make_chest,
    make_gateway_sc,
    make_lateral,
    make_nm,
    make_sr,
    make_tiny,
    make_without_pixels,
)

SMALL: dict[str, Any] = {"rows": 256, "columns": 256, "bits_stored": 8}


def code_item(meaning: str, value: str = "X", scheme: str = "99LOCAL") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def with_tags(ds: Dataset, **tags: object) -> Dataset:
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def with_raw_element(ds: Dataset, tag: int, vr: str, value: bytes) -> Dataset:
    """Put a not-yet-parsed element in ``ds``, as a malformed file would (parsed on access)."""
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


@pytest.mark.parametrize("ds", [
    make_chest(**SMALL),
    make_chest(modality="DX", view_position="AP", **SMALL),
    make_chest(modality="SC", body_part="THORAX", **SMALL),
    make_chest(modality="OT", body_part="Tórax", **SMALL),
    make_chest(body_part=None, view_position=None, series_description="", **SMALL),
    make_chest(body_part="CHEST", view_position=None, series_description="Chest PA and LAT",
               **SMALL),
    make_chest(modality="DX", sop_class=None, photometric="MONOCHROME1", **SMALL),
], ids=["cr-pa", "dx-ap", "sc-thorax", "ot-torax-accent", "no-body-part-no-view",
        "study-of-both-views", "dx-mono1"])
def test_frontal_chest_radiographs_pass(ds: Dataset) -> None:
    assert check_quality(ds) == QualityVerdict.accept()


SKIPPED = [
    (make_gateway_sc(**SMALL), GateCode.GATEWAY_OUTPUT, "written by this gateway"),
    (with_tags(make_chest(**SMALL), SeriesDescription=SR_SERIES_DESCRIPTION),
     GateCode.GATEWAY_OUTPUT, "Series Description"),
    (make_sr(), GateCode.NOT_IMAGE, "not an image (SOP Class Comprehensive 3D SR Storage)"),
    (make_nm(), GateCode.MODALITY, "not a chest radiograph (Modality NM)"),
    (with_tags(make_chest(**SMALL), Modality=None), GateCode.MODALITY, "Modality missing"),
    (make_chest(modality="OT", body_part=None, **SMALL), GateCode.MODALITY,
     "Modality OT is classified only with a chest Body Part Examined"),
    (make_chest(modality="DX", sop_class=DigitalMammographyXRayImageStorageForPresentation,
                **SMALL), GateCode.SOP_CLASS, "Digital Mammography"),
    (make_chest(body_part="KNEE", **SMALL), GateCode.BODY_PART, "Body Part Examined 'KNEE'"),
    (with_tags(make_chest(body_part=None, **SMALL),
               AnatomicRegionSequence=Sequence([code_item("Thyroid")])),
     GateCode.BODY_PART, "Anatomic Region 'Thyroid'"),
    (make_chest(body_part=None, series_description="Dental panoramic", **SMALL),
     GateCode.BODY_PART, "names DENTAL"),
    (make_lateral(**SMALL), GateCode.VIEW, "View Position 'LL'"),
    (with_tags(make_chest(view_position=None, **SMALL),
               ViewCodeSequence=Sequence([code_item("left lateral", "R-10232", "SRT")])),
     GateCode.VIEW, "View Code 'left lateral'"),
    (make_chest(view_position=None, series_description="Chest LAT", **SMALL), GateCode.VIEW,
     "Series Description 'Chest LAT'"),
    (with_tags(make_chest(**SMALL), PatientAge="006Y"), GateCode.AGE,
     "outside intended use: patient aged 6 years (inference.min_patient_age_years = 15)"),
    (make_without_pixels(), GateCode.NO_PIXEL_DATA, "no Pixel Data (7FE0,0010)"),
    (make_tiny(), GateCode.SIZE, "image size 64x64 pixels is outside"),
    (with_tags(make_chest(**SMALL), Rows=12000), GateCode.SIZE, "256x12000"),
    (with_tags(make_chest(**SMALL), BitsAllocated=32), GateCode.PIXEL_FORMAT,
     "Bits Allocated 32"),
    (with_raw_element(make_chest(**SMALL), 0x00180015, "SQ", b"\x01\x02\x03\x04"),
     GateCode.UNREADABLE, "a header attribute cannot be read"),
]


@pytest.mark.parametrize("ds, code, reason", SKIPPED,
                         ids=[f"{i}-{case[1].value}" for i, case in enumerate(SKIPPED)])
def test_every_rule_skips_with_its_reason(ds: Dataset, code: GateCode, reason: str) -> None:
    verdict = check_quality(ds)
    assert not verdict.ok and verdict.code is code
    assert verdict.reason.startswith("skipped: ") and reason in verdict.reason, verdict.reason


def test_every_skip_code_is_exercised() -> None:
    # INVERTED and NOT_RADIOGRAPH are decided on decoded pixels (tests/test_polarity.py,
    # tests/test_ood.py), not on tags
    exercised = {case[1] for case in SKIPPED} | {GateCode.ACCEPTED, GateCode.INVERTED,
                                                 GateCode.NOT_RADIOGRAPH}
    assert exercised == set(GateCode)


def test_unsupported_transfer_syntax_is_a_pixel_format_reason() -> None:
    ds = make_chest(**SMALL)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    verdict = check_quality(ds)
    assert verdict.code is GateCode.PIXEL_FORMAT and "MPEG2" in verdict.reason


def test_gateway_marks_are_case_insensitive_and_named() -> None:
    ds = make_chest(manufacturer=GATEWAY_MANUFACTURER.upper(), **SMALL)
    assert gateway_mark(ds) == f"Manufacturer {GATEWAY_MANUFACTURER.upper()!r}"
    assert gateway_mark(make_chest(**SMALL)) is None


def test_size_limits_can_be_passed_in() -> None:
    ds = make_chest(**SMALL)
    assert check_quality(ds, min_side=300).code is GateCode.SIZE
    assert check_quality(ds, min_side=200, max_side=256).ok


def test_decoding_failure_reads_like_the_gate() -> None:
    verdict = verdict_for_pixel_error(PixelError("JPEG data truncated"))
    assert not verdict.ok and verdict.code is GateCode.PIXEL_FORMAT
    assert verdict.reason == "skipped: pixel data could not be decoded (JPEG data truncated)"


def test_rules_apply_in_order() -> None:
    """A lateral NM image is reported for its Modality, the more basic fact."""
    ds = make_nm(view_position="LL", sop_class=DigitalXRayImageStorageForPresentation)
    assert check_quality(ds).code is GateCode.MODALITY


# Real samples from ../shared/data/dicom (skipped when the folder is absent).

@pytest.mark.realdata
@pytest.mark.parametrize("name", [
    "cr-jpeg-baseline-mono2.dcm", "cr-jpeg-baseline-relabelled-mono1.dcm",
    "cr-mono1-10bit-no-file-meta.dcm", "dx-implicit-vr-8bit.dcm",
])
def test_real_chest_samples_pass(name: str) -> None:
    verdict = check_quality(load_dicom(require_shared_data("dicom/chest") / name))
    assert verdict.ok, verdict.reason


@pytest.mark.realdata
@pytest.mark.parametrize("name, code, reason", [
    ("cr-dental-jpeg-lossless-mono1.dcm", GateCode.BODY_PART,
     "not a chest radiograph (Series Description 'MODALITYLUT - TEETH' names TEETH)"),
    ("nm-thyroid-1.dcm", GateCode.MODALITY, "not a chest radiograph (Modality NM)"),
    ("nm-thyroid-2.dcm", GateCode.MODALITY, "not a chest radiograph (Modality NM)"),
    ("nm-thyroid-3.dcm", GateCode.MODALITY, "not a chest radiograph (Modality NM)"),
    ("ot-abdomen-implicit-vr.dcm", GateCode.MODALITY, "Modality OT is classified only"),
])
def test_real_not_chest_samples_are_skipped(name: str, code: GateCode, reason: str) -> None:
    verdict = check_quality(load_dicom(require_shared_data("dicom/not-chest") / name))
    assert not verdict.ok and verdict.code is code and reason in verdict.reason, verdict.reason
