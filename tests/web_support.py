"""Fixtures for the web console and API tests: models, a filled journal and outbox, the app.

Models: the shipped ``models/`` when both classifiers are there, else two
throwaway tiny models trained on the synthetic set (as in
``tests/test_training_pipeline.py``). The journal is filled by the real
worker path (quality gate, pixel decoding, both classifiers); the outbox rows
are queued and failed through the outbox's own API.

The fixtures ``models``, ``engine`` and ``client`` are shared by importing them
into a test module (named in its ``__all__``); ``client`` needs the module's
own ``filled`` fixture.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydicom.dataset import Dataset

from config.schema import Settings
from delivery.outbox import Channel, DeliveryPolicy, Kind, NewDelivery, Outbox
from dicom_node.journal import Journal, NewInstance
from dicom_node.service import engine_pipeline
from dicom_node.worker import Pipeline, Worker
from inference.engine import InferenceEngine
from tests.conftest import MODELS_DIR
from tests.dicom_factory import make_chest, make_nm, write
from tests.synthetic_cxr import phantom, write_dataset
from web import create_app

TOKEN = "s3cret-token-for-tests-0123"
TINY = ["--arch", "compact", "--size", "64", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "8", "--patience", "2", "--cache", ""]
STUDY_A = "1.2.826.0.1.3680043.8.498.7001"  # two chest images, classified, a dead letter
STUDY_B = "1.2.826.0.1.3680043.8.498.7002"  # one chest image, classified, delivered
STUDY_NM = "1.2.826.0.1.3680043.8.498.7003"  # nuclear medicine: skipped
STUDY_Q = "1.2.826.0.1.3680043.8.498.7004"  # received, still queued
THRESHOLDS: Final = {"tb-vs-normal": 0.5}
LOCAL: Final = ("127.0.0.1", 50123)  # the TestClient's peer: localhost, let in without the token


_TRAINED: dict[str, Path] = {}  # tiny models trained once per test session


def models_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped models, or two tiny ones trained now (a minute on two cores)."""
    from inference.registry import missing_models

    if missing_models(MODELS_DIR) is None:
        return MODELS_DIR
    if "tiny" not in _TRAINED:
        _TRAINED["tiny"] = _train_tiny(tmp_path_factory)
    return _TRAINED["tiny"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(models: Path) -> InferenceEngine:
    return InferenceEngine.from_models_dir(models, THRESHOLDS)


@pytest.fixture
def client(filled: Filled, engine: InferenceEngine) -> Iterator[TestClient]:
    """The app over the module's ``filled`` journal and outbox, from localhost."""
    app = create_app(filled.settings, engine, filled.journal, outbox=filled.outbox,
                     registry=CollectorRegistry())
    with TestClient(app, client=LOCAL) as c:
        yield c


def _train_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxr_gateway.cli import main

    root = tmp_path_factory.mktemp("web-models")
    data = write_dataset(root / "data", labels=("tb", "normal", "pneumonia"), corrupt=0)
    for task in ("tb-vs-normal", "pneumonia-vs-tb"):
        assert main(["train", "--task", task, "--data", str(data), "--out",
                     str(root / "models" / task), *TINY]) == 0
    return root / "models"


def settings_for(folder: Path, models: Path, **web: Any) -> Settings:
    return Settings.model_validate({
        "base_dir": str(folder),
        "dicom": {"accept_any_caller": True},
        "storage": {"spool_dir": "spool", "database": "journal.sqlite", "min_free_mb": 1,
                    "node_name": "web-test-node"},
        "inference": {"models_dir": str(models), "thresholds": THRESHOLDS},
        "destinations": {"dicom": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                    "port": 11199}]},
        "web": web,
    })


def real_pipeline(engine: InferenceEngine) -> Pipeline:
    return engine_pipeline(engine, heatmap=True)


def receive(journal: Journal, spool: Path, ds: Dataset) -> None:
    path = write(ds, spool / f"{ds.SOPInstanceUID}.dcm")
    assert journal.add_instance(NewInstance(str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                                            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                            "STORESCU", path))


def classify_all(journal: Journal, engine: InferenceEngine) -> None:
    worker = Worker("web-test", journal, real_pipeline(engine), 3, threading.Event())
    while (job := journal.claim_job(worker.name)) is not None:
        worker.process(job)


@dataclass
class Filled:
    settings: Settings
    journal: Journal
    outbox: Outbox
    dead_row: int
    delivered_row: int


def fill(folder: Path, settings: Settings, engine: InferenceEngine) -> Filled:
    """Four studies in every state, the outbox rows of the two classified ones."""
    journal = Journal(settings.database_target())
    spool = settings.path(settings.storage.spool_dir)
    for n, (study, side) in enumerate(((STUDY_A, 512), (STUDY_A, 384), (STUDY_B, 448))):
        receive(journal, spool, make_chest(study_uid=study, series_uid=f"{study}.1",
                                           sop_uid=f"{study}.1.{n}", rows=side, columns=side))
    receive(journal, spool, make_nm(study_uid=STUDY_NM, sop_uid=f"{STUDY_NM}.1.1"))
    classify_all(journal, engine)
    receive(journal, spool, make_chest(study_uid=STUDY_Q, sop_uid=f"{STUDY_Q}.1.1"))
    outbox = Outbox(journal.path)
    outbox.enqueue([NewDelivery(s, 1, Kind.SR, f"{s}.9", Channel.DICOM, "pacs", "unused")
                    for s in (STUDY_A, STUDY_B)])
    rows = {r.study_uid: r.id for r in outbox.due()}
    outbox.mark_failed(rows[STUDY_A], "association rejected", DeliveryPolicy(retry_window_s=0))
    outbox.mark_delivered(rows[STUDY_B])
    return Filled(settings, journal, outbox, rows[STUDY_A], rows[STUDY_B])


def png_bytes(label: str = "tb", size: int = 256) -> bytes:
    image = cv2.resize(phantom(np.random.default_rng(3), label), (size, size))
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


def dicom_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
