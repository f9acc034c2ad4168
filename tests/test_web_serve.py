"""``cxr-gateway serve`` starts the web app next to the SCP (a real subprocess on free ports)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.gateway_harness import GatewayProcess, free_port, gateway_config

pytestmark = pytest.mark.slow


def _wait_listening(port: int, timeout: float = 30.0) -> None:
    """The web app starts after the SCP answers C-ECHO: wait for its port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"web port {port} not listening after {timeout} s")


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_runs_console_and_api(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, free_port(), inference={"workers": 0,
                                                              "models_dir": str(tmp_path / "none")})
    gateway = GatewayProcess(tmp_path, config).start()
    try:
        _wait_listening(config["web"]["port"])
        base = f"http://127.0.0.1:{config['web']['port']}"
        assert _get(base + "/healthz") == (200, {"status": "ok"})
        status, ready = _get(base + "/readyz")
        assert status == 503 and "models not loaded" in str(ready["problems"])
        assert _get(base + "/api/v1/studies")[1]["total"] == 0
    finally:
        assert gateway.stop() == 0


def test_serve_refuses_a_taken_web_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = gateway_config(tmp_path, free_port(), web={"port": taken.getsockname()[1]})
        gateway = GatewayProcess(tmp_path, config).start(wait=False)
        assert gateway.proc is not None and gateway.proc.wait(timeout=60) == 2
    assert "web.port" in gateway.log()
