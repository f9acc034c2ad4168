"""Experiment: one backbone, three classes (normal, pneumonia, TB), read as two binary models.

Exploratory, like ``combos.py``; not part of the package. Run from the project root:

    .venv/bin/python models/tb-vs-normal/experiments/three_class.py --seed 42 --out runs/tc42

The network is :func:`training.architectures.build_model`'s, with a three-filter
``logit_map`` (one logit per class) and a softmax over the pooled logits. The
TB-vs-normal model is the same network with one filter, ``logit_TB - logit_normal``
(the 1x1 convolution and global average pooling are linear, so this equals the
difference of the pooled logits: ``sigmoid`` of it is ``p(TB) / (p(TB) + p(normal))``).
The pneumonia-vs-TB model is ``logit_pneumonia - logit_TB``. Both are written as
ordinary model folders (``<out>/tb-vs-normal``, ``<out>/pneumonia-vs-tb``: ``model.keras``
+ ``history.json``), ready for ``cxr-gateway train ... --skip-training`` and
``cxr-gateway ensemble``.

Why: the shipped TB members learn TB against normal *and* pneumonia with one
sigmoid, so an abnormal radiograph unlike the training TB films is pushed towards
"not TB" along with the pneumonias. With three classes the features still learn
"abnormal", while the TB-vs-normal score compares TB with normal only.

Everything else is member B's recipe: MobileNetV3Small from scratch, 224 px, 16 epochs
of 150 batches of 32, Adam 1e-3 with cosine decay, mirror 0.5, the default
augmentation, sampling balanced by class (a third each) and by source within a
class. The checkpoint is chosen like B's: the worst TB source's validation ROC-AUC
of the TB-vs-normal score (here against the validation normals).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
from keras import layers

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from training.architectures import _backbone, _scale_255, _settle_batch_norm, build_model  # noqa: E402
from training.augment import AugmentConfig, augment  # noqa: E402
from training.data import load_split_cached, read_records  # noqa: E402
from training.train import TrainConfig, source_aucs  # noqa: E402

log = logging.getLogger("three_class")
CLASSES = ("normal", "pneumonia", "tb")
DERIVED = {"tb-vs-normal": (2, 0), "pneumonia-vs-tb": (1, 2)}  # (positive logit, negative logit)


def class_weights(labels: np.ndarray, sources: list[str]) -> np.ndarray:
    """Each class a third of the draws, each source within a class equally often."""
    keys = list(zip(labels.tolist(), sources, strict=True))
    per_key = Counter(keys)
    keys_per_class = Counter(k[0] for k in per_key)
    w = np.array([1.0 / (per_key[k] * keys_per_class[k[0]] * len(CLASSES)) for k in keys])
    return w / w.sum()


class Batches(keras.utils.PyDataset):
    def __init__(self, images: np.ndarray, y: np.ndarray, p: np.ndarray, cfg: TrainConfig) -> None:
        super().__init__()
        self.images, self.y, self.p, self.cfg = images, y, p, cfg
        self.aug = AugmentConfig(flip_p=cfg.flip_p)
        self.rng = np.random.default_rng(cfg.seed)

    def __len__(self) -> int:
        return self.cfg.steps_per_epoch

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.choice(len(self.y), size=self.cfg.batch_size, p=self.p)
        x = np.stack([augment(self.images[i], self.rng, self.aug) for i in idx])[..., np.newaxis]
        return x, self.y[idx]


def three_class_model(cfg: TrainConfig) -> keras.Model:
    """``build_model``'s network with one logit per class; outputs the pooled logits."""
    inp = keras.Input((cfg.size, cfg.size, 1), name="image")
    rgb = layers.Concatenate(name="gray_to_rgb")([inp, inp, inp])
    backbone, _ = _backbone(cfg.arch, cfg.size, None)
    features = backbone(_scale_255(rgb))
    dropped = layers.Dropout(cfg.dropout)(features)
    logit_map = layers.Conv2D(len(CLASSES), 1, kernel_regularizer=keras.regularizers.L2(cfg.l2),
                              name="logit_map")(dropped)
    logits = layers.GlobalAveragePooling2D(name="logits")(logit_map)
    model = keras.Model(inp, logits, name=f"cxr3_{cfg.arch}")
    _settle_batch_norm(model)
    return model


