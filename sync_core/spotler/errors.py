"""Spotler's failures mapped onto the shared error tree.

Every class also derives from a `sync_core.domain.errors` base, so services catch `NotFoundError`,
`RateLimitedError` and friends without knowing about Spotler. `message` holds Spotler's own message with
e-mail addresses redacted; `code` holds its `errorType`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sync_core.domain.errors import (
    AuthError,
    ConflictError,
    InvalidDataError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    SyncError,
    TransientError,
)

# Plain addresses, and percent-encoded once (a query string) or twice (an OAuth signature base string).
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-']+(?:@|%40|%2540)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+", re.IGNORECASE)
REDACTED_EMAIL = "<email>"


def redact_emails(text: str) -> str:
    """`text` with every e-mail address (plain or percent-encoded) replaced by a placeholder."""
    return _EMAIL.sub(REDACTED_EMAIL, text)


class SpotlerError(SyncError):
    """Base of every error the Spotler client raises; `endpoint` is e.g. `PUT /contact/{externalId}`."""

    endpoint: str = ""


class SpotlerNotFound(SpotlerError, NotFoundError):
    """404 or `CONTACT_NOT_FOUND`: the contact (or resource) does not exist."""


class SpotlerContactExists(SpotlerError, ConflictError):
    """`CONTACT_ALREADY_EXISTS`: an insert without update=True hit an existing externalId."""


class SpotlerInvalidData(SpotlerError, InvalidDataError):
    """400 `INVALID_PARAMS` / `INVALID_PROPERTY` and other validation failures."""


class SpotlerContactOptedOut(SpotlerError, PermanentError):
    """`CONTACT_OPTOUT`: the contact unsubscribed globally; permissions cannot be switched back on by API."""


class SpotlerAuthError(SpotlerError, AuthError):
    """401/403: consumer key or secret rejected, or the signature did not verify."""


class SpotlerRateLimited(SpotlerError, RateLimitedError):
    """429: slow down; `retry_after` (seconds) comes from the `Retry-After` header when sent."""


class SpotlerTransientError(SpotlerError, TransientError):
    """5xx answers; worth retrying later."""


class SpotlerTimeout(SpotlerTransientError):
    """No answer within the client's timeout."""


class SpotlerConnectionError(SpotlerTransientError):
    """Could not connect, or the connection dropped before a response arrived."""


class SpotlerPermanentError(SpotlerError, PermanentError):
    """Any other unexpected answer (other 4xx, unparseable success bodies)."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date; None when absent/bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def error_from_response(
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    endpoint: str,
) -> SpotlerError:
    """The typed error for a non-success answer (`body` is the decoded JSON, or None)."""
    code = ""
    remote = ""
    if isinstance(body, Mapping):
        code = str(body.get("errorType") or "")
        remote = redact_emails(str(body.get("message") or ""))
    message = remote or f"HTTP {status}"
    error: SpotlerError
    if status == 429:
        error = SpotlerRateLimited(
            message, retry_after=parse_retry_after(headers.get("retry-after")), status=status, code=code
        )
    elif status in (401, 403):
        error = SpotlerAuthError(message, status=status, code=code)
    elif status == 404 or code in ("CONTACT_NOT_FOUND", "RESOURCE_NOT_FOUND"):
        error = SpotlerNotFound(message, status=status, code=code)
    elif code == "CONTACT_ALREADY_EXISTS":
        error = SpotlerContactExists(message, status=status, code=code)
    elif code == "CONTACT_OPTOUT":
        error = SpotlerContactOptedOut(message, status=status, code=code)
    elif status >= 500:
        error = SpotlerTransientError(message, status=status, code=code)
    elif status == 400:
        error = SpotlerInvalidData(message, status=status, code=code)
    else:
        error = SpotlerPermanentError(message, status=status, code=code)
    error.endpoint = endpoint
    return error
