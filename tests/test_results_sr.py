"""The TID 1500 SR: written, read back (pydicom, highdicom), checked by dciodvfy and dsrdump."""

from __future__ import annotations

import datetime
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage

from inference.own_outputs import GATEWAY_MANUFACTURER, SR_SERIES_DESCRIPTION, gateway_mark
from inference.quality import GateCode, check_quality
from inference.results import Finding
from results.codes import (
    COMBINATION_RULE,
    IMPRESSION,
    PLAIN_CHEST_XRAY,
    PROBABILITY,
    SR_DISCLAIMER,
    THRESHOLD_VALUE,
    FindingCode,
    UnknownLabelError,
    label_code,
)
from results.evidence import ClassifiedImage, ResultBuildError
from results.identity import GatewayIdentity, IdentityError
from results.sr import build_sr
from tests.dicom_validation import dciodvfy, dsrdump
from tests.results_support import IDENTITY, STUDY_UID, prediction, source, study_images

NOW = datetime.datetime(2024, 1, 2, 11, 30, 0)


def _write(images: list[ClassifiedImage], tmp_path: Path, name: str = "sr.dcm") -> Dataset:
    sr = build_sr(images, images[0].prediction, IDENTITY, now=NOW)
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return dcmread(path)


def _content(ds: Dataset) -> hd.sr.MeasurementReport:
    content = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def _groups(ds: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    return _content(ds).get_image_measurement_groups()


def _impressions(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[tuple[str, str]]:
    """(code value, scheme) of each coded Impression of a measurement group."""
    return [(str(e[0].ConceptCodeSequence[0].CodeValue),
             str(e[0].ConceptCodeSequence[0].CodingSchemeDesignator))
            for e in group.get_qualitative_evaluations(IMPRESSION)]


def _text(item: Dataset, meaning: str) -> list[str]:
    return [str(child.TextValue) for child in item.get("ContentSequence", [])
            if child.ValueType == "TEXT"
            and child.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def _nums(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> list[tuple[str, float, str]]:
    """(concept, value, algorithm name) of each NUM of a measurement group."""
    found = []
    for item in group[0].ContentSequence:
        if item.ValueType == "NUM":
            value = float(item.MeasuredValueSequence[0].NumericValue)
            found.append((item.ConceptNameCodeSequence[0].CodeValue, value,
                          _text(item, "Algorithm Name")[0]))
    return found


def test_sr_passes_dciodvfy_and_dsrdump_and_keeps_patient_and_study(tmp_path: Path) -> None:
    images = study_images((0.9, 0.1), (0.3, 0.7))
    ds = _write(images, tmp_path)
    report = dciodvfy(tmp_path / "sr.dcm")
    assert report.errors == (), report.output
    assert report.iod == "Comprehensive3DSR"
    src = images[0].dataset
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyID"):
        assert ds[keyword].value == src[keyword].value, keyword
    assert ds.SOPClassUID == Comprehensive3DSRStorage and ds.Modality == "SR"
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    tree = dsrdump(tmp_path / "sr.dcm")
    assert "Müller-Łukasiewicz" in tree
    assert '(56717001,SCT,"Tuberculosis")' in tree
    assert '(399208008,SCT,"Plain chest X-ray")' in tree
    assert 'Verification Flag   : UNVERIFIED' in tree


def test_sr_header_marks_own_output_and_names_the_algorithm(tmp_path: Path) -> None:
    ds = _write(study_images((0.9, 0.1)), tmp_path)
    assert ds.Manufacturer == GATEWAY_MANUFACTURER
    assert ds.SeriesDescription == SR_SERIES_DESCRIPTION
    assert gateway_mark(ds) is not None
    assert check_quality(ds).code is GateCode.GATEWAY_OUTPUT
    assert (ds.VerificationFlag, ds.CompletionFlag, ds.PreliminaryFlag) == (
        "UNVERIFIED", "COMPLETE", "PRELIMINARY")
    ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == GATEWAY_MANUFACTURER]
    assert len(ours) == 1
    equipment = ours[0]
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert "cxr-tb-vs-normal" in equipment.ManufacturerModelName
    assert list(equipment.SoftwareVersions) == ["0.1.0", "1.2.0", "1.2.0"]
    assert ds.PerformedProcedureCodeSequence[0].CodeValue == PLAIN_CHEST_XRAY.value
    assert ds.ContentDate == "20240102"


def test_device_observer_and_procedure(tmp_path: Path) -> None:
    ds = _write(study_images((0.9, 0.1)), tmp_path)
    content = _content(ds)
    device = content.get_observer_contexts()[0].observer_identifying_attributes
    assert isinstance(device, hd.sr.DeviceObserverIdentifyingAttributes)
    assert device.uid == IDENTITY.device_uid
    assert device.name == "CXRGW-TEST"
    assert device.manufacturer_name == GATEWAY_MANUFACTURER
    assert device.model_name == "cxr-tb-vs-normal + cxr-pneumonia-vs-tb"
    assert device.serial_number == "SN-42"
    procedures = [item for item in ds.ContentSequence
                  if item.ConceptNameCodeSequence[0].CodeMeaning == "Procedure reported"]
    assert procedures[0].ConceptCodeSequence[0].CodeValue == "399208008"


def test_one_group_per_image_and_one_for_the_study(tmp_path: Path) -> None:
    images = study_images((0.9, 0.1), (0.3, 0.7), (0.8, 0.9))
    groups = _groups(_write(images, tmp_path))
    assert len(groups) == 4
    expected = [FindingCode.TUBERCULOSIS, FindingCode.NO_ABNORMALITY_DETECTED,
                FindingCode.TUBERCULOSIS,  # TB above threshold: TB, pneumonia only a note
                FindingCode.TUBERCULOSIS]  # study: images[0]'s prediction
    for group, code in zip(groups, expected, strict=True):
        assert _impressions(group) == [(code.code.value, "SCT")]
    for image, group in zip(images, groups, strict=False):
        assert [s.referenced_sop_instance_uid for s in group.source_images] == [
            image.sop_instance_uid]
        assert image.sop_instance_uid in str(group.tracking_identifier)
    assert {s.referenced_sop_instance_uid for s in groups[-1].source_images} == {
        image.sop_instance_uid for image in images}
    assert groups[-1].tracking_identifier == "study"


def test_probabilities_and_thresholds_name_their_models(tmp_path: Path) -> None:
    groups = _groups(_write(study_images((0.873215, 0.104)), tmp_path))
    assert _nums(groups[0]) == [
        (PROBABILITY.value, 0.873215, "cxr-tb-vs-normal"),
        (THRESHOLD_VALUE.value, 0.42, "cxr-tb-vs-normal"),
        (PROBABILITY.value, 0.104, "cxr-pneumonia-vs-tb"),
        (THRESHOLD_VALUE.value, 0.5, "cxr-pneumonia-vs-tb"),
    ]
    units = {m.unit.value for m in groups[0].get_measurements()}
    assert units == {"1"}
    num = next(i for i in groups[0][0].ContentSequence if i.ValueType == "NUM")
    assert _text(num, "Algorithm Version") == ["1.2.0"]
    assert "probability of: tb (versus normal)" in _text(num, "Algorithm Parameters")
    assert _text(groups[0][0], "Algorithm Parameters") == [COMBINATION_RULE]


def test_report_states_impression_rule_and_disclaimer(tmp_path: Path) -> None:
    ds = _write(study_images((0.9, 0.8)), tmp_path)
    container = next(item for item in ds.ContentSequence
                     if item.ConceptNameCodeSequence[0].CodeValue == "C0034375")
    impression = next(item for item in container.ContentSequence if item.ValueType == "CODE")
    assert impression.ConceptCodeSequence[0].CodeValue == FindingCode.TUBERCULOSIS.code.value
    assert _text(container, "Comment") == [SR_DISCLAIMER]
    summary = _text(container, "Impression Description")[0]
    assert "Impression: TB suspected; pattern also consistent with pneumonia." in summary
    assert COMBINATION_RULE in summary
    assert "probability 0.900, threshold 0.420" in summary


@pytest.mark.parametrize(("tb", "pn", "finding", "code"), [
    (0.9, 0.1, Finding.TB_SUSPECTED, FindingCode.TUBERCULOSIS),
    (0.9, 0.8, Finding.TB_SUSPECTED, FindingCode.TUBERCULOSIS),  # issue 21 item 5
    (0.1, 0.9, Finding.NO_TB_FINDING, FindingCode.NO_ABNORMALITY_DETECTED),
])
def test_each_finding_is_coded(tmp_path: Path, tb: float, pn: float, finding: Finding,
                               code: FindingCode) -> None:
    images = study_images((tb, pn))
    assert images[0].prediction.finding is finding
    groups = _groups(_write(images, tmp_path))
    assert _impressions(groups[-1]) == [(code.code.value, "SCT")]


def test_uids_are_deterministic_and_change_with_inputs() -> None:
    images = study_images((0.9, 0.1), (0.3, 0.7))
    first = build_sr(images, images[0].prediction, IDENTITY, now=NOW)
    again = build_sr(images, images[0].prediction, IDENTITY, now=NOW + datetime.timedelta(hours=1))
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID, again.SeriesInstanceUID)
    grown = study_images((0.9, 0.1), (0.3, 0.7), (0.2, 0.2))
    bigger = build_sr(grown, grown[0].prediction, IDENTITY, now=NOW)
    assert bigger.SeriesInstanceUID == first.SeriesInstanceUID
    assert bigger.SOPInstanceUID != first.SOPInstanceUID
    new_model = [ClassifiedImage(i.dataset, prediction(0.9, 0.1, version="2.0.0")) for i in images]
    other = build_sr(new_model, new_model[0].prediction, IDENTITY, now=NOW)
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    assert len(first.SOPInstanceUID) <= 64 and first.SOPInstanceUID.startswith(IDENTITY.uid_root)


def test_image_library_when_projection_attributes_present(tmp_path: Path) -> None:
    ds = source(1)
    ds.ImagerPixelSpacing = [0.15, 0.15]
    images = [ClassifiedImage(ds, prediction(0.9, 0.1))]
    written = _write(images, tmp_path)
    assert dciodvfy(tmp_path / "sr.dcm").errors == ()
    assert "Image Library" in dsrdump(tmp_path / "sr.dcm")
    plain = _write(study_images((0.9, 0.1)), tmp_path, "plain.dcm")
    assert "Image Library" not in dsrdump(tmp_path / "plain.dcm")
    assert len(_groups(written)) == len(_groups(plain)) == 2


def test_inputs_from_two_studies_or_none_are_refused() -> None:
    other = source(2, study_uid=STUDY_UID + ".9")
    mixed = [*study_images((0.9, 0.1)), ClassifiedImage(other, prediction(0.2, 0.2))]
    with pytest.raises(ResultBuildError, match="StudyInstanceUID"):
        build_sr(mixed, mixed[0].prediction, IDENTITY)
    with pytest.raises(ResultBuildError, match="at least one"):
        build_sr([], prediction(0.9, 0.1), IDENTITY)
    twice = study_images((0.9, 0.1)) * 2
    with pytest.raises(ResultBuildError, match="twice"):
        build_sr(twice, twice[0].prediction, IDENTITY)


def test_labels_and_identity_settings_are_checked() -> None:
    assert label_code(" TB ") is FindingCode.TUBERCULOSIS
    with pytest.raises(UnknownLabelError, match="covid"):
        label_code("covid")
    with pytest.raises(IdentityError, match="uid_root"):
        GatewayIdentity(uid_root="1.2.3")
    with pytest.raises(IdentityError, match="uid_root"):
        GatewayIdentity(uid_root="1.02.3.")
    with pytest.raises(IdentityError, match="name"):
        GatewayIdentity(name=" ")
