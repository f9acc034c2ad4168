"""The shared preprocessing: deterministic, size- and bit-depth independent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.preprocess import (
    PreprocessError,
    area_resize,
    crop_margin,
    equalise,
    percentile_window,
    preprocess_gray,
    surround_mask,
    trim_padding,
    trim_surround,
)
from tests.synthetic_cxr import phantom


def test_output_shape_range_and_determinism() -> None:
    img = phantom(np.random.default_rng(1), "tb", 300)
    a = preprocess_gray(img, 224)
    b = preprocess_gray(img.copy(), 224)
    assert a.shape == (224, 224) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)


def test_bit_depth_independent() -> None:
    img8 = phantom(np.random.default_rng(2), "normal", 256).astype(np.float64)
    img12 = np.round(img8 * 4095 / 255).astype(np.uint16)
    img16 = np.round(img8 * 65535 / 255).astype(np.uint16)
    ref = preprocess_gray(img8.astype(np.uint8), 128)
    for other in (img12, img16):
        assert np.abs(preprocess_gray(other, 128) - ref).mean() < 0.01


def test_size_independent() -> None:
    import cv2

    small = phantom(np.random.default_rng(3), "tb", 256)
    big = cv2.resize(small, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    assert np.abs(preprocess_gray(big, 128) - preprocess_gray(small, 128)).mean() < 0.03


def test_crop_margin_and_window() -> None:
    x = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    assert crop_margin(x, 0.1).shape == (80, 80)
    w = percentile_window(x)
    assert w.min() == 0.0 and w.max() == 1.0


@pytest.mark.parametrize("bad", [np.zeros((64, 64)), np.zeros((10, 10)), np.zeros((4, 4, 3))])
def test_rejects_flat_tiny_or_colour(bad: np.ndarray) -> None:
    with pytest.raises(PreprocessError):
        preprocess_gray(bad, 64)


def test_training_and_serving_see_the_same_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The training loader (cached uint8) and the serving path give the same model input."""
    import cv2

    from inference.pixels import file_to_gray
    from training.data import Record, load_images

    img = phantom(np.random.default_rng(7), "tb", 300)
    for name in ("x.png", "x.jpg"):
        path = tmp_path / name
        cv2.imwrite(str(path), img)
        trained = load_images([Record(path, "tb", "s", "train")], 224).images[0] / 255.0
        served = preprocess_gray(file_to_gray(path), 224)
        assert np.abs(trained - served).max() <= 0.5 / 255 + 1e-6  # only the cache's uint8 rounding


def test_view_stack_identity_flip_and_zoom() -> None:
    from inference.preprocess import parse_view, view_stack

    unit = np.random.default_rng(3).random((40, 40)).astype(np.float32)
    stack = view_stack(unit, ("identity", "flip", "zoom2", "zoom2-flip"))
    assert stack.shape == (4, 40, 40) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[0], unit)
    np.testing.assert_array_equal(stack[1], unit[:, ::-1])
    centre = unit[10:30, 10:30]  # zoom 2 keeps the central half of each side
    assert abs(float(stack[2].mean()) - float(centre.mean())) < 0.02
    np.testing.assert_array_equal(stack[3], stack[2][:, ::-1])
    assert parse_view("zoom1.2-flip") == (1.2, True)
    for bad in ("rotate", "zoom3", "zoomx", "zoom0.5"):
        with pytest.raises(ValueError, match="unknown test-time view"):
            parse_view(bad)


def test_registry_rejects_bad_views(tmp_path: Path) -> None:
    import json

    from inference.registry import ModelError, ModelSpec

    (tmp_path / "model.tflite").write_bytes(b"x")
    meta = {"name": "m", "task": "tb-vs-normal", "version": "1", "architecture": "a", "input_size": 64,
            "threshold": 0.5, "positive_label": "tb", "negative_label": "normal", "file": "model.tflite"}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert ModelSpec.load(tmp_path).views == ("identity",)
    for views in (["flip", "identity"], ["identity", "rotate"], []):
        (tmp_path / "model.json").write_text(json.dumps(meta | {"views": views}))
        with pytest.raises(ModelError):
            ModelSpec.load(tmp_path)


