"""The command line's driver of the bulk queue: a pipeline of handlers that outlives storage hiccups."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from sync_core.services.bulk import DRIVER_ATTEMPTS, LocalDriver


@dataclass
class Message:
    id: str
    pop_receipt: str
    text: str


@dataclass
class FlakyQueue:
    messages: list[Message]
    fail_receives: int = 0
    deleted: list[str] = field(default_factory=list)
    receives: int = 0

    async def receive(self, *, max_messages: int, visibility_timeout: int) -> list[Message]:
        del visibility_timeout
        self.receives += 1
        if self.fail_receives:
            self.fail_receives -= 1
            raise TimeoutError("Timeout on reading data from socket")
        taken, self.messages = self.messages[:max_messages], self.messages[max_messages:]
        return taken

    async def delete(self, message_id: str, receipt: str) -> None:
        del receipt
        self.deleted.append(message_id)


class FakeEngine:
    def __init__(self, queue: FlakyQueue, total: int, slow: str | None = None) -> None:
        self.queue = queue
        self.handled: list[str] = []
        self.total = total
        self.slow = slow

    async def handle(self, text: str) -> None:
        await asyncio.sleep(0.5 if text == self.slow else 0.01)
        self.handled.append(text)

    async def run_doc(self, run_id: str) -> dict[str, Any]:
        return {"id": run_id, "phase": "done" if len(self.handled) >= self.total else "apply"}


def messages(n: int) -> list[Message]:
    return [Message(str(i), "r", f'{{"t":"item","n":{i}}}') for i in range(n)]


async def test_a_storage_timeout_is_retried_not_fatal() -> None:
    queue = FlakyQueue(messages(5), fail_receives=2)
    engine = FakeEngine(queue, total=5)
    doc = await LocalDriver(engine, concurrency=2).run_until_done("run", poll=0.01)  # type: ignore[arg-type]
    assert doc["phase"] == "done"
    assert sorted(queue.deleted) == [str(i) for i in range(5)]


async def test_storage_that_stays_away_ends_the_command() -> None:
    queue = FlakyQueue(messages(1), fail_receives=DRIVER_ATTEMPTS)
    engine = FakeEngine(queue, total=1)
    with pytest.raises(TimeoutError):
        await LocalDriver(engine).run_until_done("run", poll=0.001)  # type: ignore[arg-type]


async def test_one_slow_message_does_not_hold_up_the_others() -> None:
    queue = FlakyQueue(messages(12))
    engine = FakeEngine(queue, total=12, slow='{"t":"item","n":0}')
    await LocalDriver(engine, concurrency=3).run_until_done("run", poll=0.01)  # type: ignore[arg-type]
    # The slow first message is still in flight while the other two slots work through the rest.
    assert engine.handled.index('{"t":"item","n":0}') >= 8
