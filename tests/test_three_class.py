"""``--head three-class``: sampling, the folded binary model, and a tiny run through the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_gateway.cli import main
from tests.synthetic_cxr import write_dataset
from training.tasks import PNEUMONIA_VS_TB, TB_VS_NORMAL
from training.three_class import CLASSES, class_pair, class_sampling_weights, class_targets


def test_class_pair_is_the_tasks_own_two_classes() -> None:
    assert [CLASSES[i] for i in class_pair(TB_VS_NORMAL)] == ["tb", "normal"]
    assert [CLASSES[i] for i in class_pair(PNEUMONIA_VS_TB)] == ["pneumonia", "tb"]


def test_sampling_gives_each_class_a_third_and_each_source_its_share() -> None:
    labels = ["normal"] * 6 + ["pneumonia"] * 2 + ["tb"] * 4
    sources = ["a"] * 5 + ["b"] + ["c"] * 2 + ["film"] * 3 + ["digital"]
    y = class_targets(labels)
    p = class_sampling_weights(y, sources, "source")
    assert p.sum() == pytest.approx(1.0)
    for cls in range(3):
        assert p[y == cls].sum() == pytest.approx(1 / 3)
    src = np.asarray(sources)
    assert p[src == "a"].sum() == pytest.approx(p[src == "b"].sum())  # 5 images against 1
    assert p[src == "film"].sum() == pytest.approx(p[src == "digital"].sum())
    left_out = class_sampling_weights(y, sources, "source", {"film": 0.0})
    assert left_out[src == "film"].sum() == 0 and left_out[y == 2].sum() == pytest.approx(1 / 3)
    assert class_sampling_weights(y, sources, "none") == pytest.approx(np.full(12, 1 / 12))


def test_unknown_label_or_missing_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="covid"):
        class_targets(["tb", "covid"])
    with pytest.raises(ValueError, match="pneumonia"):
        class_sampling_weights(class_targets(["tb", "normal"]), ["s", "s"], "source")


def test_folded_model_scores_like_the_pair_of_logits() -> None:
    import keras

    from training.three_class import fold, three_class_models

    pair = class_pair(TB_VS_NORMAL)
    fitted, full, _ = three_class_models("compact", 32, 0.3, 1e-4, None, pair)
    rng = np.random.default_rng(0)
    for layer in full.layers:  # random weights everywhere, the logit filters included
        if layer.name != "class_pair" and layer.get_weights():
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    x = rng.random((3, 32, 32, 1)).astype(np.float32)
    logits = fitted.predict(x, verbose=0)
    expected = 1 / (1 + np.exp(-(logits[:, pair[0]] - logits[:, pair[1]])))
    out = full.predict(x, verbose=0)
    np.testing.assert_allclose(out["score"][:, 0], expected, rtol=1e-4, atol=1e-6)
    binary = fold(full, "compact", 32, 0.3, 1e-4)
    assert [w.shape for w in binary.get_layer("logit_map").get_weights()] == [(1, 1, 256, 1), (1,)]
    folded = binary.predict(x, verbose=0)
    np.testing.assert_allclose(folded["score"], out["score"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(folded["cam"], out["cam"], rtol=1e-4, atol=1e-5)
    assert isinstance(binary, keras.Model) and set(binary.output) == {"score", "cam"}


@pytest.mark.slow
def test_three_class_run_ships_a_plain_binary_model(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", labels=("tb", "normal", "pneumonia"), corrupt=0)
    out = tmp_path / "tb"
    assert main(["train", "--task", "tb-vs-normal", "--head", "three-class", "--data", str(data),
                 "--out", str(out), "--arch", "compact", "--size", "64", "--epochs", "2",
                 "--steps-per-epoch", "3", "--batch-size", "8", "--patience", "2", "--cache", "",
                 "--save-epochs"]) == 0
    for name in ("model.keras", "model.tflite", "three-class.keras", "epochs/epoch-01.keras"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["task"] == "tb-vs-normal" and "--head three-class" in meta["command"]
    card = (out / "card.md").read_text()
    assert "three-class head" in card and "pneumonia/synthetic-pneumonia" in card
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["head"] == "three-class" and len(history["epochs"]) == 2
    # the shipped file is an ordinary binary model: the same scores as the three-class network's pair
    import keras

    x = np.random.default_rng(1).random((2, 64, 64, 1)).astype(np.float32)
    shipped = keras.saving.load_model(out / "model.keras").predict(x, verbose=0)["score"]
    pair = keras.saving.load_model(out / "three-class.keras").predict(x, verbose=0)["score"]
    np.testing.assert_allclose(shipped, pair, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("flag", [["--negatives", "normal,pneumonia"], ["--mixup", "0.2"],
                                  ["--centre-crop", "32"]])
def test_three_class_refuses_options_it_cannot_honour(flag: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="three-class: cannot be combined with " + flag[0]):
        main(["train", "--task", "tb-vs-normal", "--head", "three-class", "--data", str(tmp_path),
              "--out", str(tmp_path / "out"), *flag])


def test_an_ensemble_of_two_kinds_names_both_in_member_order(tmp_path: Path) -> None:
    from training.ensemble import Member, check_members

    folders = []
    for name, arch in (("tc", "mobilenetv3small with a three-class head"), ("b", "mobilenetv3small"),
                       ("b2", "mobilenetv3small")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"")
        (folder / "model.json").write_text(json.dumps(
            {"positive_label": "tb", "architecture": arch, "input_size": 224}))
        folders.append(Member(folder))
    assert check_members(folders, TB_VS_NORMAL) == (
        "mobilenetv3small with a three-class head + mobilenetv3small", 224)
    assert check_members(folders[1:], TB_VS_NORMAL) == ("mobilenetv3small", 224)


@pytest.mark.slow
def test_three_class_starts_from_a_local_weights_file(tmp_path: Path) -> None:
    from training.architectures import build_model

    source, backbone = build_model("mobilenetv3small", 32)
    start = tmp_path / "start.keras"
    source.save(start)
    data = write_dataset(tmp_path / "data", per_class=12, labels=("tb", "normal", "pneumonia"), corrupt=0)
    out = tmp_path / "tb"
    assert main(["train", "--task", "tb-vs-normal", "--head", "three-class", "--data", str(data),
                 "--out", str(out), "--arch", "mobilenetv3small", "--size", "32", "--epochs", "2",
                 "--steps-per-epoch", "2", "--batch-size", "8", "--patience", "2", "--cache", "",
                 "--weights", str(start), "--freeze-epochs", "1"]) == 0
    log = (out / "train.log").read_text()
    assert "epoch 1:" in log and "epoch 2:" in log
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["weights"] == str(start) and history["config"]["freeze_epochs"] == 1
    # epoch 1 trained the head only: its checkpoint's backbone is still the start file's
    import keras

    assert main(["train", "--task", "tb-vs-normal", "--head", "three-class", "--data", str(data),
                 "--out", str(tmp_path / "frozen"), "--arch", "mobilenetv3small", "--size", "32",
                 "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--cache", "",
                 "--weights", str(start), "--freeze-epochs", "1"]) == 0
    frozen = keras.saving.load_model(tmp_path / "frozen" / "model.keras")
    inner = next(layer for layer in frozen.layers if isinstance(layer, keras.Model))
    for got, want in zip(inner.get_weights(), backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
