"""Spotler Mail+ REST adapter: `SpotlerClient` implements `sync_core.domain.ports.SpotlerGateway`."""

from sync_core.spotler.client import SpotlerClient
from sync_core.spotler.errors import (
    SpotlerAuthError,
    SpotlerConnectionError,
    SpotlerContactExists,
    SpotlerContactOptedOut,
    SpotlerError,
    SpotlerInvalidData,
    SpotlerNotFound,
    SpotlerPermanentError,
    SpotlerRateLimited,
    SpotlerTimeout,
    SpotlerTransientError,
)
from sync_core.spotler.signing import OAuth1Signer

__all__ = [
    "OAuth1Signer",
    "SpotlerAuthError",
    "SpotlerClient",
    "SpotlerConnectionError",
    "SpotlerContactExists",
    "SpotlerContactOptedOut",
    "SpotlerError",
    "SpotlerInvalidData",
    "SpotlerNotFound",
    "SpotlerPermanentError",
    "SpotlerRateLimited",
    "SpotlerTimeout",
    "SpotlerTransientError",
]
