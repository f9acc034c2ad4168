"""Train one classifier: source-balanced sampling, augmentation, early stopping.

Binary by default; ``--head three-class`` trains a softmax over normal, pneumonia
and TB and ships it as the task's binary model (:mod:`training.three_class`).

Judged in inference mode on the validation split every epoch (ROC-AUC of the
worst positive source), keeping the best checkpoint; cosine learning-rate decay;
reproducible from ``--seed``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from training.adversary import ConfusionSchedule, Targets, adversarial_model, adversary_targets
from training.architectures import build_model
from training.augment import AugmentConfig, augment
from training.data import ImageSet, as_model_input
from training.sampling import sampling_weights
from training.tasks import TASKS, Task
from training.three_class import (
    THREE_CLASS_FILE,
    class_pair,
    class_sampling_weights,
    class_targets,
    fold,
    three_class_models,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run (written beside the model)."""

    arch: str = "mobilenetv3small"
    size: int = 224
    epochs: int = 20
    steps_per_epoch: int = 150
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.3
    l2: float = 1e-4
    patience: int = 5
    seed: int = 42
    balance: str = "source"
    freeze_epochs: int = 0
    weights: str | None = None
    source_weights: tuple[tuple[str, float], ...] = ()
    lr_schedule: str = "cosine"
    flip_p: float = 0.0
    centre_crop: int = 0
    zoom: float = AugmentConfig.zoom
    fourier_p: float = 0.0
    texture_p: float = 0.0
    frame_p: float = 0.0
    mixup: float = 0.0  # Beta(a, a) of mixup between images of a batch; 0: off
    adversary: float = 0.0  # weight of the capture adversary's confusion term (training/adversary.py)
    head: str = "binary"  # or "three-class": one softmax over normal, pneumonia, TB (training/three_class.py)
    save_epochs: bool = False  # keep every epoch's checkpoint in epochs/ (see EPOCHS_DIR)


def task_subset(data: ImageSet, task: Task) -> tuple[ImageSet, NDArray[np.float32]]:
    """Keep the images whose label belongs to ``task``; return them with 0/1 targets."""
    targets = [task.target(lab) for lab in data.labels]
    mask = np.array([t is not None for t in targets])
    y = np.array([t for t in targets if t is not None], dtype=np.float32)
    return data.subset(mask), y


def augment_config(cfg: TrainConfig) -> AugmentConfig:
    """The augmentation a run's options ask for (the rest at :class:`AugmentConfig`'s defaults)."""
    return AugmentConfig(flip_p=cfg.flip_p, zoom=cfg.zoom, fourier_p=cfg.fourier_p,
                         texture_p=cfg.texture_p, frame_p=cfg.frame_p)


Batch = tuple[NDArray[np.float32], NDArray[np.float32]]
AdversarialBatch = tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.generic]]]


class BalancedBatches(keras.utils.PyDataset):
    """Batches drawn with replacement by :func:`sampling_weights`, augmented on the fly.

    With ``adversary`` (one-hot labels, source indices and confusion targets of
    every image, :mod:`training.adversary`) a batch is ``({"image", "label"},
    {"score", "source", "confusion"})`` for the capture adversary's training
    model; otherwise ``(images, targets)``.
    """

    def __init__(self, images: NDArray[np.uint8], y: NDArray[np.float32], p: NDArray[np.float64],
                 cfg: TrainConfig, augment_cfg: AugmentConfig,
                 adversary: Targets | None = None) -> None:
        super().__init__()
        self.images, self.y, self.p, self.cfg, self.aug = images, y, p, cfg, augment_cfg
        self.adversary = adversary
        self.rng = np.random.default_rng(cfg.seed)

    def __len__(self) -> int:
        return self.cfg.steps_per_epoch

    def __getitem__(self, index: int) -> Batch | AdversarialBatch:
        idx = self.rng.choice(len(self.y), size=self.cfg.batch_size, p=self.p)
        styles: list[int | None] = [None] * len(idx)
        if self.aug.fourier_p > 0:  # style images drawn like the batch, independently of its labels
            styles = list(self.rng.choice(len(self.y), size=len(idx), p=self.p))
        x = np.stack([augment(self.images[i], self.rng, self.aug,
                              None if s is None else self.images[s])
                      for i, s in zip(idx, styles, strict=True)])[..., np.newaxis]
        y = self.y[idx][:, np.newaxis]
        if self.cfg.mixup > 0:  # each image blended with another of the batch, labels alike
            lam = self.rng.beta(self.cfg.mixup, self.cfg.mixup, (len(idx), 1)).astype(np.float32)
            other = self.rng.permutation(len(idx))
            x = lam[:, :, np.newaxis, np.newaxis] * x + (1 - lam[:, :, np.newaxis, np.newaxis]) * x[other]
            y = lam * y + (1 - lam) * y[other]
        if self.adversary is not None:
            labels, sources, split = self.adversary
            targets: dict[str, NDArray[np.generic]] = {"score": y, "source": sources[idx],
                                                       "confusion": split[idx]}
            return {"image": x, "label": labels[idx]}, targets
        return x, y


