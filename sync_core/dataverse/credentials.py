"""Build the Entra ID credential the Web API client asks for bearer tokens."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Literal

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

CredentialKind = Literal["managed_identity", "client_secret", "default", "static_token"]


class StaticTokenCredential:
    """Hands out one fixed bearer token: for the sandbox and local runs only."""

    def __init__(self, token: str, *, lifetime_seconds: int = 3600) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token = token
        self._lifetime = lifetime_seconds

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticTokenCredential(token=***)"


def make_credential(
    kind: CredentialKind,
    *,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token: str | None = None,
) -> AsyncTokenCredential:
    """The credential for `kind`; ValueError naming the missing argument.

    managed_identity: a user-assigned identity when `client_id` is given, else the system-assigned one.
    client_secret: an app registration (tenant_id, client_id, client_secret).
    default: DefaultAzureCredential (developer machines; `client_id` selects a managed identity).
    static_token: a fixed token (sandbox, local runs).
    """
    if kind == "managed_identity":
        from azure.identity.aio import ManagedIdentityCredential  # noqa: PLC0415  # the kind in use only

        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if kind == "client_secret":
        if not tenant_id:
            raise ValueError("tenant_id is required for a client_secret credential")
        if not client_id:
            raise ValueError("client_id is required for a client_secret credential")
        if not client_secret:
            raise ValueError("client_secret is required for a client_secret credential")
        from azure.identity.aio import ClientSecretCredential  # noqa: PLC0415

        return ClientSecretCredential(tenant_id, client_id, client_secret)
    if kind == "default":
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        if client_id:
            return DefaultAzureCredential(managed_identity_client_id=client_id)
        return DefaultAzureCredential()
    if kind == "static_token":
        if not token:
            raise ValueError("token is required for a static_token credential")
        return StaticTokenCredential(token)
    raise ValueError(f"unknown credential kind {kind!r}")
