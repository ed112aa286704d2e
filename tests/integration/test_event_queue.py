"""The event queue on Azurite and its in-memory twin: same methods, same encoding limits, same behaviour."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from sync_core.state import EventQueue, InMemoryEventQueue
from sync_core.state.queue import MAX_ENCODED_MESSAGE_BYTES, encoded_size
from tests.fixtures.azurite import AzuriteInstance, azurite, storage_prefix  # noqa: F401

AnyQueue = EventQueue | InMemoryEventQueue

EVENT = '{"entity":"contact","record_id":"6f1c2a9e","kind":"update","attributes":{"firstname":"Zoë"}}'


def queue_name(prefix: str) -> str:
    return f"{prefix}-events"


@pytest.fixture(params=["azure", "memory"])
async def queue(request: pytest.FixtureRequest, storage_prefix: str) -> AsyncIterator[AnyQueue]:  # noqa: F811
    if request.param == "azure":
        instance: AzuriteInstance = request.getfixturevalue("azurite")
        azure_queue = EventQueue.from_connection_string(instance.connection_string, queue_name(storage_prefix))
        async with azure_queue:
            await azure_queue.ensure_ready()
            await azure_queue.ensure_ready()  # idempotent
            yield azure_queue
    else:
        async with InMemoryEventQueue(queue_name(storage_prefix)) as memory_queue:
            await memory_queue.ensure_ready()
            yield memory_queue


async def test_send_peek_receive_delete_round_trip(queue: AnyQueue) -> None:
    assert await queue.count() == 0
    assert await queue.peek(5) == []
    ids = [await queue.send(text) for text in (EVENT, "second", "third ✓")]
    assert len(set(ids)) == 3
    assert all(ids)
    assert await queue.count() == 3

    assert await queue.peek(2) == [EVENT, "second"]
    assert await queue.peek(32) == [EVENT, "second", "third ✓"]  # peeking does not receive

    received = await queue.receive(2, visibility_timeout=30)
    assert [m.text for m in received] == [EVENT, "second"]
    assert [m.id for m in received] == ids[:2]
    assert all(m.dequeue_count == 1 for m in received)
    assert all(m.pop_receipt for m in received)
    assert await queue.peek(5) == ["third ✓"]  # received messages are hidden
    assert await queue.count() == 3  # but still counted

    for message in received:
        await queue.delete(message.id, message.pop_receipt)
    assert await queue.count() == 1
    rest = await queue.receive(32, visibility_timeout=30)
    assert [(m.id, m.text) for m in rest] == [(ids[2], "third ✓")]
    message_id, pop_receipt, text, dequeue_count = rest[0]  # a plain tuple too
    assert (text, dequeue_count) == ("third ✓", 1)
    await queue.delete(message_id, pop_receipt)
    assert await queue.count() == 0
    assert await queue.receive(1) == []


async def test_redelivery_after_the_visibility_timeout(queue: AnyQueue) -> None:
    await queue.send(EVENT)
    first = (await queue.receive(1, visibility_timeout=1))[0]
    assert await queue.receive(1) == []
    await asyncio.sleep(1.3)
    second = (await queue.receive(1, visibility_timeout=30))[0]
    assert second.id == first.id
    assert second.dequeue_count == 2
    assert second.text == EVENT

    with pytest.raises(HttpResponseError) as stale:
        await queue.delete(first.id, first.pop_receipt)
    assert stale.value.status_code == 400
    await queue.delete(second.id, second.pop_receipt)
    with pytest.raises(ResourceNotFoundError):
        await queue.delete(second.id, second.pop_receipt)
    assert await queue.count() == 0


async def test_oversized_messages_are_rejected(queue: AnyQueue) -> None:
    largest = "x" * (MAX_ENCODED_MESSAGE_BYTES // 4 * 3)
    assert encoded_size(largest) == MAX_ENCODED_MESSAGE_BYTES
    await queue.send(largest)

    with pytest.raises(ValueError, match="65536"):
        await queue.send(largest + "x")
    with pytest.raises(ValueError, match="base64"):
        await queue.send("ü" * (len(largest) // 2 + 1))  # two UTF-8 bytes per character
    assert await queue.count() == 1
    assert await queue.peek(1) == [largest]


async def test_batch_sizes_follow_the_service_limits(queue: AnyQueue) -> None:
    for bad in (0, 33):
        with pytest.raises(ValueError, match="max_messages"):
            await queue.peek(bad)
        with pytest.raises(ValueError, match="max_messages"):
            await queue.receive(bad)


async def test_messages_are_base64_for_other_clients(azurite: AzuriteInstance, storage_prefix: str) -> None:  # noqa: F811
    name = queue_name(storage_prefix)
    async with EventQueue.from_connection_string(azurite.connection_string, name) as queue:
        await queue.ensure_ready()
        message_id = await queue.send(EVENT)

    async with QueueClient.from_connection_string(
        azurite.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
    ) as decoding:
        [peeked] = await decoding.peek_messages(max_messages=1)
        assert peeked.id == message_id
        assert peeked.content == EVENT

    async with QueueClient.from_connection_string(azurite.connection_string, name) as raw:
        [stored] = await raw.peek_messages(max_messages=1)
        assert stored.content == base64.b64encode(EVENT.encode("utf-8")).decode("ascii")


def test_invalid_queue_names_are_rejected() -> None:
    for name in ("ab", "Upper-case", "double--hyphen", "-leading", "trailing-", "x" * 64, "under_score"):
        with pytest.raises(ValueError, match="queue name"):
            InMemoryEventQueue(name)
        with pytest.raises(ValueError, match="queue name"):
            EventQueue.from_connection_string("UseDevelopmentStorage=true", name)


class _StaticToken:
    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("token", 2_000_000_000)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _StaticToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


async def test_from_account_targets_the_account_endpoint() -> None:
    async with EventQueue.from_account("mystorage", _StaticToken(), "sync-events") as queue:
        assert queue.queue_name == "sync-events"
        assert queue._client.url == "https://mystorage.queue.core.windows.net/sync-events"
