"""Training augmentation: reproducible from a seed, bounded, and each switch does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synthetic_cxr import phantom
from training.augment import AugmentConfig, amplitude_mix, augment, random_texture

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


def _smooth_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two images whose global tone differs (one with a dark-to-bright gradient, one bright)."""
    img = _img().astype(np.float32) / 255.0
    ramp = np.linspace(0.2, 0.8, img.shape[0], dtype=np.float32)[:, np.newaxis]
    other = phantom(np.random.default_rng(2), "normal", img.shape[0]).astype(np.float32) / 255.0
    style = np.clip(0.3 * other + 0.55, 0.0, 1.0)  # another radiograph, brighter and flatter
    return np.clip(0.5 * img + 0.5 * ramp, 0.0, 1.0), style


def test_amplitude_mix_keeps_the_image_at_zero_weight_and_takes_the_style_tone() -> None:
    x, style = _smooth_pair()
    np.testing.assert_allclose(amplitude_mix(x, style, 0.0, 0.1), x, atol=1e-5)
    mixed = amplitude_mix(x, style, 1.0, 0.1)
    assert mixed.shape == x.shape and mixed.dtype == np.float32
    assert 0.0 <= mixed.min() and mixed.max() <= 1.0
    # the mean (zero frequency) moves to the style's; the structure (phase) stays the image's
    target = float(style.mean())
    assert abs(float(mixed.mean()) - target) < 0.25 * abs(float(x.mean()) - target)
    assert np.corrcoef(mixed.ravel(), x.ravel())[0, 1] > np.corrcoef(mixed.ravel(), style.ravel())[0, 1]


def test_amplitude_mix_leaves_high_frequencies_alone() -> None:
    x, style = _smooth_pair()
    mixed = amplitude_mix(x, style, 1.0, 0.05)
    high = np.abs(np.fft.fftshift(np.fft.fft2(mixed)))[:4, :]  # far from the centred low-frequency box
    np.testing.assert_allclose(high, np.abs(np.fft.fftshift(np.fft.fft2(x)))[:4, :], rtol=1e-3, atol=1e-3)


def test_amplitude_mix_refuses_images_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        amplitude_mix(np.zeros((8, 8), np.float32), np.zeros((8, 9), np.float32), 0.5, 0.1)


def test_fourier_mix_only_with_a_style_image_and_reproducible() -> None:
    img = _img()
    style = np.full_like(img, 200)
    cfg = AugmentConfig(**{**OFF.__dict__, "fourier_p": 1.0})
    np.testing.assert_allclose(augment(img, np.random.default_rng(0), cfg), img / 255.0, atol=1e-6)
    a = augment(img, np.random.default_rng(3), cfg, style)
    np.testing.assert_array_equal(a, augment(img, np.random.default_rng(3), cfg, style))
    assert not np.allclose(a, img / 255.0, atol=1e-3)


def test_random_texture_keeps_flat_regions_and_mean_and_is_bounded() -> None:
    flat = np.full((32, 32), 0.4, np.float32)
    np.testing.assert_array_equal(random_texture(flat, np.random.default_rng(0), 0.5), flat)
    x = _img().astype(np.float32) / 255.0
    out = random_texture(x, np.random.default_rng(1), 0.5)
    assert out.shape == x.shape and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert not np.allclose(out, x, atol=1e-3)
    assert abs(float(out.mean()) - float(x.mean())) < 0.02  # zero-sum filter: tone kept
    assert np.corrcoef(out.ravel(), x.ravel())[0, 1] > 0.8  # shapes kept
    np.testing.assert_allclose(random_texture(x, np.random.default_rng(1), 0.0), x, atol=1e-6)


def test_texture_switch() -> None:
    img = _img()
    on = AugmentConfig(**{**OFF.__dict__, "texture_p": 1.0})
    a = augment(img, np.random.default_rng(4), on)
    np.testing.assert_array_equal(a, augment(img, np.random.default_rng(4), on))
    assert not np.allclose(a, img / 255.0, atol=1e-3)


def test_steps_that_are_off_draw_nothing_from_the_generator() -> None:
    """Switched-off optional steps leave the random stream alone: an older run's seed reproduces."""
    img = _img()
    gens = [np.random.default_rng(9) for _ in range(3)]
    augment(img, gens[0], AugmentConfig())
    augment(img, gens[1], AugmentConfig(fourier_p=0.0, texture_p=0.0, frame_p=0.0), style=img)
    augment(img, gens[2], AugmentConfig(frame_p=1.0))  # a step that is on does draw
    after = [g.random() for g in gens]
    assert after[0] == after[1] and after[2] != after[0]
