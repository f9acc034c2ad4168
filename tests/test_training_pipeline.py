"""A tiny training run end to end on a synthetic set: model, card, plots, report, TFLite parity."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cxr_gateway.cli import main
from tests.dicom_factory import make_chest, write
from tests.synthetic_cxr import phantom, write_dataset

pytestmark = pytest.mark.slow

TINY = ["--arch", "compact", "--size", "64", "--epochs", "2", "--steps-per-epoch", "3",
        "--batch-size", "8", "--patience", "2", "--cache", ""]
TB_VIEWS = "identity,flip,zoom1.2"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train both classifiers on a synthetic set; return the models folder."""
    root = tmp_path_factory.mktemp("tiny")
    data = write_dataset(root / "data", labels=("tb", "normal", "pneumonia"))
    models = root / "models"
    views = {"tb-vs-normal": ["--views", TB_VIEWS], "pneumonia-vs-tb": []}
    for task in ("tb-vs-normal", "pneumonia-vs-tb"):
        assert main(["train", "--task", task, "--data", str(data), "--out",
                     str(models / task), *TINY, *views[task]]) == 0
    return models


def test_train_writes_complete_model_folder(tiny_models: Path) -> None:
    folder = tiny_models / "tb-vs-normal"
    for name in ("model.tflite", "model.keras", "model.json", "card.md", "report.json", "report.md",
                 "roc.png", "pr.png", "confusion-test.png", "training-curves.png", "history.json",
                 "train.log"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "model.json").read_text())
    assert meta["task"] == "tb-vs-normal" and 0.0 <= meta["threshold"] <= 1.0
    report = json.loads((folder / "report.json").read_text())
    assert set(report["sets"]) == {"val", "test"}
    assert "synthetic-tb" in report["sets"]["test"]["per_source"]
    card = (folder / "card.md").read_text()
    assert "operating threshold" in card and "tb-vs-normal" in card


def test_corrupt_image_skipped_and_named(tiny_models: Path) -> None:
    log = (tiny_models / "tb-vs-normal" / "train.log").read_text()
    assert "corrupt-0.png" in log and "skipped 1 of" in log


def test_tflite_matches_keras(tiny_models: Path) -> None:
    import keras

    from inference.engine import TfliteModel
    from inference.preprocess import preprocess_gray
    from inference.registry import ModelSpec

    folder = tiny_models / "pneumonia-vs-tb"
    spec = ModelSpec.load(folder)
    lite = TfliteModel(spec)
    model = keras.saving.load_model(folder / "model.keras")
    rng = np.random.default_rng(5)
    for label in ("tb", "pneumonia"):
        unit = preprocess_gray(phantom(rng, label), spec.input_size)
        k = float(model.predict(unit[None, :, :, None], verbose=0)["score"][0, 0])
        s, cam = lite.run(unit)
        assert abs(s - k) < 0.02
        assert cam.ndim == 2


def test_views_are_recorded_and_served_as_trained(tiny_models: Path) -> None:
    """Test-time views: in model.json and the card; the served score is the mean over them,
    and the training run's val scores (threshold, metrics) used the same mean."""
    import keras

    from inference.engine import TfliteModel
    from inference.preprocess import preprocess_gray, view_stack
    from inference.registry import ModelSpec
    from training.pipeline import keras_scorer

    folder = tiny_models / "tb-vs-normal"
    spec = ModelSpec.load(folder)
    assert spec.views == tuple(TB_VIEWS.split(","))
    assert ModelSpec.load(tiny_models / "pneumonia-vs-tb").views == ("identity",)
    assert "score = mean over identity, flip, zoom1.2" in (folder / "card.md").read_text()
    model = keras.saving.load_model(folder / "model.keras")
    unit = preprocess_gray(phantom(np.random.default_rng(9), "tb"), spec.input_size)
    stack = view_stack(unit, spec.views)[..., None]
    singles = model.predict(stack, verbose=0)["score"][:, 0]
    served, cam = TfliteModel(spec).run(unit)
    assert served == pytest.approx(float(singles.mean()), abs=0.02)
    assert keras_scorer(model, spec.views)(unit[None, :, :, None])[0] == pytest.approx(
        float(singles.mean()), abs=1e-5)
    assert cam.ndim == 2


