"""Study aggregation: one result per study once it has gone quiet.

A study is due when no new instance of it arrived for
``aggregation.quiet_period_s`` and none of its instances is still queued or
being classified. Its result is formed from its classified images (those the
quality gate passed as frontal chest radiographs):

    **Rule: the image with the highest TB-vs-normal score represents the
    study** (ties: the earliest received). Its prediction, thresholds and
    finding become the study-level result; every image's prediction is kept.

A study with no classified image gets a "not analysed" result when
``results.report_not_analysed`` is on and at least one of its images was
skipped by the quality gate (the gateway's own outputs and non-images do not
count): the sink reports the gate's reasons, so the radiologist can tell "AI
said normal" from "AI never looked". Otherwise it produces no result (logged).

A study that receives more instances after being reported becomes due again
with a higher ``revision``; after a crash a study may be handed over again
with the same revision, so a sink must treat ``(study_uid, revision)`` as
idempotent. A sink that fails is tried again after ``results.retry_delay_s``,
at most ``results.max_attempts`` times per revision; then the study shows
``report-failed`` with the reason (:meth:`Journal.report_attempt_failed`),
logged once, until it grows or ``cxr-gateway retry --reports`` is run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicom_node.errors import JournalError
from dicom_node.journal import InstanceRecord, InstanceState, Journal
from dicom_node.worker import load_heatmap, prediction_from_json
from inference.own_outputs import gateway_mark
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
    replaced: int = 0  # times a corrected re-send replaced the instance (new result UIDs)


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


SKIPPED_PREFIX: Final = "skipped: "
NOT_ANALYSED: Final = "not analysed"
HEADER_ONLY_BYTES: Final = 4096
"""Values longer than this (Pixel Data) are not read when only the header is needed."""


@dataclass(frozen=True)
class SkippedImage:
    """An image of a study that the quality gate did not pass."""

    sop_instance_uid: str
    path: Path  # the spool file as received
    reason: str  # the gate's reason, without "skipped: "


@dataclass(frozen=True)
class NotAnalysedStudy:
    """A study in which no image was classified: the results stage says so, with the reasons."""

    study_uid: str
    revision: int
    images: tuple[SkippedImage, ...]  # at least one

    @property
    def reason(self) -> str:
        """The gate's reasons, each once, e.g. "not a chest radiograph (Body Part ...)"."""
        return "; ".join(dict.fromkeys(image.reason for image in self.images))

    @property
    def text(self) -> str:
        """What the SR and the ORU say: ``not analysed: <reason>``."""
        return f"{NOT_ANALYSED}: {self.reason}"


class ReportError(Exception):
    """The results stage could not build or queue a study's report; the message names the
    step and the error type, never a header value (it is shown in status and logged)."""


@dataclass(frozen=True)
class ReportPolicy:
    """``results.*`` settings the aggregator applies."""

    max_attempts: int = 3
    retry_delay_s: float = 60.0
    report_not_analysed: bool = True


class ResultSink(Protocol):
    """Where study results go (SR, HL7 and the outbox are built behind it)."""

    def study_ready(self, study: StudyResult) -> None: ...

    def study_not_analysed(self, study: NotAnalysedStudy) -> None: ...


class LoggingSink:
    """The default sink: logs the study result (no patient data)."""

    def study_ready(self, study: StudyResult) -> None:
        p = study.prediction
        log.info("study %s (revision %d): %s, TB score %.3f (threshold %.2f), %d image(s)",
                 study.study_uid, study.revision, p.finding.value, p.tb_vs_normal.score,
                 p.tb_vs_normal.threshold, len(study.images))

    def study_not_analysed(self, study: NotAnalysedStudy) -> None:
        log.info("study %s (revision %d): %s, %d image(s)", study.study_uid, study.revision,
                 NOT_ANALYSED, len(study.images))


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
                    prediction_from_json(r.result_json, load_heatmap(r.heatmap_path)), r.replaced)
        for r in records if r.state is InstanceState.CLASSIFIED and r.result_json)
    skipped = tuple((r.sop_instance_uid, r.reason or r.state.value)
                    for r in records if r.state is not InstanceState.CLASSIFIED)
    if not images:
        return None
    return StudyResult(study_uid, revision, images, choose_representative(images), skipped)


