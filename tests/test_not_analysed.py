"""Issue 21 item 2: the "not analysed" SR and ORU, validated (dciodvfy, dsrdump, hl7apy STRICT).

The end-to-end case (a skull CR by storescu -> not-analysed SR in Orthanc, ORU at the
MLLP listener) is in ``tests/test_report_outcomes_e2e.py``.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pydicom
import pytest
from highdicom.sr import Comprehensive3DSR
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from config.schema import Hl7Destination
from delivery.outbox import Outbox, RowState
from delivery.sink import OutboxSink
from dicom_node.aggregation import NotAnalysedStudy, SkippedImage
from hl7_link.escaping import unescape
from hl7_link.oru import Hl7Endpoints, NotAnalysedStatus, StudyFacts, build_not_analysed_oru
from inference.own_outputs import gateway_mark
from results.codes import SR_DISCLAIMER
from results.not_analysed import build_not_analysed_sr
from tests.dicom_factory import write
from tests.dicom_validation import dciodvfy, dsrdump
from tests.results_support import IDENTITY, STUDY_UID, source
from tests.sr_content import content_items

NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
TEXT = "not analysed: not a chest radiograph (Body Part Examined 'SKULL')"
AGE_TEXT = ("not analysed: outside intended use: patient aged 6 years "
            "(inference.min_patient_age_years = 15)")


def _texts(sr: pydicom.Dataset) -> list[str]:
    return [str(item.TextValue) for item in content_items(sr) if item.ValueType == "TEXT"]


@pytest.mark.parametrize("text", [TEXT, AGE_TEXT])
def test_not_analysed_sr_passes_dciodvfy_and_says_why(text: str, tmp_path: Path) -> None:
    images = [source(1, body_part="SKULL"), source(2, body_part="SKULL")]
    sr = build_not_analysed_sr(images, text, IDENTITY, NOW)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    report = dciodvfy(path)
    assert report.errors == (), report.output
    tree = dsrdump(path)
    assert "Imaging Measurement Report" in tree and "Impression Description" in tree
    read = pydicom.dcmread(path)
    assert text in _texts(read) and SR_DISCLAIMER in _texts(read)
    assert not any(item.ValueType == "NUM" for item in content_items(read))  # no score
    assert not any(item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue
                   == "121073" for item in content_items(read))  # no coded impression
    assert read.StudyInstanceUID == STUDY_UID and gateway_mark(read) is not None
    assert read.VerificationFlag == "UNVERIFIED"
    again = build_not_analysed_sr(images[::-1], text, IDENTITY, NOW)
    assert again.SOPInstanceUID == sr.SOPInstanceUID  # handed over again: nothing new queued
    assert Comprehensive3DSR.from_dataset(read).SOPInstanceUID == sr.SOPInstanceUID


def test_not_analysed_oru_validates_with_its_statuses() -> None:
    facts = StudyFacts.from_dataset(source(1))
    text = build_not_analysed_oru(facts, TEXT, Hl7Endpoints(), "NA0001", NOW)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    order = message.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == NotAnalysedStatus.ORDER == "I"
    obx = [o.obx for o in order.oru_r01_observation]
    assert {o.obx_11.to_er7() for o in obx} == {NotAnalysedStatus.OBSERVATION.value}
    assert obx[0].obx_3.to_er7() == "121073^Impression^DCM"
    assert unescape("".join(f.to_er7() for f in obx[0].obx_5)) == TEXT
    assert [o.obx_2.to_er7() for o in obx] == ["TX", "ST", "TX"]


def test_sink_queues_one_sr_and_one_oru_per_destination(tmp_path: Path) -> None:
    files = [write(source(i, body_part="SKULL"), tmp_path / f"{i}.dcm") for i in (1, 2)]
    study = NotAnalysedStudy(STUDY_UID, 2, tuple(
        SkippedImage(str(pydicom.dcmread(f).SOPInstanceUID), f, "not a chest radiograph")
        for f in files))
    outbox = Outbox(tmp_path / "journal.sqlite")
    sink = OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"],
                      [Hl7Destination(name="ris", host="127.0.0.1", port=2575)])
    sink.study_not_analysed(study)
    sink.study_not_analysed(study)  # after a crash: handed over again
    rows = outbox.rows(RowState.PENDING, 10)
    assert sorted(r.kind.value for r in rows) == ["oru", "sr"]
    assert "not analysed: not a chest radiograph" in next(r.payload for r in rows
                                                           if r.kind.value == "oru")
