"""Augmentation of preprocessed training images (uint8, model input size).

Geometric: rotation, shift, zoom (one affine warp), and optionally a left-right
mirror. Photometric, chosen to
blur the capture differences between film photographs and digital
radiographs: brightness/contrast, gamma, Gaussian blur, noise and JPEG
re-compression. Style transfer in the Fourier domain (``fourier_p``): the
low-frequency amplitude spectrum of the image (global contrast, brightness
gradients, film tone: the capture) is blended with that of another training
image drawn regardless of its label, while the phase (the anatomy and any
lesion) is kept, so that capture no longer tells one class from the other
(Yang and Soatto, FDA, CVPR 2020; Xu et al., CVPR 2021). Random texture
(``texture_p``): a random zero-mean 3×3 to 7×7 filter response is added to the
image, so that grain, sharpness and edge emphasis (film against digital
detector) vary at random while shapes stay (after RandConv, Xu et al., ICLR
2021). Random frame (``frame_p``): the image is shrunk, tilted and pasted on a
constant black, white or grey canvas, sometimes with a bar along one side, the
way many digital radiographs arrive (padded, rotated, scanned onto a larger
sheet); without it only the scanned TB films have frames, and a frame means
TB to the model. Each step is drawn
from a seeded generator, so a run is reproducible.
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
    fourier_p: float = 0.0  # amplitude-spectrum style mix with another image (off unless asked for)
    fourier_beta: float = 0.02  # half-width of the mixed low-frequency square, fraction of the side
    texture_p: float = 0.0  # random local filter added (off unless asked for)
    frame_p: float = 0.0  # random constant frame around a shrunk, tilted copy (off unless asked for)
    texture_strength: float = 0.5  # largest weight of the filter response, relative to the image's spread


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


def amplitude_mix(x: NDArray[np.float32], style: NDArray[np.float32], lam: float,
                  beta: float) -> NDArray[np.float32]:
    """``x`` with the low frequencies of its amplitude spectrum blended towards ``style``'s.

    Inside the centred square of half-width ``beta`` × side the amplitude becomes
    ``(1 - lam) * |F(x)| + lam * |F(style)|``; the phase of ``x`` is kept
    everywhere. ``lam = 0`` returns ``x`` (to rounding); the square is symmetric
    about the zero frequency, so the result stays real.
    """
    if x.shape != style.shape:
        raise ValueError(f"amplitude_mix: shapes differ, {x.shape} and {style.shape}")
    spec = np.fft.fftshift(np.fft.fft2(x))
    amp, phase = np.abs(spec), np.angle(spec)
    amp_style = np.abs(np.fft.fftshift(np.fft.fft2(style)))
    h, w = x.shape
    b = max(1, int(beta * min(h, w)))
    box = (slice(h // 2 - b, h // 2 + b + 1), slice(w // 2 - b, w // 2 + b + 1))
    amp[box] = (1.0 - lam) * amp[box] + lam * amp_style[box]
    mixed = np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase))).real
    return np.clip(mixed, 0.0, 1.0).astype(np.float32)


def random_texture(x: NDArray[np.float32], rng: np.random.Generator,
                   strength: float) -> NDArray[np.float32]:
    """``x`` plus a random filter's response: random grain, sharpness and edge emphasis.

    The filter (3, 5 or 7 pixels square, Gaussian weights) has zero sum, so flat
    regions and the mean grey stay; its response is scaled to the image's
    standard deviation and added with a weight drawn from ±``strength``.
    """
    k = int(rng.choice([3, 5, 7]))
    kernel = rng.normal(0.0, 1.0, (k, k)).astype(np.float32)
    kernel -= kernel.mean()
    response = np.asarray(cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101),
                          dtype=np.float32)
    spread = float(response.std())
    if spread < 1e-6:
        return x
    weight = rng.uniform(-strength, strength) * float(x.std()) / spread
    return np.clip(x + np.float32(weight) * response, 0.0, 1.0).astype(np.float32)


def random_frame(x: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """``x`` shrunk to 70–95 %, tilted by up to ±8°, moved, on a constant canvas.

    The canvas is black, white or a random grey; half the time a bar of the
    same value (3–15 % of the side) also covers one side.
    """
    size = x.shape[0]
    value = float(rng.choice([0.0, 1.0, float(rng.uniform(0.0, 1.0))]))
    scale = rng.uniform(0.70, 0.95)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-8.0, 8.0), scale)
    m[:, 2] += rng.uniform(-1.0, 1.0, 2) * (1.0 - scale) / 2 * size
    out = np.asarray(cv2.warpAffine(x, m, (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=value), np.float32)
    if rng.random() < 0.5:
        width = max(1, int(rng.uniform(0.03, 0.15) * size))
        sides = (np.s_[:width], np.s_[-width:], np.s_[:, :width], np.s_[:, -width:])
        out[sides[int(rng.integers(4))]] = value
    return out


def augment(img: NDArray[np.uint8], rng: np.random.Generator,
            cfg: AugmentConfig = AugmentConfig(),
            style: NDArray[np.uint8] | None = None) -> NDArray[np.float32]:
    """Return one augmented copy of ``img`` as float32 in [0, 1].

    ``style``: another training image whose capture is mixed in with probability
    ``cfg.fourier_p`` (:func:`amplitude_mix`, a blend weight drawn from U(0, 1)).
    """
    if rng.random() < cfg.flip_p:
        img = img[:, ::-1]
    x = _affine(np.ascontiguousarray(img), rng, cfg).astype(np.float32) / 255.0
    if style is not None and cfg.fourier_p > 0 and rng.random() < cfg.fourier_p:
        x = amplitude_mix(x, style.astype(np.float32) / 255.0, float(rng.uniform(0.0, 1.0)),
                          cfg.fourier_beta)
    # a step that is off draws nothing, so a run from before the step existed reproduces
    if cfg.frame_p > 0 and rng.random() < cfg.frame_p:
        x = random_frame(x, rng)
    if cfg.texture_p > 0 and rng.random() < cfg.texture_p:
        x = random_texture(x, rng, cfg.texture_strength)
    x = _photometric(x, rng, cfg)
    if rng.random() < cfg.jpeg_p:
        x = _jpeg(x, rng)
    return x
