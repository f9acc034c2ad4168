"""Binary classification metrics, overall and per source.

Pure NumPy (plus scikit-learn's ROC/PR curves), so they can be checked
against known values in unit tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics at one threshold, plus threshold-free AUCs."""

    n: int
    n_positive: int
    threshold: float
    accuracy: float
    precision: float
    recall: float  # sensitivity
    specificity: float
    f1: float
    roc_auc: float
    pr_auc: float
    sens_at_spec90: float
    sens_at_spec95: float
    spec_at_sens90: float
    spec_at_sens95: float
    confusion: tuple[tuple[int, int], tuple[int, int]]  # [[TN, FP], [FN, TP]]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def sensitivity_at_specificity(y: ArrayLike, s: ArrayLike, spec: float) -> float:
    """Highest sensitivity among thresholds whose specificity is at least ``spec``."""
    fpr, tpr, _ = roc_curve(y, s)
    ok = (1.0 - fpr) >= spec - 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def specificity_at_sensitivity(y: ArrayLike, s: ArrayLike, sens: float) -> float:
    """Highest specificity among thresholds whose sensitivity is at least ``sens``."""
    fpr, tpr, _ = roc_curve(y, s)
    ok = tpr >= sens - 1e-12
    return float((1.0 - fpr[ok]).max()) if ok.any() else 0.0


def binary_metrics(y: ArrayLike, s: ArrayLike, threshold: float) -> BinaryMetrics:
    """All metrics of scores ``s`` against 0/1 labels ``y`` at ``threshold`` (score >= threshold)."""
    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=float)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    both = len(set(y.tolist())) == 2
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    nan = float("nan")
    return BinaryMetrics(
        n=len(y), n_positive=int(y.sum()), threshold=float(threshold),
        accuracy=_ratio(tp + tn, len(y)), precision=precision, recall=recall,
        specificity=_ratio(tn, tn + fp),
        f1=_ratio(2 * precision * recall, precision + recall) if tp else 0.0,
        roc_auc=float(roc_auc_score(y, s)) if both else nan,
        pr_auc=float(average_precision_score(y, s)) if both else nan,
        sens_at_spec90=sensitivity_at_specificity(y, s, 0.90) if both else nan,
        sens_at_spec95=sensitivity_at_specificity(y, s, 0.95) if both else nan,
        spec_at_sens90=specificity_at_sensitivity(y, s, 0.90) if both else nan,
        spec_at_sens95=specificity_at_sensitivity(y, s, 0.95) if both else nan,
        confusion=((tn, fp), (fn, tp)),
    )


def threshold_for_sensitivity(y: ArrayLike, s: ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity on (y, s) is at least ``target``.

    The rule used to choose every shipped operating point, on the validation
    split only: triage tools must miss few positives (WHO CAD target ≥ 0.90).
    """
    pos = np.sort(np.asarray(s, dtype=float)[np.asarray(y) == 1])
    if pos.size == 0:
        raise ValueError("threshold_for_sensitivity: no positive examples")
    k = int(np.floor((1.0 - target) * pos.size + 1e-9))
    return float(pos[min(k, pos.size - 1)])


def threshold_for_specificity(y: ArrayLike, s: ArrayLike, target: float) -> float:
    """The lowest threshold with at least ``target`` of the negatives strictly below it.

    Returned as the next float32 above a negative's score, so that the
    comparison ``score >= threshold`` gives the same answer in float32 and float64.
    """
    neg = np.sort(np.asarray(s, dtype=np.float32)[np.asarray(y) == 0])
    if neg.size == 0:
        raise ValueError("threshold_for_specificity: no negative examples")
    k = max(int(np.ceil(target * neg.size - 1e-9)) - 1, 0)
    return float(np.nextafter(neg[k], np.float32(np.inf)))


def per_source_metrics(y: ArrayLike, s: ArrayLike, sources: list[str],
                       threshold: float) -> dict[str, dict[str, object]]:
    """Metrics of each source against all images of the other class.

    A source holds one label, so its AUC is computed against every image of
    the opposite class in the same set (e.g. qatar-tb vs all normals).
    """
    y = np.asarray(y).astype(int)
    scores = np.asarray(s, dtype=float)
    src = np.asarray(sources)
    out: dict[str, dict[str, object]] = {}
    for name in sorted(set(sources)):
        mine = src == name
        labels = set(y[mine].tolist())
        other = np.isin(y, [1 - v for v in labels]) & ~mine
        mask = mine | other if len(labels) == 1 else mine
        out[name] = binary_metrics(y[mask], scores[mask], threshold).as_dict()
    return out
