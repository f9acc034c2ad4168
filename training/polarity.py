"""Train the grey-scale polarity check (:mod:`inference.polarity`).

Every training radiograph is shown as it is (label 0) and inverted (label 1),
each also with a random gamma, to a logistic regression over the 24x24
thumbnail. Radiographs are read as the serving path reads them
(:func:`training.data.load_gray`). The card reports, per split and source,
how many correct images would be wrongly skipped (false flags) and how many
inverted ones would be let through (misses) at the threshold.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from inference.pixels import PixelError
from inference.polarity import DEFAULT_THRESHOLD, THUMB_SIDE, PolarityModel, invert, thumbnail
from training.data import Record, dataset_hash, load_gray, read_records

log = logging.getLogger(__name__)

GAMMA_RANGE = (0.6, 1.6)


def _examples(records: list[Record], rng: np.random.Generator,
              jitter: bool) -> tuple[NDArray[np.float32], NDArray[np.int64], list[str]]:
    """Thumbnails of each readable image and its inversion (plus gamma copies when ``jitter``)."""
    xs, ys, sources = [], [], []
    skipped = 0
    for r in records:
        try:
            gray = load_gray(r.path)
        except PixelError as err:
            log.warning("skipped %s", err)
            skipped += 1
            continue
        views = [gray]
        if jitter:
            lo, hi = float(gray.min()), float(gray.max())
            unit = (gray - lo) / max(hi - lo, 1e-6)
            views.append(np.power(unit, rng.uniform(*GAMMA_RANGE)).astype(np.float32))
        for view in views:
            xs += [thumbnail(view), thumbnail(invert(view))]
            ys += [0, 1]
            sources += [r.source, r.source]
    if skipped:
        log.warning("polarity: skipped %d unreadable images", skipped)
    x = np.stack(xs) if xs else np.empty((0, THUMB_SIDE * THUMB_SIDE), np.float32)
    return x, np.asarray(ys, dtype=np.int64), sources


def error_rates(model: PolarityModel, x: NDArray[np.float32], y: NDArray[np.int64],
                sources: list[str]) -> dict[str, dict[str, float]]:
    """False-flag and miss rates at ``model.threshold``, overall and per source."""
    z = x @ model.weights + model.bias
    flagged = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))) >= model.threshold
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        groups[s].append(i)
    groups["overall"] = list(range(len(y)))
    out = {}
    for name, idx in sorted(groups.items()):
        yi, fi = y[idx], flagged[idx]
        out[name] = {"images": int((yi == 0).sum()),
                     "false_flag_rate": float(fi[yi == 0].mean()) if (yi == 0).any() else float("nan"),
                     "miss_rate": float((~fi[yi == 1]).mean()) if (yi == 1).any() else float("nan")}
    return out


def train_polarity(data: Path, out: Path, external: Path | None = None,
                   threshold: float = DEFAULT_THRESHOLD, version: str = "1.0.0",
                   seed: int = 42, c: float = 0.1) -> dict[str, object]:
    """Fit on ``data``'s train split, measure on val, test and ``external``; write model and card."""
    rng = np.random.default_rng(seed)
    records = read_records(data, seed=seed)
    x, y, _ = _examples([r for r in records if r.split == "train"], rng, jitter=True)
    if len(set(y.tolist())) < 2:
        raise ValueError(f"{data}: no readable training images")
    fit = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    model = PolarityModel(fit.coef_[0].astype(np.float32), float(fit.intercept_[0]), threshold, version)
    sets: dict[str, list[Record]] = {s: [r for r in records if r.split == s] for s in ("val", "test")}
    if external is not None:
        sets["external"] = read_records(external, seed=seed)
    report: dict[str, object] = {
        "version": version, "threshold": threshold, "trained_on": str(data),
        "data_sha256": dataset_hash(records), "train_images": int((y == 0).sum() // 2),
        "created": date.today().isoformat(),
        "sets": {name: error_rates(model, *_examples(recs, rng, jitter=False))
                 for name, recs in sets.items() if recs},
    }
    model.save(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "card.md").write_text(card(report))
    log.info("polarity model written to %s", out)
    return report


def card(report: dict[str, object]) -> str:
    lines = [
        f"# Grey-scale polarity check {report['version']}",
        "",
        "Skips radiographs whose grey scale looks inverted (bones dark, lungs bright), the",
        "usual sign of a wrong Photometric Interpretation (0028,0004). The TB and pneumonia",
        "classifiers never saw such images; an inverted radiograph scores high for TB.",
        "",
        f"- Model: logistic regression over a {THUMB_SIDE}x{THUMB_SIDE} thumbnail, 1st-99th "
        "percentile windowed (`inference/polarity.py`).",
        f"- Trained on: the train split of `{report['trained_on']}` "
        f"({report['train_images']} radiographs, each as it is and inverted, plus a random-gamma copy "
        f"of both); data SHA-256 `{report['data_sha256']}`.",
        f"- Threshold: P(inverted) >= {report['threshold']} skips the image.",
        "- Command: `cxr-gateway train-polarity --data ../shared/data/cxr "
        "--external ../shared/data/external-dev --out models/polarity`",
        f"- Created: {report['created']}",
        "",
        "## Errors at the threshold",
        "",
        "False flag: a correctly displayed radiograph that would be skipped. Miss: an inverted",
        "one that would be classified.",
        "",
        "| set | source | radiographs | false flags | misses |",
        "|---|---|---|---|---|",
    ]
    sets = report["sets"]
    assert isinstance(sets, dict)
    for set_name, per_source in sets.items():
        for source, m in per_source.items():
            lines.append(f"| {set_name} | {source} | {m['images']} | {m['false_flag_rate']:.2%} | "
                         f"{m['miss_rate']:.2%} |")
    lines += ["", "## Known limitations", "",
              "- Frontal chest radiographs only; other body parts are stopped earlier by the tag gate.",
              "- Web-collected images with large white padding are the usual false flags.",
              ""]
    return "\n".join(lines)
