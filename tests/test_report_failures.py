"""Issue 20 defect 1 (bounded report attempts, report-failed state) and issue 21 item 2
(not-analysed hand-over), at the level of the journal, the aggregator and the worklist.

The sink here is the real :class:`delivery.sink.OutboxSink` where a study must fail for a
real reason (two Patient IDs in one study), and a recording sink otherwise.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from delivery.outbox import Outbox
from delivery.sink import OutboxSink
from dicom_node.aggregation import (
    Aggregator,
    NotAnalysedStudy,
    ReportError,
    ReportPolicy,
    StudyResult,
    build_not_analysed,
    build_study_result,
)
from dicom_node.journal import Journal
from dicom_node.worklist import StudyQuery, StudyStatus, list_studies, study_summary
from tests.dicom_factory import make_chest
from tests.results_support import IDENTITY
from tests.test_worker_aggregation import ScriptedPredictor, drain, receive

STUDY = "1.2.826.0.1.3680043.8.498.4242"
POLICY = ReportPolicy(max_attempts=3, retry_delay_s=10.0)


class RecordingSink:
    def __init__(self) -> None:
        self.ready: list[StudyResult] = []
        self.not_analysed: list[NotAnalysedStudy] = []

    def study_ready(self, study: StudyResult) -> None:
        self.ready.append(study)

    def study_not_analysed(self, study: NotAnalysedStudy) -> None:
        self.not_analysed.append(study)


@pytest.fixture
def journal(database: Path | str) -> Journal:
    return Journal(database)  # SQLite and PostgreSQL (tests/conftest.py)


def _two_patients(journal: Journal, folder: Path) -> float:
    """One study whose two chest images carry different Patient IDs (a PACS merge error):
    its SR cannot be built (it would file one result under two patients)."""
    for patient in ("PAT-A", "PAT-B"):
        receive(journal, folder, make_chest(rows=256, columns=256, study_uid=STUDY,
                                            patient_id=patient, sop_uid=generate_uid()))
    drain(journal, ScriptedPredictor([0.7, 0.6]))
    return journal.study_instances(STUDY)[-1].received_at


def _outbox_sink(journal: Journal, tmp_path: Path) -> OutboxSink:
    return OutboxSink(journal.open_sibling(Outbox), IDENTITY, tmp_path / "results",
                      ["pacs"], [], heatmap=False)


def test_unbuildable_report_ends_report_failed_after_max_attempts(
        journal: Journal, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    last = _two_patients(journal, tmp_path)
    aggregator = Aggregator(journal, _outbox_sink(journal, tmp_path), 1.0, threading.Event(),
                            policy=POLICY)
    caplog.set_level(logging.INFO, logger="dicom_node.aggregation")
    now = last + 5
    for _ in range(40):  # many polls, 1 s apart: attempts only every retry_delay_s, 3 at most
        aggregator.run_once(now=now)
        now += 1.0
    [failure] = journal.report_failures()
    assert failure.attempts == POLICY.max_attempts
    assert failure.reason == ("report failed: building the SR (ResultBuildError: images: all "
                              "must share one PatientID; got 2 different values)")
    assert journal.due_studies(1.0, now=now + 3600) == []
    lines = [r for r in caplog.records if "report failed" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING", "ERROR"]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback per attempt
    assert all("PAT-" not in r.getMessage() for r in caplog.records)
    summary = study_summary(journal, STUDY)
    assert summary is not None and summary.status is StudyStatus.REPORT_FAILED
    assert summary.reason == failure.reason
    page, total = list_studies(journal, StudyQuery(status=StudyStatus.REPORT_FAILED))
    assert ([s.study_uid for s in page], total) == ([STUDY], 1)  # the console's status filter


def test_retry_reports_and_a_grown_study_try_again(journal: Journal, tmp_path: Path) -> None:
    last = _two_patients(journal, tmp_path)
    aggregator = Aggregator(journal, _outbox_sink(journal, tmp_path), 1.0, threading.Event(),
                            policy=ReportPolicy(max_attempts=1))
    aggregator.run_once(now=last + 5)
    assert [f.study_uid for f in journal.report_failures()] == [STUDY]
    assert journal.retry_reports(["1.2.3.unknown"]) == 0
    assert journal.retry_reports([STUDY]) == 1
    assert journal.due_studies(1.0, now=last + 5) == [(STUDY, 2)]
    aggregator.run_once(now=last + 5)
    assert journal.report_failures()[0].attempts == 1  # fresh attempts after a manual retry
    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY,
                                          patient_id="PAT-A"))  # the study grows: revision 3
    drain(journal, ScriptedPredictor([0.5]))
    assert journal.report_failures() == []
    assert [uid for uid, _ in journal.due_studies(1.0, now=last + 3600)] == [STUDY]


def test_success_after_a_failure_clears_the_error(journal: Journal, tmp_path: Path) -> None:
    class FlakySink(RecordingSink):
        def study_ready(self, study: StudyResult) -> None:
            if not hasattr(self, "failed"):
                self.failed = True
                raise OSError("disk full")
            super().study_ready(study)

    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    drain(journal, ScriptedPredictor([0.3]))
    last = journal.study_instances(STUDY)[-1].received_at
    sink = FlakySink()
    aggregator = Aggregator(journal, sink, 1.0, threading.Event(), policy=POLICY)
    assert aggregator.run_once(now=last + 5) == 0
    assert aggregator.run_once(now=last + 5 + POLICY.retry_delay_s) == 1
    assert len(sink.ready) == 1 and journal.report_failures() == []
    summary = study_summary(journal, STUDY)
    assert summary is not None and summary.status is StudyStatus.CLASSIFIED


def test_study_with_only_skipped_images_is_handed_over_as_not_analysed(
        journal: Journal, tmp_path: Path) -> None:
    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY,
                                          body_part="SKULL"))
    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY,
                                          view_position="LL"))
    drain(journal, ScriptedPredictor([]))
    last = journal.study_instances(STUDY)[-1].received_at
    sink = RecordingSink()
    assert Aggregator(journal, sink, 1.0, threading.Event()).run_once(now=last + 5) == 1
    [study] = sink.not_analysed
    assert study.text.startswith("not analysed: not a chest radiograph (Body Part Examined "
                                 "'SKULL'); not a frontal chest view")
    assert "skipped:" not in study.text and len(study.images) == 2
    assert journal.due_studies(1.0, now=last + 5) == []
    summary = study_summary(journal, STUDY)
    assert summary is not None and summary.status is StudyStatus.SKIPPED


def test_own_outputs_alone_get_no_not_analysed_report(journal: Journal, tmp_path: Path) -> None:
    own = make_chest(rows=256, columns=256, study_uid=STUDY)
    own.Manufacturer = IDENTITY.manufacturer  # the gateway's mark: routed back by the PACS
    receive(journal, tmp_path, own)
    drain(journal, ScriptedPredictor([]))
    assert build_not_analysed(STUDY, 1, journal.study_instances(STUDY)) is None
    last = journal.study_instances(STUDY)[-1].received_at
    sink = RecordingSink()
    Aggregator(journal, sink, 1.0, threading.Event()).run_once(now=last + 5)
    assert sink.not_analysed == [] and journal.due_studies(1.0, now=last + 5) == []


def test_the_sink_reads_spool_files_within_the_configured_inflate_limit(
        journal: Journal, tmp_path: Path) -> None:
    """``dicom.max_inflated_mb`` reaches the result builder (as it reaches intake and the
    worker): a Deflated spool file past the sink's limit is a failed read, named as such."""
    ds = make_chest(rows=256, columns=256, study_uid=STUDY)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    receive(journal, tmp_path, ds)
    drain(journal, ScriptedPredictor([0.7]))
    study = build_study_result(STUDY, 1, journal.study_instances(STUDY))
    assert study is not None
    outbox = journal.open_sibling(Outbox)
    tight = OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], [], heatmap=False,
                       max_inflated_bytes=1024)
    with pytest.raises(ReportError, match=r"reading the images \(InflateLimitError"):
        tight.study_ready(study)
    OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], [], heatmap=False).study_ready(study)
    assert len(outbox.rows()) == 1  # the SR, read within the default limit
