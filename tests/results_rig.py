"""The results end-to-end rig: Orthanc as the PACS, an MLLP listener as the RIS, the real gateway.

All three run on free loopback ports in one folder: Orthanc (its own
config, :mod:`tests.orthanc_peer`), ``cxr-gateway serve`` as a subprocess
(:mod:`tests.gateway_harness`) with Orthanc as its DICOM destination and the
listener (:mod:`tests.mllp_listener`) as its HL7 destination. Used by the
end-to-end tests and by ``benchmarks/e2e_latency.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conftest import require_shipped_models
from tests.dicom_factory import make_chest, write
from tests.gateway_harness import OWN_AE, GatewayProcess, free_port, gateway_config
from tests.mllp_listener import MllpListener
from tests.orthanc_peer import ORTHANC_AET, OrthancPeer

MODELS_ENV = "CXR_E2E_MODELS_DIR"
"""Developers may point the rig at other exported models; by default the shipped ``models/``."""

FAST_DELIVERY = {"retry_window_s": 3.0, "backoff_base_s": 0.5, "backoff_max_s": 2.0,
                 "probe_interval_s": 0.5,
                 "store_timeout_s": 5.0, "mllp_connect_timeout_s": 2.0,
                 "mllp_ack_timeout_s": 2.0, "poll_interval_s": 0.2}


def models_dir() -> Path:
    """Models the rig classifies with (skips the test while the shipped ones are absent)."""
    chosen = os.environ.get(MODELS_ENV)
    return Path(chosen) if chosen else require_shipped_models()


@dataclass
class Rig:
    orthanc: OrthancPeer
    gateway: GatewayProcess
    listener: MllpListener

    def stop(self) -> int:
        """Stop both; the gateway's exit code (0 after a clean SIGTERM shutdown)."""
        code = self.gateway.stop() if self.gateway.alive() else 0
        self.orthanc.stop(graceful=False)  # the test is over: no need to wait for its shutdown
        return code

    def outbox(self, where: str = "1") -> list[tuple[Any, ...]]:
        """Outbox rows (id, kind, channel, state, attempts, last_error), read straight from SQLite."""
        return self.gateway.rows("SELECT id, kind, channel, state, attempts, last_error FROM outbox"
                                 f" WHERE {where} ORDER BY id")


@contextmanager
def running_rig(folder: Path, **options: Any) -> Iterator[Rig]:
    """A started rig with its own MLLP listener, stopped afterwards; the gateway must exit 0.

    Skips, before anything starts, while the shipped models are absent.
    ``options`` go to :func:`start_rig`.
    """
    models_dir()
    with MllpListener() as listener:
        started = start_rig(folder, listener, **options)
        try:
            yield started
        finally:
            code = started.stop()
    assert code == 0, started.gateway.log()[-3000:]


def start_rig(folder: Path, listener: MllpListener, quiet_period_s: float = 1.0,
              models: Path | None = None, **sections: dict[str, Any]) -> Rig:
    """Start Orthanc and the gateway (the listener is already running); ``sections`` override."""
    port = free_port()
    orthanc = OrthancPeer(folder / "orthanc", OWN_AE, port).start()
    config = gateway_config(
        folder / "gateway", port,
        dicom={"allowed_callers": [{"ae_title": t, "host": "127.0.0.1"}
                                   for t in (ORTHANC_AET, "ECHOSCU", "TESTSCU")]},
        inference={"workers": 1, "models_dir": str(models or models_dir()), "threads_per_model": 1},
        aggregation={"quiet_period_s": quiet_period_s, "poll_interval_s": 0.1},
        destinations={"dicom": [{"name": "pacs", "ae_title": ORTHANC_AET, "host": "127.0.0.1",
                                 "port": orthanc.dicom_port}],
                      "hl7": [{"name": "ris", "host": "127.0.0.1", "port": listener.port,
                               "receiving_application": "RIS", "receiving_facility": "HOSP"}]},
        delivery=FAST_DELIVERY)
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    gateway = GatewayProcess(folder / "gateway", config)
    try:
        gateway.start()
    except BaseException:
        orthanc.stop()
        raise
    return Rig(orthanc, gateway, listener)


def chest_study(folder: Path, accession: str, images: int = 1,
                size: int = 512) -> tuple[str, list[Path]]:
    """A new CR chest study (patient name with ^ and accents); its UID and files."""
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(images):
        ds: Dataset = make_chest(rows=size, columns=size, study_uid=study,
                                 series_uid=series, sop_uid=generate_uid())
        ds.AccessionNumber, ds.InstanceNumber = accession, n + 1
        files.append(write(ds, folder / f"{accession}-{n}.dcm"))
    return study, files


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               poll_s: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not within {timeout} s")


def results_in_orthanc(orthanc: OrthancPeer, study_uid: str) -> dict[str, list[dict[str, Any]]]:
    """The study's instances in Orthanc by modality (``SR``, ``OT``/``SC``, ``CR``)."""
    by_modality: dict[str, list[dict[str, Any]]] = {}
    for instance in orthanc.instances_of_study(study_uid):
        series = orthanc.get(f"/series/{instance['ParentSeries']}")
        by_modality.setdefault(str(series["MainDicomTags"].get("Modality", "")), []).append(instance)
    return by_modality
