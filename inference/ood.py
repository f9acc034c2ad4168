"""Out-of-distribution check: do the decoded pixels look like a radiograph at all?

The tag gate (:mod:`inference.quality`) trusts the header; a sender can put
anything under a valid chest CR header (random noise, a blank frame, a page of
text, a test pattern), and the classifiers score whatever they are given
(random noise scored 0.998 for TB, issue 20). This check looks at the pixels
only and refuses images whose statistics are unlike the radiographs the
classifiers were trained on.

:func:`features` describes an image, whatever its size or bit depth, by 135
(``FEATURE_COUNT``) numbers computed on 128x128 and 64x64 area-resized, percentile-windowed
thumbnails: dynamic range, grey-level histogram, spatial autocorrelation,
roughness, left-right symmetry, gradient coherence, radial power spectrum, an
8x8 layout, where the texture is (a 4x4 layout of block spread) and how sharp
the edges are (drawn shapes). :class:`OodModel` standardises them, adds the Mahalanobis
distance to the training radiographs, and a small two-layer perceptron gives
P(not a radiograph). It costs a few milliseconds on one core, NumPy and
OpenCV only. ``cxr-gateway train-ood`` fits it (:mod:`training.ood`); it
lives in ``models/ood/ood.json``; a site's ``inference.models_dir`` may hold
its own copy, else the shipped one is used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.preprocess import whole_factor_shrink
from inference.quality import GateCode, QualityVerdict
from inference.registry import ModelError, default_models_dir

log = logging.getLogger(__name__)

OOD_DIR: Final = "ood"
OOD_FILE: Final = "ood.json"
DEFAULT_THRESHOLD: Final = 0.5
FEATURE_VERSION: Final = 1
FINE_SIDE: Final = 128
COARSE_SIDE: Final = 64
LAYOUT_SIDE: Final = 8
HIST_BINS: Final = 16
LAGS: Final = (1, 2, 4, 8)
SPECTRUM_BANDS: Final = (1, 2, 4, 8, 16, 32)
BLOCKS: Final = 16
TEXTURE_LAYOUT: Final = 4
FINE_BINS: Final = 128
PEAK_BINS: Final = 8
SHARPNESS_PERCENTILES: Final = (90, 99)
MIN_SPAN: Final = 1e-4
"""Smallest 1st-99th percentile grey-level span (of [0, 1]) kept apart; flatter is flat."""


def resized(img: NDArray[np.float32], side: int) -> NDArray[np.float32]:
    """``img`` area-resized to ``side`` x ``side``."""
    return np.asarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), dtype=np.float32)


def _shrunk(img: NDArray[np.float32]) -> NDArray[np.float32]:
    """``img`` at ``FINE_SIDE``; a large image is first shrunk by a whole factor (OpenCV's fast
    path, five times quicker at 3000 pixels) to no less than ``CHECK_SHRINK_SIDE`` (twice
    ``FINE_SIDE``)."""
    return resized(whole_factor_shrink(img), FINE_SIDE)


def _windowed(img: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
    lo, hi = (float(v) for v in np.percentile(img, [1.0, 99.0]))
    span = hi - lo
    unit = np.clip((img - lo) / max(span, MIN_SPAN), 0.0, 1.0) if span > 0 else np.zeros_like(img)
    return unit.astype(np.float32), span


def _autocorrelation(u: NDArray[np.float32]) -> list[float]:
    d = u - float(u.mean())
    var = float((d * d).mean()) + 1e-8
    out = []
    for k in LAGS:
        out.append(float((d[:, :-k] * d[:, k:]).mean()) / var)
        out.append(float((d[:-k, :] * d[k:, :]).mean()) / var)
    return out


@dataclass(frozen=True)
class _Gradients:
    """3x3 Sobel derivatives of a thumbnail and their magnitude, computed once for every feature."""

    gx: NDArray[np.float32]
    gy: NDArray[np.float32]
    magnitude: NDArray[np.float32]

    @classmethod
    def of(cls, u: NDArray[np.float32]) -> _Gradients:
        gx = np.asarray(cv2.Sobel(u, cv2.CV_32F, 1, 0, ksize=3), dtype=np.float32)
        gy = np.asarray(cv2.Sobel(u, cv2.CV_32F, 0, 1, ksize=3), dtype=np.float32)
        return cls(gx, gy, np.hypot(gx, gy))


def _gradients(g: _Gradients) -> list[float]:
    """Mean gradient, structure-tensor coherence (1 for stripes) and horizontal share."""
    gx, gy = g.gx, g.gy
    xx, yy, xy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    energy = xx + yy + 1e-8
    coherence = float(np.hypot(xx - yy, 2.0 * xy)) / energy
    return [float(g.magnitude.mean()), coherence, xx / energy]


def _spectrum(u: NDArray[np.float32]) -> list[float]:
    """Share of the power in octave bands of radial frequency (noise is flat, radiographs ~1/f^2)."""
    power = np.abs(np.fft.fft2(u - float(u.mean()))) ** 2
    fy = np.fft.fftfreq(u.shape[0]) * u.shape[0]
    fx = np.fft.fftfreq(u.shape[1]) * u.shape[1]
    radius = np.hypot(fy[:, None], fx[None, :])
    total = float(power.sum()) + 1e-8
    edges = (*SPECTRUM_BANDS, np.inf)
    return [float(np.log(power[(radius >= a) & (radius < b)].sum() / total + 1e-6))
            for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _texture(u: NDArray[np.float32], magnitude: NDArray[np.float32]) -> list[float]:
    """Where the detail is: radiographs are textured in the lungs and smooth elsewhere, while
    noise and natural textures are alike everywhere and drawn shapes are flat with sharp edges."""
    blocks = u.reshape(BLOCKS, u.shape[0] // BLOCKS, BLOCKS, u.shape[1] // BLOCKS)
    spread = blocks.std(axis=(1, 3))
    level = float(spread.mean()) + 1e-6
    scale = float(magnitude.mean()) + 1e-6
    where = cv2.resize(spread / level, (TEXTURE_LAYOUT, TEXTURE_LAYOUT), interpolation=cv2.INTER_AREA)
    return [float(np.log(level)), float(spread.std()) / level, float((spread < 0.01).mean()),
            *(np.percentile(spread, [10, 50, 90]) / level).tolist(),
            float((magnitude < 0.02).mean()),
            *(np.percentile(magnitude, [25, 50, 75, 95, 99]) / scale).tolist(),
            *where.ravel().tolist()]


def _sharpness(fine: NDArray[np.float32], fine_magnitude: NDArray[np.float32],
               coarse_magnitude: NDArray[np.float32]) -> list[float]:
    """Drawn shapes: a few grey levels (a spiky histogram) and step edges, which keep their
    per-pixel height when the image is halved while smooth anatomy's gradients double."""
    hist = np.histogram(fine, bins=FINE_BINS, range=(0.0, 1.0))[0] / fine.size
    peaks = float(np.sort(hist)[-PEAK_BINS:].sum())
    variation = float(np.abs(np.diff(hist)).sum()) / 2.0
    return [peaks, variation, *(float(np.percentile(fine_magnitude, q))
                                / (float(np.percentile(coarse_magnitude, q)) + 1e-6)
                                for q in SHARPNESS_PERCENTILES)]


