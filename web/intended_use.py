"""The intended-use age of an upload: an age stated with it, else a DICOM file's own header.

``POST /api/v1/predict`` takes an optional ``age_years``. The rule is the
quality gate's (:func:`inference.quality.age_check`, ``inference.min_patient_age_years``):
a younger patient is refused with 422 and the gate's reason; an unknown age
(a PNG or JPEG without ``age_years``, a DICOM file without a usable age) is
classified and the answer's ``notes`` say that the intended use is not confirmed.
:func:`web.uploads.classify_upload` applies it to the dataset it has already parsed.
"""

from __future__ import annotations

from pydicom import Dataset

from inference.age import PatientAge, patient_age, stated_age
from inference.quality import QualityVerdict, age_check


def upload_age_verdict(ds: Dataset | None, age_years: float | None,
                       min_age_years: float) -> QualityVerdict:
    """The age rule on the stated age, else the DICOM header's (Patient's Age or birth date);
    ``ds`` is ``None`` for a PNG or JPEG."""
    age: PatientAge | None = None
    if age_years is not None:
        age = stated_age(age_years)
    elif ds is not None:
        age = patient_age(ds)
    return age_check(age, min_age_years)
