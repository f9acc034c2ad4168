"""Why a delivery attempt failed, in words IT can act on (issue 20, defect 11).

Every failed attempt raises :class:`DeliveryError` with one :class:`Failure`;
its text becomes the outbox row's last error, shown by ``cxr-gateway status``,
the console and the log, e.g. ``pacs (ORTHANC@10.0.0.5:4242): connection
refused``. Failures that say the destination cannot be reached at all
(:attr:`Failure.unreachable`) make the dispatcher probe the destination
(C-ECHO, MLLP connect) so its queue resumes as soon as it answers again.
"""

from __future__ import annotations

import errno
import socket
from enum import StrEnum


class Failure(StrEnum):
    """What went wrong, one word-group each; the value is what the last error says."""

    REFUSED = "connection refused"  # nothing listens on the port (TCP RST)
    CONNECT_FAILED = "cannot connect"  # no route, unknown host, network down
    TIMEOUT = "timeout"  # connect, association, C-STORE or ACK not answered in time
    REJECTED = "association rejected"  # A-ASSOCIATE-RJ, with its reason (PS3.8 9.3.4)
    ABORTED = "association aborted"  # A-ABORT / A-P-ABORT or the connection closed
    NO_CONTEXT = "no accepted presentation context"  # associated, but not our SOP class / syntax
    STORE_FAILED = "C-STORE failed"  # a failure status, named (PS3.4 B.2.3)
    NEGATIVE_ACK = "negative acknowledgement"  # MSA-1 AE, AR, CE or CR (HL7 table 0008)
    BAD_ANSWER = "not an acknowledgement of this message"  # no MLLP, no MSA, another MSA-2
    CLOSED = "connection closed"  # the HL7 peer closed or reset before answering
    LOCAL = "local problem"  # our file unreadable, destination no longer configured

    @property
    def unreachable(self) -> bool:
        """The peer is down or not answering at all: probe it rather than wait out backoffs."""
        return self in (Failure.REFUSED, Failure.CONNECT_FAILED, Failure.TIMEOUT,
                        Failure.REJECTED, Failure.ABORTED, Failure.CLOSED)


class DeliveryError(Exception):
    """One delivery attempt failed; the text says where and why (no patient data)."""

    def __init__(self, failure: Failure, where: str, detail: str = "") -> None:
        super().__init__(f"{where}: {failure.value}" + (f": {detail}" if detail else ""))
        self.failure = failure


def connect_failure(err: OSError) -> Failure:
    """The failure a refused, timed-out or otherwise failed TCP connect stands for."""
    if isinstance(err, ConnectionRefusedError):
        return Failure.REFUSED
    if isinstance(err, (TimeoutError, socket.timeout)) or err.errno == errno.ETIMEDOUT:
        return Failure.TIMEOUT
    return Failure.CONNECT_FAILED


def check_connect(host: str, port: int, timeout_s: float, where: str) -> None:
    """Open and close one TCP connection; :class:`DeliveryError` when that fails."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        failure = connect_failure(err)
        detail = f"no answer within {timeout_s:g} s" if failure is Failure.TIMEOUT else ""
        if failure is Failure.CONNECT_FAILED:
            detail = str(err)
        raise DeliveryError(failure, where, detail) from err
