"""The ``train`` command end to end: data → training → threshold → evaluation → export → card.

The output folder is a complete model folder: ``model.tflite``, ``model.keras``,
``model.json``, ``card.md``, ``report.json``/``report.md``, plots, ``history.json``
and ``train.log``. Copy it to ``models/<task>/`` to ship it.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from numpy.typing import NDArray

from inference.preprocess import IDENTITY_VIEW, view_stack
from training.card import CardInfo, write_card, write_model_json
from training.data import (
    ImageSet,
    Record,
    as_model_input,
    dataset_hash,
    describe,
    load_images,
    load_split_cached,
    read_records,
)
from training.ensemble import export_members
from training.evaluate import SetResult, score_set, write_report
from training.export import ParityReport, export_model
from training.metrics import threshold_for_sensitivity, threshold_for_specificity
from training.plots import plot_history
from training.tasks import TASKS, Task, task_with_negatives
from training.three_class import CLASSES
from training.train import TrainConfig, epoch_checkpoint, task_subset, train

log = logging.getLogger(__name__)

# Per task: which error the operating point bounds, and the target, on the validation split,
# required of *every* source of the class it protects (the worst source sets the threshold),
# so that the operating point holds for the hardest kind of capture, not for the average.
# TB vs normal (positive TB): sensitivity >= 0.95 on each TB source; a triage tool must not miss TB.
# Pneumonia vs TB (positive pneumonia): >= 0.95 of each TB source's images below the threshold
# (specificity), so that a TB case is rarely re-labelled as a pneumonia pattern.
THRESHOLD_RULES = {"tb-vs-normal": ("sensitivity", 0.95), "pneumonia-vs-tb": ("specificity", 0.95)}


@dataclass(frozen=True)
class PipelineArgs:
    """Inputs of one training run (from the command line)."""

    task: str
    data: Path
    out: Path
    negatives: str | None
    external: Path | None
    version: str
    cache: Path | None
    config: TrainConfig
    card_notes: str = ""
    skip_training: bool = False
    views: tuple[str, ...] = (IDENTITY_VIEW,)  # test-time views, averaged (threshold and metrics too)
    threshold_target: float | None = None  # replaces the rule's 0.95 (THRESHOLD_RULES)
    threshold_rule: str | None = None  # "sensitivity" or "specificity": replaces the task's kind
    ensemble: tuple[dict[str, object], ...] = ()  # members of a merged model (training.ensemble)
    argv: tuple[str, ...] = ()  # the command line, recorded in the card and model.json
    use_epoch: int = 0  # with skip_training: ship this epoch's checkpoint (--save-epochs run)


def choose_threshold(task: str, y: NDArray[np.float32], s: NDArray[np.float32],
                     sources: list[str], target: float | None = None,
                     kind: str | None = None, where: str = "validation") -> tuple[float, str]:
    """Operating threshold on validation scores by the task's documented rule (worst source);
    ``target`` replaces the rule's sensitivity or specificity (``--threshold-target``) and
    ``kind`` which of the two it bounds (``--threshold-rule``); ``where`` names the scored
    set in the rule's description (``site``: a hospital's own cases, ``calibrate``)."""
    default_kind, default = THRESHOLD_RULES[task]
    kind = kind or default_kind
    if kind not in ("sensitivity", "specificity"):
        raise ValueError(f"threshold rule: expected sensitivity or specificity, got {kind!r}")
    target = default if target is None else target
    src = np.asarray(sources)
    if kind == "sensitivity":
        names = sorted(set(src[y == 1]))
        thr = min(threshold_for_sensitivity(y[src == n], s[src == n], target) for n in names)
        return thr, (f"highest threshold with {where} sensitivity >= {target:.2f} "
                     f"on every positive source ({', '.join(names)})")
    names = sorted(set(src[y == 0]))
    thr = max(threshold_for_specificity(y[src == n], s[src == n], target) for n in names)
    return thr, (
        f"lowest threshold with {where} specificity >= {target:.2f} "
        f"on every negative source ({', '.join(names)})")


def keras_scorer(model: keras.Model, views: tuple[str, ...] = (IDENTITY_VIEW,)):  # type: ignore[no-untyped-def]
    """Scores of ``(n, s, s, 1)`` inputs: the mean over the test-time ``views``, as served."""
    def score(x: NDArray[np.float32]) -> NDArray[np.float32]:
        stacks = np.stack([view_stack(img[..., 0], views) for img in x])  # (n, v, s, s)
        flat = stacks.reshape(-1, *stacks.shape[2:])[..., np.newaxis]
        out = model.predict(flat, batch_size=64, verbose=0)["score"][:, 0]
        return out.reshape(len(x), len(views)).mean(axis=1).astype(np.float32)
    return score


def _evaluate(model: keras.Model, eval_task: Task, threshold: float,
              sets: dict[str, ImageSet], views: tuple[str, ...]) -> list[SetResult]:
    scorer = keras_scorer(model, views)
    return [score_set(name, data, eval_task, scorer, threshold) for name, data in sets.items()]


def run(args: PipelineArgs) -> dict[str, object]:
    """Train, choose the threshold, evaluate, export and write the card; return the report."""
    args.out.mkdir(parents=True, exist_ok=True)
    with _log_to_file(args.out / "train.log"):
        return _run(args)


def _run(args: PipelineArgs) -> dict[str, object]:
    task = task_with_negatives(args.task, args.negatives)
    records = read_records(args.data, seed=args.config.seed)
    splits = {s: load_split_cached(records, s, args.config.size, args.cache)
              for s in ("train", "val", "test")}
    log.info("data %s: train %s", args.data, describe(splits["train"]))
    if args.skip_training:
        if args.use_epoch:
            use_epoch(args.out, args.use_epoch)
        model, history = _load_trained(args.out)
    else:
        model, history = train(splits["train"], splits["val"], task, args.config, args.out)
    if history:  # an ensemble has no epochs of its own: its members' folders keep their curves
        plot_history(history, args.out / "training-curves.png")
    eval_task = TASKS[args.task]
    val, y_val = task_subset(splits["val"], eval_task)
    val_scores = keras_scorer(model, args.views)(as_model_input(val.images))
    threshold, rule = choose_threshold(args.task, y_val, val_scores, val.sources, args.threshold_target,
                                       args.threshold_rule)
    log.info("threshold %.4f (%s)", threshold, rule)
    sets = dict(splits)
    del sets["train"]
    if args.external is not None:
        sets["external-dev"] = load_images(read_records(args.external), args.config.size)
    results = _evaluate(model, eval_task, threshold, sets, args.views)
    report = write_report(results, eval_task, threshold, args.out, {"views": list(args.views)})
    members: list[dict[str, object]] = []
    if args.ensemble:  # served member by member, so a network shared by both classifiers runs once
        (args.out / "model.tflite").unlink(missing_ok=True)  # left by an earlier run of --out
        members, parity = export_members(args.ensemble, model, as_model_input(val.images), y_val,
                                         args.out)
        variant = "float32"  # export_members writes float32 members only
    else:
        variant, parity = export_model(model, as_model_input(val.images), y_val, args.out)
    info = _card_info(args, task, threshold, rule, records, splits["train"], parity, variant,
                      tuple(members))
    write_model_json(info, args.out)
    write_card(info, report, args.out, args.card_notes)
    return report


def use_epoch(out: Path, epoch: int) -> None:
    """Make epoch ``epoch`` of a ``--save-epochs`` run in ``out`` its model (``--use-epoch``).

    Copies ``epochs/epoch-NN.keras`` over ``model.keras`` and records the choice in
    ``history.json`` (``best_epoch``, ``chosen_by``), so the card names the epoch shipped.
    """
    checkpoint = epoch_checkpoint(out, epoch)
    history_path = out / "history.json"
    if not checkpoint.is_file() or not history_path.is_file():
        raise ValueError(f"--use-epoch {epoch}: {out} has no {checkpoint.relative_to(out)} and "
                         "history.json of a --save-epochs run")
    shutil.copyfile(checkpoint, out / "model.keras")
    history = json.loads(history_path.read_text())
    history.setdefault("selected_epoch_by_validation", history.get("best_epoch"))
    history["best_epoch"] = epoch
    history["chosen_by"] = f"--use-epoch {epoch}"
    history_path.write_text(json.dumps(history, indent=2))
    log.info("use epoch %d of %s (validation had chosen epoch %s)", epoch, out,
             history["selected_epoch_by_validation"])


def _load_trained(out: Path) -> tuple[keras.Model, list[dict[str, float]]]:
    """The model and history of an earlier run in ``out`` (``--skip-training``)."""
    if not (out / "model.keras").is_file() or not (out / "history.json").is_file():
        raise ValueError(f"--skip-training: {out} has no model.keras/history.json of an earlier run")
    history = json.loads((out / "history.json").read_text())["epochs"]
    log.info("skip training: using %s", out / "model.keras")
    return keras.saving.load_model(out / "model.keras"), history


def _provenance(args: PipelineArgs, task: Task,
                train_set: ImageSet) -> tuple[str, str, str, dict[str, object]]:
    """Architecture, origin, training counts and configuration as the card states them."""
    if args.ensemble:
        kinds = args.config.arch  # the members' architectures, distinct ones joined by " + "
        return (f"ensemble of {len(args.ensemble)} {kinds} models" if " + " not in kinds
                else f"ensemble of {len(args.ensemble)} models: {kinds}",
                "mean of the members' scores (see members below)",
                "each member's own (see members below)", {"members": list(args.ensemble)})
    origin = (f"fine-tuned from {Path(args.config.weights).name}" if args.config.weights
              else "trained from scratch")
    if args.use_epoch:
        origin += (f"; the checkpoint of epoch {args.use_epoch} of {args.config.epochs} "
                   f"(`--use-epoch {args.use_epoch}`), not the one validation chose")
    arch = args.config.arch
    if args.config.centre_crop:
        c = args.config.centre_crop
        arch += f" seeing the central {c}×{c} pixels of its input (--centre-crop {c})"
    if args.config.head == "three-class":
        own = TASKS[args.task]
        arch += (" with a three-class head (normal, pneumonia, tb; --head three-class), shipped as "
                 f"logit {'/'.join(own.positive)} minus logit {'/'.join(own.negative)}")
        return (arch, origin, describe(train_set), asdict(args.config) | {"train_classes": list(CLASSES)})
    return (arch, origin, describe(task_subset(train_set, task)[0]),
            asdict(args.config) | {"train_negatives": sorted(task.negative)})


def _card_info(args: PipelineArgs, task: Task, threshold: float, rule: str, records: list[Record],
               train_set: ImageSet, parity: list[ParityReport], variant: str,
               members: tuple[dict[str, object], ...] = ()) -> CardInfo:
    eval_task = TASKS[args.task]
    architecture, origin, counts, config = _provenance(args, task, train_set)
    return CardInfo(
        name=f"cxr-{args.task}", task=args.task, version=args.version,
        architecture=architecture, input_size=args.config.size, threshold=threshold,
        threshold_rule=rule, positive_label="/".join(sorted(eval_task.positive)),
        negative_label="/".join(sorted(eval_task.negative)), data_root=str(args.data),
        data_hash=dataset_hash(records),
        split="the data set's own train/val/test split (stratified by label and source when absent); "
              "trained on train, threshold on val, metrics on val/test and external-dev",
        command=_command(args),
        train_counts=counts, config=config, parity=[asdict(p) for p in parity],
        tflite_variant=variant, views=args.views, members=members, origin=origin,
    )


def _command(args: PipelineArgs) -> str:
    """The command that makes this folder: the training command line, and with ``--use-epoch``
    the second step that ships the chosen epoch."""
    argv, given = [], iter(args.argv)
    for arg in given:
        if arg == "--use-epoch":
            next(given, None)  # and its value
        elif arg != "--skip-training" and not arg.startswith("--use-epoch="):
            argv.append(arg)
    if args.use_epoch and "--save-epochs" not in argv:
        argv.append("--save-epochs")
    text = "cxr-gateway " + " ".join(shlex.quote(a) for a in argv)
    if args.use_epoch:
        text += f" && {text} --skip-training --use-epoch {args.use_epoch}"
    return text


@contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Write this run's INFO and higher records to ``path`` (appended), whatever the root
    logger was set to before (e.g. WARNING under pytest); undone when the run ends."""
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))  # NOTSET (0) already lets everything through
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
