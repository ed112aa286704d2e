"""One contract for both state stores: Table Storage on Azurite and the in-memory fake behave the same."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables.aio import TableServiceClient

from sync_core.domain.ports import ConcurrencyConflict, RecordClaim, StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.state_model import (
    DeadLetter,
    LinkState,
    StatusEntry,
    Suppression,
    SuppressionCause,
    Watermark,
)
from sync_core.state import InMemoryStateStore, TableStateStore
from sync_core.state.codec import RECORD_DONE_KEPT
from tests.fixtures.azurite import AzuriteInstance, azurite, storage_prefix  # noqa: F401

T0 = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)
HASH_A = "a1" + "0" * 62
HASH_B = "b2" + "1" * 62


@pytest.fixture(params=["table", "memory"])
async def store(request: pytest.FixtureRequest, storage_prefix: str) -> AsyncIterator[StateStore]:  # noqa: F811
    if request.param == "table":
        instance: AzuriteInstance = request.getfixturevalue("azurite")
        table_store = TableStateStore.from_connection_string(instance.connection_string, prefix=storage_prefix)
        async with table_store:
            yield table_store
    else:
        async with InMemoryStateStore() as memory_store:
            yield memory_store


def full_link(**changes: object) -> LinkState:
    link = LinkState(
        entity="contact",
        record_id="6f1c2a9e-0d1b-4f63-9a7e-1b2c3d4e5f60",
        external_id="dv-contact-6f1c2a9e",
        email_hash=HASH_A,
        dv_version=9_876_543_210,  # beyond Int32
        dv_modified_on=T0,
        spotler_last_changed=T0 + timedelta(seconds=5),
        base={"email": "h:1", "firstName": "h:2", "permission:1": "h:3", "ünïcode": "h:ü"},
        anonymized=True,
        reason=ReasonCode.TRANSIENT_ERROR,
        detail="Spotler answered 503; retrying",
        last_attempt=T0 + timedelta(minutes=1),
        failures=3,
        next_retry=T0 + timedelta(minutes=10),
    )
    return dataclasses.replace(link, **changes)  # type: ignore[arg-type]


R = TypeVar("R", LinkState, Suppression, Watermark, DeadLetter)


def without_etag(record: R) -> R:
    return dataclasses.replace(record, etag=None)


# ------------------------------------------------------------------------------------------------ links


async def test_link_insert_read_replace_round_trips_every_field(store: StateStore) -> None:
    link = full_link()
    assert await store.get_link("contact", link.record_id) is None

    saved = await store.save_link(link)
    assert saved.etag
    assert without_etag(saved) == link
    read = await store.get_link("contact", link.record_id)
    assert read == saved
    assert read is not None
    assert all(
        dt is None or (dt.tzinfo is UTC and type(dt) is datetime)
        for dt in (read.dv_modified_on, read.spotler_last_changed, read.last_attempt, read.next_retry)
    )
    assert isinstance(read.reason, ReasonCode)

    replaced = await store.save_link(
        dataclasses.replace(
            read,
            email_hash=None,
            dv_version=None,
            dv_modified_on=None,
            spotler_last_changed=None,
            base={},
            anonymized=False,
            reason=None,
            detail="",
            last_attempt=None,
            failures=0,
            next_retry=None,
        )
    )
    assert replaced.etag
    assert replaced.etag != saved.etag
    assert await store.get_link("contact", link.record_id) == replaced


async def test_link_datetimes_in_other_zones_come_back_as_equal_utc(store: StateStore) -> None:
    cet = timezone(timedelta(hours=2))
    link = full_link(dv_modified_on=datetime(2024, 5, 17, 11, 0, 0, 1, tzinfo=cet))
    await store.save_link(link)
    read = await store.get_link("contact", link.record_id)
    assert read is not None
    assert read.dv_modified_on == datetime(2024, 5, 17, 9, 0, 0, 1, tzinfo=UTC)
    assert read.dv_modified_on is not None
    assert read.dv_modified_on.tzinfo is UTC


async def test_second_insert_conflicts(store: StateStore) -> None:
    await store.save_link(full_link())
    with pytest.raises(ConcurrencyConflict):
        await store.save_link(full_link(detail="second"))
    read = await store.get_link("contact", full_link().record_id)
    assert read is not None
    assert read.detail == full_link().detail


async def test_stale_etag_conflicts_and_writes_nothing(store: StateStore) -> None:
    first = await store.save_link(full_link())
    second = await store.save_link(dataclasses.replace(first, detail="second"))
    with pytest.raises(ConcurrencyConflict):
        await store.save_link(dataclasses.replace(first, detail="stale", external_id="dv-other"))
    assert await store.get_link("contact", first.record_id) == second
    assert await store.links_for_external_id("dv-other") == []


async def test_replace_of_a_missing_link_conflicts(store: StateStore) -> None:
    with pytest.raises(ConcurrencyConflict):
        await store.save_link(full_link(etag="W/\"datetime'2024-01-01T00%3A00%3A00Z'\""))
    assert await store.get_link("contact", full_link().record_id) is None


async def test_concurrent_saves_from_one_read_exactly_one_wins(store: StateStore) -> None:
    read = await store.save_link(full_link())
    outcomes = await asyncio.gather(
        *(store.save_link(dataclasses.replace(read, detail=f"writer {n}")) for n in range(4)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, LinkState)]
    losers = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
    assert len(winners) == 1
    assert len(losers) == 3
    assert await store.get_link("contact", read.record_id) == winners[0]


async def test_concurrent_inserts_exactly_one_wins(store: StateStore) -> None:
    outcomes = await asyncio.gather(
        *(store.save_link(full_link(detail=f"writer {n}")) for n in range(3)), return_exceptions=True
    )
    assert sum(isinstance(o, LinkState) for o in outcomes) == 1
    assert sum(isinstance(o, ConcurrencyConflict) for o in outcomes) == 2


async def test_lookups_by_external_id_and_email_hash(store: StateStore) -> None:
    contact = await store.save_link(full_link())
    lead = await store.save_link(
        full_link(entity="lead", record_id="0b7d6c5e-1111-4222-8333-944455566677", external_id="dv-lead-0b7d")
    )
    other = await store.save_link(
        full_link(record_id="ffffffff-1111-4222-8333-944455566677", external_id="dv-x", email_hash=HASH_B)
    )

    assert await store.links_for_external_id(contact.external_id) == [contact]
    assert await store.links_for_external_id("dv-lead-0b7d") == [lead]
    assert await store.links_for_email_hash(HASH_A) == [contact, lead]
    assert await store.links_for_email_hash(HASH_B) == [other]
    assert await store.links_for_external_id("nobody") == []
    assert await store.links_for_email_hash("c3" + "2" * 62) == []
    assert await store.links_for_external_id("") == []
    assert await store.links_for_email_hash("") == []


async def test_lookup_by_external_id_leaves_out_the_excluded_link(store: StateStore) -> None:
    contact = await store.save_link(full_link())
    lead = await store.save_link(
        full_link(entity="lead", record_id="0b7d6c5e-1111-4222-8333-944455566677", external_id=contact.external_id)
    )
    assert await store.links_for_external_id(contact.external_id) == [contact, lead]
    assert await store.links_for_external_id(contact.external_id, exclude=("lead", lead.record_id)) == [contact]
    assert await store.links_for_external_id(contact.external_id, exclude=("contact", contact.record_id)) == [lead]
    assert await store.links_for_external_id(contact.external_id, exclude=("account", contact.record_id)) == [
        contact,
        lead,
    ]


async def test_lookups_follow_a_changed_external_id_and_email_hash(store: StateStore) -> None:
    saved = await store.save_link(full_link())
    moved = await store.save_link(dataclasses.replace(saved, external_id="dv-new", email_hash=HASH_B))

    assert await store.links_for_external_id("dv-contact-6f1c2a9e") == []
    assert await store.links_for_email_hash(HASH_A) == []
    assert await store.links_for_external_id("dv-new") == [moved]
    assert await store.links_for_email_hash(HASH_B) == [moved]

    cleared = await store.save_link(dataclasses.replace(moved, email_hash=None))
    assert await store.links_for_email_hash(HASH_B) == []
    assert await store.links_for_external_id("dv-new") == [cleared]

    back = await store.save_link(dataclasses.replace(cleared, external_id="dv-contact-6f1c2a9e"))
    assert await store.links_for_external_id("dv-contact-6f1c2a9e") == [back]
    assert await store.links_for_external_id("dv-new") == []


async def test_keys_with_characters_tables_forbid(store: StateStore) -> None:
    link = await store.save_link(
        full_link(record_id="a/b\\c#d?e", external_id="ext/with#odd?chars'", email_hash="x" * 300)
    )
    assert await store.get_link("contact", "a/b\\c#d?e") == link
    assert await store.links_for_external_id("ext/with#odd?chars'") == [link]
    assert await store.links_for_email_hash("x" * 300) == [link]
    # A key that merely looks like a hashed one does not collide with the hashed form.
    assert await store.get_link("contact", "~a/b") is None


async def test_oversized_and_naive_values_are_rejected_before_writing(store: StateStore) -> None:
    huge = {f"field{n}": "h" * 100 for n in range(400)}  # > 64 KiB as UTF-16
    with pytest.raises(ValueError, match="65536 bytes per property"):
        await store.save_link(full_link(base=huge))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.save_link(full_link(last_attempt=datetime(2024, 1, 1)))
    assert await store.get_link("contact", full_link().record_id) is None


# ------------------------------------------------------------------------------------------------ suppressions


async def test_suppression_put_get_delete(store: StateStore) -> None:
    assert await store.get_suppression(HASH_A) is None
    suppression = Suppression(
        email_hash=HASH_A,
        cause=SuppressionCause.OPTED_OUT,
        entity="lead",
        record_id="0b7d6c5e-1111-4222-8333-944455566677",
        created_on=T0,
    )
    await store.put_suppression(suppression)
    read = await store.get_suppression(HASH_A)
    assert read is not None
    assert read.etag
    assert without_etag(read) == suppression
    assert isinstance(read.cause, SuppressionCause)

    await store.put_suppression(dataclasses.replace(suppression, cause=SuppressionCause.ANONYMIZED))
    again = await store.get_suppression(HASH_A)
    assert again is not None
    assert again.cause is SuppressionCause.ANONYMIZED
    assert await store.get_suppression(HASH_B) is None

    await store.delete_suppression(HASH_A)
    assert await store.get_suppression(HASH_A) is None
    await store.delete_suppression(HASH_A)  # deleting a missing one is fine


# ------------------------------------------------------------------------------------------------ watermarks


async def test_watermark_insert_conditional_update_and_conflict(store: StateStore) -> None:
    assert await store.get_watermark("contacts") is None
    watermark = Watermark(
        name="contacts",
        value=T0,
        run_from=T0 - timedelta(minutes=5),
        run_to=T0 + timedelta(minutes=15),
        run_after=3_000_000_000,
        run_high=T0 + timedelta(minutes=1),
        run_id="run-42",
        run_started=T0 + timedelta(seconds=1),
    )
    saved = await store.save_watermark(watermark)
    assert saved.etag
    assert without_etag(saved) == watermark
    assert await store.get_watermark("contacts") == saved

    with pytest.raises(ConcurrencyConflict):
        await store.save_watermark(watermark)

    finished = await store.save_watermark(
        dataclasses.replace(saved, value=T0 + timedelta(minutes=15), run_from=None, run_to=None, run_after=0)
    )
    assert finished.etag != saved.etag
    read = await store.get_watermark("contacts")
    assert read == finished
    assert read is not None
    assert not read.in_progress
    assert read.run_from is None

    with pytest.raises(ConcurrencyConflict):
        await store.save_watermark(dataclasses.replace(saved, run_id="stale"))
    assert await store.get_watermark("contacts") == finished


async def test_concurrent_watermark_updates_exactly_one_wins(store: StateStore) -> None:
    saved = await store.save_watermark(Watermark(name="contacts", value=T0))
    outcomes = await asyncio.gather(
        *(store.save_watermark(dataclasses.replace(saved, run_id=f"run-{n}")) for n in range(3)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, Watermark) for o in outcomes) == 1
    assert sum(isinstance(o, ConcurrencyConflict) for o in outcomes) == 2


# ------------------------------------------------------------------------------------------------ status


def status(n: int, **changes: object) -> StatusEntry:
    entry = StatusEntry(
        entity="contact",
        record_id="6f1c2a9e-0d1b-4f63-9a7e-1b2c3d4e5f60",
        at=T0 + timedelta(minutes=n),
        reason=ReasonCode.UPDATED,
        action=f"push {n}",
        detail=f"detail {n}",
        external_id="dv-contact-6f1c2a9e",
    )
    return dataclasses.replace(entry, **changes)  # type: ignore[arg-type]


async def test_status_is_newest_first_and_trimmed_to_keep(store: StateStore) -> None:
    record = status(0).record_id
    assert await store.list_status("contact", record) == []
    for n in (0, 2, 1, 3, 4):  # appended out of order: ordering follows `at`
        await store.append_status(status(n), keep=3)

    history = await store.list_status("contact", record)
    assert history == [status(4), status(3), status(2)]
    assert await store.list_status("contact", record, limit=2) == [status(4), status(3)]
    assert await store.list_status("lead", record) == []


async def test_status_round_trips_optional_fields_and_ties_keep_append_order(store: StateStore) -> None:
    record = status(0).record_id
    first = status(0, reason=ReasonCode.PERMANENT_ERROR, detail="", external_id=None)
    second = status(0, reason=ReasonCode.SYNCED, action="again")
    await store.append_status(first)
    await store.append_status(second)
    history = await store.list_status("contact", record)
    assert history == [second, first]
    assert isinstance(history[1].reason, ReasonCode)


async def test_status_trimming_with_default_keep(store: StateStore) -> None:
    record = status(0).record_id
    for n in range(23):
        await store.append_status(status(n))
    history = await store.list_status("contact", record, limit=100)
    assert [entry.action for entry in history] == [f"push {n}" for n in range(22, 2, -1)]


# ------------------------------------------------------------------------------------------------ dead letters


def dead_letter(event_id: str, first_failed: datetime, next_retry: datetime | None) -> DeadLetter:
    return DeadLetter(
        entity="contact",
        event_id=event_id,
        event={
            "entity": "contact",
            "record_id": "6f1c2a9e",
            "kind": "update",
            "attributes": {"firstname": "Zoë", "donotbulkemail": False, "new_score": 12.5, "ids": [1, 2]},
            "changed": ["firstname"],
            "nested": {"none": None},
        },
        error_class="TransientError",
        message="Spotler answered 503",
        attempts=5,
        replays=1,
        first_failed=first_failed,
        last_failed=first_failed + timedelta(minutes=30),
        next_retry=next_retry,
    )


async def test_dead_letters_put_get_list_delete(store: StateStore) -> None:
    now = T0 + timedelta(hours=2)
    due = dead_letter("evt-due", T0 + timedelta(minutes=2), now - timedelta(minutes=1))
    later = dead_letter("evt-later", T0, now + timedelta(hours=1))
    parked = dead_letter("evt/parked#1?", T0 + timedelta(minutes=1), None)
    lead_due = dataclasses.replace(dead_letter("evt-lead", T0 + timedelta(minutes=3), now), entity="lead")
    for letter in (due, later, parked, lead_due):
        await store.put_dead_letter(letter)

    read = await store.get_dead_letter("contact", "evt-due")
    assert read is not None
    assert read.etag
    assert without_etag(read) == due
    assert read.event == due.event
    parked_read = await store.get_dead_letter("contact", "evt/parked#1?")
    assert parked_read is not None
    assert without_etag(parked_read) == parked
    assert await store.get_dead_letter("lead", "evt-due") is None

    listed = [without_etag(dl) for dl in await store.list_dead_letters()]
    assert listed == [later, parked, due, lead_due]
    assert [without_etag(dl) for dl in await store.list_dead_letters(limit=2)] == [later, parked]
    due_now = [without_etag(dl) for dl in await store.list_dead_letters(due_before=now)]
    assert due_now == [due, lead_due]
    assert await store.list_dead_letters(due_before=T0) == []

    await store.put_dead_letter(dataclasses.replace(due, attempts=6, next_retry=now + timedelta(days=1)))
    replaced = await store.get_dead_letter("contact", "evt-due")
    assert replaced is not None
    assert replaced.attempts == 6
    assert [dl.event_id for dl in await store.list_dead_letters(due_before=now)] == ["evt-lead"]

    await store.delete_dead_letter("contact", "evt-due")
    await store.delete_dead_letter("contact", "evt-due")
    assert await store.get_dead_letter("contact", "evt-due") is None
    assert [dl.event_id for dl in await store.list_dead_letters()] == ["evt-later", "evt/parked#1?", "evt-lead"]


async def test_dead_letter_with_an_oversized_event_is_rejected(store: StateStore) -> None:
    letter = dataclasses.replace(dead_letter("evt-big", T0, None), event={"blob": "x" * 40_000})
    with pytest.raises(ValueError, match="event"):
        await store.put_dead_letter(letter)
    assert await store.get_dead_letter("contact", "evt-big") is None


# ------------------------------------------------------------------------------------------------ deliveries


async def test_leases_are_exclusive_until_released_or_expired(store: StateStore) -> None:
    ttl = timedelta(minutes=5)
    name = "record/contact/odd#id?"
    first = await store.acquire_lease(name, owner="msg-1", now=T0, ttl=ttl)
    assert first is not None
    assert await store.acquire_lease(name, owner="msg-2", now=T0 + timedelta(minutes=4), ttl=ttl) is None
    again = await store.acquire_lease(name, owner="msg-1", now=T0, ttl=ttl)  # the holder again: a new token
    assert again is not None
    assert again != first
    await store.release_lease(name, first)  # an outdated token: nothing happens
    assert await store.acquire_lease(name, owner="msg-2", now=T0, ttl=ttl) is None
    await store.release_lease(name, again)
    second = await store.acquire_lease(name, owner="msg-2", now=T0, ttl=ttl)
    assert second is not None
    # A holder that died: its lease expires and the next worker takes it over; its late release changes nothing.
    assert await store.acquire_lease(name, owner="msg-3", now=T0 + ttl, ttl=ttl) is not None
    await store.release_lease(name, second)
    assert await store.acquire_lease(name, owner="msg-4", now=T0 + ttl, ttl=ttl) is None
    assert await store.acquire_lease("record/contact/other", owner="msg-2", now=T0, ttl=ttl) is not None
    await store.release_lease("record/contact/never-taken", second)  # no such lease: harmless


async def test_concurrent_lease_takers_exactly_one_wins(store: StateStore) -> None:
    ttl = timedelta(minutes=5)
    outcomes = await asyncio.gather(
        *(store.acquire_lease("record/lead/1", owner=f"msg-{n}", now=T0, ttl=ttl) for n in range(5))
    )
    assert sum(token is not None for token in outcomes) == 1
    later = T0 + ttl + timedelta(seconds=1)
    takeovers = await asyncio.gather(
        *(store.acquire_lease("record/lead/1", owner=f"late-{n}", now=later, ttl=ttl) for n in range(4))
    )
    assert sum(token is not None for token in takeovers) == 1


async def test_a_record_claim_is_the_lease_and_tells_duplicates_by_key(store: StateStore) -> None:
    ttl = timedelta(minutes=1)
    name = "record/contact/odd#id?"
    first = await store.claim_record(name, "change-1", owner="msg-1", now=T0, ttl=ttl)
    assert first is not None
    assert first.token is not None
    assert (first.done, first.version, first.modified_on) == ((), None, None)
    # While it is held: the same change from another message is a duplicate, another change waits.
    in_flight = await store.claim_record(name, "change-1", owner="msg-1-copy", now=T0, ttl=ttl)
    assert in_flight is not None
    assert in_flight.duplicate
    assert await store.claim_record(name, "change-2", owner="msg-2", now=T0, ttl=ttl) is None
    assert await store.acquire_lease(name, owner="pull", now=T0, ttl=ttl) is None
    # The holder's own redelivery takes it again.
    mine = await store.claim_record(name, "change-1", owner="msg-1", now=T0, ttl=ttl)
    assert mine is not None
    assert mine.token is not None

    await store.free_record(name, first.token, done=("change-1",), version=7, modified_on=T0)  # outdated token
    assert await store.claim_record(name, "change-2", owner="msg-2", now=T0, ttl=ttl) is None
    await store.free_record(name, mine.token, done=("change-1",), version=7, modified_on=T0)

    assert (await store.claim_record(name, "change-1", owner="msg-9", now=T0, ttl=ttl)) == RecordClaim(
        None, ("change-1",), 7, T0
    )
    second = await store.claim_record(name, "change-2", owner="msg-2", now=T0, ttl=ttl)
    assert second is not None
    assert second.token is not None
    assert (second.done, second.version, second.modified_on) == (("change-1",), 7, T0)
    await store.free_record(name, second.token)  # given back, not completed: claimable again
    again = await store.claim_record(name, "change-2", owner="replay", now=T0, ttl=ttl)
    assert again is not None
    assert again.token is not None
    assert (again.done, again.version) == (("change-1",), 7)


async def test_a_record_lease_taken_over_keeps_what_the_record_has_seen(store: StateStore) -> None:
    ttl = timedelta(minutes=1)
    name = "record/lead/1"
    claim = await store.claim_record(name, "change-1", owner="msg-1", now=T0, ttl=ttl)
    assert claim is not None
    assert claim.token is not None
    await store.free_record(name, claim.token, done=("change-1",), version=3)
    crashed = await store.claim_record(name, "change-2", owner="msg-2", now=T0, ttl=ttl)
    assert crashed is not None
    # msg-2 dies; after the TTL the pull takes the lease: change-2 is not completed, and not in flight any more.
    pulled = await store.acquire_lease(name, owner="pull", now=T0 + ttl, ttl=ttl)
    assert pulled is not None
    assert await store.claim_record(name, "change-2", owner="msg-2-again", now=T0 + ttl, ttl=ttl) is None
    await store.free_record(name, pulled)
    retaken = await store.claim_record(name, "change-2", owner="msg-2-again", now=T0 + ttl, ttl=ttl)
    assert retaken is not None
    assert retaken.token is not None
    assert (retaken.done, retaken.version) == (("change-1",), 3)
    # Completed keys are kept up to a bound, newest last.
    await store.free_record(name, retaken.token, done=tuple(f"k{n}" for n in range(40)), version=4)
    last = await store.claim_record(name, "k39", owner="msg-x", now=T0 + ttl, ttl=ttl)
    assert last is not None
    assert last.duplicate
    assert last.done == tuple(f"k{n}" for n in range(40 - RECORD_DONE_KEPT, 40))


async def test_concurrent_record_claims_exactly_one_wins(store: StateStore) -> None:
    ttl = timedelta(minutes=1)
    outcomes = await asyncio.gather(
        *(store.claim_record("record/contact/c", f"change-{n}", owner=f"msg-{n}", now=T0, ttl=ttl) for n in range(5))
    )
    assert sum(claim is not None and claim.token is not None for claim in outcomes) == 1


# ------------------------------------------------------------------------------------------------ Table specifics


async def test_tables_are_created_on_first_use(azurite: AzuriteInstance, storage_prefix: str) -> None:  # noqa: F811
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        assert await s.get_link("contact", "nope") is None
        await s.ensure_ready()  # idempotent
        names = set(s.table_names)
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        existing = {table.name async for table in service.list_tables()}
    assert names <= existing
    assert names == {
        f"{storage_prefix}{suffix}"
        for suffix in ("links", "index", "watermarks", "status", "deadletters", "suppressions", "deliveries")
    }


async def test_a_record_claimed_again_by_the_process_that_gave_it_back_costs_one_write_each_way(
    azurite: AzuriteInstance,  # noqa: F811
    storage_prefix: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    original = AioHttpTransport.send

    async def counted(transport: AioHttpTransport, request: Any, **kwargs: Any) -> Any:
        sent.append(request.method)
        return await original(transport, request, **kwargs)

    monkeypatch.setattr(AioHttpTransport, "send", counted)
    ttl = timedelta(minutes=1)
    name = "record/contact/r1"
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        await s.ensure_ready()
        sent.clear()
        first = await s.claim_record(name, "k1", owner="m1", now=T0, ttl=ttl)
        assert first is not None
        assert first.token is not None
        await s.free_record(name, first.token, done=("k1",), version=1)
        assert len(sent) == 2  # a new row: one insert, one merge
        sent.clear()
        again = await s.claim_record(name, "k2", owner="m2", now=T0, ttl=ttl, existing=True)
        assert again is not None
        assert again.token is not None
        assert (again.done, again.version) == (("k1",), 1)
        await s.free_record(name, again.token, done=(*again.done, "k2"), version=2)
        assert len(sent) == 2  # remembered as last written: one merge each way, no read
        sent.clear()
        duplicate = await s.claim_record(name, "k1", owner="m3", now=T0, ttl=ttl, existing=True)
        assert duplicate is not None
        assert duplicate.duplicate
        assert sent == []  # a completed key stays completed: told without a request
    # Another process (a new store) does not know the row: it reads it first, then takes it.
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        await s.ensure_ready()
        sent.clear()
        other = await s.claim_record(name, "k3", owner="m4", now=T0, ttl=ttl, existing=True)
        assert other is not None
        assert other.token is not None
        assert (other.done, other.version) == (("k1", "k2"), 2)
        assert sent == ["GET", "PATCH"]


async def test_a_status_partition_is_listed_only_when_it_may_hold_more_than_it_keeps(
    azurite: AzuriteInstance,  # noqa: F811
    storage_prefix: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    original = AioHttpTransport.send

    async def counted(transport: AioHttpTransport, request: Any, **kwargs: Any) -> Any:
        sent.append(request.method)
        return await original(transport, request, **kwargs)

    monkeypatch.setattr(AioHttpTransport, "send", counted)
    record = status(0).record_id
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        await s.ensure_ready()
        sent.clear()
        await s.append_status(status(0), keep=3)
        assert sent == ["POST", "GET"]  # a partition this process has not listed yet
        for n in (1, 2):
            sent.clear()
            await s.append_status(status(n), keep=3)
            assert sent == ["POST"]  # it holds at most three: no listing
        sent.clear()
        await s.append_status(status(3), keep=3)
        assert sent == ["POST", "GET", "DELETE"]  # a fourth: listed and trimmed
        assert await s.list_status("contact", record) == [status(3), status(2), status(1)]


async def test_ensure_ready_on_an_existing_set_of_tables(azurite: AzuriteInstance, storage_prefix: str) -> None:  # noqa: F811
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        await s.ensure_ready()
        await s.put_suppression(Suppression(HASH_A, SuppressionCause.ANONYMIZED, "contact", "r1", created_on=T0))
        names = set(s.table_names)
    # A second start on the same tables keeps what the first one stored, and can store more.
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        await s.ensure_ready()
        kept = await s.get_suppression(HASH_A)
        assert kept is not None
        assert (kept.cause, kept.entity, kept.record_id, kept.created_on) == (
            SuppressionCause.ANONYMIZED,
            "contact",
            "r1",
            T0,
        )
        await s.put_suppression(Suppression(HASH_B, SuppressionCause.OPTED_OUT, "lead", "r2", created_on=T0))
        assert (await s.get_suppression(HASH_B)) is not None
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        existing = {table.name async for table in service.list_tables()}
        rows = [row async for row in service.get_table_client(f"{storage_prefix}suppressions").list_entities()]
    assert names <= existing
    assert len(rows) == 2


def test_invalid_table_prefix_is_rejected() -> None:
    for prefix in ("1abc", "with-dash", "x" * 60):
        with pytest.raises(ValueError, match="prefix"):
            TableStateStore.from_connection_string(
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/a;",
                prefix=prefix,
            )


async def test_stale_index_entries_are_removed(azurite: AzuriteInstance, storage_prefix: str) -> None:  # noqa: F811
    async with TableStateStore.from_connection_string(azurite.connection_string, prefix=storage_prefix) as s:
        saved = await s.save_link(full_link())
        await s.save_link(dataclasses.replace(saved, external_id="dv-new", email_hash=HASH_B))
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        index = service.get_table_client(f"{storage_prefix}index")
        partitions = sorted([row["PartitionKey"] async for row in index.list_entities()])
    assert partitions == [f"e|{HASH_B}", "x|dv-new"]


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
    store = TableStateStore.from_account(
        "mystorage", _StaticToken(), prefix="prod", endpoint_suffix="core.usgovcloudapi.net"
    )
    async with store:
        assert store.table_names[0] == "prodlinks"
        assert store._service.url.startswith("https://mystorage.table.core.usgovcloudapi.net")
