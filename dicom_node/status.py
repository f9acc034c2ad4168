"""Named DIMSE status codes and association-reject reasons the node answers with.

Status values: DICOM PS3.7 annex C (general) and PS3.4 annex B.2.3 (Storage
Service Class C-STORE statuses). Reject reasons: PS3.8 section 9.3.4
(A-ASSOCIATE-RJ PDU, result/source/diagnostic).
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700  # Refused: cannot persist (disk, watermark, journal)
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: SOP Class UID differs from the request
    CANNOT_UNDERSTAND = 0xC210  # Error: dataset cannot be decoded or lacks its UIDs


class EchoStatus(IntEnum):
    """C-ECHO response status (PS3.7 9.1.5, PS3.4 annex A)."""

    SUCCESS = 0x0000


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ result field (PS3.8 9.3.4)."""

    PERMANENT = 0x01
    TRANSIENT = 0x02


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ source field (PS3.8 9.3.4)."""

    SERVICE_USER = 0x01


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ diagnostic when the source is the service user (PS3.8 9.3.4)."""

    NO_REASON = 0x01
    CALLING_AE_NOT_RECOGNIZED = 0x03
    CALLED_AE_NOT_RECOGNIZED = 0x07
