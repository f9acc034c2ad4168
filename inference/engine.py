"""Both classifiers through the LiteRT runtime, with class-activation heatmaps.

``InferenceEngine.predict_gray`` is the one call the worker, the ``predict``
command and the REST API use: grayscale presentation-space image in,
:class:`inference.results.Prediction` out. :class:`ModelRunner` runs every
distinct member network of both classifiers once per image, so an ensemble
member shared by the two (a TB model inside pneumonia vs TB) costs one pass.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.ood import OodModel, load_ood
from inference.polarity import PolarityModel, invert, load_polarity
from inference.preprocess import preprocess_sizes, view_stack, whole_factor_shrink
from inference.quality import QualityVerdict
from inference.registry import PNEUMONIA_VS_TB, TB_VS_NORMAL, ModelSpec, Thresholds, load_registry
from inference.results import ClassifierScore, Prediction, combine

log = logging.getLogger(__name__)


class TfliteNet:
    """One LiteRT network file (outputs ``score`` and ``cam``), run on a fixed list of views.

    All views go through in one batch, one invoke.
    """

    def __init__(self, path: Path, views: tuple[str, ...], num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.views = path, views
        self._interp = Interpreter(model_path=str(path), num_threads=num_threads)
        self._input = self._interp.get_input_details()[0]
        if len(views) > 1:
            self._interp.resize_tensor_input(self._input["index"],
                                             [len(views), *self._input["shape"][1:]])
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        outputs = self._interp.get_output_details()
        self._score = next(o for o in outputs if len(o["shape"]) == 2)
        self._cam = next(o for o in outputs if len(o["shape"]) == 3)
        self._lock = threading.Lock()

    def run(self, unit: NDArray[np.float32]) -> tuple[dict[str, float], NDArray[np.float32]]:
        """Score per view of one preprocessed ``(size, size)`` image, and the first view's map."""
        x = self._quantise(view_stack(unit, self.views)[..., np.newaxis])
        with self._lock:
            self._interp.set_tensor(self._input["index"], x)
            self._interp.invoke()
            score = self._dequantise(self._score, self._interp.get_tensor(self._score["index"]))
            cam = self._dequantise(self._cam, self._interp.get_tensor(self._cam["index"]))
        return dict(zip(self.views, (float(v) for v in score.reshape(-1)), strict=True)), cam[0]

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


def _file_key(path: Path, size: int) -> str:
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}@{size}"


class ModelRunner:
    """Several classifiers, each distinct member network run once per image.

    A classifier's score is the mean over its members of the member's mean
    score over the classifier's test-time views (``1 - score`` for an inverted
    member); its map is the mean of the members' first-view maps (``-cam`` for
    an inverted member). A member file listed by two classifiers (byte for
    byte the same network, e.g. a TB model inside the pneumonia-vs-TB
    ensemble) runs once, on the union of the views both need.
    """

    def __init__(self, specs: list[ModelSpec], num_threads: int = 2) -> None:
        self.specs = specs
        plan: dict[str, tuple[Path, int, list[str]]] = {}  # key -> file, input size, views
        self._keys: list[list[str]] = []
        for spec in specs:
            keys = []
            for member in spec.members:
                key = _file_key(member.path, spec.input_size)
                views = plan.setdefault(key, (member.path, spec.input_size, []))[2]
                views.extend(v for v in spec.views if v not in views)
                keys.append(key)
            self._keys.append(keys)
        self._nets = {k: (TfliteNet(path, tuple(views), num_threads), size)
                      for k, (path, size, views) in plan.items()}
        log.info("LiteRT: %d classifiers, %d distinct networks, %d passes per image",
                 len(specs), len(self._nets), self.passes)

    @property
    def passes(self) -> int:
        """Network passes per image (distinct networks times their views)."""
        return sum(len(net.views) for net, _ in self._nets.values())

    def run(self, units: dict[int, NDArray[np.float32]]) -> list[tuple[float, NDArray[np.float32]]]:
        """Score and map of every classifier, from its input-size preprocessed image in ``units``."""
        outputs = {k: net.run(units[size]) for k, (net, size) in self._nets.items()}
        results = []
        for spec, keys in zip(self.specs, self._keys, strict=True):
            scores, cams = [], []
            for member, key in zip(spec.members, keys, strict=True):
                per_view, cam = outputs[key]
                s = float(np.mean([per_view[v] for v in spec.views]))
                scores.append(1.0 - s if member.inverted else s)
                cams.append(-cam if member.inverted else cam)
            results.append((float(np.mean(scores)), np.mean(cams, axis=0).astype(np.float32)))
        return results


