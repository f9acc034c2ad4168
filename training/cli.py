"""Subcommands ``train``, ``ensemble``, ``unpack``, ``evaluate``, ``export``, ``train-polarity``
and ``train-ood``.

``predict`` lives in :mod:`inference.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from training.tasks import ARCHITECTURES, TASKS

if TYPE_CHECKING:
    from training.train import TrainConfig

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _register_train(sub)
    _register_evaluate(sub)
    _register_calibrate(sub)
    _register_export(sub)
    _register_train_polarity(sub)
    _register_train_ood(sub)
    _register_ensemble(sub)
    _register_unpack(sub)
    _register_epochs(sub)


# augmentation options that are a probability: flag -> (TrainConfig field, what it does)
AUGMENT_PROBABILITIES = {
    "flip": ("flip_p", "mirror left-right"),
    "fourier": ("fourier_p", "blend the low-frequency amplitude spectrum (the capture style) with "
                "that of another training image of any class, keeping the phase"),
    "texture": ("texture_p", "add a random 3-7 px filter's response (random grain, sharpness, "
                "edge emphasis)"),
    "frame": ("frame_p", "shrink, tilt and paste the image on a black, white or grey canvas, as "
              "padded radiographs arrive, so that a frame stops meaning scanned TB film"),
}


def _register_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train one classifier, evaluate it, export it, write its card")
    _add_model_folder_options(p)
    p.add_argument("--arch", choices=ARCHITECTURES, default="mobilenetv3small")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: decay to 1%% of --lr over the run (default); constant: --lr throughout")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--zoom", type=float, default=0.12, metavar="Z",
                   help="augmentation: random scale in [1 - Z, 1 + Z] (default 0.12)")
    for flag, (_, text) in AUGMENT_PROBABILITIES.items():
        p.add_argument(f"--{flag}", type=float, default=0.0, metavar="P",
                       help=f"augmentation: with probability P {text} (default 0: off)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="A",
                   help="mixup: blend each training image and its label with another of the batch, "
                        "weight from Beta(A, A) (e.g. 0.2; default 0: off)")
    p.add_argument("--adversary", type=float, default=0.0, metavar="W",
                   help="capture adversary: a training-only head predicts each image's source from "
                        "the features, given its label, and the backbone learns to leave it at "
                        "chance (weight rising to W, e.g. 1.0), unlearning what tells the sources "
                        "apart (default 0: off)")
    p.add_argument("--centre-crop", type=int, default=0, metavar="PX",
                   help="the model sees only the central PX x PX pixels of its input (e.g. 160 "
                        "of 224): film borders, collimation and text never reach it (default 0: off)")
    p.add_argument("--head", choices=("binary", "three-class"), default="binary",
                   help="binary: one sigmoid for the task (default); three-class: one softmax over "
                        "normal, pneumonia and TB, trained on every image, shipped as the task's "
                        "binary model (logit of its positive minus logit of its negative class)")
    p.add_argument("--balance", choices=("source", "class", "none"), default="source")
    p.add_argument("--source-weights", default="",
                   help="scale sampling of named sources, e.g. scanned-film-tb=0.25 "
                        "(0 leaves a source out of training: a leave-one-source-out run)")
    p.add_argument("--weights", help="local pretrained backbone weights file (ImageNet or CXR)")
    p.add_argument("--freeze-epochs", type=int, default=3,
                   help="with --weights: epochs with the backbone frozen before fine-tuning")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-epochs", action="store_true",
                   help="keep every epoch's checkpoint (epochs/epoch-NN.keras in --out), for "
                        "choosing an epoch afterwards with --use-epoch")
    p.add_argument("--skip-training", action="store_true",
                   help="reuse model.keras in --out from an earlier run: only threshold, "
                        "evaluation, export and card")
    p.add_argument("--use-epoch", type=int, default=0, metavar="N",
                   help="with --skip-training: ship epoch N of an earlier --save-epochs run in --out "
                        "instead of the checkpoint validation chose")
    p.set_defaults(func=_cmd_train)


def _add_model_folder_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that writes a model folder through :func:`training.pipeline.run`."""
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--data", type=Path, required=True,
                   help="folder with labels.csv (path,label,source[,split]) or one folder per class")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--negatives", help="negative labels, e.g. normal,pneumonia (default: the task's)")
    p.add_argument("--external", type=Path, help="labelled set from other hospitals, evaluation only")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--views", default="identity",
                   help="test-time views whose scores are averaged, comma-separated, first identity: "
                        "identity, flip, zoom<F>, zoom<F>-flip (e.g. identity,flip,zoom1.2,zoom1.2-flip); "
                        "used for the threshold, the metrics and at serve time")
    p.add_argument("--threshold-target", type=float,
                   help="the threshold rule's target on every source of the protected class "
                        "(default 0.95: TB sensitivity for tb-vs-normal, TB specificity for "
                        "pneumonia-vs-tb)")
    p.add_argument("--threshold-rule", choices=("sensitivity", "specificity"),
                   help="what the threshold bounds on validation: sensitivity on every positive "
                        "source or specificity on every negative source (default: the task's, "
                        "sensitivity for tb-vs-normal, specificity for pneumonia-vs-tb)")
    p.add_argument("--card-notes", type=Path,
                   help="Markdown file appended to card.md (experiments, known limitations)")
    p.add_argument("--cache", default=".cache/data",
                   help="preprocessed-image cache folder ('' to disable)")


