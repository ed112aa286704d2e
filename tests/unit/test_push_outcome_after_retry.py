"""A retry that succeeds leaves an outcome on the record, not the transient error of the attempt before."""

from __future__ import annotations

import dataclasses

import pytest

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind
from sync_core.services.push import PushService, RetryLater
from sync_core.spotler.errors import SpotlerTimeout
from tests.unit.domain_builders import options
from tests.unit.service_fakes import APP_USER, World, change, row_attributes
from tests.unit.test_identity_services import MAPPING

C1 = "0a000000-0000-4000-8000-000000000001"


def push_of(world: World) -> PushService:
    return PushService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=MAPPING,
        options=options(),
        clock=world.clock,
        app_user_id=APP_USER,
    )


async def test_a_delete_of_a_record_never_linked_ends_its_transient_error_when_the_retry_succeeds() -> None:
    world = World()
    world.clock.advance(seconds=1)
    delete = dataclasses.replace(
        change(C1, {}, kind=ChangeKind.DELETE, version=3, modified_on=world.clock.now()),
        attributes=row_attributes(C1, emailaddress1="ada@example.com"),
    )
    world.spotler.fail("get_contact", SpotlerTimeout("no answer in time"))
    with pytest.raises(RetryLater):
        await push_of(world).handle(delete, owner="first")
    history = await world.state.list_status("contact", C1)
    assert [h.reason for h in history] == [ReasonCode.TRANSIENT_ERROR]

    world.clock.advance(seconds=1)
    await push_of(world).handle(delete, owner="retry")

    newest = max(await world.state.list_status("contact", C1), key=lambda h: h.at)
    assert (newest.reason, newest.detail) == (ReasonCode.SYNCED, "deleted; never synced")


async def test_a_stale_change_whose_first_attempt_failed_leaves_the_record_its_last_outcome() -> None:
    # A reordered, older change fails before it can be told stale; its retry finds it stale and applies nothing.
    # The record's status must not stay the transient error of a change that never mattered.
    world = World()
    push = world.push()
    await push.handle(change(C1, version=2, key="create"), owner="create")
    stale = change(C1, {"jobtitle": "Clerk"}, kind=ChangeKind.UPDATE, version=1, key="stale")
    world.spotler.fail("get_contact", SpotlerTimeout("no answer in time"))
    world.clock.advance(seconds=1)
    with pytest.raises(RetryLater):
        await push.handle(stale, owner="first")
    newest = max(await world.state.list_status("contact", C1), key=lambda h: h.at)
    assert newest.reason is ReasonCode.TRANSIENT_ERROR

    world.clock.advance(seconds=1)
    outcome = await push.handle(stale, owner="retry")

    assert outcome.detail == "stale event ignored"
    newest = max(await world.state.list_status("contact", C1), key=lambda h: h.at)
    assert (newest.reason, newest.action, newest.external_id) == (ReasonCode.CREATED, "create", C1)
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert (link.reason, link.failures, link.next_retry) == (ReasonCode.CREATED, 0, None)
