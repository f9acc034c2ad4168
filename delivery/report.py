"""What ``cxr-gateway status`` shows of the outbox: counts, rows being retried, dead letters.

Rows carry UIDs, destinations, attempts and the last error, never patient
data or the payload.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delivery.outbox import Outbox, OutboxRow, RowState
from delivery.views import RetryOutcome, public_row, retry_row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxReport:
    counts: dict[RowState, int]
    dead: list[OutboxRow]  # most recently failed first
    failing: list[OutboxRow] = field(default_factory=list)  # pending after a failed attempt

    def as_json(self) -> dict[str, Any]:
        return {"counts": {s.value: n for s, n in self.counts.items()},
                "dead": [public_row(r) for r in self.dead],
                "failing": [public_row(r) for r in self.failing]}

    def lines(self) -> list[str]:
        """Human-readable lines: a summary, the rows being retried, the dead letters."""
        out = ["outbox: " + ", ".join(f"{s.value} {n}" for s, n in self.counts.items())]
        if self.failing:
            out.append("retrying (the last attempt failed; sent again by itself):")
        for row in self.failing:
            when = time.strftime("%H:%M:%S", time.localtime(row.next_attempt_at))
            out.append(f"{_line(row)}  next attempt {when}  last error: {row.last_error or '-'}")
        if self.dead:
            out.append("dead letters (re-queue with: cxr-gateway retry ID ... | --all-dead):")
        for row in self.dead:
            out.append(f"{_line(row)}  last error: {row.last_error or '-'}")
        return out


def _line(row: OutboxRow) -> str:
    return (f"  #{row.id:<5} {row.kind.value:<7} {row.channel.value}:{row.destination}"
            f"  study {row.study_uid}  {row.attempts} attempt(s)")


def outbox_report(database: Path | str, dead_limit: int = 50, password: str | None = None) -> OutboxReport:
    """Counts, rows being retried and dead letters of the outbox in ``database``."""
    outbox = Outbox(database, password=password)
    try:
        return OutboxReport(outbox.counts(), outbox.rows(RowState.DEAD, dead_limit),
                            outbox.rows(RowState.PENDING, dead_limit, failed_only=True))
    finally:
        outbox.close()


def requeue_all(database: Path | str, password: str | None = None) -> int:
    """Make every dead letter pending again; the running dispatcher sends them. Returns how many."""
    outbox = Outbox(database, password=password)
    try:
        count = outbox.retry(None, time.time())
    finally:
        outbox.close()
    log.info("re-queued %d dead-lettered outbox row(s)", count)
    return count


def requeue_rows(database: Path | str, row_ids: list[int],
                 password: str | None = None) -> dict[int, RetryOutcome]:
    """Make each given dead letter pending again; what happened to each ID."""
    outbox = Outbox(database, password=password)
    try:
        return {row_id: retry_row(outbox, row_id) for row_id in dict.fromkeys(row_ids)}
    finally:
        outbox.close()
