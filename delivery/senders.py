"""Hand one outbox row to its peer: C-STORE for DICOM objects, MLLP for HL7 messages.

A sender returns when the peer has taken responsibility for the object and
raises :class:`DeliveryError` (with a :class:`Failure`) otherwise; the
dispatcher decides about retries. :meth:`Sender.probe` checks that a
destination answers at all (C-ECHO, an MLLP TCP connect) without sending data.

* DICOM (PS3.4 annex B, Storage Service Class): Success 0x0000 and the
  warnings 0xB000 (coercion of data elements), 0xB006 (elements discarded),
  0xB007 (data set does not match SOP class) mean stored; a failure status is
  named (0xA700 "Refused: Out of Resources" ...). A refused connection, a
  timeout, a rejected association (with the reject reason of PS3.8 9.3.4), an
  association accepted without our presentation context and an abort are told
  apart in the error (:mod:`delivery.failures`).
* HL7: AA or CA is delivered; AE, AR, CE, CR, timeouts, refused or dropped
  connections and answers to another message are failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, evt
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from config.schema import DicomDestination, Hl7Destination
from delivery.failures import DeliveryError, Failure, check_connect, connect_failure
from delivery.outbox import Channel, OutboxRow
from hl7_link.errors import AckError, Hl7Error, MllpConnectFailed, MllpError, MllpTimeout
from hl7_link.mllp import FramingError, MllpClient

log = logging.getLogger(__name__)

__all__ = ["DeliveryError", "DicomStoreSender", "Failure", "MllpSender", "Sender", "senders_for"]

STORE_SUCCESS: Final = 0x0000
STORE_WARNINGS: Final = frozenset({0xB000, 0xB006, 0xB007})
"""C-STORE warning statuses that still mean the object was stored (PS3.4 B.2.3)."""
ECHO_SUCCESS: Final = 0x0000
PROPOSED_TRANSFER_SYNTAXES: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
"""Proposed for every object sent and for C-ECHO: every SCP accepts them (PS3.5 10.1, A.1);
results are written in Explicit VR Little Endian. Listed in docs/conformance.md."""


class Sender(Protocol):
    def send(self, row: OutboxRow) -> None: ...

    def probe(self, destination: str) -> None: ...


@dataclass
class _AssociationWatch:
    """What happened on the wire while associating: connected, and the ACSE answers received."""

    connected: bool = False
    answers: list[object] | None = None

    def handlers(self) -> list[evt.EventHandlerType]:
        self.answers = []
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_ACSE_RECV, self._received)]

    def _opened(self, event: evt.Event) -> None:
        self.connected = True

    def _received(self, event: evt.Event) -> None:
        assert self.answers is not None
        self.answers.append(getattr(event, "primitive", None))

    def peer_aborted(self) -> bool:
        return any(isinstance(a, (A_ABORT, A_P_ABORT)) for a in self.answers or [])

    def associate_answer(self) -> A_ASSOCIATE | None:
        return next((a for a in self.answers or [] if isinstance(a, A_ASSOCIATE)), None)


@dataclass(frozen=True)
class DicomStoreSender:
    """C-STORE SCU to the configured DICOM destinations, one association per object."""

    own_ae_title: str
    destinations: Mapping[str, DicomDestination]
    timeout_s: float = 30.0

    def send(self, row: OutboxRow) -> None:
        peer = _destination(self.destinations, row)
        ds = _read(row)
        assoc = self._associate(peer, ds.SOPClassUID)
        try:
            context = [c for c in assoc.accepted_contexts if c.abstract_syntax == ds.SOPClassUID]
            if not context:
                raise DeliveryError(Failure.NO_CONTEXT, _where(peer), _sop_name(ds.SOPClassUID))
            status, aborted, elapsed = _store(assoc, ds, _where(peer))
        finally:
            if assoc.is_established:
                assoc.release()
        _check_store(status, aborted, elapsed >= self.timeout_s, row, peer, self.timeout_s)
        log.info("stored %s %s at %s", row.kind, row.object_uid, peer.name)

    def probe(self, destination: str) -> None:
        """C-ECHO (PS3.4 annex A, Verification): the destination answers DICOM again."""
        peer = _named(self.destinations, destination, Channel.DICOM)
        assoc = self._associate(peer, UID(Verification))
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        code = status.get("Status") if status else None
        if code != ECHO_SUCCESS:
            shown = "no answer" if code is None else f"status 0x{code:04X}"
            raise DeliveryError(Failure.TIMEOUT if code is None else Failure.STORE_FAILED,
                                _where(peer), f"C-ECHO: {shown}")

    def _associate(self, peer: DicomDestination, sop_class: UID) -> Association:
        """An established association proposing ``sop_class``, or the :class:`DeliveryError`."""
        ae = AE(ae_title=self.own_ae_title)
        ae.add_requested_context(sop_class, list(PROPOSED_TRANSFER_SYNTAXES))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        watch = _AssociationWatch()
        start = time.monotonic()
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                             evt_handlers=watch.handlers())
        if not assoc.is_established:
            raise self._not_established(peer, watch, time.monotonic() - start, sop_class, assoc)
        return assoc

    def _not_established(self, peer: DicomDestination, watch: _AssociationWatch,
                         elapsed_s: float, sop_class: UID, assoc: Association) -> DeliveryError:
        where = _where(peer)
        if not watch.connected and elapsed_s >= self.timeout_s:
            return DeliveryError(Failure.TIMEOUT, where, f"the TCP connection was not accepted "
                                 f"within {self.timeout_s:g} s (delivery.store_timeout_s)")
        if not watch.connected:
            try:  # pynetdicom only logs why the TCP connect failed: ask the socket once more
                check_connect(peer.host, peer.port, self.timeout_s, where)
            except DeliveryError as err:
                return err
            return DeliveryError(Failure.CONNECT_FAILED, where, "the connection failed once")
        answer = watch.associate_answer()
        if answer is not None and answer.result == 0x00:
            return DeliveryError(Failure.NO_CONTEXT, where,
                                 f"{_sop_name(sop_class)}: {_context_reasons(assoc)}")
        if answer is not None:
            return DeliveryError(Failure.REJECTED, where, _reject_reason(answer))
        if watch.peer_aborted():
            return DeliveryError(Failure.ABORTED, where,
                                 "the peer aborted or closed the connection")
        return DeliveryError(Failure.TIMEOUT, where, "no answer to the association request "
                             f"within {self.timeout_s:g} s (delivery.store_timeout_s)")


def _store(assoc: Association, ds: Dataset, where: str) -> tuple[Dataset | None, bool, float]:
    """C-STORE ``ds``: (status, whether the association was aborted, seconds it took)."""
    aborted: list[bool] = []
    assoc.bind(evt.EVT_ABORTED, lambda event: aborted.append(True))
    start = time.monotonic()
    try:
        status = assoc.send_c_store(ds)
    except ValueError as err:  # no accepted context for the file's transfer syntax
        raise DeliveryError(Failure.NO_CONTEXT, where, str(err)) from err
    return status or None, bool(aborted), time.monotonic() - start


def _check_store(status: Dataset | None, aborted: bool, timed_out: bool, row: OutboxRow,
                 peer: DicomDestination, timeout_s: float) -> None:
    """Raise the named failure unless ``status`` means stored (PS3.4 B.2.3)."""
    what = f"{row.kind} {row.object_uid}"
    code = status.get("Status") if status is not None else None
    if code is None:
        if timed_out or not aborted:
            raise DeliveryError(Failure.TIMEOUT, _where(peer), f"no C-STORE response for {what}"
                                f" within {timeout_s:g} s (delivery.store_timeout_s)")
        raise DeliveryError(Failure.ABORTED, _where(peer), f"during the C-STORE of {what}")
    if code == STORE_SUCCESS or code in STORE_WARNINGS:
        return
    comment = status.get("ErrorComment") if status is not None else None
    raise DeliveryError(Failure.STORE_FAILED, _where(peer), f"{what} answered {status_name(code)}"
                        + (f" ({comment})" if comment else ""))


def status_name(code: int) -> str:
    """``0xA700 Refused: Out of Resources``: the code and its PS3.4 B.2.3 / PS3.7 C name."""
    category, name = STORAGE_SERVICE_CLASS_STATUS.get(code, ("Failure", "unknown status"))
    return f"0x{code:04X} {name or category}"


def _reject_reason(answer: A_ASSOCIATE) -> str:
    """``Rejected Permanent by the Service User: Called AE title not recognised`` (PS3.8 9.3.4)."""
    return f"{answer.result_str} by the {answer.source_str}: {answer.reason_str}"


def _context_reasons(assoc: Association) -> str:
    reasons = sorted({cx.status for cx in assoc.rejected_contexts if cx.status})
    return ", ".join(reasons) or "the peer accepted none of the proposed transfer syntaxes"


def _sop_name(sop_class: UID) -> str:
    return f"{UID(sop_class).name} with Explicit or Implicit VR Little Endian"


def _read(row: OutboxRow) -> Dataset:
    try:
        return dcmread(row.payload)
    except (OSError, InvalidDicomError) as err:
        raise DeliveryError(Failure.LOCAL, f"outbox row {row.id}",
                            f"cannot read {row.payload} ({err})") from err


def _where(peer: DicomDestination) -> str:
    return f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port})"


@dataclass(frozen=True)
class MllpSender:
    """ORU^R01 over MLLP to the configured HL7 destinations."""

    destinations: Mapping[str, Hl7Destination]
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0

    def send(self, row: OutboxRow) -> None:
        peer = _destination(self.destinations, row)
        where = _hl7_where(peer)
        client = MllpClient(peer.host, peer.port, self.connect_timeout_s, self.ack_timeout_s)
        try:
            ack = client.send(row.payload, row.object_uid)
        except Hl7Error as err:
            raise DeliveryError(_hl7_failure(err), where, str(err)) from err
        if not ack.accepted:
            raise DeliveryError(Failure.NEGATIVE_ACK, where,
                                f"answered {ack.code.value} ({ack.text or 'no text'})")

    def probe(self, destination: str) -> None:
        """A TCP connect to the MLLP port, closed at once (no message is sent)."""
        peer = _named(self.destinations, destination, Channel.HL7)
        check_connect(peer.host, peer.port, self.connect_timeout_s, _hl7_where(peer))


def _hl7_where(peer: Hl7Destination) -> str:
    return f"{peer.name} ({peer.host}:{peer.port})"


def _hl7_failure(err: Hl7Error) -> Failure:
    """The failure class of an MLLP client error (framing before transport: it subclasses it)."""
    if isinstance(err, (FramingError, AckError)):
        return Failure.BAD_ANSWER
    if isinstance(err, MllpTimeout):
        return Failure.TIMEOUT
    if isinstance(err, MllpConnectFailed):
        cause = err.__cause__
        return connect_failure(cause) if isinstance(cause, OSError) else Failure.CONNECT_FAILED
    if isinstance(err, MllpError):
        return Failure.CLOSED
    return Failure.BAD_ANSWER


D = TypeVar("D", DicomDestination, Hl7Destination)


def _destination(destinations: Mapping[str, D], row: OutboxRow) -> D:
    return _named(destinations, row.destination, row.channel, f"outbox row {row.id}")


def _named(destinations: Mapping[str, D], name: str, channel: Channel,
           where: str = "delivery") -> D:
    try:
        return destinations[name]
    except KeyError:
        raise DeliveryError(Failure.LOCAL, where, f"destination {name!r} is no longer "
                            f"configured in destinations.{channel}") from None


def senders_for(own_ae_title: str, dicom: Mapping[str, DicomDestination],
                hl7: Mapping[str, Hl7Destination]) -> dict[Channel, Sender]:
    """The sender of each channel."""
    return {Channel.DICOM: DicomStoreSender(own_ae_title, dicom), Channel.HL7: MllpSender(hl7)}