def _run_pipeline(args: argparse.Namespace, cfg: TrainConfig, skip_training: bool,
                  ensemble: tuple[dict[str, object], ...] = (), use_epoch: int = 0) -> int:
    """Threshold, evaluation, export and card (after training unless ``skip_training``)."""
    from training.pipeline import PipelineArgs, run

    notes = args.card_notes.read_text() if args.card_notes else ""
    run(PipelineArgs(args.task, args.data, args.out, args.negatives, args.external, args.version,
                     Path(args.cache) if args.cache else None, cfg, notes, skip_training,
                     _parse_views(args.views), _parse_target(args.threshold_target),
                     args.threshold_rule, ensemble=ensemble, argv=tuple(args.argv),
                     use_epoch=use_epoch))
    print(f"model folder written: {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from training.architectures import check_centre_crop
    from training.train import TrainConfig

    try:
        check_centre_crop(args.size, args.centre_crop)
    except ValueError as err:
        raise SystemExit(f"--centre-crop: {err}") from err
    if not 0.0 <= args.zoom < 0.5:
        raise SystemExit(f"--zoom: expected 0 <= Z < 0.5, got {args.zoom}")
    probabilities: dict[str, float] = {}  # TrainConfig field -> value
    for flag, (field, _) in AUGMENT_PROBABILITIES.items():
        value = getattr(args, flag)
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"--{flag}: expected a probability 0 <= P <= 1, got {value}")
        probabilities[field] = value
    if args.mixup < 0:
        raise SystemExit(f"--mixup: expected A >= 0, got {args.mixup}")
    if args.adversary < 0:
        raise SystemExit(f"--adversary: expected W >= 0, got {args.adversary}")
    if args.adversary > 0 and args.mixup > 0:
        raise SystemExit("--adversary: cannot be combined with --mixup (a blend has no single source)")
    if args.use_epoch and not args.skip_training:
        raise SystemExit("--use-epoch: only with --skip-training (after a --save-epochs run)")
    if args.head == "three-class":
        clashes = [flag for flag, on in (("--negatives", args.negatives),
                                         ("--mixup", args.mixup), ("--adversary", args.adversary),
                                         ("--centre-crop", args.centre_crop)) if on]
        if clashes:
            raise SystemExit(f"--head three-class: cannot be combined with {', '.join(clashes)} "
                             "(it trains on normal, pneumonia and TB images alike)")

    cfg = TrainConfig(arch=args.arch, size=args.size, epochs=args.epochs,
                      steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                      learning_rate=args.lr, dropout=args.dropout, l2=args.l2,
                      patience=args.patience, seed=args.seed, balance=args.balance,
                      freeze_epochs=args.freeze_epochs if args.weights else 0, weights=args.weights,
                      source_weights=_parse_source_weights(args.source_weights),
                      lr_schedule=args.lr_schedule, centre_crop=args.centre_crop, zoom=args.zoom,
                      mixup=args.mixup, adversary=args.adversary, save_epochs=args.save_epochs,
                      head=args.head,
                      **probabilities)
    return _run_pipeline(args, cfg, args.skip_training, use_epoch=args.use_epoch)


def _parse_target(value: float | None) -> float | None:
    if value is not None and not 0.5 <= value < 1.0:
        raise SystemExit(f"--threshold-target: expected a value in [0.5, 1), got {value}")
    return value


