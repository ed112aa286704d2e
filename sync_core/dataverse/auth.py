"""Check the static secret a Dataverse webhook registration sends. Dataverse webhooks carry no signature."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Literal

WebhookAuthMode = Literal["webhook_key", "http_header", "http_query_string"]

_DEFAULT_NAMES: dict[str, str] = {
    "webhook_key": "code",
    "http_header": "x-sync-webhook-key",
    "http_query_string": "key",
}


class WebhookAuthenticator:
    """Verifies one of the three webhook authentication types of a service endpoint registration.

    * webhook_key: query parameter `code` (the Azure Functions key convention) equals the secret;
    * http_header: header `name` (case-insensitive) equals the secret;
    * http_query_string: query parameter `name` equals the secret.
    """

    def __init__(self, mode: WebhookAuthMode, secret: str, *, name: str | None = None) -> None:
        if mode not in _DEFAULT_NAMES:
            raise ValueError(f"unknown webhook authentication mode {mode!r}")
        if not secret:
            raise ValueError("the webhook secret must not be empty")
        if name is not None and not name.strip():
            raise ValueError("the header or query parameter name must not be empty")
        self.mode: WebhookAuthMode = mode
        self.name = "code" if mode == "webhook_key" else (name or _DEFAULT_NAMES[mode])
        self._secret = secret.encode()

    def verify(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """True when the delivery carries the secret; constant-time, False when the value is missing."""
        if self.mode == "http_header":
            wanted = self.name.lower()
            presented = next((value for key, value in headers.items() if key.lower() == wanted), None)
        else:
            presented = query.get(self.name)
        if not isinstance(presented, str):
            return False
        return hmac.compare_digest(presented.encode(), self._secret)

    def __repr__(self) -> str:
        return f"WebhookAuthenticator(mode={self.mode!r}, name={self.name!r})"
