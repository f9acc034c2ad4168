"""Report outcomes end to end, over storescu, with the real gateway, Orthanc and an MLLP listener.

* issue 21 item 2: a skull CR gets a "not analysed" SR in Orthanc (dciodvfy 0 errors) and an
  ORU at the listener saying why (OBX-11 X), with the quality gate's reason;
* issue 20 defect 1: a study whose report cannot be built (two Patient IDs in one study)
  ends ``report-failed`` after ``results.max_attempts`` attempts, shown by ``cxr-gateway
  status`` and the API, and the log stops growing; ``cxr-gateway retry --reports`` tries again;
* issue 20 defect 7: control characters and delimiters in the patient's name and ID reach
  the RIS as a framed, parseable ORU.

Skipped while the shipped models or DCMTK are absent (``tests/results_rig.py``).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom.uid import generate_uid

from hl7_link.escaping import unescape
from tests.dicom_validation import dciodvfy
from tests.gateway_harness import GATEWAY, dcmtk_tool, storescu
from tests.results_rig import (
    Rig,
    chest_study,
    results_in_orthanc,
    running_rig,
    wait_until,
)
from tests.sr_content import content_items

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 2
SKULL_TEXT = "not analysed: not a chest radiograph (Body Part Examined 'SKULL')"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if dcmtk_tool("storescu") is None:
        pytest.skip("DCMTK storescu is not installed (bin/setup --dev)")
    with running_rig(tmp_path_factory.mktemp("rig"),
                     results={"max_attempts": MAX_ATTEMPTS, "retry_delay_s": 0.5}) as started:
        yield started


def _send(rig: Rig, files: list[Path]) -> None:
    out = storescu(rig.gateway.port, files, "-aet", "TESTSCU")
    assert out.endswith("rc=0"), out


def _oru_of(rig: Rig, study: str) -> str:
    return str(wait_until(lambda: next((m for m in rig.listener.received if study in m), None),
                          90, f"ORU of {study}"))


def _edit(path: Path, **tags: Any) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_skull_gets_a_not_analysed_sr_and_oru(rig: Rig, tmp_path: Path) -> None:
    study, [path] = chest_study(tmp_path, "ACC-SKULL")
    _send(rig, [_edit(path, BodyPartExamined="SKULL")])
    found = wait_until(lambda: results_in_orthanc(rig.orthanc, study).get("SR"), 90,
                       "not-analysed SR in Orthanc")
    sr_path = rig.orthanc.download(found[0]["ID"], tmp_path / "sr.dcm")
    report = dciodvfy(sr_path)
    assert report.errors == (), report.output
    texts = [str(i.TextValue) for i in content_items(pydicom.dcmread(sr_path)) if "TextValue" in i]
    assert SKULL_TEXT in texts
    message = parse_message(_oru_of(rig, study), validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    order = message.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "I"
    first = order.oru_r01_observation[0].obx
    assert (first.obx_11.to_er7(), unescape("".join(f.to_er7() for f in first.obx_5))) == (
        "X", SKULL_TEXT)
    assert results_in_orthanc(rig.orthanc, study).get("OT") is None  # no heatmap: no score


def _status(rig: Rig) -> str:
    done = subprocess.run([str(GATEWAY), "status", "--config", str(rig.gateway.config_path)],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _api_study(rig: Rig, study: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{rig.gateway.config['web']['port']}/api/v1/studies/{study}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_unbuildable_report_ends_report_failed_and_the_log_stops(rig: Rig,
                                                                 tmp_path: Path) -> None:
    study, files = chest_study(tmp_path, "ACC-MERGE", images=2)
    _edit(files[0], PatientID="MERGE-A")
    _edit(files[1], PatientID="MERGE-B")  # one study, two patients: no report may file it
    _send(rig, files)
    failed = "SELECT report_failed_revision, report_attempts, report_error FROM studies" \
             " WHERE study_uid = ?"
    row = wait_until(lambda: next((r for r in rig.gateway.rows(failed, (study,)) if r[0]), None),
                     120, "study given up")
    reason = ("report failed: building the SR (ResultBuildError: images: all must share one "
              "PatientID; got 2 different values)")
    assert row[1:] == (MAX_ATTEMPTS, reason)
    lines_then, size_then = _report_lines(rig, study), len(rig.gateway.log())
    assert lines_then == MAX_ATTEMPTS
    time.sleep(3.0)  # 30 aggregator polls and 6 retry delays: nothing more may happen
    assert (_report_lines(rig, study), len(rig.gateway.log())) == (lines_then, size_then)
    assert f"study {study} revision 2  {MAX_ATTEMPTS} attempt(s)  {reason}" in _status(rig)
    summary = _api_study(rig, study)["study"]
    assert (summary["status"], summary["reason"]) == ("report-failed", reason)
    assert "MERGE-A" not in rig.gateway.log() and "Traceback" not in rig.gateway.log()

    done = subprocess.run([str(GATEWAY), "retry", "--reports", study, "--config",
                           str(rig.gateway.config_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: _report_lines(rig, study) == 2 * MAX_ATTEMPTS, 60, "tried again")
    wait_until(lambda: rig.gateway.rows(failed, (study,))[0][0] == 2, 30, "given up again")


def _report_lines(rig: Rig, study: str) -> int:
    return sum(1 for line in rig.gateway.log().splitlines()
               if study in line and "report failed" in line)


def test_control_characters_in_patient_data_reach_the_ris_framed(rig: Rig,
                                                                 tmp_path: Path) -> None:
    study, [path] = chest_study(tmp_path, "ACC|CTRL")
    _edit(path, PatientName="Doe\x1cx|y&z~w^John\x0b", PatientID="ID^7\r\n",
          SOPInstanceUID=generate_uid())
    _send(rig, [path])
    message = parse_message(_oru_of(rig, study), validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    pid = message.oru_r01_patient_result.oru_r01_patient.pid
    assert unescape(pid.pid_5.pid_5_1.to_er7()) == "Doex|y&z~w"
    assert unescape(pid.pid_5.pid_5_2.to_er7()) == "John"
    assert unescape(pid.pid_3.pid_3_1.to_er7()) == "ID^7"
    obr = message.oru_r01_patient_result.oru_r01_order_observation.obr
    assert unescape(obr.obr_2.to_er7()) == "ACC|CTRL"
    wait_until(lambda: results_in_orthanc(rig.orthanc, study).get("SR"), 60, "SR in Orthanc")


REAL_CHEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "chest"


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["cr-mono1-10bit-no-file-meta.dcm", "dx-implicit-vr-8bit.dcm"])
def test_real_samples_once_retried_forever_are_reported(rig: Rig, name: str,
                                                         tmp_path: Path) -> None:
    path = REAL_CHEST / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the real data of /work/shared/data/README.md)")
    study = str(pydicom.dcmread(path, force=True, stop_before_pixels=True).StudyInstanceUID)
    _send(rig, [path])
    found = wait_until(lambda: results_in_orthanc(rig.orthanc, study).get("SR"), 120,
                       f"SR of {name} in Orthanc")
    sr_path = rig.orthanc.download(found[0]["ID"], tmp_path / "sr.dcm")
    report = dciodvfy(sr_path)
    assert report.errors == (), report.output
    message = parse_message(_oru_of(rig, study), validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    failed = rig.gateway.rows("SELECT report_failed_revision, report_attempts FROM studies"
                              " WHERE study_uid = ?", (study,))
    assert failed == [(0, 0)]
