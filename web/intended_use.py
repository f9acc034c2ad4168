"""The intended-use age of an upload: an age stated with it, else a DICOM file's own header.

``POST /api/v1/predict`` takes an optional ``age_years``. The rule is the
quality gate's (:func:`inference.quality.age_check`, ``inference.min_patient_age_years``):
a younger patient is refused with 422 and the gate's reason; an unknown age
(a PNG or JPEG without ``age_years``, a DICOM file without a usable age) is
classified and the answer's ``notes`` say that the intended use is not confirmed.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from inference.age import PatientAge, patient_age, stated_age
from inference.pixels import PixelError, load_dicom
from inference.quality import age_check
from web.uploads import UploadError, UploadKind, sniff

log = logging.getLogger(__name__)


def upload_age(data: bytes, age_years: float | None) -> PatientAge | None:
    """The stated age, else the DICOM header's (Patient's Age or birth date), else ``None``."""
    if age_years is not None:
        return stated_age(age_years)
    try:
        if sniff(data) is not UploadKind.DICOM:
            return None
        return patient_age(load_dicom(data))
    except (UploadError, PixelError):
        return None  # the classification path reports what is wrong with the file


def upload_notes(data: bytes, age_years: float | None, min_age_years: float) -> tuple[str, ...]:
    """The notes an upload's answer carries; :class:`UploadError` (422) below the minimum age."""
    verdict = age_check(upload_age(data, age_years), min_age_years)
    if not verdict.ok:
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY, f"not classified: {verdict.reason}")
    return verdict.notes
