"""Issue 20 defect 4: slow senders must not lock legitimate callers out (running gateway).

Limits under test: ``dicom.max_associations`` 6, ``max_associations_per_host``
3, ``reserved_associations`` 2 (so 4 may be negotiating at once) and an
establishment deadline of 8 s. Each refusal must be logged and counted in
``/metrics``. The legitimate caller connects from 127.0.0.2 (Linux routes all
of 127.0.0.0/8 to loopback).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_harness import GatewayProcess, echo, free_port, gateway_config
from tests.hostile_peers import Dribbler, refused_counts, wait_web

pytestmark = pytest.mark.slow

LEGIT = "127.0.0.2"
DEADLINE_S = 8


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("admission")
    config = gateway_config(folder, free_port())
    dicom = config["dicom"]
    dicom["allowed_callers"].append({"ae_title": "ECHOSCU", "host": LEGIT})
    dicom.update(max_associations=6, max_associations_per_host=3, reserved_associations=2,
                 timeouts={"establishment": DEADLINE_S})
    proc = GatewayProcess(folder, config).start()
    wait_web(proc)
    yield proc
    assert proc.stop() == 0


def _dribblers(port: int, sources: list[str]) -> list[Dribbler]:
    peers = [Dribbler(port, source) for source in sources]
    for peer in peers:
        peer.start()
    return peers


def _close(peers: list[Dribbler]) -> None:
    for peer in peers:
        peer.close()


def _web_port(gateway: GatewayProcess) -> int:
    return int(gateway.config["web"]["port"])


def test_ten_dribblers_from_one_host_leave_room_for_a_caller(gateway: GatewayProcess) -> None:
    before = refused_counts(_web_port(gateway)).get("per_host_limit", 0)
    peers = _dribblers(gateway.port, ["127.0.0.1"] * 10)
    try:
        time.sleep(0.5)
        assert echo(gateway.port, source=LEGIT) == 0x0000
        assert sum(p.closed_by_gateway.is_set() for p in peers) >= 7
    finally:
        _close(peers)
    assert "association refused (per_host_limit) from 127.0.0.1" in gateway.log()
    assert refused_counts(_web_port(gateway))["per_host_limit"] >= before + 7


def test_a_dribbler_cannot_extend_the_establishment_deadline(gateway: GatewayProcess) -> None:
    peer = _dribblers(gateway.port, ["127.0.0.7"])[0]
    try:
        # one byte every 0.5 s would keep a per-byte idle timer alive for the 4000 s it announced
        assert peer.closed_by_gateway.wait(DEADLINE_S * 8), "the dribbler was never closed"
    finally:
        _close([peer])
    assert "association refused (establishment_deadline) from 127.0.0.7" in gateway.log()
    assert refused_counts(_web_port(gateway))["establishment_deadline"] >= 1


def test_full_pending_budget_evicts_the_oldest_for_a_new_caller(gateway: GatewayProcess) -> None:
    peers = _dribblers(gateway.port, [f"127.0.0.{n}" for n in (3, 4, 5, 6)])
    try:
        time.sleep(1.5)  # older than EVICT_MIN_AGE_S, well inside the deadline
        assert echo(gateway.port, source=LEGIT) == 0x0000
    finally:
        _close(peers)
    assert "association refused (pending_evicted) from 127.0.0.3" in gateway.log()
    assert refused_counts(_web_port(gateway))["pending_evicted"] >= 1


def test_policy_rejection_is_counted(gateway: GatewayProcess) -> None:
    before = refused_counts(_web_port(gateway)).get("policy", 0)
    assert echo(gateway.port, "STRANGER", source=LEGIT) is None
    assert "association rejected (CALLING_AE_NOT_RECOGNIZED): calling AE 'STRANGER'" \
        in gateway.log()
    assert refused_counts(_web_port(gateway))["policy"] == before + 1


def test_slots_are_free_again_after_the_abuse(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Six legitimate associations at once fit again once the dribblers are gone."""
    for _ in range(6):
        assert echo(gateway.port, source=LEGIT) == 0x0000
    assert echo(gateway.port, source="127.0.0.1") == 0x0000
