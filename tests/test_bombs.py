"""Issue 20, defect 6: bombs against the running gateway, with its peak memory measured.

Each bomb is a small file announcing a huge content: a 1 GB Deflated DICOM of
about 1 MB, an instance over ``dicom.max_instance_mb``, an RLE image
announcing 90 Mpixel in 1.4 MB, a 30000 x 30000 PNG of 0.9 MB, and a chunked
upload that never ends. Each gets its defined answer (0xA700, skipped with the
reason, 413, 422) and the gateway process's peak RSS (``VmHWM``, reset before
the bomb) stays within :data:`MEMORY_BOUND_MB` of its resident size before it:
a memory bound, not a timing.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage  # type: ignore[attr-defined]

from dicom_node.status import StoreStatus
from tests.bomb_factory import (
    png_bomb,
    reset_peak,
    status_kb,
    store_file_as_is,
    write_big_native,
    write_deflate_bomb,
    write_rle_pixel_bomb,
)
from tests.conftest import require_shipped_models
from tests.dicom_factory import make_chest
from tests.gateway_harness import OWN_AE, GatewayProcess, echo, free_port, gateway_config, store

MEMORY_BOUND_MB = 600
UPLOAD_PATH = "/api/v1/predict"
BOUNDARY = "cxr-bomb-boundary"


class Measured:
    """A running gateway whose peak RSS is measured around each bomb."""

    def __init__(self, proc: GatewayProcess) -> None:
        self.proc = proc
        assert proc.proc is not None
        self.pid = proc.proc.pid
        self.start_kb = 0

    def reset(self) -> None:
        self.start_kb = reset_peak(self.pid)

    def growth_mb(self) -> float:
        return (status_kb(self.pid, "VmHWM") - self.start_kb) / 1024

    @property
    def web_port(self) -> int:
        return int(self.proc.config["web"]["port"])


def _gateway(folder: Path, **sections: dict[str, Any]) -> Iterator[Measured]:
    proc = GatewayProcess(folder, gateway_config(folder, free_port(), **sections)).start()
    try:
        yield Measured(proc)
    finally:
        proc.stop()
        proc.ensure_stopped()


@pytest.fixture(scope="module")
def intake_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measured]:
    """Workers off, web app without models: the C-STORE limits alone."""
    yield from _gateway(tmp_path_factory.mktemp("bomb-intake"),
                        dicom={"max_instance_mb": 8}, web={"port": free_port(), "max_upload_mb": 2})


@pytest.fixture(scope="module")
def classifying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Measured]:
    """One worker and the web app with the shipped models."""
    models = require_shipped_models()
    yield from _gateway(tmp_path_factory.mktemp("bomb-classify"),
                        inference={"workers": 1, "threads_per_model": 1, "models_dir": str(models)})


@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of 16-bit zeros (32768 x 16384), Deflated: about 1 MB."""
    return write_deflate_bomb(tmp_path_factory.mktemp("bombs") / "deflate.dcm", 32768, 16384)


def test_deflate_bomb_by_c_store_is_refused_and_memory_stays_bounded(
        intake_only: Measured, deflate_bomb: Path) -> None:
    assert deflate_bomb.stat().st_size < 2 * 2**20
    intake_only.reset()
    status = store_file_as_is(intake_only.proc.port, deflate_bomb, DeflatedExplicitVRLittleEndian)
    assert status == StoreStatus.OUT_OF_RESOURCES
    assert intake_only.growth_mb() < MEMORY_BOUND_MB
    assert "dicom.max_inflated_mb" in intake_only.proc.log()
    assert echo(intake_only.proc.port) == 0
    assert intake_only.proc.rows("SELECT COUNT(*) FROM instances") == [(0,)]


def test_instance_over_max_instance_mb_is_refused_while_it_streams(
        intake_only: Measured, tmp_path: Path) -> None:
    big = write_big_native(tmp_path / "big.dcm", 10240, 10240)  # 200 MB, limit 8 MB
    intake_only.reset()
    status = store_file_as_is(intake_only.proc.port, big, ExplicitVRLittleEndian)
    assert status == StoreStatus.OUT_OF_RESOURCES
    assert intake_only.growth_mb() < 100, "the excess over the limit must not be kept"
    assert "dicom.max_instance_mb" in intake_only.proc.log()
    assert not list(intake_only.proc.spool.rglob("*.dcm"))
    assert store(intake_only.proc.port, [make_chest()]) == [StoreStatus.SUCCESS]


