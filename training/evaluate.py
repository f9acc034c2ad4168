"""Evaluation of one classifier on labelled sets: metrics overall and per source, plots, report.

Writes ``report.json`` and ``report.md`` and PNG plots (ROC, PR, confusion
matrix, calibration) into the output folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.data import ImageSet, as_model_input
from training.metrics import binary_metrics, per_source_metrics
from training.plots import plot_calibration, plot_confusion, plot_pr, plot_roc
from training.tasks import Task
from training.train import task_subset

log = logging.getLogger(__name__)

Scorer = Callable[[NDArray[np.float32]], NDArray[np.float32]]


@dataclass
class SetResult:
    """Scores and metrics of one evaluation set (e.g. cxr test, external-dev)."""

    name: str
    y: NDArray[np.float32]
    scores: NDArray[np.float32]
    sources: list[str]
    overall: dict[str, object] = field(default_factory=dict)
    per_source: dict[str, dict[str, object]] = field(default_factory=dict)


def score_set(name: str, data: ImageSet, task: Task, scorer: Scorer, threshold: float) -> SetResult:
    """Score the images of ``data`` that belong to ``task`` and compute their metrics."""
    subset, y = task_subset(data, task)
    scores = scorer(as_model_input(subset.images)) if len(y) else np.empty(0, np.float32)
    return at_threshold(SetResult(name, y, scores, subset.sources), threshold)


def at_threshold(res: SetResult, threshold: float) -> SetResult:
    """``res``'s scores with their metrics, overall and per source, at ``threshold``."""
    out = SetResult(res.name, res.y, res.scores, res.sources)
    if len(res.y):
        out.overall = binary_metrics(res.y, res.scores, threshold).as_dict()
        out.per_source = per_source_metrics(res.y, res.scores, res.sources, threshold)
    return out


def write_report(results: list[SetResult], task: Task, threshold: float, out_dir: Path,
                 extra: dict[str, object] | None = None) -> dict[str, object]:
    """Write report.json, report.md and the plots; return the report dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "task": task.name, "positive": sorted(task.positive), "negative": sorted(task.negative),
        "threshold": threshold, **(extra or {}),
        "sets": {r.name: {"overall": r.overall, "per_source": r.per_source} for r in results},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
    _plots(results, task, out_dir)
    (out_dir / "report.md").write_text(markdown_report(report))
    return report


def _plots(results: list[SetResult], task: Task, out_dir: Path) -> None:
    curves = {r.name: (r.y.astype(int), r.scores) for r in results if len(r.y)}
    title = f"{task.name}"
    plot_roc(curves, out_dir / "roc.png", f"ROC — {title}")
    plot_pr(curves, out_dir / "pr.png", f"Precision-recall — {title}")
    labels = ("/".join(sorted(task.negative)), "/".join(sorted(task.positive)))
    for r in results:
        if r.overall:
            plot_confusion(r.overall["confusion"], labels,  # type: ignore[arg-type]
                           out_dir / f"confusion-{r.name}.png", f"{r.name} @ threshold")
            if len(set(r.y.tolist())) == 2:
                plot_calibration(r.y.astype(int), r.scores, out_dir / f"calibration-{r.name}.png",
                                 f"Calibration — {r.name}")


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


METRIC_COLUMNS = ("n", "n_positive", "roc_auc", "pr_auc", "recall", "specificity", "precision",
                  "f1", "accuracy", "sens_at_spec90", "sens_at_spec95", "spec_at_sens90",
                  "spec_at_sens95")


def metrics_table(rows: dict[str, dict[str, object]]) -> str:
    """A Markdown table, one row per named metrics dict (recall = sensitivity at the threshold)."""
    head = "| set | " + " | ".join(METRIC_COLUMNS) + " |\n" + "|---" * (len(METRIC_COLUMNS) + 1) + "|\n"
    body = "".join(
        f"| {name} | " + " | ".join(_fmt(m.get(c, "")) for c in METRIC_COLUMNS) + " |\n"
        for name, m in rows.items()
    )
    return head + body


def markdown_report(report: dict[str, object]) -> str:
    """The human-readable version of ``report.json``."""
    lines = [f"# Evaluation: {report['task']}\n",
             f"Positive: {report['positive']}; negative: {report['negative']}; "
             f"threshold {_fmt(report['threshold'])} (score >= threshold is positive).\n"]
    sets: dict[str, dict[str, dict[str, object]]] = report["sets"]  # type: ignore[assignment]
    for name, res in sets.items():
        rows = {"overall": res["overall"], **res["per_source"]}  # type: ignore[dict-item]
        lines.append(f"## {name}\n\n" + metrics_table(rows))  # type: ignore[arg-type]
    return "\n".join(lines)
