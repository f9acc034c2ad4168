"""Issue 20, defect 8: a corrected re-send replaces the stored instance; an identical one is a no-op.

End to end against the running gateway with Orthanc as the PACS and an MLLP
listener as the RIS (:mod:`tests.results_rig`), plus the journal's guard for
a worker that was still classifying the replaced content.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.journal import Admission, InstanceState, Journal, NewInstance, StoredResult
from dicom_node.status import StoreStatus
from tests.dicom_factory import make_chest
from tests.gateway_harness import store
from tests.results_rig import Rig, results_in_orthanc, running_rig, wait_until

INSTANCE = "SELECT state, reason, replaced FROM instances WHERE sop_instance_uid = ?"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_rig(tmp_path) as started:
        yield started


def _chest(study: str, sop: str, **changes: Any) -> Dataset:
    return make_chest(study_uid=study, series_uid=study[:60] + ".1", sop_uid=sop, **changes)


def _srs(rig: Rig, study: str) -> list[str]:
    return sorted(i["MainDicomTags"]["SOPInstanceUID"]
                  for i in results_in_orthanc(rig.orthanc, study).get("SR", []))


def _state(rig: Rig, sop: str, state: str) -> bool:
    rows = rig.gateway.rows(INSTANCE, (sop,))
    return bool(rows) and rows[0][0] == state


def test_corrected_resend_is_classified_and_reported_again(rig: Rig) -> None:
    study, sop = generate_uid(), generate_uid()
    port = rig.gateway.port
    assert store(port, [_chest(study, sop, body_part="SKULL")]) == [StoreStatus.SUCCESS]
    wait_until(lambda: _state(rig, sop, "skipped"), 60, "the skull skipped")

    assert store(port, [_chest(study, sop)]) == [StoreStatus.SUCCESS]  # fixed at the source
    wait_until(lambda: _state(rig, sop, "classified"), 60, "the corrected chest classified")
    first = wait_until(lambda: _srs(rig, study), 60, "an SR in Orthanc")
    wait_until(lambda: len(rig.listener.received) == 1, 30, "one ORU")
    assert rig.gateway.rows(INSTANCE, (sop,))[0][2] == 1  # replaced once
    assert len(list(rig.gateway.spool.glob("*/*.dcm"))) == 1, "the replaced file is removed"

    fixed = _chest(study, sop, patient_name="Corrected^Name")  # classified, then corrected again
    assert store(port, [fixed]) == [StoreStatus.SUCCESS]
    both = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(_srs(rig, study)), 60,
                      "a second SR revision in Orthanc")
    assert set(first) < set(both), "the new revision has its own SOP Instance UID"
    wait_until(lambda: len(rig.listener.received) == 2, 30, "a second ORU")
    assert "Corrected^Name" in rig.listener.received[-1]
    assert "replaces the stored instance" in rig.gateway.log()


def test_identical_resend_is_processed_once(rig: Rig) -> None:
    study, sop = generate_uid(), generate_uid()
    ds = _chest(study, sop)
    assert store(rig.gateway.port, [ds]) == [StoreStatus.SUCCESS]
    wait_until(lambda: _srs(rig, study), 60, "an SR in Orthanc")
    wait_until(lambda: {r[3] for r in rig.outbox()} == {"delivered"}, 30, "outbox delivered")
    outbox = rig.outbox()

    assert store(rig.gateway.port, [ds, ds]) == [StoreStatus.SUCCESS] * 2
    wait_until(lambda: rig.gateway.log().count("identical to the stored instance") == 2, 10,
               "both repeats answered as identical")
    assert rig.gateway.rows("SELECT attempts FROM jobs") == [(1,)], "classified once"
    assert rig.gateway.rows("SELECT revision FROM studies WHERE study_uid = ?", (study,)) == [(1,)]
    assert rig.gateway.rows(INSTANCE, (sop,))[0][2] == 0
    assert rig.outbox() == outbox
    assert len(rig.listener.received) == 1


def _new(sop: str, path: Path, digest: str, study: str = "1.2.3") -> NewInstance:
    return NewInstance(sop, "1.2.840.10008.5.1.4.1.1.1", study, study + ".1", "PACS", path, digest)


def test_replacement_voids_the_job_a_worker_still_holds(tmp_path: Path, database: Path | str) -> None:
    journal = Journal(database)
    try:
        assert journal.admit_instance(_new("1.1", tmp_path / "a.dcm", "aa")).outcome is Admission.ADDED
        old_job = journal.claim_job("worker-1")
        assert old_job is not None
        again = journal.admit_instance(_new("1.1", tmp_path / "a2.dcm", "aa"))
        assert again.outcome is Admission.DUPLICATE
        replaced = journal.admit_instance(_new("1.1", tmp_path / "b.dcm", "bb"))
        assert (replaced.outcome, replaced.old_path) == (Admission.REPLACED, tmp_path / "a.dcm")

        journal.finish_classified(old_job, StoredResult(0.9, "tb", "{}", None))  # stale: ignored
        record = journal.instance("1.1")
        assert record is not None
        assert (record.state, record.result_json, record.path, record.replaced) == (
            InstanceState.QUEUED, None, tmp_path / "b.dcm", 1)
        new_job = journal.claim_job("worker-1")
        assert new_job is not None and new_job.id != old_job.id and new_job.attempts == 1
        assert journal.due_studies(0.0, now=10**10) == []  # still being classified
        journal.finish_skipped(new_job, "skipped: test")
        assert journal.due_studies(0.0, now=10**10) == [("1.2.3", 2)]
    finally:
        journal.close()
