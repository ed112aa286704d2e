"""Check the static secret a Dataverse webhook registration sends. Dataverse webhooks carry no signature.

During a rotation two secrets are valid: the current one and the next one (the value the service endpoint is
being moved to), so no delivery is refused while Dataverse and the connector change over.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Literal

WebhookAuthMode = Literal["webhook_key", "http_header", "http_query_string"]

UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("
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

    def __init__(
        self, mode: WebhookAuthMode, secret: str, *, name: str | None = None, next_secret: str | None = None
    ) -> None:
        if mode not in _DEFAULT_NAMES:
            raise ValueError(f"unknown webhook authentication mode {mode!r}")
        if not secret:
            raise ValueError("the webhook secret must not be empty")
        if name is not None and not name.strip():
            raise ValueError("the header or query parameter name must not be empty")
        self.mode: WebhookAuthMode = mode
        self.name = "code" if mode == "webhook_key" else (name or _DEFAULT_NAMES[mode])
        self._secrets = [secret.encode()]
        # An unresolved Key Vault reference arrives as its own text: that must never become a valid key.
        if next_secret and not next_secret.startswith(UNRESOLVED_REFERENCE):
            self._secrets.append(next_secret.encode())

    def verify(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """True when the delivery carries the current or the next secret; constant-time, False when missing.

        Every secret is compared (no early exit), so the time taken does not tell which one matched.
        """
        if self.mode == "http_header":
            wanted = self.name.lower()
            presented = next((value for key, value in headers.items() if key.lower() == wanted), None)
        else:
            presented = query.get(self.name)
        if not isinstance(presented, str):
            return False
        value = presented.encode()
        matched = False
        for secret in self._secrets:
            matched |= hmac.compare_digest(value, secret)
        return matched

    def __repr__(self) -> str:
        return f"WebhookAuthenticator(mode={self.mode!r}, name={self.name!r})"
