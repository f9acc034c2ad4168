"""What a classification produces: the value objects every later stage consumes.

Workers store these per instance; the SR, Secondary Capture and HL7 builders
read them. They hold no patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from inference.preprocess import CropBox


class Finding(StrEnum):
    """The combined impression of both classifiers (rule in :func:`combine`)."""

    TB_SUSPECTED = "tb-suspected"
    PNEUMONIA_PATTERN = "pneumonia-pattern"
    NO_TB_FINDING = "no-tb-finding"


@dataclass(frozen=True)
class ClassifierScore:
    """One classifier's output on one image."""

    classifier: str  # "tb-vs-normal" or "pneumonia-vs-tb"
    model_name: str
    model_version: str
    score: float  # probability of the positive class
    threshold: float
    positive_label: str  # "tb" / "pneumonia"
    negative_label: str  # "normal" / "tb"

    @property
    def positive(self) -> bool:
        return self.score >= self.threshold


@dataclass(frozen=True)
class Prediction:
    """Both classifiers' scores for one image, the combined finding and a heatmap."""

    tb_vs_normal: ClassifierScore
    pneumonia_vs_tb: ClassifierScore
    finding: Finding
    heatmap: NDArray[np.float32] | None = None  # (h, w) in [0, 1], model-input geometry
    crop_box: CropBox | None = None  # the source rectangle the model input shows (and the heatmap)
    notes: tuple[str, ...] = ()  # for the reader, e.g. the quality gate's "patient age unknown"


def combine(tb_vs_normal: ClassifierScore, pneumonia_vs_tb: ClassifierScore) -> Finding:
    """The documented rule that turns both scores into one impression.

    * TB-vs-normal below its threshold: no TB finding.
    * TB-vs-normal at/above its threshold and pneumonia-vs-TB below its
      threshold (favours TB): TB suspected.
    * TB-vs-normal at/above its threshold and pneumonia-vs-TB at/above its
      threshold (favours pneumonia): pneumonia pattern.
    """
    if not tb_vs_normal.positive:
        return Finding.NO_TB_FINDING
    if pneumonia_vs_tb.positive:
        return Finding.PNEUMONIA_PATTERN
    return Finding.TB_SUSPECTED


def score_to_dict(s: ClassifierScore) -> dict[str, object]:
    """JSON-ready form of one classifier's output."""
    return {
        "model": s.model_name, "version": s.model_version, "score": round(s.score, 6),
        "threshold": round(s.threshold, 6),
        "finding": s.positive_label if s.positive else s.negative_label,
        "positive_label": s.positive_label, "negative_label": s.negative_label,
    }


def prediction_to_dict(p: Prediction) -> dict[str, object]:
    """JSON-ready form of a prediction (without the heatmap array)."""
    return {
        "finding": p.finding.value,
        "tb_vs_normal": score_to_dict(p.tb_vs_normal),
        "pneumonia_vs_tb": score_to_dict(p.pneumonia_vs_tb),
        "notes": list(p.notes),
    }
