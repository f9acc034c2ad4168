"""The admission rules of :mod:`dicom_node.admission`, as fast unit tests on socket pairs.

The network behaviour is tested against the running gateway in
``test_association_admission.py``; here each rule is pinned on its own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from dicom_node import admission as admission_module
from dicom_node.admission import Admission, Limits, Refusal, Refusals, Ticket


@pytest.fixture
def pairs() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _connection(pairs: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    pairs.extend((ours, theirs))
    return ours, theirs


def _admit(gate: Admission, pairs: list[socket.socket], host: str) -> Ticket | None:
    return gate.admit(_connection(pairs)[0], host)


def _gate(total: int = 4, per_host: int = 2, pending: int = 3, deadline_s: float = 60) -> Admission:
    return Admission(Limits(total, per_host, pending, deadline_s), Refusals())


def test_per_host_limit(pairs: list[socket.socket]) -> None:
    gate = _gate()
    assert _admit(gate, pairs, "10.0.0.1") and _admit(gate, pairs, "10.0.0.1")
    assert _admit(gate, pairs, "10.0.0.1") is None
    assert _admit(gate, pairs, "10.0.0.2") is not None
    assert gate.refusals.counts()[Refusal.PER_HOST_LIMIT] == 1


def test_reserved_slots_only_for_established(pairs: list[socket.socket]) -> None:
    gate = _gate(total=4, per_host=4, pending=3)
    tickets = [_admit(gate, pairs, f"10.0.0.{n}") for n in range(3)]
    assert _admit(gate, pairs, "10.0.0.9") is None  # pending budget full, none old enough
    assert gate.refusals.counts()[Refusal.LIMIT] == 1
    for ticket in tickets:
        assert ticket is not None
        gate.established(ticket)
    assert _admit(gate, pairs, "10.0.0.9") is not None  # the reserved slot
    assert _admit(gate, pairs, "10.0.0.8") is None
    assert gate.snapshot() == (1, 3)


def test_oldest_negotiating_connection_is_evicted(pairs: list[socket.socket],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "EVICT_MIN_AGE_S", 0.0)
    gate = _gate(total=4, per_host=4, pending=2)
    first_ours, first_theirs = _connection(pairs)
    first = gate.admit(first_ours, "10.0.0.1")
    assert first is not None and _admit(gate, pairs, "10.0.0.2") is not None
    assert _admit(gate, pairs, "10.0.0.3") is not None
    assert first.closed and first_theirs.recv(1) == b""  # the peer sees its connection closed
    assert gate.refusals.counts()[Refusal.PENDING_EVICTED] == 1


def test_deadline_closes_a_connection_still_negotiating(pairs: list[socket.socket]) -> None:
    gate = _gate(deadline_s=0.2)
    ours, theirs = _connection(pairs)
    ticket = gate.admit(ours, "10.0.0.1")
    assert ticket is not None
    theirs.settimeout(30)
    for _ in range(3):  # traffic does not extend the deadline
        theirs.sendall(b"\x01")
    assert theirs.recv(1) == b""
    assert ticket.closed and gate.refusals.counts()[Refusal.ESTABLISHMENT_DEADLINE] == 1


def test_established_connection_outlives_the_deadline(pairs: list[socket.socket]) -> None:
    gate = _gate(deadline_s=0.5)
    ours, theirs = _connection(pairs)
    ticket = gate.admit(ours, "10.0.0.1")
    assert ticket is not None
    gate.established(ticket)
    time.sleep(1.0)
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(1)  # still open: nothing to read, no end-of-file
    assert gate.refusals.counts()[Refusal.ESTABLISHMENT_DEADLINE] == 0


def test_release_is_idempotent_and_frees_the_slot(pairs: list[socket.socket]) -> None:
    gate = _gate(total=1, per_host=1, pending=1)
    ticket = _admit(gate, pairs, "10.0.0.1")
    assert ticket is not None
    gate.release(ticket)
    gate.release(ticket)
    assert gate.snapshot() == (0, 0) and _admit(gate, pairs, "10.0.0.1") is not None


def test_failed_after_deadline_is_counted_once(pairs: list[socket.socket]) -> None:
    gate = _gate(deadline_s=0.05)
    ticket = _admit(gate, pairs, "10.0.0.1")
    assert ticket is not None
    _wait_until_closed(ticket)
    gate.fail(ticket, Refusal.TLS_HANDSHAKE, "handshake interrupted by the deadline")
    counts = gate.refusals.counts()
    assert counts[Refusal.ESTABLISHMENT_DEADLINE] == 1 and counts[Refusal.TLS_HANDSHAKE] == 0


def _wait_until_closed(ticket: Ticket) -> None:
    for _ in range(300):
        if ticket.closed:
            return
        time.sleep(0.1)
    raise AssertionError("the deadline never closed the ticket")
