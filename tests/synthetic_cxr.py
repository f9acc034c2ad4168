"""A tiny synthetic labelled chest X-ray set for training tests (seconds, no real data).

"tb" images carry bright nodules in the upper lung fields, "normal" images
don't, so a small CNN can learn the difference in a few steps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray


def phantom(rng: np.random.Generator, label: str, size: int = 96) -> NDArray[np.uint8]:
    """A chest-like image: bright body, two dark lungs, nodules when ``label`` is tb."""
    img = np.full((size, size), 170, np.float32)
    for cx in (0.32, 0.68):
        cv2.ellipse(img, (int(cx * size), int(0.5 * size)), (int(0.14 * size), int(0.3 * size)),
                    0, 0, 360, 60, -1)
    if label in ("tb", "pneumonia"):
        for _ in range(4):
            x = int(rng.uniform(0.22, 0.78) * size)
            y = int(rng.uniform(0.3, 0.55 if label == "tb" else 0.75) * size)
            cv2.circle(img, (x, y), int(0.05 * size), 200, -1)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: Path, per_class: int = 24, labels: tuple[str, ...] = ("tb", "normal"),
                  seed: int = 0, corrupt: int = 1) -> Path:
    """Write PNGs and labels.csv (with split) under ``root``; ``corrupt`` broken files included."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"{label}/{label}-{i:03d}.png"
            cv2.imwrite(str(root / rel), phantom(rng, label))
            split = "val" if i % 4 == 1 else "test" if i % 4 == 2 else "train"
            rows.append((rel, label, f"synthetic-{label}", split))
    for i in range(corrupt):
        rel = f"{labels[0]}/corrupt-{i}.png"
        (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        rows.append((rel, labels[0], f"synthetic-{labels[0]}", "train"))
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "source", "split"])
        w.writerows(rows)
    return root
