"""Durable intake: kill -9 during intake loses nothing answered Success; a journal error
answers 0xA700 and leaves no file behind."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage  # type: ignore[attr-defined]

from config import load_settings
from dicom_node.errors import JournalError
from dicom_node.intake import Intake
from dicom_node.journal import Journal, NewInstance
from dicom_node.scp import start_scp
from dicom_node.spool import Spool
from dicom_node.status import StoreStatus
from tests.dicom_factory import make_chest
from tests.gateway_harness import (
    OWN_AE,
    GatewayProcess,
    echo,
    free_port,
    gateway_config,
    store,
)

pytestmark = pytest.mark.slow


def radiographs(count: int, size: int = 1024) -> list[Dataset]:
    study = generate_uid()
    base = make_chest(rows=size, columns=size, bits_stored=16, study_uid=study)
    out = []
    for _ in range(count):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out.append(ds)
    return out


def send_until_killed(port: int, datasets: list[Dataset], acked: list[str]) -> None:
    """Store on one association, appending each SOP Instance UID answered Success.

    One continuous association, so the kill lands inside a transfer or a
    handler rather than between associations.
    """
    ae = AE(ae_title="TESTSCU")
    ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=OWN_AE)
    for ds in datasets:
        try:
            rsp = assoc.send_c_store(ds)
        except (RuntimeError, OSError, ValueError):
            return
        if not rsp or rsp.get("Status") != StoreStatus.SUCCESS:
            return
        acked.append(ds.SOPInstanceUID)
    assoc.release()


def test_kill9_during_intake_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    sent = radiographs(40)
    by_uid = {ds.SOPInstanceUID: ds for ds in sent}
    proc = GatewayProcess(tmp_path, gateway_config(tmp_path, free_port())).start()
    try:
        acked: list[str] = []
        sender = threading.Thread(target=send_until_killed, args=(proc.port, sent, acked))
        sender.start()
        deadline = time.monotonic() + 60
        while len(acked) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill9()
        sender.join(30)
        assert 12 <= len(acked) < len(sent), "the kill must land in the middle of the intake"

        proc.start()
        stored = {uid: proc.spool / path  # recorded relative to storage.spool_dir (issue 22)
                  for uid, path in proc.rows("SELECT sop_instance_uid, path FROM instances")}
        for uid in acked:
            assert uid in stored, f"{uid} was answered Success but is not in the journal"
            back = pydicom.dcmread(stored[uid])
            assert back.PixelData == by_uid[uid].PixelData
        assert all(p.is_file() for p in stored.values())
        assert not list((proc.spool / "tmp").iterdir()), "half-written temp files left behind"
        assert set(proc.states().values()) == {"queued"}

        assert store(proc.port, sent) == [StoreStatus.SUCCESS] * len(sent)  # the PACS resends all
        assert proc.rows("SELECT COUNT(DISTINCT sop_instance_uid), COUNT(*) FROM instances") == [
            (len(sent), len(sent))]
        assert proc.stop() == 0
    finally:
        proc.ensure_stopped()


class FailingJournal(Journal):
    """A journal whose insert fails, as on a full or broken database disk."""

    def add_instance(self, new: NewInstance) -> bool:
        raise JournalError(f"journal {self.path}: disk I/O error (simulated)")


def test_journal_error_answers_out_of_resources_and_leaves_no_file(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(None, {}, [f"dicom.port={port}", "dicom.accept_any_caller=true",
                                        f"base_dir={tmp_path}"])
    spool = Spool(tmp_path / "spool", 0)
    spool.ensure()
    journal = FailingJournal(tmp_path / "journal.sqlite")
    server = start_scp(settings, Intake(spool, journal))
    try:
        assert store(port, [make_chest(sop_uid=generate_uid())]) == [
            StoreStatus.OUT_OF_RESOURCES]
        assert not list(spool.root.rglob("*.dcm"))
        assert echo(port) == 0
    finally:
        server.shutdown()
        journal.close()
