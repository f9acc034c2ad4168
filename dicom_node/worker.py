"""Classification workers: take queued instances from the journal and classify them.

Per instance: read the spool file -> quality gate (frontal chest CR/DX?) ->
presentation-space grayscale -> both classifiers -> record the result. The
steps are passed in as a :class:`Pipeline`, so tests can swap any of them.
Skipped instances get the gate's reason and are never classified (pixel data
that cannot be decoded is a gate failure too: skipped); images that decode but
that preprocessing rejects are ``failed`` with the reason; any other error is
retried up to ``inference.max_attempts`` times.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from dicom_node.errors import JournalError
from dicom_node.journal import Job, Journal, StoredResult
from inference.pixels import PixelError, load_dicom
from inference.preprocess import CropBox
from inference.quality import QualityVerdict
from inference.results import ClassifierScore, Finding, Prediction

log = logging.getLogger(__name__)

HEATMAP_SUFFIX = ".heatmap.npy"
WORKER_NICENESS = 10  # intake first: a PACS burst must not wait for classification


class Verdict(Protocol):
    """What the quality gate answers (``inference.quality.QualityVerdict``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def notes(self) -> tuple[str, ...]: ...


class Predictor(Protocol):
    """What classifies a grayscale image (``inference.engine.InferenceEngine``)."""

    def predict_gray(self, gray: NDArray[np.generic], heatmap: bool = True) -> Prediction: ...

    def check_pixels(self, gray: NDArray[np.generic]) -> QualityVerdict | None: ...


@dataclass(frozen=True)
class Pipeline:
    """The per-instance steps, passed in so each can be replaced."""

    check_quality: Callable[[Dataset], Verdict]
    to_gray: Callable[[Dataset], NDArray[np.float32]]
    predictor: Predictor
    heatmap: bool
    undecodable: tuple[type[Exception], ...]  # pixel data cannot be decoded: skipped
    explain_undecodable: Callable[[Any], Verdict]  # the skip reason for those
    unusable: tuple[type[Exception], ...]  # decoded but unusable (e.g. no contrast): failed
    load: Callable[[Path], Dataset] = load_dicom  # reads the spool file (bounded inflation)


def prediction_to_json(prediction: Prediction) -> str:
    """The stored form of a prediction, without its heatmap (kept as a ``.npy`` file);
    with the crop box the heatmap is placed through and the gate's notes."""
    box = prediction.crop_box
    return json.dumps({"tb_vs_normal": asdict(prediction.tb_vs_normal),
                       "pneumonia_vs_tb": asdict(prediction.pneumonia_vs_tb),
                       "finding": prediction.finding.value,
                       "crop_box": None if box is None else box.to_dict(),
                       "notes": list(prediction.notes)})


def prediction_from_json(text: str, heatmap: NDArray[np.float32] | None = None) -> Prediction:
    """A stored prediction; rows written before the crop box and notes were kept have none."""
    data = json.loads(text)
    box = data.get("crop_box")
    return Prediction(ClassifierScore(**data["tb_vs_normal"]),
                      ClassifierScore(**data["pneumonia_vs_tb"]),
                      Finding(data["finding"]), heatmap,
                      None if box is None else CropBox.from_dict(box),
                      tuple(str(n) for n in data.get("notes") or ()))


def _lower_thread_priority() -> None:
    """Give this thread (only: Linux nice values are per thread) a lower CPU priority."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except OSError as err:
        log.warning("cannot lower the worker thread's priority: %s", err)


def load_heatmap(path: Path | None) -> NDArray[np.float32] | None:
    if path is None or not path.is_file():
        return None
    return np.load(path).astype(np.float32)


class Worker(threading.Thread):
    """One classification thread; stops when ``stop`` is set."""

    def __init__(self, name: str, journal: Journal, pipeline: Pipeline, max_attempts: int,
                 stop: threading.Event, poll_s: float = 0.2,
                 pause: Callable[[], None] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.journal = journal
        self.pipeline = pipeline
        self.max_attempts = max_attempts
        self.stop = stop
        self.poll_s = poll_s
        self.pause = pause  # before each job: give way to intake (IntakeActivity.wait_quiet)

    def run(self) -> None:
        _lower_thread_priority()
        log.info("%s started", self.name)
        while not self.stop.is_set():
            if self.pause is not None:
                self.pause()
            try:
                job = self.journal.claim_job(self.name)
            except JournalError as err:
                log.error("%s: cannot claim a job: %s", self.name, err)
                self.stop.wait(self.poll_s * 10)
                continue
            if job is None:
                self.stop.wait(self.poll_s)
                continue
            self.process(job)
        log.info("%s stopped", self.name)

    def process(self, job: Job) -> None:
        """Classify one job and record the outcome; never raises."""
        if job.attempts > self.max_attempts:  # each try so far ended with its node stopping
            self._fail(job, f"failed after {job.attempts - 1} attempts: the node stopped while "
                            "classifying it each time")
            return
        try:
            self._classify(job)
        except JournalError as err:
            log.error("%s: cannot record %s: %s", self.name, job.sop_instance_uid, err)
        except self.pipeline.unusable as err:
            self._fail(job, f"failed: {err}")
        except (PixelError, OSError) as err:
            self._fail(job, f"failed: cannot read the spool file ({err})")
        except Exception as err:
            log.exception("%s: error on %s (attempt %d)", self.name, job.sop_instance_uid,
                          job.attempts)
            self._retry_or_fail(job, err)

    def _classify(self, job: Job) -> None:
        ds = self.pipeline.load(job.path)
        verdict = self.pipeline.check_quality(ds)
        if not verdict.ok:
            log.info("%s %s", job.sop_instance_uid, verdict.reason)
            self.journal.finish_skipped(job, verdict.reason)
            return
        try:
            gray = self.pipeline.to_gray(ds)
        except self.pipeline.undecodable as err:
            reason = self.pipeline.explain_undecodable(err).reason
            log.info("%s %s", job.sop_instance_uid, reason)
            self.journal.finish_skipped(job, reason)
            return
        pixel_verdict = self.pipeline.predictor.check_pixels(gray)
        if pixel_verdict is not None:
            log.info("%s %s", job.sop_instance_uid, pixel_verdict.reason)
            self.journal.finish_skipped(job, pixel_verdict.reason)
            return
        prediction = self.pipeline.predictor.predict_gray(gray, heatmap=self.pipeline.heatmap)
        if verdict.notes:  # e.g. the patient's age is unknown: the reader is told
            prediction = replace(prediction, notes=prediction.notes + tuple(verdict.notes))
        heatmap_path = self._save_heatmap(job.path, prediction.heatmap)
        self.journal.finish_classified(job, StoredResult(
            tb_score=prediction.tb_vs_normal.score, finding=prediction.finding.value,
            result_json=prediction_to_json(prediction), heatmap_path=heatmap_path))
        log.info("%s classified: %s (TB score %.3f)", job.sop_instance_uid,
                 prediction.finding.value, prediction.tb_vs_normal.score)

    @staticmethod
    def _save_heatmap(spool_file: Path, heatmap: NDArray[np.float32] | None) -> Path | None:
        if heatmap is None:
            return None
        path = spool_file.with_name(spool_file.name + HEATMAP_SUFFIX)
        np.save(path, heatmap.astype(np.float16))
        return path

    def _retry_or_fail(self, job: Job, err: Exception) -> None:
        if job.attempts >= self.max_attempts:
            self._fail(job, f"failed after {job.attempts} attempts: {err}")
            return
        try:
            self.journal.retry_later(job, f"attempt {job.attempts} failed: {err}")
        except JournalError as db_err:
            log.error("%s: cannot re-queue %s: %s", self.name, job.sop_instance_uid, db_err)

    def _fail(self, job: Job, reason: str) -> None:
        log.warning("%s: %s", job.sop_instance_uid, reason)
        try:
            self.journal.finish_failed(job, reason)
        except JournalError as err:
            log.error("%s: cannot record failure of %s: %s", self.name, job.sop_instance_uid, err)
