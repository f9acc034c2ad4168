"""Run ``cxr-gateway serve`` as a real subprocess on a free port, and talk to it.

Used by the DICOM node tests and the ingest benchmark: a temporary YAML
config, start/stop/kill -9, readiness by C-ECHO, a pynetdicom C-STORE client
that returns each status, and direct read access to the journal.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    Verification,
)

GATEWAY = Path(sys.executable).with_name("cxr-gateway")
OWN_AE = "CXRGATEWAY"
START_TIMEOUT_S = 60.0
_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a gateway running after the test run, even when a test failed midway."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_config(folder: Path, port: int, **sections: dict[str, Any]) -> dict[str, Any]:
    """A test configuration; ``sections`` are merged over each default section."""
    config: dict[str, Any] = {
        "base_dir": str(folder),
        "dicom": {"ae_title": OWN_AE, "port": port, "bind_address": "127.0.0.1",
                  "allowed_callers": [{"ae_title": t, "host": "127.0.0.1"}
                                      for t in ("STORESCU", "ECHOSCU", "TESTSCU")]},
        "storage": {"spool_dir": "spool", "database": "journal.sqlite", "min_free_mb": 1},
        "inference": {"workers": 0},
        "aggregation": {"quiet_period_s": 1.0, "poll_interval_s": 0.2},
        "web": {"port": free_port()},  # issue 5: serve also starts the web app; never 8080 in tests
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


class GatewayProcess:
    """One ``cxr-gateway serve`` subprocess with its own folder and config."""

    def __init__(self, folder: Path, config: dict[str, Any], client_tls: Any = None) -> None:
        self.folder = folder
        self.client_tls = client_tls  # pynetdicom tls_args for the readiness C-ECHO
        self.config = config
        self.port = int(config["dicom"]["port"])
        self.config_path = folder / "gateway.yaml"
        self.log_path = folder / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def spool(self) -> Path:
        return self.folder / "spool"

    @property
    def database(self) -> Path:
        return self.folder / "journal.sqlite"

    def start(self, wait: bool = True) -> GatewayProcess:
        log = self.log_path.open("ab")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen([str(GATEWAY), "serve", "--config", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        _STARTED.append(self.proc)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            if "listening on" in self.log() and echo(self.port, tls=self.client_tls) == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"gateway not ready after {START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        """Kill the process if a failed test left it running (for ``finally`` blocks)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the journal directly (independent of the code under test)."""
        with sqlite3.connect(self.database, timeout=10) as db:
            return db.execute(sql, args).fetchall()

    def states(self) -> dict[str, str]:
        return dict(self.rows("SELECT sop_instance_uid, state FROM instances"))

    def wait_for(self, sql: str, expected: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.rows(sql)[0][0]
            if value == expected:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{sql!r} gave {value!r}, expected {expected!r}\n{self.log()[-3000:]}")


def echo(port: int, calling: str = "ECHOSCU", called: str = OWN_AE, tls: Any = None,
         source: str | None = None) -> int | None:
    """C-ECHO status, or ``None`` when no association was established; from the local
    address ``source`` when given (the admission tests' distinct hosts, 127.0.0.x)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls,
                         bind_address=(source or "", 0))
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def store(port: int, items: Iterable[Dataset | Path], calling: str = "TESTSCU",
          transfer_syntax: str | None = None,
          timeout_s: float | None = None) -> list[int | None]:
    """C-STORE every item on one association; each status (``None``: no response).

    Proposes the common storage SOP classes in the default uncompressed
    syntaxes, or CR/DX/SC in ``transfer_syntax`` only. ``timeout_s``: DIMSE and
    network timeouts (pynetdicom's defaults otherwise).
    """
    ae = AE(ae_title=calling)
    if timeout_s is not None:
        ae.dimse_timeout = ae.network_timeout = timeout_s
    if transfer_syntax is None:
        ae.requested_contexts = StoragePresentationContexts[:120]
    else:
        for sop_class in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                          SecondaryCaptureImageStorage):
            ae.add_requested_context(sop_class, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title=OWN_AE)
    if not assoc.is_established:
        raise ConnectionError(f"association with 127.0.0.1:{port} not established")
    statuses: list[int | None] = []
    try:
        for item in items:
            rsp = assoc.send_c_store(item)
            statuses.append(int(rsp.Status) if rsp and "Status" in rsp else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def dcmtk_tool(name: str) -> str | None:
    """DCMTK's ``name`` on PATH (None when DCMTK is not installed), skipping the virtual
    environment's bin folder: pynetdicom 3.0.4 installs its own ``storescu``, ``echoscu``, ...
    there, with other options."""
    own = (Path(sys.prefix) / "bin").resolve()
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and Path(d).resolve() != own)
    return shutil.which(name, path=path)


def run_dcmtk(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk_tool(args[0]) or args[0], *args[1:]], capture_output=True,
                          text=True, timeout=timeout)


STORESCU_PROPOSAL = {
    ExplicitVRLittleEndian: "-xe", ImplicitVRLittleEndian: "-xi", ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd", JPEGBaseline8Bit: "-xy", JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs", JPEGLSLossless: "-xt", JPEGLSNearLossless: "-xu",
    JPEG2000Lossless: "-xv", JPEG2000: "-xw", RLELossless: "-xr",
}
"""storescu option that proposes each syntax (JPEG Lossless process 14 has none: pynetdicom)."""


def storescu(port: int, files: list[Path], *options: str) -> str:
    """Run DCMTK storescu; its output ending with ``rc=N``."""
    done = run_dcmtk(["storescu", "-aec", OWN_AE, *options, "127.0.0.1", str(port),
                      *map(str, files)])
    return done.stdout + done.stderr + f"\nrc={done.returncode}"


def storescu_as_encoded(port: int, path: Path) -> str:
    """storescu one file, proposing only its own transfer syntax (no conversion)."""
    meta = dcmread(path, force=True, stop_before_pixels=True).get("file_meta")
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    option = STORESCU_PROPOSAL.get(syntax) if syntax is not None else None
    return storescu(port, [path], *(["-R", option] if option else []))
