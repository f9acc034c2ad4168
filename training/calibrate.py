"""Site calibration: a classifier's operating threshold from a hospital's own verified cases.

The shipped thresholds are chosen on the ``cxr/`` validation split. Radiographs
from other hospitals score differently (TB vs normal on external-dev at the
shipped threshold: 1.5.0 found 0.881 of TB, short of the WHO triage target's
0.90; 1.6.0 finds 0.938 but clears only 0.711 of the normals, just above the
target's 0.70), so a site should set its own operating point before clinical use.
``cxr-gateway calibrate``:

1. scores the site's labelled cases (``labels.csv`` or a folder per class; PNG,
   JPEG or DICOM, DICOM through the gateway's own quality gate) with the served
   model: the same reader, preprocessing, views and TFLite file as the gateway;
2. applies the model's threshold rule to them (by default the task's: TB
   sensitivity ≥ 0.95 on every TB source for TB vs normal; ≥ 95 % of every TB
   source kept below it for pneumonia vs TB), or the rule given;
3. estimates what that rule gives on cases it was *not* set on, by k-fold
   cross-calibration (threshold chosen on k-1 folds, applied to the held-out
   fold, counts pooled), repeated with several fold assignments and averaged,
   with Wilson 95 % intervals: a threshold meets its target on the cases it was
   chosen on by construction, so the in-sample figures alone would flatter it;
   on ~100 cases of a class, one fold assignment alone moves the sensitivity
   estimate by up to ±0.013;
4. writes ``calibration.json``, ``calibration.md`` and the usual report and plots
   at the new threshold, and prints the ``inference.thresholds`` setting to put in
   the gateway's config.

The shipped model files are never changed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.evaluate import SetResult, at_threshold, write_report
from training.model_folder import score_folder
from training.pipeline import choose_threshold
from training.tasks import TASKS

MIN_CASES = 10  # of each class: fewer cannot place a threshold at all
ADVISED_CASES = 100  # of each class: below this the intervals are wider than ±0.06


class CalibrationError(ValueError):
    """The site's cases cannot calibrate the model (too few of a class, wrong task)."""


@dataclass(frozen=True)
class OperatingPoint:
    """Sensitivity and specificity at one threshold, with their counts and Wilson 95 % intervals."""

    threshold: float
    sensitivity: float
    specificity: float
    tp: int
    fn: int
    tn: int
    fp: int
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]


@dataclass
class Calibration:
    """What ``calibrate`` found; ``calibration.json`` is this as JSON."""

    model: str
    version: str
    task: str
    data: str
    split: str
    n_positive: int
    n_negative: int
    rule: str
    threshold: float
    shipped: OperatingPoint  # the model's stored threshold on these cases
    in_sample: OperatingPoint  # the new threshold on the cases it was chosen on
    cross: OperatingPoint  # k-fold: each fold at a threshold chosen without it (pooled, mean of repeats)
    folds: int
    fold_thresholds: list[float]  # every fold of every repeat
    repeats: int = 1
    repeat_rates: list[tuple[float, float]] = field(default_factory=list)  # (sens, spec) per repeat
    warnings: list[str] = field(default_factory=list)

    def config_line(self) -> str:
        # repr: the exact value, so that the cases the rule counted stay on their side of it;
        # the version: the gateway refuses the threshold once the model folder holds another
        return (f"inference:\n  thresholds:\n    {self.task}: {{threshold: {self.threshold!r}, "
                f"model_version: {json.dumps(self.version)}}}")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (95 % with the default ``z``)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def operating_point(y: NDArray[np.float32], s: NDArray[np.float32], threshold: float) -> OperatingPoint:
    return _point(threshold, *_counts(y, s >= threshold))


