"""The plain-address fast path at its edges, case by case, against email-validator (the reference).

Where email-validator accepts a plain address the fast path decides it, with the same answer (that is what keeps
planning fast); anything the fast path leaves alone gets email-validator's answer. The generated comparison is in
test_email_fast_path.py; these are the edges it may or may not draw.
"""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from sync_core.domain.consent import _plain_normalized, email_hash, normalize_email

DOMAIN_189 = f"{'b' * 63}.{'c' * 63}.{'d' * 57}.com"
AT_THE_LIMIT = f"{'a' * 64}@{DOMAIN_189}"  # 254 characters, the most an address may have
KEY = b"k" * 32

# Plain addresses email-validator accepts: the fast path decides every one of them.
DECIDED = [
    "ada@example.com",
    "Ada.Lovelace@Example.COM",  # the domain is lower-cased, the local part kept as written
    "first.last+tag_1@Sub.EXAMPLE.co.uk",
    "x-y@a-b.Example.Museum",
    f"{'a' * 64}@example.com",
    f"{'a' * 65}@example.com",  # email-validator does not limit the local part unless strict
    AT_THE_LIMIT,
]

# Left to email-validator, which accepts some and refuses the others.
NOT_DECIDED = [
    f"a{AT_THE_LIMIT}",  # 255 characters: too long
    "x@example.test",
    "x@example.TEST",
    "x@a.LocalHost",
    "x@b.onion",
    "x@c.Arpa",
    "x@d.invalid",
    "x@e.local",
    "a@xn--bcher-kva.de",  # IDNA: email-validator shows the Unicode domain
    "a@ex--ample.com",
    "a@exa--mple.com",
    "a@b",
    "a@example.c",
    "a..b@example.com",
    ".a@example.com",
    "a@-example.com",
    "a b@example.com",
    "Ada <ada@example.com>",
    "ada@example.com.",
    "élodie@example.com",
    "",
]


def reference(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@pytest.mark.parametrize("address", DECIDED)
def test_the_fast_path_decides_plain_addresses_as_email_validator_does(address: str) -> None:
    expected = reference(address)
    assert expected is not None
    assert _plain_normalized(address) == expected
    assert normalize_email(address) == expected


@pytest.mark.parametrize("address", NOT_DECIDED)
def test_the_fast_path_leaves_everything_else_to_email_validator(address: str) -> None:
    assert _plain_normalized(address) is None
    assert normalize_email(address) == reference(address)


def test_the_domain_is_lower_cased_and_the_local_part_kept() -> None:
    assert _plain_normalized("Ada.Lovelace@Sub.Example.COM") == "Ada.Lovelace@sub.example.com"


def test_the_hash_of_an_address_ignores_letter_case_and_surrounding_space() -> None:
    assert email_hash(KEY, " Ada@Example.COM ") == email_hash(KEY, "ada@example.com")
    assert email_hash(KEY, "élodie@example.com") == email_hash(KEY, "ÉLODIE@example.com")
    assert email_hash(KEY, "ada@example.com") != email_hash(KEY, "ada@example.org")
    assert email_hash(KEY, "ada@example.com") != email_hash(b"j" * 32, "ada@example.com")
