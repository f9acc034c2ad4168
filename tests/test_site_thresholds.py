"""A site's threshold (``inference.thresholds``) and the model version it was calibrated for:
accepted for that version, refused with the fix for any other, in the registry, in
``check-config`` and in the console's config view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from config import ConfigError, load_settings
from config.schema import SiteThreshold
from inference.registry import ModelError, load_registry
from tests.test_settings import MINIMAL, _run, write_yaml

OWN = {"tb-vs-normal": 0.207, "pneumonia-vs-tb": 0.637}


def fake_models(root: Path, version: str = "1.5.0") -> Path:
    """Both classifiers' folders with model.json and a placeholder network file (enough for
    the registry, which does not open the networks)."""
    labels = {"tb-vs-normal": ("tb", "normal"), "pneumonia-vs-tb": ("pneumonia", "tb")}
    for task, (pos, neg) in labels.items():
        folder = root / task
        folder.mkdir(parents=True)
        (folder / "model.tflite").write_bytes(b"x")
        (folder / "model.json").write_text(json.dumps({
            "name": f"cxr-{task}", "task": task, "version": version, "architecture": "a",
            "input_size": 64, "threshold": OWN[task], "positive_label": pos,
            "negative_label": neg, "file": "model.tflite"}))
    return root


def _settings(tmp_path: Path, thresholds: object, models: Path) -> Path:
    return write_yaml(tmp_path, {**MINIMAL, "base_dir": str(tmp_path), "storage": {"min_free_mb": 0},
                                 "inference": {"models_dir": str(models), "thresholds": thresholds}})


def test_a_threshold_for_its_version_is_served(tmp_path: Path) -> None:
    models = fake_models(tmp_path / "models")
    settings = load_settings(_settings(tmp_path, {
        "tb-vs-normal": {"threshold": 0.163, "model_version": "1.5.0"}, "pneumonia-vs-tb": 0.7}, models), {})
    setting = settings.inference.thresholds["tb-vs-normal"]
    assert setting == SiteThreshold(threshold=0.163, model_version="1.5.0")
    specs = load_registry(models, settings.inference.thresholds)
    assert specs["tb-vs-normal"].threshold == 0.163 and specs["pneumonia-vs-tb"].threshold == 0.7


def test_a_threshold_for_another_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    models = fake_models(tmp_path / "models")
    settings = load_settings(_settings(tmp_path, {
        "tb-vs-normal": {"threshold": 0.194, "model_version": "1.4.0"}}, models), {})
    with pytest.raises(ModelError) as caught:
        load_registry(models, settings.inference.thresholds)
    text = str(caught.value)
    assert "inference.thresholds.tb-vs-normal: 0.194 was calibrated for cxr-tb-vs-normal 1.4.0" in text
    assert "holds 1.5.0" in text and "cxr-gateway calibrate --model" in text
    assert "1.5.0's own threshold (0.2070)" in text


def test_a_threshold_without_a_version_applies_to_any(tmp_path: Path) -> None:
    models = fake_models(tmp_path / "models", version="9.9.9")
    settings = load_settings(_settings(tmp_path, {"tb-vs-normal": {"threshold": 0.3}}, models), {})
    assert load_registry(models, settings.inference.thresholds)["tb-vs-normal"].threshold == 0.3


@pytest.mark.parametrize(("thresholds", "message"), [
    ({"tb-vs-normal": {"threshold": 1.5, "model_version": "1.5.0"}},
     "threshold of tb-vs-normal is 1.5: expected a value in [0, 1]"),
    ({"tb-vs-normal": {"threshold": 0.2, "version": "1.5.0"}}, "Extra inputs are not permitted"),
    ({"tb-vs-normal": {"model_version": "1.5.0"}}, "threshold"),
])
def test_bad_site_thresholds_are_config_errors(tmp_path: Path, thresholds: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_settings(tmp_path, thresholds, tmp_path), {})
    assert any("inference.thresholds" in p and message in p for p in caught.value.problems), \
        caught.value.problems


def test_check_config_and_console_show_the_binding(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from web.config_view import public_config

    models = fake_models(tmp_path / "models")
    stale = _settings(tmp_path, {"tb-vs-normal": {"threshold": 0.194, "model_version": "1.4.0"}}, models)
    assert _run(["check-config", "--config", str(stale)]) == 2
    out = capsys.readouterr().out
    assert "ERROR inference.thresholds.tb-vs-normal: 0.194 was calibrated for cxr-tb-vs-normal 1.4.0" in out
    assert "inference.models_dir" not in out  # the models are fine: no hint to move them

    good = _settings(tmp_path, {"tb-vs-normal": {"threshold": 0.163, "model_version": "1.5.0"}}, models)
    assert _run(["check-config", "--config", str(good)]) == 0
    view = public_config(load_settings(good, {}))["inference"]["models"]["classifiers"]
    assert view["tb-vs-normal"]["threshold"] == 0.163
    assert view["tb-vs-normal"]["threshold_calibrated_for"] == "1.5.0"
    assert view["pneumonia-vs-tb"]["threshold_overridden"] is False
    assert view["pneumonia-vs-tb"]["threshold_calibrated_for"] is None


def test_the_shipped_config_comment_shows_the_calibrated_form() -> None:
    from config import DEFAULT_CONFIG

    text = DEFAULT_CONFIG.read_text()
    example = text.split("thresholds: {}", 1)[1].split("\n", 1)[0]
    assert "model_version" in example, example
    assert yaml.safe_load(text)["inference"]["thresholds"] == {}
