"""Issue 20 defect 7: every HL7 delimiter and control character in every text field of the ORU.

Control characters are removed (line breaks and tabs become spaces) and the
delimiters ``| ^ ~ \\ &`` are escaped (HL7 v2.5.1 2.7), so the message always
frames (no 0x0B / 0x1C inside), keeps its segments, parses with hl7apy STRICT
and gives the text back. The end-to-end case through the MLLP listener is in
``tests/test_report_outcomes_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset

from hl7_link.escaping import unescape
from hl7_link.oru import (
    TEXT_LINE_WIDTH,
    Hl7Endpoints,
    StudyFacts,
    build_not_analysed_oru,
    build_oru,
    text_lines,
)
from results.headers import clean_header
from tests.results_support import STUDY_UID, prediction, source

NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
CONTROL_ID = "CTRL0001"
DELIMITERS = ["|", "^", "~", "\\", "&"]
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85"]
FACTS = StudyFacts("PID-1", "HOSP", "Doe^John", "19700101", "M", "ACC-1", STUDY_UID,
                   "20240102120000")
ENDPOINTS = Hl7Endpoints("CXRGATEWAY", "RADIOLOGY", "RIS", "HOSP")

Reader = Callable[[Message], str]


def _pid(message: Message) -> object:
    return message.oru_r01_patient_result.oru_r01_patient.pid


def _obx5(message: Message) -> str:
    first = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation[0]
    return "".join(f.to_er7() for f in first.obx.obx_5)


FIELDS: dict[str, tuple[Callable[[str], tuple[StudyFacts, Hl7Endpoints, str]], Reader]] = {
    "PID-3 patient ID": (lambda v: (dataclasses.replace(FACTS, patient_id=v), ENDPOINTS, ""),
                         lambda m: _pid(m).pid_3.pid_3_1.to_er7()),  # type: ignore[attr-defined]
    "PID-3 issuer": (lambda v: (dataclasses.replace(FACTS, issuer_of_patient_id=v), ENDPOINTS, ""),
                     lambda m: _pid(m).pid_3.pid_3_4.to_er7()),  # type: ignore[attr-defined]
    "PID-5 family name": (
        lambda v: (dataclasses.replace(FACTS, patient_name=v.replace("^", "") + "^John"),
                   ENDPOINTS, ""),
        lambda m: _pid(m).pid_5.pid_5_1.to_er7()),  # type: ignore[attr-defined]
    "PID-5 given name": (
        lambda v: (dataclasses.replace(FACTS, patient_name="Doe^" + v.replace("^", "")),
                   ENDPOINTS, ""),
        lambda m: _pid(m).pid_5.pid_5_2.to_er7()),  # type: ignore[attr-defined]
    "OBR-2 accession": (lambda v: (dataclasses.replace(FACTS, accession_number=v), ENDPOINTS, ""),
                        lambda m: m.oru_r01_patient_result.oru_r01_order_observation.obr.obr_2
                        .to_er7()),
    "MSH-3 sending application": (
        lambda v: (FACTS, dataclasses.replace(ENDPOINTS, sending_application=v), ""),
        lambda m: m.msh.msh_3.to_er7()),
    "MSH-6 receiving facility": (
        lambda v: (FACTS, dataclasses.replace(ENDPOINTS, receiving_facility=v), ""),
        lambda m: m.msh.msh_6.to_er7()),
    "OBX-5 not-analysed reason": (lambda v: (FACTS, ENDPOINTS, f"not analysed: {v}"), _obx5),
}


def _expected(value: str) -> str:
    """What the receiver reads back: line breaks and tabs as spaces, other controls gone."""
    value = value.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return "".join(c for c in value if not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F))


def _build(facts: StudyFacts, endpoints: Hl7Endpoints, not_analysed: str) -> str:
    if not_analysed:
        return build_not_analysed_oru(facts, not_analysed, endpoints, CONTROL_ID, NOW)
    return build_oru(facts, prediction(0.9, 0.1), endpoints, CONTROL_ID, NOW)


@pytest.mark.parametrize("char", DELIMITERS + CONTROLS, ids=lambda c: f"0x{ord(c):02X}")
@pytest.mark.parametrize("field", list(FIELDS))
def test_every_delimiter_and_control_character_in_every_text_field(field: str, char: str) -> None:
    make, read = FIELDS[field]
    value = f"A{char}B"
    if field.startswith("PID-5") and char == "^":
        value = "AB"  # a caret in a DICOM name is its component separator, never data
    text = _build(*make(value))
    assert not {"\x0b", "\x1c"} & set(text), "an MLLP frame byte inside the message"
    assert all(c == "\r" or not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in text)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    assert len(text.rstrip("\r").split("\r")) == 3 + len(
        message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation)
    got = read(message)
    expected = _expected(value)
    assert unescape(got) == expected or (field.startswith("OBX-5") and expected in unescape(got))


@pytest.mark.parametrize("char", ["\x1c", "\x0b", "\r", "\n", "\x00", "\x1b"],
                         ids=lambda c: f"0x{ord(c):02X}")
def test_control_characters_in_dicom_names_reach_neither_sr_header_nor_oru(char: str) -> None:
    ds: Dataset = source(1)
    ds.PatientName = f"Doe{char}x^John"
    ds.PatientID = f"ID{char}7"
    header = clean_header(ds)
    expected_name = "Doex^John" if char != "\x1b" else f"Doe{char}x^John"
    assert str(header.dataset.PatientName) == expected_name
    facts = StudyFacts.from_dataset(ds)
    text = build_oru(facts, prediction(0.9, 0.1), ENDPOINTS, CONTROL_ID, NOW)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert _pid(message).pid_5.pid_5_1.to_er7() == "Doex"  # type: ignore[attr-defined]
    assert _pid(message).pid_3.pid_3_1.to_er7() == "ID7"  # type: ignore[attr-defined]


@pytest.mark.parametrize("char", DELIMITERS, ids=lambda c: f"0x{ord(c):02X}")
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_a_long_word_is_never_cut_inside_an_escape_sequence(char: str, offset: int) -> None:
    text = "a" * (TEXT_LINE_WIDTH - 2 + offset) + char * 3 + "b" * 150
    lines = text_lines(text).split("~")
    assert all(line.count("\\") % 2 == 0 and len(line) < 199 for line in lines)
    assert "".join(unescape(line) for line in lines) == text
