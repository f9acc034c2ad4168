"""The intended-use age gate: every Patient's Age form, birth-date arithmetic, unknown and malformed ages."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from inference.age import age_between, parse_age_string, parse_date, patient_age
from inference.quality import GateCode, check_quality
from tests.dicom_factory import make_chest

SMALL: dict[str, Any] = {"rows": 300, "columns": 280}
UNKNOWN_NOTE = "patient age unknown: intended use (15 years and over) not confirmed"


def _chest(**tags: object) -> Dataset:
    ds = make_chest(**SMALL)
    for keyword in ("PatientAge", "PatientBirthDate"):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("value, years, words", [
    ("034Y", 34, "34 years"), ("015Y", 15, "15 years"), ("014Y", 14, "14 years"),
    ("006Y", 6, "6 years"), ("001Y", 1, "12 months"), ("018M", 1.5, "18 months"),
    ("180M", 15, "15 years"), ("179M", 14.92, "14 years"), ("010W", 10 * 7 / 365.25, "10 weeks"),
    ("005D", 5 / 365.25, "5 days"), ("000D", 0, "0 days"), ("052W", 52 * 7 / 365.25, "52 weeks"),
])
def test_every_age_string_form(value: str, years: float, words: str) -> None:
    age = parse_age_string(value)
    assert age is not None
    assert age.years == pytest.approx(years, abs=0.01)
    assert age.words() == words


@pytest.mark.parametrize("value", ["", "34Y", "034", "0034Y", "034A", "abcY", "-34Y",
                                   "3.4Y", "034YY", "Y034", "6 years"])
def test_malformed_age_strings_are_unknown(value: str) -> None:
    assert parse_age_string(value) is None


def test_birth_date_arithmetic_leap_day_and_birthday_not_yet_reached() -> None:
    d = datetime.date
    assert age_between(d(2008, 2, 29), d(2023, 2, 28)).years == 14  # type: ignore[union-attr]
    assert age_between(d(2008, 2, 29), d(2023, 3, 1)).years == 15  # type: ignore[union-attr]
    assert age_between(d(2008, 2, 29), d(2024, 2, 29)).years == 16  # type: ignore[union-attr]
    assert age_between(d(2009, 6, 15), d(2024, 6, 14)).years == 14  # type: ignore[union-attr]
    assert age_between(d(2009, 6, 15), d(2024, 6, 15)).years == 15  # type: ignore[union-attr]
    assert age_between(d(2024, 1, 1), d(2024, 1, 6)).words() == "5 days"  # type: ignore[union-attr]
    assert age_between(d(2023, 1, 1), d(2024, 1, 2)).words() == "12 months"  # type: ignore[union-attr]
    assert age_between(d(2024, 6, 2), d(2024, 6, 1)) is None  # born after the study


@pytest.mark.parametrize("value", ["31.12.1971", "19711232", "20230229", "1971-12-31", "", "1971"])
def test_malformed_dates(value: str) -> None:
    assert parse_date(value) is None


def test_age_string_wins_and_birth_date_with_study_acquisition_or_content_date() -> None:
    assert patient_age(_chest(PatientAge="040Y", PatientBirthDate="20200101")).years == 40  # type: ignore[union-attr]
    ds = _chest(PatientBirthDate="20100301")
    ds.StudyDate = "20240229"
    assert patient_age(ds).years == 13  # type: ignore[union-attr]
    del ds.StudyDate
    ds.AcquisitionDate = "20250301"
    assert patient_age(ds).years == 15  # type: ignore[union-attr]
    del ds.AcquisitionDate
    ds.ContentDate = "20120301"
    assert patient_age(ds).years == 2  # type: ignore[union-attr]
    del ds.ContentDate
    assert patient_age(ds) is None  # no date to measure it against


def test_a_malformed_age_string_falls_back_to_the_birth_date() -> None:
    ds = _chest(PatientAge="6 years", PatientBirthDate="20180101")
    ds.StudyDate = "20240102"
    assert patient_age(ds).years == 6  # type: ignore[union-attr]


@pytest.mark.parametrize("value, words", [("006Y", "6 years"), ("018M", "18 months"),
                                          ("010W", "10 weeks"), ("005D", "5 days"),
                                          ("014Y", "14 years")])
def test_children_are_skipped_with_the_reason(value: str, words: str) -> None:
    verdict = check_quality(_chest(PatientAge=value))
    assert not verdict.ok and verdict.code is GateCode.AGE
    assert verdict.why == (f"outside intended use: patient aged {words} "
                           "(inference.min_patient_age_years = 15)")


def test_a_child_by_birth_date_is_skipped() -> None:
    ds = _chest(PatientBirthDate="20180301")
    ds.StudyDate = "20240229"
    verdict = check_quality(ds)
    assert verdict.code is GateCode.AGE and "patient aged 5 years" in verdict.reason


def test_adults_are_accepted_without_a_note() -> None:
    for ds in (_chest(PatientAge="015Y"), _chest(PatientAge="034Y"), make_chest(**SMALL)):
        verdict = check_quality(ds)
        assert verdict.ok and verdict.notes == ()


@pytest.mark.parametrize("tags", [
    {}, {"PatientAge": ""}, {"PatientAge": "adult"}, {"PatientBirthDate": "31.12.1971"},
    {"PatientBirthDate": "20990101"}, {"PatientBirthDate": ""}, {"PatientAge": "034"},
], ids=["absent", "empty", "malformed-as", "foreign-date", "born-after-study", "empty-date",
        "no-unit"])
def test_unknown_age_is_classified_with_the_note(tags: dict[str, str]) -> None:
    verdict = check_quality(_chest(**tags))
    assert verdict.ok and verdict.notes == (UNKNOWN_NOTE,)


def test_undecodable_age_bytes_never_raise() -> None:
    ds = _chest()
    ds[Tag(0x00101010)] = RawDataElement(Tag(0x00101010), "AS", 4, b"\xff\xfe\x00\x01", 0,
                                         True, True)
    ds[Tag(0x00100030)] = RawDataElement(Tag(0x00100030), "DA", 4, b"\xc3\x28\xa0\xa1", 0,
                                         True, True)
    verdict = check_quality(ds)
    assert verdict.ok and verdict.notes == (UNKNOWN_NOTE,)


def test_the_setting_moves_the_limit_and_zero_turns_it_off() -> None:
    child = _chest(PatientAge="010Y")
    assert check_quality(child, min_age_years=0).ok
    assert check_quality(_chest(), min_age_years=0).notes == ()
    assert check_quality(child, min_age_years=8).ok
    verdict = check_quality(_chest(PatientAge="017Y"), min_age_years=18)
    assert verdict.why.endswith("(inference.min_patient_age_years = 18)")
    assert check_quality(_chest(), min_age_years=18).notes == (
        "patient age unknown: intended use (18 years and over) not confirmed",)


def test_the_age_skip_has_its_metric_label() -> None:
    from web.metrics import reason_code

    verdict = check_quality(_chest(PatientAge="006Y"))
    assert reason_code(verdict.reason) == GateCode.AGE.value == "age"
