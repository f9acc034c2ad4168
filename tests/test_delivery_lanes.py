"""Issue 20 defect 9: outages within the retry window end delivered; one lane per destination.

Real peers on loopback: Orthanc (tests/orthanc_peer.py) stopped and started
again as the PACS, a hung PACS that accepts TCP and never answers
(tests/delivery_peers.py), a pynetdicom Storage SCP and the hl7apy MLLP
listener (tests/mllp_listener.py). The dispatcher runs as in ``serve`` (its
own threads); the assertions are about order and state, never about seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config.schema import DicomDestination, Hl7Destination
from delivery.dispatcher import Dispatcher
from delivery.failures import DeliveryError, Failure
from delivery.outbox import Channel, DeliveryPolicy, Kind, NewDelivery, Outbox, OutboxRow, RowState
from delivery.senders import DicomStoreSender, MllpSender, Sender
from delivery.sink import OutboxSink
from tests.delivery_peers import PACS_AET, HungPeer, StoreScp
from tests.gateway_harness import OWN_AE, free_port
from tests.mllp_listener import MllpListener
from tests.orthanc_peer import ORTHANC_AET, OrthancPeer
from tests.results_support import IDENTITY
from tests.test_delivery import _study

T0 = 1_000_000.0
WAIT_S = 60.0  # how long a condition may take on a busy machine before the test gives up


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {WAIT_S} s")


@pytest.fixture
def outbox(database: Path | str) -> Iterator[Outbox]:
    box = Outbox(database)  # SQLite and PostgreSQL (tests/conftest.py)
    yield box
    box.close()


@dataclass
class Running:
    """A dispatcher running in its own threads, as ``serve`` runs it; stopped at teardown."""

    dispatcher: Dispatcher
    stop: threading.Event = field(default_factory=threading.Event)

    def halt(self) -> None:
        self.stop.set()
        self.dispatcher.wake()
        self.dispatcher.join(30)
        assert not self.dispatcher.is_alive()


def _run(outbox: Outbox, senders: dict[Channel, Sender], policy: DeliveryPolicy,
         lanes: list[tuple[Channel, str]]) -> Running:
    stop = threading.Event()
    dispatcher = Dispatcher(outbox, senders, policy, stop, 0.1, lanes)
    dispatcher.start()
    return Running(dispatcher, stop)


def _row(outbox: Outbox, kind: Kind, destination: str | None = None) -> OutboxRow:
    return next(r for r in outbox.rows(limit=1000)
                if r.kind is kind and destination in (None, r.destination))


def _dicom(name: str, port: int, ae_title: str = PACS_AET) -> DicomDestination:
    return DicomDestination(name=name, ae_title=ae_title, host="127.0.0.1", port=port)


@pytest.mark.slow
def test_pacs_maintenance_window_resumes_by_probe_without_dead_letters(
        outbox: Outbox, tmp_path: Path) -> None:
    """Orthanc down, then back: the probe resumes the queue long before the 1-hour backoff."""
    orthanc = OrthancPeer(tmp_path / "orthanc", OWN_AE, free_port())
    sender = DicomStoreSender(OWN_AE, {"pacs": _dicom("pacs", orthanc.dicom_port, ORTHANC_AET)},
                              timeout_s=10.0)
    # Without the probe nothing would be retried for an hour: a pass is the probe's doing.
    policy = DeliveryPolicy(retry_window_s=86400, backoff_base_s=3600, backoff_max_s=3600,
                            probe_interval_s=0.2)
    OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], []).study_ready(_study(tmp_path))
    running = _run(outbox, {Channel.DICOM: sender}, policy, [(Channel.DICOM, "pacs")])
    try:
        sr = wait_for(lambda: (r := _row(outbox, Kind.SR)).attempts >= 1 and r, "SR attempt")
        assert sr.state is RowState.PENDING and "connection refused" in str(sr.last_error)
        assert "pacs (ORTHANC@127.0.0.1:" in str(sr.last_error)
        assert all(r.attempts == 0 for r in outbox.rows() if r.kind is Kind.HEATMAP)
        orthanc.start()
        wait_for(lambda: outbox.counts()[RowState.DELIVERED] == 3, "SR and heatmaps delivered")
    finally:
        running.halt()
        orthanc.stop(graceful=False)
    rows = outbox.rows()
    assert outbox.counts()[RowState.DEAD] == 0
    assert _row(outbox, Kind.SR).attempts == 2  # refused once, then sent when the probe answered
    assert [r.attempts for r in rows if r.kind is Kind.HEATMAP] == [1, 1]  # waited for their SR


@pytest.mark.slow
def test_outage_beyond_the_window_dead_letters_and_needs_retry(
        outbox: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row dead-lettered during an outage stays dead when the PACS returns, until ``retry``."""
    orthanc = OrthancPeer(tmp_path / "orthanc", OWN_AE, free_port())
    sender = DicomStoreSender(OWN_AE, {"pacs": _dicom("pacs", orthanc.dicom_port, ORTHANC_AET)},
                              timeout_s=10.0)
    policy = DeliveryPolicy(retry_window_s=0.3, backoff_base_s=0.1, backoff_max_s=0.1,
                            probe_interval_s=0.1)
    OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], [],
               heatmap=False).study_ready(_study(tmp_path))
    caplog.set_level(logging.INFO, logger="delivery.dispatcher")
    running = _run(outbox, {Channel.DICOM: sender}, policy, [(Channel.DICOM, "pacs")])
    try:
        [dead] = wait_for(lambda: outbox.rows(RowState.DEAD), "SR dead-lettered")
        assert dead.attempts >= 2 and "connection refused" in str(dead.last_error)
        orthanc.start()
        wait_for(lambda: "probe answered" in caplog.text, "probe sees Orthanc again")
        assert [r.id for r in outbox.rows(RowState.DEAD)] == [dead.id]  # no resurrection
        assert outbox.retry([dead.id]) == 1
        running.dispatcher.wake()
        wait_for(lambda: outbox.counts()[RowState.DELIVERED] == 1, "SR delivered after retry")
    finally:
        running.halt()
        orthanc.stop(graceful=False)


