"""HL7 v2.5.1 ORU^R01 "Unsolicited transmission of an observation" (chapter 7.3.1) for one study.

Built with hl7apy and validated against its v2.5.1 structure (STRICT) before
it leaves the builder. Segments::

    MSH  sending/receiving application and facility (configurable), ORU^R01^ORU_R01,
         control ID, processing ID, 2.5.1, character set UNICODE UTF-8
    PID  patient ID (CX, assigning authority from Issuer of Patient ID), name (XPN),
         birth date, administrative sex (HL7 table 0001) -- from the DICOM image
    OBR  placer and filler order number = accession number, universal service ID
         (399208008^Plain chest X-ray^SCT), observation date/time = study date/time,
         results date/time, diagnostic service section RAD, result status P (table 0123)
    OBX  one row per observation, status P (table 0085); OBX-4 groups each classifier:
         CWE Impression (study), then per classifier (sub-ID 1, 2): CWE Finding,
         NM Probability, NM Threshold Value (units 1^no units^UCUM), ST Algorithm Name,
         ST Algorithm Version; then ST Study Instance UID, TX Impression Description
         (scores and rule), TX Comment (the disclaimer), a TX Comment per note of the
         result ("patient age unknown: intended use ... not confirmed")

A study the AI did not analyse gets :func:`build_not_analysed_oru`: OBR-25 ``I``
and OBX rows (TX Impression "not analysed: <reason>", ST Study Instance UID, TX
Comment) with OBX-11 ``X`` (:class:`NotAnalysedStatus`).

Every text taken from outside (names, IDs, labels, free text) is escaped and
stripped of control characters (:mod:`hl7_link.escaping`), so ``| ^ ~ \\ &`` or
0x1C in a patient name cannot break the message; patient and study values come
from the cleaned header (:mod:`results.headers`), so an invalid birth date or
study time leaves its field empty instead of failing validation.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import HL7apyException
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.coding import Code

from hl7_link.errors import OruBuildError
from hl7_link.escaping import components, escape
from inference.results import ClassifierScore, Prediction
from results.codes import (
    COMMENT,
    FINDING,
    IMPRESSION,
    IMPRESSION_DESCRIPTION,
    NO_UNITS,
    PLAIN_CHEST_XRAY,
    PROBABILITY,
    SR_DISCLAIMER,
    THRESHOLD_VALUE,
    classifier_finding,
    impression_code,
    impression_summary,
)
from results.headers import clean_header

log = logging.getLogger(__name__)

HL7_VERSION: Final = "2.5.1"
MESSAGE_TYPE: Final = "ORU^R01^ORU_R01"
CHARACTER_SET: Final = "UNICODE UTF-8"
"""MSH-18 (HL7 table 0211)."""

CONTROL_ID_LENGTH: Final = 20
"""MSH-10 is ST of at most 20 characters in v2.5.1."""

ALGORITHM_NAME: Final = ("111001", "Algorithm Name", "DCM")
ALGORITHM_VERSION: Final = ("111003", "Algorithm Version", "DCM")
STUDY_INSTANCE_UID: Final = ("110180", "Study Instance UID", "DCM")
TEXT_LINE_WIDTH: Final = 120
"""Characters per TX repetition (each repetition is a line; hl7apy caps one at 199)."""

DIAGNOSTIC_SECTION_RADIOLOGY: Final = "RAD"
"""OBR-24 (HL7 table 0074)."""


class ResultStatus(StrEnum):
    """OBR-25 (table 0123) and OBX-11 (table 0085): this gateway sends preliminary results."""

    PRELIMINARY = "P"
    FINAL = "F"


class NotAnalysedStatus(StrEnum):
    """Statuses of a "not analysed" result (issue 21 item 2)."""

    ORDER = "I"  # OBR-25, table 0123: no results available; procedure incomplete
    OBSERVATION = "X"  # OBX-11, table 0085: results cannot be obtained for this observation


class ProcessingId(StrEnum):
    """MSH-11 (HL7 table 0103)."""

    PRODUCTION = "P"
    TRAINING = "T"
    DEBUGGING = "D"


class ValueType(StrEnum):
    """OBX-2 (HL7 table 0125) values used here."""

    CODED = "CWE"
    NUMERIC = "NM"
    STRING = "ST"
    TEXT = "TX"


SEX_CODES: Final = {"M": "M", "F": "F", "O": "O"}
"""DICOM Patient's Sex (0010,0040) to HL7 table 0001; anything else is U (unknown)."""


