"""The patient's age, read from the DICOM header, for the intended-use gate.

The shipped classifiers are meant for adults: WHO's consolidated guidelines on
tuberculosis, Module 2: Screening (2021) recommend computer-aided detection
for people aged 15 years and over, and the training data holds no healthy
children and no children with TB (see the model cards). The quality gate
(:mod:`inference.quality`) skips an image of a younger patient and notes when
the age is unknown.

The age comes from, in order:

1. Patient's Age (0010,1010), VR AS (PS3.5 6.2): ``nnnD``, ``nnnW``, ``nnnM``
   or ``nnnY``, three digits and a unit;
2. else (also when Patient's Age is malformed) Patient's Birth Date
   (0010,0030, DA ``YYYYMMDD``) and the first of Study Date (0008,0020),
   Acquisition Date (0008,0022) or Content Date (0008,0023) that is a valid date.

Whatever cannot be read (absent, empty, malformed, a birth date after the
study date) gives ``None``: unknown, never an exception.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

DEFAULT_MIN_AGE_YEARS: Final = 15
"""WHO consolidated guidelines on TB, Module 2: Screening (2021): CAD for people aged 15 and over."""

DAYS_PER_YEAR: Final = 365.25
DAYS_PER_MONTH: Final = DAYS_PER_YEAR / 12
AGE_STRING: Final = re.compile(r"^(\d{3})([DWMY])$")
"""Patient's Age, VR AS (PS3.5 Table 6.2-1): three digits and D, W, M or Y."""

UNIT_DAYS: Final = {"D": 1.0, "W": 7.0, "M": DAYS_PER_MONTH, "Y": DAYS_PER_YEAR}
REFERENCE_DATES: Final = ("StudyDate", "AcquisitionDate", "ContentDate")


@dataclass(frozen=True)
class PatientAge:
    """An age as the gate compares it (``years``) and as a person reads it (``words``)."""

    years: float  # whole years completed for a birth date; the AS value in years otherwise
    days: float  # the same age in days, for infants
    unit: str = "Y"  # the AS unit it was given in (Y for a birth date)

    def words(self) -> str:
        """'6 years', '18 months', '10 weeks', '5 days': the largest unit that reads sensibly."""
        if self.years >= 2:
            return _count(int(self.years), "year")
        if self.unit in ("Y", "M") and self.days >= 2 * DAYS_PER_MONTH - 1:
            return _count(int(self.days / DAYS_PER_MONTH + 1e-6), "month")
        if self.days >= 14:
            return _count(int(self.days // 7), "week")
        return _count(int(self.days), "day")


def stated_age(years: float) -> PatientAge:
    """An age a person typed in years (an upload's ``age_years``)."""
    return PatientAge(years, years * DAYS_PER_YEAR)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def parse_age_string(value: str) -> PatientAge | None:
    """An AS value (``034Y``, ``018M``, ``010W``, ``005D``) as an age; ``None`` if malformed."""
    match = AGE_STRING.match(value.strip().upper())
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2)
    days = number * UNIT_DAYS[unit]
    return PatientAge(days / DAYS_PER_YEAR if unit != "Y" else float(number), days, unit)


def parse_date(value: str) -> datetime.date | None:
    """A DA value ``YYYYMMDD`` as a date; ``None`` when it is not one (``31.12.1971``, ``20230230``)."""
    text = value.strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def age_between(birth: datetime.date, on: datetime.date) -> PatientAge | None:
    """Age on ``on`` of someone born on ``birth``: whole years completed (a birthday not yet
    reached this year does not count; someone born on 29 February has their birthday on
    1 March in common years), in days; ``None`` when ``birth`` is after ``on``."""
    if birth > on:
        return None
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return PatientAge(float(years), float((on - birth).days))


def patient_age(ds: Dataset) -> PatientAge | None:
    """The age from Patient's Age, else from the birth date and a study date; ``None`` if unknown.

    Never raises: a value pydicom cannot parse counts as absent.
    """
    try:
        stated = parse_age_string(_text(ds, "PatientAge"))
        if stated is not None:
            return stated
        birth = parse_date(_text(ds, "PatientBirthDate"))
        if birth is None:
            return None
        for keyword in REFERENCE_DATES:
            on = parse_date(_text(ds, keyword))
            if on is not None:
                return age_between(birth, on)
    except Exception as err:  # pydicom raises on values it cannot convert; the age is then unknown
        log.info("patient age unreadable: %s", type(err).__name__)  # no value: it is patient data
    return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def below_minimum_reason(age: PatientAge, min_age_years: float) -> str:
    """The skip reason for a patient younger than ``inference.min_patient_age_years``."""
    return (f"outside intended use: patient aged {age.words()} "
            f"(inference.min_patient_age_years = {_number(min_age_years)})")


def unknown_age_note(min_age_years: float) -> str:
    """The note the SR, the ORU and the console carry when the age is unknown."""
    return (f"patient age unknown: intended use ({_number(min_age_years)} years and over) "
            "not confirmed")


def _number(value: float) -> str:
    return f"{value:g}"
