"""Shared inputs of the results tests: predictions and a small study of source images."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from inference.results import ClassifierScore, Prediction, combine
from results.evidence import ClassifiedImage
from results.identity import GatewayIdentity
from tests.dicom_factory import make_chest

STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.7001.1"
IDENTITY = GatewayIdentity(name="CXRGW-TEST", serial_number="SN-42",
                           institution_name="St. Test & Co")


def score(kind: str, value: float, threshold: float = 0.5,
          version: str = "1.2.0") -> ClassifierScore:
    """A classifier output; ``kind`` is ``tb`` (TB vs normal) or ``pn`` (pneumonia vs TB)."""
    if kind == "tb":
        return ClassifierScore("tb-vs-normal", "cxr-tb-vs-normal", version, value, threshold,
                               "tb", "normal")
    return ClassifierScore("pneumonia-vs-tb", "cxr-pneumonia-vs-tb", version, value, threshold,
                           "pneumonia", "tb")


def prediction(tb: float, pn: float, heatmap: bool = False, version: str = "1.2.0") -> Prediction:
    """Both scores, the documented combined finding, and optionally a heatmap blob."""
    tb_score, pn_score = score("tb", tb, 0.42, version), score("pn", pn, 0.5, version)
    hm = _blob(64, 64) if heatmap else None
    return Prediction(tb_score, pn_score, combine(tb_score, pn_score), hm)


def _blob(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.exp(-(((x - w * 0.3) ** 2 + (y - h * 0.4) ** 2) / (2 * (w * 0.15) ** 2))).astype(
        np.float32)


def source(index: int = 1, rows: int = 256, columns: int = 256, **changes: Any) -> Dataset:
    """A CR chest image of the test study (instance ``index``)."""
    fields: dict[str, Any] = {"study_uid": STUDY_UID, "series_uid": SERIES_UID,
                              "sop_uid": f"{SERIES_UID}.{index}", **changes}
    ds = make_chest(rows=rows, columns=columns, **fields)
    ds.InstanceNumber = index
    return ds


def study_images(*scores: tuple[float, float], heatmap: bool = False) -> list[ClassifiedImage]:
    """One classified image per (TB score, pneumonia score) pair."""
    return [ClassifiedImage(source(i + 1), prediction(tb, pn, heatmap))
            for i, (tb, pn) in enumerate(scores)]
