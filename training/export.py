"""Export to TensorFlow Lite (LiteRT) with a parity check against Keras.

float32 always; int8 (dynamic-range weights plus int8 activations calibrated
on representative validation images) only when it keeps ROC-AUC within
:data:`INT8_MAX_AUC_LOSS` of the Keras model, otherwise float32 is shipped.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

log = logging.getLogger(__name__)

INT8_MAX_AUC_LOSS = 0.005
PARITY_MAX_ABS_DIFF = 1e-3


@dataclass(frozen=True)
class ParityReport:
    """How the exported model's scores compare with Keras on the same images."""

    variant: str
    n: int
    max_abs_diff: float
    keras_auc: float
    tflite_auc: float

    @property
    def auc_loss(self) -> float:
        return self.keras_auc - self.tflite_auc


def convert(model: keras.Model, representative: NDArray[np.float32] | None = None) -> bytes:
    """Convert to a TFLite flatbuffer; int8 when ``representative`` images are given."""
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if representative is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]

            def gen() -> Iterator[list[NDArray[np.float32]]]:
                for x in representative:
                    yield [x[np.newaxis]]

            converter.representative_dataset = gen
        return bytes(converter.convert())


def tflite_scores(flatbuffer: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Scores of every image in ``x`` (n, size, size, 1) through the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer, num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = next(o for o in interp.get_output_details() if len(o["shape"]) == 2)
    scores = np.empty(len(x), np.float32)
    for i, img in enumerate(x):
        interp.set_tensor(inp["index"], img[np.newaxis].astype(np.float32))
        interp.invoke()
        scores[i] = interp.get_tensor(out["index"]).reshape(-1)[0]
    return scores


def parity(variant: str, flatbuffer: bytes, keras_scores: NDArray[np.float32],
           x: NDArray[np.float32], y: NDArray[np.float32]) -> ParityReport:
    """Compare TFLite and Keras scores on the same images."""
    return parity_of_scores(variant, tflite_scores(flatbuffer, x), keras_scores, y)


def parity_of_scores(variant: str, lite: NDArray[np.float32], keras_scores: NDArray[np.float32],
                     y: NDArray[np.float32]) -> ParityReport:
    """Compare served (LiteRT) and Keras scores of the same images; raise when they disagree."""
    both = len(set(y.tolist())) == 2
    report = ParityReport(
        variant, len(lite), float(np.max(np.abs(lite - keras_scores))),
        float(roc_auc_score(y, keras_scores)) if both else float("nan"),
        float(roc_auc_score(y, lite)) if both else float("nan"),
    )
    if variant == "float32" and report.max_abs_diff > PARITY_MAX_ABS_DIFF:
        raise RuntimeError(f"float32 TFLite disagrees with Keras: max |diff| {report.max_abs_diff}")
    return report


def export_model(model: keras.Model, x_val: NDArray[np.float32], y_val: NDArray[np.float32],
                 out_dir: Path, try_int8: bool = True) -> tuple[str, list[ParityReport]]:
    """Write ``model.tflite`` (int8 if it keeps AUC, else float32); return its variant and parity."""
    keras_scores = model.predict(x_val, batch_size=64, verbose=0)["score"][:, 0]
    fp32 = convert(model)
    reports = [parity("float32", fp32, keras_scores, x_val, y_val)]
    chosen, variant = fp32, "float32"
    if try_int8:
        rng = np.random.default_rng(0)
        rep = x_val[rng.choice(len(x_val), size=min(200, len(x_val)), replace=False)]
        int8 = convert(model, rep)
        reports.append(parity("int8", int8, keras_scores, x_val, y_val))
        if reports[-1].auc_loss <= INT8_MAX_AUC_LOSS:
            chosen, variant = int8, "int8"
    for r in reports:
        log.info("parity %s: n=%d max|diff|=%.5f keras AUC %.4f tflite AUC %.4f", r.variant, r.n,
                 r.max_abs_diff, r.keras_auc, r.tflite_auc)
    (out_dir / "model.tflite").write_bytes(chosen)
    log.info("wrote %s (%s)", out_dir / "model.tflite", variant)
    return variant, reports
