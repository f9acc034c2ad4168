"""Worker logic and study aggregation with the real quality gate and pixel decoder.

The classifier is a small stand-in with the engine's ``predict_gray`` (the
real engine is exercised in ``test_dicom_node_e2e.py``), so the rules here
(skip, fail, retry, the study rule) are tested without model files.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.aggregation import (
    Aggregator,
    NotAnalysedStudy,
    ReportPolicy,
    StudyResult,
    build_study_result,
)
from dicom_node.journal import InstanceState, Journal, NewInstance
from dicom_node.worker import Pipeline, Worker
from inference.pixels import PixelError, dicom_to_gray
from inference.polarity import PolarityModel, load_polarity
from inference.preprocess import PreprocessError
from inference.quality import QualityVerdict, check_quality, verdict_for_pixel_error
from inference.results import ClassifierScore, Prediction, combine
from tests.dicom_factory import make_chest, make_nm, make_relabelled_mono1, write

STUDY = "1.2.826.0.1.3680043.8.498.777"


class ScriptedPredictor:
    """Returns the next TB score of a script; raises it when it is an exception."""

    def __init__(self, scores: list[float | Exception], polarity: PolarityModel | None = None) -> None:
        self.scores = list(scores)
        self.polarity = polarity
        self.calls = 0

    def check_pixels(self, gray: NDArray[np.generic]) -> QualityVerdict | None:
        return self.polarity.check(gray) if self.polarity is not None else None

    def predict_gray(self, gray: NDArray[np.generic], heatmap: bool = True) -> Prediction:
        self.calls += 1
        assert gray.ndim == 2 and gray.dtype == np.float32
        score = self.scores.pop(0)
        if isinstance(score, Exception):
            raise score
        tb = ClassifierScore("tb-vs-normal", "cxr-tb", "1.0.0", score, 0.5, "tb", "normal")
        pn = ClassifierScore("pneumonia-vs-tb", "cxr-pn", "1.0.0", 0.2, 0.5, "pneumonia", "tb")
        hm = np.full((8, 8), score, dtype=np.float32) if heatmap else None
        return Prediction(tb, pn, combine(tb, pn), hm)


class ListSink:
    def __init__(self) -> None:
        self.results: list[StudyResult] = []

    def study_ready(self, study: StudyResult) -> None:
        self.results.append(study)

    def study_not_analysed(self, study: NotAnalysedStudy) -> None:
        raise AssertionError(f"study {study.study_uid}: not analysed, not expected here")


def pipeline(predictor: ScriptedPredictor) -> Pipeline:
    return Pipeline(check_quality=check_quality, to_gray=dicom_to_gray, predictor=predictor,
                    heatmap=True, undecodable=(PixelError,),
                    explain_undecodable=verdict_for_pixel_error, unusable=(PreprocessError,))


def receive(journal: Journal, folder: Path, ds: Dataset) -> str:
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    journal.add_instance(NewInstance(ds.SOPInstanceUID, ds.SOPClassUID, ds.StudyInstanceUID,
                                     ds.SeriesInstanceUID, "PACS", path))
    return str(ds.SOPInstanceUID)


def drain(journal: Journal, predictor: ScriptedPredictor, max_attempts: int = 3) -> None:
    worker = Worker("w", journal, pipeline(predictor), max_attempts, threading.Event())
    while (job := journal.claim_job("w")) is not None:
        worker.process(job)


@pytest.fixture
def journal(database: Path | str) -> Journal:
    return Journal(database)  # SQLite and PostgreSQL (tests/conftest.py)


def test_frontal_chest_is_classified_and_others_skipped(journal: Journal, tmp_path: Path) -> None:
    chest = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    nm = receive(journal, tmp_path, make_nm(study_uid=STUDY))
    lateral = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY,
                                                    view_position="LL"))
    predictor = ScriptedPredictor([0.7])
    drain(journal, predictor)
    assert predictor.calls == 1
    records = {r.sop_instance_uid: r for r in journal.study_instances(STUDY)}
    assert records[chest].state is InstanceState.CLASSIFIED
    heatmap = records[chest].heatmap_path
    assert heatmap is not None and heatmap.is_file()
    assert records[nm].state is InstanceState.SKIPPED
    assert "Modality NM" in str(records[nm].reason)
    assert records[lateral].state is InstanceState.SKIPPED


def test_undecodable_pixels_are_skipped_with_reason(journal: Journal, tmp_path: Path) -> None:
    ds = make_chest(rows=256, columns=256, study_uid=STUDY)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    sop = receive(journal, tmp_path, ds)
    predictor = ScriptedPredictor([])
    drain(journal, predictor)
    record = journal.instance(sop)
    assert record is not None and record.state is InstanceState.SKIPPED
    assert record.reason and record.reason.startswith("skipped:")
    assert predictor.calls == 0


def test_inverted_grey_scale_is_skipped_with_reason(journal: Journal, tmp_path: Path) -> None:
    """The shipped polarity model: the factory's chest classified, its relabelled twin skipped."""
    polarity = load_polarity()
    assert polarity is not None, "models/polarity/polarity.json is shipped"
    right = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    wrong = receive(journal, tmp_path, make_relabelled_mono1(rows=256, columns=256, study_uid=STUDY))
    predictor = ScriptedPredictor([0.4], polarity)
    drain(journal, predictor)
    assert predictor.calls == 1
    assert journal.instance(right).state is InstanceState.CLASSIFIED  # type: ignore[union-attr]
    record = journal.instance(wrong)
    assert record is not None and record.state is InstanceState.SKIPPED
    assert record.reason is not None and "grey scale looks inverted" in record.reason
    assert "Photometric Interpretation (0028,0004)" in record.reason


