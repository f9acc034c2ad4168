"""A journal for the worklist tests: the web tests' four studies plus a child and an unknown age.

Filled by the real worker path (quality gate with the intended-use age, pixel
decoding, both classifiers), on top of :func:`tests.web_support.fill`.
"""

from __future__ import annotations

from pathlib import Path

from inference.engine import InferenceEngine
from tests.dicom_factory import make_chest
from tests.web_support import Filled, classify_all, fill, receive, settings_for

STUDY_CHILD = "1.2.826.0.1.3680043.8.498.7005"  # Patient's Age 006Y: skipped, outside intended use
STUDY_UNKNOWN = "1.2.826.0.1.3680043.8.498.7006"  # no age, no birth date: classified with a note
CHILD_ID, UNKNOWN_ID = "PAT-CHILD-7005", "PAT-NOAGE-7006"
UNKNOWN_NAME = "Okonkwo^Adaeze^Ngozi"
UNKNOWN_ACCESSION = "ACC-NOAGE-1"
AGE_NOTE = "patient age unknown: intended use (15 years and over) not confirmed"
CHILD_REASON = "outside intended use: patient aged 6 years (inference.min_patient_age_years = 15)"


def fill_worklist(folder: Path, models: Path, engine: InferenceEngine, **web: object) -> Filled:
    """The four studies of :func:`fill` (the queued one classified too), a child, an unknown age."""
    filled = fill(folder, settings_for(folder, models, **web), engine)
    spool = filled.settings.path(filled.settings.storage.spool_dir)
    child = make_chest(study_uid=STUDY_CHILD, series_uid=f"{STUDY_CHILD}.1",
                       sop_uid=f"{STUDY_CHILD}.1.1", patient_id=CHILD_ID, rows=400, columns=400)
    child.PatientAge = "006Y"
    unknown = make_chest(study_uid=STUDY_UNKNOWN, series_uid=f"{STUDY_UNKNOWN}.1",
                         sop_uid=f"{STUDY_UNKNOWN}.1.1", patient_id=UNKNOWN_ID,
                         patient_name=UNKNOWN_NAME, modality="DX", rows=420, columns=400)
    del unknown.PatientBirthDate
    unknown.AccessionNumber, unknown.StudyDate = UNKNOWN_ACCESSION, "20250317"
    for ds in (child, unknown):
        receive(filled.journal, spool, ds)
    classify_all(filled.journal, engine)
    return filled
