"""Nodes sharing one database: heartbeats, lease renewal, who holds what (issue 22).

Every running node writes its heartbeat to ``nodes`` and renews the leases of
the jobs, study reports and deliveries it holds, every third of
``storage.lease_s``. A node that dies stops renewing: after ``lease_s`` its
work is taken over by the next node that looks (:meth:`Journal.claim_job`,
:meth:`Journal.claim_study`, :meth:`Outbox.claim`). ``cxr-gateway status``
lists the nodes with their last heartbeat and what they hold.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from storage.database import Database
from storage.errors import StorageError
from storage.journal import JobState
from storage.outbox import RowState

log = logging.getLogger(__name__)

_HELD = (("jobs", f"state = '{JobState.RUNNING}'"), ("studies", "claimed_by IS NOT NULL"),
         ("outbox", f"state = '{RowState.PENDING}'"))
"""Per table, the rows whose lease a node renews and counts as held."""


@dataclass(frozen=True)
class NodeStatus:
    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    jobs: int  # classification jobs it holds
    reports: int  # study reports it holds
    deliveries: int  # outbox rows it is sending


def beat(db: Database, node: str, lease_s: float, started_at: float,
         now: float | None = None) -> None:
    """Record the heartbeat and renew every lease ``node`` holds, in one transaction."""
    now = time.time() if now is None else now
    with db.transaction() as tx:
        tx.execute("INSERT INTO nodes (name, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                   " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                   (node, socket.gethostname(), os.getpid(), started_at, now))
        for table, held in _HELD:
            tx.execute(f"UPDATE {table} SET lease_until = ? WHERE claimed_by = ? AND {held}",
                       (now + lease_s, node))


def nodes(db: Database) -> list[NodeStatus]:
    """Every node that ever beat, most recent heartbeat first, with what it holds now."""
    counts = {table: dict(db.query(f"SELECT claimed_by, COUNT(*) FROM {table}"
                                   f" WHERE claimed_by IS NOT NULL AND {held} GROUP BY claimed_by"))
              for table, held in _HELD}
    rows = db.query("SELECT name, host, pid, started_at, heartbeat_at FROM nodes"
                    " ORDER BY heartbeat_at DESC, name")
    return [NodeStatus(str(n), str(h), int(p), float(s), float(b),
                       int(counts["jobs"].get(n, 0)), int(counts["studies"].get(n, 0)),
                       int(counts["outbox"].get(n, 0))) for n, h, p, s, b in rows]


class Heartbeat(threading.Thread):
    """Beats every ``lease_s / 3`` until ``stop`` is set; a failed beat is logged and retried."""

    def __init__(self, db: Database, node: str, lease_s: float, stop: threading.Event) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.db, self.node, self.lease_s, self.stop = db, node, lease_s, stop
        self.started_at = time.time()

    def run(self) -> None:
        while True:
            try:
                beat(self.db, self.node, self.lease_s, self.started_at)
            except StorageError as err:
                log.error("heartbeat of node %s failed (its leases run out after %g s): %s",
                          self.node, self.lease_s, err)
            if self.stop.wait(self.lease_s / 3):
                return
