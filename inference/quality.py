"""Quality gate: is this instance a frontal chest radiograph the classifiers may see?

:func:`check_quality` reads tags only (no pixel decoding), so it is cheap
enough to run on every received instance. Rules, in order; the first that
fails gives the reason recorded for the instance:

1. not one of the gateway's own results (:mod:`inference.own_outputs`);
2. an image: Structured Reports and other objects without Pixel Data are
   skipped (PS3.4 B.5 lists the storage SOP classes);
3. Modality (0008,0060) CR or DX; SC or OT only with a chest body part
   (PS3.3 C.7.3.1.1.1);
4. SOP Class CR, DX (for presentation or processing) or Secondary Capture;
5. body part chest or absent: Body Part Examined (0018,0015, PS3.16 Annex L),
   else Anatomic Region Sequence (0008,2218), else the study/series
   descriptions naming another body part;
6. frontal view: View Position (0018,5101) PA or AP, else View Code
   Sequence (0054,0220), else the descriptions; lateral, oblique and
   decubitus views are skipped, an unknown view is accepted;
7. intended use: a patient younger than ``min_age_years``
   (``inference.min_patient_age_years``, default 15: WHO consolidated
   guidelines on TB screening, 2021, recommend CAD for people aged 15 and
   over) is skipped; an unknown age (absent, malformed, a birth date after
   the study) is accepted with a note the SR, the ORU and the console carry
   (:mod:`inference.age`); 0 turns the rule off;
8. Pixel Data present, size within limits, pixel format supported
   (:func:`inference.pixels.pixel_format`).

Decoding can still fail later; :func:`verdict_for_pixel_error` words that
case the same way. Once decoded, :mod:`inference.ood` skips images whose pixels
do not look like a radiograph at all (noise, blank, text, patterns) and
:mod:`inference.polarity` those whose grey scale looks inverted (a wrong
Photometric Interpretation).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from inference.age import (
    DEFAULT_MIN_AGE_YEARS,
    PatientAge,
    below_minimum_reason,
    patient_age,
    unknown_age_note,
)
from inference.own_outputs import gateway_mark
from inference.pixels import (
    PixelError,
    dicom_to_gray,
    file_to_gray,
    is_dicom_file,
    load_dicom,
    pixel_format,
)

log = logging.getLogger(__name__)

MIN_SIDE: Final = 256
MAX_SIDE: Final = 10000

RADIOGRAPH_MODALITIES: Final = frozenset({"CR", "DX"})
CAPTURE_MODALITIES: Final = frozenset({"SC", "OT"})
CLASSIFIABLE_SOP_CLASSES: Final = frozenset({
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
})

CHEST_WORDS: Final = frozenset({
    "CHEST", "THORAX", "TORAX", "THORAKS", "TORACE", "THX", "LUNG", "LUNGS", "CXR",
    "PECHO", "POUMON", "POUMONS", "BRUST", "BRUSTKORB",
})
"""Words that name the chest in Body Part Examined, code meanings and descriptions."""

CHEST_REGION_CODES: Final = frozenset({"51185008", "T-D3000", "39607008", "T-28000"})
"""SNOMED CT / SRT codes of chest and lung (PS3.16 CID 4031, CID 4009)."""

OTHER_BODY_PART_WORDS: Final = frozenset({
    "TEETH", "TOOTH", "DENTAL", "PANORAMIC", "OPG", "MANDIBLE", "MAXILLA", "JAW", "SKULL",
    "HEAD", "BRAIN", "SINUS", "SINUSES", "FACE", "ORBIT", "NECK", "SPINE", "CSPINE",
    "TSPINE", "LSPINE", "CERVICAL", "LUMBAR", "SACRUM", "PELVIS", "HIP", "HIPS", "ABDOMEN",
    "ABD", "KUB", "SHOULDER", "CLAVICLE", "HUMERUS", "ELBOW", "FOREARM", "WRIST", "HAND",
    "HANDS", "FINGER", "FEMUR", "KNEE", "KNEES", "TIBIA", "FIBULA", "LEG", "ANKLE", "FOOT",
    "FEET", "HEEL", "CALCANEUS", "TOE", "BREAST", "MAMMO", "THYROID", "EXTREMITY", "ARM",
})
"""Words that name another body part; used only when Body Part Examined is absent."""

FRONTAL_WORDS: Final = frozenset({"PA", "AP", "FRONTAL", "POSTERO", "ANTERO", "POSTEROANTERIOR",
                                  "ANTEROPOSTERIOR"})
NON_FRONTAL_WORDS: Final = frozenset({
    "LL", "RL", "LLD", "RLD", "LLO", "RLO", "LAT", "LATERAL", "LATERALE", "OBL", "OBLIQUE",
    "DECUBITUS", "LAO", "RAO", "LPO", "RPO",
})
"""View Position defined terms (PS3.3 C.8.11.5.1.1) and usual words for non-frontal views."""

DESCRIPTION_KEYWORDS: Final = ("SeriesDescription", "ProtocolName", "StudyDescription")


class GateCode(StrEnum):
    """Why an instance was accepted or skipped; stable labels for metrics and the console."""

    ACCEPTED = "accepted"
    GATEWAY_OUTPUT = "gateway-output"
    NOT_IMAGE = "not-image"
    MODALITY = "modality"
    SOP_CLASS = "sop-class"
    BODY_PART = "body-part"
    VIEW = "view"
    AGE = "age"  # outside intended use: younger than inference.min_patient_age_years
    NO_PIXEL_DATA = "no-pixel-data"
    SIZE = "size"
    PIXEL_FORMAT = "pixel-format"
    UNREADABLE = "unreadable"
    INVERTED = "inverted"  # decided on the pixels, by :mod:`inference.polarity`
    NOT_RADIOGRAPH = "not-radiograph"  # decided on the pixels, by :mod:`inference.ood`


@dataclass(frozen=True)
class QualityVerdict:
    """The gate's answer: ``ok`` to classify, else ``reason`` is a sentence for hospital IT.

    ``notes`` go with an accepted image into its result (SR, ORU, console), e.g.
    that the patient's age is unknown.
    """

    ok: bool
    reason: str
    code: GateCode
    notes: tuple[str, ...] = ()

    @classmethod
    def accept(cls, notes: tuple[str, ...] = ()) -> QualityVerdict:
        return cls(True, "accepted: frontal chest radiograph", GateCode.ACCEPTED, notes)

    @classmethod
    def skip(cls, code: GateCode, why: str) -> QualityVerdict:
        return cls(False, f"skipped: {why}", code)

    @property
    def why(self) -> str:
        """The reason without its "skipped: " / "accepted: " word (for messages that say it)."""
        return self.reason.split(": ", 1)[1]


def check_quality(ds: Dataset, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE,
                  min_age_years: float = DEFAULT_MIN_AGE_YEARS) -> QualityVerdict:
    """Apply the gate rules of the module docstring, in order, to the tags of ``ds``.

    Never raises: pydicom parses elements on first access, and an element
    that cannot be parsed makes the instance unreadable, a verdict like any other.
    """
    try:
        for rule in (_own_output, _image, _modality, _sop_class, _body_part, _view):
            verdict = rule(ds)
            if verdict is not None:
                return verdict
        age = age_verdict(ds, min_age_years)
        if not age.ok:
            return age
        return _pixels(ds, min_side, max_side) or age
    except Exception as err:  # pydicom raises OSError, ValueError, struct.error... on bad values
        log.warning("unreadable header: %s: %s", type(err).__name__, err)
        why = f"a header attribute cannot be read ({type(err).__name__}: {err})"
        return QualityVerdict.skip(GateCode.UNREADABLE, why)


def file_to_checked_gray(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """Grey levels in [0, 1] of a PNG, JPEG or DICOM file, as ``predict`` and the
    calibration read them: a DICOM file must pass :func:`check_quality` first.
    Raises :class:`PixelError` naming the file and the reason when it cannot be used."""
    if not is_dicom_file(path):
        return file_to_gray(path)
    ds = load_dicom(path)
    verdict = check_quality(ds)
    if not verdict.ok:
        raise PixelError(f"{os.fspath(path)}: {verdict.why}")
    try:
        return dicom_to_gray(ds)
    except PixelError as err:  # its messages name the attribute, not the file
        raise PixelError(f"{os.fspath(path)}: {err}") from err


def verdict_for_pixel_error(error: PixelError) -> QualityVerdict:
    """The verdict to record when :func:`inference.pixels.dicom_to_gray` fails."""
    return QualityVerdict.skip(GateCode.PIXEL_FORMAT, f"pixel data could not be decoded ({error})")


def _own_output(ds: Dataset) -> QualityVerdict | None:
    mark = gateway_mark(ds)
    if mark is None:
        return None
    why = f"written by this gateway ({mark}); its results are never classified"
    return QualityVerdict.skip(GateCode.GATEWAY_OUTPUT, why)


def _image(ds: Dataset) -> QualityVerdict | None:
    sop_class = _sop_class_uid(ds)
    if "PixelData" in ds or sop_class in CLASSIFIABLE_SOP_CLASSES:
        return None
    name = sop_class.name if sop_class else "missing"
    return QualityVerdict.skip(GateCode.NOT_IMAGE, f"not an image (SOP Class {name})")


def _modality(ds: Dataset) -> QualityVerdict | None:
    modality = _text(ds, "Modality").upper()
    if modality in RADIOGRAPH_MODALITIES:
        return None
    if modality in CAPTURE_MODALITIES:
        if _is_chest_text(_text(ds, "BodyPartExamined")) or _region_is_chest(ds) is True:
            return None
        why = (f"not a chest radiograph (Modality {modality} is classified only "
               "with a chest Body Part Examined)")
        return QualityVerdict.skip(GateCode.MODALITY, why)
    return QualityVerdict.skip(GateCode.MODALITY,
                               f"not a chest radiograph (Modality {modality or 'missing'})")


def _sop_class(ds: Dataset) -> QualityVerdict | None:
    sop_class = _sop_class_uid(ds)
    if sop_class in CLASSIFIABLE_SOP_CLASSES:
        return None
    name = sop_class.name if sop_class else "missing"
    return QualityVerdict.skip(GateCode.SOP_CLASS, f"SOP Class {name} is not a chest radiograph "
                               "class (CR, DX or Secondary Capture)")


def _body_part(ds: Dataset) -> QualityVerdict | None:
    """Body Part Examined, else Anatomic Region Sequence, else the descriptions."""
    part = _text(ds, "BodyPartExamined")
    if part:
        return None if _is_chest_text(part) else QualityVerdict.skip(
            GateCode.BODY_PART, f"not a chest radiograph (Body Part Examined {part!r})")
    if _region_is_chest(ds) is False:
        meaning = _text(ds.AnatomicRegionSequence[0], "CodeMeaning")
        return QualityVerdict.skip(
            GateCode.BODY_PART, f"not a chest radiograph (Anatomic Region {meaning!r})")
    for keyword in DESCRIPTION_KEYWORDS:
        words = _words(_text(ds, keyword))
        other = sorted(words & OTHER_BODY_PART_WORDS)
        if other and not words & CHEST_WORDS:
            why = (f"not a chest radiograph ({_label(keyword)} {_text(ds, keyword)!r} "
                   f"names {other[0]})")
            return QualityVerdict.skip(GateCode.BODY_PART, why)
    return None


def _view(ds: Dataset) -> QualityVerdict | None:
    """The first source that is decisive (frontal or not, never both) rules."""
    sources = [("View Position", _text(ds, "ViewPosition"))]
    codes = ds.get("ViewCodeSequence") or []
    sources += [("View Code", _text(item, "CodeMeaning")) for item in codes]
    sources += [(_label(k), _text(ds, k)) for k in DESCRIPTION_KEYWORDS]
    for label, value in sources:
        words = _words(value)
        frontal, other = bool(words & FRONTAL_WORDS), bool(words & NON_FRONTAL_WORDS)
        if frontal and not other:
            return None
        if other and not frontal:
            why = f"not a frontal chest view ({label} {value!r}); only PA and AP are classified"
            return QualityVerdict.skip(GateCode.VIEW, why)
    log.debug("no view information; treated as frontal")
    return None


def age_verdict(ds: Dataset, min_age_years: float) -> QualityVerdict:
    """Intended use by age (rule 7): skip below ``min_age_years``, accept an unknown age with a note."""
    return age_check(patient_age(ds), min_age_years)


def age_check(age: PatientAge | None, min_age_years: float) -> QualityVerdict:
    """The age rule on an age found elsewhere (a DICOM header, an age stated with an upload)."""
    if min_age_years <= 0:
        return QualityVerdict.accept()
    if age is None:
        return QualityVerdict.accept((unknown_age_note(min_age_years),))
    if age.years < min_age_years:
        return QualityVerdict.skip(GateCode.AGE, below_minimum_reason(age, min_age_years))
    return QualityVerdict.accept()


def _pixels(ds: Dataset, min_side: int, max_side: int) -> QualityVerdict | None:
    if "PixelData" not in ds:
        why = "the instance has no Pixel Data (7FE0,0010)"
        return QualityVerdict.skip(GateCode.NO_PIXEL_DATA, why)
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        return QualityVerdict.skip(GateCode.PIXEL_FORMAT, "Rows or Columns is missing")
    if not (min_side <= int(rows) <= max_side and min_side <= int(columns) <= max_side):
        return QualityVerdict.skip(GateCode.SIZE, f"image size {columns}x{rows} pixels is outside "
                                   f"the accepted {min_side} to {max_side} pixels a side")
    try:
        pixel_format(ds)
    except PixelError as err:
        return QualityVerdict.skip(GateCode.PIXEL_FORMAT, f"pixel data not supported ({err})")
    return None


def _region_is_chest(ds: Dataset) -> bool | None:
    """Anatomic Region Sequence (0008,2218): chest, another region, or absent (``None``)."""
    items = ds.get("AnatomicRegionSequence") or []
    if not items:
        return None
    code, meaning = _text(items[0], "CodeValue"), _text(items[0], "CodeMeaning")
    return code in CHEST_REGION_CODES or _is_chest_text(meaning)


def _is_chest_text(value: str) -> bool:
    return bool(_words(value) & CHEST_WORDS)


def _words(value: str) -> set[str]:
    """Upper-case words without accents: 'Tórax PA' -> {'TORAX', 'PA'}."""
    plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return set(re.split(r"[^A-Z0-9]+", plain.upper())) - {""}


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str) and isinstance(value, Iterable):
        return " ".join(str(v) for v in value).strip()
    return str(value).strip()


def _sop_class_uid(ds: Dataset) -> UID | None:
    value = _text(ds, "SOPClassUID")
    return UID(value) if value else None


def _label(keyword: str) -> str:
    """'SeriesDescription' -> 'Series Description', the way PS3.6 names attributes."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword)
