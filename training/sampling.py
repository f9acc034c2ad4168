"""Which training images a batch draws, and how often: balanced by class and by source.

One function for the binary tasks and the three-class head (:mod:`training.three_class`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from numpy.typing import NDArray


def sampling_weights(y: NDArray[np.generic], sources: list[str], balance: str,
                     source_weights: dict[str, float] | None = None,
                     classes: int = 2) -> NDArray[np.float64]:
    """Per-image sampling probability; ``y`` holds class indices ``0 .. classes - 1``.

    ``class``: each class drawn equally often (half the time for a binary task).
    ``source``: in addition, every source within a class equally often, so that
    no single capture style (e.g. scanned film) stands for a class. ``none``:
    uniform. ``source_weights`` then scales named sources (0 leaves a source out
    of training), after which each class is brought back to its share.
    """
    if balance == "none":
        w = np.full(len(y), 1.0)
    else:
        keys = [(int(t), s if balance == "source" else "") for t, s in zip(y, sources, strict=True)]
        per_key = Counter(keys)
        keys_per_class = Counter(k[0] for k in per_key)
        w = np.array([1.0 / (per_key[k] * keys_per_class[k[0]] * classes) for k in keys])
    if source_weights:
        for name, factor in source_weights.items():
            w[np.asarray(sources) == name] *= factor
        if balance != "none":
            for cls in range(classes):
                total = w[y == cls].sum()
                if total <= 0:
                    raise ValueError(f"source_weights: class {cls} has no training image left")
                w[y == cls] *= (1.0 / classes) / total
    if w.sum() <= 0:
        raise ValueError("source_weights: every training image has weight 0")
    return w / w.sum()
