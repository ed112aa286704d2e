"""E-mail validity and hashing, log redaction, exclude filters, active and qualified state."""

from __future__ import annotations

from typing import Any

import pytest

from sync_core.domain.consent import email_hash, normalize_email, redact_email
from sync_core.domain.eligibility import (
    excluded_by,
    is_active,
    is_qualified_lead,
    wants_no_bulk_email,
    wants_no_email,
)
from sync_core.domain.mapping import EntityMapping

KEY = b"k" * 32


def entity(*exclude: dict[str, Any]) -> EntityMapping:
    return EntityMapping.model_validate(
        {
            "fields": [{"dataverse": "emailaddress1", "spotler": "email", "type": "email"}],
            "exclude": list(exclude),
        }
    )


# --- normalize_email ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  ada@example.com\t", "ada@example.com"),
        ("Ada.Lovelace@Example.COM", "Ada.Lovelace@example.com"),
        ("first+tag@sub.example.org", "first+tag@sub.example.org"),
        ("jürgen@müller.de", "jürgen@müller.de"),
    ],
)
def test_normalize_email_valid(given: str, expected: str) -> None:
    assert normalize_email(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "not an e-mail",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada example@example.com",
        "ada@example..com",
        "ada@localhost",
        "a" * 300 + "@example.com",
    ],
)
def test_normalize_email_invalid(given: str) -> None:
    assert normalize_email(given) is None


@pytest.mark.parametrize("given", ["", "   ", None])
def test_normalize_email_blank(given: object) -> None:
    assert normalize_email(given) is None


@pytest.mark.parametrize("given", [42, 1.5, True, ["a@example.com"], {"email": "a@example.com"}, b"a@example.com"])
def test_normalize_email_non_string(given: object) -> None:
    assert normalize_email(given) is None


# --- email_hash -----------------------------------------------------------------------------------------------------


def test_email_hash_is_case_insensitive_and_ignores_surrounding_space() -> None:
    assert email_hash(KEY, "Ada@Example.com") == email_hash(KEY, " ada@example.COM ")


def test_email_hash_is_keyed() -> None:
    assert email_hash(KEY, "ada@example.com") != email_hash(b"another key", "ada@example.com")


def test_email_hash_separates_people_and_hides_the_address() -> None:
    digest = email_hash(KEY, "ada@example.com")
    assert digest != email_hash(KEY, "bob@example.com")
    assert "ada" not in digest
    assert len(digest) == 64
    int(digest, 16)


def test_email_hash_of_normalized_forms_agrees() -> None:
    raw = "  Ada.Lovelace@EXAMPLE.com "
    normalized = normalize_email(raw)
    assert normalized is not None
    assert email_hash(KEY, normalized) == email_hash(KEY, raw)


# --- redact_email ---------------------------------------------------------------------------------------------------


def test_redact_email_masks_addresses_and_keeps_the_rest() -> None:
    text = redact_email("contact ada.lovelace@example.com rejected: invalid")
    assert "ada.lovelace" not in text
    assert "example.com" not in text
    assert text.startswith("contact ")
    assert text.endswith(" rejected: invalid")


def test_redact_email_masks_addresses_in_punctuation() -> None:
    text = redact_email("email (<bob@example.org>), and carol@example.net.")
    assert "bob" not in text
    assert "carol" not in text
    assert "example" not in text


def test_redact_email_leaves_text_without_addresses_alone() -> None:
    text = "record 1234 failed with 400 @ step two"
    assert redact_email(text) == text
    assert redact_email("") == ""


# --- exclude rules --------------------------------------------------------------------------------------------------


def test_exclude_equals_is_case_insensitive_for_text() -> None:
    mapping = entity({"attribute": "new_source", "equals": "Import", "description": "imported rows"})
    found = excluded_by(mapping, {"new_source": " import "})
    assert found is not None
    assert found.rule_index == 0
    assert found.description == "imported rows"
    assert excluded_by(mapping, {"new_source": "web"}) is None
    assert excluded_by(mapping, {}) is None


def test_exclude_equals_on_numbers_and_booleans() -> None:
    assert excluded_by(entity({"attribute": "customertypecode", "equals": 3}), {"customertypecode": 3}) is not None
    assert excluded_by(entity({"attribute": "customertypecode", "equals": 3}), {"customertypecode": 4}) is None
    assert excluded_by(entity({"attribute": "new_test", "equals": True}), {"new_test": True}) is not None
    assert excluded_by(entity({"attribute": "new_test", "equals": False}), {"new_test": True}) is None


def test_exclude_equals_does_not_confuse_booleans_and_numbers() -> None:
    assert excluded_by(entity({"attribute": "x", "equals": 1}), {"x": True}) is None
    assert excluded_by(entity({"attribute": "x", "equals": False}), {"x": 0}) is None


def test_exclude_any_of() -> None:
    mapping = entity({"attribute": "industrycode", "any_of": [1, 2, "Competitor"]})
    assert excluded_by(mapping, {"industrycode": 2}) is not None
    assert excluded_by(mapping, {"industrycode": "competitor"}) is not None
    assert excluded_by(mapping, {"industrycode": 3}) is None
    assert excluded_by(mapping, {"industrycode": None}) is None


def test_exclude_any_of_on_a_multi_select_matches_any_chosen_option() -> None:
    mapping = entity({"attribute": "new_topics", "any_of": [7]})
    assert excluded_by(mapping, {"new_topics": [3, 7]}) is not None
    assert excluded_by(mapping, {"new_topics": [3]}) is None


def test_exclude_is_blank_true_and_false() -> None:
    blank = entity({"attribute": "lastname", "is_blank": True})
    assert excluded_by(blank, {"lastname": "  "}) is not None
    assert excluded_by(blank, {}) is not None
    assert excluded_by(blank, {"lastname": "Lovelace"}) is None
    present = entity({"attribute": "new_internal", "is_blank": False})
    assert excluded_by(present, {"new_internal": "yes"}) is not None
    assert excluded_by(present, {"new_internal": None}) is None


def test_exclude_reports_the_first_matching_rule_with_a_default_description() -> None:
    mapping = entity({"attribute": "a", "equals": 1}, {"attribute": "b", "equals": 2})
    found = excluded_by(mapping, {"a": 0, "b": 2})
    assert found is not None
    assert found.rule_index == 1
    assert "b" in found.description


# --- active / qualified / do-not flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "active"), [(None, True), (0, True), (1, False), (2, False)])
def test_is_active(state: int | None, active: bool) -> None:
    attrs = {} if state is None else {"statecode": state}
    assert is_active(attrs) is active


def test_qualified_lead() -> None:
    assert is_qualified_lead("lead", {"statecode": 1})
    assert not is_qualified_lead("lead", {"statecode": 2})  # disqualified
    assert not is_qualified_lead("lead", {"statecode": 0})
    assert not is_qualified_lead("contact", {"statecode": 1})


def test_do_not_flags_are_true_only_when_set() -> None:
    mapping = entity()
    assert wants_no_email(mapping, {"donotemail": True})
    assert not wants_no_email(mapping, {"donotemail": False})
    assert not wants_no_email(mapping, {})
    assert wants_no_bulk_email(mapping, {"donotbulkemail": True})
    assert not wants_no_bulk_email(mapping, {"donotbulkemail": None})
