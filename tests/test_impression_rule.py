"""Issue 21 item 5: a TB score at or above its threshold always reads "TB suspected"; the
pneumonia-vs-TB reading is only a secondary note -- the same text in the SR, the ORU, the
Secondary Capture caption and the console (API and worklist)."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from dicom_node.aggregation import Aggregator, ReportPolicy
from dicom_node.journal import Journal
from dicom_node.worklist import study_summary
from hl7_link.escaping import unescape
from hl7_link.oru import Hl7Endpoints, StudyFacts, build_oru
from inference.results import (
    PNEUMONIA_NOTE,
    ClassifierScore,
    Finding,
    impression,
    impression_from_scores,
    prediction_to_dict,
)
from results.codes import FindingCode, impression_code, impression_summary
from results.secondary_capture import caption_lines
from tests.dicom_factory import make_chest
from tests.results_support import prediction, source
from tests.test_report_failures import RecordingSink
from tests.test_worker_aggregation import ScriptedPredictor, drain, receive

NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
BOTH = "TB suspected; pattern also consistent with pneumonia"


@pytest.mark.parametrize(("tb", "pn", "finding", "text"), [
    (0.90, 0.10, Finding.TB_SUSPECTED, "TB suspected"),
    (0.90, 0.80, Finding.TB_SUSPECTED, BOTH),
    (0.42, 0.50, Finding.TB_SUSPECTED, BOTH),  # both exactly at their thresholds
    (0.41, 0.90, Finding.NO_TB_FINDING, "No TB finding"),
    (0.10, 0.10, Finding.NO_TB_FINDING, "No TB finding"),
])
def test_tb_above_threshold_is_always_tb_suspected(tb: float, pn: float, finding: Finding,
                                                   text: str) -> None:
    p = prediction(tb, pn)  # thresholds 0.42 (TB) and 0.5 (pneumonia)
    said = impression(p.tb_vs_normal, p.pneumonia_vs_tb)
    assert (said.finding, said.text, p.finding) == (finding, text, finding)
    assert impression_from_scores(tb, 0.42, pn, 0.5) == said
    expected_code = FindingCode.TUBERCULOSIS if finding is Finding.TB_SUSPECTED \
        else FindingCode.NO_ABNORMALITY_DETECTED
    assert impression_code(p) == expected_code.code


def test_a_stored_pneumonia_pattern_reads_as_tb_suspected() -> None:
    p = prediction(0.9, 0.8)
    old = type(p)(p.tb_vs_normal, p.pneumonia_vs_tb, Finding.PNEUMONIA_PATTERN)
    assert prediction_to_dict(old)["impression"] == BOTH
    assert prediction_to_dict(old)["finding"] == "tb-suspected"
    assert impression_code(old) == FindingCode.TUBERCULOSIS.code


def test_sr_oru_caption_and_api_say_the_same(tmp_path: Path) -> None:
    p = prediction(0.9, 0.8, heatmap=True)
    assert f"Impression: {BOTH}." in impression_summary(p)  # SR Impression Description
    assert caption_lines(p)[0] == f"AI finding: {BOTH}"  # Secondary Capture caption
    assert prediction_to_dict(p)["impression"] == BOTH  # console upload and study detail
    text = build_oru(StudyFacts.from_dataset(source(1)), p, Hl7Endpoints(), "IMP1", NOW)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    observations = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation
    first = observations[0].obx
    assert first.obx_5[0].to_er7() == "56717001^Tuberculosis^SCT"
    described = " ".join(unescape(f.to_er7()) for o in observations for f in o.obx.obx_5
                         if o.obx.obx_3.to_er7().startswith("111033^"))
    assert f"Impression: {BOTH}." in described


def test_worklist_row_states_the_impression_with_its_note(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    study = "1.2.826.0.1.3680043.8.498.5151"
    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=study))

    class PneumoniaToo(ScriptedPredictor):
        def predict_gray(self, gray, heatmap=True):  # type: ignore[no-untyped-def]
            p = super().predict_gray(gray, heatmap)
            pn = ClassifierScore("pneumonia-vs-tb", "cxr-pn", "1.0.0", 0.9, 0.5, "pneumonia",
                                 "tb")
            return type(p)(p.tb_vs_normal, pn, Finding.TB_SUSPECTED, p.heatmap)

    drain(journal, PneumoniaToo([0.8]))
    last = journal.study_instances(study)[-1].received_at
    Aggregator(journal, RecordingSink(), 1.0, threading.Event(),
               policy=ReportPolicy()).run_once(now=last + 5)
    summary = study_summary(journal, study)
    assert summary is not None and summary.impression == f"TB suspected; {PNEUMONIA_NOTE}"
    stored = json.loads(str(journal.study_instances(study)[0].result_json))
    assert stored["finding"] == "tb-suspected"
