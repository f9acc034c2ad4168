"""Selectable architectures, all with the same contract.

Input: ``(size, size, 1)`` float32 in [0, 1], the output of
:func:`inference.preprocess.preprocess_gray`. The gray channel is repeated to
three channels and scaled the way each backbone expects, inside the model, so
preprocessing never depends on the architecture.

Outputs: ``score`` (sigmoid probability of the positive class) and ``cam``
(class activation map, Zhou et al. 2016: the per-position logit of the last
feature map), so heatmaps come from the same forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

from training.tasks import ARCHITECTURES

log = logging.getLogger(__name__)

_Scale = Callable[[keras.KerasTensor], keras.KerasTensor]


def _scale_255(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Rescaling(255.0)(x)


def _scale_caffe(x: keras.KerasTensor) -> keras.KerasTensor:
    # ResNet50/VGG16 ImageNet weights expect BGR minus the ImageNet mean; gray is the same in B,G,R.
    return layers.Rescaling(255.0, offset=-116.8)(x)


def _scale_tf(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Rescaling(2.0, offset=-1.0)(x)


def _scale_torch(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Rescaling(1.0 / 0.226, offset=-0.449 / 0.226)(x)


def _backbone(name: str, size: int, weights: str | None) -> tuple[keras.Model, _Scale]:
    apps = keras.applications
    shape = (size, size, 3)
    table: dict[str, tuple[Callable[..., keras.Model], _Scale, dict[str, object]]] = {
        "mobilenetv3small": (apps.MobileNetV3Small, _scale_255, {"include_preprocessing": True}),
        "mobilenetv3large": (apps.MobileNetV3Large, _scale_255, {"include_preprocessing": True}),
        "efficientnetb0": (apps.EfficientNetB0, _scale_255, {}),
        "resnet50": (apps.ResNet50, _scale_caffe, {}),
        "vgg16": (apps.VGG16, _scale_caffe, {}),
        "inceptionv3": (apps.InceptionV3, _scale_tf, {}),
        "densenet121": (apps.DenseNet121, _scale_torch, {}),
    }
    ctor, scale, extra = table[name]
    if weights is not None and Path(weights).suffix == ".keras":
        model = ctor(include_top=False, weights=None, input_shape=shape, **extra)
        _copy_backbone(Path(weights), model)
        return model, scale
    model = ctor(include_top=False, weights=weights, input_shape=shape, **extra)
    return model, scale


def _copy_backbone(path: Path, backbone: keras.Model) -> None:
    """Start ``backbone`` from the same backbone inside a saved CXR model (``model.keras``).

    For example the shipped TB model as the starting point of the pneumonia-vs-TB
    model: the backbone that learned from every training image, fine-tuned.
    """
    saved = keras.saving.load_model(path, compile=False)
    for layer in saved.layers:
        if isinstance(layer, keras.Model) and layer.name == backbone.name:
            backbone.set_weights(layer.get_weights())
            return
    raise ValueError(f"weights: {path} has no {backbone.name} backbone; train with the same --arch")


def _compact(size: int, l2: float) -> keras.Model:
    """A small VGG-style CNN with batch norm: fast on a CPU, trains from scratch."""
    reg = keras.regularizers.L2(l2)
    inp = keras.Input((size, size, 3))
    x = inp
    for i, filters in enumerate((24, 48, 96, 160, 256)):
        strides = 2 if i == 0 else 1
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        if i < 4:
            x = layers.MaxPooling2D()(x)
    return keras.Model(inp, x, name="compact")


FEATURE_STRIDE = 32  # every backbone here downsamples its input 32-fold


def check_centre_crop(size: int, crop: int) -> int:
    """Pixels cut from each side for a ``crop``-pixel centre crop of a ``size`` input (0: none).

    The cut must be a whole number of feature cells, so that the padded
    activation map lines up with the map of an uncropped model.
    """
    if crop in (0, size):
        return 0
    cut = (size - crop) // 2
    if not 0 < crop < size or cut % FEATURE_STRIDE or crop % FEATURE_STRIDE:
        raise ValueError(f"centre_crop: {crop} must be below the input size {size}, a multiple "
                         f"of {FEATURE_STRIDE}, and leave a multiple of {FEATURE_STRIDE} pixels "
                         f"on each side (for size 224: 160 or 96)")
    return cut


def build_model(arch: str, size: int, dropout: float = 0.3, l2: float = 1e-4,
                weights: Path | None = None, centre_crop: int = 0,
                classes: int = 1) -> tuple[keras.Model, keras.Model]:
    """Build ``(model, backbone)``.

    ``weights`` is a local Keras weights file for the backbone (e.g. ImageNet
    "notop" weights), or a saved model of this project (``model.keras``) whose
    backbone of the same architecture is copied.

    ``centre_crop`` (pixels, 0 = off) makes the model look only at the central
    ``centre_crop`` x ``centre_crop`` pixels of its input, at the same pixel
    scale: the border, where film edges, collimation and burned-in text sit,
    never reaches the backbone. The input and the activation-map grid stay
    those of an uncropped model (the map is zero over the cut border), so
    serving, heatmaps and ensembles need nothing new.

    ``classes`` > 1 gives ``logit_map`` one filter per class and the outputs
    ``logits`` (the pooled logits, for a softmax over the classes) and
    ``logit_map``: the network a ``--head three-class`` run trains
    (:mod:`training.three_class`), which ships as a binary model of this contract.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    cut = check_centre_crop(size, centre_crop)
    inp = keras.Input((size, size, 1), name="image")
    seen = layers.Cropping2D(cut, name="centre_crop")(inp) if cut else inp
    rgb = layers.Concatenate(name="gray_to_rgb")([seen, seen, seen])
    inner = size - 2 * cut
    if arch == "compact":
        if weights is not None:
            raise ValueError("weights: the compact CNN has no pretrained weights; omit --weights")
        backbone = _compact(inner, l2)
        features = backbone(rgb)
    else:
        backbone, scale = _backbone(arch, inner, str(weights) if weights else None)
        features = backbone(scale(rgb))
    # A 1x1 convolution before global average pooling equals GAP followed by a dense layer,
    # and its per-position output is the class activation map itself.
    dropped = layers.Dropout(dropout)(features)
    logit_map = layers.Conv2D(classes, 1, kernel_regularizer=keras.regularizers.L2(l2),
                              name="logit_map")(dropped)
    pooled = layers.GlobalAveragePooling2D()(logit_map)
    if classes > 1:
        model = keras.Model(inp, {"logits": pooled, "logit_map": logit_map}, name=f"cxr{classes}_{arch}")
        if weights is None:
            _settle_batch_norm(model)
        return model, backbone
    if cut:
        logit_map = layers.ZeroPadding2D(cut // FEATURE_STRIDE, name="cam_border")(logit_map)
    cam = layers.Reshape(tuple(logit_map.shape[1:3]), name="cam")(logit_map)
    score = layers.Activation("sigmoid", name="score")(pooled)
    model = keras.Model(inp, {"score": score, "cam": cam}, name=f"cxr_{arch}")
    if weights is None:
        _settle_batch_norm(model)
    return model, backbone


def _settle_batch_norm(model: keras.Model, momentum: float = 0.9) -> None:
    """Let batch-norm moving statistics follow training quickly when starting from scratch.

    Keras' MobileNetV3 uses momentum 0.999: after a few hundred steps its
    moving statistics are still near their initial values and the model gives
    a constant output in inference mode while training metrics look good.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
