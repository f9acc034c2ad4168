"""The inverted grey-scale check: shipped model, training command, and every caller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.pixels import dicom_to_gray, load_dicom
from inference.polarity import (
    POLARITY_DIR,
    POLARITY_FILE,
    THUMB_SIDE,
    PolarityModel,
    invert,
    load_polarity,
    thumbnail,
)
from inference.quality import GateCode
from inference.registry import ModelError
from tests.conftest import require_shared_data
from tests.dicom_factory import make_chest, make_relabelled_mono1
from tests.synthetic_cxr import write_dataset
from training.polarity import train_polarity
from web.metrics import reason_code


@pytest.fixture(scope="module")
def shipped() -> PolarityModel:
    model = load_polarity()
    assert model is not None, "models/polarity/polarity.json must be shipped"
    return model


def test_thumbnail_is_windowed_and_invert_reverses() -> None:
    gray = np.linspace(0, 1000, 300 * 200, dtype=np.float32).reshape(300, 200)
    t = thumbnail(gray)
    assert t.shape == (THUMB_SIDE * THUMB_SIDE,) and t.min() == 0.0 and t.max() == 1.0
    np.testing.assert_allclose(thumbnail(invert(gray)), 1.0 - t, atol=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        thumbnail(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_shipped_model_passes_a_chest_and_flags_its_inversion(shipped: PolarityModel, bits: int) -> None:
    gray = dicom_to_gray(make_chest(rows=512, columns=512, bits_stored=bits))
    assert shipped.check(gray) is None
    verdict = shipped.check(invert(gray))
    assert verdict is not None and not verdict.ok and verdict.code is GateCode.INVERTED
    assert "Photometric Interpretation (0028,0004)" in verdict.reason
    assert reason_code(verdict.reason) == "inverted"


def test_wrong_monochrome1_label_is_flagged(shipped: PolarityModel) -> None:
    """MONOCHROME2 pixels labelled MONOCHROME1 are displayed inverted: the check catches it."""
    assert shipped.check(dicom_to_gray(make_relabelled_mono1(rows=256, columns=256))) is not None
    assert shipped.check(dicom_to_gray(make_chest(rows=256, columns=256, photometric="MONOCHROME1"))) is None


def test_save_load_round_trip_and_bad_file(tmp_path: Path, shipped: PolarityModel) -> None:
    path = shipped.save(tmp_path / POLARITY_DIR)
    again = PolarityModel.load(path)
    assert again.threshold == shipped.threshold and again.version == shipped.version
    np.testing.assert_allclose(again.weights, shipped.weights, atol=1e-6)
    meta = json.loads(path.read_text())
    meta["weights"] = meta["weights"][:10]
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a polarity model"):
        PolarityModel.load(path)


def test_a_site_models_dir_overrides_the_shipped_check(tmp_path: Path, shipped: PolarityModel) -> None:
    strict = PolarityModel(shipped.weights, shipped.bias, 0.0, "site-1")  # flags everything
    strict.save(tmp_path / POLARITY_DIR)
    loaded = load_polarity(tmp_path)
    assert loaded is not None and loaded.version == "site-1"
    fallback = load_polarity(tmp_path / "empty")
    assert fallback is not None and fallback.version == shipped.version


def test_train_polarity_on_synthetic_set(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_class=16, labels=("tb", "normal", "pneumonia"))
    out = tmp_path / "model"
    report = train_polarity(data, out, external=None, threshold=0.9, version="0.0.1")
    assert (out / POLARITY_FILE).is_file() and (out / "card.md").is_file()
    test = report["sets"]["test"]["overall"]  # type: ignore[index]
    assert test["false_flag_rate"] == 0.0 and test["miss_rate"] <= 0.1
    card = (out / "card.md").read_text()
    assert "| test | overall |" in card and "P(inverted) >= 0.9" in card


def test_real_samples(shipped: PolarityModel) -> None:
    root = require_shared_data("dicom") / "chest"
    for name in ("cr-jpeg-baseline-mono2.dcm", "cr-mono1-10bit-no-file-meta.dcm", "dx-implicit-vr-8bit.dcm"):
        assert shipped.check(dicom_to_gray(load_dicom(root / name))) is None, name
    verdict = shipped.check(dicom_to_gray(load_dicom(root / "cr-jpeg-baseline-relabelled-mono1.dcm")))
    assert verdict is not None and verdict.code is GateCode.INVERTED
