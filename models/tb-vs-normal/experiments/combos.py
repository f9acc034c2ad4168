"""Exploratory: external-dev ROC-AUC and specificity at sensitivity 0.90 of every mean-of-members combination.

Run from the project root:
    PYTHONPATH=. .venv/bin/python models/tb-vs-normal/experiments/combos.py A=runs/a/model.keras B=...
Each member's 4-view Keras scores are cached in runs/combo-scores.json (``NAME=x`` reuses a
cached member). It chooses among candidates on external-dev, so its numbers are optimistic;
a chosen ensemble goes through ``cxr-gateway ensemble`` (threshold on validation) before use.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from training.data import load_images
from training.evaluate import as_model_input
from training.metrics import specificity_at_sensitivity
from training.model_folder import records_for
from training.pipeline import keras_scorer
from training.tasks import TASKS
from training.train import task_subset

VIEWS = ("identity", "flip", "zoom1.2", "zoom1.2-flip")


def main(args: list[str]) -> None:
    task = TASKS["tb-vs-normal"]
    records = records_for(Path("../shared/data/external-dev"), "all")
    subset, y = task_subset(load_images(records, 224), task)
    x = as_model_input(subset.images)
    cache = Path("runs/combo-scores.json")
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    names = []
    for arg in args:
        name, path = arg.split("=")
        names.append(name)
        if name not in scores:
            scores[name] = keras_scorer(keras.saving.load_model(path), VIEWS)(x).tolist()
            cache.write_text(json.dumps(scores))
    rows = []
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(names, k):
            s = np.mean([scores[n] for n in combo], axis=0)
            rows.append((roc_auc_score(y, s), specificity_at_sensitivity(y, s, 0.90), "+".join(combo)))
    for auc, spec, combo_name in sorted(rows, reverse=True):
        print(f"{auc:.4f} {spec:.3f} {combo_name}")


if __name__ == "__main__":
    main(sys.argv[1:])
