"""Capture adversary: train features that cannot tell an image's source within its label.

In ``cxr/`` most TB images are scanned films and every normal is a digital
radiograph, so the cheapest TB cue is the capture. ``train --adversary W`` adds
a second head during training only: from the pooled backbone features, and
told the image's label (tb, normal or pneumonia), it predicts the image's
source (e.g. scanned-film-tb or qatar-tb). Given the label, the head can gain
nothing from the disease itself, only from the capture.

Two objectives pull on it (domain confusion, Tzeng et al. 2015):

* the head learns to tell the sources apart, on features it cannot change
  (``source``: cross-entropy with the true source, the features' gradient stopped);
* the backbone learns to confuse the head, whose weights it cannot change
  (``confusion``: cross-entropy with an even split over the sources of the
  image's label). This is bounded: it is smallest when the head is left at
  chance, not when it is fooled into the wrong answer, which with a plain
  reversed gradient (Ganin & Lempitsky 2015) drove the features to swing and the
  validation AUC to collapse (measured, TB card notes).

The weight of the confusion term rises from 0 to W over the run (Ganin &
Lempitsky's schedule, ``2 / (1 + exp(-10 p)) - 1``), so the classifier first
finds the disease and the adversary then takes the capture away. The saved
model (``score`` and ``cam``) has no trace of the adversary: serving, export
and ensembles are unchanged.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers
from numpy.typing import NDArray

from training.data import LABELS

SCHEDULE_GAIN = 10.0  # Ganin & Lempitsky's gamma
HIDDEN = 64  # units of the adversary's hidden layer


class GradientScale(layers.Layer):
    """Identity forward; the gradient is multiplied by ``strength`` on the way back."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                        name="strength")

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        # forward: s x + (x - s x) = x; backward: only the s x term carries a gradient
        s = keras.ops.cast(self.strength, x.dtype)
        return x * s + keras.ops.stop_gradient(x - x * s)


class FrozenDense(layers.Layer):
    """``dense`` applied with its weights held: gradients reach the input, never the weights."""

    def __init__(self, dense: layers.Dense, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        kernel = keras.ops.stop_gradient(self.dense.kernel)
        bias = keras.ops.stop_gradient(self.dense.bias)
        activation = keras.activations.get(self.dense.activation)
        return activation(keras.ops.matmul(x, kernel) + bias)


def confusion_weight(weight: float, progress: float) -> float:
    """The confusion term's weight at ``progress`` (0 to 1) through a run of maximum ``weight``."""
    p = min(max(progress, 0.0), 1.0)
    return weight * (2.0 / (1.0 + math.exp(-SCHEDULE_GAIN * p)) - 1.0)


class ConfusionSchedule(keras.callbacks.Callback):
    """Set the confusion term's weight before every training batch."""

    def __init__(self, scale: GradientScale, weight: float, total_steps: int,
                 steps_per_epoch: int) -> None:
        super().__init__()
        self.scale, self.weight = scale, weight
        self.total, self.per_epoch = max(1, total_steps), steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        step = self.epoch * self.per_epoch + batch
        self.scale.strength.assign(confusion_weight(self.weight, step / self.total))


def adversarial_model(model: keras.Model, n_sources: int) -> tuple[keras.Model, GradientScale]:
    """The training-time model: ``model``'s score plus the adversary's two outputs.

    Inputs ``image`` and ``label`` (one-hot over :data:`training.data.LABELS`);
    outputs ``score``, ``source`` (the head on the held features) and
    ``confusion`` (the held head on the features), each a softmax over the
    training sources. It shares every weight with ``model``, which stays the
    model that is saved.
    """
    features = model.get_layer("logit_map").input  # backbone features after dropout
    label = keras.Input((len(LABELS),), name="label")
    pooled = layers.GlobalAveragePooling2D(name="adversary_pool")(features)
    hidden = layers.Dense(HIDDEN, activation="relu", name="adversary_hidden")
    out = layers.Dense(n_sources, activation="softmax", name="adversary_out")
    joined = layers.Concatenate(name="adversary_input")
    held = layers.Lambda(keras.ops.stop_gradient, name="adversary_held_features")(pooled)
    source = layers.Identity(name="source")(out(hidden(joined([held, label]))))
    scale = GradientScale(name="confusion_scale")
    confused = FrozenDense(out)(FrozenDense(hidden)(joined([scale(pooled), label])))
    confusion = layers.Identity(name="confusion")(confused)
    trainer = keras.Model({"image": model.input, "label": label},
                          {"score": model.output["score"], "source": source,
                           "confusion": confusion}, name=f"{model.name}_adversarial")
    return trainer, scale


Targets = tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.float32]]
"""Per training image: one-hot label, source index, confusion target (an even split)."""


def adversary_targets(labels: list[str], sources: list[str]) -> tuple[Targets, list[str]]:
    """What :class:`training.train.BalancedBatches` hands the adversary, and the source names."""
    index, names = source_index(sources)
    return (label_one_hot(labels), index, even_split(labels, sources)), names


def label_one_hot(labels: list[str]) -> NDArray[np.float32]:
    """One-hot rows over :data:`training.data.LABELS`."""
    out = np.zeros((len(labels), len(LABELS)), dtype=np.float32)
    out[np.arange(len(labels)), [LABELS.index(lab) for lab in labels]] = 1.0
    return out


def source_index(sources: list[str]) -> tuple[NDArray[np.int32], list[str]]:
    """Each image's source as an index into the sorted source names, and the names."""
    names = sorted(set(sources))
    return np.array([names.index(s) for s in sources], dtype=np.int32), names


def even_split(labels: list[str], sources: list[str]) -> NDArray[np.float32]:
    """Per image, an even split over the sources its label has in the data: the confusion target."""
    index, names = source_index(sources)
    per_label = np.zeros((len(LABELS), len(names)), dtype=np.float32)
    for lab, i in zip(labels, index, strict=True):
        per_label[LABELS.index(lab), i] = 1.0
    per_label /= np.maximum(per_label.sum(axis=1, keepdims=True), 1.0)
    return per_label[[LABELS.index(lab) for lab in labels]]
