"""The exact forms the conversions read and the exact text the stored value hashes are taken of.

Links keep value hashes between runs, so the hashed text is pinned byte for byte: a change in it would make
every stored base look changed and re-send every field. The date forms pin what a date or date-time reads as,
including the zone designators Dataverse and XML-schema dates carry.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from sync_core.domain.convert import ConversionError, canonical, hasher, to_dataverse, to_spotler, value_hash
from sync_core.domain.mapping import FieldMapping

KEY = b"value-forms-key-0123456789abcdef"

DATE = FieldMapping(dataverse="new_day", spotler="day", type="date")
DATETIME = FieldMapping(dataverse="new_seen", spotler="seen", type="datetime")
EMAIL = FieldMapping(dataverse="emailaddress1", spotler="email", type="email")
FLAG = FieldMapping(dataverse="new_flag", spotler="flags", type="boolean", bit=3)
TOPICS = FieldMapping(dataverse="new_topics", spotler="topics", type="multichoice", bits={100: 1, 200: 2})


def _digest(text: str) -> str:
    return hmac.new(KEY, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-17, "-17"),
        (2.5, "2.5"),
        ("", '""'),
        ("Zoë", '"Zoë"'),
        ('say "hi"\n', '"say \\"hi\\"\\n"'),
        ([[1, True], [2, False]], "[[1,true],[2,false]]"),
        ({"b": 1, "a": ["é", None]}, '{"a":["é",null],"b":1}'),
    ],
    ids=["none", "true", "false", "zero", "negative", "float", "empty", "non-ascii", "escapes", "bits", "object"],
)
def test_a_value_hash_is_the_keyed_sha256_of_the_compact_json_text(value: Any, text: str) -> None:
    assert value_hash(KEY, value) == _digest(text)
    assert hasher(KEY)(value) == _digest(text)


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
