"""The model registry: which file, version, input size and threshold each classifier uses.

Each model lives in its own folder under ``models/`` with ``model.tflite`` and
``model.json`` (written by ``cxr-gateway export``)::

    {"name": "cxr-tb-vs-normal", "task": "tb-vs-normal", "version": "1.0.0",
     "architecture": "mobilenetv3small", "input_size": 224, "threshold": 0.42,
     "positive_label": "tb", "negative_label": "normal", "file": "model.tflite",
     "views": ["identity", "flip"]}

``views`` (optional, default ``["identity"]``) are the test-time views whose
scores are averaged (:func:`inference.preprocess.view_stack`).

An ensemble (``cxr-gateway ensemble``) lists its member networks instead of
one ``file``; its score is the mean of the members' scores, an inverted member
(trained with the opposite positive class) entering as ``1 - score``::

    "members": [{"file": "members/0-cxr-tb-vs-normal-1.0.0.tflite", "inverted": false}, ...]

The engine runs each distinct member file once per image, even when both
classifiers list it (:class:`inference.engine.ModelRunner`).

A site may override a classifier's threshold (``inference.thresholds``). A
threshold is a point on one model's score scale: set for one version, it means
nothing for the next (TB vs normal 1.4.0's own threshold was 0.288, 1.5.0's
0.207, 1.6.0's is 0.121). An override that names the model version it was calibrated for
(``cxr-gateway calibrate`` prints it so) is refused when the folder holds
another version, so that a model update cannot silently move a site's
operating point.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inference.preprocess import IDENTITY_VIEW, parse_view

MODEL_META = "model.json"
TB_VS_NORMAL = "tb-vs-normal"
PNEUMONIA_VS_TB = "pneumonia-vs-tb"
REQUIRED_TASKS = (TB_VS_NORMAL, PNEUMONIA_VS_TB)


class ModelError(RuntimeError):
    """A model folder is missing, incomplete or inconsistent."""


class ThresholdMismatch(ModelError):
    """A site threshold calibrated for another version of the model (its message starts with
    the setting's key, ``inference.thresholds.<task>``)."""


class ThresholdSetting(Protocol):
    """A site's threshold for one classifier (``config.schema.SiteThreshold``)."""

    @property
    def threshold(self) -> float: ...

    @property
    def model_version(self) -> str | None: ...


Thresholds = Mapping[str, "float | ThresholdSetting"]


@dataclass(frozen=True)
class MemberSpec:
    """One LiteRT network of a classifier; ``inverted``: it scores the opposite class."""

    path: Path
    inverted: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What the gateway needs to know to run one classifier."""

    name: str
    task: str
    version: str
    architecture: str
    input_size: int
    threshold: float
    positive_label: str
    negative_label: str
    members: tuple[MemberSpec, ...]
    views: tuple[str, ...] = ("identity",)  # test-time views whose scores are averaged

    @classmethod
    def load(cls, folder: Path, threshold: float | None = None) -> ModelSpec:
        """Read ``folder/model.json``; ``threshold`` overrides the stored operating point."""
        meta_path = folder / MODEL_META
        if not meta_path.is_file():
            raise ModelError(f"model folder {folder}: {MODEL_META} not found")
        try:
            meta = json.loads(meta_path.read_text())
            spec = cls(
                name=str(meta["name"]), task=str(meta["task"]), version=str(meta["version"]),
                architecture=str(meta["architecture"]), input_size=int(meta["input_size"]),
                threshold=float(meta["threshold"] if threshold is None else threshold),
                positive_label=str(meta["positive_label"]),
                negative_label=str(meta["negative_label"]), members=_members(folder, meta),
                views=tuple(str(v) for v in meta.get("views", ["identity"])),
            )
            for view in spec.views:
                parse_view(view)
            if not spec.views or spec.views[0] != IDENTITY_VIEW:
                raise ValueError(f"views must start with {IDENTITY_VIEW!r} (the heatmap's view)")
        except (KeyError, ValueError, TypeError) as err:
            raise ModelError(f"{meta_path}: invalid or missing field ({err})") from err
        for member in spec.members:
            if not member.path.is_file():
                raise ModelError(f"{meta_path}: model file {member.path} not found")
        if not 0.0 <= spec.threshold <= 1.0:
            raise ModelError(f"{meta_path}: threshold {spec.threshold} outside [0, 1]")
        return spec


def _members(folder: Path, meta: dict[str, object]) -> tuple[MemberSpec, ...]:
    listed = meta.get("members")
    if listed is None:
        return (MemberSpec(folder / str(meta["file"])),)
    if not isinstance(listed, list) or not listed:
        raise ValueError("members must be a non-empty list")
    return tuple(MemberSpec(folder / str(m["file"]), bool(m.get("inverted", False))) for m in listed)


def default_models_dir() -> Path:
    """``models/`` of the project checkout (the shipped models)."""
    return Path(__file__).resolve().parent.parent / "models"


def load_registry(models_dir: Path, thresholds: Thresholds | None = None) -> dict[str, ModelSpec]:
    """Load both classifiers' specs from ``models_dir/<task>/``, with the site's thresholds."""
    thresholds = thresholds or {}
    specs = {}
    for task in REQUIRED_TASKS:
        value, bound = _threshold_value(thresholds.get(task))
        spec = specs[task] = ModelSpec.load(models_dir / task, value)
        if spec.task != task:
            raise ModelError(f"{models_dir / task}: model.json says task {spec.task!r}, expected {task!r}")
        if bound is not None:
            _check_calibrated_for(task, spec, bound, models_dir / task)
    return specs


def _threshold_value(setting: float | ThresholdSetting | None
                     ) -> tuple[float | None, ThresholdSetting | None]:
    """The threshold to serve, and the setting when it names a model version to check."""
    if setting is None or isinstance(setting, (int, float)):
        return setting, None
    return setting.threshold, setting


def _check_calibrated_for(task: str, spec: ModelSpec, setting: ThresholdSetting, folder: Path) -> None:
    wanted = setting.model_version
    if wanted is None or wanted == spec.version:
        return
    own = ModelSpec.load(folder).threshold
    raise ThresholdMismatch(
        f"inference.thresholds.{task}: {setting.threshold} was calibrated for {spec.name} {wanted}, "
        f"but {folder} holds {spec.version}, whose scores are on another scale: run "
        f"`cxr-gateway calibrate --model {folder}` again on your verified cases and replace "
        f"the setting, or remove it to use {spec.version}'s own threshold ({own:.4f})")


def missing_models(models_dir: Path) -> str | None:
    """Why ``models_dir`` cannot serve both classifiers, or None when it can."""
    try:
        load_registry(models_dir)
    except ModelError as err:
        return str(err)
    return None
