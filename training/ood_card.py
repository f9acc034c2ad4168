"""The out-of-distribution check's card (``models/ood/card.md``), written from its report."""

from __future__ import annotations

from typing import Any

from inference.ood import FEATURE_COUNT

COMMAND = ("nice -n 10 env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 cxr-gateway train-ood "
           "--data ../shared/data/cxr --external ../shared/data/external-dev --out models/ood")

WHY = """\
## Why this approach

- **Features, not a network.** The check must cost a few milliseconds on one core with
  NumPy and OpenCV only, and train in minutes on two shared cores. What separates
  "a radiograph" from "not a radiograph at all" is coarse: grey-level distribution,
  how smooth the image is at a few scales (noise has a flat power spectrum, radiographs
  fall like 1/f^2), whether it is roughly left-right symmetric with dark lung fields
  either side of a bright mediastinum (8x8 layout), whether its edges all run one way
  (stripes, text lines). A CNN would also learn these, at a hundred times the cost.
- **Two-class, with a one-class term.** A perceptron fitted against junk alone would
  only know the junk it saw. Its inputs therefore include the Mahalanobis distance of
  the image's features to the training radiographs (Ledoit-Wolf covariance): anything
  far from every radiograph scores high even if no junk family resembled it. The
  junk families teach it where the boundary is close (gradients, 1/f textures,
  blurred radiographs sit near radiographs in that distance).
- **Radiographs as they arrive elsewhere.** Each training radiograph is also shown
  once re-framed on a black/white/grey canvas (sometimes small on a large one),
  re-gammaed, zoomed, mildly blurred or grained, so that such real images are not
  taken for junk.
- **Cost.** `benchmarks/ood.py` (one core, machine busy with other work, 2026-12-04):
  3.7 ms per image at 256 pixels a side, 4.7 at 1024, 5.4 at 2048, 8.8 at 3000; 0.7 to
  1.6 times the classifiers' own preprocessing of the same image. Training: about 5
  minutes on one core.
- **Threshold.** Chosen on the val split and junk of a second seed: the highest
  threshold (from 0.50 up) at which every val junk family is still refused at least
  99.5 %; a higher threshold refuses fewer radiographs. External-dev is never used
  to fit or choose anything; it is measured only.
"""

LIMITS = """\
## Known limitations

- It answers "is this a radiograph at all?", not "is this a chest?": the tag gate
  (Body Part Examined, Modality, view) stops other body parts with a clearer
  reason. Radiographs of other body parts may pass (see the scores of the real
  non-chest DICOM images above); nuclear-medicine blobs score high.
- Photographs are represented only by synthetic natural-texture surrogates
  (dead leaves, 1/f noise); no photo set was available. A real photograph of a
  scene may score lower than those.
- An inverted radiograph (wrong Photometric Interpretation) is the polarity
  check's case (`models/polarity`): when this check refuses an image that the
  polarity check flags and whose inversion passes this check, the polarity
  reason is recorded, since it names the attribute to fix.
- Radiographs far from the training sources are the usual false refusals: a
  radiograph a quarter of the side in the corner of a white canvas, an almost
  black film, heavy white surround. Such images are hard for the classifiers too.
- Junk "refused" rates are measured on synthetic junk; real junk from a site
  (a screenshot, a photo of a screen) may differ. The score and the threshold are
  in every reason, so IT can see how clear-cut a refusal was.
"""


def _radiograph_rows(sets: dict[str, Any]) -> list[str]:
    rows = []
    for set_name, per_source in sets.items():
        for source, m in per_source.items():
            rows.append(f"| {set_name} | {source} | {m['images']} | {m['refused']} | "
                        f"{m['refusal_rate']:.2%} |")
    return rows


def _more(report: dict[str, Any]) -> str:
    return ", ".join(f"{name} x{factor}" for name, factor in report.get("junk_more", {}).items()) or "none"


def card(report: dict[str, Any]) -> str:
    lines = [
        f"# Out-of-distribution check {report['version']}",
        "",
        "Skips images whose pixels do not look like a radiograph at all (random noise, blank or",
        "near-blank frames, gradients, test patterns, text, photographs) whatever the header says.",
        "Random noise under a valid chest CR header scored 0.998 for TB before this check (issue 20).",
        "",
        f"- Model: {FEATURE_COUNT} image statistics (`inference/ood.py` `features`), standardised,",
        "  plus their Mahalanobis distance to the training radiographs, into a perceptron with one",
        f"  hidden layer of {report['hidden_units']} ReLU units;",
        "  output P(not a radiograph). NumPy and OpenCV only at serving, a few ms per image.",
        f"- Trained on: the train split of `{report['trained_on']}` ({report['train_radiographs']}",
        f"  radiographs, each also as one random variant) against {report['junk_per_family']} junk",
        f"  images per family (`training/ood_junk.py`; more of: {_more(report)}); data SHA-256",
        f"  `{report['data_sha256']}`.",
        f"- Seeds: junk for fitting {report['seeds']['fit']}, for the threshold "
        f"{report['seeds']['threshold']}, for measuring {report['seeds']['measure']}.",
        f"- Threshold: out-of-distribution score >= {report['threshold']:.2f} skips the image.",
        f"- Command: `{COMMAND}`",
        f"- Created: {report['created']}",
        "",
        "## Radiographs wrongly refused (goal <= 0.5 %)",
        "",
        "| set | source | radiographs | refused | rate |",
        "|---|---|---|---|---|",
        *_radiograph_rows(report["radiographs"]),
        "",
        f"## Junk refused (goal >= 99 %; {report['junk_images_per_family']} images per family, "
        "seed not used in fitting, radiograph-derived families from the test split)",
        "",
        "| family | refused |",
        "|---|---|",
        *(f"| {name} | {rate:.2%} |" for name, rate in report["junk"].items()),
        "",
    ]
    scores = report.get("not_chest_dicom_scores") or {}
    if scores:
        lines += ["## Real non-chest DICOM images (`../shared/data/dicom/not-chest`, measured only)",
                  "", "| file | score |", "|---|---|",
                  *(f"| {name} | {score:.3f} |" for name, score in scores.items()), ""]
    return "\n".join([*lines, WHY, LIMITS])
