"""Value conversion both ways, blanks, canonical forms, and errors that name the column but never the value."""

from __future__ import annotations

from typing import Any

import pytest

from sync_core.domain.convert import ConversionError, canonical, is_blank, to_dataverse, to_spotler, value_hash
from sync_core.domain.mapping import FieldMapping
from sync_core.domain.records import AttrValue, PropValue

KEY = b"k" * 32


def fm(**kw: Any) -> FieldMapping:
    kw.setdefault("dataverse", "new_col")
    kw.setdefault("spotler", "prop")
    return FieldMapping(**kw)


STRING = fm(type="string")
EMAIL = fm(dataverse="emailaddress1", spotler="email", type="email")
DATE = fm(type="date")
BIRTHDATE = fm(dataverse="birthdate", spotler="birthday", type="birthdate")
DATETIME = fm(type="datetime")
INT = fm(type="int")
MONEY = fm(type="money")
BOOLEAN = fm(type="boolean", spotler="flags", bit=3)
CHOICE_STR = fm(type="choice", choices={1: "Male", 2: "Female"})
CHOICE_SET = fm(type="choice", spotler="segment", bits={10: 1, 20: 2})
MULTI = fm(type="multichoice", spotler="topics", bits={100: 1, 200: 2, 300: 5})


# --- blanks ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", [], {}])
def test_blank_values(value: object) -> None:
    assert is_blank(value)


@pytest.mark.parametrize("value", [0, False, 0.0, "x", [1], {1: False}])
def test_non_blank_values(value: object) -> None:
    assert not is_blank(value)


@pytest.mark.parametrize("field", [STRING, EMAIL, DATE, BIRTHDATE, DATETIME, INT, MONEY, CHOICE_STR])
@pytest.mark.parametrize("blank", [None, "", "  "])
def test_blank_converts_to_none_both_ways(field: FieldMapping, blank: str | None) -> None:
    assert to_spotler(field, blank) is None
    assert to_dataverse(field, blank) is None
    assert canonical(field, blank) is None


# --- every type, both ways ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "dataverse", "spotler"),
    [
        (STRING, "  Ada ", "Ada"),
        (EMAIL, " Ada@Example.com ", "Ada@Example.com"),
        (DATE, "2024-02-29", "2024-02-29"),
        (BIRTHDATE, "1990-05-17", "1990-05-17"),
        (DATETIME, "2024-03-01T10:20:30Z", "2024-03-01T10:20:30Z"),
        (INT, 42, 42),
        (MONEY, 12.5, 12.5),
        (BOOLEAN, True, {3: True}),
        (BOOLEAN, False, {3: False}),
        (CHOICE_STR, 2, "Female"),
        (CHOICE_SET, 20, {1: False, 2: True}),
        (MULTI, [100, 300], {1: True, 2: False, 5: True}),
        (MULTI, [], {1: False, 2: False, 5: False}),
    ],
)
def test_round_trip(field: FieldMapping, dataverse: AttrValue, spotler: PropValue) -> None:
    assert to_spotler(field, dataverse) == spotler
    back = to_dataverse(field, spotler)
    expected = dataverse.strip() if isinstance(dataverse, str) else dataverse
    assert back == expected


def test_string_from_a_number_is_text() -> None:
    assert to_spotler(STRING, 1234) == "1234"
    assert to_dataverse(STRING, 1234) == "1234"


def test_date_from_an_iso_datetime_is_the_date() -> None:
    assert to_spotler(BIRTHDATE, "1990-05-17T00:00:00Z") == "1990-05-17"
    assert to_dataverse(BIRTHDATE, "1990-05-17T00:00:00+02:00") == "1990-05-17"
    assert canonical(BIRTHDATE, "1990-05-17T12:00:00Z") == "1990-05-17"


def test_datetime_is_normalized_to_utc() -> None:
    assert to_spotler(DATETIME, "2024-03-01T12:00:00+02:00") == "2024-03-01T10:00:00Z"
    assert to_spotler(DATETIME, "2024-03-01T12:00:00") == "2024-03-01T12:00:00Z"
    assert to_dataverse(DATETIME, "2024-03-01T12:00:00.123456+00:00") == "2024-03-01T12:00:00Z"
    assert canonical(DATETIME, "2024-03-01T13:00:00+01:00") == canonical(DATETIME, "2024-03-01T12:00:00Z")


def test_int_conversion() -> None:
    assert to_spotler(INT, 7.9) == 7
    assert to_spotler(INT, "12") == 12
    assert to_dataverse(INT, "12") == 12
    assert to_dataverse(INT, 12.0) == 12


def test_money_is_rounded_to_cents() -> None:
    assert to_spotler(MONEY, 10.005000001) == 10.01
    assert to_spotler(MONEY, "3.14159") == 3.14
    assert to_spotler(MONEY, 5) == 5.0
    assert to_dataverse(MONEY, 2.499) == 2.5
    assert canonical(MONEY, 1.0000001) == canonical(MONEY, 1)


