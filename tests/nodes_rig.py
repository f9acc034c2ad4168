"""Several ``cxr-gateway serve`` nodes on one database (issue 22): their studies and configs.

Shared by tests/test_several_nodes.py and benchmarks/nodes.py, which send the
same kind of workload to the same kind of nodes: chest CR studies of a few
256 x 256 images, every node with the shipped models, one spool and results
folder for all, Orthanc as the PACS and an MLLP listener as the RIS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.dicom_factory import make_chest
from tests.gateway_harness import GatewayProcess, free_port, gateway_config
from tests.mllp_listener import MllpListener
from tests.orthanc_peer import ORTHANC_AET, OrthancPeer
from tests.results_rig import FAST_DELIVERY, models_dir


def chest_studies(count: int, images: int, accession_prefix: str) -> list[list[Dataset]]:
    """``count`` studies of ``images`` chest CRs each (one series), accession numbered."""
    studies = []
    for n in range(count):
        study, series = generate_uid(), generate_uid()
        datasets = []
        for k in range(images):
            ds = make_chest(rows=256, columns=256, study_uid=study, series_uid=series,
                            sop_uid=generate_uid())
            ds.AccessionNumber, ds.InstanceNumber = f"{accession_prefix}{n:04d}", k + 1
            datasets.append(ds)
        studies.append(datasets)
    return studies


def node_process(folder: Path, shared: Path, name: str, database: str, orthanc: OrthancPeer,
                 listener: MllpListener, *, workers: int, quiet_period_s: float,
                 storage: dict[str, Any] | None = None,
                 dicom: dict[str, Any] | None = None) -> GatewayProcess:
    """One node (not started) in ``folder / name``: ``storage.node_name`` is ``name``, spool and
    results under ``shared``, results sent to ``orthanc`` and ``listener``."""
    config = gateway_config(
        folder / name, free_port(), dicom=dicom or {},
        storage={"database": database, "node_name": name, "spool_dir": str(shared / "spool"),
                 "results_dir": str(shared / "results"), **(storage or {})},
        inference={"workers": workers, "models_dir": str(models_dir()), "threads_per_model": 1},
        aggregation={"quiet_period_s": quiet_period_s, "poll_interval_s": 0.2},
        destinations={"dicom": [{"name": "pacs", "ae_title": ORTHANC_AET, "host": "127.0.0.1",
                                 "port": orthanc.dicom_port}],
                      "hl7": [{"name": "ris", "host": "127.0.0.1", "port": listener.port,
                               "receiving_application": "RIS", "receiving_facility": "HOSP"}]},
        delivery=FAST_DELIVERY)
    return GatewayProcess(folder / name, config)
