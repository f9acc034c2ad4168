"""The journal: what was received, the durable classification queue, study progress.

A :class:`storage.database.Database` (SQLite in WAL mode with
``synchronous=FULL``, or PostgreSQL): a committed row survives a crash or
power loss. The same statements run on both; a job is claimed under SQLite's
write lock, or on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` so concurrent
workers never take the same row. The tables come from :mod:`storage.migrations`.

Instance states: ``queued`` -> ``classifying`` -> ``classified`` | ``skipped``
| ``failed``. A job left ``classifying`` by a crash is queued again at start
(:meth:`Journal.requeue_interrupted`); its attempt count keeps growing, so an
image that crashes the process every time ends ``failed``, not in a loop.

Re-sends (issue 20, defect 8; :meth:`Journal.admit_instance`): an instance
whose SOP Instance UID is known is a no-op when its stored file has the same
SHA-256, and otherwise replaces the stored one: the row points to the new
spool file, its result is cleared, its job is queued again under a new id (a
worker still busy with the old content finds its job gone and records
nothing), and the study
gets a higher revision, so it is reported again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from storage.database import DEFAULT_LEASE_S, Database, Tx, claimable, local_path, stored_path
from storage.errors import JournalError


class InstanceState(StrEnum):
    QUEUED = "queued"
    CLASSIFYING = "classifying"
    CLASSIFIED = "classified"
    SKIPPED = "skipped"
    FAILED = "failed"


class Admission(StrEnum):
    """What :meth:`Journal.admit_instance` did with a received instance."""

    ADDED = "added"
    DUPLICATE = "duplicate"  # the same SOP Instance UID with the same bytes: nothing changed
    REPLACED = "replaced"  # the same SOP Instance UID with other bytes: stored again, re-queued


@dataclass(frozen=True)
class Admitted:
    outcome: Admission
    old_path: Path | None = None  # the replaced spool file, for the caller to delete


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class NewInstance:
    """What the SCP records about one received instance."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    calling_ae: str
    path: Path
    sha256: str | None = None  # of the spool file: tells a corrected re-send from a repeat


