"""Fit the out-of-distribution check (:mod:`inference.ood`) and write its card.

Radiographs of the train split (each as it is and once re-framed, re-gammaed,
zoomed, blurred or grained, as radiographs arrive from other sites) are fitted
against synthetic junk (:mod:`training.ood_junk`) of one seed. The threshold is
chosen on the val split and junk of a second seed; the card measures the test
split per source, ``external`` radiographs (measured only, never fitted or
tuned on) and junk of a third seed made from test-split radiographs.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray
from sklearn.covariance import LedoitWolf
from sklearn.neural_network import MLPClassifier

from inference.ood import DEFAULT_THRESHOLD, OodModel, features, resized
from inference.pixels import PixelError
from training.augment import random_frame
from training.data import Record, dataset_hash, load_gray, read_records
from training.ood_card import card
from training.ood_junk import FAMILIES, junk

log = logging.getLogger(__name__)

HIDDEN: Final = 32
JUNK_PER_FAMILY: Final = 600
JUNK_MORE: Final = {"dead-leaves": 8}
"""Families fitted on more images: drawn shapes vary the most and were refused least."""
MEASURE_PER_FAMILY: Final = 500
JUNK_SOURCE_EVERY: Final = 5
"""Radiograph-derived junk draws from every 5th radiograph of the split."""
JUNK_GOAL: Final = 0.995
"""Refusal each val junk family must keep at the chosen threshold (margin over the 99 % goal)."""
THRESHOLD_GRID: Final = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
NOT_CHEST_DICOM: Final = "dicom/not-chest"

Matrix = NDArray[np.float32]


def vary(gray: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """One plausible variant of a radiograph: framed, gamma, zoom, mild blur or grain."""
    x: NDArray[Any] = resized(gray, 256)
    kind = int(rng.integers(5))
    if kind == 0:
        x = random_frame(x, rng) if rng.random() < 0.7 else _pasted_small(x, rng)
    elif kind == 1:
        x = np.power(x, rng.uniform(0.5, 2.0))
    elif kind == 2:
        c = int(rng.integers(0, 48))
        x = cv2.resize(x[c:256 - int(rng.integers(0, 48)), c:256 - int(rng.integers(0, 48))], (256, 256))
    elif kind == 3:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 2.5)))
    else:
        x = x + rng.normal(0, rng.uniform(0.005, 0.05), x.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _pasted_small(x: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """A radiograph a fifth to a half of the side, anywhere on a black, white or grey canvas."""
    side = int(256 * rng.uniform(0.2, 0.5))
    canvas = np.full((256, 256), float(rng.choice([0.0, 1.0, float(rng.uniform(0, 1))])), np.float32)
    top, left = (int(v) for v in rng.integers(0, 256 - side, 2))
    canvas[top:top + side, left:left + side] = cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


def radiograph_features(records: Sequence[Record], rng: np.random.Generator | None,
                        keep_every: int = 0) -> tuple[Matrix, list[str], list[NDArray[np.float32]]]:
    """Features of each readable radiograph (plus one variant when ``rng``), sources, kept images."""
    rows, sources, kept = [], [], []
    for i, r in enumerate(records):
        try:
            gray = load_gray(r.path)
        except PixelError as err:
            log.warning("skipped %s", err)
            continue
        rows.append(features(gray))
        sources.append(r.source)
        if rng is not None:
            rows.append(features(vary(gray, rng)))
            sources.append(r.source)
        if keep_every and i % keep_every == 0:
            kept.append(resized(gray, 256))
    return np.stack(rows), sources, kept


def junk_features(count: int, seed: int, radiographs: Sequence[NDArray[np.float32]],
                  more: dict[str, int] | None = None) -> dict[str, Matrix]:
    """Features of ``count`` junk images of every family (times ``more[family]``), from ``seed``."""
    more = more or {}
    return {name: np.stack([features(img) for img in junk(name, count * more.get(name, 1), seed,
                                                          radiographs)])
            for name in FAMILIES}


def fit(radiographs: Matrix, junk_rows: Matrix, threshold: float, version: str,
        seed: int) -> OodModel:
    """Standardiser and Mahalanobis precision on the radiographs; perceptron on both."""
    mean = radiographs.mean(axis=0)
    scale = radiographs.std(axis=0) + 1e-3
    precision = LedoitWolf().fit((radiographs - mean) / scale).precision_.astype(np.float32)
    draft = OodModel(mean, scale, precision, np.zeros((0, 0), np.float32), np.zeros(0, np.float32),
                     np.zeros(0, np.float32), 0.0, threshold, version)
    x = np.vstack([draft.inputs(radiographs), draft.inputs(junk_rows)])
    y = np.r_[np.zeros(len(radiographs)), np.ones(len(junk_rows))]
    net = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=400,
                        random_state=seed).fit(x, y)
    return OodModel(mean, scale, precision, net.coefs_[0].astype(np.float32),
                    net.intercepts_[0].astype(np.float32), net.coefs_[1][:, 0].astype(np.float32),
                    float(net.intercepts_[1][0]), threshold, version)


def choose_threshold(model: OodModel, val_junk: dict[str, Matrix]) -> float:
    """The highest threshold at which every val junk family is still refused >= ``JUNK_GOAL``.

    Higher thresholds refuse fewer radiographs, so this is the threshold that
    refuses the fewest radiographs while keeping the junk goal with a margin.
    """
    lowest = min(THRESHOLD_GRID)
    scores = [model.scores(rows) for rows in val_junk.values()]
    fits = [t for t in THRESHOLD_GRID if all(float((s >= t).mean()) >= JUNK_GOAL for s in scores)]
    return max(fits) if fits else lowest


def refusal_by_source(model: OodModel, rows: Matrix, sources: list[str]) -> dict[str, dict[str, float]]:
    """Images and the share refused, per source and overall."""
    refused = model.scores(rows) >= model.threshold
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        groups[s].append(i)
    groups["overall"] = list(range(len(sources)))
    return {name: {"images": len(idx), "refused": int(refused[idx].sum()),
                   "refusal_rate": float(refused[idx].mean())}
            for name, idx in sorted(groups.items())}


def not_chest_dicom(model: OodModel, data: Path) -> dict[str, float]:
    """Scores of the real non-chest DICOM images beside ``data`` (other body parts), if present."""
    from inference.pixels import dicom_to_gray, load_dicom

    folder = data.parent / NOT_CHEST_DICOM
    return {p.name: round(model.score(dicom_to_gray(load_dicom(p))), 4)
            for p in sorted(folder.glob("*.dcm"))} if folder.is_dir() else {}


def train_ood(data: Path, out: Path, external: Path | None = None, version: str = "1.0.0",
              seed: int = 42, junk_per_family: int = JUNK_PER_FAMILY,
              measure_per_family: int = MEASURE_PER_FAMILY) -> dict[str, object]:
    """Fit on ``data``'s train split, choose the threshold on val, measure; write model and card."""
    rng = np.random.default_rng(seed)
    records = read_records(data, seed=seed)
    split = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
    x_train, _, train_kept = radiograph_features(split["train"], rng, JUNK_SOURCE_EVERY)
    fit_junk = junk_features(junk_per_family, seed, train_kept, JUNK_MORE)
    model = fit(x_train, np.vstack(list(fit_junk.values())), DEFAULT_THRESHOLD, version, seed)
    x_val, val_sources, val_kept = radiograph_features(split["val"], None, JUNK_SOURCE_EVERY)
    threshold = choose_threshold(model, junk_features(measure_per_family, seed + 1, val_kept))
    model = replace(model, threshold=threshold)
    x_test, test_sources, test_kept = radiograph_features(split["test"], None, JUNK_SOURCE_EVERY)
    sets = {"val": refusal_by_source(model, x_val, val_sources),
            "test": refusal_by_source(model, x_test, test_sources)}
    if external is not None:
        x_ext, ext_sources, _ = radiograph_features(read_records(external, seed=seed), None)
        sets["external"] = refusal_by_source(model, x_ext, ext_sources)
    measured = junk_features(measure_per_family, seed + 2, test_kept)
    report: dict[str, object] = {
        "version": version, "threshold": threshold, "trained_on": str(data),
        "external": str(external) if external else None, "data_sha256": dataset_hash(records),
        "hidden_units": HIDDEN, "train_radiographs": len(x_train) // 2, "junk_per_family": junk_per_family,
        "junk_more": JUNK_MORE,
        "seeds": {"fit": seed, "threshold": seed + 1, "measure": seed + 2},
        "created": date.today().isoformat(), "radiographs": sets,
        "junk": {name: float((model.scores(rows) >= threshold).mean()) for name, rows in measured.items()},
        "junk_images_per_family": measure_per_family,
        "not_chest_dicom_scores": not_chest_dicom(model, data),
    }
    model.save(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "card.md").write_text(card(report))
    log.info("out-of-distribution model written to %s (threshold %.2f)", out, threshold)
    return report
