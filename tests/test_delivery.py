"""The outbox: rows, backoff, dead-letter, retry, restart; delivery to real DICOM and HL7 peers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from config.schema import DicomDestination, Hl7Destination
from delivery.dispatcher import Dispatcher
from delivery.outbox import (
    Channel,
    DeliveryPolicy,
    Kind,
    NewDelivery,
    Outbox,
    RowState,
)
from delivery.senders import DicomStoreSender, MllpSender, Sender
from delivery.sink import OutboxSink
from dicom_node.aggregation import ImageResult, StudyResult
from tests.delivery_peers import StoreScp
from tests.dicom_factory import write
from tests.mllp_listener import Answer, MllpListener
from tests.results_support import IDENTITY, STUDY_UID, prediction, source

POLICY = DeliveryPolicy(retry_window_s=30.0, backoff_base_s=10.0, backoff_max_s=25.0)
T0 = 1_000_000.0


def _item(uid: str = "1.2.3.4", revision: int = 1, kind: Kind = Kind.SR,
          destination: str = "pacs") -> NewDelivery:
    return NewDelivery(STUDY_UID, revision, kind, uid, Channel.DICOM, destination, "/x.dcm")


@pytest.fixture
def outbox(database: Path | str) -> Iterator[Outbox]:
    box = Outbox(database)  # SQLite and PostgreSQL (tests/conftest.py)
    yield box
    box.close()


def test_backoff_doubles_and_is_capped() -> None:
    assert [POLICY.delay(n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 25.0, 25.0]
    assert POLICY.delay(10_000) == 25.0  # months of failures: no float overflow


def test_retry_window_not_attempt_count_decides_the_dead_letter() -> None:
    """Issue 20 defect 9: 24 h of retries by default, the last attempt at the window's end."""
    default = DeliveryPolicy()
    assert default.retry_window_s == 86400.0 and default.backoff_max_s == 600.0
    assert POLICY.next_attempt(T0, 1, T0) == T0 + 10
    assert POLICY.next_attempt(T0, 2, T0 + 10) == T0 + 30  # 20 s, but the window ends at T0+30
    assert POLICY.next_attempt(T0, 3, T0 + 30) is None
    assert default.next_attempt(T0, 200, T0 + 11 * 60) == T0 + 21 * 60  # 11 min is no reason


def test_enqueue_is_idempotent_per_destination(outbox: Outbox) -> None:
    assert outbox.enqueue([_item(), _item(destination="backup")], now=T0) == 2
    assert outbox.enqueue([_item(), _item(destination="backup")], now=T0) == 0
    assert [r.destination for r in outbox.due(T0)] == ["pacs", "backup"]


def test_failures_back_off_then_dead_letter_then_retry(outbox: Outbox) -> None:
    outbox.enqueue([_item()], now=T0)
    row = outbox.due(T0)[0]
    assert outbox.mark_failed(row.id, "refused", POLICY, now=T0) is RowState.PENDING
    assert outbox.due(T0 + 9) == [] and len(outbox.due(T0 + 10)) == 1
    assert outbox.mark_failed(row.id, "refused", POLICY, now=T0 + 10) is RowState.PENDING
    assert outbox.due(T0 + 29) == [] and len(outbox.due(T0 + 30)) == 1  # capped at the window
    assert outbox.mark_failed(row.id, "AE", POLICY, now=T0 + 30) is RowState.DEAD
    dead = outbox.rows(RowState.DEAD)
    assert [(r.attempts, r.last_error) for r in dead] == [(3, "AE")]
    assert outbox.due(T0 + 10_000) == []
    assert outbox.retry(now=T0 + 40) == 1
    again = outbox.due(T0 + 40)
    assert [(r.state, r.attempts) for r in again] == [(RowState.PENDING, 0)]


def test_delivered_rows_are_never_due_again(outbox: Outbox) -> None:
    outbox.enqueue([_item()], now=T0)
    outbox.mark_delivered(outbox.due(T0)[0].id, now=T0)
    outbox.enqueue([_item()], now=T0 + 1)
    assert outbox.due(T0 + 10_000) == []
    assert outbox.counts()[RowState.DELIVERED] == 1


