"""The durable event queue (Azure Storage queue) between the webhook and the push worker.

Messages are text, sent base64-encoded: that is what the Functions queue trigger expects by default
(`messageEncoding: base64`). `InMemoryEventQueue` is a twin with the same methods and limits.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from sync_core.state.bounds import queue_client_options

MAX_ENCODED_MESSAGE_BYTES = 64 * 1024
"""A queue message is at most 64 KiB as stored, i.e. after base64 encoding."""

MAX_BATCH = 32
"""The queue service hands out at most 32 messages per request."""

_QUEUE_NAME_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class ReceivedMessage(NamedTuple):
    id: str
    pop_receipt: str
    text: str
    dequeue_count: int


def validate_queue_name(name: str) -> str:
    if not _QUEUE_NAME_RE.match(name):
        raise ValueError(
            "queue name must be 3-63 lower-case letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def encoded_size(message: str) -> int:
    """Bytes the message occupies in the queue once base64-encoded."""
    return 4 * ((len(message.encode("utf-8")) + 2) // 3)


class MessageTooLarge(ValueError):
    """The message does not fit in one queue message."""


def check_message_size(message: str) -> None:
    size = encoded_size(message)
    if size > MAX_ENCODED_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"queue message is {size} bytes base64-encoded; a queue message may be at most "
            f"{MAX_ENCODED_MESSAGE_BYTES} bytes"
        )


def _batch_size(max_messages: int) -> int:
    if not 1 <= max_messages <= MAX_BATCH:
        raise ValueError(f"max_messages must be between 1 and {MAX_BATCH}")
    return max_messages


class EventQueue:
    """Text messages on an Azure Storage queue, base64-encoded."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client

    @classmethod
    def from_connection_string(cls, conn: str, queue_name: str) -> EventQueue:
        client = QueueClient.from_connection_string(
            conn,
            validate_queue_name(queue_name),
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
            **queue_client_options(),
        )
        return cls(client)

    @classmethod
    def from_account(
        cls,
        account_name: str,
        credential: AsyncTokenCredential,
        queue_name: str,
        *,
        endpoint_suffix: str = "core.windows.net",
    ) -> EventQueue:
        client = QueueClient(
            f"https://{account_name}.queue.{endpoint_suffix}",
            validate_queue_name(queue_name),
            credential=credential,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
            **queue_client_options(),
        )
        return cls(client)

    @property
    def queue_name(self) -> str:
        return str(self._client.queue_name)

    async def ensure_ready(self) -> None:
        """Create the queue if it does not exist (idempotent)."""
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_queue()

    async def send(self, message: str) -> str:
        """Enqueue `message`; its message id. ValueError when it is too large for the queue."""
        check_message_size(message)
        sent = await self._client.send_message(message)
        return str(sent.id)

    async def send_later(self, message: str, delay_seconds: int) -> str:
        """Enqueue `message` invisible for `delay_seconds` (at most 7 days); a fresh message, dequeue count 0."""
        check_message_size(message)
        sent = await self._client.send_message(message, visibility_timeout=max(0, min(delay_seconds, 604800)))
        return str(sent.id)

    async def peek(self, max_messages: int = 1) -> list[str]:
        """The texts of up to `max_messages` visible messages, without receiving them."""
        messages = await self._client.peek_messages(max_messages=_batch_size(max_messages))
        return [str(message.content) for message in messages]

    async def receive(self, max_messages: int = 1, visibility_timeout: int = 30) -> list[ReceivedMessage]:
        """Up to `max_messages` visible messages, hidden for `visibility_timeout` seconds."""
        received: list[ReceivedMessage] = []
        pages = self._client.receive_messages(
            messages_per_page=_batch_size(max_messages),
            visibility_timeout=visibility_timeout,
            max_messages=max_messages,
        )
        async for message in pages:
            received.append(
                ReceivedMessage(
                    id=str(message.id),
                    pop_receipt=str(message.pop_receipt),
                    text=str(message.content),
                    dequeue_count=int(message.dequeue_count or 0),
                )
            )
        return received

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        """Delete a received message.

        ResourceNotFoundError when the message is gone; HttpResponseError (400, PopReceiptMismatch) when the
        pop receipt is not the latest one (the message was received again since).
        """
        await self._client.delete_message(message_id, pop_receipt)

    async def release(self, message_id: str, pop_receipt: str) -> None:
        """Make a received message visible again at once (it keeps its dequeue count)."""
        await self._client.update_message(message_id, pop_receipt, visibility_timeout=0)

    async def keep_hidden(self, message_id: str, pop_receipt: str, visibility_timeout: int) -> str:
        """Hide a received message for another `visibility_timeout` seconds (its handler still runs); the new
        pop receipt, which the next delete or update needs."""
        updated = await self._client.update_message(message_id, pop_receipt, visibility_timeout=visibility_timeout)
        return str(updated.pop_receipt)

    async def count(self) -> int:
        """Approximate number of messages, including ones currently received and hidden."""
        properties = await self._client.get_queue_properties()
        return int(properties.approximate_message_count or 0)

    async def oldest_age(self, now: datetime) -> float | None:
        """Seconds since the oldest visible message was queued (None when none is visible)."""
        messages = await self._client.peek_messages(max_messages=1)
        inserted = messages[0].inserted_on if messages else None
        return None if inserted is None else max(0.0, (now - inserted).total_seconds())

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass
class _Message:
    id: str
    text: str
    visible_at: float
    dequeue_count: int = 0
    pop_receipt: str = ""


