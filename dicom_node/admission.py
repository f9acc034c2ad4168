"""Admission of TCP connections before they become associations: limits, deadline, refusals.

A connection is *pending* from TCP accept until its association is established
(A-ASSOCIATE-RQ read, association policy passed, A-ASSOCIATE-AC sent), then
*admitted* until it closes. The rules, each refusal logged and counted:

* ``dicom.max_associations`` connections in all, pending and admitted
  (``limit``);
* ``dicom.max_associations_per_host`` from one IP address (``per_host_limit``);
* at most ``max_associations - reserved_associations`` pending: the reserved
  slots can only be held by callers the policy accepted. When the pending
  budget is full, the oldest pending connection (older than
  :data:`EVICT_MIN_AGE_S`) is closed for the newcomer (``pending_evicted``);
* a pending connection is closed when ``dicom.timeouts.establishment``
  seconds have passed since TCP accept (``establishment_deadline``): a total
  deadline for the TLS handshake and the A-ASSOCIATE-RQ that sending one byte
  at a time cannot extend (PS3.8 9.1.5 ARTIM is an idle timer; this is not).

Policy rejections (``policy``) and failed TLS handshakes (``tls_handshake``)
are recorded by their owners into the same :class:`Refusals`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from config.schema import DicomSettings

log = logging.getLogger(__name__)

EVICT_MIN_AGE_S: Final = 1.0  # a caller that just connected is mid-handshake: never evicted


class Refusal(StrEnum):
    """Why a connection or association was refused (the ``reason`` label of the metric)."""

    LIMIT = "limit"
    PER_HOST_LIMIT = "per_host_limit"
    PENDING_EVICTED = "pending_evicted"
    ESTABLISHMENT_DEADLINE = "establishment_deadline"
    POLICY = "policy"
    TLS_HANDSHAKE = "tls_handshake"


class Refusals:
    """Logs every refusal (peer address and reason, never patient data) and counts it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Refusal] = Counter()

    def count(self, refusal: Refusal) -> None:
        """Count a refusal its owner has logged in its own words."""
        with self._lock:
            self._counts[refusal] += 1

    def record(self, refusal: Refusal, peer: str, detail: str) -> None:
        self.count(refusal)
        log.warning("association refused (%s) from %s: %s", refusal.value, peer, detail)

    def counts(self) -> dict[Refusal, int]:
        """Every reason with its count since start (zero included)."""
        with self._lock:
            return {reason: self._counts[reason] for reason in Refusal}


@dataclass(frozen=True)
class Limits:
    """The admission limits, taken from ``dicom`` settings."""

    total: int
    per_host: int
    pending: int
    deadline_s: float

    @classmethod
    def from_settings(cls, dicom: DicomSettings) -> Limits:
        return cls(dicom.max_associations, dicom.per_host_limit,
                   dicom.max_associations - dicom.reserved_slots, dicom.timeouts.establishment)


@dataclass(eq=False)
class Ticket:
    """One accepted TCP connection; ``control`` is a duplicate of its socket used to close it."""

    host: str
    control: socket.socket
    opened: float = field(default_factory=time.monotonic)
    phase: str = "connected"  # "tls handshake", "A-ASSOCIATE-RQ", for the deadline's log line
    pending: bool = True
    closed: bool = False
    timer: threading.Timer | None = None


class Admission:
    """Counts connections and enforces :class:`Limits`; thread-safe."""

    def __init__(self, limits: Limits, refusals: Refusals) -> None:
        self.limits = limits
        self.refusals = refusals
        self._lock = threading.Lock()
        self._open: list[Ticket] = []  # in order of arrival

    def snapshot(self) -> tuple[int, int]:
        """``(pending, admitted)`` connections now."""
        with self._lock:
            pending = self._pending_count()
            return pending, len(self._open) - pending

    def admit(self, sock: socket.socket, host: str) -> Ticket | None:
        """A ticket for a new connection, or ``None`` (refusal recorded; caller closes it)."""
        evicted: Ticket | None = None
        with self._lock:
            refusal, detail = self._check(host)
            if refusal is None and self._pending_count() >= self.limits.pending:
                evicted = self._oldest_evictable()
                if evicted is None:
                    refusal, detail = Refusal.LIMIT, (f"{self.limits.pending} connections are "
                                                      "still negotiating (pending budget full)")
                else:
                    self._drop(evicted)
            if refusal is not None:
                ticket = None
            else:
                ticket = Ticket(host, sock.dup())
                self._open.append(ticket)
        if evicted is not None:
            self.refusals.record(Refusal.PENDING_EVICTED, evicted.host,
                                 f"closed in phase {evicted.phase} to make room for {host} "
                                 "(pending budget full)")
            _kick(evicted)
        if ticket is None:
            self.refusals.record(refusal or Refusal.LIMIT, host, detail)
            return None
        ticket.timer = threading.Timer(self.limits.deadline_s, self._expire, (ticket,))
        ticket.timer.daemon = True
        ticket.timer.start()
        return ticket

    def _check(self, host: str) -> tuple[Refusal | None, str]:
        from_host = sum(t.host == host for t in self._open)
        if from_host >= self.limits.per_host:
            return Refusal.PER_HOST_LIMIT, (f"{from_host} connections from this host already "
                                            "(dicom.max_associations_per_host)")
        if len(self._open) >= self.limits.total and self._pending_count() < self.limits.pending:
            return Refusal.LIMIT, f"{len(self._open)} connections open (dicom.max_associations)"
        return None, ""

    def _pending_count(self) -> int:
        return sum(t.pending for t in self._open)

    def _oldest_evictable(self) -> Ticket | None:
        now = time.monotonic()
        return next((t for t in self._open if t.pending and now - t.opened >= EVICT_MIN_AGE_S),
                    None)

    def _drop(self, ticket: Ticket) -> None:
        """Forget ``ticket``; the caller holds the lock."""
        ticket.closed = True
        ticket.pending = False
        self._open.remove(ticket)
        if ticket.timer is not None:
            ticket.timer.cancel()

    def established(self, ticket: Ticket) -> None:
        """The policy accepted the caller: the connection leaves the pending budget."""
        with self._lock:
            ticket.pending = False
        if ticket.timer is not None:
            ticket.timer.cancel()

    def fail(self, ticket: Ticket, refusal: Refusal, detail: str) -> None:
        """Record a refusal for ``ticket`` unless it was already closed (by the deadline)."""
        with self._lock:
            if ticket.closed:
                return
            self._drop(ticket)
        self.refusals.record(refusal, ticket.host, detail)

    def release(self, ticket: Ticket) -> None:
        """The connection ended; idempotent."""
        with self._lock:
            if not ticket.closed:
                self._drop(ticket)
        ticket.control.close()

    def _expire(self, ticket: Ticket) -> None:
        with self._lock:
            if not ticket.pending:  # established, or closed already (_drop clears it)
                return
            self._drop(ticket)
        self.refusals.record(Refusal.ESTABLISHMENT_DEADLINE, ticket.host,
                             f"no association within {self.limits.deadline_s:g} s of connecting "
                             f"(dicom.timeouts.establishment), still in phase {ticket.phase}; "
                             "connection closed")
        _kick(ticket)


def _kick(ticket: Ticket) -> None:
    """Close the connection under whichever thread reads it: its recv returns end-of-file."""
    try:
        ticket.control.shutdown(socket.SHUT_RDWR)
    except OSError as err:  # already closed by the peer or by pynetdicom
        log.debug("closing the connection from %s: %s", ticket.host, err)
