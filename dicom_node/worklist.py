"""Read-only views of the journal for the console, the REST API and the metrics.

The journal (:mod:`dicom_node.journal`) makes every write; this module only
reads, through the statements of :mod:`storage.worklist` (only the storage
layer runs SQL), which also holds the study status rules (``queued``,
``report-failed``, ``dead-letter``, ``delivered``, ``classified``, ``failed``,
``skipped``: the first that matches wins; the outbox is the table of
:mod:`storage.outbox` in the same database).

The journal stores UIDs, states and scores only; the worklist's patient
columns (Patient ID, Patient's Name, Accession Number, Study Date, Modality)
are read from the header of the study's spool file when a page is asked for
(:func:`patient_columns`) and go only to the web layer (authenticated beyond
localhost), never to a log.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.errors import JournalError
from dicom_node.journal import Journal
from inference.results import impression_from_scores
from storage import worklist as store
from storage.worklist import StudySort, StudyStatus

log = logging.getLogger(__name__)

MAX_PAGE_SIZE: Final = 200


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


def list_studies(journal: Journal, query: StudyQuery) -> tuple[list[StudySummary], int]:
    """One page of studies and the number of studies matching the filters."""
    offset = (query.page - 1) * query.page_size
    rows, total = store.summary_page(journal, query.status, query.finding, query.sort,
                                     query.page_size, offset)
    return [_summary(row, journal) for row in rows], total


def study_summary(journal: Journal, study_uid: str) -> StudySummary | None:
    row = store.summary_row(journal, study_uid)
    return None if row is None else _summary(row, journal)


def _summary(row: tuple[object, ...], journal: Journal) -> StudySummary:
    (uid, status, images, classified, skipped, failed, tb_score, finding, reason, first,
     last, reported, d_pending, d_delivered, d_dead, result_json, header_path) = row
    tb_threshold, pn_score, pn_threshold, notes = _result_fields(result_json)
    return StudySummary(
        study_uid=str(uid), status=StudyStatus(str(status)), images=_int(images),
        classified=_int(classified), skipped=_int(skipped), failed=_int(failed),
        tb_score=_float(tb_score), finding=None if finding is None else str(finding),
        reason=None if reason is None else str(reason), first_received=float(str(first)),
        last_received=float(str(last)), reported_at=_float(reported),
        deliveries_pending=_int(d_pending), deliveries_delivered=_int(d_delivered),
        deliveries_dead=_int(d_dead), tb_threshold=_float(tb_threshold),
        pneumonia_score=_float(pn_score), pneumonia_threshold=_float(pn_threshold),
        notes=_notes(notes), patient=patient_columns(journal.local_path(header_path)),
        impression=_impression(_float(tb_score), _float(tb_threshold), _float(pn_score),
                               _float(pn_threshold)))


def _impression(tb_score: float | None, tb_threshold: float | None, pn_score: float | None,
                pn_threshold: float | None) -> str | None:
    """The study's impression by the one rule the SR, ORU and caption use (issue 21 item 5)."""
    if tb_score is None or tb_threshold is None:
        return None
    return impression_from_scores(tb_score, tb_threshold, pn_score, pn_threshold).text


def _result_fields(result_json: object) -> tuple[object, object, object, object]:
    """TB threshold, pneumonia score and threshold, notes of the representative result."""
    try:
        loaded = json.loads(str(result_json)) if result_json is not None else {}
    except ValueError:
        loaded = {}
    loaded = loaded if isinstance(loaded, dict) else {}
    tb, pn = (loaded.get(key) for key in ("tb_vs_normal", "pneumonia_vs_tb"))
    tb, pn = (part if isinstance(part, dict) else {} for part in (tb, pn))
    return tb.get("threshold"), pn.get("score"), pn.get("threshold"), loaded.get("notes")


def _notes(value: object) -> tuple[str, ...]:
    """The list of notes stored with a result (none in rows from before notes were kept)."""
    return tuple(str(n) for n in value) if isinstance(value, list) else ()


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
    return store.skip_reasons(journal)


def reported_studies(journal: Journal) -> int:
    """How many studies were handed to the results stage at least once."""
    return store.reported_studies(journal)


def duration_buckets(journal: Journal, bounds: tuple[float, ...]) -> dict[str, tuple[list[int], float]]:
    """Cumulative bucket counts and sums of the two worker stages, from the journal's timestamps.

    ``queue_wait``: received to claimed by a worker (last attempt);
    ``classification``: claimed to finished (read, gate, decode, both models, heatmap).
    Returns ``{stage: ([count <= bound for each bound] + [total], sum)}``.
    """
    out: dict[str, tuple[list[int], float]] = {}
    for stage in store.STAGES:
        values = store.stage_buckets(journal, stage, bounds)
        out[stage] = ([_int(v) for v in values[:-1]], float(str(values[-1])))
    return out


def probe_writable(journal: Journal) -> str | None:
    """``None`` when the journal takes a write transaction now, else the reason it does not.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock, and an ``UPDATE`` that matches
    no row is refused by a read-only database without changing anything.
    """
    try:
        store.probe_write(journal)
    except JournalError as err:
        return str(err)
    return None
