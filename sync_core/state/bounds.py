"""Bounded retries and timeouts for every Azure Storage client the connector makes.

The SDKs' defaults retry for over a minute (the queue: 15 s + 18 s + 42 s of back-off), longer than Dataverse
waits for a webhook answer (60 s). The connector answers fast instead and lets the caller retry: Dataverse
re-delivers a webhook that got a 5xx, and the queue re-delivers a message whose worker failed.
"""

from __future__ import annotations

from typing import Any

CONNECTION_TIMEOUT_SECONDS = 2
"""Time to open a connection to the storage account (loopback or same region: far less is normal)."""

READ_TIMEOUT_SECONDS = 4
"""Time between bytes of one answer (storage answers a small request in milliseconds)."""

RETRY_TOTAL = 2
"""Retries after the first attempt, for errors the SDK deems transient."""

WEBHOOK_STORAGE_DEADLINE_SECONDS = 8.0
"""The webhook's whole storage budget: with storage unreachable the answer is a 503 within 10 s."""


def table_client_options() -> dict[str, Any]:
    """Keyword arguments for `TableServiceClient` (azure-core retry policy): at most ~3 attempts, ~1 s apart."""
    return {
        "retry_total": RETRY_TOTAL,
        "retry_backoff_factor": 0.4,
        "retry_backoff_max": 2,
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
    }


def queue_client_options() -> dict[str, Any]:
    """Keyword arguments for the storage SDK's clients (the async `QueueClient`, the mapping's `BlobClient`),
    which build their own exponential retry policy from them: back-off of ~0.5 s, then ~2 s."""
    return {
        "initial_backoff": 0.5,
        "increment_base": 1.5,
        "retry_total": RETRY_TOTAL,
        "random_jitter_range": 0.5,
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
    }
