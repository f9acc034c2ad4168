"""The dispatcher: delivers due outbox rows, backs off on failure, dead-letters at the limit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from delivery.outbox import Channel, DeliveryPolicy, Outbox, OutboxError, OutboxRow, RowState
from delivery.senders import DeliveryError, Sender

log = logging.getLogger(__name__)


class Dispatcher(threading.Thread):
    """Polls the outbox and sends; one thread, so one object is never sent twice at once."""

    def __init__(self, outbox: Outbox, senders: Mapping[Channel, Sender], policy: DeliveryPolicy,
                 stop: threading.Event, poll_s: float = 1.0) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.outbox = outbox
        self.senders = senders
        self.policy = policy
        self.stop = stop
        self.poll_s = poll_s
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll (rows were just queued, or stop)."""
        self._wake.set()

    def run(self) -> None:
        while not self.stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self.stop.is_set():
                break
            try:
                self.run_once()
            except OutboxError as err:
                log.error("delivery: outbox unavailable: %s", err)

    def run_once(self, now: float | None = None) -> int:
        """Attempt every due row once; returns how many were delivered."""
        delivered = 0
        for row in self.outbox.due(now):
            if self.stop.is_set():
                break
            delivered += self.attempt(row, now)
        return delivered

    def attempt(self, row: OutboxRow, now: float | None = None) -> int:
        """Send one row and record the outcome; 1 when delivered, else 0."""
        try:
            self.senders[row.channel].send(row)
        except DeliveryError as err:
            state = self.outbox.mark_failed(row.id, str(err), self.policy,
                                            time.time() if now is None else now)
            level = logging.ERROR if state is RowState.DEAD else logging.WARNING
            log.log(level, "delivery of %s %s to %s failed (attempt %d): %s%s", row.kind,
                    row.object_uid, row.destination, row.attempts + 1, err,
                    "; dead-lettered" if state is RowState.DEAD else "")
            return 0
        self.outbox.mark_delivered(row.id, now)
        return 1
