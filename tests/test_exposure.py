"""Issue 20 defect 11 (parts): what an exposed node must say or refuse.

* ``/docs``, ``/redoc`` and ``/openapi.json`` need the token like every other
  protected route (they describe every route and parameter);
* ``check-config`` warns loudly when ``dicom.accept_any_caller`` is on and
  the node listens on a network interface.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from cxr_gateway.cli import main
from dicom_node.journal import Journal
from tests.web_support import settings_for
from web.app import create_app

TOKEN = "s3cret-token-for-tests"
DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


def test_api_description_needs_the_token(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, Path("unused"), bind_address="0.0.0.0", auth_token=TOKEN)
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        with TestClient(create_app(settings, None, journal)) as client:
            for path in DOC_PATHS:
                assert client.get(path).status_code == 401, path
                allowed = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
                assert allowed.status_code == 200, path
            spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
            assert "/api/v1/predict" in spec.json()["paths"]
            assert "/openapi.json" not in spec.json()["paths"]
            shown = client.get("/api/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
            dicom = shown.json()["dicom"]  # the admission limits in force, defaults resolved
            assert (dicom["max_associations_per_host"], dicom["reserved_associations"],
                    dicom["establishment_timeout_s"]) == (5, 2, 10.0)
    finally:
        journal.close()


def test_api_description_without_token_is_loopback_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        app = create_app(settings_for(tmp_path, Path("unused")), None, journal)
        with TestClient(app, client=("10.1.2.3", 40000)) as remote:
            assert all(remote.get(path).status_code == 403 for path in DOC_PATHS)
        with TestClient(app, client=("127.0.0.1", 40000)) as local:
            assert all(local.get(path).status_code == 200 for path in DOC_PATHS)
    finally:
        journal.close()


def _check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], bind: str) -> tuple[int, str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "base_dir": str(tmp_path), "inference": {"workers": 0},
        "storage": {"spool_dir": "spool", "database": "journal.sqlite", "min_free_mb": 0},
        "dicom": {"bind_address": bind, "accept_any_caller": True}}))
    code = main(["check-config", "--config", str(config)])
    return code, capsys.readouterr().out


def test_check_config_warns_when_anyone_on_the_network_may_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check_config(tmp_path, capsys, "0.0.0.0")
    assert code == 0
    assert ("WARNING dicom.accept_any_caller is true and dicom.bind_address is 0.0.0.0: ANY host"
            in out)


def test_check_config_is_quiet_for_a_loopback_test_node(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check_config(tmp_path, capsys, "127.0.0.1")
    assert code == 0 and "WARNING" not in out
