"""Both classifiers through the LiteRT runtime, with class-activation heatmaps.

``InferenceEngine.predict_gray`` is the one call the worker, the ``predict``
command and the REST API use: grayscale presentation-space image in,
:class:`inference.results.Prediction` out.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.polarity import PolarityModel, load_polarity
from inference.preprocess import preprocess_gray, view_stack
from inference.quality import QualityVerdict
from inference.registry import PNEUMONIA_VS_TB, TB_VS_NORMAL, ModelSpec, load_registry
from inference.results import ClassifierScore, Prediction, combine

log = logging.getLogger(__name__)


class TfliteModel:
    """One exported model (outputs ``score`` and ``cam``) run by the LiteRT interpreter."""

    def __init__(self, spec: ModelSpec, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.spec = spec
        self._interp = Interpreter(model_path=str(spec.path), num_threads=num_threads)
        self._input = self._interp.get_input_details()[0]
        if len(spec.views) > 1:  # all test-time views in one batch, one invoke
            shape = [len(spec.views), *self._input["shape"][1:]]
            self._interp.resize_tensor_input(self._input["index"], shape)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        outputs = self._interp.get_output_details()
        self._score = next(o for o in outputs if len(o["shape"]) == 2)
        self._cam = next(o for o in outputs if len(o["shape"]) == 3)
        self._lock = threading.Lock()

    def run(self, unit: NDArray[np.float32]) -> tuple[float, NDArray[np.float32]]:
        """Score and class activation map of one preprocessed ``(size, size)`` image.

        The score is the mean over the model's test-time views; the map is the
        first view's (``identity``, aligned with the image).
        """
        x = self._quantise(view_stack(unit, self.spec.views)[..., np.newaxis])
        with self._lock:
            self._interp.set_tensor(self._input["index"], x)
            self._interp.invoke()
            score = self._dequantise(self._score, self._interp.get_tensor(self._score["index"]))
            cam = self._dequantise(self._cam, self._interp.get_tensor(self._cam["index"]))
        return float(score.reshape(-1).mean()), cam[0]

    def _quantise(self, x: NDArray[np.float32]) -> NDArray[np.generic]:
        scale, zero = (float(v) for v in self._input["quantization"])
        if self._input["dtype"] == np.float32 or scale == 0:
            return x.astype(self._input["dtype"])
        return np.round(x / scale + zero).astype(self._input["dtype"])

    @staticmethod
    def _dequantise(detail: dict[str, Any], y: NDArray[np.generic]) -> NDArray[np.float32]:
        scale, zero = (float(v) for v in detail["quantization"])
        if scale == 0:
            return y.astype(np.float32)
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def cam_to_heatmap(cam: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Upsample a class activation map to ``size`` and scale it to [0, 1] (positive evidence)."""
    pos = np.maximum(cam, 0.0)
    peak = float(pos.max())
    norm = pos / peak if peak > 1e-6 else np.zeros_like(pos)
    return cv2.resize(norm.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


class InferenceEngine:
    """Both shipped classifiers and the grey-scale polarity check; thread-safe."""

    def __init__(self, specs: dict[str, ModelSpec], num_threads: int = 2,
                 polarity: PolarityModel | None = None) -> None:
        self.tb = TfliteModel(specs[TB_VS_NORMAL], num_threads)
        self.pneumonia = TfliteModel(specs[PNEUMONIA_VS_TB], num_threads)
        self.polarity = polarity

    @classmethod
    def from_models_dir(cls, models_dir: Path, thresholds: dict[str, float] | None = None,
                        num_threads: int = 2) -> InferenceEngine:
        return cls(load_registry(models_dir, thresholds), num_threads, load_polarity(models_dir))

    def check_pixels(self, gray: NDArray[np.generic]) -> QualityVerdict | None:
        """A skip verdict when the decoded image must not be classified (inverted grey scale)."""
        return self.polarity.check(gray) if self.polarity is not None else None

    def predict_gray(self, gray: NDArray[np.generic], heatmap: bool = True) -> Prediction:
        """Classify one presentation-space grayscale image with both models."""
        sizes = {self.tb.spec.input_size, self.pneumonia.spec.input_size}
        units = {s: preprocess_gray(gray, s) for s in sizes}
        tb_score, tb_cam = self.tb.run(units[self.tb.spec.input_size])
        pn_score, _ = self.pneumonia.run(units[self.pneumonia.spec.input_size])
        tb = _score(self.tb.spec, tb_score)
        pn = _score(self.pneumonia.spec, pn_score)
        hm = cam_to_heatmap(tb_cam, self.tb.spec.input_size) if heatmap else None
        return Prediction(tb, pn, combine(tb, pn), hm)


def _score(spec: ModelSpec, score: float) -> ClassifierScore:
    return ClassifierScore(spec.task, spec.name, spec.version, score, spec.threshold,
                           spec.positive_label, spec.negative_label)
