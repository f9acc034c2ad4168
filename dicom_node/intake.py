"""The C-ECHO and C-STORE handlers: validate, persist, answer. Work happens later.

C-STORE (PS3.4 annex B.2.3): the dataset as received (no re-encoding) is
written to the spool with File Meta Information, then recorded in the journal
with its classification job; only then is Success (0x0000) returned. When
either step fails the handler answers Refused: Out of Resources (0xA700) and
nothing stays behind, so the sender's retry is safe.

A SOP Instance UID already in the journal (issue 20, defect 8): a
byte-identical re-send (same SHA-256 of the stored file) is answered Success
and changes nothing; a changed one (a corrected re-send) replaces the stored
instance and is classified again, and its study is reported again with a
higher revision (:meth:`dicom_node.journal.Journal.admit_instance`).

Size limits (issue 20, defect 6), both answered 0xA700 Refused: Out of
Resources, the PS3.4 B.2.3 status for "the SCP cannot take this instance
with the resources it has": pynetdicom accumulates a dataset's P-DATA
fragments in memory, so :meth:`Intake.handle_pdu` counts them as they arrive
and, past ``dicom.max_instance_mb``, swaps the buffer for one that only
counts (:class:`OversizedDataset`): the association goes on, nothing more is
kept, and the handler refuses the instance without decoding it. A Deflated
dataset (PS3.5 A.5) is inflated in bounded chunks up to
``dicom.max_inflated_mb`` before it is decoded. Below both, no PDU announced
longer than 1 MB is read at all (:class:`BoundedAssociationSocket`): the
connection is closed instead.

Handlers return status codes and never raise (pynetdicom would turn an
exception into a generic failure without a log line of ours).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import AssociationSocket

from dicom_node.errors import PersistError
from dicom_node.journal import Admission, Journal, NewInstance
from dicom_node.spool import Spool
from dicom_node.status import EchoStatus, StoreStatus
from inference.pixels import DEFAULT_MAX_INFLATED_BYTES, InflateLimitError, inflate_bounded

log = logging.getLogger(__name__)

DEFAULT_MAX_INSTANCE_BYTES = 256 * 2**20
DEFAULT_MAX_PDU_BYTES = 2**20
"""Longest PDU read: 64 times the 16 KB maximum length offered to peers, room for a large
A-ASSOCIATE-RQ, far below the 4 GB a PDU length field allows."""
COMMAND_FRAGMENT = 0x01  # PS3.8 E.2 message control header: bit 0 set = command, else dataset


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


@dataclass(frozen=True)
class IntakeLimits:
    """``dicom.max_instance_mb`` and ``dicom.max_inflated_mb``, in bytes."""

    max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES


class IntakeActivity:
    """When intake last received data, so that background work can give way to it.

    Intake has priority (docs/operate.md, "Intake before classification"): building a
    study's result is pure Python (highdicom) and holds the GIL, and
    classification keeps LiteRT's threads (normal priority) on the cores,
    while intake reads each PDU in 4 KB socket reads, every one of which must
    take the GIL back; run together, a burst was received at half its speed
    or less (issue 20, defect 10). The worker and the aggregator call
    :meth:`wait_quiet` before each job or study: they wait for a pause in
    intake, at most ``max_wait_s``, so their work is delayed, never starved.
    """

    def __init__(self, quiet_s: float = 0.5, max_wait_s: float = 10.0) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._last = -math.inf

    def touch(self) -> None:
        self._last = time.monotonic()

    def busy(self) -> bool:
        return time.monotonic() - self._last < self.quiet_s

    def wait_quiet(self, stop: threading.Event) -> None:
        """Wait until intake paused for ``quiet_s`` (or ``max_wait_s`` passed, or ``stop``)."""
        start = time.monotonic()
        while self.busy() and time.monotonic() - start < self.max_wait_s and not stop.is_set():
            stop.wait(self.quiet_s / 5)


class BoundedAssociationSocket(AssociationSocket):
    """pynetdicom's socket that refuses to read a PDU announced longer than ``pdu_limit``.

    The DUL reads a PDU's 6-byte header, then as many bytes as its length
    field says (up to 4 GB) into memory before any event sees them; a peer
    that ignores the maximum length we offered (PS3.8 D.1) could fill memory
    with one PDU. Raising ``OSError`` there makes the DUL close the
    connection (its "connection closed before the entire PDU was received").
    """

    pdu_limit = DEFAULT_MAX_PDU_BYTES

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self.pdu_limit:
            log.warning("a PDU of %d bytes was announced, more than the %d accepted; "
                        "closing the connection", nr_bytes, self.pdu_limit)
            raise OSError(f"PDU of {nr_bytes} bytes refused (limit {self.pdu_limit})")
        return super().recv(nr_bytes)


class OversizedDataset(io.BytesIO):
    """Takes a C-STORE dataset's buffer over once it passed the limit: counts, keeps nothing."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received

    def write(self, data: object) -> int:
        size = len(data) if isinstance(data, bytes | bytearray | memoryview) else 0
        self.received += size
        return size


