"""Coded vocabulary of the gateway's results (SNOMED CT, DICOM DCM, UCUM, UMLS).

Every code the SR, the Secondary Capture caption and the HL7 ORU use is
named here once, so the DICOM and HL7 outputs say the same thing.

* Findings are SNOMED CT concepts (PS3.16 uses scheme designator ``SCT``).
* Concept names of content items are DICOM Controlled Terminology
  (PS3.16 Annex D, scheme ``DCM``).
* Units are UCUM (PS3.16 CID 7181): a probability is dimensionless, ``1``.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from pydicom.sr.coding import Code

from inference.results import (
    PNEUMONIA_NOTE,
    ClassifierScore,
    Finding,
    Prediction,
    impression,
)


class FindingCode(Enum):
    """SNOMED CT concepts for what a classifier can say about a chest radiograph."""

    TUBERCULOSIS = Code("56717001", "SCT", "Tuberculosis")
    PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
    NO_ABNORMALITY_DETECTED = Code("281900007", "SCT", "No abnormality detected")

    @property
    def code(self) -> Code:
        """The pydicom ``Code`` (value, scheme designator, meaning)."""
        value: Code = self.value
        return value


PLAIN_CHEST_XRAY: Final = Code("399208008", "SCT", "Plain chest X-ray")
"""Procedure reported (TID 1500 row 4; SNOMED CT procedure)."""

IMAGING_MEASUREMENT_REPORT: Final = Code("126000", "DCM", "Imaging Measurement Report")
"""Document title (CID 7021)."""

FINDING: Final = Code("121071", "DCM", "Finding")
"""Concept name of one classifier's own coded finding (HL7 OBX-3). Not used for the SR's
qualitative evaluations: TID 1501 gives (121071, DCM) to the group's Finding Type."""

IMPRESSION: Final = Code("121073", "DCM", "Impression")
"""Concept name of the combined finding: the coded qualitative evaluation of each TID 1501
measurement group (CONTAINS CODE) and of the report (TID 1500 row 13)."""

PROBABILITY: Final = Code("122157", "DCM", "Probability")
"""Concept name of a classifier's output probability (NUM, TID 300)."""

THRESHOLD_VALUE: Final = Code("122411", "DCM", "Threshold Value")
"""Concept name of a classifier's operating threshold (NUM, TID 300)."""

COMMENT: Final = Code("121106", "DCM", "Comment")
"""Concept name of the decision-support disclaimer (TEXT)."""

IMPRESSION_DESCRIPTION: Final = Code("111033", "DCM", "Impression Description")
"""Concept name of the human-readable summary with the combination rule (TEXT)."""

QUALITATIVE_EVALUATIONS: Final = Code("C0034375", "UMLS", "Qualitative Evaluations")
"""Container of report-level evaluations (TID 1500 row 12)."""

NO_UNITS: Final = Code("1", "UCUM", "no units")
"""UCUM unit of a probability and of a threshold on it (CID 7181)."""

PROCESSING_EQUIPMENT: Final = Code("109102", "DCM", "Processing Equipment")
"""Purpose of Reference of the Contributing Equipment item (CID 7005), as the IHE AI
Results profile asks for the algorithm that produced a result."""

SOURCE_IMAGE_FOR_PROCESSING: Final = Code(
    "121322", "DCM", "Source image for image processing operation")
"""Purpose of Reference of the Secondary Capture's Source Image Sequence item (CID 7202)."""

LABEL_CODES: Final[dict[str, FindingCode]] = {
    "tb": FindingCode.TUBERCULOSIS,
    "pneumonia": FindingCode.PNEUMONIA,
    "normal": FindingCode.NO_ABNORMALITY_DETECTED,
}
"""Classifier labels (``positive_label`` / ``negative_label`` of a model) to findings."""

IMPRESSION_CODES: Final[dict[Finding, FindingCode]] = {
    Finding.TB_SUSPECTED: FindingCode.TUBERCULOSIS,
    Finding.PNEUMONIA_PATTERN: FindingCode.TUBERCULOSIS,  # stored by older versions
    Finding.NO_TB_FINDING: FindingCode.NO_ABNORMALITY_DETECTED,
}
"""The combined impression (:func:`inference.results.impression`) to its SNOMED CT concept."""

COMBINATION_RULE: Final = (
    "TB suspected when TB-vs-normal is at or above its threshold, whatever pneumonia-vs-TB "
    f"says; if pneumonia-vs-TB is at or above its threshold too, the note '{PNEUMONIA_NOTE}' "
    "is added (a TB test is still indicated); no TB finding when TB-vs-normal is below its "
    "threshold. Study level: the image with the highest TB-vs-normal score represents the study."
)
"""The documented rule of :func:`inference.results.combine`, stated in every report."""

SR_DISCLAIMER: Final = (
    "AI decision support — not a diagnosis. Automated result, not verified by a physician; "
    "the images must be read by a qualified radiologist."
)
"""Text in the SR and the HL7 ORU (IHE AI Results: results are marked as machine-made)."""

SC_DISCLAIMER: Final = "AI result — not a diagnosis"
"""Caption line burned into the heatmap Secondary Capture."""


class UnknownLabelError(ValueError):
    """A model reports a label the gateway has no SNOMED CT concept for."""


def label_code(label: str) -> FindingCode:
    """The finding concept of a classifier label (``tb``, ``pneumonia``, ``normal``)."""
    try:
        return LABEL_CODES[label.strip().lower()]
    except KeyError:
        raise UnknownLabelError(
            f"classifier label {label!r}: expected one of {', '.join(sorted(LABEL_CODES))}"
        ) from None


def classifier_finding(score: ClassifierScore) -> FindingCode:
    """What one classifier says on its own: its positive label at/above threshold, else negative."""
    return label_code(score.positive_label if score.positive else score.negative_label)


def impression_code(prediction: Prediction) -> Code:
    """The SNOMED CT concept of the prediction's impression (:func:`inference.results.impression`)."""
    said = impression(prediction.tb_vs_normal, prediction.pneumonia_vs_tb)
    return IMPRESSION_CODES[said.finding].code


def impression_summary(prediction: Prediction) -> str:
    """One paragraph a radiologist can read: impression, each score against its threshold."""
    said = impression(prediction.tb_vs_normal, prediction.pneumonia_vs_tb)
    parts = [f"Impression: {said.text}."]
    for score in (prediction.tb_vs_normal, prediction.pneumonia_vs_tb):
        parts.append(f"{score.classifier} ({score.model_name} {score.model_version}): "
                     f"probability {score.score:.3f}, threshold {score.threshold:.3f}, "
                     f"favours {classifier_finding(score).code.meaning.lower()}.")
    parts.append(f"Rule: {COMBINATION_RULE}")
    return " ".join(parts)
