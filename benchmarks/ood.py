"""Cost of the not-a-radiograph check (``inference/ood.py``) per image, against the classifiers' input.

Not a test: run ``.venv/bin/python benchmarks/ood.py [--repeat 30]``.

For synthetic chest radiographs of 256, 1024, 2048 and 3000 pixels a side, times the
shipped check (features and score) and, as the baseline measured in the same run, the
preprocessing every classified image goes through anyway (``preprocess_gray`` to 224),
and prints the median of each in milliseconds and their ratio. One thread (OpenCV set
to 1) so that the figures are per core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from inference.ood import load_ood  # noqa: E402
from inference.preprocess import preprocess_gray  # noqa: E402
from tests.dicom_factory import chest_phantom  # noqa: E402

SIDES = (256, 1024, 2048, 3000)
MODEL_INPUT = 224


def median_ms(work: Callable[[], object], repeat: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    model = load_ood()
    if model is None:
        print("models/ood/ood.json is missing")
        return 1
    print(f"{'side':>6} {'check ms':>9} {'preprocess ms':>14} {'ratio':>6}")
    for side in SIDES:
        gray = chest_phantom(side, side).astype(np.float32)
        check = median_ms(partial(model.check, gray), args.repeat)
        base = median_ms(partial(preprocess_gray, gray, MODEL_INPUT), args.repeat)
        print(f"{side:>6} {check:>9.2f} {base:>14.2f} {check / base:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
