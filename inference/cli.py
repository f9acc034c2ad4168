"""Subcommand ``predict``: both classifiers on PNG, JPEG or DICOM files."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from inference.results import Prediction, prediction_to_dict

if TYPE_CHECKING:
    from inference.engine import InferenceEngine

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("predict", help="classify PNG, JPEG or DICOM files with both classifiers")
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--models", type=Path, help="models folder (default: the shipped models/)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(func=_cmd_predict)


def predict_file(engine: InferenceEngine, path: Path) -> Prediction:
    """Classify one file; DICOM goes through the quality gate first, every image through
    the grey-scale polarity check."""
    from inference.pixels import PixelError
    from inference.quality import file_to_checked_gray

    gray = file_to_checked_gray(path)
    pixel_verdict = engine.check_pixels(gray)
    if pixel_verdict is not None:
        raise PixelError(pixel_verdict.why)
    return engine.predict_gray(gray, heatmap=False)


def _describe(path: Path, p: Prediction) -> str:
    tb, pn = p.tb_vs_normal, p.pneumonia_vs_tb
    lines = [f"{path}: {p.finding.value}"]
    for title, s in (("TB vs normal   ", tb), ("pneumonia vs TB", pn)):
        lines.append(f"  {title} {s.score:.3f} (threshold {s.threshold:.3f}, "
                     f"{s.model_name} {s.model_version})")
    return "\n".join(lines)


def _cmd_predict(args: argparse.Namespace) -> int:
    from inference.engine import InferenceEngine
    from inference.pixels import PixelError
    from inference.preprocess import PreprocessError
    from inference.registry import ModelError, default_models_dir

    try:
        engine = InferenceEngine.from_models_dir(args.models or default_models_dir())
    except ModelError as err:
        print(f"error: {err}")
        return 2
    failures = 0
    for path in args.files:
        try:
            pred = predict_file(engine, path)
        except (OSError, PixelError, PreprocessError) as err:
            failures += 1
            reason = str(err).removeprefix(f"{path}: ")  # the readers name the file themselves
            out = {"file": str(path), "error": reason}
            print(json.dumps(out) if args.json else f"{path}: not classified: {reason}")
            continue
        print(json.dumps({"file": str(path), **prediction_to_dict(pred)}) if args.json
              else _describe(path, pred))
    return 1 if failures else 0
