"""The not-a-radiograph (out-of-distribution) check: features, shipped model, training, callers.

Issue 20 defect 2: random noise under a valid chest CR header, over C-STORE and by upload,
was scored 0.998 for TB. It must be skipped with a reason instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.engine import InferenceEngine
from inference.ood import FEATURE_COUNT, OOD_DIR, OOD_FILE, OodModel, features, load_ood, resized
from inference.pixels import dicom_to_gray, load_dicom
from inference.polarity import invert
from inference.quality import GateCode
from inference.registry import ModelError
from tests.conftest import require_shared_data, require_shipped_models
from tests.dicom_factory import make_chest, write
from tests.gateway_harness import OWN_AE, run_dcmtk
from tests.synthetic_cxr import phantom, write_dataset
from tests.test_dicom_node_e2e import PENDING, classifying_gateway, result_of
from tests.web_support import dicom_bytes, fill, models_folder, png_bytes, settings_for
from training.ood import train_ood
from training.ood_junk import FAMILIES, junk
from web import create_app
from web.metrics import reason_code

UNSEEN_SEED = 7
"""Junk seed used by no fitting, threshold choice or measurement (those use 42, 43, 44)."""
REASON = "the pixels do not look like a radiograph (out-of-distribution score"


@pytest.fixture(scope="module")
def shipped() -> OodModel:
    model = load_ood()
    assert model is not None, "models/ood/ood.json must be shipped"
    return model


def chests() -> list[np.ndarray]:
    """The synthetic radiographs the other tests send: DICOM phantoms of several encodings
    and the training-test phantom of tests/synthetic_cxr.py."""
    grays = [dicom_to_gray(make_chest(rows=side, columns=side, bits_stored=bits))
             for side, bits in ((256, 8), (512, 12), (384, 16), (1024, 14))]
    grays.append(dicom_to_gray(make_chest(rows=512, columns=448, photometric="MONOCHROME1")))
    grays += [phantom(np.random.default_rng(i), label).astype(np.float32) / 255.0
              for i, label in enumerate(("tb", "normal", "pneumonia"))]
    return grays


def noise_dataset(rows: int = 512, columns: int = 512, bits: int = 12) -> Dataset:
    """A valid chest CR header over uniform random noise."""
    ds = make_chest(rows=rows, columns=columns, bits_stored=bits, sop_uid=generate_uid())
    noise = np.random.default_rng(0).integers(0, 2 ** bits, (rows, columns))
    ds.PixelData = noise.astype(np.uint16 if bits > 8 else np.uint8).tobytes()
    return ds


def test_features_are_finite_whatever_the_image() -> None:
    for img in (np.zeros((300, 200), np.float32), np.full((64, 64), 0.7, np.float32),
                np.random.default_rng(0).random((2100, 1700)).astype(np.float32),
                np.linspace(0, 1, 256 * 256, dtype=np.float32).reshape(256, 256)):
        f = features(img)
        assert f.shape == (FEATURE_COUNT,) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="2-D"):
        features(np.zeros((4, 4, 3), np.float32))


def test_features_barely_depend_on_size_and_bit_depth() -> None:
    small = features(dicom_to_gray(make_chest(rows=256, columns=256, bits_stored=8)))
    large = features(dicom_to_gray(make_chest(rows=1024, columns=1024, bits_stored=16)))
    assert float(np.abs(small - large).max()) < 0.5


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shipped_check_refuses_every_junk_family(shipped: OodModel, family: str) -> None:
    radiographs = [resized(np.asarray(g, np.float32), 256) for g in chests()[:3]]
    images = junk(family, 12, UNSEEN_SEED, radiographs)
    refused = [shipped.check(img) is not None for img in images]
    assert sum(refused) >= 11, f"{family}: {sum(refused)}/12 refused"


def test_shipped_check_passes_the_synthetic_radiographs(shipped: OodModel) -> None:
    for i, gray in enumerate(chests()):
        assert shipped.check(gray) is None, (i, shipped.score(gray))


def test_reason_names_the_score_threshold_and_gate_code(shipped: OodModel) -> None:
    verdict = shipped.check(dicom_to_gray(noise_dataset()))
    assert verdict is not None and not verdict.ok and verdict.code is GateCode.NOT_RADIOGRAPH
    assert verdict.reason.startswith(f"skipped: {REASON}")
    assert f">= {shipped.threshold:.2f}" in verdict.reason
    assert reason_code(verdict.reason) == GateCode.NOT_RADIOGRAPH.value


def test_engine_gives_noise_this_reason_and_an_inverted_chest_the_polarity_one() -> None:
    engine = InferenceEngine.from_models_dir(require_shipped_models(), num_threads=1)
    chest = dicom_to_gray(make_chest(rows=512, columns=512))
    assert engine.check_pixels(chest) is None
    noise = engine.check_pixels(dicom_to_gray(noise_dataset()))
    assert noise is not None and noise.code is GateCode.NOT_RADIOGRAPH
    inverted = engine.check_pixels(invert(chest))
    assert inverted is not None and inverted.code is GateCode.INVERTED


def test_save_load_round_trip_and_bad_file(tmp_path: Path, shipped: OodModel) -> None:
    path = shipped.save(tmp_path / OOD_DIR)
    again = OodModel.load(path)
    assert again.threshold == shipped.threshold and again.version == shipped.version
    gray = dicom_to_gray(make_chest(rows=256, columns=256))
    assert again.score(gray) == pytest.approx(shipped.score(gray), abs=1e-4)
    meta = json.loads(path.read_text())
    meta["hidden_bias"] = meta["hidden_bias"][:3]
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not an out-of-distribution model"):
        OodModel.load(path)


def test_a_site_models_dir_overrides_the_shipped_check(tmp_path: Path, shipped: OodModel) -> None:
    from dataclasses import replace

    replace(shipped, version="site-1").save(tmp_path / OOD_DIR)
    loaded = load_ood(tmp_path)
    assert loaded is not None and loaded.version == "site-1"
    fallback = load_ood(tmp_path / "empty")
    assert fallback is not None and fallback.version == shipped.version
    assert (tmp_path / OOD_DIR / OOD_FILE).is_file()


def test_train_ood_on_synthetic_set(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_class=16, labels=("tb", "normal", "pneumonia"))
    out = tmp_path / "model"
    report = train_ood(data, out, version="0.0.1", junk_per_family=12, measure_per_family=12)
    assert (out / OOD_FILE).is_file() and (out / "card.md").is_file()
    assert json.loads((out / "report.json").read_text())["version"] == "0.0.1"
    junk_refused = report["junk"]
    assert isinstance(junk_refused, dict) and set(junk_refused) == set(FAMILIES)
    assert np.mean(list(junk_refused.values())) >= 0.8
    card = (out / "card.md").read_text()
    assert "| test | overall |" in card and "score >= " in card and "train-ood" in card


@pytest.mark.slow
def test_noise_under_a_chest_header_is_skipped_over_c_store(tmp_path: Path) -> None:
    """storescu -> running gateway: the noise ends skipped with the reason, never classified;
    a synthetic chest in the same study is still classified."""
    proc = classifying_gateway(tmp_path / "gw").start()
    try:
        noise = noise_dataset()
        chest = make_chest(rows=512, columns=512, study_uid=noise.StudyInstanceUID,
                           sop_uid=generate_uid())
        files = [write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate((noise, chest))]
        done = run_dcmtk(["storescu", "-aec", OWN_AE, "127.0.0.1", str(proc.port), *map(str, files)])
        assert done.returncode == 0, done.stderr
        proc.wait_for(PENDING, 0)
        state, reason, result = result_of(proc, noise.SOPInstanceUID)
        assert state == "skipped" and result is None
        assert reason is not None and reason.startswith(f"skipped: {REASON}")
        assert result_of(proc, chest.SOPInstanceUID)[0] == "classified"
        assert "do not look like a radiograph" in proc.log()
    finally:
        assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    models = models_folder(tmp_path_factory)
    engine = InferenceEngine.from_models_dir(models, {"tb-vs-normal": 0.5})
    folder = tmp_path_factory.mktemp("ood-web")
    filled = fill(folder, settings_for(folder, models), engine)
    app = create_app(filled.settings, engine, filled.journal, outbox=filled.outbox,
                     registry=CollectorRegistry())
    with TestClient(app, client=("127.0.0.1", 50123)) as c:
        yield c


def _png(gray: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.clip(gray * 255, 0, 255).astype(np.uint8))
    assert ok
    return buffer.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("name, content", [
    ("noise.png", _png(np.random.default_rng(1).random((512, 512)))),
    ("blank.png", _png(np.full((400, 400), 0.5))),
    ("noise.dcm", dicom_bytes(noise_dataset(bits=8))),
])
def test_upload_of_junk_is_422_with_the_reason(client: TestClient, name: str, content: bytes) -> None:
    """Like the tag gate's and the polarity check's refusals: 422 with the reason."""
    answer = client.post("/api/v1/predict", files={"file": (name, content)})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f"not classified: skipped: {REASON}")


@pytest.mark.slow
def test_upload_of_the_synthetic_radiograph_is_still_classified(client: TestClient) -> None:
    answer = client.post("/api/v1/predict", files={"file": ("x.png", png_bytes())})
    assert answer.status_code == 200, answer.text


@pytest.mark.realdata
def test_real_chest_samples_pass_and_nuclear_medicine_is_refused(shipped: OodModel) -> None:
    root = require_shared_data("dicom")
    for path in sorted((root / "chest").glob("*.dcm")):
        gray = dicom_to_gray(load_dicom(path))
        if "relabelled-mono1" in path.name:  # displayed inverted: a radiograph the other way round
            gray = invert(gray)
        assert shipped.check(gray) is None, (path.name, shipped.score(gray))
    for path in sorted((root / "not-chest").glob("nm-*.dcm")):
        assert shipped.check(dicom_to_gray(load_dicom(path))) is not None, path.name


@pytest.mark.realdata
def test_real_relabelled_chest_gets_the_polarity_reason_not_this_one() -> None:
    root = require_shared_data("dicom") / "chest"
    engine = InferenceEngine.from_models_dir(require_shipped_models(), num_threads=1)
    verdict = engine.check_pixels(dicom_to_gray(load_dicom(root / "cr-jpeg-baseline-relabelled-mono1.dcm")))
    assert verdict is not None and verdict.code is GateCode.INVERTED