@dataclass(frozen=True)
class Hl7Endpoints:
    """MSH-3 to MSH-6: who sends and who receives (each an HD namespace ID)."""

    sending_application: str = "CXRGATEWAY"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: ProcessingId = ProcessingId.PRODUCTION


@dataclass(frozen=True)
class StudyFacts:
    """What the ORU needs from the DICOM study (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study)."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str  # DICOM PN: family^given^middle^prefix^suffix
    birth_date: str  # DA, YYYYMMDD or empty
    sex: str  # M, F, O or empty
    accession_number: str
    study_uid: str
    study_datetime: str  # YYYYMMDD[HHMMSS]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyFacts:
        """The facts of the image ``ds`` (any image of the study).

        Read from the header as :func:`results.headers.clean_header` leaves it:
        absent or invalid values are empty (left out of their HL7 field), a
        multi-valued name keeps its first value.
        """
        ds = clean_header(ds).dataset
        date, time = _text(ds, "StudyDate"), _text(ds, "StudyTime").split(".")[0]
        if not date or not (time.isdigit() and len(time) in (2, 4, 6)):
            time = ""  # DTM: a time only after a date (HL7 v2.5.1 2.A.22)
        return cls(
            patient_id=_text(ds, "PatientID"),
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex").strip().upper(),
            accession_number=_text(ds, "AccessionNumber"),
            study_uid=_text(ds, "StudyInstanceUID"),
            study_datetime=date + time,
        )


def _text(ds: Dataset, keyword: str) -> str:
    """An attribute as text; several values (DICOM backslash, PS3.5 6.4) joined back with one."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


def control_id_for(*parts: str) -> str:
    """A stable MSH-10 for a result: the same result re-sent keeps its control ID."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest().upper()
    return digest[:CONTROL_ID_LENGTH]


def hl7_timestamp(moment: datetime.datetime) -> str:
    """HL7 TS (DTM) to the second, with the UTC offset when ``moment`` is aware."""
    stamp = moment.strftime("%Y%m%d%H%M%S")
    return stamp + moment.strftime("%z") if moment.tzinfo else stamp


def person_name(dicom_name: str) -> str:
    """DICOM PN (alphabetic group) as HL7 XPN: family^given^middle^suffix^prefix, escaped."""
    alphabetic = dicom_name.split("=")[0]
    family, given, middle, prefix, suffix = (alphabetic.split("^") + [""] * 5)[:5]
    return components(family, given, middle, suffix, prefix)


def build_oru(facts: StudyFacts, prediction: Prediction, endpoints: Hl7Endpoints,
              control_id: str, now: datetime.datetime | None = None) -> str:
    """The ORU^R01 for one study's result, as ER7 text (segments separated by CR)."""
    text = _message(facts, list(_observations(facts, prediction)), endpoints, control_id, now,
                    (ResultStatus.PRELIMINARY, ResultStatus.PRELIMINARY))
    log.info("built ORU^R01 %s for study %s: %s", control_id, facts.study_uid,
             prediction.finding.value)
    return text


