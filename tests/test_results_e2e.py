"""Results end to end with real peers: Orthanc -> gateway -> SR and heatmap back in Orthanc, ORU to RIS.

Orthanc sends a chest CR study to ``cxr-gateway serve`` by C-STORE (through
its REST API); the SR and the heatmap Secondary Capture must arrive back in
Orthanc in the same study and pass dciodvfy, and the MLLP listener must
receive an ORU^R01 with the same patient, accession, scores and model
version. The gateway's own objects routed back to it are never classified.
Skipped while the shipped models are absent (``tests/results_rig.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.dicom_factory import PATIENT_NAME
from tests.dicom_validation import dciodvfy, dsrdump
from tests.mllp_listener import MllpListener
from tests.results_rig import (
    Rig,
    chest_study,
    results_in_orthanc,
    running_rig,
    wait_until,
)

pytestmark = pytest.mark.slow

ACCESSION = "ACC-E2E-0001"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_rig(tmp_path) as started:
        yield started


def test_sr_heatmap_and_oru_arrive_and_match(rig: Rig, tmp_path: Path) -> None:
    study, files = chest_study(tmp_path, ACCESSION)
    source = [rig.orthanc.upload(f) for f in files]
    rig.orthanc.send_to_gateway(source)
    found = wait_until(lambda: _complete(rig, study), 60, "SR and heatmap in Orthanc")
    wait_until(lambda: rig.listener.received, 30, "ORU at the MLLP listener")
    result = _journal_result(rig, pydicom.dcmread(files[0]).SOPInstanceUID)

    sr_file = rig.orthanc.download(found["SR"][0]["ID"], tmp_path / "sr.dcm")
    sc_file = rig.orthanc.download(found["heatmap"][0]["ID"], tmp_path / "sc.dcm")
    for path in (sr_file, sc_file):
        report = dciodvfy(path)
        assert not report.errors, report.output
    dsrdump(sr_file)
    _check_sr(pydicom.dcmread(sr_file), study, result)
    sc = pydicom.dcmread(sc_file)
    assert (sc.StudyInstanceUID, sc.BurnedInAnnotation, str(sc.PatientName)) == (
        study, "YES", PATIENT_NAME)
    _check_oru(rig.listener, result)
    wait_until(lambda: {r[3] for r in rig.outbox()} == {"delivered"}, 10, "outbox delivered")
    assert sorted(r[1] for r in rig.outbox()) == ["heatmap", "oru", "sr"]


def test_own_results_routed_back_are_not_classified(rig: Rig, tmp_path: Path) -> None:
    study, files = chest_study(tmp_path, ACCESSION)
    rig.orthanc.send_to_gateway([rig.orthanc.upload(f) for f in files])
    found = wait_until(lambda: _complete(rig, study), 60, "SR and heatmap in Orthanc")
    wait_until(lambda: {r[3] for r in rig.outbox()} == {"delivered"}, 30, "outbox delivered")
    rows_before = rig.outbox()

    own = [found["SR"][0]["ID"], found["heatmap"][0]["ID"]]
    rig.orthanc.send_to_gateway(own)  # what a PACS routing every new object would do
    reported = "SELECT reported_revision FROM studies WHERE study_uid = ?"
    wait_until(lambda: rig.gateway.rows(reported, (study,))[0][0] == 3, 30, "study re-examined")
    states = rig.gateway.rows("SELECT sop_class_uid, state, reason FROM instances"
                              " WHERE study_uid = ? AND state != 'classified'", (study,))
    assert len(states) == 2
    for _sop_class, state, reason in states:
        assert state == "skipped" and "written by this gateway" in reason, (state, reason)
    assert rig.outbox() == rows_before
    assert len(rig.listener.received) == 1


def _complete(rig: Rig, study: str) -> dict[str, list[dict[str, Any]]] | None:
    """SR and heatmap of ``study`` once both are in Orthanc."""
    by_modality = results_in_orthanc(rig.orthanc, study)
    heatmaps = [i for m, items in by_modality.items() if m not in ("SR", "CR") for i in items]
    if not by_modality.get("SR") or not heatmaps:
        return None
    return {"SR": by_modality["SR"], "heatmap": heatmaps, "CR": by_modality.get("CR", [])}


def _journal_result(rig: Rig, sop_uid: str) -> dict[str, Any]:
    [(state, result)] = rig.gateway.rows(
        "SELECT state, result_json FROM instances WHERE sop_instance_uid = ?", (sop_uid,))
    assert state == "classified"
    return dict(json.loads(result))


def _flatten(items: Any) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _flatten(item.get("ContentSequence", []))


def _check_sr(sr: Dataset, study: str, result: dict[str, Any]) -> None:
    assert sr.StudyInstanceUID == study and sr.AccessionNumber == ACCESSION
    assert str(sr.PatientName) == PATIENT_NAME and sr.VerificationFlag == "UNVERIFIED"
    items = list(_flatten(sr.ContentSequence))
    meaning = {"tb-suspected": "Tuberculosis", "pneumonia-pattern": "Pneumonia",
               "no-tb-finding": "No abnormality detected"}[result["finding"]]
    impressions = [i.ConceptCodeSequence[0].CodeMeaning for i in items
                   if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "121073"]
    assert impressions and set(impressions) == {meaning}
    probabilities = [float(i.MeasuredValueSequence[0].NumericValue) for i in items
                     if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "122157"]
    for key in ("tb_vs_normal", "pneumonia_vs_tb"):
        assert any(abs(p - result[key]["score"]) < 1e-4 for p in probabilities), (key, probabilities)
    texts = " ".join(str(i.get("TextValue", "")) for i in items)
    assert result["tb_vs_normal"]["model_version"] in texts
    versions = [str(v) for e in sr.ContributingEquipmentSequence for v in e.get("SoftwareVersions", [])]
    assert result["tb_vs_normal"]["model_version"] in versions


def _check_oru(listener: MllpListener, result: dict[str, Any]) -> None:
    assert len(listener.received) == 1
    message = listener.parsed[0]
    assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    er7 = listener.received[0]
    pid = next(s for s in er7.split("\r") if s.startswith("PID|"))
    assert "Müller-Łukasiewicz^Zoë Ángela" in pid and "CXR-0001" in pid
    obr = next(s for s in er7.split("\r") if s.startswith("OBR|"))
    assert obr.split("|")[3] == ACCESSION
    obx = [s.split("|") for s in er7.split("\r") if s.startswith("OBX|")]
    numbers = [float(f[5]) for f in obx if f[2] == "NM" and f[3].startswith("122157")]
    assert any(abs(n - result["tb_vs_normal"]["score"]) < 1e-4 for n in numbers), numbers
    versions = [f[5] for f in obx if f[3].startswith("111003")]
    assert result["tb_vs_normal"]["model_version"] in versions
