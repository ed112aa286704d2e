"""PushService on the in-memory state store and fake gateways: claims, leases, failures, status and ordering."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from sync_core.dataverse.errors import DataverseNotFound, DataverseTransient
from sync_core.domain.errors import SyncError
from sync_core.domain.ports import RecordClaim
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind
from sync_core.services.guard import InMemoryDecisionLog, MassChangeGuard
from sync_core.services.leases import lease_name
from sync_core.services.push import PushOutcome, RetryLater, StatusColumns
from sync_core.spotler.errors import SpotlerInvalidData, SpotlerRateLimited, SpotlerTransientError
from tests.unit.domain_builders import T0, hashed
from tests.unit.service_fakes import APP_USER, World, YieldingStateStore, change

ID = "3f2a1c4e-0000-4000-8000-000000000001"
OTHER = "3f2a1c4e-0000-4000-8000-000000000002"
STATUS = StatusColumns("sync_spotlerstatus", "sync_spotlerstatusdetail", "sync_spotlerlastsynced")
WRITES = ("insert_contact", "insert_contacts", "update_contact", "anonymize_contact")


def writes(world: World) -> int:
    return sum(world.spotler.calls[m] for m in WRITES)


async def test_create_makes_the_contact_links_it_and_a_duplicate_delivery_writes_nothing() -> None:
    world = World()
    push = world.push()
    event = change(ID)

    outcome = await push.handle(event, owner="msg-1")

    assert outcome == PushOutcome("create", ReasonCode.CREATED, "created in Spotler", ID)
    contact = world.spotler.contact(ID)
    assert contact is not None
    assert contact.external_id == ID
    assert contact.properties["email"] == f"{ID}@example.com"
    assert contact.properties["firstName"] == "Ada"
    assert contact.properties["city"] == "London"
    assert contact.permissions == {1: True}
    assert contact.last_changed == T0
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert (link.external_id, link.reason, link.dv_version, link.email_hash) == (
        ID,
        ReasonCode.CREATED,
        1,
        hashed(f"{ID}@example.com"),
    )
    history = await world.state.list_status("contact", ID)
    assert [(s.reason, s.action, s.external_id) for s in history] == [(ReasonCode.CREATED, "create", ID)]
    calls_before = dict(world.spotler.calls)
    # No link: search by address (finds a contact under its own id or another holder), create, then confirm
    # where the create landed (Spotler merges by address). No GET of a contact that no link points to.
    assert calls_before == {"get_contact": 1, "search_by_email": 1, "insert_contact": 1}

    again = await push.handle(event, owner="msg-2")

    # The first message again (its worker stopped before deleting it): completed, so recognised too.
    redelivered = await push.handle(event, owner="msg-1")

    assert again == PushOutcome("ignored", None, "duplicate delivery")
    assert redelivered == PushOutcome("ignored", None, "duplicate delivery")
    assert dict(world.spotler.calls) == calls_before
    assert len(await world.state.list_status("contact", ID)) == 1


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (SpotlerTransientError("HTTP 503", status=503), None),
        (SpotlerRateLimited("Too many requests", retry_after=30.0), 30.0),
    ],
    ids=["5xx", "429"],
)
async def test_transient_failure_retries_later_releases_the_claim_and_the_retry_succeeds(
    error: SyncError, retry_after: float | None
) -> None:
    world = World()
    push = world.push()
    event = change(ID)
    world.spotler.fail("insert_contact", error, times=2)

    with pytest.raises(RetryLater) as first:
        await push.handle(event, owner="msg-1")

    assert first.value.retry_after == retry_after
    assert type(error).__name__ in str(first.value)
    assert world.spotler.contact(ID) is None
    assert await world.state.get_link("contact", ID) is None
    [failed] = await world.state.list_status("contact", ID)
    assert (failed.reason, failed.action) == (ReasonCode.TRANSIENT_ERROR, "failed")
    assert "(attempt 1, next attempt after" in failed.detail

    # The queue redelivers the same message: its owner claims the key again, and fails again.
    with pytest.raises(RetryLater):
        await push.handle(event, owner="msg-1")
    # Released, not merely still held by msg-1: another owner (a replay, a second copy) may take it.
    outcome = await push.handle(event, owner="msg-1-replay")

    assert outcome.action == "create"
    assert outcome.reason is ReasonCode.CREATED
    contact = world.spotler.contact(ID)
    assert contact is not None
    assert contact.properties["lastName"] == "Lovelace"
    assert world.spotler.calls["insert_contact"] == 3
    history = await world.state.list_status("contact", ID)
    assert [s.reason for s in history] == [ReasonCode.CREATED, ReasonCode.TRANSIENT_ERROR, ReasonCode.TRANSIENT_ERROR]
    assert await push.handle(event, owner="msg-1") == PushOutcome("ignored", None, "duplicate delivery")


async def test_transient_failure_of_a_linked_record_counts_its_failures_on_the_link() -> None:
    world = World()
    push = world.push()
    await world.linked(ID)
    update = change(ID, {"firstname": "Augusta"}, kind=ChangeKind.UPDATE, version=2)
    world.spotler.fail("update_contact", SpotlerTransientError("HTTP 502", status=502), times=2)

    for _ in range(2):
        with pytest.raises(RetryLater):
            await push.handle(update, owner="msg-2")
        world.clock.advance(seconds=30)

    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert (link.reason, link.failures) == (ReasonCode.TRANSIENT_ERROR, 2)
    # The second failure (at T0 + 30 s) waits twice the 30 s base.
    assert link.next_retry == T0 + timedelta(seconds=30) + timedelta(seconds=60)
    outcome = await push.handle(update, owner="msg-2")
    assert outcome.reason is ReasonCode.UPDATED
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert (link.reason, link.failures, link.next_retry, link.dv_version) == (ReasonCode.UPDATED, 0, None, 2)


async def test_permanent_failure_is_reported_and_dead_lettered_without_automatic_retry() -> None:
    world = World()
    push = world.push()
    event = change(ID)
    world.spotler.fail("insert_contact", SpotlerInvalidData("Email is invalid", status=400, code="INVALID_PARAMS"))

    outcome = await push.handle(event, owner="msg-1")

    assert outcome == PushOutcome("failed", ReasonCode.PERMANENT_ERROR, "Email is invalid")
    letter = await world.state.get_dead_letter("contact", event.idempotency_key)
    assert letter is not None
    assert (letter.error_class, letter.message, letter.attempts, letter.replays) == (
        "SpotlerInvalidData",
        "Email is invalid",
        1,
        0,
    )
    assert letter.next_retry is None
    assert (letter.first_failed, letter.last_failed) == (T0, T0)
    assert letter.event["id"] == ID
    assert await world.state.list_dead_letters(due_before=T0 + timedelta(days=365)) == []
    [status] = await world.state.list_status("contact", ID)
    assert (status.reason, status.action, status.detail) == (
        ReasonCode.PERMANENT_ERROR,
        "failed",
        "SpotlerInvalidData: Email is invalid",
    )
    assert world.spotler.contact(ID) is None
    # Released, not completed: an operator's replay can claim it again.
    replay = await world.state.claim_record(
        lease_name("contact", ID), event.idempotency_key, owner="replay:operator", now=T0, ttl=timedelta(minutes=1)
    )
    assert replay is not None
    assert not replay.duplicate


async def test_dead_letter_after_repeated_transient_failures_schedules_a_replay() -> None:
    world = World()
    push = world.push()
    await world.linked(ID)
    update = change(ID, {"jobtitle": "Countess"}, kind=ChangeKind.UPDATE, version=2)
    world.spotler.fail("update_contact", SpotlerTransientError("HTTP 503", status=503), times=5)
    caught: RetryLater | None = None
    for _ in range(5):
        with pytest.raises(RetryLater) as failure:
            await push.handle(update, owner="msg-7")
        caught = failure.value
    assert caught is not None
    parked_at = world.clock.advance(minutes=1)

    await push.dead_letter(update, caught, attempts=5, now=parked_at)

    letter = await world.state.get_dead_letter("contact", update.idempotency_key)
    assert letter is not None
    assert (letter.error_class, letter.attempts, letter.replays) == ("RetryLater", 5, 0)
    assert letter.message.startswith("SpotlerTransientError: HTTP 503")
    assert letter.first_failed == parked_at
    assert letter.next_retry == parked_at + timedelta(seconds=60)
    assert await world.state.list_dead_letters(due_before=parked_at + timedelta(seconds=59)) == []
    assert await world.state.list_dead_letters(due_before=parked_at + timedelta(seconds=60)) == [letter]
    newest = (await world.state.list_status("contact", ID))[0]
    assert (newest.reason, newest.action, newest.external_id) == (ReasonCode.TRANSIENT_ERROR, "dead_lettered", ID)
    assert update.idempotency_key in newest.detail
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert (link.reason, link.next_retry) == (ReasonCode.TRANSIENT_ERROR, parked_at + timedelta(seconds=60))

    # Parked again later (it failed once more after a replay): attempts add up, the first failure stays.
    later = world.clock.advance(minutes=5)
    await push.dead_letter(update, caught, attempts=2, now=later)
    again = await world.state.get_dead_letter("contact", update.idempotency_key)
    assert again is not None
    assert (again.attempts, again.first_failed, again.last_failed) == (7, parked_at, later)


@pytest.mark.parametrize(
    ("initiating", "user"),
    [(APP_USER.upper(), None), ("5a6b7c8d-0000-4000-8000-000000000002", APP_USER)],
    ids=["initiated-by-app-user", "made-by-app-user"],
)
async def test_change_made_by_the_app_user_is_ignored_without_calls(initiating: str, user: str | None) -> None:
    world = World()
    event = change(ID, initiating_user_id=initiating, user_id=user)

    outcome = await world.push(app_user_id=APP_USER).handle(event, owner="msg-1")

    assert outcome == PushOutcome("ignored", None, "change made by the connector itself")
    assert world.spotler.calls == {}
    assert world.dataverse.calls == {}
    assert await world.state.list_status("contact", ID) == []
    other = await world.state.claim_record(
        lease_name("contact", ID), event.idempotency_key, owner="someone-else", now=T0, ttl=timedelta(minutes=1)
    )
    assert other is not None
    assert not other.duplicate


async def test_held_record_lease_defers_the_change_until_it_is_released() -> None:
    world = World()
    push = world.push(lease_wait=timedelta(0))
    lease = f"record/contact/{ID}"
    token = await world.state.acquire_lease(lease, owner="other", now=T0, ttl=timedelta(minutes=5))
    assert token is not None
    event = change(ID)

    with pytest.raises(RetryLater, match="another change of this record"):
        await push.handle(event, owner="msg-1")

    assert world.spotler.calls == {}
    assert world.spotler.contact(ID) is None
    assert await world.state.list_status("contact", ID) == []
    await world.state.release_lease(lease, token)
    # The claim was given back: a different owner can take the event now.
    outcome = await push.handle(event, owner="msg-1-second-copy")
    assert outcome.reason is ReasonCode.CREATED
    assert world.spotler.contact(ID) is not None
    # And the push gave its own lease back.
    assert await world.state.acquire_lease(lease, owner="other", now=T0, ttl=timedelta(minutes=5)) is not None


async def test_lease_held_through_the_whole_wait_still_defers_the_change() -> None:
    world = World()
    push = world.push(lease_wait=timedelta(seconds=0.4))  # two polls, 0.2 s apart (real time)
    assert await world.state.acquire_lease(f"record/contact/{ID}", owner="other", now=T0, ttl=timedelta(minutes=5))
    polls: list[str] = []
    claim = world.state.claim_record

    async def counted(
        name: str, key: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> RecordClaim | None:
        polls.append(owner)
        return await claim(name, key, owner=owner, now=now, ttl=ttl, existing=existing)

    world.state.claim_record = counted  # type: ignore[method-assign]

    with pytest.raises(RetryLater):
        await push.handle(change(ID), owner="msg-1")

    assert polls == ["msg-1", "msg-1"]
    assert world.spotler.calls == {}


async def test_expired_record_lease_no_longer_blocks() -> None:
    world = World()
    push = world.push(lease_wait=timedelta(0))
    assert await world.state.acquire_lease(f"record/contact/{ID}", owner="crashed", now=T0, ttl=timedelta(minutes=5))

    with pytest.raises(RetryLater):
        await push.handle(change(ID), owner="msg-1")
    world.clock.advance(minutes=5)
    outcome = await push.handle(change(ID), owner="msg-1")

    assert outcome.reason is ReasonCode.CREATED


@pytest.mark.parametrize("wait", [True, False], ids=["waits-for-the-lease", "no-wait"])
async def test_two_workers_on_one_record_apply_one_change_at_a_time(wait: bool) -> None:
    world = World(state=YieldingStateStore())
    await world.linked(ID)
    first = change(ID, {"firstname": "Augusta"}, kind=ChangeKind.UPDATE, version=2)
    # The later save's full image carries the first change too.
    second = change(ID, {"firstname": "Augusta", "lastname": "King"}, kind=ChangeKind.UPDATE, version=3)
    lease_wait = None if wait else timedelta(0)
    world.spotler.log.clear()

    results = await asyncio.gather(
        world.push(lease_wait=lease_wait).handle(first, owner="worker-a"),
        world.push(lease_wait=lease_wait).handle(second, owner="worker-b"),
        return_exceptions=True,
    )

    if wait:
        # The second worker waited for the first to finish instead of going back to the queue.
        assert [type(r).__name__ for r in results] == ["PushOutcome", "PushOutcome"]
    else:
        assert [type(r).__name__ for r in results] == ["PushOutcome", "RetryLater"]
        assert (await world.push().handle(second, owner="worker-b")).reason is ReasonCode.UPDATED
    # Never interleaved: each change read and wrote Spotler before the other started.
    assert world.spotler.log == [("get_contact", ID), ("update_contact", ID)] * 2
    contact = world.spotler.contact(ID)
    assert contact is not None
    assert (contact.properties["firstName"], contact.properties["lastName"]) == ("Augusta", "King")


@pytest.mark.parametrize("ordering", ["version", "modified_on"])
async def test_older_event_after_a_newer_one_writes_nothing(ordering: str) -> None:
    world = World()
    push = world.push()
    by_version = ordering == "version"

    def at(version: int, hours: int) -> dict[str, Any]:
        """Order the events by row version only, or by modifiedon only."""
        return (
            {"version": version, "modified_on": None}
            if by_version
            else {
                "version": None,
                "modified_on": T0 + timedelta(hours=hours),
            }
        )

    await push.handle(change(ID, **at(1, 0)), owner="m1")
    newer = change(ID, {"firstname": "Augusta"}, kind=ChangeKind.UPDATE, **at(3, 2))
    older = change(ID, {"firstname": "Ada Byron"}, kind=ChangeKind.UPDATE, key="older-event", **at(2, 1))
    assert (await push.handle(newer, owner="m3")).reason is ReasonCode.UPDATED
    writes_before = writes(world)
    history_before = await world.state.list_status("contact", ID)

    outcome = await push.handle(older, owner="m2")

    assert outcome == PushOutcome("none", None, "stale event ignored")
    assert writes(world) == writes_before
    contact = world.spotler.contact(ID)
    assert contact is not None
    assert contact.properties["firstName"] == "Augusta"
    assert await world.state.list_status("contact", ID) == history_before
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert (link.dv_version, link.dv_modified_on) == ((3, None) if by_version else (None, T0 + timedelta(hours=2)))


async def test_status_columns_receive_the_reason_and_detail() -> None:
    world = World()
    push = world.push(status_columns=STATUS)
    world.dataverse.put_row("contact", ID, {"firstname": "Ada"})

    await push.handle(change(ID), owner="msg-1")
    world.spotler.fail("update_contact", SpotlerTransientError("HTTP 503", status=503))
    with pytest.raises(RetryLater):
        await push.handle(change(ID, {"firstname": "Augusta"}, kind=ChangeKind.UPDATE, version=2), owner="msg-2")

    written = [(w.method, w.changes) for w in world.dataverse.writes_to(ID)]
    assert written[0] == (
        "update_row",
        {
            "sync_spotlerstatus": ReasonCode.CREATED.option_value,
            "sync_spotlerstatusdetail": "created in Spotler",
            "sync_spotlerlastsynced": T0.isoformat().replace("+00:00", "Z"),
        },
    )
    # An error is not "in sync": the last-synced column keeps the time of the last outcome that was.
    assert written[1][1]["sync_spotlerstatus"] == ReasonCode.TRANSIENT_ERROR.option_value
    assert "sync_spotlerlastsynced" not in written[1][1]
    assert str(written[1][1]["sync_spotlerstatusdetail"]).startswith("SpotlerTransientError: HTTP 503 (attempt 1")
    assert len(written) == 2
    row = world.dataverse.row("contact", ID)
    assert row is not None
    assert row.attributes["sync_spotlerstatus"] == ReasonCode.TRANSIENT_ERROR.option_value


async def test_a_text_status_column_receives_the_reason_code_itself() -> None:
    world = World()
    push = world.push(status_columns=StatusColumns("sync_spotlerstatus", reason_as_text=True))
    world.dataverse.put_row("contact", ID, {"firstname": "Ada"})
    await push.handle(change(ID), owner="msg-1")
    assert [w.changes for w in world.dataverse.writes_to(ID)] == [{"sync_spotlerstatus": "created"}]


@pytest.mark.parametrize(
    "error",
    [DataverseTransient("HTTP 503", status=503), DataverseNotFound("contact Does Not Exist", status=404)],
    ids=["transient", "row-gone"],
)
async def test_failing_status_column_write_does_not_fail_the_push(error: SyncError) -> None:
    world = World()
    push = world.push(status_columns=STATUS)
    world.dataverse.put_row("contact", ID, {"firstname": "Ada"})
    world.dataverse.fail("update_row", error)

    outcome = await push.handle(change(ID), owner="msg-1")

    assert outcome.reason is ReasonCode.CREATED
    assert world.dataverse.calls["update_row"] == 1
    assert world.dataverse.writes == []
    assert world.spotler.contact(ID) is not None
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert link.reason is ReasonCode.CREATED
    [status] = await world.state.list_status("contact", ID)
    assert status.reason is ReasonCode.CREATED
    # Completed, not released: the same event again is a duplicate.
    assert (await push.handle(change(ID), owner="msg-2")).detail == "duplicate delivery"


async def test_the_live_guard_holds_anonymizations_above_the_limit_and_applies_them_when_the_hour_slides_on() -> None:
    world = World()
    guard = MassChangeGuard(InMemoryDecisionLog(), world.clock.now, limit=1)
    push = world.push(guard=guard)
    for n, record_id in enumerate((ID, OTHER), start=1):
        world.dataverse.put_row("contact", record_id, {"firstname": "Ada"})
        await push.handle(change(record_id), owner=f"create-{n}")

    await push.handle(change(ID, {"donotemail": True}, kind=ChangeKind.UPDATE, version=2), owner="dne-1")
    anonymized = world.spotler.calls.get("anonymize_contact", 0)
    held = change(OTHER, {"donotemail": True}, kind=ChangeKind.UPDATE, version=2)
    with pytest.raises(RetryLater, match="mass-change guard"):
        await push.handle(held, owner="dne-2")
    assert world.spotler.calls.get("anonymize_contact", 0) == anonymized  # nothing written for the held one
    [latest, *_] = await world.state.list_status("contact", OTHER)
    assert latest.reason is ReasonCode.PAUSED_BY_GUARD

    world.clock.advance(minutes=61)  # the hour slides on: the redelivered change is applied
    outcome = await push.handle(held, owner="dne-2-again")
    assert outcome.reason is ReasonCode.ANONYMIZED
    assert world.spotler.calls["anonymize_contact"] == anonymized + 1
