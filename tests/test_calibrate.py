"""Site calibration (``training.calibrate``): intervals, folds and cross-calibration against
known values; the command end to end is in ``test_training_pipeline.py``."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibrate import (
    cross_calibrate,
    fold_ids,
    operating_point,
    repeated_cross_calibrate,
    wilson_interval,
)


def test_wilson_interval_known_values() -> None:
    # 9 of 10: 0.596-0.982 (Wilson 1927; e.g. Newcombe 1998, table I)
    lo, hi = wilson_interval(9, 10)
    assert (lo, hi) == pytest.approx((0.5958, 0.9821), abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert np.isnan(wilson_interval(0, 0)[0])


def test_operating_point_counts() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], np.float32)
    s = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.2, 0.1, 0.05], np.float32)
    p = operating_point(y, s, 0.4)
    assert (p.tp, p.fn, p.tn, p.fp) == (3, 1, 4, 1)
    assert p.sensitivity == 0.75 and p.specificity == 0.8


def test_folds_are_stratified_by_label_and_source() -> None:
    y = np.array([1] * 20 + [0] * 30, np.float32)
    sources = ["a"] * 10 + ["b"] * 10 + ["n"] * 30
    ids = fold_ids(y, sources, 5, seed=1)
    for k in range(5):
        fold = ids == k
        assert np.sum(fold & (y == 1)) == 4 and np.sum(fold & (y == 0)) == 6
        assert sum(1 for i in np.flatnonzero(fold) if sources[i] == "a") == 2
    assert np.array_equal(ids, fold_ids(y, sources, 5, seed=1))


def test_cross_calibration_is_held_out() -> None:
    """Positives spread evenly: each fold's threshold keeps >= 0.90 of the other folds'
    positives, so pooled held-out sensitivity stays near, but need not reach, 0.90."""
    rng = np.random.default_rng(3)
    y = np.array([1] * 200 + [0] * 200, np.float32)
    s = np.where(y == 1, rng.normal(0.65, 0.15, 400), rng.normal(0.35, 0.15, 400)).astype(np.float32)
    sources = ["tb"] * 200 + ["normal"] * 200
    point, thresholds = cross_calibrate("tb-vs-normal", y, s, sources, 0.90, "sensitivity", 5, 0)
    assert len(thresholds) == 5 and len(set(thresholds)) > 1
    assert point.tp + point.fn == 200 and point.tn + point.fp == 200
    assert 0.84 <= point.sensitivity <= 0.95
    # Its specificity is what the normal scores give at about that threshold.
    assert point.specificity == pytest.approx(float(np.mean(s[200:] < np.median(thresholds))), abs=0.05)


def test_repeated_cross_calibration_averages_the_fold_assignments() -> None:
    """Each repeat is one seed's cross-calibration; the result's counts are their rounded
    means over the real number of cases, and one repeat is plain cross-calibration."""
    rng = np.random.default_rng(5)
    y = np.array([1] * 60 + [0] * 90, np.float32)
    s = np.where(y == 1, rng.normal(0.6, 0.2, 150), rng.normal(0.4, 0.2, 150)).astype(np.float32)
    sources = ["tb"] * 60 + ["normal"] * 90
    single, single_thr = cross_calibrate("tb-vs-normal", y, s, sources, 0.90, "sensitivity", 5, 7)
    one, one_thr, one_points = repeated_cross_calibrate("tb-vs-normal", y, s, sources, 0.90,
                                                        "sensitivity", 5, 7, 1)
    assert one == single and one_thr == [single_thr] and one_points == [single]
    point, thresholds, points = repeated_cross_calibrate("tb-vs-normal", y, s, sources, 0.90,
                                                         "sensitivity", 5, 7, 4)
    assert len(points) == 4 and [len(t) for t in thresholds] == [5] * 4
    assert points[0] == single  # repeat r uses seed + r
    assert points[1] == cross_calibrate("tb-vs-normal", y, s, sources, 0.90, "sensitivity", 5, 8)[0]
    assert len({p.tp for p in points} | {p.tn for p in points}) > 2  # the assignments differ
    assert point.tp == round(float(np.mean([p.tp for p in points])))
    assert point.tn == round(float(np.mean([p.tn for p in points])))
    assert (point.tp + point.fn, point.tn + point.fp) == (60, 90)
    assert point.threshold == pytest.approx(float(np.median(np.concatenate(thresholds))))


def test_spread_warning_looks_within_one_fold_assignment() -> None:
    """Two steady assignments that differ from each other do not warn; folds that disagree
    within an assignment do."""
    from training.calibrate import _warnings

    tb, normal = frozenset({"tb"}), frozenset({"normal"})
    steady = [[0.20, 0.22, 0.21, 0.20, 0.22], [0.28, 0.30, 0.29, 0.28, 0.30]]
    assert _warnings(200, 200, steady, tb, normal) == []
    shaky = [[0.10, 0.25, 0.18, 0.12, 0.24]] * 2
    (warning,) = _warnings(200, 200, shaky, tb, normal)
    assert "within one fold assignment the folds' thresholds vary by 0.15 (median of 2" in warning
    assert any("only 50 tb cases" in w for w in _warnings(50, 200, steady, tb, normal))
