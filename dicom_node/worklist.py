"""Read-only views of the journal for the console, the REST API and the metrics.

The journal (:mod:`dicom_node.journal`) owns the tables and every write; this
module only reads them, through :meth:`Journal.query` (the journal's lock and
error handling), so all SQL still lives with the journal in this package.
The journal stores UIDs, states and scores only; the worklist's patient
columns (Patient ID, Patient's Name, Accession Number, Study Date, Modality)
are read from the header of the study's spool file when a page is asked for
(:func:`patient_columns`) and go only to the web layer (authenticated beyond
localhost), never to a log.

Study status (one per study, the first rule that matches wins):

* ``queued`` -- an instance is still queued or being classified;
* ``classified`` -- at least one image was classified;
* ``failed`` -- nothing classified and at least one instance failed;
* ``skipped`` -- every instance was skipped by the quality gate (reason kept).

``report-failed`` comes right after ``queued``: the study's report could not be
built after ``results.max_attempts`` tries; the reason is "report failed: ..."
(issue 20 defect 1; ``cxr-gateway retry --reports`` tries again).

With the results outbox (table ``outbox`` in the same database,
:mod:`delivery.outbox`), a classified study is ``dead-letter`` when one of its
deliveries was given up, and ``delivered`` when every live delivery was
acknowledged; until then it stays ``classified``.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.errors import JournalError
from dicom_node.journal import InstanceState, JobState, Journal
from inference.results import impression_from_scores

log = logging.getLogger(__name__)

MAX_PAGE_SIZE: Final = 200


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


@dataclass(frozen=True)
class StudyQuery:
    """Paging, filters and order of a worklist page (``page`` counts from 1)."""

    page: int = 1
    page_size: int = 25
    status: StudyStatus | None = None
    finding: str | None = None
    sort: StudySort = StudySort.NEWEST

    def __post_init__(self) -> None:
        if self.page < 1:
            raise ValueError(f"page: expected 1 or more, got {self.page}")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size: expected 1 to {MAX_PAGE_SIZE}, got {self.page_size}")


@dataclass(frozen=True)
class StudySummary:
    """One worklist row."""

    study_uid: str
    status: StudyStatus
    images: int
    classified: int
    skipped: int
    failed: int
    tb_score: float | None  # the highest TB-vs-normal score of the study's images
    finding: str | None  # the finding of that image (the study-level rule)
    reason: str | None  # why the first image not classified was skipped or failed
    first_received: float
    last_received: float
    reported_at: float | None  # when the study result went to the results stage
    deliveries_pending: int = 0
    deliveries_delivered: int = 0
    deliveries_dead: int = 0
    tb_threshold: float | None = None  # of the representative image's TB-vs-normal model
    pneumonia_score: float | None = None  # pneumonia vs TB, same image
    pneumonia_threshold: float | None = None
    notes: tuple[str, ...] = ()  # that image's notes, e.g. "patient age unknown: ..."
    impression: str | None = None  # inference.results.impression_from_scores, e.g. "TB suspected"
    patient: PatientColumns = field(default_factory=lambda: PatientColumns())


@dataclass(frozen=True)
class PatientColumns:
    """What the worklist shows of the patient and study, from a spool file's header."""

    patient_id: str = ""
    patient_name: str = ""  # "Family, Given Middle" from the DICOM PN
    accession_number: str = ""
    study_date: str = ""  # YYYY-MM-DD when the DA value is valid, else as stored
    modality: str = ""


OUTBOX_TABLE: Final = "outbox"
_DELIVERIES_SQL = f"""SELECT study_uid, SUM(state = 'pending') AS d_pending,
    SUM(state = 'delivered') AS d_delivered, SUM(state = 'dead') AS d_dead
  FROM {OUTBOX_TABLE} GROUP BY study_uid"""
_NO_DELIVERIES_SQL = "SELECT NULL AS study_uid, 0 AS d_pending, 0 AS d_delivered, 0 AS d_dead WHERE 0"

