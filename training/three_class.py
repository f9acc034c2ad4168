"""One backbone, three classes (normal, pneumonia, TB), shipped as a binary model (``--head three-class``).

A binary TB model trained against normal *and* pneumonia radiographs learns one
boundary: a TB radiograph that looks unlike the training TB sources but is
clearly abnormal is pushed towards "not TB" together with the pneumonias. A
three-class network keeps pneumonia as its own class: the features still learn
"abnormal", and the task's score compares only its two classes.

Training: :func:`training.architectures.build_model` with ``classes=3`` (one
logit per class, softmax cross-entropy), sampling a third of every batch from
each class and, with ``--balance source``, every source within a class equally
often. The task's score is ``sigmoid(logit[positive] - logit[negative])``, that
is ``p(positive) / (p(positive) + p(negative))``: for tb-vs-normal TB against
normal. The checkpoint is chosen as for a binary run (:class:`training.train.BestByAuc`,
the worst positive source's validation ROC-AUC of that score, on the validation
images of the two classes).

Shipped: the 1x1 ``logit_map`` convolution and the global average pooling are
linear, so the score's logit equals one 1x1 filter, ``w[positive] - w[negative]``
(:func:`fold`). ``model.keras`` is then an ordinary binary model of the
architectures' contract (``score``, ``cam``), and threshold, metrics, export,
ensembles, heatmaps and serving treat it like any other. The three-class network
itself stays beside it in the run folder (``three-class.keras``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers
from numpy.typing import NDArray

from training.architectures import build_model
from training.sampling import sampling_weights
from training.tasks import TASKS, Task

log = logging.getLogger(__name__)

CLASSES = ("normal", "pneumonia", "tb")
THREE_CLASS_FILE = "three-class.keras"


def class_pair(task: Task) -> tuple[int, int]:
    """Indices in :data:`CLASSES` of the task's positive and negative class (its own, not
    ``--negatives``: the score compares exactly these two)."""
    own = TASKS[task.name]
    (pos,), (neg,) = own.positive, own.negative
    return CLASSES.index(pos), CLASSES.index(neg)


def class_targets(labels: list[str]) -> NDArray[np.int64]:
    """Class index of every label; every image must be one of :data:`CLASSES`."""
    unknown = sorted(set(labels) - set(CLASSES))
    if unknown:
        raise ValueError(f"head three-class: labels {unknown} are not among {list(CLASSES)}")
    return np.array([CLASSES.index(lab) for lab in labels], dtype=np.int64)


def class_sampling_weights(y: NDArray[np.int64], sources: list[str], balance: str,
                           source_weights: dict[str, float] | None = None) -> NDArray[np.float64]:
    """:func:`training.sampling.sampling_weights` over the three classes (a third each), once
    every class has training images."""
    missing = sorted(set(CLASSES) - {CLASSES[i] for i in set(y.tolist())})
    if missing:
        raise ValueError(f"head three-class: the training split has no {missing} images")
    return sampling_weights(y, sources, balance, source_weights, classes=len(CLASSES))


def three_class_models(arch: str, size: int, dropout: float, l2: float, weights: Path | None,
                       pair: tuple[int, int]) -> tuple[keras.Model, keras.Model, keras.Model]:
    """``(fitted, full, backbone)``: ``fitted`` maps an image to the three pooled logits (trained
    with softmax cross-entropy); ``full`` shares its weights and has the binary contract
    (``score``, ``cam``) of the pair ``logit[pair[0]] - logit[pair[1]]``, for validation and
    checkpoints."""
    net, backbone = build_model(arch, size, dropout, l2, weights, classes=len(CLASSES))
    kernel = np.zeros((1, 1, len(CLASSES), 1), np.float32)
    kernel[0, 0, pair[0], 0], kernel[0, 0, pair[1], 0] = 1.0, -1.0
    difference = layers.Conv2D(1, 1, use_bias=False, trainable=False, kernel_initializer="zeros",
                               name="class_pair")
    pair_map = difference(net.output["logit_map"])
    difference.set_weights([kernel])
    score = layers.Activation("sigmoid", name="score")(layers.GlobalAveragePooling2D()(pair_map))
    cam = layers.Reshape(tuple(pair_map.shape[1:3]), name="cam")(pair_map)
    full = keras.Model(net.input, {"score": score, "cam": cam}, name=f"cxr_{arch}_pair")
    fitted = keras.Model(net.input, net.output["logits"], name=f"cxr3_{arch}")
    return fitted, full, backbone


def fold(full: keras.Model, arch: str, size: int, dropout: float, l2: float) -> keras.Model:
    """The plain binary model (:func:`build_model`) equal to ``full``: its ``logit_map`` filter is
    the pair's difference of the three class filters."""
    binary, backbone = build_model(arch, size, dropout, l2)
    source = next(layer for layer in full.layers
                  if isinstance(layer, keras.Model) and layer.name == backbone.name)
    backbone.set_weights(source.get_weights())
    kernel, bias = full.get_layer("logit_map").get_weights()
    (pair,) = full.get_layer("class_pair").get_weights()
    binary.get_layer("logit_map").set_weights([kernel @ pair[0, 0], bias @ pair[0, 0]])
    return binary
