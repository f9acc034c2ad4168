"""A node on PostgreSQL that loses its database (issue 22 item 4), against a real serve process.

While the database refuses connections the node answers C-STORE 0xA700 (out
of resources) instead of Success, ``/readyz`` answers 503 naming the journal,
and C-ECHO still works; once the database is back the node stores again.
``cxr-gateway status`` lists the node by name with its heartbeat.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from pydicom.uid import generate_uid

from cxr_gateway.cli import main
from dicom_node.status import StoreStatus
from tests.conftest import PG_TEMPLATE
from tests.dicom_factory import make_chest
from tests.gateway_harness import GatewayProcess, echo, free_port, gateway_config, store
from tests.postgres_cluster import Cluster
from tests.results_rig import wait_until

pytestmark = pytest.mark.slow

NODE = "node-under-test"


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _connections(cluster: Cluster, database: str, allowed: bool) -> None:
    """Let clients in again, or shut them out (and end the sessions already open)."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}")  # type: ignore[arg-type]
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                         (database,))


def test_lost_database_means_0xA700_not_success(postgres: Cluster, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres.new_database(template=PG_TEMPLATE)
    name = url.rsplit("/", 1)[1]
    config = gateway_config(tmp_path, free_port(), storage={"database": url, "node_name": NODE,
                                                                  "lease_s": 3.0},
                            web={"port": free_port()})
    gateway = GatewayProcess(tmp_path, config)
    gateway.start()
    web_port = int(config["web"]["port"])
    try:
        assert store(gateway.port, [make_chest(sop_uid=generate_uid())]) == [StoreStatus.SUCCESS]
        _connections(postgres, name, allowed=False)
        assert store(gateway.port, [make_chest(sop_uid=generate_uid())]) == [StoreStatus.OUT_OF_RESOURCES]
        assert echo(gateway.port) == 0, "the node still answers C-ECHO"
        code, body = _readyz(web_port)
        assert code == 503 and any("journal not writable" in str(p) for p in body["problems"])  # type: ignore[attr-defined]
        _connections(postgres, name, allowed=True)
        assert store(gateway.port, [make_chest(sop_uid=generate_uid())]) == [StoreStatus.SUCCESS]
        wait_until(lambda: not any("journal" in str(p) for p in _readyz(web_port)[1]["problems"]),  # type: ignore[attr-defined]
                   30, "the journal writable again")
        def status() -> str:
            assert main(["status", "--config", str(gateway.config_path)]) == 0
            return capsys.readouterr().out

        out = wait_until(lambda: (lambda o: o if "alive" in o else None)(status()), 30,
                         "a heartbeat after the outage")
        assert NODE in out and "queue: queued 2" in out
    finally:
        _connections(postgres, name, allowed=True)
        gateway.ensure_stopped()
