"""Benchmark: DICOM pixels to model input, against the naive pydicom path.

A synthetic 2048×2048 12-bit chest radiograph (Explicit VR Little Endian),
in three header variants: plain MONOCHROME2; MONOCHROME1 with rescale and a
window (the affine fast path); a VOI LUT Sequence (the per-pattern table).

Measured in the same run, median ms of ``--n`` repetitions:

- ours: ``dicom_to_gray`` and ``dicom_to_gray`` + ``preprocess_gray``;
- baseline: pydicom's ``pixel_array`` then ``apply_modality_lut`` and
  ``apply_voi_lut`` and a float32 conversion, the usual way to do it;
- floor: ``pixel_array`` + ``astype(float32)`` alone (no LUTs at all).

Prints ms and the ratio baseline / ours. Goal: dicom_to_gray + preprocess a
few ms, faster than the baseline's LUTs alone.

    .venv/bin/python benchmarks/pixels.py [--n 30] [--size 2048]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.pixels import dicom_to_gray  # noqa: E402
from inference.preprocess import preprocess_gray  # noqa: E402
from tests.dicom_factory import make_chest  # noqa: E402


def median_ms(fn: Callable[[], object], n: int) -> float:
    """Median wall time of ``fn`` over ``n`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def naive(ds: Dataset) -> np.ndarray:
    """What most code does with pydicom: decode, modality LUT, VOI LUT, float32."""
    arr = pixel_array(ds, index=0)
    return np.asarray(apply_voi_lut(apply_modality_lut(arr, ds), ds), dtype=np.float32)


def _contenders(ds: Dataset) -> list[Callable[[], object]]:
    """ours, ours + preprocess, naive pydicom, decode floor: for one dataset."""
    return [lambda: dicom_to_gray(ds), lambda: preprocess_gray(dicom_to_gray(ds)),
            lambda: naive(ds), lambda: pixel_array(ds, index=0).astype(np.float32)]


def variants(size: int) -> dict[str, Dataset]:
    common: dict[str, Any] = {"rows": size, "columns": size, "bits_stored": 12}
    return {
        "plain MONOCHROME2": make_chest(**common),
        "MONO1 + rescale + window": make_chest(photometric="MONOCHROME1", rescale=(1.0, -1024.0),
                                               window=(1000.0, 3000.0), **common),
        "VOI LUT Sequence": make_chest(voi_lut=True, **common),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    print(f"{args.size}x{args.size} 12-bit, median of {args.n} runs (ms)")
    print(f"{'header':26} {'ours':>7} {'ours+prep':>10} {'naive':>7} {'floor':>7} "
          f"{'naive/ours':>11}")
    for name, ds in variants(args.size).items():
        row = [median_ms(fn, args.n) for fn in _contenders(ds)]
        print(f"{name:26} {row[0]:7.1f} {row[1]:10.1f} {row[2]:7.1f} {row[3]:7.1f} "
              f"{row[2] / row[0]:10.1f}x")
    gray = dicom_to_gray(variants(args.size)["plain MONOCHROME2"])
    print(f"preprocess_gray alone: {median_ms(lambda: preprocess_gray(gray), args.n):.1f} ms")


if __name__ == "__main__":
    main()
