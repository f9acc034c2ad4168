"""A real Orthanc (Debian package ``orthanc``) on free loopback ports, with its own configuration.

Plays the hospital PACS in the end-to-end tests: studies are uploaded over
its REST API (``POST /instances``) and sent to the gateway with
``POST /modalities/gateway/store`` (a C-STORE SCU from Orthanc); the
gateway's SR and heatmap come back to its DICOM port; the tests read them
with ``POST /tools/find`` and ``GET /instances/{id}/file``. HTTP is
loopback-only without authentication (``RemoteAccessAllowed``,
``AuthenticationEnabled`` false); storage and index live in the test folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_harness import free_port

ORTHANC_AET = "ORTHANC"
GATEWAY_MODALITY = "gateway"
START_TIMEOUT_S = 30.0


class OrthancPeer:
    """One Orthanc process; :meth:`start` / :meth:`stop` may be called again (same storage)."""

    def __init__(self, folder: Path, gateway_aet: str, gateway_port: int) -> None:
        self.binary = shutil.which("Orthanc") or pytest.skip(
            "Orthanc not installed (Debian package orthanc; run bin/setup)")
        self.folder = folder
        self.dicom_port, self.http_port = free_port(), free_port()
        self.config_path = folder / "orthanc.json"
        self.log_path = folder / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(gateway_aet, gateway_port), indent=2))

    def _config(self, gateway_aet: str, gateway_port: int) -> dict[str, Any]:
        storage = str(self.folder / "db")
        return {
            "Name": "e2e-pacs", "StorageDirectory": storage, "IndexDirectory": storage,
            "DicomAet": ORTHANC_AET, "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "SaveJobs": False,
            "DicomModalities": {GATEWAY_MODALITY: [gateway_aet, "127.0.0.1", gateway_port]},
            "DicomScuTimeout": 10, "Plugins": [],
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> OrthancPeer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([self.binary, str(self.config_path)], stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise TimeoutError(f"Orthanc not answering after {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (Orthanc needs ~5 s to close its DICOM server) or, at teardown, SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            data: bytes = response.read()
            return data

    def get(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def post(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return json.loads(self._request("POST", path, body))

    def upload(self, dicom_file: Path) -> str:
        """``POST /instances``; the Orthanc ID of the instance."""
        return str(self.post("/instances", dicom_file.read_bytes())["ID"])

    def send_to_gateway(self, orthanc_ids: list[str]) -> Any:
        """C-STORE the resources to the gateway (synchronous job, ``/modalities/{id}/store``)."""
        return self.post(f"/modalities/{GATEWAY_MODALITY}/store",
                         {"Resources": orthanc_ids, "Synchronous": True})

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study, with its main DICOM tags (``/tools/find``, expanded)."""
        found = self.post("/tools/find", {"Level": "Instance", "Expand": True,
                                          "Query": {"StudyInstanceUID": study_uid}})
        return list(found)

    def download(self, orthanc_id: str, target: Path) -> Path:
        target.write_bytes(self._request("GET", f"/instances/{orthanc_id}/file"))
        return target
