"""From a study result to outbox rows: build the SR, heatmaps and ORU, store them, queue them.

:class:`OutboxSink` is the ``ResultSink`` the DICOM node's aggregator calls
(``dicom_node.aggregation.ResultSink``). It returns only when every object is
written (temp file, fsync, rename) and every row committed, so a result the
aggregator marks reported is never lost. It raises on failure, and the
aggregator hands the study over again later; UIDs and control IDs are
derived, so doing the work twice queues nothing twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from config.schema import Hl7Destination
from delivery.outbox import Channel, Kind, NewDelivery, Outbox
from dicom_node.aggregation import NotAnalysedStudy, ReportError, StudyResult
from hl7_link.oru import (
    Hl7Endpoints,
    StudyFacts,
    build_not_analysed_oru,
    build_oru,
    control_id_for,
)
from inference.pixels import DEFAULT_MAX_INFLATED_BYTES, load_dicom
from results.evidence import ClassifiedImage, ResultBuildError
from results.identity import GatewayIdentity, IdentityError
from results.not_analysed import build_not_analysed_sr
from results.secondary_capture import build_heatmap_sc
from results.sr import build_sr

log = logging.getLogger(__name__)

SAFE_MESSAGES: Final = (ResultBuildError, IdentityError)
"""Error types whose messages name arguments and settings, never header values."""


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Turn a failure of one step into a :class:`ReportError` that says which step failed
    (and the error type; the message only when it cannot hold patient data)."""
    try:
        yield
    except Exception as err:  # every failure of a step becomes a counted report attempt
        detail = f"{type(err).__name__}: {err}" if isinstance(err, SAFE_MESSAGES) \
            else type(err).__name__
        raise ReportError(f"{name} ({detail})") from err


@dataclass(frozen=True)
class OutboxSink:
    """Builds every result object of a study and queues one row per object and destination."""

    outbox: Outbox
    identity: GatewayIdentity
    results_dir: Path
    dicom_destinations: Sequence[str]
    hl7_destinations: Sequence[Hl7Destination]
    heatmap: bool = True
    on_queued: Callable[[], None] | None = None  # e.g. the dispatcher's wake: send without a poll
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES  # dicom.max_inflated_mb, as intake used

    def study_ready(self, study: StudyResult) -> None:
        """Queue the SR and the ORU first, then the heatmaps (slower to build, less urgent).

        Two transactions, so the dispatcher sends the report while the
        pictures are still being drawn; if the heatmaps fail, the aggregator
        hands the study over again and the SR and ORU rows are not doubled.
        """
        with _step("reading the images"):
            images = [ClassifiedImage(load_dicom(image.path, self.max_inflated_bytes),
                                      image.prediction, image.replaced)
                      for image in study.images]
        with _step("building the SR"):
            sr = build_sr(images, study.prediction, self.identity)
        with _step("storing the SR"):
            sr_uid, sr_path = str(sr.SOPInstanceUID), self._store(sr)
        representative = next(i for i in images
                              if i.sop_instance_uid == study.representative.sop_instance_uid)
        with _step("building the ORU"):
            oru_rows = self._hl7_rows(study, representative.dataset, sr_uid)
        with _step("queueing the SR and ORU"):
            added = self._queue([*self._dicom_rows(study, [(Kind.SR, sr_uid, sr_path)]),
                                 *oru_rows])
        with _step("building the heatmap Secondary Capture"):
            heatmaps = self._heatmaps(images) if self.heatmap else []
        with _step("queueing the heatmaps"):
            added += self._queue(self._dicom_rows(study, heatmaps))
        log.info("study %s revision %d: %d object(s), %d new outbox row(s)", study.study_uid,
                 study.revision, 1 + len(heatmaps), added)

    def study_not_analysed(self, study: NotAnalysedStudy) -> None:
        """Queue the "not analysed" SR and ORU (issue 21 item 2): the reason, no finding."""
        with _step("reading the images"):
            sources = [load_dicom(image.path, self.max_inflated_bytes) for image in study.images]
        with _step("building the not-analysed SR"):
            sr = build_not_analysed_sr(sources, study.text, self.identity)
        with _step("storing the SR"):
            sr_uid, sr_path = str(sr.SOPInstanceUID), self._store(sr)
        with _step("building the ORU"):
            facts = StudyFacts.from_dataset(sources[0])
            oru_rows = [self._hl7_row(study.study_uid, study.revision, peer, sr_uid,
                                      lambda e, c: build_not_analysed_oru(facts, study.text, e, c))
                        for peer in self.hl7_destinations]
        with _step("queueing the SR and ORU"):
            added = self._queue([*self._dicom_rows(study, [(Kind.SR, sr_uid, sr_path)]),
                                 *oru_rows])
        log.info("study %s revision %d: not analysed, %d new outbox row(s)", study.study_uid,
                 study.revision, added)

    def _queue(self, rows: list[NewDelivery]) -> int:
        added = self.outbox.enqueue(rows)
        if added and self.on_queued is not None:
            self.on_queued()
        return added

    def _dicom_rows(self, study: StudyResult | NotAnalysedStudy,
                    objects: list[tuple[Kind, str, Path]]) -> list[NewDelivery]:
        return [NewDelivery(study.study_uid, study.revision, kind, uid, Channel.DICOM, name,
                            str(path))
                for kind, uid, path in objects for name in self.dicom_destinations]

    def _heatmaps(self, images: list[ClassifiedImage]) -> list[tuple[Kind, str, Path]]:
        """(kind, SOP Instance UID, file) of the heatmap picture of each image that has one."""
        objects = []
        for image in images:
            if image.prediction.heatmap is not None:
                sc = build_heatmap_sc(image, self.identity)
                objects.append((Kind.HEATMAP, str(sc.SOPInstanceUID), self._store(sc)))
        return objects

    def _hl7_rows(self, study: StudyResult, source: Dataset, sr_uid: str) -> list[NewDelivery]:
        facts = StudyFacts.from_dataset(source)
        return [self._hl7_row(study.study_uid, study.revision, peer, sr_uid,
                              lambda e, c: build_oru(facts, study.prediction, e, c))
                for peer in self.hl7_destinations]

    @staticmethod
    def _hl7_row(study_uid: str, revision: int, peer: Hl7Destination, sr_uid: str,
                 build: Callable[[Hl7Endpoints, str], str]) -> NewDelivery:
        """One ORU row for ``peer``; ``build(endpoints, control_id)`` makes the message."""
        control_id = control_id_for(sr_uid, peer.name)
        endpoints = Hl7Endpoints(peer.sending_application, peer.sending_facility,
                                 peer.receiving_application, peer.receiving_facility)
        return NewDelivery(study_uid, revision, Kind.ORU, control_id, Channel.HL7, peer.name,
                           build(endpoints, control_id))

    def _store(self, ds: Dataset) -> Path:
        """Write ``ds`` durably as ``<SOP Instance UID>.dcm`` (temp file, fsync, rename)."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        final = self.results_dir / f"{ds.SOPInstanceUID}.dcm"
        handle, temp = tempfile.mkstemp(dir=self.results_dir, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                ds.save_as(out, enforce_file_format=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return final
