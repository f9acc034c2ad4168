"""Read-only views of the outbox for the console, REST API and metrics, and a one-row retry.

Reads go through the outbox's own methods: its SQL stays in :mod:`storage.outbox`.
Rows carry UIDs, destinations and states, no patient data; the payload (file
path or HL7 text) is never returned to the web layer by :func:`public_row`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from storage.outbox import Outbox, OutboxRow, RowState

log = logging.getLogger(__name__)


class RetryOutcome(StrEnum):
    REQUEUED = "requeued"
    NOT_FOUND = "not-found"
    NOT_DEAD = "not-dead"  # only dead-lettered rows are retried


@dataclass(frozen=True)
class DestinationCount:
    channel: str
    destination: str
    state: RowState
    rows: int


def study_rows(outbox: Outbox, study_uid: str) -> list[OutboxRow]:
    """Every outbox row of a study, newest revision first."""
    return outbox.study_rows(study_uid)


def counts_by_destination(outbox: Outbox) -> list[DestinationCount]:
    return [DestinationCount(*row) for row in outbox.counts_by_destination()]


def retry_row(outbox: Outbox, row_id: int) -> RetryOutcome:
    """Make one dead-lettered row pending again (:meth:`Outbox.retry`)."""
    if outbox.row_state(row_id) is None:
        return RetryOutcome.NOT_FOUND
    if outbox.retry([row_id]) == 0:
        return RetryOutcome.NOT_DEAD
    log.info("outbox row %d re-queued by an operator", row_id)
    return RetryOutcome.REQUEUED


def retry_study(outbox: Outbox, study_uid: str) -> int:
    """Make every dead-lettered row of a study pending again; returns how many."""
    dead = [r.id for r in study_rows(outbox, study_uid) if r.state is RowState.DEAD]
    return outbox.retry(dead) if dead else 0


def public_row(row: OutboxRow) -> dict[str, Any]:
    """What the console shows of a row (no payload)."""
    return {"id": row.id, "revision": row.revision, "kind": row.kind.value,
            "object_uid": row.object_uid, "channel": row.channel.value,
            "destination": row.destination, "state": row.state.value, "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at, "last_error": row.last_error}