def test_evaluate_and_predict_commands(tiny_models: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "eval", per_class=8, corrupt=0)
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(tiny_models / "tb-vs-normal"), "--data", str(data),
                 "--split", "all", "--out", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "roc.png").exists()
    assert json.loads((out / "report.json").read_text())["views"] == TB_VIEWS.split(",")
    assert main(["evaluate", "--model", str(tiny_models / "tb-vs-normal"), "--data", str(data),
                 "--split", "all", "--out", str(out), "--views", "identity"]) == 0
    assert json.loads((out / "report.json").read_text())["views"] == ["identity"]
    # A radiograph-like image the pixel checks pass: the 96-pixel phantoms the tiny model
    # learned from are crude enough that the not-a-radiograph check refuses some of them.
    chest = write(make_chest(), tmp_path / "chest.dcm")
    capsys.readouterr()
    assert main(["predict", "--models", str(tiny_models), "--json", str(chest)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["finding"] in {"tb-suspected", "pneumonia-pattern", "no-tb-finding"}
    assert 0.0 <= result["tb_vs_normal"]["score"] <= 1.0
    assert result["pneumonia_vs_tb"]["threshold"] == pytest.approx(
        json.loads((tiny_models / "pneumonia-vs-tb" / "model.json").read_text())["threshold"], abs=1e-6)


def test_predict_reports_unreadable_file(tiny_models: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", "--models", str(tiny_models), str(bad)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"{bad}: not classified: ") and printed.count(str(bad)) == 1


def test_folder_per_class_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from training.data import read_records

    for folder in ("Normal", "Tuberculosis", "Unrelated"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        records = read_records(tmp_path)
    assert sorted(r.label for r in records) == ["normal", "tb"]
    assert {r.split for r in records} <= {"train", "val", "test"}
    assert "Unrelated" in caplog.text


def test_pretrained_weights_file_fine_tuning(tmp_path: Path) -> None:
    """--weights loads a local backbone weights file, freezes, then fine-tunes."""
    import keras

    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                   input_shape=(32, 32, 3))
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    data = write_dataset(tmp_path / "data", per_class=12, corrupt=0)
    out = tmp_path / "model"
    assert main(["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(out),
                 "--arch", "mobilenetv3small", "--size", "32", "--epochs", "2",
                 "--steps-per-epoch", "2", "--batch-size", "8", "--cache", "",
                 "--weights", str(weights), "--freeze-epochs", "1"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 2 and history["config"]["weights"] == str(weights)


def test_backbone_from_a_saved_cxr_model() -> None:
    """--weights model.keras: the backbone of a trained model of the same architecture is copied."""
    import tempfile

    from training.architectures import build_model

    source, backbone = build_model("mobilenetv3small", 32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        source.save(path)
        _, copied = build_model("mobilenetv3small", 32, weights=path)
        assert all(np.array_equal(a, b) for a, b in zip(copied.get_weights(), backbone.get_weights(),
                                                        strict=True))
        with pytest.raises(ValueError, match="no efficientnetb0 backbone"):
            build_model("efficientnetb0", 32, weights=path)


def test_bad_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_class=8, corrupt=0)
    with pytest.raises(ValueError, match="weights"):
        main(["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(tmp_path / "m"),
              "--arch", "compact", "--size", "32", "--cache", "", "--weights", "x.weights.h5"])


def test_predict_on_dicom(tiny_models: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """predict takes DICOM: a chest radiograph is classified, an NM image is refused with a reason."""
    from tests.dicom_factory import make_chest, make_nm, write

    chest = write(make_chest(), tmp_path / "chest.dcm")
    nm = write(make_nm(), tmp_path / "nm.dcm")
    capsys.readouterr()
    assert main(["predict", "--models", str(tiny_models), "--json", str(chest), str(nm)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert lines[0]["file"] == str(chest) and "tb_vs_normal" in lines[0]
    assert "NM" in lines[1]["error"]


def test_predict_on_real_dicom_samples(tiny_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import require_shared_data

    root = require_shared_data("dicom")
    chest = sorted((root / "chest").glob("*.dcm"))
    other = sorted((root / "not-chest").glob("*.dcm"))
    capsys.readouterr()
    main(["predict", "--models", str(tiny_models), "--json", *map(str, chest + other)])
    results = {Path(r["file"]).name: r for r in
               (json.loads(x) for x in capsys.readouterr().out.strip().splitlines()[-len(chest + other):])}
    inverted = "cr-jpeg-baseline-relabelled-mono1.dcm"  # MONOCHROME2 pixels labelled MONOCHROME1
    assert results[inverted]["error"].startswith("the grey scale looks inverted")
    assert all(not r.get("error", "").startswith("skipped") for r in results.values())
    for path in chest:
        if path.name != inverted:
            assert "finding" in results[path.name], results[path.name]
    for path in other:
        assert "error" in results[path.name], results[path.name]


def test_ensemble_merges_members_and_inverts(tiny_models: Path, tmp_path: Path) -> None:
    """ensemble: one model whose score is the mean of the members' (an inverted one as 1 - score),
    served from one TFLite file, with threshold, report and a card naming the members."""
    import keras

    from inference.engine import TfliteModel
    from inference.preprocess import preprocess_gray
    from inference.registry import ModelSpec

    data = write_dataset(tmp_path / "data", labels=("tb", "normal", "pneumonia"), corrupt=0)
    out = tmp_path / "ensemble"
    pneumonia, tb = tiny_models / "pneumonia-vs-tb", tiny_models / "tb-vs-normal"
    assert main(["ensemble", "--task", "pneumonia-vs-tb", "--members", f"{pneumonia},{pneumonia}",
                 "--inverted", str(tb), "--data", str(data), "--out", str(out), "--cache", "",
                 "--version", "2.0.0"]) == 0
    spec = ModelSpec.load(out)
    assert spec.task == "pneumonia-vs-tb" and spec.version == "2.0.0"
    unit = preprocess_gray(phantom(np.random.default_rng(3), "tb"), spec.input_size)[None, :, :, None]
    member_scores = [float(keras.saving.load_model(f / "model.keras").predict(unit, verbose=0)
                           ["score"][0, 0]) for f in (pneumonia, tb)]
    merged = float(keras.saving.load_model(out / "model.keras").predict(unit, verbose=0)["score"][0, 0])
    assert merged == pytest.approx((2 * member_scores[0] + 1.0 - member_scores[1]) / 3, abs=1e-5)
    lite = TfliteModel(spec)
    served, cam = lite.run(unit[0, :, :, 0])
    assert served == pytest.approx(merged, abs=2e-3)
    assert cam.ndim == 2
    # served member by member: no merged file; the pneumonia model listed twice runs once
    meta = json.loads((out / "model.json").read_text())
    assert "file" not in meta and not (out / "model.tflite").exists()
    assert [m["inverted"] for m in meta["members"]] == [False, False, True]
    assert all((out / m["file"]).is_file() for m in meta["members"])
    assert lite._runner.passes == 2
    card = (out / "card.md").read_text()
    assert "ensemble of 3 compact models" in card and '"inverted": true' in card
    assert "served member by member" in card and "member-wise LiteRT score" in card
    assert json.loads((out / "model.json").read_text())["command"].startswith("cxr-gateway ensemble")
    assert (out / "report.json").is_file() and not (out / "training-curves.png").exists()


def test_engine_runs_a_network_shared_by_both_classifiers_once(tiny_models: Path,
                                                              tmp_path: Path) -> None:
    """A TB model that is also an (inverted) pneumonia-vs-TB member: one network, one batch of
    the union of both classifiers' views; both scores as if each classifier ran alone."""
    import shutil

    import keras

    from inference.engine import InferenceEngine, TfliteModel
    from inference.preprocess import preprocess_gray
    from inference.registry import load_registry

    data = write_dataset(tmp_path / "data", labels=("tb", "normal", "pneumonia"), corrupt=0)
    models = tmp_path / "models"
    shutil.copytree(tiny_models / "tb-vs-normal", models / "tb-vs-normal")
    assert main(["export", "--model", str(models / "tb-vs-normal"), "--data", str(data),
                 "--no-int8"]) == 0  # float32, so that the ensemble copies it byte for byte
    assert main(["ensemble", "--task", "pneumonia-vs-tb", "--members",
                 str(tiny_models / "pneumonia-vs-tb"), "--inverted", str(models / "tb-vs-normal"),
                 "--data", str(data), "--out", str(models / "pneumonia-vs-tb"), "--cache", ""]) == 0
    engine = InferenceEngine.from_models_dir(models)
    assert engine.runner.passes == len(TB_VIEWS.split(",")) + 1  # TB on its 3 views, pneumonia on 1
    gray = phantom(np.random.default_rng(4), "tb")
    prediction = engine.predict_gray(gray, heatmap=False)
    specs = load_registry(models)
    for task, got in (("tb-vs-normal", prediction.tb_vs_normal),
                      ("pneumonia-vs-tb", prediction.pneumonia_vs_tb)):
        spec = specs[task]
        alone, _ = TfliteModel(spec).run(preprocess_gray(gray, spec.input_size))
        assert got.score == pytest.approx(alone, abs=1e-6)
    unit = preprocess_gray(gray, specs["pneumonia-vs-tb"].input_size)[None, :, :, None]
    merged = keras.saving.load_model(models / "pneumonia-vs-tb" / "model.keras")
    assert prediction.pneumonia_vs_tb.score == pytest.approx(
        float(merged.predict(unit, verbose=0)["score"][0, 0]), abs=2e-3)


def test_unpack_writes_an_ensembles_members_back_out(tiny_models: Path, tmp_path: Path) -> None:
    """unpack: each member of a shipped ensemble as a plain folder (its raw model, its TFLite
    file byte for byte, its class and run), with the ensemble's inversions; an ensemble rebuilt
    from them scores as the original."""
    import shutil

    import keras

    from inference.preprocess import preprocess_gray

    data = write_dataset(tmp_path / "data", labels=("tb", "normal", "pneumonia"), corrupt=0)
    tb = tmp_path / "tb"
    shutil.copytree(tiny_models / "tb-vs-normal", tb)
    assert main(["export", "--model", str(tb), "--data", str(data), "--no-int8"]) == 0
    shipped = tmp_path / "shipped"
    pneumonia = tiny_models / "pneumonia-vs-tb"
    assert main(["ensemble", "--task", "pneumonia-vs-tb", "--members", str(pneumonia),
                 "--inverted", str(tb), "--data", str(data), "--out", str(shipped),
                 "--cache", ""]) == 0
    with pytest.raises(SystemExit, match="is itself an ensemble.*cxr-gateway unpack"):
        main(["ensemble", "--task", "pneumonia-vs-tb", "--members", f"{shipped},{pneumonia}",
              "--data", str(data), "--out", str(tmp_path / "nested")])
    with pytest.raises(SystemExit, match="is not an ensemble"):
        main(["unpack", "--ensemble", str(tb), "--out", str(tmp_path / "nothing")])

    assert main(["unpack", "--ensemble", str(shipped), "--out", str(tmp_path / "unpacked")]) == 0
    folders = sorted((tmp_path / "unpacked").iterdir())
    assert [f.name.split("-", 1)[0] for f in folders] == ["0", "1"]
    metas = [json.loads((f / "model.json").read_text()) for f in folders]
    assert [m["positive_label"] for m in metas] == ["pneumonia", "tb"]
    assert metas[1]["unpacked_from"] == f"{shipped} member 1"
    listed = json.loads((shipped / "model.json").read_text())["members"]
    for folder, entry in zip(folders, listed, strict=True):
        assert (folder / "model.tflite").read_bytes() == (shipped / entry["file"]).read_bytes()
    assert (folders[1] / "model.tflite").read_bytes() == (tb / "model.tflite").read_bytes()
    unit = preprocess_gray(phantom(np.random.default_rng(5), "tb"), 64)[None, :, :, None]

    def score(folder: Path) -> float:
        return float(keras.saving.load_model(folder / "model.keras").predict(unit, verbose=0)
                     ["score"][0, 0])

    assert score(folders[0]) == pytest.approx(score(pneumonia), abs=1e-6)
    assert score(folders[1]) == pytest.approx(score(tb), abs=1e-6)  # raw, not inverted

    rebuilt = tmp_path / "rebuilt"
    assert main(["ensemble", "--task", "pneumonia-vs-tb", "--members", str(folders[0]),
                 "--inverted", str(folders[1]), "--data", str(data), "--out", str(rebuilt),
                 "--cache", ""]) == 0
    assert score(rebuilt) == pytest.approx(score(shipped), abs=1e-6)
    rebuilt_files = [m["file"] for m in json.loads((rebuilt / "model.json").read_text())["members"]]
    assert [(rebuilt / f).read_bytes() for f in rebuilt_files] == \
        [(shipped / m["file"]).read_bytes() for m in listed]


def test_ensemble_refuses_a_member_of_the_wrong_class(tiny_models: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="positive class 'tb'.*needs one of \\['pneumonia'\\]"):
        main(["ensemble", "--task", "pneumonia-vs-tb", "--members",
              f"{tiny_models / 'pneumonia-vs-tb'},{tiny_models / 'tb-vs-normal'}",
              "--data", str(tmp_path), "--out", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match="at least two"):
        main(["ensemble", "--task", "tb-vs-normal", "--members", str(tiny_models / "tb-vs-normal"),
              "--data", str(tmp_path), "--out", str(tmp_path / "e")])


def test_merge_means_scores_and_maps_and_inverts(tmp_path: Path) -> None:
    """Members with known constant outputs: score sigmoid(1) and, inverted, 1 - sigmoid(2)."""
    from training.architectures import build_model
    from training.ensemble import Member, merge

    members = []
    for i, bias in enumerate((1.0, 2.0)):
        model, _ = build_model("compact", 32)
        head = model.get_layer("logit_map")
        kernel, _ = head.get_weights()
        head.set_weights([np.zeros_like(kernel), np.array([bias], np.float32)])
        (tmp_path / f"m{i}").mkdir()
        model.save(tmp_path / f"m{i}" / "model.keras")
        members.append(Member(tmp_path / f"m{i}", inverted=i == 1))
    out = merge(members, 32).predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0)
    sig = 1 / (1 + np.exp(-np.array([1.0, 2.0])))
    assert float(out["score"][0, 0]) == pytest.approx((sig[0] + 1 - sig[1]) / 2, abs=1e-6)
    assert np.allclose(out["cam"][0], (1.0 - 2.0) / 2, atol=1e-6)  # maps: mean of 1 and -2


def test_centre_crop_model_never_sees_the_border() -> None:
    """--centre-crop: the score ignores the border entirely; the map keeps the full grid,
    zero over the cut border, so it lines up with uncropped models' maps."""
    from training.architectures import build_model, check_centre_crop

    model, _ = build_model("compact", 96, centre_crop=32)
    rng = np.random.default_rng(0)
    x = rng.random((1, 96, 96, 1)).astype(np.float32)
    y = x.copy()
    y[:, :32] = rng.random((1, 32, 96, 1))  # new top border, same centre
    a, b = (model.predict(v, verbose=0) for v in (x, y))
    assert float(a["score"][0, 0]) == pytest.approx(float(b["score"][0, 0]), abs=1e-6)
    assert a["cam"].shape == (1, 3, 3) and a["cam"][0, 0, 0] == 0 and a["cam"][0, 1, 1] != 0
    assert check_centre_crop(224, 160) == 32 and check_centre_crop(224, 0) == 0
    for bad in (192, 256, 100):
        with pytest.raises(ValueError, match="multiple of 32"):
            check_centre_crop(224, bad)
    with pytest.raises(SystemExit, match="--centre-crop"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--centre-crop", "192"])
    with pytest.raises(SystemExit, match="--zoom"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--zoom", "0.7"])
    with pytest.raises(SystemExit, match="--fourier"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--fourier", "1.5"])
    with pytest.raises(SystemExit, match="--texture"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--texture", "-1"])
    with pytest.raises(SystemExit, match="--mixup"):
        main(["train", "--task", "tb-vs-normal", "--data", ".", "--out", "x", "--mixup", "-0.2"])


def test_save_epochs_then_ship_a_chosen_epoch(tmp_path: Path) -> None:
    """--save-epochs keeps every epoch with its per-source val AUC; --use-epoch ships one of them."""
    import keras

    data = write_dataset(tmp_path / "data", per_class=12, corrupt=0)
    out = tmp_path / "model"
    base = ["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(out),
            "--arch", "compact", "--size", "64", "--epochs", "3", "--steps-per-epoch", "2",
            "--batch-size", "8", "--patience", "3", "--cache", ""]
    assert main([*base, "--save-epochs"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert all("val_auc_synthetic-tb" in e for e in history["epochs"])
    for epoch in (1, 2, 3):
        assert (out / "epochs" / f"epoch-{epoch:02d}.keras").is_file()

    assert main([*base, "--skip-training", "--use-epoch", "1", "--threshold-rule", "specificity",
                 "--threshold-target", "0.75"]) == 0
    shipped = keras.saving.load_model(out / "model.keras")
    first = keras.saving.load_model(out / "epochs" / "epoch-01.keras")
    for a, b in zip(shipped.get_weights(), first.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    history = json.loads((out / "history.json").read_text())
    assert history["best_epoch"] == 1 and history["chosen_by"] == "--use-epoch 1"
    meta = json.loads((out / "model.json").read_text())
    assert "--save-epochs" in meta["command"] and "--skip-training --use-epoch 1" in meta["command"]
    assert meta["threshold_rule"].startswith("lowest threshold with validation specificity >= 0.75")
    assert "epoch 1 of 3" in (out / "card.md").read_text()


def test_use_epoch_needs_a_saved_epoch(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", per_class=6, corrupt=0)
    with pytest.raises(SystemExit, match="only with --skip-training"):
        main(["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(tmp_path / "m"),
              "--use-epoch", "2"])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "history.json").write_text("{}")
    with pytest.raises(ValueError, match="epoch-02.keras"):
        main(["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(tmp_path / "m"),
              "--arch", "compact", "--size", "64", "--cache", "", "--skip-training",
              "--use-epoch", "2"])


def test_epochs_command_scores_every_saved_epoch(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "data", per_class=12, corrupt=0)
    out = tmp_path / "run"
    assert main(["train", "--task", "tb-vs-normal", "--data", str(data), "--out", str(out),
                 "--arch", "compact", "--size", "64", "--epochs", "2", "--steps-per-epoch", "2",
                 "--batch-size", "8", "--patience", "2", "--cache", "", "--save-epochs"]) == 0
    assert main(["epochs", "--run", str(out), "--data", str(data), "--split", "test",
                 "--views", "identity,flip", "--name", "held-out"]) == 0
    table = json.loads((out / "epochs-held-out.json").read_text())
    assert [r["epoch"] for r in table["epochs"]] == [1, 2]
    assert table["views"] == ["identity", "flip"] and table["split"] == "test"
    assert all(0.0 <= r["roc_auc"] <= 1.0 and "auc_synthetic-tb" in r for r in table["epochs"])
    assert "| 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="save-epochs"):
        main(["epochs", "--run", str(tmp_path), "--data", str(data)])


def test_calibrate_command(tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """A site's cases (PNG and DICOM; a lateral DICOM refused by the gate, named in the log)
    give a threshold by the rule, cross-calibrated figures, and the config line the
    gateway then serves."""
    import csv

    import yaml

    from config.schema import Settings
    from inference.engine import InferenceEngine
    from tests.dicom_factory import make_chest, make_lateral, write

    data = write_dataset(tmp_path / "site", per_class=16, corrupt=0, seed=4)
    write(make_chest(), data / "tb" / "chest.dcm")
    write(make_lateral(), data / "tb" / "lateral.dcm")
    with (data / "labels.csv").open("a", newline="") as fh:
        csv.writer(fh).writerows([("tb/chest.dcm", "tb", "synthetic-tb", "test"),
                                  ("tb/lateral.dcm", "tb", "synthetic-tb", "test")])
    out = tmp_path / "calibration"
    folder = tiny_models / "tb-vs-normal"
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["calibrate", "--model", str(folder), "--data", str(data), "--out", str(out),
                     "--threshold-target", "0.9"]) == 0
    assert "lateral.dcm" in caplog.text and "chest.dcm:" not in caplog.text
    cal = json.loads((out / "calibration.json").read_text())
    assert (cal["n_positive"], cal["n_negative"]) == (17, 16)  # 16 PNGs + the frontal DICOM
    assert cal["in_sample"]["sensitivity"] >= 0.9
    assert "site sensitivity >= 0.90" in cal["rule"]
    assert cal["shipped"]["threshold"] == pytest.approx(
        json.loads((folder / "model.json").read_text())["threshold"], abs=1e-6)
    assert cal["cross"]["tp"] + cal["cross"]["fn"] == 17 and len(cal["fold_thresholds"]) == 5 * 10
    assert cal["repeats"] == 10 and len(cal["repeat_rates"]) == 10
    assert any("only 17 tb cases" in w for w in cal["warnings"])
    for name in ("calibration.md", "report.json", "roc.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["threshold"] == cal["threshold"]
    assert set(report["sets"]["all"]["per_source"]) == {"synthetic-tb", "synthetic-normal"}
    printed = capsys.readouterr().out
    snippet = yaml.safe_load(printed.split("```yaml")[1].split("```")[0])
    version = json.loads((folder / "model.json").read_text())["version"]
    assert snippet == {"inference": {"thresholds": {"tb-vs-normal": {
        "threshold": cal["threshold"], "model_version": version}}}}
    # The printed setting is valid config, served as is, and bound to this model version.
    settings = Settings.model_validate({"dicom": {"allowed_callers": [{"ae_title": "PACS"}]},
                                        **snippet})
    engine = InferenceEngine.from_models_dir(tiny_models, settings.inference.thresholds)
    assert engine.tb.threshold == cal["threshold"]


def test_calibrate_refuses_too_few_cases(tiny_models: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "few", per_class=6, corrupt=0)
    with pytest.raises(SystemExit, match="at least 10 of each are needed"):
        main(["calibrate", "--model", str(tiny_models / "tb-vs-normal"), "--data", str(data),
              "--out", str(tmp_path / "out")])
    data = write_dataset(tmp_path / "enough", per_class=12, corrupt=0)
    with pytest.raises(SystemExit, match="--repeats 0: expected 1 or more"):
        main(["calibrate", "--model", str(tiny_models / "tb-vs-normal"), "--data", str(data),
              "--out", str(tmp_path / "out"), "--repeats", "0"])