_SUMMARY_SQL = """
WITH deliveries AS ({deliveries}), per_study AS (
  SELECT s.study_uid, s.last_received, s.reported_at,
    COUNT(i.id) AS images,
    SUM(i.state IN ('{InstanceState.QUEUED}', '{InstanceState.CLASSIFYING}')) AS pending,
    SUM(i.state = '{InstanceState.CLASSIFIED}') AS classified,
    SUM(i.state = '{InstanceState.SKIPPED}') AS skipped,
    SUM(i.state = '{InstanceState.FAILED}') AS failed,
    MAX(i.tb_score) AS tb_score,
    MIN(i.received_at) AS first_received, MIN(i.id) AS first_id,
    (SELECT f.id FROM instances f WHERE f.study_uid = s.study_uid
       AND f.state = '{InstanceState.CLASSIFIED}' ORDER BY f.tb_score DESC, f.received_at, f.id
       LIMIT 1) AS rep_id,
    (s.report_failed_revision > 0 AND s.report_failed_revision >= s.revision) AS report_failed,
    COALESCE(CASE WHEN s.report_failed_revision >= s.revision THEN s.report_error END,
      (SELECT r.reason FROM instances r WHERE r.study_uid = s.study_uid
       AND r.state IN ('{InstanceState.SKIPPED}', '{InstanceState.FAILED}') ORDER BY r.id
       LIMIT 1)) AS reason
  FROM studies s JOIN instances i ON i.study_uid = s.study_uid
  GROUP BY s.study_uid
), with_status AS (
  SELECT p.*, rep.finding AS finding,
    json_extract(rep.result_json, '$.tb_vs_normal.threshold') AS tb_threshold,
    json_extract(rep.result_json, '$.pneumonia_vs_tb.score') AS pn_score,
    json_extract(rep.result_json, '$.pneumonia_vs_tb.threshold') AS pn_threshold,
    json_extract(rep.result_json, '$.notes') AS notes,
    COALESCE(rep.path, first.path) AS header_path,
    COALESCE(d.d_pending, 0) AS d_pending, COALESCE(d.d_delivered, 0) AS d_delivered,
    COALESCE(d.d_dead, 0) AS d_dead, CASE
      WHEN p.pending > 0 THEN '{StudyStatus.QUEUED}'
      WHEN p.report_failed THEN '{StudyStatus.REPORT_FAILED}'
      WHEN COALESCE(d.d_dead, 0) > 0 THEN '{StudyStatus.DEAD_LETTER}'
      WHEN p.classified > 0 AND d.d_delivered > 0 AND d.d_pending = 0 THEN '{StudyStatus.DELIVERED}'
      WHEN p.classified > 0 THEN '{StudyStatus.CLASSIFIED}'
      WHEN p.failed > 0 THEN '{StudyStatus.FAILED}'
      ELSE '{StudyStatus.SKIPPED}' END AS status
  FROM per_study p LEFT JOIN deliveries d ON d.study_uid = p.study_uid
    LEFT JOIN instances rep ON rep.id = p.rep_id JOIN instances first ON first.id = p.first_id
)
SELECT study_uid, status, images, classified, skipped, failed, tb_score, finding, reason,
       first_received, last_received, reported_at, d_pending, d_delivered, d_dead,
       tb_threshold, pn_score, pn_threshold, notes, header_path
FROM with_status
"""

_ORDER: Final = {
    StudySort.NEWEST: " ORDER BY last_received DESC, study_uid",
    StudySort.TB_SCORE: " ORDER BY tb_score IS NULL, tb_score DESC, last_received DESC",
}


def _where(query: StudyQuery) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if query.status is not None:
        clauses.append("status = ?")
        args.append(query.status.value)
    if query.finding is not None:
        clauses.append("finding = ?")
        args.append(query.finding)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _summary_sql(journal: Journal) -> str:
    """The summary query, joined with the outbox when its table exists in the journal database."""
    found = journal.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (OUTBOX_TABLE,))
    return _SUMMARY_SQL.format(deliveries=_DELIVERIES_SQL if found else _NO_DELIVERIES_SQL,
                               InstanceState=InstanceState, StudyStatus=StudyStatus)


def list_studies(journal: Journal, query: StudyQuery) -> tuple[list[StudySummary], int]:
    """One page of studies and the number of studies matching the filters."""
    where, args = _where(query)
    sql = _summary_sql(journal)
    total_rows = journal.query(f"SELECT COUNT(*) FROM ({sql}{where})", tuple(args))
    offset = (query.page - 1) * query.page_size
    rows = journal.query(f"{sql}{where}{_ORDER[query.sort]} LIMIT ? OFFSET ?",
                         (*args, query.page_size, offset))
    return [_summary(row) for row in rows], int(str(total_rows[0][0]))


def study_summary(journal: Journal, study_uid: str) -> StudySummary | None:
    rows = journal.query(f"{_summary_sql(journal)} WHERE study_uid = ?", (study_uid,))
    return _summary(rows[0]) if rows else None


def _summary(row: tuple[object, ...]) -> StudySummary:
    (uid, status, images, classified, skipped, failed, tb_score, finding, reason, first,
     last, reported, d_pending, d_delivered, d_dead, tb_threshold, pn_score, pn_threshold,
     notes, header_path) = row
    return StudySummary(
        study_uid=str(uid), status=StudyStatus(str(status)), images=_int(images),
        classified=_int(classified), skipped=_int(skipped), failed=_int(failed),
        tb_score=_float(tb_score), finding=None if finding is None else str(finding),
        reason=None if reason is None else str(reason), first_received=float(str(first)),
        last_received=float(str(last)), reported_at=_float(reported),
        deliveries_pending=_int(d_pending), deliveries_delivered=_int(d_delivered),
        deliveries_dead=_int(d_dead), tb_threshold=_float(tb_threshold),
        pneumonia_score=_float(pn_score), pneumonia_threshold=_float(pn_threshold),
        notes=_notes(notes), patient=patient_columns(Path(str(header_path))),
        impression=_impression(_float(tb_score), _float(tb_threshold), _float(pn_score),
                               _float(pn_threshold)))


