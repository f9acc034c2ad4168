"""The C-ECHO and C-STORE handlers: validate, persist, answer. Work happens later.

C-STORE (PS3.4 annex B.2.3): the dataset as received (no re-encoding) is
written to the spool with File Meta Information, then recorded in the journal
with its classification job; only then is Success (0x0000) returned. When
either step fails the handler answers Refused: Out of Resources (0xA700) and
nothing stays behind, so the sender's retry is safe. An instance already in
the journal is answered Success and not stored again.

Handlers return status codes and never raise (pynetdicom would turn an
exception into a generic failure without a log line of ours).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_node.errors import PersistError
from dicom_node.journal import Journal, NewInstance
from dicom_node.spool import Spool
from dicom_node.status import EchoStatus, StoreStatus

log = logging.getLogger(__name__)


class DatasetRejected(ValueError):
    """The received dataset cannot be accepted; carries the status to answer."""

    def __init__(self, status: StoreStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Identity:
    """The UIDs that place an instance in the journal (PS3.3 C.12.1, C.7.2.1, C.7.3.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


class Intake:
    """Handlers bound to one spool and one journal (passed in, not global)."""

    def __init__(self, spool: Spool, journal: Journal) -> None:
        self.spool = spool
        self.journal = journal

    def handle_echo(self, event: Event) -> int:
        """C-ECHO (Verification, PS3.4 annex A): always Success."""
        log.info("C-ECHO from %s", event.assoc.requestor.ae_title)
        return EchoStatus.SUCCESS

    def handle_store(self, event: Event) -> int:
        """C-STORE: validate -> spool -> journal -> Success; see the module docstring."""
        try:
            return self._store(event)
        except Exception:
            log.exception("C-STORE: unexpected error; answering 0xA700")
            return StoreStatus.OUT_OF_RESOURCES

    def _store(self, event: Event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            identity = identify(event.dataset, str(event.request.AffectedSOPClassUID))
        except DatasetRejected as err:
            log.warning("C-STORE from %s refused (0x%04X): %s", calling, err.status, err)
            return err.status
        except Exception as err:
            log.warning("C-STORE from %s refused (0x%04X): undecodable dataset (%s)",
                        calling, StoreStatus.CANNOT_UNDERSTAND, err)
            return StoreStatus.CANNOT_UNDERSTAND
        try:
            return self._persist(event, identity, calling)
        except PersistError as err:
            log.error("C-STORE %s refused (0xA700 out of resources): %s",
                      identity.sop_instance_uid, err)
            return StoreStatus.OUT_OF_RESOURCES

    def _persist(self, event: Event, identity: Identity, calling: str) -> int:
        if self.journal.has_instance(identity.sop_instance_uid):
            log.info("C-STORE %s from %s: duplicate, already stored", identity.sop_instance_uid,
                     calling)
            return StoreStatus.SUCCESS
        path = self.spool.write(event.encoded_dataset(), identity.sop_instance_uid)
        record = NewInstance(identity.sop_instance_uid, identity.sop_class_uid,
                             identity.study_uid, identity.series_uid, calling, path)
        try:
            added = self.journal.add_instance(record)
        except PersistError:
            self.spool.discard(path)
            raise
        if not added:
            self.spool.discard(path)
            log.info("C-STORE %s: duplicate received concurrently", identity.sop_instance_uid)
        else:
            log.info("C-STORE %s from %s: stored", identity.sop_instance_uid, calling)
        return StoreStatus.SUCCESS


def identify(ds: Dataset, affected_sop_class: str) -> Identity:
    """The instance's UIDs, checked against the request (PS3.4 B.2.3 error statuses)."""
    values = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise DatasetRejected(StoreStatus.CANNOT_UNDERSTAND, f"{keyword} missing or empty")
        values[keyword] = value
    if values["SOPClassUID"] != affected_sop_class:
        raise DatasetRejected(
            StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"SOP Class UID {values['SOPClassUID']} differs from the request's "
            f"{affected_sop_class}")
    return Identity(values["SOPClassUID"], values["SOPInstanceUID"],
                    values["StudyInstanceUID"], values["SeriesInstanceUID"])