@dataclass(frozen=True)
class InstanceRecord:
    """One journal row as stored."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    calling_ae: str
    path: Path
    received_at: float
    state: InstanceState
    reason: str | None
    result_json: str | None
    heatmap_path: Path | None
    replaced: int = 0  # times a changed re-send replaced it (part of the result UIDs)


@dataclass(frozen=True)
class Job:
    """A claimed classification job."""

    id: int
    instance_id: int
    sop_instance_uid: str
    path: Path
    attempts: int


@dataclass(frozen=True)
class StoredResult:
    """A classification outcome to record for an instance."""

    tb_score: float
    finding: str
    result_json: str
    heatmap_path: Path | None


_HELD_HERE = "(claimed_by IS NULL OR claimed_by = ?)"
"""A job still this node's (one value: the node's name); no other node took it over."""

def given_up(alias: str = "") -> str:
    """SQL condition on a study: its current revision's report was given up
    (:meth:`Journal.report_attempt_failed`), so it is ``report-failed`` until retried."""
    col = f"{alias}." if alias else ""
    return f"({col}report_failed_revision > 0 AND {col}report_failed_revision >= {col}revision)"


_INSTANCE_COLUMNS = ("id, sop_instance_uid, sop_class_uid, study_uid, series_uid, calling_ae, "
                     "path, received_at, state, reason, result_json, heatmap_path, replaced")
"""The columns :func:`_record` reads, in order."""


@dataclass(frozen=True)
class ReportFailure:
    """A study whose report could not be built (``cxr-gateway status``).

    Report attempts of a study (issue 20 defect 1, studies columns of migration 3): a
    report that cannot be built is tried a bounded number of times, then the study shows
    ``report-failed`` with the reason until it grows (a new revision) or is retried by hand.
    """

    study_uid: str
    revision: int
    attempts: int
    reason: str


class Journal(Database):
    """Instances, jobs and studies in one database (:class:`storage.database.Database`)."""

    label = "journal"
    error: type[Exception] = JournalError

    def __init__(self, target: str | Path, password: str | None = None, *,
                 upgrade: bool | None = None, node: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S, spool_root: Path | None = None) -> None:
        """``node``, ``lease_s``: see :class:`storage.database.Database`. Spool paths under
        ``spool_root`` are stored relative to it, so every node sharing the spool reads them
        (issue 22)."""
        super().__init__(target, password, upgrade, node=node, lease_s=lease_s)
        self.spool_root = spool_root

    def stored_path(self, path: Path) -> str:
        """How a spool path is recorded: relative to the spool root when under it."""
        return stored_path(path, self.spool_root)

    def local_path(self, stored: object) -> Path:
        """A recorded spool path on this node (relative ones joined to the spool root)."""
        return local_path(stored, self.spool_root)

    def has_instance(self, sop_instance_uid: str) -> bool:
        return bool(self.query("SELECT 1 FROM instances WHERE sop_instance_uid = ?",
                               (sop_instance_uid,)))

    def stored_digest(self, sop_instance_uid: str) -> str | None:
        """SHA-256 of the stored file of a known instance (``None``: unknown or not recorded)."""
        rows = self.query("SELECT sha256 FROM instances WHERE sop_instance_uid = ?",
                          (sop_instance_uid,))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def admit_instance(self, new: NewInstance) -> Admitted:
        """Add a received instance, or apply the re-send rule (module docstring) to a known one."""
        if self.add_instance(new):
            return Admitted(Admission.ADDED)
        return self._replace_if_changed(new)

    def _replace_if_changed(self, new: NewInstance) -> Admitted:
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT id, sha256, path, study_uid FROM instances"
                             " WHERE sop_instance_uid = ?", (new.sop_instance_uid,)).fetchone()
            if row is None:
                raise self.error(f"journal {self.path}: instance {new.sop_instance_uid} "
                                   "vanished while being replaced")
            if new.sha256 is not None and row[1] == new.sha256:
                return Admitted(Admission.DUPLICATE)
            db.execute(
                "UPDATE instances SET sop_class_uid = ?, study_uid = ?, series_uid = ?,"
                " calling_ae = ?, path = ?, sha256 = ?, received_at = ?, state = ?, reason = NULL,"
                " tb_score = NULL, finding = NULL, result_json = NULL, heatmap_path = NULL,"
                " replaced = replaced + 1, updated_at = ? WHERE id = ?",
                (new.sop_class_uid, new.study_uid, new.series_uid, new.calling_ae,
                 self.stored_path(new.path), new.sha256, now, InstanceState.QUEUED, now, row[0]))
            # A new job id (above every id so far) voids the job a worker may still hold
            # for the old content.
            db.execute("UPDATE jobs SET id = ?, state = ?, attempts = 0, worker = NULL,"
                       " claimed_at = NULL, claimed_by = NULL, lease_until = NULL,"
                       " last_error = NULL WHERE instance_id = ?",
                       (_new_job_id(db), JobState.QUEUED, row[0]))
            for study_uid in {str(row[3]), new.study_uid}:
                _touch_study(db, study_uid, now)
        return Admitted(Admission.REPLACED, self.local_path(row[2]))

    def add_instance(self, new: NewInstance) -> bool:
        """Record a received instance and queue its job; ``False`` if already known."""
        now = time.time()
        with self.transaction() as db:
            added = db.execute(
                "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid,"
                " calling_ae, path, received_at, state, updated_at, sha256)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id",
                (new.sop_instance_uid, new.sop_class_uid, new.study_uid, new.series_uid,
                 new.calling_ae, self.stored_path(new.path), now, InstanceState.QUEUED, now,
                 new.sha256)).fetchone()
            if added is None:
                return False
            db.execute("INSERT INTO jobs (instance_id, state) VALUES (?, ?)",
                       (added[0], JobState.QUEUED))
            _touch_study(db, new.study_uid, now)
        return True

    def claim_job(self, worker: str, now: float | None = None) -> Job | None:
        """Take the oldest queued job, or a running one whose lease ran out (its node stopped
        renewing it), and count the attempt; ``None`` when there is none."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            row = db.execute(
                "SELECT j.id, j.instance_id, i.sop_instance_uid, i.path, j.attempts FROM jobs j"
                " JOIN instances i ON i.id = j.instance_id WHERE j.state = ? OR (j.state = ?"
                " AND j.lease_until < ?) ORDER BY j.id LIMIT 1" + _skip_locked(db, "j"),
                (JobState.QUEUED, JobState.RUNNING, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, worker = ?,"
                       " claimed_at = ?, claimed_by = ?, lease_until = ? WHERE id = ?",
                       (JobState.RUNNING, worker, now, self.node, now + self.lease_s, row[0]))
            self._set_state(db, row[1], InstanceState.CLASSIFYING, None)
        return Job(id=row[0], instance_id=row[1], sop_instance_uid=row[2],
                   path=self.local_path(row[3]), attempts=row[4] + 1)

    def finish_classified(self, job: Job, result: StoredResult) -> None:
        with self.transaction() as db:
            if not self._still_claimed(db, job):
                return
            db.execute("UPDATE instances SET tb_score = ?, finding = ?, result_json = ?,"
                       " heatmap_path = ? WHERE id = ?",
                       (result.tb_score, result.finding, result.result_json,
                        None if result.heatmap_path is None else self.stored_path(result.heatmap_path),
                        job.instance_id))
            self._finish(db, job, InstanceState.CLASSIFIED, None)

    def finish_skipped(self, job: Job, reason: str) -> None:
        with self.transaction() as db:
            self._finish(db, job, InstanceState.SKIPPED, reason)

    def finish_failed(self, job: Job, reason: str) -> None:
        with self.transaction() as db:
            self._finish(db, job, InstanceState.FAILED, reason)

    def retry_later(self, job: Job, error: str) -> None:
        """Put a job back in the queue after a transient failure."""
        with self.transaction() as db:
            if not self._still_claimed(db, job):
                return
            db.execute("UPDATE jobs SET state = ?, last_error = ?, claimed_by = NULL,"
                       " lease_until = NULL WHERE id = ?", (JobState.QUEUED, error, job.id))
            self._set_state(db, job.instance_id, InstanceState.QUEUED, error)

    def requeue_interrupted(self) -> int:
        """Queue again every job a crash left running; returns how many.

        SQLite has one node: every running job was this node's. A shared database
        re-queues only the jobs of this node's name (a restart); other nodes' jobs
        are taken over when their lease runs out (:meth:`claim_job`)."""
        mine, args = ("", ()) if not self.shared else (" AND claimed_by = ?", (self.node,))
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT instance_id FROM jobs WHERE state = ?" + mine,
                                            (JobState.RUNNING, *args))]
            db.execute("UPDATE jobs SET state = ?, claimed_by = NULL, lease_until = NULL"
                       " WHERE state = ?" + mine, (JobState.QUEUED, JobState.RUNNING, *args))
            for instance_id in ids:
                self._set_state(db, instance_id, InstanceState.QUEUED, "interrupted, re-queued")
        return len(ids)

    def _finish(self, db: Tx, job: Job, state: InstanceState, reason: str | None) -> None:
        """Record the outcome, unless a changed re-send replaced the job meanwhile or another
        node took it over (this node's lease ran out)."""
        done = db.execute("UPDATE jobs SET state = ?, lease_until = NULL WHERE id = ? AND state = ?"
                          f" AND {_HELD_HERE}",
                          (JobState.DONE, job.id, JobState.RUNNING, self.node))
        if done.rowcount:
            Journal._set_state(db, job.instance_id, state, reason)

    @staticmethod
    def _set_state(db: Tx, instance_id: int, state: InstanceState,
                   reason: str | None) -> None:
        db.execute("UPDATE instances SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                   (state, reason, time.time(), instance_id))

    def due_studies(self, quiet_period_s: float, now: float | None = None) -> list[tuple[str, int]]:
        """Studies quiet for the period, fully processed, with unreported instances.

        Returns ``(study_uid, revision)`` pairs; the revision counts received
        instances, so a study that grows after being reported is due again.
        A revision whose report failed waits for its retry time and is left
        out once given up (:meth:`report_attempt_failed`).
        """
        cutoff = (time.time() if now is None else now) - quiet_period_s
        rows = self.query(
            "SELECT s.study_uid, s.revision FROM studies s WHERE s.revision > s.reported_revision"
            " AND s.last_received <= ? AND NOT EXISTS (SELECT 1 FROM instances i"
            " WHERE i.study_uid = s.study_uid AND i.state IN (?, ?))"
            " AND s.revision > s.report_failed_revision AND (s.report_attempt_revision < s.revision"
            " OR s.report_retry_at IS NULL OR s.report_retry_at <= ?)"
            f" AND {claimable('s')} ORDER BY s.last_received",
            (cutoff, InstanceState.QUEUED, InstanceState.CLASSIFYING, cutoff + quiet_period_s,
             self.node, cutoff + quiet_period_s))
        return [(str(r[0]), int(str(r[1]))) for r in rows]

    def claim_study(self, study_uid: str, revision: int, now: float | None = None) -> bool:
        """Take the report of ``revision`` for this node: ``False`` when another node holds
        it (lease still running) or it was reported meanwhile. Released by
        :meth:`mark_reported` and :meth:`report_attempt_failed`."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            taken = db.execute(
                "UPDATE studies SET claimed_by = ?, lease_until = ? WHERE study_uid = ?"
                f" AND reported_revision < ? AND {claimable()}",
                (self.node, now + self.lease_s, study_uid, revision, self.node, now))
        return bool(taken.rowcount)

    def mark_reported(self, study_uid: str, revision: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE studies SET reported_revision = CASE WHEN reported_revision > ?"
                       " THEN reported_revision ELSE ? END, reported_at = ?, report_attempts = 0,"
                       " report_error = NULL, report_retry_at = NULL, claimed_by = NULL,"
                       " lease_until = NULL WHERE study_uid = ?",
                       (revision, revision, time.time(), study_uid))

    def report_attempt_failed(self, study_uid: str, revision: int, reason: str,
                              max_attempts: int, retry_at: float) -> tuple[int, bool]:
        """Count a failed report attempt of ``revision``; after ``max_attempts`` the study
        is given up (``report-failed``) until it grows or is retried.
        Returns (attempts of this revision, given up)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE studies SET report_attempts = CASE WHEN report_attempt_revision = ?"
                " THEN report_attempts + 1 ELSE 1 END, report_attempt_revision = ?,"
                " report_error = ?, report_retry_at = ?, claimed_by = NULL, lease_until = NULL"
                " WHERE study_uid = ?",
                (revision, revision, reason, retry_at, study_uid))
            attempts = int(db.execute("SELECT report_attempts FROM studies WHERE study_uid = ?",
                                      (study_uid,)).fetchone()[0])
            if attempts >= max_attempts:
                db.execute("UPDATE studies SET report_failed_revision = ? WHERE study_uid = ?",
                           (revision, study_uid))
        return attempts, attempts >= max_attempts

    def report_failures(self, limit: int = 50) -> list[ReportFailure]:
        """Studies whose current revision was given up, most recent first."""
        rows = self.query(
            "SELECT study_uid, revision, report_attempts, report_error FROM studies"
            f" WHERE {given_up()} ORDER BY report_retry_at DESC NULLS LAST LIMIT ?", (limit,))
        return [ReportFailure(str(r[0]), int(str(r[1])), int(str(r[2])), str(r[3] or ""))
                for r in rows]

    def retry_reports(self, study_uids: list[str] | None = None) -> int:
        """Make given-up studies (all, or those listed) due again; returns how many."""
        where = given_up()
        args: tuple[object, ...] = ()
        if study_uids is not None:
            where += f" AND study_uid IN ({', '.join('?' * len(study_uids))})"
            args = tuple(study_uids)
        with self.transaction() as db:
            cur = db.execute("UPDATE studies SET report_failed_revision = 0, report_attempts = 0,"
                             f" report_retry_at = NULL WHERE {where}", args)
        return int(cur.rowcount)

    def study_instances(self, study_uid: str) -> list[InstanceRecord]:
        rows = self.query(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE study_uid = ?"
                          " ORDER BY received_at, id", (study_uid,))
        return [self._record(r) for r in rows]

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        rows = self.query(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE sop_instance_uid = ?",
                          (sop_instance_uid,))
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int = 10) -> list[InstanceRecord]:
        rows = self.query(f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY updated_at DESC,"
                          " id DESC LIMIT ?", (limit,))
        return [self._record(r) for r in rows]

    def counts(self) -> dict[InstanceState, int]:
        rows = self.query("SELECT state, COUNT(*) FROM instances GROUP BY state")
        found = {str(state): int(str(n)) for state, n in rows}
        return {s: found.get(s.value, 0) for s in InstanceState}

    def spool_paths(self) -> list[Path]:
        return [self.local_path(r[0]) for r in self.query("SELECT path FROM instances")]

    def _still_claimed(self, db: Tx, job: Job) -> bool:
        """The job is still the running one of this node (a replacing re-send gives it a new
        id; a node whose lease ran out lost it to another)."""
        return db.execute(f"SELECT 1 FROM jobs WHERE id = ? AND state = ? AND {_HELD_HERE}",
                          (job.id, JobState.RUNNING, self.node)).fetchone() is not None

    def _record(self, row: tuple[object, ...]) -> InstanceRecord:
        record = _record(row)
        return replace(record, path=self.local_path(record.path), heatmap_path=None
                       if record.heatmap_path is None else self.local_path(record.heatmap_path))