@pytest.mark.slow
def test_hung_pacs_delays_neither_the_ris_nor_another_pacs(outbox: Outbox,
                                                            tmp_path: Path) -> None:
    """A PACS that accepts TCP and never answers holds its own lane only."""
    with HungPeer() as hung, MllpListener() as ris:
        good = StoreScp()
        hl7 = Hl7Destination(name="ris", host="127.0.0.1", port=ris.port)
        senders: dict[Channel, Sender] = {
            Channel.DICOM: DicomStoreSender(
                OWN_AE, {"hung": _dicom("hung", hung.port), "good": _dicom("good", good.port)},
                timeout_s=WAIT_S * 2),  # its first attempt cannot end before the test does
            Channel.HL7: MllpSender({"ris": hl7}, 5.0, 10.0)}
        # the hung PACS's row is queued first, so one thread sending in turn would wait for it
        OutboxSink(outbox, IDENTITY, tmp_path / "results", ["hung", "good"], [hl7],
                   heatmap=False).study_ready(_study(tmp_path))
        assert _row(outbox, Kind.SR, "hung").id < _row(outbox, Kind.ORU).id
        running = _run(outbox, senders, DeliveryPolicy(), [])
        try:
            wait_for(lambda: hung.accepted >= 1, "the hung PACS's association is open")
            wait_for(lambda: _row(outbox, Kind.ORU).state is RowState.DELIVERED, "ORU delivered")
            wait_for(lambda: _row(outbox, Kind.SR, "good").state is RowState.DELIVERED,
                     "SR delivered to the other PACS")
            stuck = _row(outbox, Kind.SR, "hung")
            assert (stuck.state, stuck.attempts) == (RowState.PENDING, 0)  # first try not over
            assert len(ris.received) == 1 and len(good.received) == 1
        finally:
            hung.close()  # the waiting association sees the connection closed and gives up
            running.halt()
            good.close()
    stuck = _row(outbox, Kind.SR, "hung")
    assert (stuck.state, stuck.attempts) == (RowState.PENDING, 1)
    assert "association aborted" in str(stuck.last_error)


@dataclass
class ScriptedSender:
    """Fails each row as scripted (then succeeds), counts probes; the real ones use real peers."""

    failures: dict[str, list[Failure]] = field(default_factory=dict)
    probe_answers: bool = False
    sent: list[str] = field(default_factory=list)
    probes: int = 0

    def send(self, row: OutboxRow) -> None:
        self.sent.append(row.object_uid)
        script = self.failures.get(row.object_uid)
        if script:
            raise DeliveryError(script.pop(0), "pacs", "scripted")

    def probe(self, destination: str) -> None:
        self.probes += 1
        if not self.probe_answers:
            raise DeliveryError(Failure.REFUSED, destination)


