"""The worklist API shows what a radiologist and IT look for (issue 21, item 4).

Patient ID, name, accession, study date and modality (from the spool file's
header), both scores against their thresholds, the impression and its notes
(an unknown age), the reason for a skip (a child: outside intended use);
sorted by TB score, filtered by finding; patient data behind the token beyond
localhost and never in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from dicom_node.worklist import display_name, patient_columns
from inference.engine import InferenceEngine
from tests.dicom_factory import PATIENT_NAME
from tests.web_support import LOCAL, STUDY_A, TOKEN, Filled, client, engine, models, settings_for
from tests.worklist_support import (
    AGE_NOTE,
    CHILD_ID,
    CHILD_REASON,
    STUDY_CHILD,
    STUDY_UNKNOWN,
    UNKNOWN_ACCESSION,
    UNKNOWN_ID,
    fill_worklist,
)
from web import create_app

pytestmark = pytest.mark.slow
__all__ = ["client", "engine", "models"]  # fixtures shared from tests/web_support.py


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, models: Path, engine: InferenceEngine) -> Filled:
    return fill_worklist(tmp_path_factory.mktemp("worklist"), models, engine)


def _rows(client: TestClient, **params: Any) -> dict[str, dict[str, Any]]:
    items = client.get("/api/v1/studies", params=params).json()["items"]
    return {s["study_uid"]: s for s in items}


def test_rows_carry_patient_study_scores_impression_and_reason(client: TestClient) -> None:
    rows = _rows(client)
    unknown = rows[STUDY_UNKNOWN]
    assert unknown["patient"] == {"patient_id": UNKNOWN_ID, "patient_name": "Okonkwo, Adaeze Ngozi",
                                  "accession_number": UNKNOWN_ACCESSION, "study_date": "2025-03-17",
                                  "modality": "DX"}
    assert unknown["status"] == "classified" and unknown["notes"] == [AGE_NOTE]
    assert unknown["finding"] in {"tb-suspected", "pneumonia-pattern", "no-tb-finding"}
    assert unknown["tb_threshold"] == 0.5 and 0 <= unknown["tb_score"] <= 1
    assert 0 <= unknown["pneumonia_score"] <= 1 and 0 < unknown["pneumonia_threshold"] < 1
    child = rows[STUDY_CHILD]
    assert child["status"] == "skipped" and child["reason"] == f"skipped: {CHILD_REASON}"
    assert child["patient"]["patient_id"] == CHILD_ID and child["tb_score"] is None
    adult = rows[STUDY_A]
    assert adult["notes"] == [] and adult["patient"]["patient_name"] == display_name(PATIENT_NAME)
    assert adult["patient"]["accession_number"] == "ACC-0001"


def test_sorted_by_tb_score_and_filtered_by_finding(client: TestClient) -> None:
    items = client.get("/api/v1/studies", params={"sort": "tb-score"}).json()["items"]
    scored = [s["tb_score"] for s in items if s["tb_score"] is not None]
    assert len(scored) >= 3 and scored == sorted(scored, reverse=True)
    seen = set()
    for finding in ("tb-suspected", "pneumonia-pattern", "no-tb-finding"):
        only = _rows(client, finding=finding)
        assert all(s["finding"] == finding for s in only.values())
        seen |= set(only)
    assert seen == {uid for uid, s in _rows(client).items() if s["finding"] is not None}
    assert client.get("/api/v1/studies", params={"finding": "bogus"}).status_code == 422


def test_study_detail_has_the_note(client: TestClient) -> None:
    body = client.get(f"/api/v1/studies/{STUDY_UNKNOWN}").json()
    assert body["result"]["notes"] == [AGE_NOTE] and body["images"][0]["result"]["notes"] == [AGE_NOTE]


def test_patient_columns_need_the_token_beyond_localhost(filled: Filled,
                                                        engine: InferenceEngine) -> None:
    settings = settings_for(filled.settings.base_dir, Path("unused"), bind_address="0.0.0.0",
                            auth_token=TOKEN)
    with TestClient(create_app(settings, engine, filled.journal)) as c:
        refused = c.get("/api/v1/studies")
        assert refused.status_code == 401 and UNKNOWN_ID not in refused.text
        allowed = c.get("/api/v1/studies", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200 and UNKNOWN_ID in allowed.text


def test_patient_data_never_in_the_log(filled: Filled, models: Path, engine: InferenceEngine,
                                       caplog: pytest.LogCaptureFixture,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    caplog.set_level(logging.DEBUG)
    again = fill_worklist(tmp_path_factory.mktemp("worklist-log"), models, engine)
    with TestClient(create_app(again.settings, engine, again.journal,
                               registry=CollectorRegistry()), client=LOCAL) as c:
        assert UNKNOWN_ID in c.get("/api/v1/studies").text
        c.get(f"/api/v1/studies/{STUDY_UNKNOWN}")
    for secret in (UNKNOWN_ID, CHILD_ID, "Okonkwo", "Adaeze", UNKNOWN_ACCESSION, "Müller"):
        assert secret not in caplog.text, secret


def test_unreadable_spool_header_gives_empty_columns(tmp_path: Path) -> None:
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"not dicom at all")
    assert patient_columns(bad).patient_id == ""
    assert patient_columns(tmp_path / "missing.dcm").patient_name == ""
    assert display_name("Family^Given^Middle^Dr.^") == "Family, Dr. Given Middle"
    assert display_name("OnlyFamily") == "OnlyFamily" and display_name("") == ""


def test_settings_page_shows_the_minimum_age(client: TestClient) -> None:
    assert client.get("/api/v1/config").json()["inference"]["min_patient_age_years"] == 15
