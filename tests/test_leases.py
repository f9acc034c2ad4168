"""Work claimed by several nodes on one database (issue 22 item 2), on SQLite and PostgreSQL.

Two :class:`Journal`/:class:`Outbox` objects with different node names stand
for two nodes; time is passed explicitly, so a lease runs out without waiting.
"""

from __future__ import annotations

import time
from pathlib import Path

from dicom_node.journal import InstanceState, Journal, NewInstance, StoredResult
from storage.nodes import beat, nodes
from storage.outbox import Channel, Kind, NewDelivery, Outbox, RowState

LEASE = 30.0
T0 = time.time() + 3600.0  # after every row's receive time


def _pair(database: Path | str) -> tuple[Journal, Journal]:
    return (Journal(database, node="node-a", lease_s=LEASE),
            Journal(database, node="node-b", lease_s=LEASE))


def _new(sop: str, path: Path = Path("/x.dcm")) -> NewInstance:
    return NewInstance(sop, "1.2.840.10008.5.1.4.1.1.1", "1.2.3", "1.2.3.1", "PACS", path)


def test_a_dead_nodes_job_is_taken_over_after_its_lease(database: Path | str) -> None:
    a, b = _pair(database)
    a.add_instance(_new("1.1"))
    held = a.claim_job("worker-1", now=T0)
    assert held is not None
    assert b.claim_job("worker-1", now=T0 + LEASE - 1) is None  # a's lease is running
    taken = b.claim_job("worker-1", now=T0 + LEASE + 1)  # a stopped renewing it
    assert taken is not None and taken.id == held.id and taken.attempts == 2
    a.finish_classified(held, StoredResult(0.9, "tb-suspected", "{}", None))  # a wakes up late
    assert a.counts()[InstanceState.CLASSIFYING] == 1, "the late node records nothing"
    b.finish_skipped(taken, "skipped: test")
    assert b.counts()[InstanceState.SKIPPED] == 1


def test_heartbeat_renews_the_leases_a_node_holds(database: Path | str) -> None:
    a, b = _pair(database)
    a.add_instance(_new("1.1"))
    assert a.claim_job("worker-1", now=T0) is not None
    beat(a, "node-a", LEASE, started_at=T0, now=T0 + LEASE - 1)  # alive: renewed
    assert b.claim_job("worker-1", now=T0 + LEASE + 1) is None
    listed = {n.name: n for n in nodes(b)}
    assert listed["node-a"].jobs == 1 and listed["node-a"].heartbeat_at == T0 + LEASE - 1
    assert b.claim_job("worker-1", now=T0 + 2 * LEASE) is not None  # then it died


def test_a_restarted_node_takes_back_only_its_own_jobs(database: Path | str) -> None:
    a, b = _pair(database)
    for sop in ("1.1", "1.2"):
        a.add_instance(_new(sop))
    assert a.claim_job("w", now=T0) and b.claim_job("w", now=T0)
    restarted = Journal(database, node="node-a", lease_s=LEASE)
    requeued = restarted.requeue_interrupted()
    if restarted.shared:
        assert requeued == 1, "node-b's job stays node-b's"
    else:
        assert requeued == 2, "SQLite has one node: every running job was its own"


def test_a_study_is_reported_by_one_node(database: Path | str) -> None:
    a, b = _pair(database)
    a.add_instance(_new("1.1"))
    job = a.claim_job("w", now=T0)
    assert job is not None
    a.finish_skipped(job, "skipped: test")
    assert b.due_studies(0.0, now=T0) == [("1.2.3", 1)]
    assert a.claim_study("1.2.3", 1, now=T0)
    assert not b.claim_study("1.2.3", 1, now=T0 + 1)
    assert b.due_studies(0.0, now=T0 + 1) == []  # held by a
    assert a.due_studies(0.0, now=T0 + 1) == [("1.2.3", 1)]
    assert b.claim_study("1.2.3", 1, now=T0 + LEASE + 1)  # a died while reporting
    b.mark_reported("1.2.3", 1)
    assert not a.claim_study("1.2.3", 1, now=T0 + LEASE + 2), "already reported"


def _delivery(database: Path | str, node: str) -> Outbox:
    return Outbox(database, node=node, lease_s=LEASE)


def test_a_delivery_is_sent_by_one_node(database: Path | str) -> None:
    a, b = _delivery(database, "node-a"), _delivery(database, "node-b")
    a.enqueue([NewDelivery("1.2.3", 1, Kind.SR, "1.2.3.9", Channel.DICOM, "pacs", "/r/sr.dcm"),
               NewDelivery("1.2.3", 1, Kind.HEATMAP, "1.2.3.8", Channel.DICOM, "pacs", "/r/h.dcm")],
              now=T0)
    sr = a.lane_due(Channel.DICOM, "pacs", now=T0)[0]
    assert a.claim(sr.id, now=T0)
    assert not b.claim(sr.id, now=T0 + 1)
    assert b.lane_due(Channel.DICOM, "pacs", now=T0 + 1) == [], "the heatmap waits behind its SR"
    assert [r.id for r in b.lane_due(Channel.DICOM, "pacs", now=T0 + LEASE + 1)] == [sr.id]
    assert b.claim(sr.id, now=T0 + LEASE + 1)  # a died mid-send: b sends the same UID again
    b.mark_delivered(sr.id, now=T0 + LEASE + 2)
    assert not a.claim(sr.id, now=T0 + LEASE + 3), "delivered rows are not claimed again"
    assert {r.kind: r.state for r in a.rows()} == {Kind.SR: RowState.DELIVERED,
                                                    Kind.HEATMAP: RowState.PENDING}


def test_spool_paths_are_recorded_relative_to_the_spool(database: Path | str, tmp_path: Path) -> None:
    here, there = tmp_path / "mnt-a" / "spool", tmp_path / "mnt-b" / "spool"
    a = Journal(database, node="node-a", spool_root=here)
    b = Journal(database, node="node-b", spool_root=there)
    a.add_instance(_new("1.1", here / "2026" / "1.1.dcm"))
    assert a.query("SELECT path FROM instances") == [(str(Path("2026") / "1.1.dcm"),)]
    job = b.claim_job("w")
    assert job is not None and job.path == there / "2026" / "1.1.dcm"
    assert b.spool_paths() == [there / "2026" / "1.1.dcm"]
    outbox = Outbox(database, results_root=here)
    outbox.enqueue([NewDelivery("1.2.3", 1, Kind.SR, "9", Channel.DICOM, "pacs", str(here / "sr.dcm"))])
    other = Outbox(database, results_root=there)
    assert other.rows()[0].payload == str(there / "sr.dcm")