def _parse_views(text: str) -> tuple[str, ...]:
    from inference.preprocess import IDENTITY_VIEW, parse_view

    views = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    try:
        for view in views:
            parse_view(view)
    except ValueError as err:
        raise SystemExit(f"--views: {err}") from err
    if not views or views[0] != IDENTITY_VIEW:
        raise SystemExit(f"--views: the first view must be {IDENTITY_VIEW!r} (the heatmap's view)")
    return views


def _parse_source_weights(text: str) -> tuple[tuple[str, float], ...]:
    pairs = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if not sep or factor < 0:
            raise SystemExit(f"--source-weights: expected NAME=FACTOR (FACTOR >= 0), got {item!r}")
        pairs.append((name.strip(), factor))
    return tuple(pairs)


def _register_evaluate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("evaluate", help="evaluate a model folder (its TFLite file) on a labelled set")
    p.add_argument("--model", type=Path, required=True, help="model folder with model.json")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test", help="train, val, test or all")
    p.add_argument("--out", type=Path, required=True, help="folder for report and plots")
    p.add_argument("--views", help="test-time views to average instead of the model's own "
                                   "(e.g. identity,flip); the stored threshold still applies")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.model_folder import evaluate_folder

    views = _parse_views(args.views) if args.views else None
    report = evaluate_folder(args.model, args.data, args.split, args.out, views)
    overall = report["sets"][args.split]["overall"]  # type: ignore[index]
    print(json.dumps({k: overall[k] for k in ("n", "roc_auc", "recall", "specificity")}, default=float))
    return 0


def _register_calibrate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("calibrate",
                       help="choose a model's operating threshold on a site's own verified cases "
                            "(cross-calibrated), and print the inference.thresholds setting")
    p.add_argument("--model", type=Path, required=True,
                   help="model folder with model.json (e.g. models/tb-vs-normal)")
    p.add_argument("--data", type=Path, required=True,
                   help="the site's cases: labels.csv (path,label[,source,split]) or a folder per "
                        "class (normal/, tb/, pneumonia/); PNG, JPEG or DICOM")
    p.add_argument("--split", default="all", help="train, val, test or all (default: all)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for calibration.json/.md, report and plots")
    p.add_argument("--threshold-rule", choices=("sensitivity", "specificity"),
                   help="what the threshold bounds on the site's cases (default: the task's, "
                        "sensitivity for tb-vs-normal, specificity for pneumonia-vs-tb)")
    p.add_argument("--threshold-target", type=float,
                   help="the rule's target on every source of the bounded class (default 0.95; "
                        "e.g. 0.90 for the WHO triage sensitivity)")
    p.add_argument("--folds", type=int, default=5, help="cross-calibration folds (default 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the first fold assignment (repeat r uses seed + r)")
    p.add_argument("--repeats", type=int, default=10,
                   help="fold assignments whose cross-calibrations are averaged (default 10)")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import CalibrationError, calibrate, calibration_markdown, write_calibration
    from training.data import DataError

    try:
        cal, result = calibrate(args.model, args.data, args.split, _parse_target(args.threshold_target),
                                args.threshold_rule, args.folds, args.seed, args.repeats)
    except (CalibrationError, DataError) as err:
        raise SystemExit(f"calibrate: {err}") from err
    write_calibration(cal, result, args.out)
    print(calibration_markdown(cal))
    return 0


def _register_export(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="export a Keras model to TFLite with a parity check")
    p.add_argument("--model", type=Path, required=True, help="model folder with model.keras")
    p.add_argument("--data", type=Path, required=True, help="data set whose val split checks parity")
    p.add_argument("--no-int8", action="store_true", help="ship float32 even if int8 keeps AUC")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from training.model_folder import export_folder

    variant = export_folder(args.model, args.data, not args.no_int8)
    print(f"wrote {args.model / 'model.tflite'} ({variant})")
    return 0


def _register_train_polarity(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train-polarity",
                       help="train the inverted grey-scale check (wrong Photometric Interpretation)")
    p.add_argument("--data", type=Path, required=True, help="labelled radiographs (train split used)")
    p.add_argument("--external", type=Path, help="radiographs from other hospitals, measured only")
    p.add_argument("--out", type=Path, required=True, help="folder for polarity.json and card.md")
    p.add_argument("--threshold", type=float, default=0.9, help="P(inverted) from which an image is skipped")
    p.add_argument("--version", default="1.0.0")
    p.set_defaults(func=_cmd_train_polarity)


