"""Issue 20 defect 1: the SR, the heatmap SC and the ORU are built from whatever header the
image carries (absent, empty, multi-valued, malformed, non-ASCII), each validated."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message
from pydicom import dcmread
from pydicom.dataset import Dataset

from hl7_link.escaping import unescape
from hl7_link.oru import Hl7Endpoints, StudyFacts, build_oru, control_id_for
from inference.pixels import load_dicom
from results.evidence import ClassifiedImage
from results.headers import TYPE2_KEYWORDS, clean_header
from results.secondary_capture import build_heatmap_sc
from results.sr import build_sr
from tests.dicom_validation import dciodvfy
from tests.results_support import IDENTITY, prediction, source

NOW = datetime.datetime(2024, 1, 2, 12, 0, 5)
REAL_CHEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "chest"

Change = Callable[[Dataset], None]


def _delete(keyword: str) -> Change:
    return lambda ds: delattr(ds, keyword) if keyword in ds else None


def _set(keyword: str, value: object) -> Change:
    return lambda ds: setattr(ds, keyword, value)


def _charset(charset: str | list[str] | None, name: str) -> Change:
    def change(ds: Dataset) -> None:
        if charset is None:
            ds.pop("SpecificCharacterSet", None)
        else:
            ds.SpecificCharacterSet = charset
        ds.PatientName = name
    return change


HEADERS: dict[str, Change] = {
    **{f"absent {k}": _delete(k) for k in TYPE2_KEYWORDS},
    **{f"empty {k}": _set(k, "") for k in TYPE2_KEYWORDS},
    "two patient names": _set("PatientName", ["Doe^John", "Roe^Jane"]),
    "birth date 31.12.1971": _set("PatientBirthDate", "31.12.1971"),
    "birth date 19711331": _set("PatientBirthDate", "19711331"),
    "birth date 19590229 (no such day)": _set("PatientBirthDate", "19590229"),
    "study date 20230230 (no such day)": _set("StudyDate", "20230230"),
    "sex X": _set("PatientSex", "X"),
    "study time 25:00": _set("StudyTime", "25:00"),
    "accession too long": _set("AccessionNumber", "A" * 20),
    "latin-1 name, ISO_IR 100": _charset("ISO_IR 100", "Müller^Jürgen"),
    "UTF-8 name, ISO_IR 192": _charset("ISO_IR 192", "Łukasiewicz^Ďurko"),
    "Japanese name, ISO 2022 IR 87": _charset(["", "ISO 2022 IR 87"],
                                              "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    "patient age 81": _set("PatientAge", "81"),
}


def _received(change: Change, tmp_path: Path) -> Dataset:
    """A chest image with ``change`` applied, as the node reads it from its spool file."""
    ds = source(1)
    change(ds)
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return load_dicom(path)


def _no_charset_latin1(tmp_path: Path) -> Dataset:
    """A file whose name is Latin-1 bytes but which has no Specific Character Set."""
    ds = source(1)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = dcmread(path)
    del raw["SpecificCharacterSet"]
    raw.save_as(path, enforce_file_format=True)
    return load_dicom(path)


def _check_all(ds: Dataset, tmp_path: Path) -> tuple[Dataset, Message]:
    """Build SR, SC and ORU from ``ds``; each must validate. Returns the SR read back and the ORU."""
    image = ClassifiedImage(ds, prediction(0.9, 0.7, heatmap=True))
    sr = build_sr([image], image.prediction, IDENTITY, NOW)
    sc = build_heatmap_sc(image, IDENTITY, now=NOW, max_side=256)
    for name, obj in (("sr.dcm", sr), ("sc.dcm", sc)):
        obj.save_as(tmp_path / name, enforce_file_format=True)
        report = dciodvfy(tmp_path / name)
        assert report.errors == (), f"{name}: {report.output}"
    facts = StudyFacts.from_dataset(ds)
    text = build_oru(facts, image.prediction, Hl7Endpoints(), control_id_for("x"), NOW)
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.validate()
    return dcmread(tmp_path / "sr.dcm"), message


@pytest.mark.parametrize("case", list(HEADERS))
def test_results_build_and_validate_from_any_header(case: str, tmp_path: Path) -> None:
    _check_all(_received(HEADERS[case], tmp_path), tmp_path)


def test_two_patient_names_keep_the_first(tmp_path: Path) -> None:
    sr, message = _check_all(_received(HEADERS["two patient names"], tmp_path), tmp_path)
    assert str(sr.PatientName) == "Doe^John"
    pid = message.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_5.to_er7() == "Doe^John"


def test_malformed_birth_date_is_left_out_and_noted(tmp_path: Path) -> None:
    ds = _received(HEADERS["birth date 31.12.1971"], tmp_path)
    notes = clean_header(ds).notes
    assert notes == ("Patient's Birth Date: not a valid DA; left out",)
    assert all("1971" not in note for note in notes)  # names the attribute, never the value
    sr, message = _check_all(ds, tmp_path)
    assert sr.PatientBirthDate == ""
    assert message.oru_r01_patient_result.oru_r01_patient.pid.pid_7.to_er7() == ""


@pytest.mark.parametrize("case", ["latin-1 name, ISO_IR 100", "UTF-8 name, ISO_IR 192",
                                  "Japanese name, ISO 2022 IR 87"])
def test_non_ascii_names_reach_the_sr_and_oru_as_characters(case: str, tmp_path: Path) -> None:
    ds = _received(HEADERS[case], tmp_path)
    sr, message = _check_all(ds, tmp_path)
    assert str(sr.PatientName) == str(ds.PatientName)
    family = str(ds.PatientName).split("=")[0].split("^")[0]
    pid = message.oru_r01_patient_result.oru_r01_patient.pid
    assert unescape(pid.pid_5.pid_5_1.to_er7()) == family


def test_non_ascii_name_without_character_set_still_builds(tmp_path: Path) -> None:
    sr, message = _check_all(_no_charset_latin1(tmp_path), tmp_path)
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert message.oru_r01_patient_result.oru_r01_patient.pid.pid_5.to_er7()


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["cr-mono1-10bit-no-file-meta.dcm", "dx-implicit-vr-8bit.dcm"])
def test_real_samples_that_were_retried_forever_now_build(name: str, tmp_path: Path) -> None:
    path = REAL_CHEST / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the real data of /work/shared/data/README.md)")
    ds = load_dicom(path)
    sr, message = _check_all(ds, tmp_path)
    assert sr.StudyInstanceUID == ds.StudyInstanceUID
    assert sr.PatientID == str(ds.get("PatientID", ""))
