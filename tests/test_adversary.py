"""The capture adversary (``train --adversary W``): its two objectives, schedule, batches, a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_gateway.cli import main
from tests.synthetic_cxr import write_dataset


def test_gradient_scale_is_identity_forward_and_scales_the_gradient() -> None:
    import tensorflow as tf

    from training.adversary import GradientScale

    layer = GradientScale()
    x = tf.Variable(np.linspace(-2, 3, 12, dtype=np.float32).reshape(3, 4))
    for strength in (0.0, 0.4, 1.0):
        layer.strength.assign(strength)
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
        np.testing.assert_allclose(tape.gradient(loss, x).numpy(), strength * 2 * x.numpy(),
                                   atol=1e-5)


def test_schedule_rises_from_zero_to_the_weight() -> None:
    from training.adversary import confusion_weight

    values = [confusion_weight(0.3, p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(0.3, abs=1e-4)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert confusion_weight(0.3, 2.0) == values[-1]  # clipped past the end of the run


def test_even_split_is_over_the_sources_of_each_label() -> None:
    from training.adversary import even_split

    labels = ["tb", "tb", "normal", "normal", "pneumonia"]
    sources = ["film", "digital", "site-a", "site-a", "children"]  # sorted: children digital film site-a
    split = even_split(labels, sources)
    np.testing.assert_allclose(split[0], [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(split[2], [0, 0, 0, 1])  # one source: nothing to confuse
    np.testing.assert_allclose(split[4], [1, 0, 0, 0])
    np.testing.assert_allclose(split.sum(axis=1), 1.0)


def test_each_objective_moves_only_its_own_side() -> None:
    """The source loss trains the head and never reaches the backbone; the confusion loss
    reaches the backbone (scaled by the schedule) and never the head."""
    import keras
    import tensorflow as tf

    from training.adversary import adversarial_model, even_split, label_one_hot
    from training.architectures import build_model

    keras.utils.set_random_seed(3)
    model, backbone = build_model("compact", 64, dropout=0.0)
    trainer, scale = adversarial_model(model, 3)
    rng = np.random.default_rng(0)
    labels = ["tb", "tb", "normal", "pneumonia"]
    inputs = {"image": rng.random((4, 64, 64, 1), dtype=np.float32), "label": label_one_hot(labels)}
    source = np.array([0, 1, 2, 1])
    split = even_split(labels, ["a", "b", "c", "b"])
    kernel = backbone.trainable_weights[0]
    head = [trainer.get_layer("adversary_hidden").kernel, trainer.get_layer("adversary_out").kernel]

    def grads(output: str, strength: float) -> list[np.ndarray]:
        scale.strength.assign(strength)
        with tf.GradientTape() as tape:
            out = trainer(inputs, training=False)
            if output == "source":
                loss = keras.losses.sparse_categorical_crossentropy(source, out["source"])
            else:
                loss = keras.losses.categorical_crossentropy(split, out["confusion"])
            loss = tf.reduce_mean(loss)
        found = tape.gradient(loss, [kernel, *head])
        return [np.zeros(v.shape) if g is None else g.numpy()
                for v, g in zip([kernel, *head], found, strict=True)]

    backbone_g, *head_g = grads("source", 1.0)
    assert not backbone_g.any() and all(np.abs(g).max() > 0 for g in head_g)
    backbone_g, *head_g = grads("confusion", 0.0)
    assert not backbone_g.any() and not any(g.any() for g in head_g)
    full, *head_g = grads("confusion", 1.0)
    assert np.abs(full).max() > 0 and not any(g.any() for g in head_g)
    part, *_ = grads("confusion", 0.25)
    np.testing.assert_allclose(part, 0.25 * full, rtol=1e-4, atol=1e-9)
    out = trainer(inputs, training=False)  # the two branches are one head on the same features
    np.testing.assert_allclose(out["source"].numpy(), out["confusion"].numpy(), rtol=1e-5)


def test_adversarial_batches_carry_each_images_label_and_source() -> None:
    from training.adversary import even_split, label_one_hot, source_index
    from training.augment import AugmentConfig
    from training.train import BalancedBatches, TrainConfig

    labels = ["tb", "tb", "normal", "pneumonia"] * 3
    sources = ["film", "digital", "site-a", "children"] * 3
    images = np.stack([np.full((8, 8), 20 * i, np.uint8) for i in range(4)] * 3)  # tone = position
    y = np.array([1, 1, 0, 0] * 3, dtype=np.float32)
    src, names = source_index(sources)
    assert names == ["children", "digital", "film", "site-a"]
    off = AugmentConfig(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, gamma=0,
                        blur_p=0, noise_p=0, jpeg_p=0)
    cfg = TrainConfig(steps_per_epoch=1, batch_size=32, seed=2, adversary=0.3)
    adversary = (label_one_hot(labels), src, even_split(labels, sources))
    x, t = BalancedBatches(images, y, np.full(12, 1 / 12), cfg, off, adversary)[0]
    assert isinstance(x, dict) and isinstance(t, dict)
    position = np.round(x["image"].mean(axis=(1, 2, 3)) * 255 / 20).astype(int)
    assert set(position) == {0, 1, 2, 3}
    np.testing.assert_array_equal(t["source"], [names.index(sources[p]) for p in position])
    np.testing.assert_array_equal(x["label"].argmax(1),
                                  [("normal", "pneumonia", "tb").index(labels[p]) for p in position])
    np.testing.assert_array_equal(t["score"][:, 0], y[position])
    np.testing.assert_array_equal(t["confusion"], adversary[2][position])


@pytest.mark.slow
def test_adversarial_run_ships_a_plain_model(tmp_path: Path) -> None:
    """A tiny run with the adversary: the source head trains and is logged, but the saved model
    is the ordinary score-and-map model, with no trace of the adversary."""
    import keras

    data = write_dataset(tmp_path / "data", per_class=12, labels=("tb", "normal", "pneumonia"),
                         corrupt=0)
    out = tmp_path / "model"
    assert main(["train", "--task", "tb-vs-normal", "--negatives", "normal,pneumonia",
                 "--data", str(data), "--out", str(out), "--arch", "compact", "--size", "64",
                 "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "8", "--patience", "2",
                 "--cache", "", "--adversary", "0.5"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["adversary"] == 0.5
    assert all("source_loss" in e and "source_accuracy" in e and "confusion_loss" in e
               for e in history["epochs"])
    model = keras.saving.load_model(out / "model.keras")
    assert set(model.output) == {"score", "cam"}
    assert not any(layer.name.startswith(("adversary", "confusion", "source"))
                   for layer in model.layers)
    assert "capture adversary" in (out / "train.log").read_text()


def test_adversary_flag_is_checked() -> None:
    with pytest.raises(SystemExit, match="--adversary"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--adversary", "-1"])
    with pytest.raises(SystemExit, match="--adversary.*--mixup"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--adversary", "0.3",
              "--mixup", "0.2"])