def _touch_study(db: Tx, study_uid: str, now: float) -> None:
    """A study received (or replaced) an instance: quiet period restarts, revision grows."""
    db.execute(
        "INSERT INTO studies (study_uid, last_received, revision) VALUES (?, ?, 1)"
        " ON CONFLICT (study_uid) DO UPDATE SET last_received = excluded.last_received,"
        " revision = studies.revision + 1", (study_uid, now))


def _new_job_id(db: Tx) -> int:
    """An id above every job id so far (SQLite reuses the largest once deleted; PostgreSQL's
    sequence must hand it out so a later insert cannot collide)."""
    if db.dialect == "postgresql":
        sql = "SELECT nextval(pg_get_serial_sequence('jobs', 'id'))"
    else:
        sql = "SELECT COALESCE(MAX(id), 0) + 1 FROM jobs"
    return int(db.execute(sql).fetchone()[0])  # type: ignore[index]


def _skip_locked(db: Tx, alias: str) -> str:
    """PostgreSQL: lock the claimed row, passing over rows another node holds (SQLite has
    one writer: its BEGIN IMMEDIATE already serialises claims)."""
    return f" FOR UPDATE OF {alias} SKIP LOCKED" if db.dialect == "postgresql" else ""


def _record(row: tuple[object, ...]) -> InstanceRecord:
    (id_, sop, sop_class, study, series, calling, path, received, state, reason, result,
     heatmap, replaced) = row
    return InstanceRecord(
        id=int(str(id_)), sop_instance_uid=str(sop), sop_class_uid=str(sop_class),
        study_uid=str(study), series_uid=str(series), calling_ae=str(calling),
        path=Path(str(path)), received_at=float(str(received)), state=InstanceState(str(state)),
        reason=None if reason is None else str(reason),
        result_json=None if result is None else str(result),
        heatmap_path=None if heatmap is None else Path(str(heatmap)),
        replaced=int(str(replaced or 0)))
