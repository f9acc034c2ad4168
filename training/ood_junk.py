"""Synthetic images that are not radiographs, for the out-of-distribution check.

Each family is a function ``(rng, radiographs) -> image`` (float32 grey levels
in [0, 1], random size); the check is fitted against one seed's junk and
measured on another's. Families derived from radiographs (noise-drowned,
blurred beyond recognition, tile-shuffled) draw from the radiographs they are
given: the train split when fitting, the test split when measuring.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.float32]
Family = Callable[[np.random.Generator, Sequence[Image]], Image]

SIDES: Final = (128, 640)
FONTS: Final = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
                cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    side = int(rng.integers(*SIDES))
    aspect = float(rng.uniform(0.75, 1.33)) if rng.random() < 0.3 else 1.0
    return side, max(16, int(side * aspect))


def _grid(rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pixel coordinates in [-1, 1], rotated by a random angle."""
    rows, cols = _shape(rng)
    y, x = np.mgrid[-1.0:1.0:rows * 1j, -1.0:1.0:cols * 1j].astype(np.float32)
    a = float(rng.uniform(0, np.pi))
    c, s = np.float32(np.cos(a)), np.float32(np.sin(a))
    return x * c + y * s, y * c - x * s


def _f32(img: NDArray[np.generic]) -> Image:
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def uniform_noise(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    lo = float(rng.uniform(0, 0.5))
    return _f32(rng.uniform(lo, float(rng.uniform(lo + 0.05, 1.0)), _shape(rng)))


def gaussian_noise(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    return _f32(rng.normal(rng.uniform(0.2, 0.8), rng.uniform(0.02, 0.4), _shape(rng)))


def salt_and_pepper(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    x, _y = _grid(rng)
    img = np.full(x.shape, rng.uniform(0, 1), np.float32) + rng.uniform(-0.3, 0.3) * x
    hits = rng.random(x.shape)
    p = float(rng.uniform(0.02, 0.5))
    img[hits < p / 2] = 0.0
    img[hits > 1 - p / 2] = 1.0
    return _f32(img)


def flat(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    img = np.full(_shape(rng), rng.uniform(0, 1), np.float32)
    if rng.random() < 0.7:  # near-flat: a little noise or a faint ramp
        x, _y = _grid(rng)
        img = np.full(x.shape, img.flat[0], np.float32)
        img += rng.normal(0, rng.uniform(1e-4, 0.01), x.shape).astype(np.float32)
        img += float(rng.uniform(0, 0.01)) * x
    return _f32(img)


def gradient(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    x, y = _grid(rng)
    ramp = (x + 1) / 2 if rng.random() < 0.6 else np.hypot(x - rng.uniform(-1, 1), y) / 2
    return _f32(np.power(np.clip(ramp, 0, 1), rng.uniform(0.4, 2.5)))


def checkerboard(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    x, y = _grid(rng)
    cells = float(rng.uniform(2, 40))
    board = (np.floor((x + 1) * cells) + np.floor((y + 1) * cells)) % 2
    lo, hi = sorted(rng.uniform(0, 1, 2))
    return _f32(lo + (hi - lo) * board)


def stripes(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    x, _y = _grid(rng)
    wave = np.sin(x * rng.uniform(3, 200) + rng.uniform(0, 6.3))
    square = (wave > rng.uniform(-0.5, 0.5)).astype(np.float32)
    return _f32(square if rng.random() < 0.5 else (wave + 1) / 2)


def sinusoids(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    x, y = _grid(rng)
    img = np.zeros_like(x)
    for _i in range(int(rng.integers(1, 4))):
        fx, fy = rng.uniform(-60, 60, 2)
        img += np.sin(fx * x + fy * y + rng.uniform(0, 6.3))
    return _f32((img - img.min()) / max(float(np.ptp(img)), 1e-6))


def text(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    rows, cols = _shape(rng)
    dark = rng.random() < 0.5
    img = np.full((rows, cols), int(rng.integers(0, 60)) if dark else int(rng.integers(195, 256)),
                  np.uint8)
    scale = float(rng.uniform(0.4, 2.5)) * cols / 512
    ink = int(rng.integers(150, 256) if dark else rng.integers(0, 100))
    alphabet = string.ascii_letters + string.digits + " .,:-/"
    for y in range(int(rng.uniform(10, 40) * scale) + 5, rows, int(rng.uniform(22, 50) * scale) + 4):
        line = "".join(rng.choice(list(alphabet), int(rng.integers(3, 60))))
        x0 = int(rng.integers(0, max(1, cols // 4)))
        cv2.putText(img, line, (x0, y), FONTS[int(rng.integers(len(FONTS)))], scale, ink,
                    max(1, int(rng.uniform(1, 3) * scale)), cv2.LINE_AA)
    return _f32(img / np.float32(255.0))


def dead_leaves(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    """Overlapping discs and boxes of random grey: a standard model of natural-image statistics."""
    rows, cols = _shape(rng)
    img = np.full((rows, cols), rng.uniform(0, 1), np.float32)
    for _i in range(int(rng.integers(30, 400))):
        centre = (int(rng.integers(cols)), int(rng.integers(rows)))
        size = int(max(rows, cols) * min(0.5, float(rng.pareto(2.0)) * 0.03 + 0.005))
        grey = float(rng.uniform(0, 1))
        if rng.random() < 0.6:
            cv2.circle(img, centre, max(1, size), grey, -1)
        else:
            cv2.rectangle(img, centre, (centre[0] + size, centre[1] + int(size * rng.uniform(0.3, 3))),
                          grey, -1)
    if rng.random() < 0.5:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 3))), np.float32)
    return _f32(img + rng.normal(0, rng.uniform(0, 0.03), img.shape))


def power_law_noise(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    """1/f^a noise (clouds, foliage, rock): natural-texture spectra without a body in it."""
    rows, cols = _shape(rng)
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.fftfreq(cols)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(rows, cols)) ** rng.uniform(0.5, 2.0)
    phase = np.exp(2j * np.pi * rng.random((rows, cols)))
    field = np.real(np.fft.ifft2(amplitude * phase)).astype(np.float32)
    field = (field - field.mean()) / (field.std() + 1e-8)
    return _f32(0.5 + field * rng.uniform(0.1, 0.3))


def blurred_noise(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    rows, cols = _shape(rng)
    field = cv2.GaussianBlur(rng.random((rows, cols)).astype(np.float32), (0, 0),
                             float(rng.uniform(1, max(rows, cols) / 12)))
    field = (field - field.mean()) / (field.std() + 1e-8)
    return _f32(0.5 + field * rng.uniform(0.1, 0.3))


def scintigraphy_like(rng: np.random.Generator, _: Sequence[Image]) -> Image:
    """A nuclear-medicine-like frame: a few hot spots of counts on black, coarse and Poisson-noisy."""
    side = int(rng.choice([64, 128, 256]))
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    activity = np.zeros((side, side), np.float32)
    for _i in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0.25, 0.75, 2)
        sy, sx = rng.uniform(0.03, 0.2, 2)
        activity += float(rng.uniform(0.3, 1)) * np.exp(-((y - cy) / sy) ** 2 - ((x - cx) / sx) ** 2)
    counts = rng.poisson(activity * rng.uniform(5, 200)).astype(np.float32)
    out = cv2.resize(counts / max(float(counts.max()), 1.0), _shape(rng)[::-1],
                     interpolation=cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR)
    return _f32(out)


def _radiograph(rng: np.random.Generator, radiographs: Sequence[Image]) -> Image:
    if not radiographs:
        raise ValueError("this junk family needs radiographs to start from")
    return radiographs[int(rng.integers(len(radiographs)))]


def noise_drowned_radiograph(rng: np.random.Generator, radiographs: Sequence[Image]) -> Image:
    """A radiograph under noise much stronger than its own contrast."""
    img = _radiograph(rng, radiographs)
    return _f32(img + rng.normal(0, rng.uniform(0.6, 2.0), img.shape))


def blurred_radiograph(rng: np.random.Generator, radiographs: Sequence[Image]) -> Image:
    """A radiograph blurred until no anatomy is left (sigma a tenth to a fifth of its side)."""
    img = _radiograph(rng, radiographs)
    return _f32(cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.1, 0.2)) * max(img.shape)))


def shuffled_radiograph(rng: np.random.Generator, radiographs: Sequence[Image]) -> Image:
    """A radiograph's tiles in random order: its grey levels, none of its anatomy."""
    img = _radiograph(rng, radiographs)
    tile = int(rng.choice([4, 8, 16, 32]))
    rows, cols = img.shape[0] // tile, img.shape[1] // tile
    tiles = img[:rows * tile, :cols * tile].reshape(rows, tile, cols, tile).swapaxes(1, 2)
    tiles = tiles.reshape(rows * cols, tile, tile)[rng.permutation(rows * cols)]
    return _f32(tiles.reshape(rows, cols, tile, tile).swapaxes(1, 2).reshape(rows * tile, cols * tile))


FAMILIES: Final[dict[str, Family]] = {
    "uniform-noise": uniform_noise,
    "gaussian-noise": gaussian_noise,
    "salt-and-pepper": salt_and_pepper,
    "flat-and-near-flat": flat,
    "gradient": gradient,
    "checkerboard": checkerboard,
    "stripes": stripes,
    "sinusoids": sinusoids,
    "text": text,
    "dead-leaves": dead_leaves,
    "power-law-noise": power_law_noise,
    "blurred-noise": blurred_noise,
    "scintigraphy-like": scintigraphy_like,
    "noise-drowned-radiograph": noise_drowned_radiograph,
    "blurred-radiograph": blurred_radiograph,
    "shuffled-radiograph": shuffled_radiograph,
}


def junk(family: str, count: int, seed: int, radiographs: Sequence[Image] = ()) -> list[Image]:
    """``count`` images of one family; the stream depends on ``seed`` and the family only."""
    make = FAMILIES[family]
    rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    return [make(rng, radiographs) for _ in range(count)]
