"""``evaluate`` and ``export`` on an existing model folder (``model.json`` + ``model.tflite``/``.keras``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
from numpy.typing import NDArray

from inference.engine import TfliteModel
from inference.registry import ModelSpec
from training.data import Record, as_model_input, load_images, read_records
from training.evaluate import SetResult, score_set, write_report
from training.export import export_model
from training.tasks import TASKS
from training.train import task_subset


def records_for(data: Path, split: str) -> list[Record]:
    """The records of ``data`` in ``split`` (``all``: every record)."""
    records = read_records(data)
    return records if split == "all" else [r for r in records if r.split == split]


def score_folder(model_dir: Path, data: Path, split: str,
                 views: tuple[str, ...] | None = None) -> tuple[ModelSpec, SetResult]:
    """Score the images of ``data`` (one split or all) that belong to the task of
    ``model_dir`` with its served TFLite model, at its stored threshold; ``views``
    replaces the model's test-time views."""
    spec = ModelSpec.load(model_dir)
    if views is not None:
        spec = dataclasses.replace(spec, views=views)
    model = TfliteModel(spec)
    images = load_images(records_for(data, split), spec.input_size)

    def scorer(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.array([model.run(img[..., 0])[0] for img in x], dtype=np.float32)

    return spec, score_set(split, images, TASKS[spec.task], scorer, spec.threshold)


def evaluate_folder(model_dir: Path, data: Path, split: str, out: Path,
                    views: tuple[str, ...] | None = None) -> dict[str, object]:
    """Evaluate the shipped TFLite model of ``model_dir`` on ``data`` (one split or all);
    ``views`` replaces the model's test-time views (to measure what views do)."""
    spec, result = score_folder(model_dir, data, split, views)
    return write_report([result], TASKS[spec.task], spec.threshold, out,
                        {"model": spec.name, "version": spec.version, "views": list(spec.views)})


def export_folder(model_dir: Path, data: Path, try_int8: bool = True) -> str:
    """Re-export ``model_dir/model.keras`` to TFLite, checking parity on the val split."""
    meta = json.loads((model_dir / "model.json").read_text())
    model = keras.saving.load_model(model_dir / "model.keras")
    val = load_images(records_for(data, "val"), int(meta["input_size"]))
    subset, y = task_subset(val, TASKS[meta["task"]])
    variant, _ = export_model(model, as_model_input(subset.images), y, model_dir, try_int8)
    meta["tflite_variant"] = variant
    (model_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return variant
