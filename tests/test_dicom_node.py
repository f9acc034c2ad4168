"""The DICOM node against real peers: ``cxr-gateway serve`` as a subprocess, DCMTK tools.

Intake only (``inference.workers: 0``), so these tests need no models; the
classification path is in ``test_dicom_node_e2e.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    JPEGBaseline8Bit,
    JPEGLossless,
    generate_uid,
)

from cxr_gateway.cli import main
from dicom_node import cli
from dicom_node.status import StoreStatus
from inference.pixels import dicom_to_gray
from tests.conftest import require_shared_data
from tests.dicom_factory import make_chest, transcode, write
from tests.gateway_harness import (
    OWN_AE,
    STORESCU_PROPOSAL,
    GatewayProcess,
    dcmtk_tool,
    echo,
    free_port,
    gateway_config,
    run_dcmtk,
    store,
    storescu,
    storescu_as_encoded,
)

pytestmark = pytest.mark.slow

def _need_dcmtk() -> None:
    if dcmtk_tool("storescu") is None:
        pytest.skip("DCMTK (Debian package dcmtk) is not installed")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    _need_dcmtk()
    folder = tmp_path_factory.mktemp("gateway")
    proc = GatewayProcess(folder, gateway_config(folder, free_port())).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def chest(**changes: Any) -> Dataset:
    """A small synthetic CR with fresh UIDs."""
    return make_chest(rows=256, columns=256, sop_uid=generate_uid(), study_uid=generate_uid(),
                      **changes)


def spooled(gateway: GatewayProcess, sop_uid: str) -> list[Path]:
    return sorted(p for p in gateway.spool.glob("2*/*.dcm") if p.name.startswith(sop_uid))


def test_echoscu_is_answered(gateway: GatewayProcess) -> None:
    done = run_dcmtk(["echoscu", "-aec", OWN_AE, "127.0.0.1", str(gateway.port)])
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("calling", "called", "reason"), [
    ("INTRUDER", OWN_AE, "CALLING_AE_NOT_RECOGNIZED"),
    ("ECHOSCU", "SOMEONEELSE", "CALLED_AE_NOT_RECOGNIZED"),
])
def test_unknown_peer_is_rejected_and_logged(gateway: GatewayProcess, calling: str, called: str,
                                             reason: str) -> None:
    done = run_dcmtk(["echoscu", "-aet", calling, "-aec", called, "127.0.0.1",
                      str(gateway.port)])
    assert done.returncode != 0
    assert "Association Rejected" in done.stderr
    assert f"association rejected ({reason}): calling AE {calling!r}" in gateway.log()


def test_storescu_cr_and_dx_are_spooled_and_journaled(gateway: GatewayProcess,
                                                      tmp_path: Path) -> None:
    sent = [chest(modality="CR"), chest(modality="DX", bits_stored=14)]
    files = [write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(sent)]
    out = storescu(gateway.port, files)
    assert "rc=0" in out, out
    for ds in sent:
        row = gateway.rows("SELECT state, sop_class_uid, study_uid, calling_ae FROM instances "
                           "WHERE sop_instance_uid = ?", (ds.SOPInstanceUID,))
        assert row == [("queued", ds.SOPClassUID, ds.StudyInstanceUID, "STORESCU")]
        [path] = spooled(gateway, ds.SOPInstanceUID)
        back = pydicom.dcmread(path)
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.PixelData == ds.PixelData
        assert back.PatientName == ds.PatientName


@pytest.mark.parametrize("syntax", list(STORESCU_PROPOSAL), ids=lambda s: UID(s).keyword)
def test_every_transfer_syntax_is_accepted_as_sent(gateway: GatewayProcess, tmp_path: Path,
                                                   syntax: UID) -> None:
    bits = 8 if syntax == JPEGBaseline8Bit else 12
    src = write(chest(bits_stored=bits), tmp_path / "src.dcm")
    encoded = transcode(src, syntax, tmp_path / "encoded.dcm")
    uid = pydicom.dcmread(encoded).SOPInstanceUID
    out = storescu_as_encoded(gateway.port, encoded)
    assert "rc=0" in out, out
    [path] = spooled(gateway, uid)
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert dicom_to_gray(back).shape == (256, 256)


def test_jpeg_lossless_process14_is_accepted(gateway: GatewayProcess, tmp_path: Path) -> None:
    encoded = transcode(write(chest(), tmp_path / "src.dcm"), JPEGLossless, tmp_path / "jl.dcm")
    assert store(gateway.port, [encoded], transfer_syntax=JPEGLossless) == [StoreStatus.SUCCESS]
    [path] = spooled(gateway, pydicom.dcmread(encoded).SOPInstanceUID)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEGLossless


def test_duplicate_is_answered_success_and_stored_once(gateway: GatewayProcess) -> None:
    ds = chest()
    assert store(gateway.port, [ds]) == [StoreStatus.SUCCESS]
    assert store(gateway.port, [ds, ds]) == [StoreStatus.SUCCESS, StoreStatus.SUCCESS]
    assert gateway.rows("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?",
                        (ds.SOPInstanceUID,)) == [(1,)]
    assert gateway.rows("SELECT COUNT(*) FROM jobs j JOIN instances i ON i.id = j.instance_id "
                        "WHERE i.sop_instance_uid = ?", (ds.SOPInstanceUID,)) == [(1,)]
    assert len(spooled(gateway, ds.SOPInstanceUID)) == 1


def test_dataset_without_study_uid_is_refused_and_server_lives(gateway: GatewayProcess) -> None:
    ds = chest()
    del ds.StudyInstanceUID
    assert store(gateway.port, [ds]) == [StoreStatus.CANNOT_UNDERSTAND]
    assert not spooled(gateway, ds.SOPInstanceUID)
    assert echo(gateway.port) == 0


def test_undecodable_dataset_is_refused_and_server_lives(
        gateway: GatewayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)  # send raw bytes
    good = write(chest(), tmp_path / "good.dcm")
    raw = good.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\x7f" + b"\x01" * 64)
    assert store(gateway.port, [broken]) == [StoreStatus.CANNOT_UNDERSTAND]
    assert echo(gateway.port) == 0
    assert store(gateway.port, [chest()]) == [StoreStatus.SUCCESS]


def test_real_samples_are_accepted(gateway: GatewayProcess) -> None:
    folder = require_shared_data("dicom")
    files = sorted(folder.glob("*/*.dcm"))
    for f in files:
        out = storescu_as_encoded(gateway.port, f)
        assert "rc=0" in out, out
    for f in files:
        uid = pydicom.dcmread(f, force=True).SOPInstanceUID
        assert gateway.rows("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?",
                            (uid,)) == [(1,)], f.name


def test_full_spool_answers_out_of_resources(tmp_path: Path) -> None:
    _need_dcmtk()
    huge = shutil.disk_usage(tmp_path).free // 2**20 + 1024
    proc = GatewayProcess(tmp_path, gateway_config(tmp_path, free_port(),
                                                   storage={"min_free_mb": huge})).start()
    try:
        assert store(proc.port, [chest()]) == [StoreStatus.OUT_OF_RESOURCES]
        assert proc.rows("SELECT COUNT(*) FROM instances") == [(0,)]
        assert not list(proc.spool.rglob("*.dcm"))
        assert echo(proc.port) == 0
        assert "0xA700 out of resources" in proc.log()
    finally:
        assert proc.stop() == 0


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_echo_command_by_destination_name(gateway: GatewayProcess, tmp_path: Path) -> None:
    config = tmp_path / "echo.yaml"
    config.write_text(yaml.safe_dump({
        "dicom": {"ae_title": "ECHOSCU", "accept_any_caller": True},
        "destinations": {"dicom": [
            {"name": "gateway", "ae_title": OWN_AE, "host": "127.0.0.1", "port": gateway.port},
            {"name": "wrong-ae", "ae_title": "NOTTHEGW", "host": "127.0.0.1",
             "port": gateway.port}]}}))
    assert _cli(["echo", "gateway", "--config", str(config)]) == 0
    assert _cli(["echo", "wrong-ae", "--config", str(config)]) == 1
    assert _cli(["echo", "absent", "--config", str(config)]) == 2
    assert _cli(["echo", "--host", "127.0.0.1", "--port", str(gateway.port), "--aet", OWN_AE,
                 "--config", str(config)]) == 0


def test_status_command_shows_counts_and_recent(gateway: GatewayProcess,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ds = chest()
    assert store(gateway.port, [ds]) == [StoreStatus.SUCCESS]
    assert main(["status", "--config", str(gateway.config_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["queued"] >= 1
    assert ds.SOPInstanceUID in [r["sop_instance_uid"] for r in report["recent"]]
    assert main(["status", "--config", str(gateway.config_path)]) == 0
    assert "queue: queued" in capsys.readouterr().out


def test_port_in_use_stops_startup_with_the_key_named(gateway: GatewayProcess,
                                                      tmp_path: Path) -> None:
    second = GatewayProcess(tmp_path, gateway_config(tmp_path, gateway.port)).start(wait=False)
    assert second.proc is not None and second.proc.wait(120) == 2
    assert "set dicom.bind_address/dicom.port to a free local address" in second.log()
    assert echo(gateway.port) == 0