def test_rows_survive_a_restart(database: Path | str) -> None:
    first = Outbox(database)
    first.enqueue([_item()], now=T0)
    first.close()
    reopened = Outbox(database)
    assert [r.object_uid for r in reopened.due(T0)] == ["1.2.3.4"]
    reopened.close()


def test_newer_revision_supersedes_other_objects_only(outbox: Outbox) -> None:
    outbox.enqueue([_item("sr-1", 1), _item("sc-1", 1, Kind.HEATMAP)], now=T0)
    outbox.enqueue([_item("sr-2", 2), _item("sc-1", 2, Kind.HEATMAP)], now=T0)
    states = {r.object_uid: r.state for r in outbox.rows()}
    assert states == {"sr-1": RowState.SUPERSEDED, "sr-2": RowState.PENDING,
                      "sc-1": RowState.PENDING}


@pytest.fixture
def pacs() -> Iterator[StoreScp]:
    scp = StoreScp()
    yield scp
    scp.close()


def _study(tmp_path: Path, revision: int = 1) -> StudyResult:
    images = []
    for index, scores in enumerate(((0.9, 0.1), (0.2, 0.3)), start=1):
        ds = source(index)
        path = write(ds, tmp_path / "spool" / f"{index}.dcm")
        images.append(ImageResult(str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID),
                                  str(ds.SOPClassUID), path, prediction(*scores, heatmap=True)))
    return StudyResult(STUDY_UID, revision, tuple(images), images[0], ())


def _dispatcher(outbox: Outbox, pacs_port: int, hl7_port: int,
                ack_timeout: float = 5.0) -> Dispatcher:
    dicom = {"pacs": DicomDestination(name="pacs", ae_title="TESTPACS", host="127.0.0.1",
                                      port=pacs_port)}
    senders: dict[Channel, Sender] = {Channel.DICOM: DicomStoreSender("CXRGATEWAY", dicom, timeout_s=5.0),
               Channel.HL7: MllpSender({"ris": _hl7(hl7_port)}, 2.0, ack_timeout)}
    return Dispatcher(outbox, senders, POLICY, threading.Event())


def _hl7(port: int) -> Hl7Destination:
    return Hl7Destination(name="ris", host="127.0.0.1", port=port, receiving_application="RIS")


def _sink(outbox: Outbox, tmp_path: Path, port: int) -> OutboxSink:
    return OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], [_hl7(port)])


@pytest.mark.slow
def test_study_result_reaches_pacs_and_ris_once(outbox: Outbox, pacs: StoreScp,
                                                tmp_path: Path) -> None:
    with MllpListener() as ris:
        sink = _sink(outbox, tmp_path, ris.port)
        sink.study_ready(_study(tmp_path))
        sink.study_ready(_study(tmp_path))  # handed over twice (e.g. after a crash)
        assert outbox.counts()[RowState.PENDING] == 4  # SR + 2 heatmaps + ORU
        assert _dispatcher(outbox, pacs.port, ris.port).run_once() == 4
        assert outbox.counts()[RowState.DELIVERED] == 4
        sink.study_ready(_study(tmp_path))
        assert _dispatcher(outbox, pacs.port, ris.port).run_once(time.time() + 1e6) == 0
    classes = sorted(str(ds.SOPClassUID) for ds in pacs.received)
    assert classes == sorted([Comprehensive3DSRStorage] + [SecondaryCaptureImageStorage] * 2)
    assert {str(ds.StudyInstanceUID) for ds in pacs.received} == {STUDY_UID}
    assert len(ris.received) == 1
    oru = ris.parsed[0]
    assert oru.msh.msh_5.to_er7() == "RIS"
    assert oru.oru_r01_patient_result.oru_r01_order_observation.obr.obr_2.to_er7() == "ACC-0001"


