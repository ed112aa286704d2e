"""E-mail validity, normalization and the keyed hash that identifies a person in suppression tombstones."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

from email_validator import EmailNotValidError, validate_email


def normalize_email(value: object) -> str | None:
    """The normalized address when `value` is a syntactically valid e-mail address, else None.

    Validation is syntax-only (no DNS): the connector must decide the same way offline and in tests. The
    answer depends on the text alone, so repeated addresses are validated once (a bounded cache).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    return _normalized(value)


# The plain ASCII addresses nearly everyone has, for which email-validator's answer is known without running
# it: a dot-atom of common characters, host labels without "--" (no IDNA), an alphabetic TLD that is not a
# special-use name. Anything else goes to email-validator. tests/unit/test_email_fast_path.py holds the two equal.
# No 64-character limit on the local part: email-validator (not strict) accepts longer ones too.
_PLAIN = re.compile(
    r"(?P<local>[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,24}))"
)
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_normalized(text: str) -> str | None:
    """`text` normalized when it is a plain address (see _PLAIN), else None (not decided here)."""
    match = _PLAIN.fullmatch(text)
    if match is None or len(text) > 254 or "--" in match["domain"]:
        return None
    if match["tld"].lower() in _SPECIAL_USE:
        return None
    return f"{match['local']}@{match['domain'].lower()}"


@functools.lru_cache(maxsize=8192)
def _normalized(value: str) -> str | None:
    text = value.strip()
    plain = _plain_normalized(text)
    if plain is not None:
        return plain
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized


def email_hash(key: bytes, email: str) -> str:
    """Keyed hash of the case-folded address: stable per person, useless without the key."""
    return hmac.new(key, email.strip().casefold().encode(), hashlib.sha256).hexdigest()


def redact_email(text: str) -> str:
    """`text` with anything that looks like an e-mail address masked (for log lines and stored messages)."""
    out: list[str] = []
    for token in text.split(" "):
        if "@" in token and "." in token.split("@", 1)[1]:
            out.append(token[:1] + "***@***")
        else:
            out.append(token)
    return " ".join(out)
