"""POST /api/v1/predict takes an optional age and says when none is known (issue 21, item 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from config.schema import Settings
from dicom_node.journal import Journal
from inference.engine import InferenceEngine
from tests.dicom_factory import make_chest
from tests.web_support import LOCAL, dicom_bytes, engine, models, png_bytes, settings_for
from tests.worklist_support import AGE_NOTE as NOTE
from tests.worklist_support import CHILD_REASON as CHILD
from web import create_app

pytestmark = pytest.mark.slow
__all__ = ["engine", "models"]  # fixtures shared from tests/web_support.py


def _client(settings: Settings, engine: InferenceEngine) -> TestClient:
    journal = Journal(settings.database_target())
    return TestClient(create_app(settings, engine, journal, registry=CollectorRegistry()),
                      client=LOCAL)


@pytest.fixture
def client(tmp_path: Path, models: Path, engine: InferenceEngine) -> Iterator[TestClient]:
    with _client(settings_for(tmp_path, models), engine) as c:
        yield c


def _post(client: TestClient, content: bytes, name: str, **form: Any) -> Any:
    return client.post("/api/v1/predict", files={"file": (name, content)},
                       data={k: str(v) for k, v in form.items()})


def _dicom(**tags: str | None) -> bytes:
    ds = make_chest(rows=400, columns=360)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return dicom_bytes(ds)


def test_png_without_age_is_classified_with_the_note(client: TestClient) -> None:
    answer = _post(client, png_bytes(), "x.png")
    assert answer.status_code == 200 and answer.json()["notes"] == [NOTE]


def test_stated_age_adult_classified_child_refused(client: TestClient) -> None:
    adult = _post(client, png_bytes(), "x.png", age_years=34)
    assert adult.status_code == 200 and adult.json()["notes"] == []
    child = _post(client, png_bytes(), "x.png", age_years=6)
    assert child.status_code == 422 and CHILD in child.json()["detail"]
    infant = _post(client, png_bytes(), "x.png", age_years=0.5)
    assert infant.status_code == 422 and "patient aged 6 months" in infant.json()["detail"]
    assert _post(client, png_bytes(), "x.png", age_years=-1).status_code == 422
    assert _post(client, png_bytes(), "x.png", age_years="adult").status_code == 422


def test_dicom_age_from_its_header_unless_stated(client: TestClient) -> None:
    assert _post(client, _dicom(), "x.dcm").json()["notes"] == []  # born 1970, study 2024
    child = _post(client, _dicom(PatientAge="006Y"), "x.dcm")
    assert child.status_code == 422 and CHILD in child.json()["detail"]
    unknown = _post(client, _dicom(PatientBirthDate=None), "x.dcm")
    assert unknown.status_code == 200 and unknown.json()["notes"] == [NOTE]
    malformed = _post(client, _dicom(PatientBirthDate="31.12.1971"), "x.dcm")
    assert malformed.status_code == 200 and malformed.json()["notes"] == [NOTE]
    stated = _post(client, _dicom(PatientBirthDate=None), "x.dcm", age_years=40)
    assert stated.status_code == 200 and stated.json()["notes"] == []


def test_the_setting_applies_to_uploads(tmp_path: Path, models: Path,
                                        engine: InferenceEngine) -> None:
    settings = settings_for(tmp_path, models)
    off = settings.model_copy(update={"inference": settings.inference.model_copy(
        update={"min_patient_age_years": 0})})
    with _client(off, engine) as c:
        child = _post(c, _dicom(PatientAge="006Y"), "x.dcm")
        assert child.status_code == 200 and child.json()["notes"] == []
        assert _post(c, png_bytes(), "x.png").json()["notes"] == []