def test_pdu_announcing_a_gigabyte_is_refused_before_it_is_read(intake_only: Measured) -> None:
    """One P-DATA-TF whose length field says 1 GB: the gateway closes instead of buffering it."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", intake_only.proc.port, ae_title=OWN_AE)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    intake_only.reset()
    sent = 0
    try:
        raw.sendall(b"\x04\x00" + struct.pack(">I", 2**30))
        block = bytes(2**20)
        while sent < 2**30:
            raw.sendall(block)
            sent += len(block)
    except OSError:
        pass  # the gateway closed the connection: what is expected
    finally:
        assoc.abort()
    assert sent < 256 * 2**20, f"{sent} bytes were taken before the connection closed"
    assert intake_only.growth_mb() < 100
    assert "more than the 1048576 accepted" in intake_only.proc.log()
    assert echo(intake_only.proc.port) == 0


def test_chunked_upload_is_cut_off_at_the_limit_with_413(intake_only: Measured) -> None:
    """No Content-Length: the body is counted as it streams and the answer comes at the limit."""
    intake_only.reset()
    status, sent = _post_chunked_until_answered(intake_only.web_port, total=2**30)
    assert status == 413
    assert sent < 64 * 2**20, f"{sent} bytes were taken before the answer (limit 2 MB)"
    assert intake_only.growth_mb() < MEMORY_BOUND_MB


def test_declared_oversize_upload_is_refused_before_reading(intake_only: Measured) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", intake_only.web_port, timeout=60)
    conn.putrequest("POST", UPLOAD_PATH)
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(2**30))
    conn.endheaders()
    assert conn.getresponse().status == 413


def test_pixel_bomb_by_c_store_is_skipped_before_decoding(classifying: Measured,
                                                          tmp_path: Path) -> None:
    # 90 Mpixel in ~1.4 MB: within the quality gate's 10000 a side, over inference.max_pixels
    bomb = write_rle_pixel_bomb(tmp_path / "rle.dcm", 9500, 9500)
    classifying.reset()
    assert store_file_as_is(classifying.proc.port, bomb, RLELossless) == StoreStatus.SUCCESS
    classifying.proc.wait_for("SELECT COUNT(*) FROM instances WHERE state = 'skipped'", 1,
                              timeout=120)
    reason = classifying.proc.rows("SELECT reason FROM instances")[0][0]
    assert "inference.max_pixels" in reason
    assert classifying.growth_mb() < MEMORY_BOUND_MB


def test_png_bomb_upload_is_refused_422_before_decoding(classifying: Measured) -> None:
    bomb = png_bomb(30000, 30000)  # 900 Mpixel in < 1 MB
    assert len(bomb) < 2**20
    classifying.reset()
    status, body = _post_file(classifying.web_port, bomb, "bomb.png")
    assert status == 422, body
    assert "inference.max_pixels" in body
    assert classifying.growth_mb() < MEMORY_BOUND_MB


def test_deflate_bomb_upload_is_refused_413(classifying: Measured, deflate_bomb: Path) -> None:
    classifying.reset()
    status, body = _post_file(classifying.web_port, deflate_bomb.read_bytes(), "bomb.dcm")
    assert status == 413, body
    assert "dicom.max_inflated_mb" in body
    assert classifying.growth_mb() < MEMORY_BOUND_MB


def _multipart_head(name: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            "\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


def _post_file(port: int, data: bytes, name: str) -> tuple[int, str]:
    body = _multipart_head(name) + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", UPLOAD_PATH, body=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    conn.close()
    detail = json.loads(text).get("detail", text) if text.startswith("{") else text
    return response.status, str(detail)


def _post_chunked_until_answered(port: int, total: int) -> tuple[int, int]:
    """Send a chunked multipart body of up to ``total`` bytes; stop when an answer arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall((f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        sent = 0
        block = _multipart_head("endless.dcm") + bytes(2**20)
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            except OSError:
                break  # the server answered and closed while we were still sending
            sent += len(block)
            block = bytes(2**20)
        answer = sock.recv(4096).decode(errors="replace")
    return int(answer.split()[1]), sent