@pytest.mark.slow
def test_hl7_error_is_retried_with_the_same_control_id(outbox: Outbox, tmp_path: Path) -> None:
    with MllpListener() as ris:
        ris.scripted.append(Answer.ERROR)
        OutboxSink(outbox, IDENTITY, tmp_path / "r", [], [_hl7(ris.port)],
                   heatmap=False).study_ready(_study(tmp_path))
        dispatcher = _dispatcher(outbox, 1, ris.port)
        start = time.time()
        assert dispatcher.run_once(start) == 0
        row = outbox.rows()[0]
        assert (row.state, row.attempts) == (RowState.PENDING, 1) and "AE" in str(row.last_error)
        assert dispatcher.run_once(start + 5) == 0  # not due before the backoff
        assert dispatcher.run_once(start + 10) == 1
    ids = [m.msh.msh_10.to_er7() for m in ris.parsed]
    assert len(ids) == 2 and ids[0] == ids[1] == row.object_uid


@pytest.mark.slow
def test_silent_peer_and_missing_pacs_end_dead_lettered(outbox: Outbox, tmp_path: Path) -> None:
    with MllpListener(Answer.SILENT) as ris:
        OutboxSink(outbox, IDENTITY, tmp_path / "r", ["pacs"], [_hl7(ris.port)],
                   heatmap=False).study_ready(_study(tmp_path))
        with socket_port() as closed_port:
            dispatcher = _dispatcher(outbox, closed_port, ris.port, ack_timeout=0.3)
            start = time.time()
            for step in (0, 15, 30):
                dispatcher.run_once(start + step)
    dead = outbox.rows(RowState.DEAD)
    assert sorted(r.kind for r in dead) == [Kind.ORU, Kind.SR]
    assert all(r.attempts == 3 for r in dead)  # at 0, 15 and 30 s: the window's end
    errors = " ".join(str(r.last_error) for r in dead)
    assert "timeout" in errors and "no ACK within 0.3" in errors
    assert "pacs (TESTPACS@127.0.0.1:" in errors and "connection refused" in errors
    assert outbox.retry([dead[0].id]) == 1
    assert outbox.counts()[RowState.DEAD] == 1


class socket_port:
    """A loopback port with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def __exit__(self, *args: object) -> None:
        return None


def test_outbox_of_an_older_release_gets_the_new_column(tmp_path: Path) -> None:
    """A journal written before the retry window: opened, migrated, its rows still delivered."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO outbox (study_uid, revision, kind, object_uid, channel,"
                   " destination, payload, state, attempts, next_attempt_at, created_at,"
                   " updated_at) VALUES ('1.2', 1, 'sr', '1.2.3', 'dicom', 'pacs', '/x', 'pending',"
                   " 3, ?, ?, ?)", (T0, T0, T0))
    db.close()
    box = Outbox(path)
    try:
        [row] = box.due(T0)
        assert box.mark_failed(row.id, "refused", POLICY, now=T0) is RowState.PENDING
        assert box.query("SELECT failing_since, attempts FROM outbox") == [(T0, 4)]
    finally:
        box.close()


OLD_SCHEMA = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY, study_uid TEXT NOT NULL, revision INTEGER NOT NULL,
    kind TEXT NOT NULL, object_uid TEXT NOT NULL, channel TEXT NOT NULL,
    destination TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (channel, destination, object_uid)
);
"""


def test_default_policy_rides_out_a_maintenance_window(outbox: Outbox) -> None:
    """Issue 20 defect 9: with the defaults, an 8-hour outage leaves the row pending (it used to
    be dead after 8 attempts, about 11 minutes); only failing past 24 hours dead-letters it."""
    policy = DeliveryPolicy()
    outbox.enqueue([_item()], now=T0)
    now, attempts = T0, 0
    while now < T0 + 8 * 3600:
        [row] = outbox.due(now)
        assert outbox.mark_failed(row.id, "connection refused", policy, now) is RowState.PENDING
        attempts += 1
        now = outbox.rows()[0].next_attempt_at
    assert attempts > 8 and now - T0 <= 8 * 3600 + policy.backoff_max_s
    [row] = outbox.due(T0 + 86400)  # the last attempt falls on the end of the window
    assert outbox.mark_failed(row.id, "connection refused", policy, T0 + 86400) is RowState.DEAD