def build_not_analysed_oru(facts: StudyFacts, text: str, endpoints: Hl7Endpoints,
                           control_id: str, now: datetime.datetime | None = None) -> str:
    """The ORU^R01 of a study the AI did not analyse: ``text`` ("not analysed: <reason>") as
    the impression, OBR-25 ``I`` and every OBX-11 ``X`` (:class:`NotAnalysedStatus`)."""
    observations = [_text_row(IMPRESSION, text), _study_uid_row(facts),
                    _text_row(COMMENT, SR_DISCLAIMER)]
    message = _message(facts, observations, endpoints, control_id, now,
                       (NotAnalysedStatus.ORDER, NotAnalysedStatus.OBSERVATION))
    log.info("built ORU^R01 %s for study %s: not analysed", control_id, facts.study_uid)
    return message


def _message(facts: StudyFacts, observations: list[Observation], endpoints: Hl7Endpoints,
             control_id: str, now: datetime.datetime | None, statuses: tuple[str, str]) -> str:
    """MSH, PID, OBR (OBR-25 ``statuses[0]``) and one OBX per observation (OBX-11
    ``statuses[1]``), validated STRICT against v2.5.1."""
    if not control_id or len(control_id) > CONTROL_ID_LENGTH:
        raise OruBuildError(f"control_id {control_id!r}: expected 1-{CONTROL_ID_LENGTH} "
                            "characters (MSH-10)")
    now = now or datetime.datetime.now()
    try:
        message = Message("ORU_R01", version=HL7_VERSION,
                          validation_level=VALIDATION_LEVEL.STRICT)
        _msh(message, endpoints, control_id, now)
        result = message.add_group("ORU_R01_PATIENT_RESULT")
        _pid(result.add_group("ORU_R01_PATIENT").add_segment("PID"), facts)
        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        _obr(order.add_segment("OBR"), facts, now, statuses[0])
        for index, (kind, sub_id, identifier, value, units) in enumerate(observations, start=1):
            obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
            _obx(obx, index, kind, sub_id, identifier, value, units, now, statuses[1])
        message.validate()
        text: str = message.to_er7()
    except (HL7apyException, ValueError) as err:
        raise OruBuildError(f"ORU^R01 for study {facts.study_uid} does not validate: {err}") from err
    return text


def _msh(message: Message, endpoints: Hl7Endpoints, control_id: str,
         now: datetime.datetime) -> None:
    msh = message.msh
    msh.msh_3 = escape(endpoints.sending_application)
    msh.msh_4 = escape(endpoints.sending_facility)
    msh.msh_5 = escape(endpoints.receiving_application)
    msh.msh_6 = escape(endpoints.receiving_facility)
    msh.msh_7 = hl7_timestamp(now)
    msh.msh_9 = MESSAGE_TYPE
    msh.msh_10 = escape(control_id)
    msh.msh_11 = endpoints.processing_id.value
    msh.msh_18 = CHARACTER_SET


def _pid(pid: Segment, facts: StudyFacts) -> None:
    pid.pid_1 = "1"
    pid.pid_3 = components(facts.patient_id, "", "", facts.issuer_of_patient_id, "MR")
    pid.pid_5 = person_name(facts.patient_name) or '""'
    if facts.birth_date:
        pid.pid_7 = escape(facts.birth_date)
    pid.pid_8 = SEX_CODES.get(facts.sex, "U")


def _obr(obr: Segment, facts: StudyFacts, now: datetime.datetime, status: str) -> None:
    obr.obr_1 = "1"
    obr.obr_2 = escape(facts.accession_number)
    obr.obr_3 = escape(facts.accession_number)
    obr.obr_4 = _coded(PLAIN_CHEST_XRAY.value, PLAIN_CHEST_XRAY.meaning,
                       PLAIN_CHEST_XRAY.scheme_designator)
    if facts.study_datetime:
        obr.obr_7 = escape(facts.study_datetime)
    obr.obr_22 = hl7_timestamp(now)
    obr.obr_24 = DIAGNOSTIC_SECTION_RADIOLOGY
    obr.obr_25 = status


