"""Record leases are short and renewed: a crashed holder blocks its record for about a minute, a slow one never
loses its lease while it works."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sync_core.domain.reasons import ReasonCode
from sync_core.services.leases import DEFAULT_TTL, RecordLeases, lease_name
from sync_core.services.push import RetryLater
from sync_core.state.memory import InMemoryStateStore
from tests.unit.service_fakes import World, change

ID = "3f2a1c4e-0000-4000-8000-0000000000aa"


def wall_clock() -> datetime:
    return datetime.now(UTC)


async def test_a_crashed_workers_record_lease_delays_the_next_change_by_about_a_minute() -> None:
    world = World()
    # The worker that took the lease died mid-push: nobody gives it back or renews it.
    crashed = RecordLeases(world.state, world.clock)
    assert await crashed.take("contact", ID, "msg-crashed") is not None
    await crashed.aclose()  # its process is gone: renewal stops with it
    push = world.push(lease_wait=timedelta(0))

    world.clock.advance(seconds=50)
    with pytest.raises(RetryLater, match="another change of this record"):
        await push.handle(change(ID), owner="msg-next")
    world.clock.advance(seconds=11)  # 61 s after the crash
    outcome = await push.handle(change(ID), owner="msg-next")

    assert timedelta(minutes=1) >= DEFAULT_TTL
    assert outcome.reason is ReasonCode.CREATED


async def test_a_lease_is_renewed_while_its_holder_works_and_expires_soon_after_it_stops() -> None:
    state = InMemoryStateStore()
    ttl = timedelta(seconds=0.6)
    holder = RecordLeases(state, wall_clock, ttl=ttl, renew_every=timedelta(seconds=0.15))
    token = await holder.take("contact", ID, "slow-worker")
    assert token is not None

    await asyncio.sleep(1.5)  # far longer than the TTL: renewal keeps the lease
    assert await state.acquire_lease(lease_name("contact", ID), owner="other", now=wall_clock(), ttl=ttl) is None

    await holder.aclose()  # the holder dies without giving the lease back
    await asyncio.sleep(0.8)
    assert await state.acquire_lease(lease_name("contact", ID), owner="other", now=wall_clock(), ttl=ttl) is not None


async def test_giving_a_renewed_lease_back_frees_it_at_once_and_stops_renewing() -> None:
    state = InMemoryStateStore()
    ttl = timedelta(seconds=0.6)
    holder = RecordLeases(state, wall_clock, ttl=ttl, renew_every=timedelta(seconds=0.1))
    token = await holder.take("contact", ID, "worker")
    assert token is not None
    await asyncio.sleep(0.35)  # renewed a few times: the row's ETag is no longer `token`

    await holder.give_back("contact", ID, token)
    await asyncio.sleep(0.3)  # a renewal after the give-back would take the lease again

    assert holder.held == 0
    assert await state.acquire_lease(lease_name("contact", ID), owner="other", now=wall_clock(), ttl=ttl) is not None
