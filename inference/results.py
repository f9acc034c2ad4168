"""What a classification produces: the value objects every later stage consumes.

Workers store these per instance; the SR, Secondary Capture and HL7 builders
read them. They hold no patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray

from inference.preprocess import CropBox


class Finding(StrEnum):
    """The combined impression of both classifiers (rule in :func:`combine`)."""

    TB_SUSPECTED = "tb-suspected"
    PNEUMONIA_PATTERN = "pneumonia-pattern"  # stored by older versions; read as TB suspected
    NO_TB_FINDING = "no-tb-finding"


FINDING_TEXT: Final[dict[Finding, str]] = {
    Finding.TB_SUSPECTED: "TB suspected",
    Finding.PNEUMONIA_PATTERN: "TB suspected",
    Finding.NO_TB_FINDING: "No TB finding",
}
"""How the impression reads in the SR, the ORU, the Secondary Capture caption and the console."""

PNEUMONIA_NOTE: Final = "pattern also consistent with pneumonia"
"""The secondary note of a TB-suspected impression whose pneumonia-vs-TB score is at or above
its threshold: it never replaces "TB suspected" (issue 21 item 5)."""


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
    """The combined finding of both classifiers (:func:`impression_from_scores`)."""
    return impression(tb_vs_normal, pneumonia_vs_tb).finding


@dataclass(frozen=True)
class Impression:
    """The combined impression as every output states it: the finding and its note."""

    finding: Finding
    note: str | None = None  # PNEUMONIA_NOTE or None

    @property
    def text(self) -> str:
        """E.g. "TB suspected; pattern also consistent with pneumonia"."""
        head = FINDING_TEXT[self.finding]
        return f"{head}; {self.note}" if self.note else head


def impression(tb_vs_normal: ClassifierScore, pneumonia_vs_tb: ClassifierScore) -> Impression:
    """The impression of a prediction's two scores (:func:`impression_from_scores`).

    Computed from the scores, so results stored by an older version (finding
    ``pneumonia-pattern``) read the same way as new ones."""
    return impression_from_scores(tb_vs_normal.score, tb_vs_normal.threshold,
                                  pneumonia_vs_tb.score, pneumonia_vs_tb.threshold)


def impression_from_scores(tb_score: float, tb_threshold: float, pn_score: float | None,
                           pn_threshold: float | None) -> Impression:
    """The one rule for the SR, the ORU, the Secondary Capture caption and the console.

    * TB-vs-normal below its threshold: no TB finding.
    * TB-vs-normal at/above its threshold: TB suspected, whatever
      pneumonia-vs-TB says; when pneumonia-vs-TB is at/above its threshold too,
      the note "pattern also consistent with pneumonia" is added. In TB triage
      anything above the TB threshold needs a TB test; on radiographs from other
      hospitals the pneumonia-vs-TB classifier called about a quarter of the TB
      cases above the TB threshold "pneumonia" (issue 21 item 5), so it may only
      add a note, never take the TB finding away.
    """
    if tb_score < tb_threshold:
        return Impression(Finding.NO_TB_FINDING)
    positive = pn_score is not None and pn_threshold is not None and pn_score >= pn_threshold
    return Impression(Finding.TB_SUSPECTED, PNEUMONIA_NOTE if positive else None)


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
    said = impression(p.tb_vs_normal, p.pneumonia_vs_tb)
    return {
        "finding": said.finding.value,
        "impression": said.text,
        "tb_vs_normal": score_to_dict(p.tb_vs_normal),
        "pneumonia_vs_tb": score_to_dict(p.pneumonia_vs_tb),
        "notes": list(p.notes),
    }