def _rows(outbox: Outbox, *items: tuple[str, Kind, int, str]) -> None:
    outbox.enqueue([NewDelivery(study, revision, kind, uid, Channel.DICOM, "pacs", "x")
                    for uid, kind, revision, study in items], now=T0)


def _dispatcher(outbox: Outbox, sender: ScriptedSender,
                policy: DeliveryPolicy | None = None) -> Dispatcher:
    policy = policy or DeliveryPolicy(retry_window_s=1000, backoff_base_s=100,
                                      backoff_max_s=100, probe_interval_s=10)
    return Dispatcher(outbox, {Channel.DICOM: sender}, policy, threading.Event())


def test_rows_of_a_study_keep_their_order_in_the_lane(outbox: Outbox) -> None:
    """The SR before its heatmaps, revision 1 before 2; another study is not held up."""
    _rows(outbox, ("sr-a1", Kind.SR, 1, "A"), ("hm-a", Kind.HEATMAP, 1, "A"),
          ("sr-b", Kind.SR, 1, "B"))
    sender = ScriptedSender({"sr-a1": [Failure.STORE_FAILED]})
    dispatcher = _dispatcher(outbox, sender)
    assert dispatcher.run_once(T0) == 1
    assert sender.sent == ["sr-a1", "sr-b"]  # the heatmap waits for its SR
    _rows(outbox, ("sr-a2", Kind.SR, 2, "A"))  # supersedes the waiting revision 1
    assert dispatcher.run_once(T0 + 100) == 2
    assert sender.sent[2:] == ["hm-a", "sr-a2"]
    assert {r.object_uid: r.state for r in outbox.rows()}["sr-a1"] is RowState.SUPERSEDED


def test_unreachable_destination_is_probed_and_resumes_as_a_whole(outbox: Outbox) -> None:
    _rows(outbox, ("sr-1", Kind.SR, 1, "A"), ("sr-2", Kind.SR, 1, "B"))
    sender = ScriptedSender({"sr-1": [Failure.REFUSED], "sr-2": [Failure.TIMEOUT]})
    dispatcher = _dispatcher(outbox, sender)
    assert dispatcher.run_once(T0) == 0 and sender.probes == 0
    assert dispatcher.run_once(T0 + 5) == 0 and sender.probes == 0  # probe not due yet
    assert dispatcher.run_once(T0 + 10) == 0 and sender.probes == 1  # still refused
    sender.probe_answers = True
    # the probe answers: the oldest row is tried at once; it is delivered, so the rest follow,
    # 80 s before their backoff would have let them
    assert dispatcher.run_once(T0 + 20) == 2 and sender.probes == 2
    assert sender.sent == ["sr-1", "sr-2", "sr-1", "sr-2"]
    assert [(r.state, r.attempts) for r in outbox.rows()] == [(RowState.DELIVERED, 2)] * 2


def test_a_peer_that_refuses_an_object_is_not_probed(outbox: Outbox) -> None:
    """A named C-STORE failure means the PACS is up: plain backoff, no probing."""
    _rows(outbox, ("sr-3", Kind.SR, 1, "C"))
    sender = ScriptedSender({"sr-3": [Failure.STORE_FAILED, Failure.STORE_FAILED]},
                            probe_answers=True)
    dispatcher = _dispatcher(outbox, sender)
    for step in (0, 10, 50, 100, 150, 200):
        dispatcher.run_once(T0 + step)
    assert sender.probes == 0 and sender.sent == ["sr-3"] * 3
    assert [(r.state, r.attempts) for r in outbox.rows()] == [(RowState.DELIVERED, 3)]


def test_unexpected_sender_error_is_recorded_and_the_lane_lives(outbox: Outbox) -> None:
    class Broken(ScriptedSender):
        def send(self, row: OutboxRow) -> None:
            raise KeyError("bug")

    _rows(outbox, ("sr-1", Kind.SR, 1, "A"))
    stop = threading.Event()
    dispatcher = Dispatcher(outbox, {Channel.DICOM: Broken()}, DeliveryPolicy(retry_window_s=0),
                            stop, 0.05)
    dispatcher.start()
    try:
        [dead] = wait_for(lambda: outbox.rows(RowState.DEAD), "row dead-lettered")
        assert "internal error: KeyError" in str(dead.last_error)
        assert all(lane.is_alive() for lane in dispatcher.lanes.values())
    finally:
        stop.set()
        dispatcher.wake()
        dispatcher.join(10)
