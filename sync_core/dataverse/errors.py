"""Dataverse failures mapped onto the shared error tree, plus the webhook intake errors."""

from __future__ import annotations

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


class DataverseError(SyncError):
    """Base of every Web API failure."""


class DataverseAuthError(DataverseError, AuthError):
    """401/403: the token was rejected or the application user lacks a privilege."""


class DataverseNotFound(DataverseError, NotFoundError):
    """404: the row (or entity set) does not exist."""


class DataverseConflict(DataverseError, ConflictError):
    """412: the ETag no longer matches, or the row already exists."""


class DataverseInvalidData(DataverseError, InvalidDataError):
    """400: a value, column or query was rejected."""


class DataverseRateLimited(DataverseError, RateLimitedError):
    """429: service protection limits; `retry_after` holds the Retry-After seconds."""


class DataverseTransient(DataverseError, TransientError):
    """502/503/504, timeouts and dropped connections."""


class DataversePermanent(DataverseError, PermanentError):
    """Any other failure that will not succeed on a retry."""


class WebhookPayloadError(ValueError):
    """A webhook body that cannot be turned into a ChangeEvent. Messages never contain attribute values."""


class UnsupportedMessage(WebhookPayloadError):
    """A well-formed delivery for a message the connector does not sync (Assign, Associate, ...)."""

    def __init__(self, message_name: str) -> None:
        super().__init__(f"message {message_name!r} is not synced")
        self.message_name = message_name
