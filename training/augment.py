"""Augmentation of preprocessed training images (uint8, model input size).

Geometric: rotation, shift, zoom (one affine warp), and optionally a left-right
mirror. Photometric, chosen to
blur the capture differences between film photographs and digital
radiographs: brightness/contrast, gamma, Gaussian blur, noise and JPEG
re-compression. Each step is drawn from a seeded generator, so a run is
reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of each augmentation; zero switches one off."""

    rotation_deg: float = 10.0
    shift: float = 0.08
    zoom: float = 0.12
    brightness: float = 0.12
    contrast: float = 0.25
    gamma: float = 0.35
    blur_p: float = 0.3
    noise_p: float = 0.3
    jpeg_p: float = 0.3
    flip_p: float = 0.0  # left-right mirror (anatomy is not symmetric: off unless asked for)


def _affine(img: NDArray[np.uint8], rng: np.random.Generator, cfg: AugmentConfig) -> NDArray[np.uint8]:
    size = img.shape[0]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    scale = 1.0 + rng.uniform(-cfg.zoom, cfg.zoom)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.uniform(-cfg.shift, cfg.shift, 2) * size
    warped = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    return np.asarray(warped, dtype=np.uint8)


def _photometric(x: NDArray[np.float32], rng: np.random.Generator,
                 cfg: AugmentConfig) -> NDArray[np.float32]:
    gamma = float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    x = np.power(np.clip(x, 0.0, 1.0), gamma)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    x = (x - 0.5) * contrast + 0.5 + rng.uniform(-cfg.brightness, cfg.brightness)
    if rng.random() < cfg.blur_p:
        x = np.asarray(cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5)), dtype=np.float32)
    if rng.random() < cfg.noise_p:
        x = x + rng.normal(0.0, rng.uniform(0.01, 0.04), x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _jpeg(x: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    u8 = np.round(x * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
    decoded = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else None
    if decoded is None:
        return x
    return decoded.astype(np.float32) / np.float32(255.0)


def augment(img: NDArray[np.uint8], rng: np.random.Generator,
            cfg: AugmentConfig = AugmentConfig()) -> NDArray[np.float32]:
    """Return one augmented copy of ``img`` as float32 in [0, 1]."""
    if rng.random() < cfg.flip_p:
        img = img[:, ::-1]
    x = _affine(np.ascontiguousarray(img), rng, cfg).astype(np.float32) / 255.0
    x = _photometric(x, rng, cfg)
    if rng.random() < cfg.jpeg_p:
        x = _jpeg(x, rng)
    return x
