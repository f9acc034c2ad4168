"""Ensembles: several trained model folders merged into one model with the same contract.

The merged Keras model takes the same ``(size, size, 1)`` input and has the
same ``score`` and ``cam`` outputs as every model of :mod:`training.architectures`:
``score`` is the mean of the members' scores and ``cam`` the mean of their
class activation maps, so thresholds, metrics and the Keras baseline treat it
like any other model.

Served, an ensemble folder ships its members' own float32 TFLite files
(``members/``, listed in ``model.json``) rather than one merged file: the
engine runs each distinct network once per image, so a TB model that is also
a pneumonia-vs-TB member costs one pass, not two (:class:`inference.engine.ModelRunner`).
The parity check compares that member-wise LiteRT score with the merged Keras model.

A member may be *inverted*: a model trained with the opposite positive class
(for example TB vs every non-TB image, used as a pneumonia-vs-TB member) enters
as ``1 - score`` and ``-cam``. The merged folder then goes through the usual
pipeline (:func:`training.pipeline.run` with ``skip_training``): threshold on
validation, metrics, export, card.

Averaging independently trained models is the plainest way to lower the
variance of a model trained from scratch on a few thousand images; on
radiographs from hospitals never seen, variance is most of the error.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers
from numpy.typing import NDArray

from training.export import ParityReport, convert, parity_of_scores, tflite_scores
from training.tasks import Task

log = logging.getLogger(__name__)


class EnsembleError(ValueError):
    """The member folders cannot be merged for the task (missing files, mismatched inputs)."""


@dataclass(frozen=True)
class Member:
    """One trained model folder (``model.keras`` + ``model.json``) and whether it is inverted."""

    folder: Path
    inverted: bool = False

    def meta(self) -> dict[str, object]:
        path = self.folder / "model.json"
        if not path.is_file() or not (self.folder / "model.keras").is_file():
            raise EnsembleError(f"members: {self.folder} needs model.json and model.keras")
        meta: dict[str, object] = json.loads(path.read_text())
        return meta

    def describe(self) -> dict[str, object]:
        """What the card records of this member: its identity, its training run, inversion."""
        meta = self.meta()
        history = self.folder / "history.json"
        config = json.loads(history.read_text()).get("config", {}) if history.is_file() else {}
        return {"folder": str(self.folder), "name": meta.get("name"), "version": meta.get("version"),
                "task": meta.get("task"), "positive_label": meta.get("positive_label"),
                "inverted": self.inverted, "command": meta.get("command"), "config": config}


def check_members(members: list[Member], task: Task) -> tuple[str, int]:
    """Validate the members for ``task``; return their common architecture and input size.

    A plain member must have the task's positive class; an inverted member must
    have the task's negative class as its positive (so ``1 - score`` is the task's score).
    """
    if len(members) < 2:
        raise EnsembleError("members: an ensemble needs at least two model folders")
    archs: list[str] = []  # distinct, in member order
    sizes = set()
    for m in members:
        meta = m.meta()
        if "members" in meta:
            raise EnsembleError(f"members: {m.folder} is itself an ensemble; list its members "
                                "instead (`cxr-gateway unpack` writes them out)")
        expected = task.negative if m.inverted else task.positive
        if str(meta["positive_label"]) not in expected:
            role = "inverted member" if m.inverted else "member"
            raise EnsembleError(
                f"members: {m.folder} has positive class {meta['positive_label']!r}; "
                f"a {role} of {task.name} needs one of {sorted(expected)}")
        if str(meta["architecture"]) not in archs:
            archs.append(str(meta["architecture"]))
        sizes.add(int(str(meta["input_size"])))
    if len(sizes) != 1:
        raise EnsembleError(f"members: input sizes differ ({sorted(sizes)}); train them at one --size")
    return " + ".join(archs), sizes.pop()


def member_layer(i: int) -> str:
    """Name of member ``i``'s nested model inside the merged ``model.keras``."""
    return f"member_{i}"


def merge(members: list[Member], size: int) -> keras.Model:
    """One Keras model whose ``score``/``cam`` are the means over the members' (inverted) outputs."""
    inp = keras.Input((size, size, 1), name="image")
    scores, cams = [], []
    for i, member in enumerate(members):
        model = keras.saving.load_model(member.folder / "model.keras", compile=False)
        model.name = member_layer(i)
        out = model(inp)
        score, cam = out["score"], out["cam"]
        if member.inverted:
            score = layers.Rescaling(-1.0, offset=1.0, name=f"member_{i}_inverted_score")(score)
            cam = layers.Rescaling(-1.0, name=f"member_{i}_inverted_cam")(cam)
        scores.append(score)
        cams.append(cam)
    if len({tuple(c.shape) for c in cams}) != 1:
        raise EnsembleError("members: their activation maps differ in shape; use one architecture")
    score = layers.Average(name="score")(scores)
    cam = layers.Average(name="cam")(cams)
    return keras.Model(inp, {"score": score, "cam": cam}, name="cxr_ensemble")