class Intake:
    """Handlers bound to one spool and one journal (passed in, not global)."""

    def __init__(self, spool: Spool, journal: Journal, limits: IntakeLimits | None = None,
                 activity: IntakeActivity | None = None) -> None:
        self.spool = spool
        self.journal = journal
        self.limits = limits or IntakeLimits()
        self.activity = activity or IntakeActivity()

    def handle_echo(self, event: Event) -> int:
        """C-ECHO (Verification, PS3.4 annex A): always Success."""
        log.info("C-ECHO from %s", event.assoc.requestor.ae_title)
        return EchoStatus.SUCCESS

    def handle_conn_open(self, event: Event) -> None:
        """EVT_CONN_OPEN (before the first PDU is read): bound the length of every PDU."""
        sock = event.assoc.dul.socket
        if type(sock) is AssociationSocket:
            sock.__class__ = BoundedAssociationSocket  # same object and state, bounded recv

    def handle_pdu(self, event: Event) -> None:
        """EVT_PDU_RECV (DUL thread): stop keeping a dataset that passed ``max_instance_bytes``.

        Runs before the PDU's fragments are added to the message being
        assembled, so the buffer never holds more than the limit.
        """
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        self.activity.touch()
        message = event.assoc.dimse.message
        if message is None:
            return
        buffer = message.data_set
        if isinstance(buffer, OversizedDataset) or not isinstance(buffer, io.BytesIO):
            return
        incoming = sum(len(item.data) - 1 for item in pdu.presentation_data_value_items
                       if item.data and not item.data[0] & COMMAND_FRAGMENT)
        if buffer.tell() + incoming > self.limits.max_instance_bytes:
            message.data_set = OversizedDataset(buffer.tell())
            log.warning("C-STORE from %s: dataset passed dicom.max_instance_mb (%d MB); "
                        "the rest is counted, not kept", event.assoc.requestor.ae_title,
                        self.limits.max_instance_bytes // 2**20)

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
            self._check_size(event)
            identity = identify(self._header(event), str(event.request.AffectedSOPClassUID))
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

    def _check_size(self, event: Event) -> None:
        buffer = cast(C_STORE, event.request).DataSet
        if isinstance(buffer, OversizedDataset):
            raise DatasetRejected(
                StoreStatus.OUT_OF_RESOURCES,
                f"dataset of {buffer.received / 2**20:.0f} MB is larger than "
                f"dicom.max_instance_mb ({self.limits.max_instance_bytes // 2**20} MB)")

    def _header(self, event: Event) -> Dataset:
        """The dataset, decoded; a Deflated one inflated within ``max_inflated_bytes`` first."""
        if not UID(event.context.transfer_syntax).is_deflated:
            return event.dataset
        raw = event.encoded_dataset(include_meta=False)
        try:
            body = inflate_bounded(raw, self.limits.max_inflated_bytes)
        except InflateLimitError as err:
            raise DatasetRejected(StoreStatus.OUT_OF_RESOURCES, str(err)) from err
        return dcmread(io.BytesIO(body), force=True, stop_before_pixels=True)

    def _persist(self, event: Event, identity: Identity, calling: str) -> int:
        data = event.encoded_dataset()
        digest = hashlib.sha256(data).hexdigest()
        uid = identity.sop_instance_uid
        if self.journal.stored_digest(uid) == digest:
            log.info("C-STORE %s from %s: identical to the stored instance; nothing to do",
                     uid, calling)
            return StoreStatus.SUCCESS
        path = self.spool.write(data, uid)
        record = NewInstance(uid, identity.sop_class_uid, identity.study_uid,
                             identity.series_uid, calling, path, digest)
        try:
            admitted = self.journal.admit_instance(record)
        except PersistError:
            self.spool.discard(path)
            raise
        if admitted.outcome is Admission.DUPLICATE:
            self.spool.discard(path)
            log.info("C-STORE %s: identical instance received concurrently", uid)
        elif admitted.outcome is Admission.REPLACED:
            self.spool.discard_replaced(admitted.old_path)
            log.info("C-STORE %s from %s: changed re-send replaces the stored instance; "
                     "queued again", uid, calling)
        else:
            log.info("C-STORE %s from %s: stored", uid, calling)
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
