"""Training augmentation: reproducible from a seed, bounded, and each switch does what it says."""

from __future__ import annotations

import numpy as np

from tests.synthetic_cxr import phantom
from training.augment import AugmentConfig, augment

OFF = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, gamma=0,
                    blur_p=0, noise_p=0, jpeg_p=0, flip_p=0)


def _img() -> np.ndarray:
    return phantom(np.random.default_rng(1), "tb", 64)


def test_same_seed_same_augmentation_and_bounded_output() -> None:
    a = augment(_img(), np.random.default_rng(7))
    b = augment(_img(), np.random.default_rng(7))
    c = augment(_img(), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (64, 64) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0


def test_everything_off_is_the_identity() -> None:
    img = _img()
    np.testing.assert_allclose(augment(img, np.random.default_rng(0), OFF), img / 255.0, atol=1e-6)


def test_flip_mirrors_left_right() -> None:
    img = _img()
    out = augment(img, np.random.default_rng(0), AugmentConfig(**{**OFF.__dict__, "flip_p": 1.0}))
    np.testing.assert_allclose(out, img[:, ::-1] / 255.0, atol=1e-6)
