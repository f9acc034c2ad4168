"""REST API of the web app with FastAPI's TestClient: every endpoint, bad uploads, access."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config.schema import Settings
from delivery.outbox import RowState
from dicom_node.journal import Journal
from inference.engine import InferenceEngine
from tests.dicom_factory import make_chest, make_lateral, make_nm, make_relabelled_mono1, make_sr, make_tiny
from tests.web_support import (
    LOCAL,
    STUDY_A,
    STUDY_B,
    STUDY_NM,
    STUDY_Q,
    TOKEN,
    Filled,
    client,
    dicom_bytes,
    engine,
    fill,
    models,
    png_bytes,
    settings_for,
)
from web import create_app
from web.metrics import OTHER_REASON, reason_code

pytestmark = pytest.mark.slow
__all__ = ["client", "engine", "models"]  # fixtures shared from tests/web_support.py


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, models: Path, engine: InferenceEngine) -> Filled:
    folder = tmp_path_factory.mktemp("web")
    return fill(folder, settings_for(folder, models), engine)


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_names_each_reason(tmp_path: Path, filled: Filled) -> None:
    settings = settings_for(tmp_path, tmp_path / "no-models")
    starved = settings.model_copy(update={"storage": settings.storage.model_copy(
        update={"min_free_mb": 10**9})})
    journal = Journal(tmp_path / "read-only.sqlite")
    with journal.engine.connect() as conn:  # SQLite's one connection: what a read-only file answers
        conn.exec_driver_sql("PRAGMA query_only = ON")
    app = create_app(starved, None, journal, engine_error="model.json not found")
    with TestClient(app, client=LOCAL) as c:
        answer = c.get("/readyz")
    assert answer.status_code == 503
    problems = " | ".join(answer.json()["problems"])
    assert "models not loaded: model.json not found" in problems
    assert "journal not writable" in problems
    assert "below storage.min_free_mb" in problems


def test_predict_png(client: TestClient) -> None:
    answer = client.post("/api/v1/predict", files={"file": ("x.png", png_bytes(), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["finding"] in {"tb-suspected", "pneumonia-pattern", "no-tb-finding"}
    for key in ("tb_vs_normal", "pneumonia_vs_tb"):
        assert 0.0 <= body[key]["score"] <= 1.0 and body[key]["version"]
    assert body["tb_vs_normal"]["threshold"] == pytest.approx(0.5)
    assert "not a diagnosis" in body["notice"] and body["input"]["kind"] == "png"
    heatmap = client.get(body["heatmap_url"])
    image = client.get(body["image_url"])
    assert heatmap.headers["content-type"] == "image/png" and heatmap.content[:4] == b"\x89PNG"
    assert image.content[:4] == b"\x89PNG" and image.content != heatmap.content


def test_predict_dicom_passes_the_gate(client: TestClient) -> None:
    answer = client.post("/api/v1/predict",
                         files={"file": ("a", dicom_bytes(make_chest(rows=300, columns=280)))})
    assert answer.status_code == 200, answer.text
    assert answer.json()["input"] == {"kind": "dicom", "rows": 300, "columns": 280,
                                      "quality_gate": "passed"}


@pytest.mark.parametrize(("content", "status", "words"), [
    (b"", 400, "empty"),
    (b"hello, this is not a radiograph" * 10, 415, "not a PNG, JPEG or DICOM"),
    (b"\x89PNG\r\n\x1a\n truncated", 415, "cannot be decoded"),
    (dicom_bytes(make_nm()), 422, "Modality NM"),
    (dicom_bytes(make_lateral()), 422, "not a frontal chest view"),
    (dicom_bytes(make_tiny()), 422, "image size 64x64"),
    (dicom_bytes(make_relabelled_mono1(rows=256, columns=256)), 422, "grey scale looks inverted"),
])
def test_bad_uploads_are_4xx_with_reason(client: TestClient, content: bytes, status: int,
                                         words: str) -> None:
    answer = client.post("/api/v1/predict", files={"file": ("upload", content)})
    assert answer.status_code == status
    assert words in answer.json()["detail"]


def test_too_large_upload(filled: Filled, engine: InferenceEngine) -> None:
    app = create_app(filled.settings, engine, filled.journal, max_upload_bytes=1000)
    with TestClient(app, client=LOCAL) as c:
        answer = c.post("/api/v1/predict", files={"file": ("x.png", png_bytes(), "image/png")})
        declared = c.post("/api/v1/predict", content=b"x" * 200_000,
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "larger than" in answer.json()["detail"]
    assert declared.status_code == 413


def test_predict_without_models_is_503(filled: Filled) -> None:
    app = create_app(filled.settings, None, filled.journal, engine_error="no model.tflite")
    with TestClient(app, client=LOCAL) as c:
        answer = c.post("/api/v1/predict", files={"file": ("x.png", png_bytes())})
    assert answer.status_code == 503 and "no model.tflite" in answer.json()["detail"]


def test_expired_rendering_is_404(client: TestClient) -> None:
    answer = client.get("/api/v1/predictions/unknown-key/heatmap.png")
    assert answer.status_code == 404 and "upload the image again" in answer.json()["detail"]


def test_studies_statuses_and_paging(client: TestClient) -> None:
    body = client.get("/api/v1/studies").json()
    status = {s["study_uid"]: s["status"] for s in body["items"]}
    assert body["total"] == 4
    assert status == {STUDY_A: "dead-letter", STUDY_B: "delivered", STUDY_NM: "skipped",
                      STUDY_Q: "queued"}
    assert body["items"][0]["study_uid"] == STUDY_Q  # newest first
    skipped = next(s for s in body["items"] if s["study_uid"] == STUDY_NM)
    assert "Modality NM" in skipped["reason"]
    page = client.get("/api/v1/studies", params={"page": 2, "page_size": 3}).json()
    assert len(page["items"]) == 1 and page["total"] == 4


def test_studies_sorted_by_tb_score_and_filtered(client: TestClient) -> None:
    items = client.get("/api/v1/studies", params={"sort": "tb-score"}).json()["items"]
    scores = [s["tb_score"] for s in items]
    scored = [s for s in scores if s is not None]
    assert scored == sorted(scored, reverse=True) and len(scored) == 2
    assert scores[2:] == [None, None]
    dead = client.get("/api/v1/studies", params={"status": "dead-letter"}).json()
    assert [s["study_uid"] for s in dead["items"]] == [STUDY_A]
    assert client.get("/api/v1/studies", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/studies", params={"page_size": 0}).status_code == 422


def test_study_detail(client: TestClient) -> None:
    body = client.get(f"/api/v1/studies/{STUDY_A}").json()
    assert len(body["images"]) == 2 and all(i["state"] == "classified" for i in body["images"])
    best = max(body["images"], key=lambda i: i["result"]["tb_vs_normal"]["score"])
    assert body["result"]["representative_sop_instance_uid"] == best["sop_instance_uid"]
    assert body["deliveries"][0]["state"] == "dead" and "payload" not in body["deliveries"][0]
    heatmap = client.get(best["heatmap_url"])
    assert heatmap.status_code == 200 and heatmap.content[:4] == b"\x89PNG"
    assert client.get("/api/v1/studies/1.2.3.4").status_code == 404


def test_retry_dead_letter(client: TestClient, filled: Filled) -> None:
    assert client.post(f"/api/v1/deliveries/{filled.delivered_row}/retry").status_code == 409
    assert client.post("/api/v1/deliveries/999999/retry").status_code == 404
    answer = client.post(f"/api/v1/deliveries/{filled.dead_row}/retry")
    assert answer.status_code == 200
    assert {r.id: r.state for r in filled.outbox.due()}[filled.dead_row] is RowState.PENDING
    assert client.post(f"/api/v1/studies/{STUDY_A}/retry").status_code == 409
    assert client.get(f"/api/v1/studies/{STUDY_A}").json()["study"]["status"] == "classified"


def test_metrics_from_the_journal(client: TestClient) -> None:
    client.post("/api/v1/predict", files={"file": ("x.png", png_bytes())})
    text = client.get("/metrics").text
    families = list(text_string_to_metric_families(text))
    assert {s.labels.get("node") for f in families for s in f.samples} == {"web-test-node"}
    samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "node"))): s.value
               for f in families for s in f.samples}
    assert samples[("cxr_gateway_instances_received_total", ())] == 5
    assert samples[("cxr_gateway_instances_classified_total", ())] == 3
    assert samples[("cxr_gateway_instances_skipped_total", (("reason", "modality"),))] == 1
    assert samples[("cxr_gateway_queue_depth", ())] == 1
    assert samples[("cxr_gateway_stage_seconds_count", (("stage", "classification"),))] == 4
    assert samples[("cxr_gateway_api_stage_seconds_count", (("stage", "inference"),))] >= 1
    key = ("cxr_gateway_deliveries", (("channel", "dicom"), ("destination", "pacs"),
                                      ("state", "delivered")))
    assert samples[key] == 1


@pytest.mark.parametrize(("ds", "code"), [
    (make_nm(), "modality"), (make_lateral(), "view"), (make_tiny(), "size"), (make_sr(), "not-image"),
    (make_chest(body_part="KNEE"), "body-part"), (make_chest(pixels=False), "no-pixel-data"),
])
def test_every_gate_reason_has_its_metric_label(ds: object, code: str) -> None:
    from inference.quality import check_quality

    verdict = check_quality(ds)  # type: ignore[arg-type]
    assert not verdict.ok and verdict.code.value == code
    assert reason_code(verdict.reason) == code
    assert reason_code("something new") == OTHER_REASON


def test_config_view_has_no_secrets(filled: Filled, engine: InferenceEngine) -> None:
    settings = filled.settings.model_copy(update={"web": filled.settings.web.model_copy(
        update={"auth_token": TOKEN})})
    with TestClient(create_app(settings, engine, filled.journal), client=LOCAL) as c:
        answer = c.get("/api/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and TOKEN not in answer.text
    body = answer.json()
    assert body["dicom"]["ae_title"] == "CXRGATEWAY"
    assert body["destinations"]["dicom"][0]["ae_title"] == "PACS"
    assert body["inference"]["models"]["classifiers"]["tb-vs-normal"]["threshold"] == 0.5
    assert body["web"]["authentication"] == "token"


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"it:{password}".encode()).decode()


def test_token_protects_patient_data(filled: Filled, engine: InferenceEngine) -> None:
    settings = settings_for(filled.settings.base_dir, Path("unused"), bind_address="0.0.0.0",
                            auth_token=TOKEN)
    with TestClient(create_app(settings, engine, filled.journal)) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/api/v1/studies", f"/api/v1/studies/{STUDY_A}", "/api/v1/config", "/metrics",
                     "/", "/worklist"):
            refused = c.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
        assert c.get("/api/v1/studies", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/v1/studies", headers={"Authorization": _basic("nope")}).status_code == 401
        assert c.get("/api/v1/studies", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/v1/studies", headers={"Authorization": _basic(TOKEN)}).status_code == 200
        assert c.post("/api/v1/predict", files={"file": ("x.png", png_bytes())}).status_code == 401


def test_without_token_only_loopback_clients(filled: Filled, engine: InferenceEngine) -> None:
    with TestClient(create_app(filled.settings, engine, filled.journal),
                    client=("10.1.2.3", 40000)) as c:
        answer = c.get("/api/v1/studies")
    assert answer.status_code == 403 and "loopback" in answer.json()["detail"]


def test_schema_refuses_exposed_web_without_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="web.auth_token"):
        settings_for(tmp_path, tmp_path, bind_address="0.0.0.0")
    assert settings_for(tmp_path, tmp_path, bind_address="::1").web.auth_token is None
    assert isinstance(settings_for(tmp_path, tmp_path, bind_address="10.0.0.5", auth_token=TOKEN),
                      Settings)


def test_console_pages_and_openapi(client: TestClient) -> None:
    for path, marker in (("/", "upload"), ("/worklist", "worklist"), ("/settings", "settings")):
        page = client.get(path)
        assert page.status_code == 200 and marker in page.text.lower()
    assert "not a diagnosis" in client.get("/").text
    assert client.get("/static/console.js").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/predict", "/api/v1/studies", "/api/v1/studies/{study_uid}",
                 "/api/v1/deliveries/{delivery_id}/retry", "/readyz", "/metrics"):
        assert path in spec["paths"], path
