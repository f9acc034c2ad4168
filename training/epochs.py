"""``cxr-gateway epochs``: score every saved epoch of a ``--save-epochs`` run on a labelled set.

A checkpoint chosen on the validation split shares every capture with
training; how a run's epochs fare on radiographs of a source it never trained
on (a leave-one-source-out run's held-out source, or external-dev, evaluation
only) shows where it stops learning the disease and starts learning the
capture. The table is written as ``epochs-<name>.json`` and ``.md`` in the run
folder; ``train --skip-training --use-epoch N`` then ships the epoch chosen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from training.data import as_model_input, load_images
from training.metrics import specificity_at_sensitivity
from training.model_folder import records_for
from training.pipeline import keras_scorer
from training.tasks import TASKS
from training.train import EPOCHS_DIR, source_aucs, task_subset

log = logging.getLogger(__name__)


def sweep(run: Path, data: Path, split: str, views: tuple[str, ...],
          name: str) -> list[dict[str, float]]:
    """ROC-AUC (overall, per positive source) and specificity at 0.90 sensitivity of each
    saved epoch of ``run`` on ``data`` (``split`` or ``all``), with test-time ``views``."""
    history_path = run / "history.json"
    checkpoints = sorted((run / EPOCHS_DIR).glob("epoch-*.keras"))
    if not history_path.is_file() or not checkpoints:
        raise ValueError(f"epochs: {run} has no {EPOCHS_DIR}/epoch-NN.keras (train --save-epochs)")
    history = json.loads(history_path.read_text())
    task = TASKS[str(history["task"])]
    subset, y = task_subset(load_images(records_for(data, split), int(history["config"]["size"])),
                            task)
    if len(set(y.tolist())) < 2:
        raise ValueError(f"epochs: {data} ({split}) needs both classes of {task.name}")
    x = as_model_input(subset.images)
    rows = []
    for path in checkpoints:
        scores = keras_scorer(keras.saving.load_model(path), views)(x)
        row = {"epoch": float(path.stem.split("-")[1]), "roc_auc": float(roc_auc_score(y, scores)),
               "spec_at_sens_0.90": specificity_at_sensitivity(y, scores, 0.90),
               **{f"auc_{k}": v for k, v in source_aucs(y, scores, subset.sources).items()}}
        log.info("epoch %d on %s: ROC-AUC %.4f", row["epoch"], name, row["roc_auc"])
        rows.append(row)
    selected = history.get("selected_epoch_by_validation", history.get("best_epoch"))
    about = {"data": str(data), "split": split, "views": list(views), "n": len(y),
             "selected_by_validation": selected}
    (run / f"epochs-{name}.json").write_text(json.dumps({**about, "epochs": rows}, indent=2))
    (run / f"epochs-{name}.md").write_text(
        f"# Epochs of {run.name} on {name} ({data}, {split}, views {', '.join(views)}, "
        f"n={len(y)})\n\nValidation chose epoch {selected}.\n\n{_table(rows)}")
    return rows


def _table(rows: list[dict[str, float]]) -> str:
    keys = [k for k in rows[0] if k != "epoch"]
    lines = ["| epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {int(row['epoch'])} | " + " | ".join(
        "–" if np.isnan(row[k]) else f"{row[k]:.4f}" for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"