class TfliteModel:
    """One classifier (its member networks) through LiteRT: ``run`` gives score and map."""

    def __init__(self, spec: ModelSpec, num_threads: int = 2) -> None:
        self.spec = spec
        self._runner = ModelRunner([spec], num_threads)

    def run(self, unit: NDArray[np.float32]) -> tuple[float, NDArray[np.float32]]:
        """Score (mean over views and members) and class activation map of one preprocessed image."""
        return self._runner.run({self.spec.input_size: unit})[0]


def cam_to_heatmap(cam: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Upsample a class activation map to ``size`` and scale it to [0, 1] (positive evidence)."""
    pos = np.maximum(cam, 0.0)
    peak = float(pos.max())
    norm = pos / peak if peak > 1e-6 else np.zeros_like(pos)
    return cv2.resize(norm.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


class InferenceEngine:
    """Both shipped classifiers, the grey-scale polarity check and the not-a-radiograph
    (out-of-distribution) check; thread-safe."""

    def __init__(self, specs: dict[str, ModelSpec], num_threads: int = 2,
                 polarity: PolarityModel | None = None, ood: OodModel | None = None) -> None:
        self.tb, self.pneumonia = specs[TB_VS_NORMAL], specs[PNEUMONIA_VS_TB]
        self.runner = ModelRunner([self.tb, self.pneumonia], num_threads)
        self.polarity = polarity
        self.ood = ood

    @classmethod
    def from_models_dir(cls, models_dir: Path, thresholds: Thresholds | None = None,
                        num_threads: int = 2) -> InferenceEngine:
        return cls(load_registry(models_dir, thresholds), num_threads, load_polarity(models_dir),
                   load_ood(models_dir))

    def check_pixels(self, gray: NDArray[np.generic]) -> QualityVerdict | None:
        """A skip verdict when the decoded image must not be classified: not a radiograph at
        all (noise, blank, text, patterns), or an inverted grey scale.

        An image the out-of-distribution check refuses but which is an inverted radiograph
        (the polarity check flags it and its inversion passes) gets the polarity reason,
        which names the attribute to fix.
        """
        small = whole_factor_shrink(np.asarray(gray, dtype=np.float32))  # once for both checks
        inverted = self.polarity.check(small) if self.polarity is not None else None
        if self.ood is not None:
            verdict = self.ood.check(small)
            if verdict is not None and (inverted is None or self.ood.check(invert(small)) is not None):
                return verdict
        return inverted

    def predict_gray(self, gray: NDArray[np.generic], heatmap: bool = True) -> Prediction:
        """Classify one presentation-space grayscale image with both models."""
        units, box = preprocess_sizes(gray, {self.tb.input_size, self.pneumonia.input_size})
        (tb_score, tb_cam), (pn_score, _) = self.runner.run(units)
        tb = _score(self.tb, tb_score)
        pn = _score(self.pneumonia, pn_score)
        hm = cam_to_heatmap(tb_cam, self.tb.input_size) if heatmap else None
        return Prediction(tb, pn, combine(tb, pn), hm, box)


def _score(spec: ModelSpec, score: float) -> ClassifierScore:
    return ClassifierScore(spec.task, spec.name, spec.version, score, spec.threshold,
                           spec.positive_label, spec.negative_label)
