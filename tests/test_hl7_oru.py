"""ORU^R01 building, escaping and ACK parsing (pure; no network)."""

from __future__ import annotations

import datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset

from hl7_link.ack import AckCode, parse_ack
from hl7_link.errors import AckError, OruBuildError
from hl7_link.escaping import escape, unescape
from hl7_link.oru import (
    Hl7Endpoints,
    ProcessingId,
    StudyFacts,
    build_oru,
    control_id_for,
    person_name,
    text_lines,
)
from results.codes import SR_DISCLAIMER
from tests.results_support import STUDY_UID, prediction, source

NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
ENDPOINTS = Hl7Endpoints("CXRGATEWAY", "RADIOLOGY", "RIS", "ST^MARY")
CONTROL_ID = control_id_for(STUDY_UID, "1")


def _facts(**changes: str) -> StudyFacts:
    ds: Dataset = source(1)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return StudyFacts.from_dataset(ds)


def _parse(text: str) -> Message:
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    return message


def _obx_rows(message: Message) -> list[list[str]]:
    """[OBX-2, OBX-3, OBX-4, OBX-5, OBX-6, OBX-11] of every OBX, as ER7."""
    order = message.oru_r01_patient_result.oru_r01_order_observation
    rows = []
    for observation in order.oru_r01_observation:
        obx = observation.obx
        rows.append([obx.obx_2.to_er7(), obx.obx_3.to_er7(), obx.obx_4.to_er7(),
                     "~".join(f.to_er7() for f in obx.obx_5), obx.obx_6.to_er7(),
                     obx.obx_11.to_er7()])
    return rows


@pytest.mark.parametrize("text", [
    "plain", "a|b", "a^b", "a&b", "a~b", "a\\b", "\\F\\ literally", "|^~\\&",
    "O'Brien-Łukasiewicz", "\\H\\x\\E",
])
def test_escape_round_trips(text: str) -> None:
    escaped = escape(text)
    assert not set("|^~&") & set(escaped)
    assert unescape(escaped) == text


def test_escape_sequences_follow_the_standard() -> None:
    assert escape("A|B^C&D~E\\F") == "A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F"
    assert escape("line one\r\nline two") == "line one line two"
    assert unescape("\\X41\\") == "A"


def test_oru_validates_and_has_the_segments_in_order() -> None:
    text = build_oru(_facts(), prediction(0.9, 0.1), ENDPOINTS, CONTROL_ID, NOW)
    assert text.split("\r")[0].startswith("MSH|^~\\&|")
    assert [segment[:3] for segment in text.split("\r")][:3] == ["MSH", "PID", "OBR"]
    message = _parse(text)
    msh = message.msh
    assert [msh.msh_3.to_er7(), msh.msh_4.to_er7(), msh.msh_5.to_er7(), msh.msh_6.to_er7()] == [
        "CXRGATEWAY", "RADIOLOGY", "RIS", "ST\\S\\MARY"]
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msh.msh_10.to_er7() == CONTROL_ID and len(CONTROL_ID) == 20
    assert (msh.msh_11.to_er7(), msh.msh_12.to_er7()) == ("P", "2.5.1")
    assert msh.msh_7.to_er7() == "20240102120005"
    assert msh.msh_18.to_er7() == "UNICODE UTF-8"


def test_pid_comes_from_the_dicom_patient() -> None:
    message = _parse(build_oru(_facts(), prediction(0.9, 0.1), ENDPOINTS, CONTROL_ID, NOW))
    pid = message.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.to_er7() == "CXR-0001^^^^MR"
    assert unescape(pid.pid_5.pid_5_1.to_er7()) == "Müller-Łukasiewicz"
    assert pid.pid_5.pid_5_2.to_er7() == "Zoë Ángela"
    assert pid.pid_5.pid_5_5.to_er7() == "Dr."  # DICOM prefix is the 5th XPN component
    assert (pid.pid_7.to_er7(), pid.pid_8.to_er7()) == ("19700101", "F")


def test_obr_carries_accession_procedure_times_and_preliminary_status() -> None:
    message = _parse(build_oru(_facts(), prediction(0.9, 0.1), ENDPOINTS, CONTROL_ID, NOW))
    obr = message.oru_r01_patient_result.oru_r01_order_observation.obr
    assert obr.obr_2.to_er7() == obr.obr_3.to_er7() == "ACC-0001"
    assert obr.obr_4.to_er7() == "399208008^Plain chest X-ray^SCT"
    assert obr.obr_7.to_er7() == "20240102101500"
    assert obr.obr_22.to_er7() == "20240102120005"
    assert obr.obr_25.to_er7() == "P"


def test_obx_rows_report_each_classifier_and_the_impression() -> None:
    message = _parse(build_oru(_facts(), prediction(0.873215, 0.9), ENDPOINTS, CONTROL_ID, NOW))
    rows = _obx_rows(message)
    assert rows[0][:4] == ["CWE", "121073^Impression^DCM", "", "56717001^Tuberculosis^SCT"]
    tb = [r for r in rows if r[2] == "1"]
    assert [r[0] for r in tb] == ["CWE", "NM", "NM", "ST", "ST"]
    assert tb[0][3] == "56717001^Tuberculosis^SCT"  # TB vs normal above its threshold
    assert tb[1][1:5] == ["122157^Probability^DCM", "1", "0.873215", "1^no units^UCUM"]
    assert tb[2][1:5] == ["122411^Threshold Value^DCM", "1", "0.42", "1^no units^UCUM"]
    assert [tb[3][3], tb[4][3]] == ["cxr-tb-vs-normal", "1.2.0"]
    pn = [r for r in rows if r[2] == "2"]
    assert pn[0][3] == "233604007^Pneumonia^SCT" and pn[1][3] == "0.9"
    assert pn[3][3] == "cxr-pneumonia-vs-tb"
    uid_row = next(r for r in rows if r[1].startswith("110180^"))
    assert uid_row[0] == "ST" and uid_row[3] == STUDY_UID
    assert all(r[5] == "P" for r in rows)


