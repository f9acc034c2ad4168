"""The outbox: one row per result object and destination, kept until acknowledged.

Rows live in their own table of the journal's database (SQLite in WAL with
``synchronous=FULL``, or PostgreSQL; :mod:`storage.database`), so a result that
was handed over survives a crash and is delivered after a restart. States::

    pending --(peer acknowledged)--> delivered
    pending --(failure, within the retry window)--> pending, next attempt after a backoff
    pending --(failure, retry window over)--> dead   (visible; ``retry`` makes it pending)
    pending --(a newer revision of the same study)--> superseded

The retry window starts at a row's first failed attempt (``failing_since``),
so a destination that is down for a maintenance window of hours receives
everything when it returns; only a failure at or after the end of the window
dead-letters the row (issue 20, defect 9).

Idempotent: ``UNIQUE (channel, destination, object_uid)`` with the derived
SOP Instance UIDs and HL7 control IDs means a study handed over twice (after
a crash) is queued once, and a row is never delivered again once delivered.
A crash *during* a send leaves the row pending: it is sent again with the same
UID / control ID, which the receiver recognises.

A *lane* is the rows of one (channel, destination): each is sent by its own
thread (:mod:`delivery.dispatcher`), oldest first, and a row waits while an
older pending row of the same study is queued before it in its lane (the SR
before the heatmaps, revisions in order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from storage.database import DEFAULT_LEASE_S, Database, claimable, local_path, stored_path
from storage.errors import OutboxError

log = logging.getLogger(__name__)

_COLUMNS = ("id, study_uid, revision, kind, object_uid, channel, destination, payload, state,"
            " attempts, next_attempt_at, last_error")

_LANE_DUE = (
    f"SELECT {_COLUMNS} FROM outbox o WHERE o.state = ? AND o.channel = ? AND o.destination = ?"
    " AND o.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.state = o.state"
    " AND p.channel = o.channel AND p.destination = o.destination AND p.study_uid = o.study_uid"
    f" AND p.id < o.id) AND {claimable('o')} ORDER BY o.id LIMIT ?")
"""Due rows of one lane, oldest first, each only once no older row of its study is pending,
and not held by another node whose lease is running."""


class Channel(StrEnum):
    DICOM = "dicom"  # C-STORE; payload is the path of the DICOM file
    HL7 = "hl7"  # MLLP; payload is the ER7 message text


class Kind(StrEnum):
    SR = "sr"
    HEATMAP = "heatmap"
    ORU = "oru"


class RowState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long and how patiently to retry (delays grow 2x per failed attempt, capped).

    A row is retried until ``retry_window_s`` after its first failure; its
    last attempt is due at the end of the window at the latest. A failing
    destination is probed every ``probe_interval_s``.
    """

    retry_window_s: float = 86400.0
    backoff_base_s: float = 5.0
    backoff_max_s: float = 600.0
    probe_interval_s: float = 30.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: base * 2**(attempts-1), capped."""
        exponent = min(max(0, attempts - 1), 64)  # no float overflow after months of failures
        return float(min(self.backoff_max_s, self.backoff_base_s * 2 ** exponent))

    def next_attempt(self, failing_since: float, attempts: int, now: float) -> float | None:
        """When to try again after the ``attempts``-th failure at ``now``; ``None``: dead-letter."""
        deadline = failing_since + self.retry_window_s
        if now >= deadline:
            return None
        return min(now + self.delay(attempts), deadline)


@dataclass(frozen=True)
class NewDelivery:
    """One object for one destination, as the sink enqueues it."""

    study_uid: str
    revision: int
    kind: Kind
    object_uid: str
    channel: Channel
    destination: str
    payload: str


@dataclass(frozen=True)
class OutboxRow(NewDelivery):
    """A stored row: the delivery as enqueued, with its id and where its sending stands."""

    id: int
    state: RowState
    attempts: int
    next_attempt_at: float
    last_error: str | None


class Outbox(Database):
    """The outbox table; thread-safe (:class:`storage.database.Database`)."""

    label = "outbox"
    error: type[Exception] = OutboxError

    def __init__(self, target: str | Path, password: str | None = None, *,
                 upgrade: bool | None = None, node: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S, results_root: Path | None = None) -> None:
        """``node``, ``lease_s``: see :class:`storage.database.Database` and :meth:`claim`.
        DICOM payloads (result files) under ``results_root`` are stored relative to it, so
        any node sharing it can send them."""
        super().__init__(target, password, upgrade, node=node, lease_s=lease_s)
        self.results_root = results_root

    def _stored(self, item: NewDelivery) -> str:
        """The payload as recorded: a DICOM file's path relative to the results root."""
        if item.channel is not Channel.DICOM or self.results_root is None:
            return item.payload
        return stored_path(Path(item.payload), self.results_root)

    def _row(self, r: tuple[object, ...]) -> OutboxRow:
        row = _row(r)
        if row.channel is not Channel.DICOM or self.results_root is None:
            return row
        return replace(row, payload=str(local_path(row.payload, self.results_root)))

    def enqueue(self, items: Sequence[NewDelivery], now: float | None = None) -> int:
        """Queue ``items`` in one transaction; returns how many were new.

        Pending rows of an older revision of the same study, kind and
        destination are superseded by a different object (the newer report);
        an object that is the same in both revisions (a heatmap) keeps its row.
        """
        now = time.time() if now is None else now
        added = 0
        with self.transaction() as db:
            for item in items:
                cur = db.execute(
                    "INSERT INTO outbox (study_uid, revision, kind, object_uid, channel,"
                    " destination, payload, state, next_attempt_at, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (item.study_uid, item.revision, item.kind, item.object_uid, item.channel,
                     item.destination, self._stored(item), RowState.PENDING, now, now, now))
                added += cur.rowcount
                db.execute(
                    "UPDATE outbox SET state = ?, updated_at = ? WHERE state = ? AND study_uid = ?"
                    " AND kind = ? AND channel = ? AND destination = ? AND revision < ?"
                    " AND object_uid != ?",
                    (RowState.SUPERSEDED, now, RowState.PENDING, item.study_uid, item.kind,
                     item.channel, item.destination, item.revision, item.object_uid))
        return added

    def due(self, now: float | None = None, limit: int = 20) -> list[OutboxRow]:
        """Pending rows whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        rows = self.query(f"SELECT {_COLUMNS} FROM outbox WHERE state = ? AND next_attempt_at <= ?"
                          " ORDER BY next_attempt_at, id LIMIT ?", (RowState.PENDING, now, limit))
        return [self._row(r) for r in rows]

    def lane_due(self, channel: Channel, destination: str, now: float | None = None,
                 limit: int = 20) -> list[OutboxRow]:
        """Due rows of one lane in queue order, each once no older row of its study is pending."""
        now = time.time() if now is None else now
        rows = self.query(_LANE_DUE, (RowState.PENDING, channel, destination, now, self.node, now,
                                      limit))
        return [self._row(r) for r in rows]

    def claim(self, row_id: int, now: float | None = None) -> bool:
        """Hold a pending row for this node while it is sent (issue 22): ``False`` when another
        node holds it (its lease still running) or it is no longer pending. Released by
        :meth:`mark_delivered` and :meth:`mark_failed`; a dead node's lease runs out."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            taken = db.execute(
                "UPDATE outbox SET claimed_by = ?, lease_until = ? WHERE id = ? AND state = ?"
                f" AND {claimable()}",
                (self.node, now + self.lease_s, row_id, RowState.PENDING, self.node, now))
        return bool(taken.rowcount)

    def lanes(self) -> list[tuple[Channel, str]]:
        """Every (channel, destination) with pending rows."""
        found = self.query("SELECT DISTINCT channel, destination FROM outbox WHERE state = ?"
                           " ORDER BY channel, destination", (RowState.PENDING,))
        return [(Channel(str(c)), str(d)) for c, d in found]

    def lane_failing(self, channel: Channel, destination: str) -> bool:
        """True when a pending row of the lane has failed at least once (e.g. before a restart)."""
        return bool(self.query("SELECT 1 FROM outbox WHERE state = ? AND channel = ? AND"
                               " destination = ? AND attempts > 0 LIMIT 1",
                               (RowState.PENDING, channel, destination)))

    def make_due(self, channel: Channel, destination: str, now: float | None = None,
                 oldest_only: bool = False) -> int:
        """Pending rows of a lane that wait for a backoff become due at ``now``; how many.

        ``oldest_only``: just the oldest one (a test send after a successful probe).
        """
        now = time.time() if now is None else now
        where = "state = ? AND channel = ? AND destination = ? AND next_attempt_at > ?"
        args: tuple[object, ...] = (RowState.PENDING, channel, destination, now)
        if oldest_only:
            where = f"id = (SELECT id FROM outbox WHERE {where} ORDER BY id LIMIT 1)"
        with self.transaction() as db:
            cur = db.execute(f"UPDATE outbox SET next_attempt_at = ?, updated_at = ? WHERE {where}",
                             (now, now, *args))
        return cur.rowcount

    def mark_delivered(self, row_id: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.transaction() as db:
            db.execute("UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = NULL,"
                       " failing_since = NULL, updated_at = ?, claimed_by = NULL, lease_until = NULL"
                       " WHERE id = ?",
                       (RowState.DELIVERED, now, row_id))

    def mark_failed(self, row_id: int, error: str, policy: DeliveryPolicy,
                    now: float | None = None) -> RowState:
        """Count a failed attempt: back off, or dead-letter once the retry window is over."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            found = db.execute("SELECT attempts, failing_since FROM outbox WHERE id = ?",
                               (row_id,)).fetchone()
            if found is None:
                raise OutboxError(f"outbox {self.path}: no row {row_id}")
            attempts = int(found[0]) + 1
            since = now if found[1] is None else float(found[1])
            due = policy.next_attempt(since, attempts, now)
            state = RowState.DEAD if due is None else RowState.PENDING
            db.execute("UPDATE outbox SET state = ?, attempts = ?, last_error = ?,"
                       " failing_since = ?, next_attempt_at = ?, updated_at = ?, claimed_by = NULL,"
                       " lease_until = NULL WHERE id = ?",
                       (state, attempts, error, since, now if due is None else due, now, row_id))
        return state

    def retry(self, row_ids: Sequence[int] | None = None, now: float | None = None) -> int:
        """Make dead rows pending again (all of them, or ``row_ids``); returns how many."""
        now = time.time() if now is None else now
        where, args = "state = ?", list[object]([RowState.DEAD.value])
        if row_ids is not None:
            where += f" AND id IN ({', '.join('?' for _ in row_ids)})"
            args.extend(int(i) for i in row_ids)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE outbox SET state = ?, attempts = 0, failing_since = NULL,"
                             f" next_attempt_at = ?, updated_at = ? WHERE {where}",
                             (RowState.PENDING, now, now, *args))
        return cur.rowcount

    def rows(self, state: RowState | None = None, limit: int = 50,
             failed_only: bool = False) -> list[OutboxRow]:
        """Most recently updated rows (of one state; ``failed_only``: with a last error), for
        status and the console."""
        clauses, args = (["state = ?"], [state.value]) if state else ([], [])
        if failed_only:
            clauses.append("COALESCE(last_error, '') != ''")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        found = self.query(f"SELECT {_COLUMNS} FROM outbox {where} ORDER BY updated_at DESC, id"
                           " DESC LIMIT ?", (*args, limit))
        return [self._row(r) for r in found]

    def study_rows(self, study_uid: str) -> list[OutboxRow]:
        """Every row of a study, newest revision first."""
        rows = self.query(f"SELECT {_COLUMNS} FROM outbox WHERE study_uid = ?"
                          " ORDER BY revision DESC, kind, destination, id", (study_uid,))
        return [self._row(r) for r in rows]

    def counts_by_destination(self) -> list[tuple[str, str, RowState, int]]:
        """(channel, destination, state, rows) for every destination and state."""
        rows = self.query("SELECT channel, destination, state, COUNT(*) FROM outbox"
                          " GROUP BY channel, destination, state ORDER BY channel, destination, state")
        return [(str(c), str(d), RowState(str(s)), int(str(n))) for c, d, s, n in rows]

    def row_state(self, row_id: int) -> RowState | None:
        found = self.query("SELECT state FROM outbox WHERE id = ?", (row_id,))
        return RowState(str(found[0][0])) if found else None

    def counts(self) -> dict[RowState, int]:
        found = {str(s): int(str(n)) for s, n in
                 self.query("SELECT state, COUNT(*) FROM outbox GROUP BY state")}
        return {s: found.get(s.value, 0) for s in RowState}


def _row(r: tuple[object, ...]) -> OutboxRow:
    return OutboxRow(
        id=int(str(r[0])), study_uid=str(r[1]), revision=int(str(r[2])), kind=Kind(str(r[3])),
        object_uid=str(r[4]), channel=Channel(str(r[5])), destination=str(r[6]),
        payload=str(r[7]), state=RowState(str(r[8])), attempts=int(str(r[9])),
        next_attempt_at=float(str(r[10])), last_error=None if r[11] is None else str(r[11]))
