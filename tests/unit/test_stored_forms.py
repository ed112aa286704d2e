"""Forms that outlive a release: the keyed hashes stored in links and tombstones, and what reaches a log line.

A link's base and a tombstone are compared with hashes computed by a later release, so the exact bytes that
are hashed are part of the stored format: these tests spell them out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sync_core.domain.consent import email_hash, redact_email
from sync_core.domain.convert import canonical, to_dataverse, to_spotler, value_hash
from sync_core.domain.mapping import FieldMapping

KEY = b"stored-forms-test-key"


def expected(serialized: str) -> str:
    return hmac.new(KEY, serialized.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize(
    ("value", "serialized"),
    [
        ("Zoë", '"Zoë"'),
        ([[1, True], [2, False]], "[[1,true],[2,false]]"),
        (None, "null"),
        (3, "3"),
        ({"b": 1, "a": [2, "x"]}, '{"a":[2,"x"],"b":1}'),
    ],
)
def test_value_hash_is_the_keyed_hash_of_compact_sorted_utf8_json(value: Any, serialized: str) -> None:
    assert value_hash(KEY, value) == expected(serialized)


def test_email_hash_is_the_keyed_sha256_of_the_trimmed_casefolded_address() -> None:
    # casefold, not lower: "ß" is stored as "ss"
    assert email_hash(KEY, "  STRAßE@Example.com ") == hmac.new(KEY, b"strasse@example.com", hashlib.sha256).hexdigest()
    assert len(email_hash(KEY, "a@b.c")) == 64


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail ada@example.com now", "mail a***@*** now"),
        ("two  spaces ada@example.com", "two  spaces a***@***"),
        ("tab\tstays x@y.z@host", "tab\tstays x***@***"),
        ("x@y@h.z", "x***@***"),
        ("user@localhost stays", "user@localhost stays"),
    ],
)
def test_redact_email_masks_every_address_and_keeps_the_text_around_it(text: str, masked: str) -> None:
    assert redact_email(text) == masked


@pytest.fixture
def amsterdam_clock() -> Iterator[None]:
    """The process in a time zone east of UTC, as a Functions host may be configured."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


def test_datetimes_without_an_offset_are_read_as_utc_whatever_the_host_time_zone(amsterdam_clock: None) -> None:
    field = FieldMapping(dataverse="new_seen", spotler="seen", type="datetime")
    assert to_spotler(field, "2025-06-01T10:00:00") == "2025-06-01T10:00:00Z"
    assert to_spotler(field, "2025-06-01T12:00:00+02:00") == "2025-06-01T10:00:00Z"
    assert to_dataverse(field, "2025-06-01T10:00:00") == "2025-06-01T10:00:00Z"


@pytest.mark.parametrize(
    ("field", "value", "form"),
    [
        (FieldMapping(dataverse="new_day", spotler="day", type="date"), "2025-06-01T10:00:00Z", "2025-06-01"),
        (FieldMapping(dataverse="new_day", spotler="day", type="birthdate"), " 2025-06-01 ", "2025-06-01"),
        (FieldMapping(dataverse="new_day", spotler="day", type="date"), "20250601T10", "2025-06-01"),
        (FieldMapping(dataverse="new_code", spotler="code"), " 3.14159 ", "3.14159"),
        (FieldMapping(dataverse="new_code", spotler="code"), "007", "007"),
        (FieldMapping(dataverse="new_code", spotler="code"), 7.0, 7),
        (FieldMapping(dataverse="new_price", spotler="price", type="money"), "3.14159", 3.14),
        (FieldMapping(dataverse="new_count", spotler="count", type="int"), " 007 ", 7),
    ],
)
def test_canonical_forms_parse_only_for_their_own_type(field: FieldMapping, value: Any, form: Any) -> None:
    assert canonical(field, value) == form
