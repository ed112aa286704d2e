"""The exact forms the conversions read: dates and times with a zone designator, addresses, unset bits.

A date or date-time reads with the upper-case "Z" Dataverse writes, also after a bare date (the XML-schema
form); what does not read is compared as text (`canonical` never raises).
"""

from __future__ import annotations

import pytest

from sync_core.domain.convert import ConversionError, canonical, to_dataverse, to_spotler
from sync_core.domain.mapping import FieldMapping

DATE = FieldMapping(dataverse="new_day", spotler="day", type="date")
DATETIME = FieldMapping(dataverse="new_seen", spotler="seen", type="datetime")
EMAIL = FieldMapping(dataverse="emailaddress1", spotler="email", type="email")
FLAG = FieldMapping(dataverse="new_flag", spotler="flags", type="boolean", bit=3)
TOPICS = FieldMapping(dataverse="new_topics", spotler="topics", type="multichoice", bits={100: 1, 200: 2})


@pytest.mark.parametrize(
    ("field", "value", "form"),
    [
        (DATE, "2025-06-01Z", "2025-06-01"),  # an XML-schema date with its zone designator
        (DATE, "2025-06-01T23:30:00Z", "2025-06-01"),
        (DATETIME, "2025-06-01Z", "2025-06-01T00:00:00Z"),
        (DATETIME, "2025-06-01T10:00:00Z", "2025-06-01T10:00:00Z"),
        (DATETIME, "2025-06-01T12:00:00+02:00", "2025-06-01T10:00:00Z"),
    ],
)
def test_dates_and_times_with_a_zone_designator_are_read(field: FieldMapping, value: str, form: str) -> None:
    assert to_spotler(field, value) == form
    assert to_dataverse(field, value) == form
    assert canonical(field, value) == form


@pytest.mark.parametrize(
    ("field", "value"), [(DATE, "2025-06-01T10:00:00z"), (DATETIME, "2025-06-01T10:00:00z")], ids=["date", "datetime"]
)
def test_a_lower_case_zone_designator_is_not_read_and_compares_as_text(field: FieldMapping, value: str) -> None:
    # What Python's ISO reader takes: only the upper-case "Z" that Dataverse and Spotler write.
    assert canonical(field, value) == value
    with pytest.raises(ConversionError):
        to_spotler(field, value)


def test_an_email_address_goes_to_spotler_as_written_but_stripped() -> None:
    assert to_spotler(EMAIL, "  Ada.Lovelace@Example.com ") == "Ada.Lovelace@Example.com"
    assert canonical(EMAIL, "  Ada.Lovelace@Example.com ") == "ada.lovelace@example.com"


def test_a_set_bit_spotler_does_not_carry_reads_as_off() -> None:
    assert to_dataverse(FLAG, {1: True}) is False
    assert to_dataverse(FLAG, {3: True}) is True
    assert canonical(FLAG, {1: True}) == [[3, False]]
    assert canonical(FLAG, {3: True}) == [[3, True]]
    assert canonical(TOPICS, {1: True}) == [[1, True], [2, False]]
