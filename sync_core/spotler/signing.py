"""OAuth 1.0a two-legged (consumer key + secret, no token) HMAC-SHA1 signing for Spotler requests.

The signature covers the method, the URL and its query parameters; the JSON body is deliberately left out
(Spotler verifies form bodies only, and oauthlib would otherwise add an `oauth_body_hash`). Sign the exact URL
that goes on the wire, and sign again for every retry so each attempt carries a fresh nonce and timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_AUTH_HEADER, SIGNATURE_TYPE_QUERY, Client
from pydantic import SecretStr

SignatureType = Literal["header", "query"]


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What to send: the URL (changed only for query signing) and the headers to add."""

    url: str
    headers: dict[str, str]


class OAuth1Signer:
    """Signs a method + URL with the consumer credentials.

    `nonce_factory` and `timestamp_factory` exist for deterministic tests; by default oauthlib generates a
    random nonce and the current Unix time for every call.
    """

    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str | SecretStr,
        signature_type: SignatureType = "header",
        nonce_factory: Callable[[], str] | None = None,
        timestamp_factory: Callable[[], str] | None = None,
    ) -> None:
        if not consumer_key:
            raise ValueError("consumer_key must not be empty")
        secret = consumer_secret.get_secret_value() if isinstance(consumer_secret, SecretStr) else consumer_secret
        if not secret:
            raise ValueError("consumer_secret must not be empty")
        if signature_type not in ("header", "query"):
            raise ValueError(f"unknown signature_type {signature_type!r}")
        self._key = consumer_key
        self._secret = SecretStr(secret)
        self._signature_type = signature_type
        self._nonce_factory = nonce_factory
        self._timestamp_factory = timestamp_factory

    def __repr__(self) -> str:
        return f"OAuth1Signer(signature_type={self._signature_type!r})"

    def sign(self, method: str, url: str) -> SignedRequest:
        """Sign `method url` (query included); returns the URL to request and the headers to add."""
        client = Client(
            self._key,
            client_secret=self._secret.get_secret_value(),
            signature_method=SIGNATURE_HMAC_SHA1,
            signature_type=(SIGNATURE_TYPE_AUTH_HEADER if self._signature_type == "header" else SIGNATURE_TYPE_QUERY),
            nonce=self._nonce_factory() if self._nonce_factory else None,
            timestamp=self._timestamp_factory() if self._timestamp_factory else None,
        )
        # No body and no Content-Type: the JSON body is not part of the signature (see module docstring).
        signed_url, headers, _ = client.sign(url, http_method=method.upper())
        return SignedRequest(url=str(signed_url), headers={str(k): str(v) for k, v in headers.items()})

    def sensitive_values(self) -> tuple[str, str]:
        """The key and secret, for log redaction only."""
        return self._key, self._secret.get_secret_value()