def features(gray: NDArray[np.generic]) -> NDArray[np.float32]:
    """The check's description of one grayscale image (any size; grey levels in [0, 1])."""
    img = np.asarray(gray, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img.shape}")
    if not np.isfinite(img).all():
        img = np.nan_to_num(img, nan=0.0, posinf=1.0, neginf=0.0)
    fine, span = _windowed(_shrunk(img))
    coarse = resized(fine, COARSE_SIDE)
    hist = np.histogram(fine, bins=HIST_BINS, range=(0.0, 1.0))[0] / fine.size
    layout = resized(coarse, LAYOUT_SIDE)
    symmetry = float(np.corrcoef(coarse.ravel(), coarse[:, ::-1].ravel())[0, 1]) if coarse.std() > 0 else 0.0
    rough = [float(np.abs(cv2.Laplacian(u, cv2.CV_32F)).mean()) for u in (fine, coarse)]
    fine_grad, coarse_grad = _Gradients.of(fine), _Gradients.of(coarse)
    values = [float(np.log(max(span, MIN_SPAN))), float(fine.mean()), float(fine.std()),
              *hist.tolist(), *_autocorrelation(coarse), *rough, symmetry,
              *_gradients(coarse_grad), *_spectrum(coarse), *layout.ravel().tolist(),
              *_texture(fine, fine_grad.magnitude),
              *_sharpness(fine, fine_grad.magnitude, coarse_grad.magnitude)]
    return np.nan_to_num(np.asarray(values, dtype=np.float32))