def _cmd_train_polarity(args: argparse.Namespace) -> int:
    from training.polarity import train_polarity

    report = train_polarity(args.data, args.out, args.external, args.threshold, args.version)
    print(json.dumps(report["sets"], indent=1))
    print(f"polarity model written: {args.out}")
    return 0


def _register_train_ood(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train-ood",
                       help="train the not-a-radiograph check (noise, blank, text, patterns...)")
    p.add_argument("--data", type=Path, required=True,
                   help="labelled radiographs (fitted on train, threshold chosen on val, measured on test)")
    p.add_argument("--external", type=Path, help="radiographs from other hospitals, measured only")
    p.add_argument("--out", type=Path, required=True, help="folder for ood.json, report.json and card.md")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--seed", type=int, default=42,
                   help="junk seed for fitting; seed + 1 chooses the threshold, seed + 2 measures")
    p.set_defaults(func=_cmd_train_ood)


def _cmd_train_ood(args: argparse.Namespace) -> int:
    from training.ood import train_ood

    report = train_ood(args.data, args.out, args.external, args.version, args.seed)
    print(json.dumps({"threshold": report["threshold"], "junk": report["junk"]}, indent=1))
    print(f"out-of-distribution model written: {args.out}")
    return 0


def _register_ensemble(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ensemble",
                       help="merge trained model folders into one model (mean score), then "
                            "threshold, evaluate, export and write its card")
    _add_model_folder_options(p)
    p.add_argument("--members", required=True,
                   help="comma-separated model folders (model.keras + model.json) of the task")
    p.add_argument("--inverted", default="",
                   help="comma-separated model folders whose positive class is the task's "
                        "negative (e.g. a TB model in pneumonia-vs-tb): they enter as 1 - score")
    p.set_defaults(func=_cmd_ensemble)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from training.ensemble import EnsembleError, Member, write_merged
    from training.tasks import task_with_negatives
    from training.train import TrainConfig

    members = [Member(Path(f)) for f in _folders(args.members)]
    members += [Member(Path(f), inverted=True) for f in _folders(args.inverted)]
    try:
        task = task_with_negatives(args.task, args.negatives)
        arch, size, described = write_merged(members, task, args.out)
    except EnsembleError as err:
        raise SystemExit(str(err)) from err
    return _run_pipeline(args, TrainConfig(arch=arch, size=size), skip_training=True,
                         ensemble=described)


def _register_unpack(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("unpack",
                       help="write the members of an ensemble folder (e.g. models/tb-vs-normal) "
                            "back out as plain model folders, to build a new ensemble from them")
    p.add_argument("--ensemble", type=Path, required=True, help="an ensemble model folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write the members into")
    p.set_defaults(func=_cmd_unpack)


def _cmd_unpack(args: argparse.Namespace) -> int:
    from training.ensemble import EnsembleError, unpack

    try:
        members = unpack(args.ensemble, args.out)
    except (EnsembleError, OSError) as err:
        raise SystemExit(str(err)) from err
    plain = ",".join(str(m.folder) for m in members if not m.inverted)
    inverted = ",".join(str(m.folder) for m in members if m.inverted)
    print(f"{len(members)} members of {args.ensemble} written to {args.out}")
    print(f"  --members {plain}" + (f" --inverted {inverted}" if inverted else ""))
    return 0


def _folders(text: str) -> list[str]:
    return [f.strip() for f in text.split(",") if f.strip()]


def _register_epochs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("epochs",
                       help="score every saved epoch of a train --save-epochs run on a labelled set "
                            "(a held-out source or external-dev), to choose one for --use-epoch")
    p.add_argument("--run", type=Path, required=True, help="output folder of a --save-epochs run")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="all", help="train, val, test or all (default)")
    p.add_argument("--views", default="identity", help="test-time views averaged (as for train)")
    p.add_argument("--name", help="name of the table (default: the data folder's name)")
    p.set_defaults(func=_cmd_epochs)


def _cmd_epochs(args: argparse.Namespace) -> int:
    from training.epochs import sweep

    name = args.name or args.data.resolve().name
    try:
        sweep(args.run, args.data, args.split, _parse_views(args.views), name)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    print((args.run / f"epochs-{name}.md").read_text())
    return 0