EPOCHS_DIR = "epochs"  # --save-epochs: one checkpoint per epoch, epoch-01.keras, ...


def epoch_checkpoint(out_dir: Path, epoch: int) -> Path:
    """Where ``--save-epochs`` keeps epoch ``epoch`` (1-based) of a run in ``out_dir``."""
    return out_dir / EPOCHS_DIR / f"epoch-{epoch:02d}.keras"


def source_aucs(y: NDArray[np.float32], scores: NDArray[np.float32],
                sources: list[str]) -> dict[str, float]:
    """ROC-AUC of each positive source against every negative image."""
    src = np.asarray(sources)
    negatives = y == 0
    if not negatives.any():
        return {}
    aucs = {}
    for name in sorted(set(src[y == 1])):
        keep = negatives | ((y == 1) & (src == name))
        aucs[str(name)] = float(roc_auc_score(y[keep], scores[keep]))
    return aucs


def worst_source_auc(y: NDArray[np.float32], scores: NDArray[np.float32], sources: list[str]) -> float:
    """Lowest ROC-AUC of one positive source against every negative image.

    The overall validation AUC is dominated by the largest source (scanned-film
    TB is easy to tell from normals by its capture alone); the worst source is
    the better proxy for radiographs from a hospital the model never saw. In a
    leave-one-source-out run (``--source-weights NAME=0``) the held-out source
    is normally the worst, so the checkpoint is chosen on a capture never trained on.
    """
    aucs = source_aucs(y, scores, sources)
    return min(aucs.values()) if aucs else float("nan")


class BestByAuc(keras.callbacks.Callback):
    """Validation ROC-AUC in inference mode each epoch; keep the best model, stop when stale.

    The checkpoint is chosen by the worst positive source's ROC-AUC
    (:func:`worst_source_auc`); the overall AUC is logged beside it.
    """

    def __init__(self, full: keras.Model, x_val: NDArray[np.float32], y_val: NDArray[np.float32],
                 sources: list[str], path: Path, patience: int, save_epochs: bool = False) -> None:
        super().__init__()
        self.full = full
        self.x_val, self.y_val, self.sources = x_val, y_val, sources
        self.path, self.patience, self.save_epochs = path, patience, save_epochs
        self.best, self.best_epoch, self.history = -1.0, -1, []  # type: ignore[var-annotated]

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        scores = self.full.predict(self.x_val, batch_size=64, verbose=0)["score"][:, 0]
        both = len(set(self.y_val)) > 1
        auc = float(roc_auc_score(self.y_val, scores)) if both else float("nan")
        per_source = source_aucs(self.y_val, scores, self.sources) if both else {}
        worst = min(per_source.values()) if per_source else float("nan")
        spread = float(np.std(scores))
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        entry = {"epoch": epoch + 1, "val_auc": auc, "val_auc_worst_source": worst,
                 "val_score_std": spread, "lr": lr, **(logs or {}),
                 **{f"val_auc_{name}": v for name, v in per_source.items()}}
        self.history.append({k: float(v) for k, v in entry.items()})
        log.info("epoch %d: loss %.4f val_auc %.4f worst source %.4f (%s; score spread %.3f, lr %.2g)",
                 epoch + 1, (logs or {}).get("loss", math.nan), auc, worst,
                 ", ".join(f"{n} {v:.4f}" for n, v in per_source.items()), spread, lr)
        checkpoint = None
        if self.save_epochs:
            checkpoint = epoch_checkpoint(self.path.parent, epoch + 1)
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            self.full.save(checkpoint)
        if worst > self.best + 1e-4:
            self.best, self.best_epoch = worst, epoch + 1
            if checkpoint is None:
                self.full.save(self.path)
            else:  # the same model just saved: copy it rather than serialise it twice
                shutil.copyfile(checkpoint, self.path)
        elif epoch + 1 - self.best_epoch >= self.patience:
            log.info("early stop: no worst-source val_auc gain for %d epochs", self.patience)
            self.model.stop_training = True