def test_area_resize_fast_path_matches_a_direct_area_resize() -> None:
    """Large images are first block-averaged by a whole factor (fast); the result stays a
    faithful area resize, and images under twice the target take the direct path unchanged."""
    import cv2

    from inference.preprocess import area_resize

    rng = np.random.default_rng(11)
    small = rng.random((300, 280)).astype(np.float32)
    direct = cv2.resize(small, (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(area_resize(small, 224), direct)
    y, x = np.mgrid[0:1802, 0:1790] / 1802.0
    large = (np.sin(6 * x) + np.cos(5 * y)).astype(np.float32) + rng.normal(0, 0.05, x.shape).astype(
        np.float32)
    fast = area_resize(large, 224)
    direct = cv2.resize(large, (224, 224), interpolation=cv2.INTER_AREA)
    assert fast.shape == (224, 224) and fast.dtype == np.float32
    assert float(np.abs(fast - direct).mean()) < 0.01 * float(direct.std())


def _padded(content: np.ndarray) -> np.ndarray:
    """``content`` pasted on a canvas: a white bar of 60 rows below, black columns of 40 beside."""
    h, w = content.shape
    out = np.zeros((h + 60, w + 80), content.dtype)
    out[:h, 40: 40 + w] = content
    out[h:, :] = content.max()
    return out


def test_trim_padding_cuts_flat_bars_and_nothing_else() -> None:
    content = phantom(np.random.default_rng(4), "normal", 300).astype(np.float32)
    assert trim_padding(content).shape == content.shape  # no padding, nothing cut
    trimmed = trim_padding(_padded(content))
    np.testing.assert_array_equal(trimmed, content)
    # bit-depth independent: the same cut on a 16-bit copy
    as16 = np.round(_padded(content) * 257).astype(np.float32)
    assert trim_padding(as16).shape == content.shape
    # a flat image is left for percentile_window to refuse
    assert trim_padding(np.full((64, 64), 7.0, np.float32)).shape == (64, 64)


def test_trim_padding_never_takes_more_than_a_quarter_per_side() -> None:
    img = np.zeros((400, 400), np.float32)
    img[:, 300:] = phantom(np.random.default_rng(5), "normal", 400)[:, :100]  # 75 % black on the left
    assert trim_padding(img).shape == (400, 300)


def test_a_padded_radiograph_preprocesses_like_the_unpadded_one() -> None:
    content = phantom(np.random.default_rng(6), "tb", 300).astype(np.float32)
    a, b = preprocess_gray(content, 128), preprocess_gray(_padded(content), 128)
    np.testing.assert_array_equal(a, b)
    # a 2880-pixel image: the padding is found on a subsample, to within its step (11 pixels),
    # never into the content
    up = np.ones((8, 8), np.float32)
    big, big_content = np.kron(_padded(content), up), np.kron(content, up)
    assert all(0 <= t - c <= 2 * 10 for t, c in zip(trim_padding(big).shape, big_content.shape, strict=True))
    # what stays is a few pixels of the 2400-pixel content's scale (untrimmed: about 0.29)
    assert np.abs(preprocess_gray(big, 128) - preprocess_gray(big_content, 128)).mean() < 0.05


def _surrounded(content: np.ndarray, left: int, right: int, top: int = 0, seed: int = 9) -> np.ndarray:
    """``content`` on a dark, noisy field (air outside the body): not flat, so not padding."""
    h, w = content.shape
    rng = np.random.default_rng(seed)
    out = rng.normal(12.0, 4.0, (h + top, w + left + right)).clip(0, 255).astype(np.float32)
    out[top:, left: left + w] = content
    return out


def test_trim_surround_cuts_dark_sides_and_keeps_the_enclosed_lungs() -> None:
    content = phantom(np.random.default_rng(11), "normal", 300).astype(np.float32)
    # the phantom's lungs are dark but enclosed by the body: not surround, nothing cut
    assert not surround_mask(content).any()
    assert trim_surround(content).shape == content.shape
    wide = _surrounded(content, left=90, right=60, top=30)
    assert trim_padding(wide).shape == wide.shape  # noisy: the padding trim leaves it
    out = trim_surround(wide)
    # cut to the body, to within one probe cell (390 / 128 = 3 pixels), never into it
    assert 0 <= out.shape[1] - 300 <= 2 * 4 and 0 <= out.shape[0] - 300 <= 4
    # bit-depth independent: the same cut on a 16-bit copy
    assert trim_surround(np.round(wide * 257)).shape == out.shape


def test_trim_surround_needs_most_of_a_column_dark() -> None:
    content = phantom(np.random.default_rng(12), "normal", 300).astype(np.float32)
    img = content.copy()
    img[:120, :40] = 5.0  # a dark corner above the shoulder: 40 % of those columns
    assert trim_surround(img).shape == img.shape
    img[:200, :40] = 5.0  # two thirds of the columns: air beside the body
    assert trim_surround(img).shape[1] < 300


def test_trim_surround_never_takes_more_than_a_quarter_per_side() -> None:
    content = phantom(np.random.default_rng(13), "normal", 200).astype(np.float32)
    wide = _surrounded(content, left=400, right=0)
    h, w = trim_surround(wide).shape
    assert h == 200 and w >= wide.shape[1] * 3 // 4 - 1


def test_a_wide_field_radiograph_preprocesses_like_the_tight_one() -> None:
    content = phantom(np.random.default_rng(14), "tb", 300).astype(np.float32)
    wide = _surrounded(content, left=80, right=80)
    tight, framed = preprocess_gray(content, 128), preprocess_gray(wide, 128)
    # the same steps without the surround trim: the dark sides stay in the model input
    untrimmed = equalise(percentile_window(area_resize(crop_margin(trim_padding(wide)), 128)))
    assert np.abs(framed - tight).mean() < 0.05 < np.abs(untrimmed - tight).mean()