FEATURE_COUNT: Final = (3 + HIST_BINS + 2 * len(LAGS) + 2 + 1 + 3 + len(SPECTRUM_BANDS)
                        + LAYOUT_SIDE ** 2 + 12 + TEXTURE_LAYOUT ** 2 + 4)


def _relu(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.maximum(x, 0.0)


@dataclass(frozen=True)
class OodModel:
    """Standardised :func:`features` plus their Mahalanobis distance, into a two-layer perceptron.

    ``score`` is P(not a radiograph); at or above ``threshold`` the image is refused.
    """

    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    precision: NDArray[np.float32]
    hidden_weights: NDArray[np.float32]
    hidden_bias: NDArray[np.float32]
    out_weights: NDArray[np.float32]
    out_bias: float
    threshold: float
    version: str

    def inputs(self, feats: NDArray[np.float32]) -> NDArray[np.float32]:
        """Rows of standardised features with log Mahalanobis distance appended."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale
        distance = np.einsum("ij,jk,ik->i", z, self.precision, z)
        return np.hstack([np.clip(z, -20.0, 20.0),
                          np.log1p(np.maximum(distance, 0.0))[:, None]]).astype(np.float32)

    def scores(self, feats: NDArray[np.float32]) -> NDArray[np.float32]:
        """P(not a radiograph) of each row of :func:`features`."""
        h = _relu(self.inputs(feats) @ self.hidden_weights + self.hidden_bias)
        z = np.clip(h @ self.out_weights + self.out_bias, -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def score(self, gray: NDArray[np.generic]) -> float:
        return float(self.scores(features(gray))[0])

    def check(self, gray: NDArray[np.generic]) -> QualityVerdict | None:
        """``None`` when the pixels look like a radiograph; else a skip verdict with the score."""
        s = self.score(gray)
        if s < self.threshold:
            return None
        why = (f"the pixels do not look like a radiograph (out-of-distribution score {s:.2f} >= "
               f"{self.threshold:.2f}): check what the sender put in Pixel Data (7FE0,0010)")
        return QualityVerdict.skip(GateCode.NOT_RADIOGRAPH, why)

    def to_json(self) -> dict[str, object]:
        def rows(a: NDArray[np.float32]) -> object:
            return np.round(a.astype(np.float64), 6).tolist()

        return {"kind": "out-of-distribution check", "version": self.version,
                "feature_version": FEATURE_VERSION, "features": FEATURE_COUNT,
                "threshold": self.threshold, "mean": rows(self.mean), "scale": rows(self.scale),
                "precision": rows(self.precision), "hidden_weights": rows(self.hidden_weights),
                "hidden_bias": rows(self.hidden_bias), "out_weights": rows(self.out_weights),
                "out_bias": self.out_bias}

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / OOD_FILE
        path.write_text(json.dumps(self.to_json()) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> OodModel:
        try:
            meta = json.loads(path.read_text())
            if int(meta["feature_version"]) != FEATURE_VERSION or int(meta["features"]) != FEATURE_COUNT:
                raise ValueError(f"expects feature version {FEATURE_VERSION} ({FEATURE_COUNT} features)")
            arrays = {k: np.asarray(meta[k], dtype=np.float32) for k in (
                "mean", "scale", "precision", "hidden_weights", "hidden_bias", "out_weights")}
            model = cls(**arrays, out_bias=float(meta["out_bias"]),
                        threshold=float(meta["threshold"]), version=str(meta["version"]))
            model.scores(np.zeros(FEATURE_COUNT, np.float32))  # shapes agree
            return model
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: not an out-of-distribution model ({err})") from err


def load_ood(models_dir: Path | None = None) -> OodModel | None:
    """``models_dir/ood/ood.json``, else the shipped one; ``None`` (logged) if neither."""
    for folder in ([models_dir] if models_dir else []) + [default_models_dir()]:
        path = folder / OOD_DIR / OOD_FILE
        if path.is_file():
            return OodModel.load(path)
    log.warning("no %s/%s found: the not-a-radiograph check is off", OOD_DIR, OOD_FILE)
    return None
