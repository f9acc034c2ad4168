"""Study aggregation: one result per study once it has gone quiet.

A study is due when no new instance of it arrived for
``aggregation.quiet_period_s`` and none of its instances is still queued or
being classified. Its result is formed from its classified images (those the
quality gate passed as frontal chest radiographs):

    **Rule: the image with the highest TB-vs-normal score represents the
    study** (ties: the earliest received). Its prediction, thresholds and
    finding become the study-level result; every image's prediction is kept.

A study with no classified image produces no result (logged). A study that
receives more instances after being reported becomes due again with a higher
``revision``; after a crash a study may be handed over again with the same
revision, so a sink must treat ``(study_uid, revision)`` as idempotent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_node.errors import JournalError
from dicom_node.journal import InstanceRecord, InstanceState, Journal
from dicom_node.worker import load_heatmap, prediction_from_json
from inference.results import Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageResult:
    """One classified image of a study."""

    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    path: Path  # the spool file as received
    prediction: Prediction


@dataclass(frozen=True)
class StudyResult:
    """What the results stage receives for one study."""

    study_uid: str
    revision: int  # instances received so far; grows when the study grows
    images: tuple[ImageResult, ...]
    representative: ImageResult  # the image chosen by the documented rule
    skipped: tuple[tuple[str, str], ...]  # (SOP Instance UID, reason) of images not classified

    @property
    def prediction(self) -> Prediction:
        """The study-level prediction."""
        return self.representative.prediction


class ResultSink(Protocol):
    """Where study results go (SR, HL7 and the outbox are built behind it)."""

    def study_ready(self, study: StudyResult) -> None: ...


class LoggingSink:
    """The default sink: logs the study result (no patient data)."""

    def study_ready(self, study: StudyResult) -> None:
        p = study.prediction
        log.info("study %s (revision %d): %s, TB score %.3f (threshold %.2f), %d image(s)",
                 study.study_uid, study.revision, p.finding.value, p.tb_vs_normal.score,
                 p.tb_vs_normal.threshold, len(study.images))


def choose_representative(images: tuple[ImageResult, ...]) -> ImageResult:
    """The documented rule: highest TB-vs-normal score; the first such image on ties."""
    if not images:
        raise ValueError("images: a study result needs at least one classified image")
    return max(images, key=lambda image: image.prediction.tb_vs_normal.score)


def build_study_result(study_uid: str, revision: int,
                       records: list[InstanceRecord]) -> StudyResult | None:
    """The study result from its journal rows, or ``None`` when no image was classified."""
    images = tuple(
        ImageResult(r.sop_instance_uid, r.series_uid, r.sop_class_uid, r.path,
                    prediction_from_json(r.result_json, load_heatmap(r.heatmap_path)))
        for r in records if r.state is InstanceState.CLASSIFIED and r.result_json)
    skipped = tuple((r.sop_instance_uid, r.reason or r.state.value)
                    for r in records if r.state is not InstanceState.CLASSIFIED)
    if not images:
        return None
    return StudyResult(study_uid, revision, images, choose_representative(images), skipped)


class Aggregator(threading.Thread):
    """Finds due studies and hands their results to the sink."""

    def __init__(self, journal: Journal, sink: ResultSink, quiet_period_s: float,
                 stop: threading.Event, poll_s: float = 1.0) -> None:
        super().__init__(name="aggregator", daemon=True)
        self.journal = journal
        self.sink = sink
        self.quiet_period_s = quiet_period_s
        self.stop = stop
        self.poll_s = poll_s

    def run(self) -> None:
        while not self.stop.wait(self.poll_s):
            try:
                self.run_once()
            except JournalError as err:
                log.error("aggregation: journal unavailable: %s", err)

    def run_once(self, now: float | None = None) -> int:
        """Report every due study; returns how many were handed to the sink."""
        handed = 0
        for study_uid, revision in self.journal.due_studies(self.quiet_period_s, now):
            result = build_study_result(study_uid, revision,
                                        self.journal.study_instances(study_uid))
            if result is None:
                log.info("study %s: no frontal chest image classified; no result", study_uid)
            elif not self._hand_over(result):
                continue
            else:
                handed += 1
            self.journal.mark_reported(study_uid, revision)
        return handed

    def _hand_over(self, result: StudyResult) -> bool:
        try:
            self.sink.study_ready(result)
        except Exception:
            log.exception("study %s: result sink failed; will retry", result.study_uid)
            return False
        return True
