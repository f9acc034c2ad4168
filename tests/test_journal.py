"""The journal and job queue (SQLite and PostgreSQL) and the spool, as pure units on a temp folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dicom_node.errors import SpoolFullError, SpoolWriteError
from dicom_node.journal import InstanceState, Journal, NewInstance, StoredResult
from dicom_node.spool import Spool


def new(sop: str, study: str = "1.2.3", path: Path = Path("/x.dcm")) -> NewInstance:
    return NewInstance(sop, "1.2.840.10008.5.1.4.1.1.1", study, f"{study}.1", "PACS", path)


@pytest.fixture
def journal(database: Path | str) -> Journal:
    return Journal(database)  # SQLite and PostgreSQL (tests/conftest.py)


def test_instance_is_recorded_once_with_one_job(journal: Journal) -> None:
    assert journal.add_instance(new("1.1")) is True
    assert journal.add_instance(new("1.1")) is False
    assert journal.has_instance("1.1") and not journal.has_instance("1.2")
    assert journal.counts()[InstanceState.QUEUED] == 1
    job = journal.claim_job("w1")
    assert job is not None and job.sop_instance_uid == "1.1" and job.attempts == 1
    assert journal.claim_job("w2") is None  # one job only, already taken


def test_jobs_are_claimed_oldest_first_and_finished(journal: Journal) -> None:
    for sop in ("1.1", "1.2", "1.3"):
        journal.add_instance(new(sop))
    first, second, third = (journal.claim_job("w") for _ in range(3))
    assert first and second and third
    assert [j.sop_instance_uid for j in (first, second, third)] == ["1.1", "1.2", "1.3"]
    journal.finish_classified(first, StoredResult(0.9, "tb-suspected", '{"x": 1}', None))
    journal.finish_skipped(second, "skipped: not a chest radiograph (Modality NM)")
    journal.finish_failed(third, "failed: no contrast")
    records = {r.sop_instance_uid: r for r in journal.study_instances("1.2.3")}
    assert records["1.1"].state is InstanceState.CLASSIFIED
    assert records["1.1"].result_json == '{"x": 1}'
    assert records["1.2"].reason == "skipped: not a chest radiograph (Modality NM)"
    assert records["1.3"].state is InstanceState.FAILED


def test_crash_while_classifying_requeues_on_restart(database: Path | str) -> None:
    path = database
    before = Journal(path)
    before.add_instance(new("1.1"))
    assert before.claim_job("w1") is not None  # then the process dies: no close, no finish
    after = Journal(path)
    assert after.counts()[InstanceState.CLASSIFYING] == 1
    assert after.requeue_interrupted() == 1
    job = after.claim_job("w1")
    assert job is not None and job.attempts == 2  # the attempt count survives
    assert after.instance("1.1") is not None


def test_retry_puts_the_job_back(journal: Journal) -> None:
    journal.add_instance(new("1.1"))
    job = journal.claim_job("w")
    assert job is not None
    journal.retry_later(job, "attempt 1 failed: boom")
    record = journal.instance("1.1")
    assert record is not None and record.state is InstanceState.QUEUED
    again = journal.claim_job("w")
    assert again is not None and again.attempts == 2


def test_study_is_due_after_quiet_period_when_all_processed(journal: Journal) -> None:
    journal.add_instance(new("1.1", study="9.9"))
    journal.add_instance(new("1.2", study="9.9"))
    received = journal.study_instances("9.9")[-1].received_at
    assert journal.due_studies(10.0, now=received + 20) == []  # still queued
    for _ in range(2):
        job = journal.claim_job("w")
        assert job is not None
        journal.finish_skipped(job, "skipped")
    assert journal.due_studies(10.0, now=received + 5) == []  # not quiet yet
    assert journal.due_studies(10.0, now=received + 20) == [("9.9", 2)]
    journal.mark_reported("9.9", 2)
    assert journal.due_studies(10.0, now=received + 20) == []
    journal.add_instance(new("1.3", study="9.9"))  # the study grows: due again, revision 3
    job = journal.claim_job("w")
    assert job is not None
    journal.finish_skipped(job, "skipped")
    assert journal.due_studies(0.001, now=received + 1000) == [("9.9", 3)]


def test_spool_write_is_atomic_and_named_by_uid(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    spool.ensure()
    path = spool.write(b"DICM-bytes", "1.2.840.99")
    assert path.read_bytes() == b"DICM-bytes"
    assert path.name.startswith("1.2.840.99_") and path.parent.parent == tmp_path
    assert not list((tmp_path / "tmp").iterdir())
    other = spool.write(b"again", "1.2.840.99")
    assert other != path  # concurrent duplicates never overwrite each other


def test_spool_below_watermark_refuses_and_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=spool_free(tmp_path) + 2**30)
    spool.ensure()
    with pytest.raises(SpoolFullError, match="storage.min_free_mb"):
        spool.write(b"x" * 100, "1.2")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_spool_write_error_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    spool.ensure()
    day = time.strftime("%Y%m%d")
    (tmp_path / day).write_bytes(b"a file where the day folder should be")
    with pytest.raises(SpoolWriteError, match="cannot write"):
        spool.write(b"x", "1.2")
    assert not list((tmp_path / "tmp").iterdir())


def test_sweep_removes_temp_files_and_keeps_unrecorded_ones_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_bytes=0)
    spool.ensure()
    kept = spool.write(b"recorded", "1.1")
    orphan = spool.write(b"not recorded", "1.2")
    (tmp_path / "tmp" / "1.3_abcd.dcm").write_bytes(b"half")
    assert spool.sweep([kept]) == (1, 1)
    assert kept.is_file() and not orphan.exists()
    assert (tmp_path / "orphans" / orphan.name).read_bytes() == b"not recorded"


def spool_free(folder: Path) -> int:
    return Spool(folder, 0).free_bytes()


def test_sweep_of_a_shared_spool_leaves_files_other_nodes_are_writing(tmp_path: Path) -> None:
    """Issue 22: a node starting on a shared spool must not take another node's fresh temp
    file or its just-renamed, not yet journaled file for leftovers of a crash."""
    spool = Spool(tmp_path, min_free_bytes=0)
    spool.ensure()
    being_written = tmp_path / "tmp" / "1.4_abcd.dcm"
    being_written.write_bytes(b"half")
    about_to_be_journaled = spool.write(b"whole file", "1.5")
    assert spool.sweep([], older_than=time.time() - 3600) == (0, 0)
    assert being_written.exists() and about_to_be_journaled.exists()
    assert spool.sweep([]) == (1, 1)  # one node, at start: nothing else is writing
