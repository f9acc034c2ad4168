"""Benchmark: the served path (preprocess + both classifiers through LiteRT) against Keras.

Per image: preprocessing of a synthetic 2048×2048 12-bit radiograph plus both
classifiers, each with its test-time views (``model.json`` ``views``), every
distinct member network once on the views it is needed for. Baseline
measured in the same run: the same preprocessing plus ``model.predict`` of
the same two Keras models on the same views. Prints ms per image and the
ratio. Goal: served path ≥ 3× faster than Keras and < 30 ms per image.

    .venv/bin/python benchmarks/inference_speed.py [--models models] [--n 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def synthetic_radiograph(seed: int) -> np.ndarray:
    """A 2048×2048 12-bit chest-like image (values 0..4095, uint16)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:2048, 0:2048] / 2048.0
    body = 3000 - 1800 * (((x - 0.33) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1)
    body = body - 1800 * (((x - 0.67) / 0.13) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1)
    return np.clip(body + rng.normal(0, 60, body.shape), 0, 4095).astype(np.uint16)


def time_per_image(fn: Callable[[np.ndarray], object], images: list[np.ndarray]) -> list[float]:
    fn(images[0])  # warm-up
    out = []
    for img in images:
        t = time.perf_counter()
        fn(img)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()

    import keras

    from inference.engine import InferenceEngine
    from inference.preprocess import preprocess_gray, view_stack

    engine = InferenceEngine.from_models_dir(args.models)
    k_tb = keras.saving.load_model(args.models / "tb-vs-normal" / "model.keras")
    k_pn = keras.saving.load_model(args.models / "pneumonia-vs-tb" / "model.keras")
    size = engine.tb.input_size
    images = [synthetic_radiograph(i) for i in range(min(args.n, 8))]
    images = (images * (args.n // len(images) + 1))[: args.n]

    def served(img: np.ndarray) -> object:
        return engine.predict_gray(img, heatmap=True)

    def baseline(img: np.ndarray) -> object:  # the same test-time views as served, one batch each
        unit = preprocess_gray(img, size)
        x_tb = view_stack(unit, engine.tb.views)[..., None]
        x_pn = view_stack(unit, engine.pneumonia.views)[..., None]
        return k_tb.predict(x_tb, verbose=0), k_pn.predict(x_pn, verbose=0)

    pre = time_per_image(lambda img: preprocess_gray(img, size), images)
    lite = time_per_image(served, images)
    base = time_per_image(baseline, images)
    med = statistics.median
    print(f"images: {args.n} synthetic 2048x2048 12-bit; models: {args.models}; test-time views: "
          f"TB {len(engine.tb.views)}, pneumonia {len(engine.pneumonia.views)}; LiteRT network passes "
          f"per image: {engine.runner.passes}")
    print(f"preprocessing only          median {med(pre):7.2f} ms")
    print(f"served (LiteRT, both + CAM) median {med(lite):7.2f} ms  p95 {np.percentile(lite, 95):7.2f} ms")
    print(f"baseline (Keras predict)    median {med(base):7.2f} ms  p95 {np.percentile(base, 95):7.2f} ms")
    print(f"speed-up served vs Keras: {med(base) / med(lite):.1f}x (goal >= 3x; served goal < 30 ms)")


if __name__ == "__main__":
    main()
