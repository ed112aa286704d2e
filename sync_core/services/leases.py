"""Record leases: one writer per record at a time, whether it is a queue worker or the pull.

Two writers that meet on one record would otherwise write Spotler in an order nobody chose (an older value
landing last). The lease is a row in Table Storage taken with an ETag condition; it expires by itself when
its holder dies.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync_core.ports import StateStore
from sync_core.records import EntityName

POLL_SECONDS = 0.2


def lease_name(entity: EntityName, record_id: str) -> str:
    return f"record/{entity}/{record_id}"


@dataclass(frozen=True, slots=True)
class RecordLeases:
    """Takes and gives back record leases on `state`."""

    state: StateStore
    clock: Callable[[], datetime]
    ttl: timedelta = timedelta(minutes=5)
    wait: timedelta = timedelta(seconds=10)

    async def take(self, entity: EntityName, record_id: str, owner: str) -> str | None:
        """The record's lease token, waiting up to `wait` for a holder that is about to finish; None if busy."""
        return await self.take_named(lease_name(entity, record_id), owner)

    async def take_named(self, name: str, owner: str) -> str | None:
        """A lease on any name (e.g. a person's e-mail hash), waiting up to `wait`; None if busy."""
        polls = max(1, math.ceil(self.wait.total_seconds() / POLL_SECONDS))
        for poll in range(polls):
            token = await self.state.acquire_lease(name, owner=owner, now=self.clock(), ttl=self.ttl)
            if token is not None:
                return token
            if poll + 1 < polls:
                await asyncio.sleep(POLL_SECONDS)
        return None

    async def give_back(self, entity: EntityName, record_id: str, token: str) -> None:
        await self.state.release_lease(lease_name(entity, record_id), token)

    async def give_back_named(self, name: str, token: str) -> None:
        await self.state.release_lease(name, token)


def email_lease_name(email_hash: str) -> str:
    """Pushes that touch one person's address are serialized: Spotler merges by e-mail address."""
    return f"email/{email_hash}"