def test_disclaimer_and_rule_are_sent_as_text_lines() -> None:
    rows = _obx_rows(_parse(build_oru(_facts(), prediction(0.1, 0.1), ENDPOINTS, CONTROL_ID, NOW)))
    comment = next(r for r in rows if r[1].startswith("121106^"))
    assert comment[0] == "TX"
    assert " ".join(unescape(line) for line in comment[3].split("~")) == SR_DISCLAIMER
    summary = next(r for r in rows if r[1].startswith("111033^"))
    assert "No TB finding" in unescape(summary[3])
    assert all(len(line) <= 199 for line in text_lines("word " * 200).split("~"))


def test_special_characters_in_names_and_ids_are_escaped() -> None:
    facts = _facts(PatientName="O|Brien&Co^Ann~Marie^B&C^Dr^Jr", PatientID="ID^7|x",
                   AccessionNumber="A&B~C")
    endpoints = Hl7Endpoints("CXR|GW", "H&H", "R~IS", "F\\AC")
    text = build_oru(facts, prediction(0.9, 0.1), endpoints, CONTROL_ID, NOW)
    message = _parse(text)
    pid = message.oru_r01_patient_result.oru_r01_patient.pid
    assert unescape(pid.pid_5.pid_5_1.to_er7()) == "O|Brien&Co"
    assert unescape(pid.pid_5.pid_5_2.to_er7()) == "Ann~Marie"
    assert unescape(pid.pid_5.pid_5_3.to_er7()) == "B&C"  # a backslash would split the PN
    assert (pid.pid_5.pid_5_4.to_er7(), pid.pid_5.pid_5_5.to_er7()) == ("Jr", "Dr")
    assert unescape(pid.pid_3.pid_3_1.to_er7()) == "ID^7|x"
    obr = message.oru_r01_patient_result.oru_r01_order_observation.obr
    assert unescape(obr.obr_2.to_er7()) == "A&B~C"
    assert [unescape(message.msh.msh_3.to_er7()), unescape(message.msh.msh_6.to_er7())] == [
        "CXR|GW", "F\\AC"]
    assert len(text.split("\r")) == 3 + len(_obx_rows(message))  # no segment was split


def test_person_name_maps_dicom_order_to_xpn() -> None:
    assert person_name("Doe^John^Q^Mr^III") == "Doe^John^Q^III^Mr"
    assert person_name("Yamada^Tarou=山田^太郎") == "Yamada^Tarou"
    assert person_name("") == ""


def test_missing_patient_data_still_validates() -> None:
    facts = StudyFacts("", "", "", "", "", "", STUDY_UID, "")
    message = _parse(build_oru(facts, prediction(0.9, 0.1), ENDPOINTS, CONTROL_ID, NOW))
    assert message.oru_r01_patient_result.oru_r01_patient.pid.pid_8.to_er7() == "U"


def test_bad_control_id_and_oversized_fields_are_refused() -> None:
    with pytest.raises(OruBuildError, match="control_id"):
        build_oru(_facts(), prediction(0.9, 0.1), ENDPOINTS, "X" * 21, NOW)
    with pytest.raises(OruBuildError, match="does not validate"):
        build_oru(_facts(), prediction(0.9, 0.1), Hl7Endpoints("A" * 300), CONTROL_ID, NOW)


def test_control_id_is_stable_and_processing_id_configurable() -> None:
    assert control_id_for("a", "b") == control_id_for("a", "b") != control_id_for("a", "c")
    text = build_oru(_facts(), prediction(0.9, 0.1),
                     Hl7Endpoints(processing_id=ProcessingId.TRAINING), CONTROL_ID, NOW)
    assert _parse(text).msh.msh_11.to_er7() == "T"


def test_ack_codes_are_parsed_and_checked_against_the_control_id() -> None:
    ack = "MSH|^~\\&|RIS|H|GW|H|20240102||ACK^R01^ACK|9|P|2.5.1\rMSA|AE|ABC|bad \\T\\ data\r"
    parsed = parse_ack(ack, "ABC")
    assert parsed.code is AckCode.APPLICATION_ERROR and not parsed.accepted
    assert parsed.text == "bad & data"
    assert parse_ack(ack.replace("|AE|", "|CA|")).accepted
    assert parse_ack("MSH|^~\\&|R|H|G|H|2024||ACK|1|P|2.3\rMSA|AA|X").code is AckCode("AA")
    with pytest.raises(AckError, match="acknowledges another"):
        parse_ack(ack, "OTHER")
    with pytest.raises(AckError, match="table 0008"):
        parse_ack(ack.replace("|AE|", "|ZZ|"))
    with pytest.raises(AckError, match="MSA"):
        parse_ack("not hl7 at all")