def test_transient_error_is_retried_then_failed(journal: Journal, tmp_path: Path) -> None:
    retried = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    drain(journal, ScriptedPredictor([RuntimeError("interpreter busy"), 0.3]))
    record = journal.instance(retried)
    assert record is not None and record.state is InstanceState.CLASSIFIED
    doomed = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    drain(journal, ScriptedPredictor([RuntimeError("boom")] * 2), max_attempts=2)
    record = journal.instance(doomed)
    assert record is not None and record.state is InstanceState.FAILED
    assert record.reason == "failed after 2 attempts: boom"


def test_highest_tb_score_represents_the_study(journal: Journal, tmp_path: Path) -> None:
    sops = [receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
            for _ in range(3)]
    receive(journal, tmp_path, make_nm(study_uid=STUDY))
    drain(journal, ScriptedPredictor([0.2, 0.8, 0.5]))
    sink = ListSink()
    aggregator = Aggregator(journal, sink, 60.0, threading.Event())
    last = journal.study_instances(STUDY)[-1].received_at
    assert aggregator.run_once(now=last + 1) == 0  # not quiet yet
    assert aggregator.run_once(now=last + 61) == 1
    [study] = sink.results
    assert study.study_uid == STUDY and study.revision == 4
    assert study.representative.sop_instance_uid == sops[1]
    assert study.prediction.tb_vs_normal.score == pytest.approx(0.8)
    assert study.representative.prediction.heatmap is not None
    assert len(study.images) == 3 and len(study.skipped) == 1
    assert all(image.path.is_file() for image in study.images)
    assert aggregator.run_once(now=last + 120) == 0  # reported once


def test_study_without_classified_image_gives_no_result(journal: Journal, tmp_path: Path) -> None:
    receive(journal, tmp_path, make_nm(study_uid=STUDY))
    drain(journal, ScriptedPredictor([]))
    assert build_study_result(STUDY, 1, journal.study_instances(STUDY)) is None
    sink = ListSink()
    last = journal.study_instances(STUDY)[-1].received_at
    no_report = ReportPolicy(report_not_analysed=False)  # with it: tests/test_report_failures.py
    assert Aggregator(journal, sink, 1.0, threading.Event(), policy=no_report).run_once(
        now=last + 5) == 0
    assert sink.results == [] and journal.due_studies(1.0, now=last + 5) == []


def test_failing_sink_is_retried(journal: Journal, tmp_path: Path) -> None:
    class FlakySink(ListSink):
        def study_ready(self, study: StudyResult) -> None:
            if not self.results and not getattr(self, "failed", False):
                self.failed = True
                raise OSError("outbox disk unavailable")
            super().study_ready(study)

    receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    drain(journal, ScriptedPredictor([0.4]))
    sink = FlakySink()
    aggregator = Aggregator(journal, sink, 1.0, threading.Event(),
                            policy=ReportPolicy(retry_delay_s=1.0))
    last = journal.study_instances(STUDY)[-1].received_at
    assert aggregator.run_once(now=last + 5) == 0
    assert aggregator.run_once(now=last + 5.5) == 0  # waits results.retry_delay_s
    assert aggregator.run_once(now=last + 6) == 1
    assert len(sink.results) == 1


def test_a_node_that_cannot_read_the_shared_spool_fails_the_image_with_the_reason(
        database: Path | str, tmp_path: Path) -> None:
    """Issue 22: the spool path is recorded relative to storage.spool_dir; a node whose spool
    mount lacks the file records a failure naming it, never a silent skip."""
    here, missing = tmp_path / "node-a" / "spool", tmp_path / "node-b" / "spool"
    here.mkdir(parents=True)
    receiving = Journal(database, node="node-a", spool_root=here)
    uid = receive(receiving, here, make_chest(rows=256, columns=256, study_uid=STUDY))
    classifying = Journal(database, node="node-b", spool_root=missing)  # mount not there
    predictor = ScriptedPredictor([0.7])
    drain(classifying, predictor)
    record = classifying.instance(uid)
    assert record is not None and record.state is InstanceState.FAILED and predictor.calls == 0
    assert str(record.reason).startswith("failed: cannot read the spool file")
    assert str(missing) in str(record.reason)


def test_an_image_that_stops_its_node_every_time_ends_failed(journal: Journal, tmp_path: Path) -> None:
    """A job re-queued after a crash (or taken over after its lease) counts the attempt; past
    inference.max_attempts it is failed with the reason instead of crashing node after node."""
    uid = receive(journal, tmp_path, make_chest(rows=256, columns=256, study_uid=STUDY))
    for _ in range(3):  # claimed, then the process died every time
        assert journal.claim_job("w") is not None
        assert journal.requeue_interrupted() == 1
    predictor = ScriptedPredictor([0.7])
    drain(journal, predictor, max_attempts=3)
    record = journal.instance(uid)
    assert record is not None and record.state is InstanceState.FAILED and predictor.calls == 0
    assert record.reason == "failed after 3 attempts: the node stopped while classifying it each time"