def _counts(y: NDArray[np.float32], called: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    pos = y == 1
    return (int(np.sum(called & pos)), int(np.sum(~called & pos)),
            int(np.sum(~called & ~pos)), int(np.sum(called & ~pos)))


def _point(threshold: float, tp: int, fn: int, tn: int, fp: int) -> OperatingPoint:
    return OperatingPoint(threshold, _rate(tp, tp + fn), _rate(tn, tn + fp), tp, fn, tn, fp,
                          wilson_interval(tp, tp + fn), wilson_interval(tn, tn + fp))


def _rate(k: int, n: int) -> float:
    return k / n if n else float("nan")


def fold_ids(y: NDArray[np.float32], sources: list[str], folds: int, seed: int) -> NDArray[np.int64]:
    """Fold of each case, stratified by (label, source): each group is shuffled and dealt round-robin."""
    rng = np.random.default_rng(seed)
    ids = np.zeros(len(y), np.int64)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (label, source) in enumerate(zip(y.astype(int), sources, strict=True)):
        groups.setdefault((int(label), source), []).append(i)
    start = 0
    for key in sorted(groups):
        members = np.array(groups[key])
        rng.shuffle(members)
        ids[members] = (np.arange(len(members)) + start) % folds
        start += len(members)  # the next group starts where this one stopped: folds stay even
    return ids


def cross_calibrate(task: str, y: NDArray[np.float32], s: NDArray[np.float32], sources: list[str],
                    target: float | None, kind: str | None, folds: int,
                    seed: int) -> tuple[OperatingPoint, list[float]]:
    """Pooled operating point of k-fold cross-calibration and each fold's threshold."""
    ids = fold_ids(y, sources, folds, seed)
    src = np.asarray(sources)
    called = np.zeros(len(y), bool)
    thresholds = []
    for k in range(folds):
        rest = ids != k
        thr, _ = choose_threshold(task, y[rest], s[rest], list(src[rest]), target, kind, "site")
        thresholds.append(thr)
        called[~rest] = s[~rest] >= thr
    return _point(float(np.median(thresholds)), *_counts(y, called)), thresholds


def repeated_cross_calibrate(task: str, y: NDArray[np.float32], s: NDArray[np.float32],
                             sources: list[str], target: float | None, kind: str | None,
                             folds: int, seed: int, repeats: int
                             ) -> tuple[OperatingPoint, list[list[float]], list[OperatingPoint]]:
    """Cross-calibration with fold seeds ``seed .. seed+repeats-1``, averaged.

    The counts of the returned point are each cell's mean over the repeats,
    rounded, so its Wilson intervals rest on the real number of cases (the
    repeats re-use the same cases: they steady the estimate, they do not add
    evidence). Also returns each repeat's fold thresholds and point; the point's
    threshold is the median of all fold thresholds.
    """
    points, thresholds = [], []
    for r in range(repeats):
        point, thr = cross_calibrate(task, y, s, sources, target, kind, folds, seed + r)
        points.append(point)
        thresholds.append(thr)
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    tp = round(float(np.mean([p.tp for p in points])))
    tn = round(float(np.mean([p.tn for p in points])))
    median = float(np.median(np.concatenate(thresholds)))
    return _point(median, tp, n_pos - tp, tn, n_neg - tn), thresholds, points


def calibrate(model_dir: Path, data: Path, split: str = "all", target: float | None = None,
              kind: str | None = None, folds: int = 5, seed: int = 0,
              repeats: int = 10) -> tuple[Calibration, SetResult]:
    """Score ``data`` with the model of ``model_dir`` and choose its threshold there."""
    spec, result = score_folder(model_dir, data, split)
    task = TASKS[spec.task]
    y, s = result.y, result.scores
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    if min(n_pos, n_neg) < MIN_CASES:
        raise CalibrationError(
            f"{data} ({split}) holds {n_pos} {'/'.join(sorted(task.positive))} and {n_neg} "
            f"{'/'.join(sorted(task.negative))} images usable by {spec.task}: at least {MIN_CASES} "
            f"of each are needed, {ADVISED_CASES} or more advised")
    if folds < 2 or folds > min(n_pos, n_neg):
        raise CalibrationError(f"--folds {folds}: expected 2 to {min(n_pos, n_neg)} "
                               "(the smaller class's count)")
    if repeats < 1:
        raise CalibrationError(f"--repeats {repeats}: expected 1 or more")
    threshold, rule = choose_threshold(spec.task, y, s, result.sources, target, kind, "site")
    cross, per_repeat, points = repeated_cross_calibrate(
        spec.task, y, s, result.sources, target, kind, folds, seed, repeats)
    warnings = _warnings(n_pos, n_neg, per_repeat, task.positive, task.negative)
    cal = Calibration(
        model=spec.name, version=spec.version, task=spec.task, data=str(data), split=split,
        n_positive=n_pos, n_negative=n_neg, rule=rule, threshold=threshold,
        shipped=operating_point(y, s, spec.threshold), in_sample=operating_point(y, s, threshold),
        cross=cross, folds=folds, fold_thresholds=[t for thr in per_repeat for t in thr], repeats=repeats,
        repeat_rates=[(p.sensitivity, p.specificity) for p in points], warnings=warnings)
    return cal, result


def _warnings(n_pos: int, n_neg: int, per_repeat: list[list[float]],
              positive: frozenset[str], negative: frozenset[str]) -> list[str]:
    out = []
    for n, names in ((n_pos, positive), (n_neg, negative)):
        if n < ADVISED_CASES:
            lo, hi = wilson_interval(int(0.9 * n), n)
            out.append(f"only {n} {'/'.join(sorted(names))} cases: a rate of 0.90 measured on them "
                       f"could be anywhere in {lo:.2f}-{hi:.2f}; {ADVISED_CASES} or more are advised")
    # the spread within one fold assignment (median over the repeats): more repeats draw more
    # thresholds, which widens the overall range without the threshold being any less steady
    spreads = [max(thr) - min(thr) for thr in per_repeat]
    spread = float(np.median(spreads))
    everything = [t for thr in per_repeat for t in thr]
    if spread > 0.1:
        out.append(f"within one fold assignment the folds' thresholds vary by {spread:.2f} "
                   f"(median of {len(spreads)}; all: {min(everything):.3f}-"
                   f"{max(everything):.3f}): the threshold rests on few cases near it; "
                   "add cases before relying on it")
    return out


def write_calibration(cal: Calibration, result: SetResult, out: Path) -> None:
    """``calibration.json``, ``calibration.md``, and the report and plots at the new threshold."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(asdict(cal), indent=2, default=float) + "\n")
    (out / "calibration.md").write_text(calibration_markdown(cal))
    write_report([at_threshold(result, cal.threshold)], TASKS[cal.task], cal.threshold, out,
                 {"model": cal.model, "version": cal.version, "calibration": "calibration.json"})


def calibration_markdown(cal: Calibration) -> str:
    pos, neg = _class_words(cal.task)
    rows = [("shipped threshold, these cases", cal.shipped),
            ("new threshold, the cases it was chosen on", cal.in_sample),
            (f"{cal.folds}-fold cross-calibration, mean of {cal.repeats} (expected on new cases)",
             cal.cross)]
    lines = [
        f"# Site calibration of {cal.model} {cal.version}", "",
        f"Cases: `{cal.data}` (split {cal.split}): {cal.n_positive} {pos}, {cal.n_negative} {neg}.",
        f"Rule: {cal.rule}.", "",
        f"**New threshold: {cal.threshold:.4f}** (shipped: {cal.shipped.threshold:.4f}).", "",
        f"| | threshold | sensitivity ({pos}) [95 % CI] | specificity ({neg}) [95 % CI] |",
        "|---|---|---|---|",
    ]
    for title, p in rows:
        lines.append(f"| {title} | {p.threshold:.4f} | {p.sensitivity:.3f} "
                     f"[{p.sensitivity_ci[0]:.2f}-{p.sensitivity_ci[1]:.2f}] | {p.specificity:.3f} "
                     f"[{p.specificity_ci[0]:.2f}-{p.specificity_ci[1]:.2f}] |")
    sens = [r[0] for r in cal.repeat_rates]
    spec = [r[1] for r in cal.repeat_rates]
    thr = cal.fold_thresholds
    lines += ["", f"Cross-calibration repeated with {cal.repeats} fold assignments: sensitivity "
              f"{min(sens):.3f}-{max(sens):.3f}, specificity {min(spec):.3f}-{max(spec):.3f}; "
              f"the {len(thr)} fold thresholds lie in {min(thr):.4f}-{max(thr):.4f} (the "
              "cross-calibration row's threshold is their median).", ""]
    lines += [f"- warning: {w}" for w in cal.warnings]
    lines += ["", "To use it, set in the gateway's config and restart:", "", "```yaml",
              cal.config_line(), "```", ""]
    return "\n".join(lines)


def _class_words(task: str) -> tuple[str, str]:
    t = TASKS[task]
    return "/".join(sorted(t.positive)), "/".join(sorted(t.negative))