def build_not_analysed(study_uid: str, revision: int,
                       records: list[InstanceRecord]) -> NotAnalysedStudy | None:
    """The "not analysed" result of a study without classified images, or ``None`` when
    none of its skipped instances is a received image (only the gateway's own outputs,
    non-images or unreadable files: nothing a radiologist waits a result for)."""
    images = []
    for record in records:
        if record.state is InstanceState.SKIPPED and _is_foreign_image(record.path):
            reason = (record.reason or record.state.value).removeprefix(SKIPPED_PREFIX)
            images.append(SkippedImage(record.sop_instance_uid, record.path, reason))
    return NotAnalysedStudy(study_uid, revision, tuple(images)) if images else None


def _is_foreign_image(path: Path) -> bool:
    """An image (it has Pixel Data) not written by this gateway; pixels are not read."""
    try:
        ds = dcmread(path, force=True, defer_size=HEADER_ONLY_BYTES)
        return "PixelData" in ds and gateway_mark(ds) is None
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError):
        return False


def describe_failure(err: Exception) -> str:
    """What a failed report attempt shows: a :class:`ReportError` says the step; anything
    else only its type (exception texts may quote header values)."""
    return str(err) if isinstance(err, ReportError) else type(err).__name__


class Aggregator(threading.Thread):
    """Finds due studies and hands their results to the sink."""

    def __init__(self, journal: Journal, sink: ResultSink, quiet_period_s: float,
                 stop: threading.Event, poll_s: float = 1.0,
                 policy: ReportPolicy | None = None,
                 pause: Callable[[], None] | None = None) -> None:
        super().__init__(name="aggregator", daemon=True)
        self.pause = pause  # before each study: give way to intake (IntakeActivity.wait_quiet)
        self.journal = journal
        self.sink = sink
        self.quiet_period_s = quiet_period_s
        self.stop = stop
        self.poll_s = poll_s
        self.policy = policy or ReportPolicy()

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
            if self.pause is not None:
                self.pause()
            if not self.journal.claim_study(study_uid, revision, now):
                continue  # another node reports it (or did meanwhile)
            deliver = self._delivery(study_uid, revision)
            if deliver is not None and not self._hand_over(study_uid, revision, deliver, now):
                continue
            handed += deliver is not None
            self.journal.mark_reported(study_uid, revision)
        return handed

    def _delivery(self, study_uid: str, revision: int) -> Callable[[], None] | None:
        """What to hand to the sink for a due study, or ``None`` when there is no result."""
        records = self.journal.study_instances(study_uid)
        result = build_study_result(study_uid, revision, records)
        if result is not None:
            return lambda: self.sink.study_ready(result)
        not_analysed = (build_not_analysed(study_uid, revision, records)
                        if self.policy.report_not_analysed else None)
        if not_analysed is not None:
            return lambda: self.sink.study_not_analysed(not_analysed)
        log.info("study %s: no frontal chest image classified; no result", study_uid)
        return None

    def _hand_over(self, study_uid: str, revision: int, deliver: Callable[[], None],
                   now: float | None) -> bool:
        try:
            deliver()
        except Exception as err:  # any failure of the results stage: counted, bounded, shown
            self._attempt_failed(study_uid, revision, err, time.time() if now is None else now)
            return False
        return True

    def _attempt_failed(self, study_uid: str, revision: int, err: Exception,
                        now: float) -> None:
        reason = f"report failed: {describe_failure(err)}"
        attempts, gave_up = self.journal.report_attempt_failed(
            study_uid, revision, reason, self.policy.max_attempts,
            now + self.policy.retry_delay_s)
        if gave_up:
            log.error("study %s revision %d: %s; given up after %d attempt(s) (status "
                      "report-failed; cxr-gateway retry --reports)", study_uid, revision,
                      reason, attempts)
        else:
            log.warning("study %s revision %d: %s; attempt %d of %d, next in %.0f s", study_uid,
                        revision, reason, attempts, self.policy.max_attempts,
                        self.policy.retry_delay_s)