def learning_rate(cfg: TrainConfig, peak: float,
                  epochs: int) -> float | keras.optimizers.schedules.CosineDecay:
    """Constant, or cosine decay from ``peak`` to 1 % of it over ``epochs`` epochs."""
    if cfg.lr_schedule == "constant":
        return peak
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps=max(1, epochs * cfg.steps_per_epoch),
                                                  alpha=0.01)


def _compile(model: keras.Model, lr: float | keras.optimizers.schedules.CosineDecay,
             adversarial: bool = False, classes: bool = False) -> None:
    loss: object = keras.losses.BinaryCrossentropy()
    metrics: object = [keras.metrics.AUC(name="auc")]
    if classes:  # --head three-class: softmax over the pooled class logits
        loss, metrics = keras.losses.SparseCategoricalCrossentropy(from_logits=True), None
    if adversarial:  # the capture adversary's model: score, source head and confusion
        loss = {"score": loss, "source": keras.losses.SparseCategoricalCrossentropy(),
                "confusion": keras.losses.CategoricalCrossentropy()}
        metrics = {"score": metrics,
                   "source": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=metrics)


def train(train_set: ImageSet, val_set: ImageSet, task: Task, cfg: TrainConfig,
          out_dir: Path) -> tuple[keras.Model, list[dict[str, float]]]:
    """Train on ``train_set``, select on ``val_set``; writes ``model.keras`` and ``history.json``."""
    keras.utils.set_random_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.head == "three-class":
        return _train_three_class(train_set, val_set, task, cfg, out_dir)
    if cfg.head != "binary":
        raise ValueError(f"head: expected binary or three-class, got {cfg.head!r}")
    tr, y_tr = task_subset(train_set, task)
    va, y_va = task_subset(val_set, task)
    if len(set(y_tr)) < 2 or len(set(y_va)) < 2:
        raise ValueError(f"task {task.name}: train and val need both classes")
    if cfg.adversary > 0 and cfg.mixup > 0:
        raise ValueError("adversary: cannot be combined with mixup (a blend has no single source)")
    p = sampling_weights(y_tr, tr.sources, cfg.balance, dict(cfg.source_weights))
    adversary: Targets | None = None
    if cfg.adversary > 0:
        adversary, names = adversary_targets(tr.labels, tr.sources)
        log.info("capture adversary: confusion weight up to %g; the head predicts the source "
                 "among %s given the label", cfg.adversary, ", ".join(names))
    batches = BalancedBatches(tr.images, y_tr, p, cfg, augment_config(cfg), adversary)
    x_va = as_model_input(va.images)
    model, backbone = build_model(cfg.arch, cfg.size, cfg.dropout, cfg.l2,
                                  Path(cfg.weights) if cfg.weights else None, cfg.centre_crop)
    best = BestByAuc(model, x_va, y_va, va.sources, out_dir / "model.keras", cfg.patience,
                     cfg.save_epochs)
    callbacks: list[keras.callbacks.Callback] = [best]
    if adversary is not None:  # trains ``model``'s weights plus the source head
        fitted, scale = adversarial_model(model, adversary[2].shape[1])
        callbacks.append(ConfusionSchedule(scale, cfg.adversary, cfg.epochs * cfg.steps_per_epoch,
                                           cfg.steps_per_epoch))
    else:
        fitted = keras.Model(model.input, model.output["score"])  # shares weights with ``model``
    started = time.time()
    if cfg.weights and cfg.freeze_epochs > 0:
        backbone.trainable = False
        _compile(fitted, learning_rate(cfg, cfg.learning_rate, cfg.freeze_epochs),
                 adversary is not None)
        fitted.fit(batches, epochs=cfg.freeze_epochs, callbacks=callbacks, verbose=2)
        backbone.trainable = True
    _compile(fitted, learning_rate(cfg, cfg.learning_rate / (10 if cfg.weights else 1),
                                   cfg.epochs - len(best.history)), adversary is not None)
    fitted.fit(batches, initial_epoch=len(best.history), epochs=cfg.epochs, callbacks=callbacks,
               verbose=2)
    return _finish(best, cfg, task, out_dir, started)


