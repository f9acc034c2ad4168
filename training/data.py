"""Data sets for training and evaluation.

Two layouts are read:

* a ``labels.csv`` with ``path,label,source[,split]`` (as in ``../shared/data/cxr``);
* a folder per class (``Normal/``, ``Tuberculosis/``, ...), mapped to our labels by
  :data:`FOLDER_ALIASES`; the folder name is used as the source.

Unreadable or corrupt images are skipped, counted and named in the log. When no
split is given, a stratified split (by label and source) is made from a seed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference.pixels import PixelError
from inference.preprocess import PreprocessError, preprocess_gray
from inference.quality import file_to_checked_gray

log = logging.getLogger(__name__)

LABELS = ("normal", "pneumonia", "tb")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
FOLDER_ALIASES = {
    "normal": "normal",
    "no_finding": "normal",
    "tuberculosis": "tb",
    "tb": "tb",
    "pneumonia": "pneumonia",
    "viral pneumonia": "pneumonia",
    "covid": "pneumonia",
}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The data set cannot be read (missing file, unknown label, no images)."""


@dataclass(frozen=True)
class Record:
    """One labelled image."""

    path: Path
    label: str
    source: str
    split: str


@dataclass
class ImageSet:
    """Preprocessed images with their labels, sources and paths (aligned arrays)."""

    images: NDArray[np.uint8]
    labels: list[str]
    sources: list[str]
    paths: list[str]
    skipped: list[str] = field(default_factory=list)

    def subset(self, mask: NDArray[np.bool_]) -> ImageSet:
        idx = np.flatnonzero(mask)
        return ImageSet(
            self.images[idx],
            [self.labels[i] for i in idx],
            [self.sources[i] for i in idx],
            [self.paths[i] for i in idx],
        )


def read_records(root: Path, seed: int = 42, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> list[Record]:
    """Read ``root/labels.csv`` if present, else a folder-per-class layout."""
    csv_path = root / "labels.csv"
    records = _read_csv(root, csv_path) if csv_path.exists() else _read_folders(root)
    if not records:
        raise DataError(f"no images found under {root}")
    if any(r.split == "" for r in records):
        records = stratified_split(records, seed, val_fraction, test_fraction)
    return records


def _read_csv(root: Path, csv_path: Path) -> list[Record]:
    out = []
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            label = row["label"].strip().lower()
            if label not in LABELS:
                raise DataError(f"{csv_path}: unknown label {label!r}; expected one of {LABELS}")
            split = (row.get("split") or "").strip()
            if split and split not in SPLITS:
                raise DataError(f"{csv_path}: unknown split {split!r}; expected one of {SPLITS}")
            source = (row.get("source") or label).strip()
            out.append(Record(root / row["path"], label, source, split))
    return out


def _read_folders(root: Path) -> list[Record]:
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = FOLDER_ALIASES.get(folder.name.strip().lower())
        if label is None:
            log.warning("ignoring folder %s: not a known class name (%s)", folder,
                        ", ".join(sorted(FOLDER_ALIASES)))
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                out.append(Record(path, label, folder.name, ""))
    return out


def stratified_split(records: list[Record], seed: int, val_fraction: float,
                     test_fraction: float) -> list[Record]:
    """Assign train/val/test per (label, source) stratum, reproducibly from ``seed``."""
    rng = random.Random(seed)
    strata: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        strata.setdefault((r.label, r.source), []).append(r)
    out = []
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda r: str(r.path))
        rng.shuffle(group)
        n_val = int(round(len(group) * val_fraction))
        n_test = int(round(len(group) * test_fraction))
        for i, r in enumerate(group):
            split = "val" if i < n_val else "test" if i < n_val + n_test else "train"
            out.append(Record(r.path, r.label, r.source, split))
    return out


def as_model_input(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Cached uint8 preprocessed images to the float model input ``(n, s, s, 1)``."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def load_gray(path: Path) -> NDArray[np.float32]:
    """Read an image file (PNG, JPEG, ... or DICOM) as grayscale in [0, 1].

    The serving path's own reader (:func:`inference.quality.file_to_checked_gray`),
    so a file reaches ``preprocess_gray`` identically in training and serving, and a
    DICOM file the gateway would not classify (not a frontal chest radiograph, an
    unsupported pixel format) is refused here too. Raises :class:`PixelError` with
    the reason.
    """
    if not path.is_file():
        raise PixelError(f"{path}: no such file")
    return file_to_checked_gray(path)


def load_images(records: list[Record], size: int) -> ImageSet:
    """Read and preprocess every record; skip (and log) the unreadable ones."""
    images, kept, skipped = [], [], []
    for r in records:
        try:
            unit = preprocess_gray(load_gray(r.path), size)
        except PixelError as err:
            skipped.append(str(err))
            continue
        except PreprocessError as err:
            skipped.append(f"{r.path}: {err}")
            continue
        images.append(np.round(unit * 255).astype(np.uint8))
        kept.append(r)
    for reason in skipped:
        log.warning("skipped %s", reason)
    if skipped:
        log.warning("skipped %d of %d images", len(skipped), len(records))
    arr = np.stack(images) if images else np.empty((0, size, size), np.uint8)
    return ImageSet(arr, [r.label for r in kept], [r.source for r in kept],
                    [str(r.path) for r in kept], skipped)


def load_split_cached(records: list[Record], split: str, size: int, cache_dir: Path | None) -> ImageSet:
    """Load one split, reusing a cache keyed by the file list and preprocessing size."""
    chosen = [r for r in records if r.split == split]
    if cache_dir is None:
        return load_images(chosen, size)
    key = hashlib.sha256(
        ("|".join(f"{r.path}:{r.label}:{r.source}" for r in chosen) + f"#{size}#v5").encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"{split}-{size}-{key}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return ImageSet(z["images"], list(z["labels"]), list(z["sources"]), list(z["paths"]))
    data = load_images(chosen, size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=data.images, labels=np.array(data.labels), sources=np.array(data.sources),
             paths=np.array(data.paths))
    return data


def describe(data: ImageSet) -> str:
    """A one-line count per (label, source)."""
    counts = Counter(zip(data.labels, data.sources, strict=True))
    return ", ".join(f"{lab}/{src}={n}" for (lab, src), n in sorted(counts.items()))


def dataset_hash(records: list[Record]) -> str:
    """SHA-256 over the sorted (path name, label, source, split) rows: identifies the data set."""
    rows = sorted(f"{r.path.name},{r.label},{r.source},{r.split}" for r in records)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()
