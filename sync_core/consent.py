"""E-mail validity, normalization and the keyed hash that identifies a person in suppression tombstones."""

from __future__ import annotations

import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email


def normalize_email(value: object) -> str | None:
    """The normalized address when `value` is a syntactically valid e-mail address, else None.

    Validation is syntax-only (no DNS): the connector must decide the same way offline and in tests.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized


def email_hash(key: bytes, email: str) -> str:
    """Keyed hash of the case-folded address: stable per person, useless without the key."""
    return hmac.new(key, email.strip().casefold().encode("utf-8"), hashlib.sha256).hexdigest()


def redact_email(text: str) -> str:
    """`text` with anything that looks like an e-mail address masked (for log lines and stored messages)."""
    out: list[str] = []
    for token in text.split(" "):
        if "@" in token and "." in token.split("@", 1)[1]:
            out.append(token[:1] + "***@***")
        else:
            out.append(token)
    return " ".join(out)
