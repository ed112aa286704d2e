"""Storage unreachable: the webhook answers 503 within 10 s (Dataverse waits 60 s), the worker's calls fail fast.

Two kinds of outage on loopback: a port nobody listens on (connection refused) and a black hole that accepts
connections and never answers (a hung account or network path). The clients are made by the same factories
the runtime uses.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync_core.dataverse.auth import WebhookAuthenticator
from sync_core.domain.mapping import default_mapping
from sync_core.services.intake import WebhookIntake
from sync_core.state.queue import EventQueue
from sync_core.state.tables import TableStateStore
from tests.fixtures.azurite import connection_string

DATA = Path(__file__).resolve().parents[1] / "data" / "webhooks"
KEY = "outage-test-key"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


@pytest.fixture
async def black_hole() -> AsyncIterator[int]:
    """A server that accepts every connection, reads what it is sent and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    for writer in held:
        writer.close()
    server.close()


def _intake(queue: EventQueue) -> WebhookIntake:
    return WebhookIntake(
        authenticator=WebhookAuthenticator("webhook_key", KEY),
        sink=queue,
        max_bytes=1_048_576,
        mapping=default_mapping(),
    )


async def _deliver_to(port: int) -> tuple[int, float]:
    queue = EventQueue.from_connection_string(connection_string("127.0.0.1", port, port, port), "sync-events")
    body = (DATA / "update_with_preimage.json").read_bytes()
    started = time.monotonic()
    try:
        result = await _intake(queue).accept(body, {}, {"code": KEY})
    finally:
        await queue.aclose()
    return result.status, time.monotonic() - started


async def test_webhook_answers_503_within_10_seconds_when_storage_refuses_connections() -> None:
    status, elapsed = await _deliver_to(_closed_port())
    assert status == 503
    assert elapsed < 10


async def test_webhook_answers_503_within_10_seconds_when_storage_never_answers(black_hole: int) -> None:
    status, elapsed = await _deliver_to(black_hole)
    assert status == 503
    assert elapsed < 10


async def test_worker_storage_calls_fail_within_bounded_time_when_storage_never_answers(black_hole: int) -> None:
    store = TableStateStore.from_connection_string(connection_string("127.0.0.1", black_hole, black_hole, black_hole))
    started = time.monotonic()
    try:
        with pytest.raises(Exception):  # noqa: B017,PT011  # whatever the SDK raises: the queue retries the message
            await store.get_link("contact", "6d81597f-0f9f-e711-8122-000d3aa2331c")
    finally:
        await store.aclose()
    assert time.monotonic() - started < 20
