"""Capture adversary: train features that cannot tell an image's source within its label.

In ``cxr/`` most TB images are scanned films and every normal is a digital
radiograph, so the cheapest TB cue is the capture. ``train --adversary W`` adds
a second head during training only: from the pooled backbone features, and
told the image's label (tb, normal or pneumonia), it predicts the image's
source (e.g. scanned-film-tb or qatar-tb). Its gradient reaches the backbone
reversed (Ganin & Lempitsky 2015, domain-adversarial training), so the
backbone is pushed towards features that carry no information about the
source *beyond the label*: what tells a film from a digital TB radiograph is
unlearnt, what tells TB from normal is kept. Given the label, the head cannot
gain from the disease itself, only from the capture.

The strength of the reversal rises from 0 to W over the run (the schedule of
Ganin & Lempitsky, ``2 / (1 + exp(-10 p)) - 1``), so the classifier first finds
the disease and the adversary then takes the capture away. The saved model
(``score`` and ``cam``) has no trace of the adversary: serving, export and
ensembles are unchanged.
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


class GradientReversal(layers.Layer):
    """Identity forward; the gradient is multiplied by ``-strength`` on the way back."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.strength = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                        name="strength")

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        # forward: (1 + s) x - s x = x; backward: only the -s x term carries a gradient
        s = keras.ops.cast(self.strength, x.dtype)
        return keras.ops.stop_gradient(x * (1.0 + s)) - x * s


def reversal_strength(weight: float, progress: float) -> float:
    """The reversal's strength at ``progress`` (0 to 1) through a run of maximum ``weight``."""
    p = min(max(progress, 0.0), 1.0)
    return weight * (2.0 / (1.0 + math.exp(-SCHEDULE_GAIN * p)) - 1.0)


class ReversalSchedule(keras.callbacks.Callback):
    """Set the reversal's strength before every training batch."""

    def __init__(self, reversal: GradientReversal, weight: float, total_steps: int,
                 steps_per_epoch: int) -> None:
        super().__init__()
        self.reversal, self.weight = reversal, weight
        self.total, self.per_epoch = max(1, total_steps), steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        step = self.epoch * self.per_epoch + batch
        self.reversal.strength.assign(reversal_strength(self.weight, step / self.total))


def adversarial_model(model: keras.Model, n_sources: int) -> tuple[keras.Model, GradientReversal]:
    """The training-time model: ``model``'s score plus the source head.

    Inputs ``image`` and ``label`` (one-hot over :data:`training.data.LABELS`);
    outputs ``score`` and ``source`` (softmax over the training sources). It
    shares every weight with ``model``, which stays the model that is saved.
    """
    features = model.get_layer("logit_map").input  # backbone features after dropout
    label = keras.Input((len(LABELS),), name="label")
    reversal = GradientReversal(name="gradient_reversal")
    pooled = layers.GlobalAveragePooling2D(name="adversary_pool")(reversal(features))
    hidden = layers.Dense(HIDDEN, activation="relu", name="adversary_hidden")(
        layers.Concatenate(name="adversary_input")([pooled, label]))
    source = layers.Dense(n_sources, activation="softmax", name="source")(hidden)
    trainer = keras.Model({"image": model.input, "label": label},
                          {"score": model.output["score"], "source": source},
                          name=f"{model.name}_adversarial")
    return trainer, reversal


def label_one_hot(labels: list[str]) -> NDArray[np.float32]:
    """One-hot rows over :data:`training.data.LABELS`."""
    out = np.zeros((len(labels), len(LABELS)), dtype=np.float32)
    out[np.arange(len(labels)), [LABELS.index(lab) for lab in labels]] = 1.0
    return out


def source_index(sources: list[str]) -> tuple[NDArray[np.int32], list[str]]:
    """Each image's source as an index into the sorted source names, and the names."""
    names = sorted(set(sources))
    return np.array([names.index(s) for s in sources], dtype=np.int32), names
