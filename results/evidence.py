"""The inputs of a result: classified source images of one study.

The SR and the Secondary Capture belong to the same patient and study as the
images they describe (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study: the
derived objects copy these modules). Mixing studies in one result would file
it under the wrong patient, so it is refused here, before anything is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from inference.results import Prediction

REQUIRED_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
"""Attributes every source image needs so that the result can reference it (PS3.3 C.17.2)."""

SAME_PATIENT_AND_STUDY = ("StudyInstanceUID", "PatientID")


class ResultBuildError(ValueError):
    """A result cannot be built from the given inputs (the message names the argument)."""


@dataclass(frozen=True)
class ClassifiedImage:
    """One source image (as received, pydicom) and the prediction made on it."""

    dataset: Dataset
    prediction: Prediction
    replaced: int = 0  # times a corrected re-send replaced the source (issue 20, defect 8)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def source_key(self) -> str:
        """What identifies the source's content in derived UIDs: its SOP Instance UID, and
        how often it was replaced, so a corrected instance gets new result UIDs."""
        uid = self.sop_instance_uid
        return f"{uid}#{self.replaced}" if self.replaced else uid


def check_images(images: Sequence[ClassifiedImage]) -> None:
    """Raise ResultBuildError unless ``images`` is a non-empty set of one study's images."""
    if not images:
        raise ResultBuildError("images: a result needs at least one classified image")
    for index, image in enumerate(images):
        missing = [k for k in REQUIRED_KEYWORDS if not image.dataset.get(k)]
        if missing:
            raise ResultBuildError(f"images[{index}]: missing {', '.join(missing)}")
    for keyword in SAME_PATIENT_AND_STUDY:
        values = {str(image.dataset.get(keyword, "")) for image in images}
        if len(values) > 1:
            raise ResultBuildError(
                f"images: all must share one {keyword}; got {len(values)} different values")
    uids = [image.sop_instance_uid for image in images]
    if len(set(uids)) != len(uids):
        raise ResultBuildError("images: the same SOP Instance UID is given twice")