def write_merged(members: list[Member], task: Task,
                 out: Path) -> tuple[str, int, tuple[dict[str, object], ...]]:
    """Write ``out/model.keras`` (the merged model) and ``out/history.json`` (the members);
    return the members' architecture, input size and descriptions."""
    arch, size = check_members(members, task)
    out.mkdir(parents=True, exist_ok=True)
    merge(members, size).save(out / "model.keras")
    described = tuple(m.describe() for m in members)
    (out / "history.json").write_text(json.dumps(
        {"task": task.name, "ensemble": list(described), "epochs": []}, indent=2, default=str))
    log.info("ensemble of %d members written to %s", len(members), out / "model.keras")
    return arch, size, described


MEMBERS_DIR = "members"


def export_members(described: tuple[dict[str, object], ...], merged: keras.Model,
                   x_val: NDArray[np.float32], y_val: NDArray[np.float32],
                   out: Path) -> tuple[list[dict[str, object]], list[ParityReport]]:
    """Write each member's float32 TFLite file into ``out/members/``; check parity.

    A member that ships a float32 ``model.tflite`` is copied byte for byte (so
    the same member in both classifiers is recognised as one network by the
    engine); an int8 one is converted again from its ``model.keras`` as float32.

    Returns the ``model.json`` ``members`` entries and the parity of the
    member-wise LiteRT score (mean, inverted members as ``1 - score``) against
    the merged Keras model on ``x_val``.
    """
    folder = out / MEMBERS_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    entries: list[dict[str, object]] = []
    lite = np.zeros(len(x_val), np.float64)
    for i, member in enumerate(described):
        src = Path(str(member["folder"]))
        meta = Member(src).meta()
        name = f"{i}-{meta['name']}-{meta['version']}.tflite"
        if meta.get("tflite_variant") == "float32":
            shutil.copyfile(src / str(meta["file"]), folder / name)
        else:
            (folder / name).write_bytes(convert(keras.saving.load_model(src / "model.keras")))
        scores = tflite_scores((folder / name).read_bytes(), x_val).astype(np.float64)
        lite += 1.0 - scores if member["inverted"] else scores
        entries.append({"file": f"{MEMBERS_DIR}/{name}", "inverted": bool(member["inverted"]),
                        "member": f"{meta['name']} {meta['version']}"})
    keras_scores = merged.predict(x_val, batch_size=64, verbose=0)["score"][:, 0]
    report = parity_of_scores("float32", (lite / len(described)).astype(np.float32),
                              keras_scores, y_val)
    log.info("parity of the member-wise LiteRT score: n=%d max|diff|=%.5f", report.n,
             report.max_abs_diff)
    return entries, [report]


def unpack(folder: Path, out: Path) -> list[Member]:
    """Write each member of the ensemble in ``folder`` back out as a plain model folder.

    A shipped ensemble keeps its members inside its merged ``model.keras``
    (nested models ``member_0``, ``member_1``, ...) and as float32 TFLite files
    in ``members/``; ``history.json`` records each member's training run. This
    writes ``out/<i>-<name>-<version>/`` with the member's own ``model.keras``
    (its raw output, before any inversion), its TFLite file copied byte for
    byte, a ``model.json`` and its ``history.json`` config, so that a new
    ensemble can take the shipped members without their original run folders
    (for example, the shipped TB members plus one newly trained model).

    Returns the members with the inversion the ensemble gave them.
    """
    meta: dict[str, object] = json.loads((folder / "model.json").read_text())
    listed = meta.get("members")
    if not isinstance(listed, list) or not listed:
        raise EnsembleError(f"unpack: {folder} is not an ensemble (its model.json lists no members)")
    history = json.loads((folder / "history.json").read_text()).get("ensemble", [])
    if len(history) != len(listed):
        raise EnsembleError(f"unpack: {folder}/history.json describes {len(history)} members, "
                            f"model.json lists {len(listed)}")
    merged = keras.saving.load_model(folder / "model.keras", compile=False)
    unpacked: list[Member] = []
    for i, (entry, described) in enumerate(zip(listed, history, strict=True)):
        config = dict(described.get("config") or {})
        dest = out / f"{i}-{described['name']}-{described['version']}"
        dest.mkdir(parents=True, exist_ok=True)
        merged.get_layer(member_layer(i)).save(dest / "model.keras")
        shutil.copyfile(folder / str(entry["file"]), dest / "model.tflite")
        member_meta = {  # export_members always writes float32 member files
            "name": described["name"], "version": described["version"], "task": described["task"],
            "positive_label": str(described["positive_label"]),
            "architecture": config.get("arch", meta["architecture"]),
            "input_size": int(config.get("size", meta["input_size"])),
            "file": "model.tflite", "tflite_variant": "float32", "command": described.get("command"),
            "unpacked_from": f"{folder} member {i}"}
        (dest / "model.json").write_text(json.dumps(member_meta, indent=2))
        (dest / "history.json").write_text(json.dumps({"config": config, "epochs": []}, indent=2))
        unpacked.append(Member(dest, inverted=bool(entry.get("inverted", False))))
        log.info("member %d (%s %s%s) written to %s", i, described["name"], described["version"],
                 ", inverted" if entry.get("inverted") else "", dest)
    return unpacked
