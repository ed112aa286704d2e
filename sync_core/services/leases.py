"""Record leases: one writer per record at a time, whether it is a queue worker or the pull.

Two writers that meet on one record would otherwise write Spotler in an order nobody chose (an older value
landing last). The lease is a row in Table Storage taken with an ETag condition; a push takes it for one change
(`claim`), so the same row tells a duplicate delivery and keeps the newest Dataverse version the record has seen,
and gives it back with the change completed in one write. It is short (a minute) and renewed while its holder
works, so a holder that dies blocks the record for about a minute, not for as long as the longest push could take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync_core.domain.ports import RecordClaim, StateStore
from sync_core.domain.records import EntityName

log = logging.getLogger("sync_core.leases")

POLL_SECONDS = 0.2
DEFAULT_TTL = timedelta(minutes=1)
"""How long a lease outlives a holder that stopped renewing it (crashed, killed, cut off from storage)."""


RECORD_PREFIX = "record/"


def lease_name(entity: EntityName, record_id: str) -> str:
    """A record's lease row; it stays once given back (it keeps what the record has seen)."""
    return f"{RECORD_PREFIX}{entity}/{record_id}"


@dataclass(slots=True)
class _Held:
    name: str
    owner: str
    token: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: bool = False


class RecordLeases:
    """Takes, renews and gives back leases on `state`.

    A lease taken here is renewed every `ttl / 3` while it is held (one background task per event loop, alive
    only while something is held); giving it back stops the renewal. The token a caller got from `take` stays
    valid for `give_back` even though each renewal gives the row a new ETag.
    """

    def __init__(
        self,
        state: StateStore,
        clock: Callable[[], datetime],
        ttl: timedelta = DEFAULT_TTL,
        wait: timedelta = timedelta(seconds=10),
        *,
        renew_every: timedelta | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.ttl = ttl
        self.wait = wait
        self.renew_every = renew_every or ttl / 3
        self._held: dict[str, _Held] = {}
        self._renewer: asyncio.Task[None] | None = None

    async def take(self, entity: EntityName, record_id: str, owner: str) -> str | None:
        """The record's lease token, waiting up to `wait` for a holder that is about to finish; None if busy."""
        return await self.take_named(lease_name(entity, record_id), owner)

    async def take_named(self, name: str, owner: str) -> str | None:
        """A lease on any name (e.g. a person's e-mail hash), waiting up to `wait`; None if busy."""
        polls = max(1, math.ceil(self.wait.total_seconds() / POLL_SECONDS))
        for poll in range(polls):
            token = await self.state.acquire_lease(
                name, owner=owner, now=self.clock(), ttl=self.ttl, existing=name.startswith(RECORD_PREFIX)
            )
            if token is not None:
                self._held[token] = _Held(name, owner, token)
                self._start_renewing()
                return token
            if poll + 1 < polls:
                await asyncio.sleep(POLL_SECONDS)
        return None

    async def claim(
        self, entity: EntityName, record_id: str, owner: str, key: str, *, existing: bool = False
    ) -> RecordClaim | None:
        """The record's lease taken for the change `key` (the delivery claim and the lease are one row), waiting up
        to `wait`; None if busy; a claim without a token when `key` is a duplicate (nothing is held then)."""
        name = lease_name(entity, record_id)
        polls = max(1, math.ceil(self.wait.total_seconds() / POLL_SECONDS))
        for poll in range(polls):
            claim = await self.state.claim_record(
                name, key, owner=owner, now=self.clock(), ttl=self.ttl, existing=existing
            )
            if claim is not None:
                if claim.token is not None:
                    self._held[claim.token] = _Held(name, owner, claim.token)
                    self._start_renewing()
                return claim
            if poll + 1 < polls:
                await asyncio.sleep(POLL_SECONDS)
        return None

    async def give_back(
        self,
        entity: EntityName,
        record_id: str,
        token: str,
        *,
        done: tuple[str, ...] | None = None,
        version: int | None = None,
        modified_on: datetime | None = None,
    ) -> None:
        """Give a record's lease back in one write; with `done`, the keys completed on it (see `claim`)."""
        name = lease_name(entity, record_id)
        held = self._held.pop(token, None)
        if held is None:
            await self.state.free_record(name, token, done=done, version=version, modified_on=modified_on)
            return
        async with held.lock:  # never while a renewal is on its way: it would take the lease again
            held.released = True
            await self.state.free_record(name, held.token, done=done, version=version, modified_on=modified_on)
        if not self._held and self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def give_back_named(self, name: str, token: str) -> None:
        held = self._held.pop(token, None)
        if held is None:
            await self.state.release_lease(name, token)
            return
        async with held.lock:  # never while a renewal is on its way: it would take the lease again
            held.released = True
            await self.state.release_lease(name, held.token)
        if not self._held and self._renewer is not None:
            self._renewer.cancel()  # nothing left to renew; the next take starts it again
            self._renewer = None

    @property
    def held(self) -> int:
        """Leases held (and renewed) by this process right now."""
        return len(self._held)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        while self._held:
            await asyncio.sleep(self.renew_every.total_seconds())
            for held in list(self._held.values()):
                await self._renew(held)

    async def _renew(self, held: _Held) -> None:
        async with held.lock:
            if held.released:
                return
            try:
                token = await self.state.acquire_lease(held.name, owner=held.owner, now=self.clock(), ttl=self.ttl)
            except Exception:
                log.warning("could not renew a lease; retried at the next renewal", exc_info=True)
                return
            if token is None:
                log.warning("a lease expired before it was renewed and another holder took it")
                return
            held.token = token

    async def aclose(self) -> None:
        """Stop renewing (the process is shutting down); held leases expire by themselves."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def email_lease_name(email_hash: str) -> str:
    """Pushes that touch one person's address are serialized: Spotler merges by e-mail address."""
    return f"email/{email_hash}"
