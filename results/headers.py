"""The patient and study header a result copies, made valid from whatever the image carries.

The SR and the Secondary Capture copy the Patient (PS3.3 C.7.1.1) and General
Study (C.7.2.1) modules of their source image, and the ORU's PID and OBR come
from the same attributes. Anonymised and foreign-format images are everyday
input: attributes are absent, empty, multi-valued where the dictionary says
VM 1, or written in a local format (a birth date ``31.12.1971``). None of that
may stop the report:

* the Type 2 attributes the result must carry (:data:`TYPE2_KEYWORDS`) are
  present, empty when the image has no usable value (PS3.5 7.4: zero length
  means unknown);
* a value that breaks its VR (PS3.5 6.2) is left out: a Type 2 attribute is
  emptied, any other is removed; a value with several values where VM is 1
  keeps its first value; control characters the VR forbids (0x1C in a name)
  are removed;
* text is decoded with the image's Specific Character Set before copying,
  so the result (UTF-8, ``ISO_IR 192``) carries the right characters.

Each change is recorded as a note naming the attribute and what was wrong,
never its value (no patient data in notes or logs).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Final

from pydicom import config
from pydicom.datadict import dictionary_description, dictionary_VM
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM, validate_value

log = logging.getLogger(__name__)

TYPE2_KEYWORDS: Final = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
"""Type 2 attributes of the Patient and General Study modules every result carries
(PS3.3 C.7.1.1, C.7.2.1): present, possibly empty."""

KEPT_AS_IS: Final = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ", "UI", "AT", "US",
                                "SS", "UL", "SL", "UV", "SV", "FL", "FD", "IS", "DS"})
"""VRs not checked here: binary data, sequences, binary and decimal numbers (pydicom has
parsed them already), and UIDs (a source with a broken UID is refused earlier,
:func:`results.evidence.check_images`)."""

TEXT_VRS: Final = frozenset({"ST", "LT", "UT"})
TEXT_CONTROLS: Final = "\t\n\x0c\r\x1b"
"""Control characters the text VRs may hold (PS3.5 6.2); other VRs hold ESC only."""

PATIENT_SEX_VALUES: Final = frozenset({"M", "F", "O"})
"""Defined terms of Patient's Sex (0010,0040), PS3.3 C.7.1.1."""


@dataclass(frozen=True)
class CleanHeader:
    """A copy of a source image's header fit to copy into a result, and what was changed."""

    dataset: Dataset
    notes: tuple[str, ...]  # e.g. "Patient's Birth Date: not a valid DA; left out"


def clean_header(source: Dataset) -> CleanHeader:
    """A shallow copy of ``source`` (top level, decoded) whose text values are all valid.

    Pixel Data and sequences are shared with ``source``, not copied.
    """
    clean = Dataset()
    if hasattr(source, "file_meta"):
        clean.file_meta = source.file_meta
    notes: list[str] = []
    for element in _elements(source, notes):
        fixed = _fixed(element, notes)
        if fixed is not None:
            clean.add(fixed)
    for keyword in TYPE2_KEYWORDS:
        if keyword not in clean:
            setattr(clean, keyword, "")
    if clean.get("PatientSex") and str(clean.PatientSex).strip().upper() not in PATIENT_SEX_VALUES:
        notes.append("Patient's Sex: not M, F or O; left empty")
        clean.PatientSex = ""
    return CleanHeader(clean, tuple(notes))


def _elements(source: Dataset, notes: list[str]) -> list[DataElement]:
    """Every top-level element of ``source`` decoded with its character set; unreadable
    ones (a value pydicom cannot convert) are noted and dropped."""
    out: list[DataElement] = []
    for tag in list(source.keys()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's warnings quote the value
                out.append(source[tag])
        except (ValueError, TypeError, LookupError, OverflowError) as err:
            notes.append(f"{_name(tag)}: unreadable ({type(err).__name__}); left out")
    return out


def _fixed(element: DataElement, notes: list[str]) -> DataElement | None:
    """``element`` as it may be copied, a corrected copy, or None to leave it out."""
    if element.VR in KEPT_AS_IS or element.value is None or element.tag.group in (0x0002,):
        return element
    name, keyword = _name(element.tag), element.keyword
    values = list(element.value) if element.VM > 1 else [element.value]
    if len(values) > 1 and _single_valued(element):
        notes.append(f"{name}: {len(values)} values where one is allowed; first kept")
        values = values[:1]
    cleaned = [_without_controls(element.VR, value) for value in values]
    if cleaned != [str(v) for v in values]:
        notes.append(f"{name}: control characters removed")
        values = cleaned
    if all(_valid(element.VR, value) for value in values):
        if len(values) == element.VM and values is not cleaned:
            return element
        return DataElement(element.tag, element.VR, values[0] if len(values) == 1 else values)
    notes.append(f"{name}: not a valid {element.VR}; left out")
    if keyword in TYPE2_KEYWORDS:
        return DataElement(element.tag, element.VR, "")
    return None


def _without_controls(vr: str, value: object) -> str:
    """``value`` as text without the control characters its VR forbids (PS3.5 6.1.3, 6.2:
    ESC only, for ISO 2022 code extensions; the text VRs also keep TAB, LF, FF and CR)."""
    allowed = TEXT_CONTROLS if vr in TEXT_VRS else "\x1b"
    return "".join(c for c in str(value) if c in allowed or not _is_control(c))


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F


def _single_valued(element: DataElement) -> bool:
    try:
        return dictionary_VM(element.tag) == "1"
    except KeyError:  # private or unknown tag: no rule to apply
        return False


TEMPORAL_VRS: Final = {"DA": DA, "TM": TM, "DT": DT}
"""VRs whose value must also name a real date or time (``19590229`` matches the DA
pattern of PS3.5 6.2 but is no day; highdicom parses these and would raise)."""


def _valid(vr: str, value: object) -> bool:
    try:
        validate_value(vr, value, config.RAISE)
        if vr in TEMPORAL_VRS and str(value):
            TEMPORAL_VRS[vr](str(value))
    except (ValueError, TypeError):
        return False
    return True


def _name(tag: int) -> str:
    try:
        return dictionary_description(tag)
    except KeyError:
        return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
