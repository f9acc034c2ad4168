"""The intended-use age gate end to end: storescu -> gateway -> skipped, or classified -> SR and ORU.

A child's radiograph sent by DCMTK storescu to the running gateway is skipped
with the intended-use reason; an adult's is classified with no note; one with
no usable age is classified and its SR (read back from Orthanc, the PACS) and
its ORU (at the MLLP listener) say that the intended use is not confirmed.
Skipped while the shipped models are absent (``tests/results_rig.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.dicom_validation import dciodvfy
from tests.gateway_harness import dcmtk_tool, storescu
from tests.results_rig import (
    Rig,
    chest_study,
    results_in_orthanc,
    running_rig,
    wait_until,
)

pytestmark = pytest.mark.slow

NOTE = "patient age unknown: intended use (15 years and over) not confirmed"
CHILD_REASON = ("skipped: outside intended use: patient aged 6 years "
                "(inference.min_patient_age_years = 15)")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    if dcmtk_tool("storescu") is None:
        pytest.skip("DCMTK storescu is not installed (bin/setup --dev)")
    with running_rig(tmp_path) as started:
        yield started


def _study(folder: Path, accession: str, **tags: str | None) -> tuple[str, Path]:
    study, [path] = chest_study(folder, accession)
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return study, path


def _sr_text(rig: Rig, study: str, folder: Path) -> str:
    found = wait_until(lambda: results_in_orthanc(rig.orthanc, study).get("SR"), 90,
                       f"SR of {study} in Orthanc")
    path = rig.orthanc.download(found[0]["ID"], folder / f"sr-{study}.dcm")
    assert not dciodvfy(path).errors
    return " ".join(str(item.get("TextValue", "")) for item in _flatten(pydicom.dcmread(path)))


def _flatten(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _flatten(item)


def _oru(rig: Rig, study: str) -> str:
    def find() -> str | None:
        return next((m for m in rig.listener.received if study in m), None)
    message = wait_until(find, 60, f"ORU of {study}")
    return str(message)


def test_child_skipped_adult_classified_unknown_age_classified_with_the_note(
        rig: Rig, tmp_path: Path) -> None:
    child, child_file = _study(tmp_path, "ACC-CHILD", PatientAge="006Y")
    adult, adult_file = _study(tmp_path, "ACC-ADULT", PatientAge="034Y")
    unknown, unknown_file = _study(tmp_path, "ACC-UNKNOWN", PatientBirthDate=None)
    out = storescu(rig.gateway.port, [child_file, adult_file, unknown_file], "-aet", "TESTSCU")
    assert out.endswith("rc=0"), out

    state = "SELECT state, reason FROM instances WHERE study_uid = ?"
    wait_until(lambda: all(rig.gateway.rows(state, (s,)) and rig.gateway.rows(state, (s,))[0][0]
                           in ("classified", "skipped") for s in (child, adult, unknown)),
               90, "all three classified or skipped")
    assert rig.gateway.rows(state, (child,)) == [("skipped", CHILD_REASON)]
    assert rig.gateway.rows(state, (adult,))[0][0] == "classified"
    assert rig.gateway.rows(state, (unknown,))[0][0] == "classified"

    assert NOTE in _sr_text(rig, unknown, tmp_path)
    assert NOTE in _oru(rig, unknown).replace("\r", " ")
    assert "patient age unknown" not in _sr_text(rig, adult, tmp_path)
    assert "patient age unknown" not in _oru(rig, adult)
    log = rig.gateway.log()
    assert "CXR-0001" not in log and "Müller" not in log  # no patient identifiers in the log
