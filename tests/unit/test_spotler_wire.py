"""Spotler JSON <-> records, error mapping and redaction, without any HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_core.domain.errors import (
    AuthError,
    ConflictError,
    InvalidDataError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_core.domain.records import SpotlerContact
from sync_core.spotler import wire
from sync_core.spotler.errors import (
    SpotlerContactOptedOut,
    SpotlerPermanentError,
    error_from_response,
    parse_retry_after,
    redact_emails,
)

# ---------------------------------------------------------------- timestamps


def test_epoch_milliseconds_become_aware_utc() -> None:
    assert wire.parse_timestamp(1_700_000_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_epoch_milliseconds_as_string_are_accepted() -> None:
    assert wire.parse_timestamp("1700000000000") == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_iso_with_offset_is_converted_to_utc() -> None:
    assert wire.parse_timestamp("2024-01-15T10:00:00+01:00") == datetime(2024, 1, 15, 9, tzinfo=UTC)
    assert wire.parse_timestamp("2024-01-15T10:00:00.250Z") == datetime(2024, 1, 15, 10, 0, 0, 250_000, tzinfo=UTC)


def test_naive_iso_is_read_as_amsterdam_time_winter_and_summer() -> None:
    assert wire.parse_timestamp("2024-01-15T10:00:00") == datetime(2024, 1, 15, 9, tzinfo=UTC)
    assert wire.parse_timestamp("2024-07-15T10:00:00") == datetime(2024, 7, 15, 8, tzinfo=UTC)


def test_naive_timezone_is_configurable() -> None:
    assert wire.parse_timestamp("2024-01-15T10:00:00", naive_tz=UTC) == datetime(2024, 1, 15, 10, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, ""])
def test_missing_timestamp_is_none(value: object) -> None:
    assert wire.parse_timestamp(value) is None


@pytest.mark.parametrize("value", ["yesterday", True, {"a": 1}])
def test_unparseable_timestamp_is_a_wire_format_error(value: object) -> None:
    with pytest.raises(wire.WireFormatError):
        wire.parse_timestamp(value)


def test_query_dates_are_sent_as_utc_with_offset() -> None:
    amsterdam = timezone(timedelta(hours=1))
    assert wire.format_query_datetime(datetime(2024, 1, 1, 1, tzinfo=amsterdam)) == "2024-01-01T00:00:00+00:00"
    assert (
        wire.format_query_datetime(datetime(2024, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC))
        == "2024-01-01T00:00:00.123+00:00"
    )


def test_naive_query_date_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        wire.format_query_datetime(datetime(2024, 1, 1))


# ---------------------------------------------------------------- writing


def test_contact_to_wire_puts_permissions_inside_properties_as_bit_items() -> None:
    contact = SpotlerContact(
        external_id="42",
        properties={"email": "jan@example.nl", "interests": {4: True, 1: False}, "city": None},
        permissions={2: False, 1: True},
        test_group=False,
        channels={"EMAIL": True},
    )

    body = wire.contact_to_wire(contact)

    assert body == {
        "externalId": "42",
        "testGroup": False,
        "properties": {
            "email": "jan@example.nl",
            "interests": [{"bit": 1, "enabled": False}, {"bit": 4, "enabled": True}],
            "city": None,
            "permissions": [{"bit": 1, "enabled": True}, {"bit": 2, "enabled": False}],
        },
    }
    assert "channels" not in body


def test_contact_to_wire_omits_empty_permissions_and_unknown_test_group() -> None:
    body = wire.contact_to_wire(SpotlerContact(external_id="1", properties={"firstName": "Jan"}))

    assert body == {"externalId": "1", "properties": {"firstName": "Jan"}}


# ---------------------------------------------------------------- reading

CONTACT_JSON = {
    "externalId": "42",
    "encryptedId": "AbC123xyz",
    "created": 1700000000000,
    "lastChanged": "2024-01-15T10:00:00+01:00",
    "testGroup": False,
    "temporary": False,
    "properties": {
        "email": "jan@example.nl",
        "firstName": "Jan",
        "permissions": [
            {"bit": 1, "description": "Nieuwsbrief", "enabled": True},
            {"bit": 2, "description": "Aanbiedingen", "enabled": False},
        ],
        "interests": [{"bit": 4, "description": "Reizen", "enabled": True}],
    },
    "channels": [{"name": "EMAIL", "value": False}],
}


def test_contact_from_wire_reads_sets_permissions_channels_and_times() -> None:
    contact = wire.contact_from_wire(CONTACT_JSON)

    assert contact.external_id == "42"
    assert contact.permissions == {1: True, 2: False}
    assert contact.properties == {"email": "jan@example.nl", "firstName": "Jan", "interests": {4: True}}
    assert contact.channels == {"EMAIL": False}
    assert contact.opted_out is True
    assert contact.created == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert contact.last_changed == datetime(2024, 1, 15, 9, tzinfo=UTC)
    assert contact.encrypted_id == "AbC123xyz"
    assert contact.test_group is False


def test_contact_without_external_id_is_a_wire_format_error() -> None:
    with pytest.raises(wire.WireFormatError):
        wire.contact_from_wire({"properties": {}})


@given(st.dictionaries(st.sampled_from([1, 2, 4, 8, 16, 1024]), st.booleans()))
def test_set_values_round_trip(bits: dict[int, bool]) -> None:
    assert wire.set_from_wire(wire.set_to_wire(bits)) == bits


def test_property_from_wire_reads_set_entries() -> None:
    prop = wire.property_from_wire(
        {
            "name": "permissions",
            "type": "set",
            "description": "Permissies",
            "entries": [{"bit": 1, "description": "Nieuwsbrief", "rank": 1}],
        }
    )

    assert prop.name == "permissions"
    assert prop.type == "set"
    assert prop.entries == {1: "Nieuwsbrief"}


# ---------------------------------------------------------------- pages


def test_wrapper_page_with_next_link_continues_at_paging_after() -> None:
    body = {
        "paging": {"next": "https://x/contact/updates/list?after=2", "after": 2},
        "contacts": [CONTACT_JSON, {**CONTACT_JSON, "externalId": "43"}],
    }

    page = wire.contacts_page_from_wire(body, after=0, page_size=2)

    assert [c.external_id for c in page.contacts] == ["42", "43"]
    assert page.next_after == 2


def test_wrapper_page_without_next_link_is_the_last() -> None:
    page = wire.contacts_page_from_wire({"paging": {"after": 3}, "contacts": [CONTACT_JSON]}, after=2, page_size=1)

    assert page.next_after is None


def test_wrapper_next_link_without_after_field_uses_the_links_offset() -> None:
    body = {"paging": {"next": "https://x/list?pageSize=1&after=7"}, "contacts": [CONTACT_JSON]}

    assert wire.contacts_page_from_wire(body, after=6, page_size=1).next_after == 7


def test_bare_array_full_page_asks_for_more_and_short_page_ends() -> None:
    full = wire.contacts_page_from_wire([CONTACT_JSON, CONTACT_JSON], after=4, page_size=2)
    short = wire.contacts_page_from_wire([CONTACT_JSON], after=6, page_size=2)
    empty = wire.contacts_page_from_wire([], after=8, page_size=2)

    assert full.next_after == 6
    assert short.next_after is None
    assert empty.next_after is None


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"errorType": "CONTACT_NOT_FOUND", "message": "Given contact not found"}, NotFoundError),
        (400, {"errorType": "CONTACT_NOT_FOUND", "message": "x"}, NotFoundError),
        (400, {"errorType": "CONTACT_ALREADY_EXISTS", "message": "exists"}, ConflictError),
        (400, {"errorType": "INVALID_PARAMS", "message": "Email is invalid"}, InvalidDataError),
        (400, {"errorType": "INVALID_PROPERTY", "message": "Property is invalid"}, InvalidDataError),
        (400, None, InvalidDataError),
        (400, {"errorType": "CONTACT_OPTOUT", "message": "opted out"}, SpotlerContactOptedOut),
        (401, {"errorType": "NOT_AUTHORIZED", "message": "no"}, AuthError),
        (403, None, AuthError),
        (429, None, RateLimitedError),
        (500, {"errorType": "BACKEND_EXCEPTION", "message": "boom"}, TransientError),
        (503, None, TransientError),
        (413, None, SpotlerPermanentError),
        (417, None, PermanentError),
    ],
)
def test_error_responses_map_onto_the_shared_tree(status: int, body: object, expected: type) -> None:
    error = error_from_response(status, body, {}, endpoint="POST /contact")

    assert isinstance(error, expected)
    assert error.status == status
    assert error.endpoint == "POST /contact"


def test_error_keeps_code_and_redacted_remote_message() -> None:
    body = {"errorType": "INVALID_PARAMS", "message": "Email jan.de.vries+news@example.nl is invalid"}

    error = error_from_response(400, body, {}, endpoint="POST /contact")

    assert error.code == "INVALID_PARAMS"
    assert error.message == "Email <email> is invalid"
    assert "example.nl" not in str(error)


def test_rate_limit_error_carries_retry_after_seconds() -> None:
    error = error_from_response(429, None, {"retry-after": "2"}, endpoint="GET /contact/{externalId}")

    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 2.0
    assert error.retryable is True


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("0.2") == pytest.approx(0.2)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:05 GMT", now=now) == 5.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_redaction_covers_plain_and_percent_encoded_addresses() -> None:
    text = "search MPSearchQuery=email%3Da%2Bb%40x.nl and Jan.Smit@Example.COM"

    # Over-redacting the encoded "email=" prefix is fine; leaking the address is not.
    assert redact_emails(text) == "search MPSearchQuery=<email> and <email>"


def test_permanent_errors_are_not_retryable_and_transient_ones_are() -> None:
    assert error_from_response(400, None, {}, endpoint="x").retryable is False
    assert error_from_response(502, None, {}, endpoint="x").retryable is True