class InMemoryEventQueue:
    """The in-memory twin of `EventQueue`: visibility timeouts, pop receipts, dequeue counts, size limit."""

    def __init__(self, queue_name: str = "events", *, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = validate_queue_name(queue_name)
        self._clock = clock
        self._messages: list[_Message] = []
        self._ids = itertools.count(1)
        self.closed = False

    @property
    def queue_name(self) -> str:
        return self._name

    async def ensure_ready(self) -> None:
        return None

    async def send(self, message: str) -> str:
        check_message_size(message)
        message_id = f"{next(self._ids):08d}-{uuid.uuid4()}"
        self._messages.append(_Message(id=message_id, text=message, visible_at=self._clock()))
        return message_id

    async def send_later(self, message: str, delay_seconds: int) -> str:
        check_message_size(message)
        message_id = f"{next(self._ids):08d}-{uuid.uuid4()}"
        self._messages.append(_Message(id=message_id, text=message, visible_at=self._clock() + max(0, delay_seconds)))
        return message_id

    def _visible(self) -> list[_Message]:
        now = self._clock()
        return [message for message in self._messages if message.visible_at <= now]

    async def peek(self, max_messages: int = 1) -> list[str]:
        return [message.text for message in self._visible()[: _batch_size(max_messages)]]

    async def receive(self, max_messages: int = 1, visibility_timeout: int = 30) -> list[ReceivedMessage]:
        received: list[ReceivedMessage] = []
        for message in self._visible()[: _batch_size(max_messages)]:
            message.dequeue_count += 1
            message.pop_receipt = uuid.uuid4().hex
            message.visible_at = self._clock() + visibility_timeout
            received.append(ReceivedMessage(message.id, message.pop_receipt, message.text, message.dequeue_count))
        return received

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        for index, message in enumerate(self._messages):
            if message.id != message_id:
                continue
            if not message.pop_receipt or message.pop_receipt != pop_receipt:
                error = HttpResponseError("The specified pop receipt did not match the pop receipt of the message.")
                error.status_code = 400
                raise error
            del self._messages[index]
            return
        raise ResourceNotFoundError("The specified message does not exist.")

    async def release(self, message_id: str, pop_receipt: str) -> None:
        for message in self._messages:
            if message.id == message_id and message.pop_receipt == pop_receipt:
                message.visible_at = self._clock()
                return
        raise ResourceNotFoundError("The specified message does not exist.")

    async def keep_hidden(self, message_id: str, pop_receipt: str, visibility_timeout: int) -> str:
        for message in self._messages:
            if message.id == message_id and message.pop_receipt == pop_receipt:
                message.pop_receipt = uuid.uuid4().hex
                message.visible_at = self._clock() + visibility_timeout
                return message.pop_receipt
        raise ResourceNotFoundError("The specified message does not exist.")

    async def count(self) -> int:
        return len(self._messages)

    async def oldest_age(self, now: datetime) -> float | None:
        """No wall-clock insertion times in memory: the age is not known."""
        return None

    def texts(self) -> list[str]:
        """Every message still in the queue, visible or not (for test assertions)."""
        return [message.text for message in self._messages]

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