def _obx(obx: Segment, index: int, kind: ValueType, sub_id: str, identifier: str, value: str,
         units: str, now: datetime.datetime, status: str) -> None:
    """One OBX; ``value`` is escaped ER7, repetitions (TX lines) separated by ``~``."""
    obx.obx_1 = str(index)
    obx.obx_2 = kind.value
    obx.obx_3 = identifier
    if sub_id:
        obx.obx_4 = sub_id
    for repetition in value.split("~"):
        obx.add_field("OBX_5").value = repetition
    if units:
        obx.obx_6 = units
    obx.obx_11 = status
    obx.obx_14 = hl7_timestamp(now)


def _coded(code: str, meaning: str, scheme: str) -> str:
    """CE/CWE identifier^text^coding system (escaped)."""
    return components(code, meaning, scheme)


Observation = tuple[ValueType, str, str, str, str]
"""(OBX-2 value type, OBX-4 sub-ID, OBX-3 identifier, OBX-5 value, OBX-6 units), escaped."""


def _observations(facts: StudyFacts, prediction: Prediction) -> Iterator[Observation]:
    impression = impression_code(prediction)
    yield (ValueType.CODED, "", _coded(IMPRESSION.value, IMPRESSION.meaning, "DCM"),
           _coded(impression.value, impression.meaning, impression.scheme_designator), "")
    for sub_id, score in enumerate((prediction.tb_vs_normal, prediction.pneumonia_vs_tb), 1):
        yield from _classifier_observations(str(sub_id), score)
    yield _study_uid_row(facts)
    yield _text_row(IMPRESSION_DESCRIPTION, impression_summary(prediction))
    yield _text_row(COMMENT, SR_DISCLAIMER)
    for note in prediction.notes:  # e.g. "patient age unknown: intended use ... not confirmed"
        yield _text_row(COMMENT, note)


def _study_uid_row(facts: StudyFacts) -> Observation:
    return (ValueType.STRING, "", _coded(*STUDY_INSTANCE_UID), escape(facts.study_uid), "")


def _text_row(name: Code, text: str) -> Observation:
    """A TX observation named by the DCM concept ``name``; ``text`` wrapped into lines."""
    return (ValueType.TEXT, "", _coded(name.value, name.meaning, "DCM"), text_lines(text), "")


def _classifier_observations(sub_id: str, score: ClassifierScore) -> Iterator[Observation]:
    finding = classifier_finding(score).code
    units = _coded(NO_UNITS.value, NO_UNITS.meaning, NO_UNITS.scheme_designator)
    yield (ValueType.CODED, sub_id, _coded(FINDING.value, FINDING.meaning, "DCM"),
           _coded(finding.value, finding.meaning, finding.scheme_designator), "")
    yield (ValueType.NUMERIC, sub_id, _coded(PROBABILITY.value, PROBABILITY.meaning, "DCM"),
           _number(score.score), units)
    yield (ValueType.NUMERIC, sub_id,
           _coded(THRESHOLD_VALUE.value, THRESHOLD_VALUE.meaning, "DCM"),
           _number(score.threshold), units)
    yield (ValueType.STRING, sub_id, _coded(*ALGORITHM_NAME), escape(score.model_name), "")
    yield (ValueType.STRING, sub_id, _coded(*ALGORITHM_VERSION), escape(score.model_version), "")


def text_lines(text: str, width: int = TEXT_LINE_WIDTH) -> str:
    """TX value: ``text`` wrapped into escaped lines sent as repetitions (``~``) of OBX-5.

    Escaped before wrapping (so control characters are gone and the width counts what is
    sent); a word longer than ``width`` is cut, but never inside an escape sequence
    (``\\F\\``): a line cut there hands the sequence's start to the next line."""
    lines: list[str] = []
    carry = ""
    for line in textwrap.wrap(escape(text), width):
        line = carry + line
        cut = line.rfind("\\") if line.count("\\") % 2 else len(line)
        lines.append(line[:cut])
        carry = line[cut:]
    if carry:
        lines.append(carry)
    return "~".join(line for line in lines if line) or '""'


def _number(value: float) -> str:
    """NM: decimal without exponent, 6 decimals at most (HL7 v2.5.1 2.A.47)."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
