"""The dispatcher: one lane (thread) per destination sends its due rows, backs off, probes.

Issue 20, defect 9. A lane sends the rows of one (channel, destination) in
queue order, so a PACS that accepts TCP and never answers delays only its own
rows, never the RIS or another PACS. A failed row waits a capped exponential
backoff and is retried until the retry window is over
(:class:`delivery.outbox.DeliveryPolicy`), then dead-lettered. When an
attempt fails because the destination cannot be reached at all
(:attr:`delivery.failures.Failure.unreachable`), the lane probes it every
``probe_interval_s`` (C-ECHO, MLLP connect); when the probe succeeds the
oldest waiting row is sent at once, and when that succeeds every waiting row
of the lane is due again: the queue resumes soon after the destination
returns instead of after a long backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from delivery.failures import DeliveryError, Failure
from delivery.outbox import Channel, DeliveryPolicy, Outbox, OutboxError, OutboxRow, RowState
from delivery.senders import Sender

log = logging.getLogger(__name__)

LaneKey = tuple[Channel, str]

BATCH = 20
"""Rows read per query; a lane reads again while a batch was full or delivered something."""


class Lane(threading.Thread):
    """Sends the rows of one destination, oldest first; probes the destination while it is down."""

    def __init__(self, key: LaneKey, outbox: Outbox, sender: Sender, policy: DeliveryPolicy,
                 stop: threading.Event, poll_s: float = 1.0) -> None:
        super().__init__(name=f"lane-{key[0].value}-{key[1]}", daemon=True)
        self.channel, self.destination = key
        self.outbox, self.sender, self.policy = outbox, sender, policy
        self.stop, self.poll_s = stop, poll_s
        self._wake = threading.Event()
        # rows that failed before a restart: probe at once rather than wait out their backoff
        self.unreachable = outbox.lane_failing(self.channel, self.destination)
        self.next_probe_at = 0.0

    @property
    def label(self) -> str:
        return f"{self.channel.value}:{self.destination}"

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_once()
            except OutboxError as err:
                log.error("delivery %s: outbox unavailable: %s", self.label, err)
            self._wake.wait(self._pause())
            self._wake.clear()

    def _pause(self) -> float:
        if not self.unreachable:
            return self.poll_s
        return max(0.0, min(self.poll_s, self.next_probe_at - time.time()))

    def run_once(self, now: float | None = None) -> int:
        """Probe if due, then attempt every due row of the lane once; how many were delivered."""
        self._probe_if_due(_now(now))
        delivered = 0
        while not self.stop.is_set():
            rows = self.outbox.lane_due(self.channel, self.destination, _now(now), BATCH)
            batch = 0
            for row in rows:
                if self.stop.is_set():
                    break
                batch += self.attempt(row, now)
            delivered += batch
            if len(rows) < BATCH and not batch:  # a delivery may have unblocked its study's next
                break
        return delivered

    def attempt(self, row: OutboxRow, now: float | None = None) -> int:
        """Send one row and record the outcome; 1 when delivered, else 0 (also when another
        node holds the row: each (revision, destination) is sent by one node at a time)."""
        if not self.outbox.claim(row.id, now):
            return 0
        try:
            self.sender.send(row)
        except DeliveryError as err:
            self._failed(row, str(err), err.failure, now)
            return 0
        except Exception as err:  # a sender bug must not end the lane: record it, retry later
            log.exception("delivery %s: unexpected error sending outbox row %d", self.label, row.id)
            self._failed(row, f"{self.label}: internal error: {type(err).__name__}: {err}",
                         Failure.LOCAL, now)
            return 0
        self.outbox.mark_delivered(row.id, now)
        self._reached(_now(now))
        return 1

    def _failed(self, row: OutboxRow, error: str, failure: Failure, now: float | None) -> None:
        state = self.outbox.mark_failed(row.id, error, self.policy, _now(now))
        dead = state is RowState.DEAD
        # while a destination is known to be down, its rows' failures are expected: INFO, so a
        # day-long outage does not flood the log (the outage itself is a WARNING, once)
        quiet = self.unreachable and failure.unreachable
        level = logging.ERROR if dead else logging.INFO if quiet else logging.WARNING
        log.log(level, "delivery of %s %s to %s failed (attempt %d): %s%s", row.kind,
                row.object_uid, self.label, row.attempts + 1, error,
                "; dead-lettered" if dead else "")
        if failure.unreachable:
            if not self.unreachable:
                log.warning("delivery %s: destination unreachable (%s); checking it every %g s",
                            self.label, failure.value, self.policy.probe_interval_s)
            self.unreachable = True
            self.next_probe_at = _now(now) + self.policy.probe_interval_s
        elif failure is not Failure.LOCAL:
            self._reached(_now(now))  # it answered, if only to refuse this object

    def _reached(self, now: float) -> None:
        """The destination answered: after an outage, every waiting row is due now."""
        if self.unreachable:
            self.unreachable = False
            resumed = self.outbox.make_due(self.channel, self.destination, now)
            log.info("delivery %s: destination answers again; %d waiting result(s) resume",
                     self.label, resumed)
            if resumed:
                self._wake.set()

    def _probe_if_due(self, now: float) -> None:
        if not self.unreachable or now < self.next_probe_at:
            return
        self.next_probe_at = now + self.policy.probe_interval_s
        try:
            self.sender.probe(self.destination)
        except DeliveryError as err:
            log.info("delivery %s: probe: still unreachable (%s)", self.label, err)
            return
        moved = self.outbox.make_due(self.channel, self.destination, now, oldest_only=True)
        log.info("delivery %s: probe answered; sending the oldest waiting result now (%d)",
                 self.label, moved)


class Dispatcher(threading.Thread):
    """Runs one :class:`Lane` per destination (configured or found in the outbox)."""

    def __init__(self, outbox: Outbox, senders: Mapping[Channel, Sender], policy: DeliveryPolicy,
                 stop: threading.Event, poll_s: float = 1.0,
                 destinations: Iterable[LaneKey] = ()) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.outbox, self.senders, self.policy = outbox, senders, policy
        self.stop, self.poll_s = stop, poll_s
        self.destinations = list(destinations)
        self.lanes: dict[LaneKey, Lane] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll (rows were just queued, or stop)."""
        self._wake.set()
        with self._lock:
            lanes = list(self.lanes.values())
        for lane in lanes:
            lane.wake()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._start_lanes()
            except OutboxError as err:
                log.error("delivery: outbox unavailable: %s", err)
            self._wake.wait(self.poll_s)
            self._wake.clear()
        with self._lock:
            lanes = list(self.lanes.values())
        for lane in lanes:
            lane.wake()
        for lane in lanes:
            if lane.is_alive():
                lane.join()

    def _start_lanes(self) -> None:
        """A running lane for every destination that has one; a lane that died is replaced."""
        for key in self._keys():
            lane = self.lanes.get(key)
            if lane is not None and lane.is_alive():
                continue
            if lane is not None and lane.ident is not None:
                log.error("delivery %s: lane thread ended unexpectedly; restarting it", lane.label)
            lane = self.lane(key)
            if lane is not None:
                lane.start()

    def _keys(self) -> list[LaneKey]:
        """The configured destinations, then any other the outbox still has rows for."""
        return list(dict.fromkeys([*self.destinations, *self.outbox.lanes()]))

    def lane(self, key: LaneKey) -> Lane | None:
        """The lane of ``key`` (a new, unstarted one if needed); ``None`` without a sender."""
        sender = self.senders.get(key[0])
        if sender is None:
            return None
        with self._lock:
            lane = self.lanes.get(key)
            if lane is None or (lane.ident is not None and not lane.is_alive()):
                lane = Lane(key, self.outbox, sender, self.policy, self.stop, self.poll_s)
                self.lanes[key] = lane
        return lane

    def run_once(self, now: float | None = None) -> int:
        """Every lane with pending rows once, in turn, in the caller's thread (for tests)."""
        delivered = 0
        for key in self._keys():
            lane = self.lane(key)
            if lane is not None:
                delivered += lane.run_once(now)
        return delivered


def _now(now: float | None) -> float:
    return time.time() if now is None else now
