"""Evaluation plots as PNG: ROC, precision-recall, confusion matrix, calibration, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

Curves = dict[str, tuple[NDArray[np.integer], NDArray[np.floating]]]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc(curves: Curves, path: Path, title: str) -> Path:
    """One ROC curve per named (labels, scores) set."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, s) in curves.items():
        if len(set(np.asarray(y).tolist())) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_pr(curves: Curves, path: Path, title: str) -> Path:
    """One precision-recall curve per named set."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, s) in curves.items():
        if len(set(np.asarray(y).tolist())) == 2:
            p, r, _ = precision_recall_curve(y, s)
            ax.plot(r, p, label=name)
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_confusion(confusion: tuple[tuple[int, int], tuple[int, int]], labels: tuple[str, str],
                   path: Path, title: str) -> Path:
    """Confusion matrix ``[[TN, FP], [FN, TP]]`` with counts written in the cells."""
    m = np.array(confusion)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def plot_calibration(y: NDArray[np.integer], s: NDArray[np.floating], path: Path, title: str) -> Path:
    """Reliability diagram (10 bins)."""
    frac, mean = calibration_curve(y, s, n_bins=10, strategy="uniform")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(mean, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_history(history: list[dict[str, float]], path: Path) -> Path:
    """Training loss and validation ROC-AUC per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h.get("loss", np.nan) for h in history], "o-", label="train loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h.get("val_auc", np.nan) for h in history], "s-", color="C1", label="val ROC-AUC")
    ax.set(xlabel="epoch", ylabel="loss")
    ax2.set_ylabel("val ROC-AUC")
    fig.legend(fontsize=8, loc="upper center")
    return _save(fig, path)