def test_boolean_blank_is_false() -> None:
    assert to_spotler(BOOLEAN, None) == {3: False}
    assert to_dataverse(BOOLEAN, None) is False
    assert to_dataverse(BOOLEAN, {1: True}) is False


def test_choice_text_is_matched_case_insensitively() -> None:
    assert to_dataverse(CHOICE_STR, " female ") == 2


def test_choice_set_without_a_bit_is_blank() -> None:
    assert to_dataverse(CHOICE_SET, {1: False, 2: False}) is None
    assert to_dataverse(CHOICE_SET, None) is None
    assert to_spotler(CHOICE_SET, None) == {1: False, 2: False}


def test_choice_set_with_two_bits_takes_the_lowest_option() -> None:
    assert to_dataverse(CHOICE_SET, {1: True, 2: True}) == 10


def test_multichoice_ignores_unmapped_bits_and_options() -> None:
    assert to_dataverse(MULTI, {1: True, 9: True}) == [100]
    assert to_spotler(MULTI, [100, 999]) == {1: True, 2: False, 5: False}
    assert to_spotler(MULTI, None) == {1: False, 2: False, 5: False}


# --- canonical forms ------------------------------------------------------------------------------------------------


def test_canonical_email_is_case_folded_and_stripped() -> None:
    assert canonical(EMAIL, " Ada@Example.COM ") == "ada@example.com"


def test_canonical_string_is_stripped_and_blank_is_none() -> None:
    assert canonical(STRING, "  x ") == "x"
    assert canonical(STRING, "   ") is None


def test_canonical_set_keeps_only_mapped_bits() -> None:
    assert canonical(MULTI, {1: True, 2: False, 7: True}) == [[1, True], [2, False], [5, False]]
    assert canonical(MULTI, None) == canonical(MULTI, {}) == canonical(MULTI, {9: True})
    assert canonical(BOOLEAN, {3: True, 4: True}) == [[3, True]]


def test_canonical_whole_float_is_an_int() -> None:
    assert canonical(INT, 5.0) == 5
    assert value_hash(KEY, canonical(INT, 5.0)) == value_hash(KEY, canonical(INT, 5))


def test_canonical_numbers_given_as_text_equal_numbers() -> None:
    assert canonical(INT, "5") == canonical(INT, 5)
    assert canonical(MONEY, "12.50") == canonical(MONEY, 12.5)


def test_canonical_of_an_unparseable_date_does_not_raise() -> None:
    assert canonical(BIRTHDATE, "not a date") == "not a date"
    assert canonical(DATETIME, "soon") == "soon"


def test_value_hash_is_keyed_and_stable() -> None:
    assert value_hash(KEY, "x") == value_hash(KEY, "x")
    assert value_hash(KEY, "x") != value_hash(b"other", "x")
    assert value_hash(KEY, [[1, True]]) != value_hash(KEY, [[1, False]])
    assert len(value_hash(KEY, None)) == 32


# --- errors name the column, never the value ------------------------------------------------------------------------

SECRET = "s3cr3t-value@example.com"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (DATE, SECRET),
        (BIRTHDATE, "31-12-" + SECRET),
        (DATETIME, SECRET),
        (INT, SECRET),
        (INT, True),
        (INT, [1, 2]),
        (MONEY, SECRET),
        (MONEY, False),
        (CHOICE_STR, 99),
        (CHOICE_STR, SECRET),
    ],
)
def test_to_spotler_error_names_the_column_not_the_value(field: FieldMapping, value: AttrValue) -> None:
    with pytest.raises(ConversionError) as info:
        to_spotler(field, value)
    message = str(info.value)
    assert field.dataverse in message
    assert str(value) not in message
    assert "s3cr3t" not in message
    assert info.value.__cause__ is None  # the underlying error would repeat the value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (DATE, SECRET),
        (DATETIME, SECRET),
        (INT, SECRET),
        (INT, True),
        (INT, {1: True}),
        (MONEY, SECRET),
        (CHOICE_STR, SECRET),
    ],
)
def test_to_dataverse_error_names_the_column_not_the_value(field: FieldMapping, value: PropValue) -> None:
    with pytest.raises(ConversionError) as info:
        to_dataverse(field, value)
    message = str(info.value)
    assert field.dataverse in message
    assert field.spotler in message
    assert "s3cr3t" not in message
    assert info.value.__cause__ is None


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf", "1e400"])
def test_non_finite_numbers_are_conversion_errors(value: AttrValue) -> None:
    with pytest.raises(ConversionError):
        to_spotler(INT, value)
    with pytest.raises(ConversionError):
        to_spotler(MONEY, value)
