"""Delivery faults end to end with real peers: PACS down, RIS refusing or silent, gateway killed.

Each test runs Orthanc, the MLLP listener and ``cxr-gateway serve`` on
loopback (``tests/results_rig.py``) with short backoffs, breaks one peer and
checks that the result is retried, dead-lettered at the limit and retriable
by command, or delivered exactly once after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_gateway.cli import main
from tests.gateway_harness import store
from tests.mllp_listener import Answer, MllpListener
from tests.results_rig import Rig, chest_study, models_dir, results_in_orthanc, start_rig, wait_until

pytestmark = pytest.mark.slow

DICOM_ROWS = "channel = 'dicom'"
SR_ROWS = "kind = 'sr'"
HL7_ROWS = "channel = 'hl7'"


@pytest.fixture
def listener() -> Iterator[MllpListener]:
    models_dir()  # skip before starting anything while the models are absent
    with MllpListener() as peer:
        yield peer


def _send_study(rig: Rig, folder: Path, accession: str) -> str:
    study, files = chest_study(folder, accession)
    rig.orthanc.send_to_gateway([rig.orthanc.upload(f) for f in files])
    return study


def _store_directly(rig: Rig, folder: Path, accession: str) -> str:
    """C-STORE a study to the gateway as a modality would (while Orthanc is down)."""
    study, files = chest_study(folder, accession)
    assert store(rig.gateway.port, files) == [0] * len(files)
    return study


def _results_in_orthanc(rig: Rig, study: str) -> tuple[int, int]:
    """(SR count, heatmap count) of the study in Orthanc."""
    found = results_in_orthanc(rig.orthanc, study)
    return len(found.get("SR", [])), sum(len(v) for m, v in found.items() if m not in ("SR", "CR"))


def test_pacs_down_and_ris_error_are_retried_then_delivered(tmp_path: Path,
                                                             listener: MllpListener) -> None:
    rig = start_rig(tmp_path, listener, delivery={"retry_window_s": 600})
    try:
        listener.scripted.extend([Answer.ERROR, Answer.ERROR])
        rig.orthanc.stop()
        study = _store_directly(rig, tmp_path, "ACC-FAULT-1")
        wait_until(lambda: all(r[4] >= 2 and r[5] for r in rig.outbox(SR_ROWS))
                   and rig.outbox(SR_ROWS), 30, "C-STORE attempts fail while Orthanc is down")
        assert all(r[3] == "pending" for r in rig.outbox(DICOM_ROWS))
        assert "connection refused" in rig.outbox(SR_ROWS)[0][5]
        assert all(r[4] == 0 for r in rig.outbox("kind = 'heatmap'"))  # they wait for the SR
        wait_until(lambda: rig.outbox(HL7_ROWS)[0][3] == "delivered", 30, "ORU accepted")
        assert listener.answers == [Answer.ERROR, Answer.ERROR, Answer.ACCEPT]
        assert len({m.msh.msh_10.to_er7() for m in listener.parsed}) == 1  # same control ID
        assert rig.outbox(HL7_ROWS)[0][4] == 3

        rig.orthanc.start()
        wait_until(lambda: {r[3] for r in rig.outbox(DICOM_ROWS)} == {"delivered"}, 30,
                   "SR and heatmap delivered after Orthanc is back")
        assert _results_in_orthanc(rig, study) == (1, 1)
    finally:
        code = rig.stop()
    assert code == 0, rig.gateway.log()[-3000:]  # clean SIGTERM shutdown


def test_silent_peer_is_dead_lettered_shown_and_retried(tmp_path: Path, listener: MllpListener,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    listener.answer = Answer.SILENT
    rig = start_rig(tmp_path, listener, delivery={"retry_window_s": 0.5, "mllp_ack_timeout_s": 1.0})
    try:
        _send_study(rig, tmp_path, "ACC-FAULT-2")
        [dead] = wait_until(lambda: rig.outbox("state = 'dead'"), 40, "ORU dead-lettered")
        assert dead[1:5] == ("oru", "hl7", "dead", 2) and "ACK" in dead[5], dead
        assert len(listener.received) == 2

        config = ["--config", str(rig.gateway.config_path)]
        assert main(["status", *config]) == 0
        shown = capsys.readouterr().out
        assert "dead 1" in shown and f"#{dead[0]}" in shown and dead[5] in shown
        assert main(["status", "--json", *config]) == 0
        dead_json = json.loads(capsys.readouterr().out)["outbox"]["dead"]
        assert [(d["id"], d["last_error"]) for d in dead_json] == [(dead[0], dead[5])]

        listener.answer = Answer.ACCEPT
        assert main(["retry", str(dead[0]), *config]) == 0
        assert "requeued" in capsys.readouterr().out
        wait_until(lambda: rig.outbox(HL7_ROWS)[0][3] == "delivered", 30, "ORU delivered")
        assert listener.answers == [Answer.SILENT, Answer.SILENT, Answer.ACCEPT]
        assert main(["retry", str(dead[0]), *config]) == 1  # no longer a dead letter
    finally:
        listener.released.set()
        code = rig.stop()
    assert code == 0, rig.gateway.log()[-3000:]  # clean SIGTERM shutdown


def test_kill9_with_results_pending_delivers_once_after_restart(tmp_path: Path,
                                                                listener: MllpListener) -> None:
    listener.answer = Answer.CLOSE
    rig = start_rig(tmp_path, listener, delivery={"retry_window_s": 600})
    try:
        rig.orthanc.stop()
        study = _store_directly(rig, tmp_path, "ACC-FAULT-3")
        wait_until(lambda: len(rig.outbox("attempts >= 1")) == 2 and len(rig.outbox()) == 3, 30,
                   "SR and ORU failing, the heatmap queued")
        pending = rig.outbox()  # the heatmap waits behind its SR
        assert [r[1] for r in pending] == ["sr", "oru", "heatmap"]
        assert {r[3] for r in pending} == {"pending"}
        rig.gateway.kill9()

        listener.answer = Answer.ACCEPT
        rig.orthanc.start()
        rig.gateway.start()
        wait_until(lambda: {r[3] for r in rig.outbox()} == {"delivered"}, 30, "delivered")
        wait_until(lambda: _results_in_orthanc(rig, study) == (1, 1), 10, "results in Orthanc")
        assert listener.answers.count(Answer.ACCEPT) == 1
        sr_uids = {i["MainDicomTags"]["SOPInstanceUID"]
                   for i in results_in_orthanc(rig.orthanc, study)["SR"]}
        assert sr_uids == set(rig.gateway.rows("SELECT object_uid FROM outbox WHERE kind = 'sr'")[0])
        assert [r[0] for r in rig.outbox()] == [r[0] for r in pending]  # nothing queued twice
    finally:
        code = rig.stop()
    assert code == 0, rig.gateway.log()[-3000:]  # clean SIGTERM shutdown
