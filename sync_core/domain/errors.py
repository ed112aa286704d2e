"""The error tree every adapter maps its failures onto, so services decide retry or dead-letter by type.

Adapters subclass these (for example `SpotlerRateLimited(SpotlerError, RateLimitedError)`); services only
catch the classes here. Messages never contain secrets or e-mail addresses.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error raised by the connector's adapters."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class TransientError(SyncError):
    """Worth retrying later: 5xx, timeouts, dropped connections."""

    retryable = True


class RateLimitedError(TransientError):
    """The remote asked us to slow down (HTTP 429); `retry_after` is in seconds when given."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = 429, code: str = ""
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class PermanentError(SyncError):
    """Will fail again unchanged: validation errors and other 4xx."""


class AuthError(PermanentError):
    """Credentials rejected or missing; a configuration problem, not a data problem."""


class NotFoundError(PermanentError):
    """The addressed record does not exist on the remote."""


class ConflictError(PermanentError):
    """A precondition failed: already exists, or an ETag no longer matches."""


class InvalidDataError(PermanentError):
    """The remote rejected a value (invalid e-mail, unknown or malformed property)."""
