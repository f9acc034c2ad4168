"""DICOM over TLS with DCMTK peers: certificates made by ``openssl`` for each run."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.dicom_factory import make_chest, write
from tests.gateway_harness import (
    OWN_AE,
    GatewayProcess,
    dcmtk_tool,
    free_port,
    gateway_config,
    run_dcmtk,
)

pytestmark = pytest.mark.slow


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> Path:
    """A throw-away CA, a server certificate for localhost and a client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=CXR test CA", cwd=folder)
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:storescu")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=folder)
    return folder


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if shutil.which("openssl") is None or dcmtk_tool("echoscu") is None:
        pytest.skip("openssl and DCMTK (Debian packages openssl, dcmtk) are needed")
    folder = tmp_path_factory.mktemp("tls")
    pki = make_pki(folder)
    tls = {"enabled": True, "cert_file": str(pki / "server.crt"),
           "key_file": str(pki / "server.key"), "ca_file": str(pki / "ca.crt"),
           "require_client_cert": True}
    config = gateway_config(folder, free_port())
    config["dicom"]["tls"] = tls
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.crt"))
    client.load_cert_chain(pki / "client.crt", pki / "client.key")
    proc = GatewayProcess(folder, config, client_tls=(client, "localhost")).start()
    yield proc
    assert proc.stop() == 0


def _client_tls(proc: GatewayProcess) -> list[str]:
    pki = proc.folder
    return ["+tls", str(pki / "client.key"), str(pki / "client.crt"), "+cf", str(pki / "ca.crt")]


def test_echoscu_over_tls(tls_gateway: GatewayProcess) -> None:
    done = run_dcmtk(["echoscu", *_client_tls(tls_gateway), "-aec", OWN_AE, "localhost",
                      str(tls_gateway.port)])
    assert done.returncode == 0, done.stderr


def test_storescu_over_tls_stores(tls_gateway: GatewayProcess, tmp_path: Path) -> None:
    ds = make_chest(rows=256, columns=256, sop_uid=generate_uid())
    path = write(ds, tmp_path / "cr.dcm")
    done = run_dcmtk(["storescu", *_client_tls(tls_gateway), "-aec", OWN_AE, "localhost",
                      str(tls_gateway.port), str(path)])
    assert done.returncode == 0, done.stderr
    assert tls_gateway.states()[ds.SOPInstanceUID] == "queued"


@pytest.mark.parametrize("mode", ["plain TCP", "TLS without client certificate"])
def test_peer_without_client_certificate_is_refused(tls_gateway: GatewayProcess,
                                                    mode: str) -> None:
    tls = [] if mode == "plain TCP" else ["+tla", "-ic"]
    done = run_dcmtk(["echoscu", *tls, "-to", "5", "-aec", OWN_AE, "localhost",
                      str(tls_gateway.port)], timeout=60)
    assert done.returncode != 0
