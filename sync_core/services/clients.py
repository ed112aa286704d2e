"""The Spotler and Dataverse clients built from the settings: one place for the app, the CLI and setup."""

from __future__ import annotations

from collections.abc import Iterable

from sync_core.dataverse.client import DataverseClient
from sync_core.dataverse.credentials import make_credential
from sync_core.settings import Settings
from sync_core.spotler.client import SpotlerClient


def spotler_client(settings: Settings) -> SpotlerClient:
    return SpotlerClient(
        base_url=settings.spotler_base_url,
        consumer_key=settings.spotler_consumer_key,
        consumer_secret=settings.spotler_consumer_secret,
        path_prefix=settings.spotler_path_prefix,
        timeout=settings.spotler_timeout_seconds,
        max_attempts=settings.spotler_max_attempts,
        calls_per_second=settings.spotler_calls_per_second or None,
    )


def dataverse_client(settings: Settings, *, multi_select_columns: Iterable[str] = ()) -> DataverseClient:
    """A Web API client with the connector's own identity."""
    credential = make_credential(
        settings.dataverse_auth,
        tenant_id=settings.dataverse_tenant_id,
        client_id=settings.dataverse_client_id,
        client_secret=settings.dataverse_client_secret.get_secret_value() if settings.dataverse_client_secret else None,
        token=settings.dataverse_static_token.get_secret_value() if settings.dataverse_static_token else None,
    )
    return DataverseClient(
        base_url=settings.dataverse_url,
        credential=credential,
        timeout=settings.dataverse_timeout_seconds,
        multi_select_columns=tuple(multi_select_columns),
    )
