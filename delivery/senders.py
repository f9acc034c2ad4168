"""Hand one outbox row to its peer: C-STORE for DICOM objects, MLLP for HL7 messages.

A sender returns when the peer has taken responsibility for the object and
raises :class:`DeliveryError` otherwise; the dispatcher decides about retries.

* DICOM (PS3.4 annex B, Storage Service Class): Success 0x0000 and the
  warnings 0xB000 (coercion of data elements), 0xB006 (elements discarded),
  0xB007 (data set does not match SOP class) mean stored; anything else,
  a rejected or aborted association, or no answer, is a failure.
* HL7: AA or CA is delivered; AE, AR, CE, CR, timeouts, refused or dropped
  connections and answers to another message are failures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from config.schema import DicomDestination, Hl7Destination
from delivery.outbox import Channel, OutboxRow
from hl7_link.errors import Hl7Error
from hl7_link.mllp import MllpClient

log = logging.getLogger(__name__)

STORE_SUCCESS: Final = 0x0000
STORE_WARNINGS: Final = frozenset({0xB000, 0xB006, 0xB007})
"""C-STORE warning statuses that still mean the object was stored (PS3.4 B.2.3)."""


class DeliveryError(Exception):
    """One delivery attempt failed; the message says where and why (no patient data)."""


class Sender(Protocol):
    def send(self, row: OutboxRow) -> None: ...


@dataclass(frozen=True)
class DicomStoreSender:
    """C-STORE SCU to the configured DICOM destinations, one association per object."""

    own_ae_title: str
    destinations: Mapping[str, DicomDestination]
    timeout_s: float = 30.0

    def send(self, row: OutboxRow) -> None:
        peer = _destination(self.destinations, row)
        try:
            ds = dcmread(row.payload)
        except (OSError, InvalidDicomError) as err:
            raise DeliveryError(f"outbox row {row.id}: cannot read {row.payload} ({err})") from err
        ae = AE(ae_title=self.own_ae_title)
        ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            raise DeliveryError(f"{peer.name} ({peer.ae_title}@{peer.host}:{peer.port}): "
                                "association rejected, aborted or not answered")
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        code = status.get("Status") if status else None
        if code != STORE_SUCCESS and code not in STORE_WARNINGS:
            shown = "none (timeout or abort)" if code is None else f"0x{code:04X}"
            raise DeliveryError(f"{peer.name}: C-STORE of {row.kind} {row.object_uid} "
                                f"answered {shown}")
        log.info("stored %s %s at %s", row.kind, row.object_uid, peer.name)


@dataclass(frozen=True)
class MllpSender:
    """ORU^R01 over MLLP to the configured HL7 destinations."""

    destinations: Mapping[str, Hl7Destination]
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0

    def send(self, row: OutboxRow) -> None:
        peer = _destination(self.destinations, row)
        client = MllpClient(peer.host, peer.port, self.connect_timeout_s, self.ack_timeout_s)
        try:
            ack = client.send(row.payload, row.object_uid)
        except Hl7Error as err:
            raise DeliveryError(f"{peer.name}: {err}") from err
        if not ack.accepted:
            raise DeliveryError(f"{peer.name}: answered {ack.code.value} ({ack.text or 'no text'})")


D = TypeVar("D", DicomDestination, Hl7Destination)


def _destination(destinations: Mapping[str, D], row: OutboxRow) -> D:
    try:
        return destinations[row.destination]
    except KeyError:
        raise DeliveryError(f"outbox row {row.id}: destination {row.destination!r} is no "
                            f"longer configured in destinations.{row.channel}") from None


def senders_for(own_ae_title: str, dicom: Mapping[str, DicomDestination],
                hl7: Mapping[str, Hl7Destination]) -> dict[Channel, Sender]:
    """The sender of each channel."""
    return {Channel.DICOM: DicomStoreSender(own_ae_title, dicom), Channel.HL7: MllpSender(hl7)}
