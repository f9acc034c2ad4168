"""docker/: the compose file, Orthanc's configuration and the gateway's container config are valid."""

from __future__ import annotations

import json

import pytest
import yaml

from config import ConfigError, load_settings
from tests.conftest import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"


def test_compose_runs_gateway_and_orthanc() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    gateway, orthanc = compose["services"]["gateway"], compose["services"]["orthanc"]
    assert gateway["build"]["dockerfile"] == "docker/Dockerfile"
    assert "CXR_GATEWAY__WEB__AUTH_TOKEN" in gateway["environment"]
    mounted = {v.split(":")[0] for v in orthanc["volumes"]}
    assert {"./orthanc.json", "./route-cxr.lua"} <= mounted
    assert all((DOCKER / m).is_file() for m in mounted if m.startswith("./"))


def test_orthanc_routes_to_the_gateway() -> None:
    orthanc = json.loads((DOCKER / "orthanc.json").read_text())
    settings = load_settings(DOCKER / "gateway.yaml", environ={"CXR_GATEWAY__WEB__AUTH_TOKEN": "t" * 24})
    peer = orthanc["DicomModalities"]["cxrgateway"]
    assert (peer["AET"], peer["Port"]) == (settings.dicom.ae_title, settings.dicom.port)
    destination = settings.destinations.dicom[0]
    assert (destination.ae_title, destination.port) == (orthanc["DicomAet"], orthanc["DicomPort"])
    assert orthanc["DicomAet"] in {c.ae_title for c in settings.dicom.allowed_callers}
    script = (DOCKER / "route-cxr.lua").read_text()
    assert "SendToModality(instanceId, 'cxrgateway')" in script and "'CR'" in script


def test_container_config_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="web.auth_token"):
        load_settings(DOCKER / "gateway.yaml", environ={})


def test_dockerfile_is_slim_and_non_root() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE_IMAGE=python:3.11-slim" in text
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "USER cxr" in code and "[train" not in code and "tensorflow" not in code.lower()
    copied = [line.split()[1].rstrip("/") for line in text.splitlines()
              if line.startswith("COPY ") and not line.startswith("COPY --")]
    assert all((PROJECT_ROOT / c).exists() for c in copied), copied
    allowed = {line[1:] for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert {c for c in copied if not c.startswith("/")} <= allowed  # the allow-list sends each one