def _impression(tb_score: float | None, tb_threshold: float | None, pn_score: float | None,
                pn_threshold: float | None) -> str | None:
    """The study's impression by the one rule the SR, ORU and caption use (issue 21 item 5)."""
    if tb_score is None or tb_threshold is None:
        return None
    return impression_from_scores(tb_score, tb_threshold, pn_score, pn_threshold).text


def _notes(value: object) -> tuple[str, ...]:
    """The JSON array of notes stored with a result (none in rows from before notes were kept)."""
    if value is None:
        return ()
    try:
        loaded = json.loads(str(value))
    except ValueError:
        return ()
    return tuple(str(n) for n in loaded) if isinstance(loaded, list) else ()


PATIENT_TAGS: Final = ("SpecificCharacterSet", "PatientID", "PatientName", "AccessionNumber",
                       "StudyDate", "Modality")


def patient_columns(path: Path) -> PatientColumns:
    """The patient columns of a spool file's header; empty ones when it cannot be read.

    Cached by the file's size and modification time, so a page refresh reads no
    file twice and a replaced instance is read again.
    """
    try:
        stat = path.stat()
    except OSError:
        return PatientColumns()
    return _read_patient_columns(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _read_patient_columns(path: Path, mtime_ns: int, size: int) -> PatientColumns:
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(PATIENT_TAGS))
        return PatientColumns(_value(ds, "PatientID"), display_name(_value(ds, "PatientName")),
                              _value(ds, "AccessionNumber"), _date(_value(ds, "StudyDate")),
                              _value(ds, "Modality"))
    except Exception as err:  # a header pydicom cannot parse: the row shows no patient data
        log.info("worklist: spool file header unreadable (%s)", type(err).__name__)
        return PatientColumns()


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__") and not hasattr(value, "family_name"):
        value = next(iter(value), "")  # a multi-valued attribute shows its first value
    return str(value).strip()


def display_name(dicom_name: str) -> str:
    """DICOM PN 'Family^Given^Middle^Prefix^Suffix' (alphabetic group) as 'Family, Given Middle'."""
    family, given, middle, prefix, suffix = (dicom_name.split("=")[0].split("^") + [""] * 5)[:5]
    rest = " ".join(p for p in (prefix, given, middle, suffix) if p)
    return f"{family}, {rest}" if family and rest else family or rest


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 and value.isdigit() else value


def _int(value: object) -> int:
    return 0 if value is None else int(str(value))


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))


def skip_reasons(journal: Journal) -> list[str]:
    """The recorded reason of every skipped instance (for per-reason counters)."""
    rows = journal.query("SELECT reason FROM instances WHERE state = ?", (InstanceState.SKIPPED,))
    return [str(r[0]) for r in rows if r[0] is not None]


def reported_studies(journal: Journal) -> int:
    """How many studies were handed to the results stage at least once."""
    rows = journal.query("SELECT COUNT(*) FROM studies WHERE reported_at IS NOT NULL")
    return _int(rows[0][0])


def duration_buckets(journal: Journal, bounds: tuple[float, ...]) -> dict[str, tuple[list[int], float]]:
    """Cumulative bucket counts and sums of the two worker stages, from the journal's timestamps.

    ``queue_wait``: received to claimed by a worker (last attempt);
    ``classification``: claimed to finished (read, gate, decode, both models, heatmap).
    Returns ``{stage: ([count <= bound for each bound] + [total], sum)}``.
    """
    cases = ", ".join(f"SUM(d <= {float(b)!r})" for b in bounds)
    stages = {"queue_wait": "j.claimed_at - i.received_at",
              "classification": "i.updated_at - j.claimed_at"}
    out: dict[str, tuple[list[int], float]] = {}
    for stage, expr in stages.items():
        rows = journal.query(
            f"SELECT {cases}, COUNT(d), TOTAL(d) FROM (SELECT {expr} AS d FROM jobs j"
            " JOIN instances i ON i.id = j.instance_id WHERE j.state = ?"
            " AND j.claimed_at IS NOT NULL)", (JobState.DONE,))
        values = rows[0]
        out[stage] = ([_int(v) for v in values[:-1]], float(str(values[-1])))
    return out


def probe_writable(journal: Journal) -> str | None:
    """``None`` when the journal takes a write transaction now, else the reason it does not.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock, and an ``UPDATE`` that matches
    no row is refused by a read-only database without changing anything.
    """
    try:
        with journal.transaction() as db:
            db.execute("UPDATE studies SET revision = revision WHERE 0")
    except JournalError as err:
        return str(err)
    return None
