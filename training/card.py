"""Model cards: ``model.json`` (what the registry reads) and ``card.md`` (what people read)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.evaluate import metrics_table

DISCLAIMER = ("Decision support for trained readers, not a diagnosis. Not a medical device "
              "cleared for clinical use.")

INTENDED_USE = """## Intended use

- **Who**: adults and adolescents aged **15 years and over**. WHO's consolidated
  guidelines on tuberculosis, Module 2: Screening (2021) recommend computer-aided
  detection for TB screening and triage in people aged 15 and over. The gateway
  enforces it: `inference.min_patient_age_years` (default 15) skips younger
  patients with the reason "outside intended use: patient aged N years"; an image
  whose age is unknown is classified, and the SR, the ORU and the console say
  "patient age unknown: intended use (15 years and over) not confirmed".
- **What**: frontal (PA or AP) chest radiographs, CR or DX (a digitised film as
  Secondary Capture with a chest body part). The quality gate skips the rest.
- **How**: triage and decision support for a trained reader, who reads every
  image: a score above the threshold flags the study for review (and, in TB
  triage, for a TB test). It is not a diagnosis and does not replace a
  microbiological test.

## Not for

- **Children** (under 15): see the measurement below.
- **Lateral, oblique and decubitus views** (the quality gate skips them).
- **Portable / bedside ICU films** (AP supine, lines, tubes, monitoring leads):
  not measured; not for use until measured on a site's own cases.
- Other body parts and images that are not radiographs.
"""
"""The intended-use sections every card states (issue 21), after its summary table."""

CHILDREN_MEASURED = """### Measured on children

Measured on radiographs from another hospital that the project has never seen
(a paediatric data set that is **not in this repository**, so the figures cannot
be re-run from here; reported in issue 21 for TB vs normal 1.6.0 and
pneumonia vs TB 1.4.0): on **children's normal chest radiographs about 9 in
10 score above the shipped TB-vs-normal threshold**, the ROC-AUC of TB versus
paediatric normal is **about 0.76**, and children's pneumonia is flagged as TB
about as often. The training data holds no healthy children and no children
with TB, so the models cannot tell a child's normal chest from disease. On
adults from other hospitals the same models do well (external-dev above).
A version not measured on children is treated the same way: not for children.
"""
"""What was measured on children, stated in every card."""


@dataclass(frozen=True)
class CardInfo:
    """Everything a model card states besides the metrics report."""

    name: str
    task: str
    version: str
    architecture: str
    input_size: int
    threshold: float
    threshold_rule: str
    positive_label: str
    negative_label: str
    data_root: str
    data_hash: str
    split: str
    command: str
    train_counts: str
    config: dict[str, object]
    parity: list[dict[str, object]]
    tflite_variant: str
    views: tuple[str, ...] = ("identity",)
    members: tuple[dict[str, object], ...] = ()  # an ensemble's member files (model.json "members")
    origin: str = "trained from scratch"  # or fine-tuned from a weights file, or an ensemble


def write_model_json(info: CardInfo, out_dir: Path) -> Path:
    """The registry entry read by :class:`inference.registry.ModelSpec`."""
    meta = {
        "name": info.name, "task": info.task, "version": info.version,
        "architecture": info.architecture, "input_size": info.input_size,
        "threshold": round(info.threshold, 6), "threshold_rule": info.threshold_rule,
        "positive_label": info.positive_label, "negative_label": info.negative_label,
        "file": "model.tflite", "tflite_variant": info.tflite_variant, "data_hash": info.data_hash,
        "views": list(info.views), "command": info.command,
    }
    if info.members:
        del meta["file"]
        meta["members"] = list(info.members)
    path = out_dir / "model.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def _shipped_text(info: CardInfo) -> str:
    if not info.members:
        return f"`model.tflite` ({info.tflite_variant})"
    files = ", ".join(f"`{m['file']}`" + (" (inverted)" if m["inverted"] else "")
                      for m in info.members)
    return (f"{len(info.members)} {info.tflite_variant} TFLite files, one per member, served member by "
            f"member (a network shared with the other classifier runs once): {files}")


def _views_text(views: tuple[str, ...]) -> str:
    if tuple(views) == ("identity",):
        return "none (one pass on the image)"
    return (f"score = mean over {', '.join(views)} (threshold and every metric below use it, "
            "as the gateway does)")


def _sets_section(report: dict[str, object]) -> str:
    sets: dict[str, dict[str, dict[str, object]]] = report["sets"]  # type: ignore[assignment]
    parts = []
    for name, res in sets.items():
        rows = {"overall": res["overall"], **res["per_source"]}  # type: ignore[dict-item]
        parts.append(f"### {name}\n\n{metrics_table(rows)}")  # type: ignore[arg-type]
    return "\n".join(parts)


def write_card(info: CardInfo, report: dict[str, object], out_dir: Path,
               notes: str = "") -> Path:
    """Write ``card.md``: data, split, command, architecture, threshold, metrics, limitations."""
    served = "member-wise LiteRT score" if info.members else "TFLite"
    parity = "\n".join(
        f"- {p['variant']}: max |{served} − Keras| {p['max_abs_diff']:.5f}, "
        f"AUC Keras {p['keras_auc']:.4f} vs TFLite {p['tflite_auc']:.4f} on {p['n']} val images"
        for p in info.parity
    )
    text = f"""# Model card: {info.name} {info.version}

{DISCLAIMER}

| | |
|---|---|
| task | {info.task}: positive `{info.positive_label}`, negative `{info.negative_label}` |
| architecture | {info.architecture}, input {info.input_size}×{info.input_size}×1, {info.origin} |
| shipped file | {_shipped_text(info)} |
| operating threshold | {info.threshold:.4f} — {info.threshold_rule} |
| test-time views | {_views_text(info.views)} |
| data | `{info.data_root}` (labels.csv hash `{info.data_hash[:16]}…`) |
| split | {info.split} |
| training images | {info.train_counts} |
| command | `{info.command}` |

{INTENDED_USE}
{CHILDREN_MEASURED}
Preprocessing (shared by training and serving, `inference/preprocess.py`): uniform padding
trimmed (flat rows and columns at the edges, at most a quarter per side), dark surround
trimmed (edge columns and rows more than half air outside the body, at most a quarter per
side), 6% margin crop,
area resize (a large radiograph block-averaged by a whole factor first), 0.5–99.5 percentile
window, CLAHE.

## Metrics

Per-source rows compare that source's images with every image of the other
class in the same set. `recall` is the sensitivity at the shipped threshold.

{_sets_section(report)}

## Export parity

{parity}

## Training configuration

```json
{json.dumps(info.config, indent=2)}
```

{notes}
"""
    path = out_dir / "card.md"
    path.write_text(text)
    return path