def derive(model: keras.Model, cfg: TrainConfig, positive: int, negative: int) -> keras.Model:
    """The binary-contract model (``score``, ``cam``) whose logit is logit[positive] - logit[negative]."""
    binary, backbone = build_model(cfg.arch, cfg.size, cfg.dropout, cfg.l2)
    source = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    backbone.set_weights(source.get_weights())
    kernel, bias = model.get_layer("logit_map").get_weights()
    binary.get_layer("logit_map").set_weights([
        kernel[..., positive:positive + 1] - kernel[..., negative:negative + 1],
        bias[positive:positive + 1] - bias[negative:negative + 1]])
    return binary


def tb_vs_normal_aucs(logits: np.ndarray, labels: np.ndarray, sources: list[str]) -> dict[str, float]:
    keep = labels != CLASSES.index("pneumonia")
    y = (labels[keep] == CLASSES.index("tb")).astype(np.float32)
    score = (logits[keep, 2] - logits[keep, 0]).astype(np.float32)
    return source_aucs(y, score, [s for s, k in zip(sources, keep, strict=True) if k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cxr")
    ap.add_argument("--cache", default=".cache/data")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--steps-per-epoch", type=int, default=150)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.FileHandler(out / "train.log"), logging.StreamHandler()])
    log.info("command: %s", " ".join(sys.argv))
    cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, patience=6,
                      flip_p=0.5, seed=args.seed)
    keras.utils.set_random_seed(cfg.seed)
    records = read_records(Path(args.data), seed=cfg.seed)
    tr = load_split_cached(records, "train", cfg.size, Path(args.cache))
    va = load_split_cached(records, "val", cfg.size, Path(args.cache))
    y_tr = np.array([CLASSES.index(lab) for lab in tr.labels])
    y_va = np.array([CLASSES.index(lab) for lab in va.labels])
    log.info("train %s", dict(Counter(zip(tr.labels, tr.sources, strict=True))))
    model = three_class_model(cfg)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.epochs * cfg.steps_per_epoch,
                                                      alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_va = (va.images.astype(np.float32) / 255.0)[..., np.newaxis]
    batches = Batches(tr.images, y_tr, class_weights(y_tr, tr.sources), cfg)
    best, best_epoch, history = -1.0, 0, []
    started = time.time()
    for epoch in range(1, cfg.epochs + 1):
        fit = model.fit(batches, initial_epoch=epoch - 1, epochs=epoch, verbose=0)
        logits = model.predict(x_va, batch_size=64, verbose=0)
        aucs = tb_vs_normal_aucs(logits, y_va, va.sources)
        worst = min(aucs.values())
        acc = float((logits.argmax(axis=1) == y_va).mean())
        loss = float(fit.history["loss"][-1])
        history.append({"epoch": epoch, "loss": loss, "val_auc_worst_source": worst, "val_accuracy": acc,
                        **{f"val_auc_{k}": v for k, v in aucs.items()}})
        log.info("epoch %d: loss %.4f val 3-class accuracy %.4f; TB vs normal worst source %.4f (%s)",
                 epoch, loss, acc, worst, ", ".join(f"{k} {v:.4f}" for k, v in aucs.items()))
        model.save(out / f"epoch-{epoch:02d}.keras")
        if worst > best + 1e-4:
            best, best_epoch = worst, epoch
            model.save(out / "model3.keras")
        elif epoch - best_epoch >= cfg.patience:
            log.info("early stop: no worst-source gain for %d epochs", cfg.patience)
            break
    log.info("best worst-source TB-vs-normal val_auc %.4f at epoch %d; %.0f s", best, best_epoch,
             time.time() - started)
    chosen = keras.saving.load_model(out / "model3.keras")
    for task, (pos, neg) in DERIVED.items():
        folder = out / task
        folder.mkdir(exist_ok=True)
        derive(chosen, cfg, pos, neg).save(folder / "model.keras")
        (folder / "history.json").write_text(json.dumps(
            {"config": asdict(cfg) | {"head": "three-class (normal, pneumonia, tb)",
                                      "logit": f"{CLASSES[pos]} - {CLASSES[neg]}",
                                      "command": " ".join(sys.argv)},
             "task": task, "best_epoch": best_epoch, "epochs": history}, indent=2))
        log.info("wrote %s", folder / "model.keras")


if __name__ == "__main__":
    main()
