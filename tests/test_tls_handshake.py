"""Issue 20 defect 3: with TLS on, a silent TCP connection must not block other associations.

The handshake runs in the connection's own thread within
``dicom.timeouts.establishment``; failed and timed-out handshakes are logged
with the peer address and counted in ``/metrics``.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator

import pytest

from tests.gateway_harness import OWN_AE, GatewayProcess, dcmtk_tool, free_port, gateway_config, run_dcmtk
from tests.hostile_peers import refused_counts, silent, wait_closed, wait_web
from tests.test_dicom_node_tls import make_pki

pytestmark = pytest.mark.slow

DEADLINE_S = 5


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if shutil.which("openssl") is None or dcmtk_tool("echoscu") is None:
        pytest.skip("openssl and DCMTK (Debian packages openssl, dcmtk) are needed")
    folder = tmp_path_factory.mktemp("tls-handshake")
    pki = make_pki(folder)
    config = gateway_config(folder, free_port())
    config["dicom"]["tls"] = {"enabled": True, "cert_file": str(pki / "server.crt"),
                              "key_file": str(pki / "server.key"), "ca_file": str(pki / "ca.crt")}
    config["dicom"]["timeouts"] = {"establishment": DEADLINE_S}
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    client.load_cert_chain(pki / "client.crt", pki / "client.key")
    proc = GatewayProcess(folder, config, client_tls=(client, "localhost")).start()
    wait_web(proc)
    yield proc
    assert proc.stop() == 0


def _echoscu_tls(proc: GatewayProcess) -> tuple[int, str]:
    pki = proc.folder
    done = run_dcmtk(["echoscu", "+tls", str(pki / "client.key"), str(pki / "client.crt"),
                      "+cf", str(pki / "ca.crt"), "-to", "30", "-aec", OWN_AE, "localhost",
                      str(proc.port)], timeout=90)
    return done.returncode, done.stdout + done.stderr


def test_silent_connection_does_not_block_a_tls_echo(tls_gateway: GatewayProcess) -> None:
    quiet = silent(tls_gateway.port)
    try:
        code, output = _echoscu_tls(tls_gateway)
        assert code == 0, output
        assert wait_closed(quiet, DEADLINE_S * 8), "the silent connection was never closed"
    finally:
        quiet.close()
    assert ("association refused (establishment_deadline) from 127.0.0.1: no association "
            f"within {DEADLINE_S} s") in tls_gateway.log()
    assert "still in phase TLS handshake" in tls_gateway.log()
    web_port = int(tls_gateway.config["web"]["port"])
    assert refused_counts(web_port)["establishment_deadline"] >= 1


def test_plain_dicom_on_the_tls_port_is_logged(tls_gateway: GatewayProcess) -> None:
    web_port = int(tls_gateway.config["web"]["port"])
    before = refused_counts(web_port)["tls_handshake"]
    done = run_dcmtk(["echoscu", "-to", "10", "-aec", OWN_AE, "localhost",
                      str(tls_gateway.port)], timeout=60)
    assert done.returncode != 0
    assert "association refused (tls_handshake) from 127.0.0.1: TLS handshake failed" \
        in tls_gateway.log()
    assert refused_counts(web_port)["tls_handshake"] == before + 1
