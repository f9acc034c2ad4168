"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    binary_metrics,
    per_source_metrics,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    threshold_for_sensitivity,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_binary_metrics_known_values() -> None:
    m = binary_metrics(Y, S, 0.5)
    assert m.confusion == ((3, 1), (1, 3))
    assert m.accuracy == pytest.approx(0.75)
    assert m.precision == pytest.approx(0.75)
    assert m.recall == pytest.approx(0.75)
    assert m.specificity == pytest.approx(0.75)
    assert m.f1 == pytest.approx(0.75)
    # 15 of the 16 positive/negative pairs are ordered correctly
    assert m.roc_auc == pytest.approx(15 / 16)


def test_operating_points() -> None:
    assert sensitivity_at_specificity(Y, S, 0.75) == pytest.approx(1.0)
    assert sensitivity_at_specificity(Y, S, 1.0) == pytest.approx(0.75)
    assert specificity_at_sensitivity(Y, S, 1.0) == pytest.approx(0.75)


def test_threshold_for_sensitivity() -> None:
    thr = threshold_for_sensitivity(Y, S, 0.75)
    assert thr == pytest.approx(0.7)
    assert np.mean(S[Y == 1] >= thr) >= 0.75
    assert np.mean(S[Y == 1] >= threshold_for_sensitivity(Y, S, 1.0)) == 1.0


def test_per_source_compares_each_source_with_other_class() -> None:
    sources = ["a", "a", "b", "b", "c", "c", "d", "d"]
    res = per_source_metrics(Y, S, sources, 0.5)
    assert set(res) == {"a", "b", "c", "d"}
    assert res["c"]["n"] == 6  # two positives of c against the four negatives
    assert res["a"]["roc_auc"] == pytest.approx(1.0)


def test_sampling_weights_balance_sources_and_classes() -> None:
    from training.train import sampling_weights

    y = np.array([1, 1, 1, 1, 0, 0], dtype=np.float32)
    sources = ["film", "film", "film", "digital", "n", "n"]
    p = sampling_weights(y, sources, "source")
    assert p[y == 1].sum() == pytest.approx(0.5)
    assert p[3] == pytest.approx(0.25) and p[:3].sum() == pytest.approx(0.25)
    q = sampling_weights(y, sources, "source", {"film": 0.0})
    assert q[:3].sum() == 0 and q[3] == pytest.approx(0.5)
    assert sampling_weights(y, sources, "none").sum() == pytest.approx(1.0)


def test_fourier_batches_draw_style_images_from_the_training_set() -> None:
    from training.augment import AugmentConfig
    from training.train import BalancedBatches, TrainConfig

    # class 1 is flat dark, class 0 flat bright: with every image restyled the tone of a
    # batch image no longer follows its label
    images = np.concatenate([np.full((4, 16, 16), 40, np.uint8), np.full((4, 16, 16), 220, np.uint8)])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32)
    p = np.full(8, 1 / 8)
    cfg = TrainConfig(steps_per_epoch=1, batch_size=64, seed=3)
    off = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, gamma=0,
                        blur_p=0, noise_p=0, jpeg_p=0)
    x, t = BalancedBatches(images, y, p, cfg, off)[0]
    assert isinstance(x, np.ndarray) and isinstance(t, np.ndarray)
    assert set(np.round(x.mean(axis=(1, 2, 3)) * 255).astype(int)) == {40, 220}
    x, t = BalancedBatches(images, y, p, cfg, AugmentConfig(**{**off.__dict__, "fourier_p": 1.0}))[0]
    assert isinstance(x, np.ndarray) and isinstance(t, np.ndarray)
    means = x.mean(axis=(1, 2, 3))
    assert len(np.unique(np.round(means, 3))) > 2  # blended tones, not just the two originals
    dark = t[:, 0] == 1
    assert means[dark].max() > means[~dark].min()  # some TB images now brighter than some normals


def test_mixup_blends_images_and_labels_alike() -> None:
    from training.augment import AugmentConfig
    from training.train import BalancedBatches, TrainConfig

    images = np.concatenate([np.full((4, 8, 8), 0, np.uint8), np.full((4, 8, 8), 255, np.uint8)])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32)  # label 1 <=> black image
    off = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, gamma=0,
                        blur_p=0, noise_p=0, jpeg_p=0)
    cfg = TrainConfig(steps_per_epoch=1, batch_size=64, seed=5, mixup=0.4)
    x, t = BalancedBatches(images, y, np.full(8, 1 / 8), cfg, off)[0]
    assert isinstance(x, np.ndarray) and isinstance(t, np.ndarray)
    np.testing.assert_allclose(1.0 - x.mean(axis=(1, 2, 3)), t[:, 0], atol=1e-5)
    assert ((t > 0.05) & (t < 0.95)).mean() > 0.2  # soft labels, not only 0 and 1


def test_threshold_rules_protect_the_worst_source() -> None:
    from training.pipeline import choose_threshold

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=np.float32)
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.25, 0.05, 0.15], dtype=np.float32)
    sources = ["film", "film", "digital", "digital", "n", "n", "n", "n"]
    thr, rule = choose_threshold("tb-vs-normal", y, s, sources)
    assert thr == pytest.approx(0.2)  # the digital source needs 0.2 to keep both of its positives
    assert "every positive source" in rule
    lax, lax_rule = choose_threshold("tb-vs-normal", y, s, sources, target=0.5)
    assert lax == pytest.approx(0.3) and "sensitivity >= 0.50" in lax_rule
    # pneumonia vs TB: positive pneumonia, each TB (negative) source must stay below
    y2 = np.array([1, 1, 0, 0, 0, 0], dtype=np.float32)
    s2 = np.array([0.9, 0.7, 0.1, 0.2, 0.5, 0.6], dtype=np.float32)
    thr2, _ = choose_threshold("pneumonia-vs-tb", y2, s2, ["p", "p", "a", "a", "b", "b"])
    assert thr2 > 0.6 and np.all(s2[2:] < thr2)


def test_threshold_rule_on_the_negatives_for_tb() -> None:
    """--threshold-rule specificity: TB vs normal bounded by every normal source's specificity."""
    from training.pipeline import choose_threshold

    y = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    s = np.array([0.9, 0.4, 0.1, 0.2, 0.3, 0.5, 0.05, 0.15], dtype=np.float32)
    sources = ["tb", "tb", "a", "a", "a", "a", "b", "b"]
    thr, rule = choose_threshold("tb-vs-normal", y, s, sources, target=0.75, kind="specificity")
    assert np.mean(s[2:6] < thr) >= 0.75 and np.all(s[6:] < thr)  # source a sets it
    assert not np.mean(s[2:6] < thr - 0.06) >= 0.75  # the lowest such threshold (scores step 0.1)
    assert "specificity >= 0.75 on every negative source (a, b)" in rule
    with pytest.raises(ValueError, match="sensitivity or specificity"):
        choose_threshold("tb-vs-normal", y, s, sources, kind="accuracy")


def test_metrics_table_is_valid_markdown() -> None:
    from training.evaluate import METRIC_COLUMNS, metrics_table

    table = metrics_table({"overall": {"n": 3, "roc_auc": 0.5}}).splitlines()
    assert len(table) == 3
    assert table[1] == "|---" * (len(METRIC_COLUMNS) + 1) + "|"
    assert table[2].startswith("| overall | 3 |") and "0.500" in table[2]
