"""Dataverse adapter: webhook intake and Web API client."""

from sync_core.dataverse.auth import WebhookAuthenticator, WebhookAuthMode
from sync_core.dataverse.client import ENTITY_SETS, DataverseClient
from sync_core.dataverse.credentials import CredentialKind, StaticTokenCredential, make_credential
from sync_core.dataverse.errors import (
    DataverseAuthError,
    DataverseConflict,
    DataverseError,
    DataverseInvalidData,
    DataverseNotFound,
    DataversePermanent,
    DataverseRateLimited,
    DataverseTransient,
    UnsupportedMessage,
    WebhookPayloadError,
)
from sync_core.dataverse.webhook import DATE_ONLY_COLUMNS, SIZE_EXCEEDED_HEADER, PluginDelivery, parse_delivery

__all__ = [
    "DATE_ONLY_COLUMNS",
    "ENTITY_SETS",
    "SIZE_EXCEEDED_HEADER",
    "CredentialKind",
    "DataverseAuthError",
    "DataverseClient",
    "DataverseConflict",
    "DataverseError",
    "DataverseInvalidData",
    "DataverseNotFound",
    "DataversePermanent",
    "DataverseRateLimited",
    "DataverseTransient",
    "PluginDelivery",
    "StaticTokenCredential",
    "UnsupportedMessage",
    "WebhookAuthMode",
    "WebhookAuthenticator",
    "WebhookPayloadError",
    "make_credential",
    "parse_delivery",
]
