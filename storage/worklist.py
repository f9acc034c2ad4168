"""The worklist's read-only statements over the journal and outbox tables.

:mod:`dicom_node.worklist` turns these rows into study summaries; the SQL is
here so that only the storage layer runs SQL (issue 22). Every statement runs
on SQLite and PostgreSQL alike (counts as ``SUM(CASE ...)``, no JSON
functions: the representative result's JSON is returned and read in Python).

Study status (one per study, the first rule that matches wins): ``queued``
(an instance still queued or classifying), ``report-failed`` (the report could
not be built in ``results.max_attempts`` tries, issue 20 defect 1; ``cxr-gateway
retry --reports`` tries again), ``dead-letter`` (a delivery was given up),
``delivered`` (classified and every live delivery acknowledged),
``classified``, ``failed`` (nothing classified, one failed), ``skipped`` (every
instance refused by the quality gate, reason kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

from storage.database import Database
from storage.journal import InstanceState as I  # noqa: N814
from storage.journal import JobState, given_up
from storage.outbox import RowState as R  # noqa: N814


class StudyStatus(StrEnum):
    QUEUED = "queued"
    CLASSIFIED = "classified"
    DELIVERED = "delivered"
    DEAD_LETTER = "dead-letter"
    FAILED = "failed"
    SKIPPED = "skipped"
    REPORT_FAILED = "report-failed"  # the report could not be built (journal report_error)


class StudySort(StrEnum):
    NEWEST = "newest"  # last instance received, newest first
    TB_SCORE = "tb-score"  # highest TB-vs-normal score first, unscored last


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


_DELIVERIES_SQL = f"""SELECT study_uid, {_count(f"state = '{R.PENDING}'")} AS d_pending,
    {_count(f"state = '{R.DELIVERED}'")} AS d_delivered, {_count(f"state = '{R.DEAD}'")} AS d_dead
  FROM outbox GROUP BY study_uid"""

S = StudyStatus
SUMMARY_SQL: Final = f"""
WITH deliveries AS ({_DELIVERIES_SQL}), per_study AS (
  SELECT s.study_uid, s.last_received, s.reported_at,
    COUNT(i.id) AS images,
    {_count(f"i.state IN ('{I.QUEUED}', '{I.CLASSIFYING}')")} AS pending,
    {_count(f"i.state = '{I.CLASSIFIED}'")} AS classified,
    {_count(f"i.state = '{I.SKIPPED}'")} AS skipped,
    {_count(f"i.state = '{I.FAILED}'")} AS failed,
    MAX(i.tb_score) AS tb_score,
    MIN(i.received_at) AS first_received, MIN(i.id) AS first_id,
    (SELECT f.id FROM instances f WHERE f.study_uid = s.study_uid
       AND f.state = '{I.CLASSIFIED}' ORDER BY f.tb_score DESC, f.received_at, f.id
       LIMIT 1) AS rep_id,
    {given_up("s")} AS report_failed,
    COALESCE(CASE WHEN s.report_failed_revision >= s.revision THEN s.report_error END,
      (SELECT r.reason FROM instances r WHERE r.study_uid = s.study_uid
       AND r.state IN ('{I.SKIPPED}', '{I.FAILED}') ORDER BY r.id
       LIMIT 1)) AS reason
  FROM studies s JOIN instances i ON i.study_uid = s.study_uid
  GROUP BY s.study_uid
), with_status AS (
  SELECT p.*, rep.finding AS finding, rep.result_json AS result_json,
    COALESCE(rep.path, first.path) AS header_path,
    COALESCE(d.d_pending, 0) AS d_pending, COALESCE(d.d_delivered, 0) AS d_delivered,
    COALESCE(d.d_dead, 0) AS d_dead, CASE
      WHEN p.pending > 0 THEN '{S.QUEUED}'
      WHEN p.report_failed THEN '{S.REPORT_FAILED}'
      WHEN COALESCE(d.d_dead, 0) > 0 THEN '{S.DEAD_LETTER}'
      WHEN p.classified > 0 AND d.d_delivered > 0 AND d.d_pending = 0 THEN '{S.DELIVERED}'
      WHEN p.classified > 0 THEN '{S.CLASSIFIED}'
      WHEN p.failed > 0 THEN '{S.FAILED}'
      ELSE '{S.SKIPPED}' END AS status
  FROM per_study p LEFT JOIN deliveries d ON d.study_uid = p.study_uid
    LEFT JOIN instances rep ON rep.id = p.rep_id JOIN instances first ON first.id = p.first_id
)
SELECT study_uid, status, images, classified, skipped, failed, tb_score, finding, reason,
       first_received, last_received, reported_at, d_pending, d_delivered, d_dead,
       result_json, header_path
FROM with_status
"""
"""One row per study: the columns :func:`dicom_node.worklist._summary` reads, in order."""

_ORDER: Final = {
    StudySort.NEWEST: " ORDER BY last_received DESC, study_uid",
    StudySort.TB_SCORE: " ORDER BY tb_score IS NULL, tb_score DESC, last_received DESC",
}


def _where(status: StudyStatus | None, finding: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if status is not None:
        clauses.append("status = ?")
        args.append(status.value)
    if finding is not None:
        clauses.append("finding = ?")
        args.append(finding)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def summary_page(db: Database, status: StudyStatus | None, finding: str | None, sort: StudySort,
                 limit: int, offset: int) -> tuple[list[tuple[Any, ...]], int]:
    """One page of summary rows and how many rows match the filters."""
    where, args = _where(status, finding)
    total = db.query(f"SELECT COUNT(*) FROM ({SUMMARY_SQL}{where}) AS matching", tuple(args))
    rows = db.query(f"{SUMMARY_SQL}{where}{_ORDER[sort]} LIMIT ? OFFSET ?", (*args, limit, offset))
    return rows, int(total[0][0])


def summary_row(db: Database, study_uid: str) -> tuple[Any, ...] | None:
    rows = db.query(f"{SUMMARY_SQL} WHERE study_uid = ?", (study_uid,))
    return rows[0] if rows else None


def skip_reasons(db: Database) -> list[str]:
    """The recorded reason of every skipped instance."""
    rows = db.query("SELECT reason FROM instances WHERE state = ?", (I.SKIPPED,))
    return [str(r[0]) for r in rows if r[0] is not None]


def reported_studies(db: Database) -> int:
    rows = db.query("SELECT COUNT(*) FROM studies WHERE reported_at IS NOT NULL")
    return int(rows[0][0] or 0)


STAGES: Final = {"queue_wait": "j.claimed_at - i.received_at",
                 "classification": "i.updated_at - j.claimed_at"}


def stage_buckets(db: Database, stage: str, bounds: Sequence[float]) -> tuple[Any, ...]:
    """(count <= each bound ..., count, sum) of one worker stage over finished jobs."""
    cases = "".join(f"{_count(f'd <= {float(b)!r}')}, " for b in bounds)
    rows = db.query(
        f"SELECT {cases}COUNT(d), COALESCE(SUM(d), 0) FROM (SELECT {STAGES[stage]} AS d FROM jobs j"
        " JOIN instances i ON i.id = j.instance_id WHERE j.state = ?"
        " AND j.claimed_at IS NOT NULL) AS done", (JobState.DONE,))
    return rows[0]


def probe_write(db: Database) -> None:
    """A write transaction that changes nothing (SQLite: takes the write lock; a read-only
    database refuses the ``UPDATE``); raises the owner's error when it cannot."""
    with db.transaction() as tx:
        tx.execute("UPDATE studies SET revision = revision WHERE 1 = 0")