def _finish(best: BestByAuc, cfg: TrainConfig, task: Task, out_dir: Path,
            started: float) -> tuple[keras.Model, list[dict[str, float]]]:
    log.info("best worst-source val_auc %.4f at epoch %d; %.0f s", best.best, best.best_epoch,
             time.time() - started)
    (out_dir / "history.json").write_text(json.dumps(
        {"config": asdict(cfg), "task": task.name, "best_epoch": best.best_epoch,
         "epochs": best.history}, indent=2))
    return keras.saving.load_model(out_dir / "model.keras"), best.history


def _train_three_class(train_set: ImageSet, val_set: ImageSet, task: Task, cfg: TrainConfig,
                       out_dir: Path) -> tuple[keras.Model, list[dict[str, float]]]:
    """``--head three-class`` (:mod:`training.three_class`): every training image of the three
    classes, softmax over them; checkpoints and ``model.keras`` are the task's binary model."""
    for name, value in (("adversary", cfg.adversary), ("mixup", cfg.mixup),
                        ("centre_crop", cfg.centre_crop)):
        if value:
            raise ValueError(f"head three-class: cannot be combined with {name}")
    pair = class_pair(task)
    y_tr = class_targets(train_set.labels)
    va, y_va = task_subset(val_set, TASKS[task.name])
    if len(set(y_va)) < 2:
        raise ValueError(f"task {task.name}: val needs both classes")
    p = class_sampling_weights(y_tr, train_set.sources, cfg.balance, dict(cfg.source_weights))
    batches = BalancedBatches(train_set.images, y_tr.astype(np.float32), p, cfg, augment_config(cfg))
    weights = Path(cfg.weights) if cfg.weights else None
    fitted, model, backbone = three_class_models(cfg.arch, cfg.size, cfg.dropout, cfg.l2, weights, pair)
    x_va = as_model_input(va.images)
    best = BestByAuc(model, x_va, y_va, va.sources, out_dir / "model.keras", cfg.patience,
                     cfg.save_epochs)
    started = time.time()

    def run_epochs(first: int, last: int, early_stop: bool) -> None:
        # one fit call per epoch, as in the experiment that introduced the head
        # (models/tb-vs-normal/experiments/three-class-preregistration.md), so that its runs
        # reproduce batch for batch (each call draws Keras' signature batches anew)
        for epoch in range(first, last):
            fitted.fit(batches, initial_epoch=epoch, epochs=epoch + 1, callbacks=[best], verbose=2)
            if early_stop and epoch + 1 - best.best_epoch >= cfg.patience:
                return

    if weights is not None and cfg.freeze_epochs > 0:  # as a binary run: head first, then all
        backbone.trainable = False
        _compile(fitted, learning_rate(cfg, cfg.learning_rate, cfg.freeze_epochs), classes=True)
        run_epochs(0, min(cfg.freeze_epochs, cfg.epochs), early_stop=False)
        backbone.trainable = True
    done = len(best.history)
    _compile(fitted, learning_rate(cfg, cfg.learning_rate / (10 if weights else 1), cfg.epochs - done),
             classes=True)
    run_epochs(done, cfg.epochs, early_stop=True)
    chosen = keras.saving.load_model(out_dir / "model.keras")
    chosen.save(out_dir / THREE_CLASS_FILE)  # the network with its three class filters
    fold(chosen, cfg.arch, cfg.size, cfg.dropout, cfg.l2).save(out_dir / "model.keras")
    return _finish(best, cfg, task, out_dir, started)
