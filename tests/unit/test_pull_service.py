"""PullService on the in-memory state store and fake gateways: merge, echo, watermark, resumption, leases, replay."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import pytest

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeEvent
from sync_core.domain.state_model import LinkState, Watermark
from sync_core.services.pull import WATERMARK_NAME, PullOptions, PullReport
from sync_core.services.push import PushService, RetryLater
from sync_core.spotler.errors import SpotlerInvalidData, SpotlerTransientError
from sync_core.state import InMemoryStateStore
from tests.unit.domain_builders import T0
from tests.unit.service_fakes import World, YieldingStateStore, change, row_attributes

ID = "3f2a1c4e-0000-4000-8000-000000000001"
PAGED = PullOptions(page_size=2)
IN_PROGRESS = "another pull run is in progress"


async def watermark(world: World) -> Watermark:
    found = await world.state.get_watermark(WATERMARK_NAME)
    assert found is not None
    return found


async def ten_edited_contacts(world: World) -> list[str]:
    """Ten linked contacts, each renamed in Spotler a second after the previous one; five feed pages of two."""
    ids = [f"p{i}" for i in range(10)]
    for record_id in ids:
        await world.linked(record_id)
    world.clock.advance(minutes=1)
    for i, record_id in enumerate(ids):
        world.clock.advance(seconds=1)
        world.spotler.profile_edit(record_id, properties={"firstName": f"Name {i}"})
    world.clock.advance(minutes=1)
    return ids


def assert_each_renamed_once(world: World, ids: list[str]) -> None:
    for i, record_id in enumerate(ids):
        assert [w.changes for w in world.dataverse.writes_to(record_id)] == [{"firstname": f"Name {i}"}], record_id
        row = world.dataverse.row("contact", record_id)
        assert row is not None
        assert row.attributes["firstname"] == f"Name {i}"


async def test_two_way_change_reaches_dataverse_one_way_does_not_and_the_echo_writes_nothing() -> None:
    world = World()
    await world.linked(ID)
    pull = world.pull()
    world.clock.advance(seconds=1)  # the window ends before "now": the create must lie behind us

    own_write = await pull.run()  # reads the contact the push just created: our own write, no news
    assert (own_write.completed, own_write.contacts, own_write.rows_updated) == (True, 1, 0)
    edited = world.clock.advance(minutes=1)
    world.spotler.profile_edit(ID, properties={"firstName": "Augusta", "city": "Paris"})
    world.clock.advance(minutes=1)

    report = await pull.run()

    assert (report.completed, report.contacts, report.rows_updated, report.conflicts) == (True, 1, 1, 0)
    assert [(w.method, w.record_id, w.changes) for w in world.dataverse.writes] == [
        ("update_rows", ID, {"firstname": "Augusta"})
    ]
    row = world.dataverse.row("contact", ID)
    assert row is not None
    assert (row.attributes["firstname"], row.attributes["address1_city"]) == ("Augusta", "London")
    newest = (await world.state.list_status("contact", ID))[0]
    assert (newest.reason, newest.action, newest.detail) == (
        ReasonCode.UPDATED,
        "pull",
        "updated in Dynamics from Spotler: firstname",
    )
    link = await world.state.get_link("contact", ID)
    assert link is not None
    assert link.spotler_last_changed == edited

    world.clock.advance(minutes=1)
    again = await pull.run()  # the overlap reads the same change again

    assert (again.completed, again.contacts, again.rows_updated) == (True, 1, 0)
    assert len(world.dataverse.writes) == 1
    assert world.dataverse.calls["update_rows"] == 1
    assert world.spotler.calls["update_contact"] == 0


async def test_watermark_ends_at_the_newest_change_applied_and_the_run_state_is_cleared() -> None:
    world = World()
    for record_id in ("a", "b", "c"):
        await world.linked(record_id)
    world.clock.advance(seconds=10)
    world.spotler.profile_edit("a", properties={"lastName": "Byron"})
    newest = world.clock.advance(seconds=5)
    world.spotler.profile_edit("b", properties={"lastName": "King"})
    on_the_edge = world.clock.advance(seconds=5)
    world.spotler.profile_edit("c", properties={"lastName": "Noel"})  # at the run's toDate, which is exclusive
    pull = world.pull()

    report = await pull.run()

    assert (report.completed, report.contacts) == (True, 2)
    assert report.watermark == newest
    assert [(w.record_id, w.changes) for w in world.dataverse.writes] == [
        ("a", {"lastname": "Byron"}),
        ("b", {"lastname": "King"}),
    ]
    stored = await watermark(world)
    assert stored.value == newest
    assert not stored.in_progress
    assert (stored.run_from, stored.run_to, stored.run_after, stored.run_high) == (None, None, 0, None)
    assert (stored.run_started, stored.run_id, stored.run_last_id) == (None, "", None)

    world.clock.advance(seconds=1)
    later = await pull.run()  # starts `overlap` before the watermark: the change on the edge is read now

    assert later.completed
    assert later.watermark == on_the_edge
    assert [w.record_id for w in world.dataverse.writes] == ["a", "b", "c"]
    assert not (await watermark(world)).in_progress


async def test_run_cut_off_after_max_pages_gives_its_lease_back_and_the_next_run_resumes() -> None:
    world = World()
    ids = await ten_edited_contacts(world)
    pull = world.pull(PAGED)

    cut = await pull.run(max_pages=2)

    assert (cut.started, cut.completed, cut.pages, cut.contacts) == (True, False, 2, 4)
    assert cut.note == "stopped before the end of the feed; the next run resumes"
    stopped = await watermark(world)
    assert stopped.in_progress
    assert stopped.run_started is None
    assert stopped.value is None
    assert [w.record_id for w in world.dataverse.writes] == ids[:4]

    rest = await pull.run()  # at once: the lease was given back

    assert (rest.started, rest.completed, rest.pages, rest.contacts) == (True, True, 3, 6)
    assert cut.contacts + rest.contacts == 10
    assert world.spotler.calls["get_updates_page"] == 5
    assert_each_renamed_once(world, ids)
    done = await watermark(world)
    assert not done.in_progress
    assert done.value == T0 + timedelta(minutes=1, seconds=10)


async def test_run_failing_midway_gives_its_lease_back_and_the_next_run_resumes() -> None:
    world = World()
    ids = await ten_edited_contacts(world)
    pull = world.pull(PAGED)
    world.spotler.fail("get_updates_page", SpotlerTransientError("HTTP 503", status=503), skip=2)

    with pytest.raises(SpotlerTransientError):
        await pull.run()

    failed = await watermark(world)
    assert failed.in_progress
    assert failed.run_started is None
    assert [w.record_id for w in world.dataverse.writes] == ids[:4]

    resumed = await pull.run()

    assert (resumed.completed, resumed.pages, resumed.contacts) == (True, 3, 6)
    assert world.spotler.calls["get_updates_page"] == 6
    assert_each_renamed_once(world, ids)
    assert not (await watermark(world)).in_progress


@pytest.mark.parametrize(
    ("store", "note"),
    [
        (InMemoryStateStore, IN_PROGRESS),  # the store answers at once: the runs meet at the first feed read
        (YieldingStateStore, "another pull run claimed the watermark first"),  # both read the watermark first
    ],
    ids=["meet-at-feed", "meet-at-watermark"],
)
async def test_two_runs_started_together_only_one_does_the_work(store: type[InMemoryStateStore], note: str) -> None:
    world = World(state=store())
    ids = await ten_edited_contacts(world)

    reports = await asyncio.gather(world.pull(PAGED).run(), world.pull(PAGED).run())

    worked = [r for r in reports if r.started]
    idle = [r for r in reports if not r.started]
    assert len(worked) == 1
    assert len(idle) == 1
    assert (worked[0].completed, worked[0].pages, worked[0].contacts) == (True, 5, 10)
    assert (idle[0].completed, idle[0].pages, idle[0].note) == (False, 0, note)
    assert world.spotler.calls["get_updates_page"] == 5
    assert_each_renamed_once(world, ids)


async def test_held_run_lease_blocks_until_it_expires_then_the_run_is_resumed() -> None:
    world = World()
    await world.linked("inside")
    await world.linked("outside")
    world.clock.advance(minutes=1)
    world.spotler.profile_edit("inside", properties={"firstName": "Inside"})
    window_from, window_to = T0 - timedelta(hours=1), T0 + timedelta(minutes=2)
    world.clock.advance(minutes=2)
    world.spotler.profile_edit("outside", properties={"firstName": "Outside"})  # after the killed run's window
    killed_at = world.clock.now()
    # A run that was killed after taking the lease: its window and lease are still in the watermark.
    await world.state.save_watermark(
        Watermark(WATERMARK_NAME, run_from=window_from, run_to=window_to, run_id="killed", run_started=killed_at)
    )
    options = PullOptions(run_lease=timedelta(minutes=10))
    pull = world.pull(options)

    blocked = await pull.run()
    world.clock.advance(options.run_lease - timedelta(seconds=1))
    still_blocked = await pull.run()

    for report in (blocked, still_blocked):
        assert (report.started, report.completed, report.note) == (False, False, IN_PROGRESS)
    assert world.spotler.calls["get_updates_page"] == 0
    assert (await watermark(world)).run_id == "killed"

    world.clock.advance(seconds=1)
    taken_over = await pull.run()

    assert (taken_over.started, taken_over.completed, taken_over.contacts) == (True, True, 1)
    assert world.spotler.feed_requests[0] == (window_from, window_to, 0, 500)
    assert [(w.record_id, w.changes) for w in world.dataverse.writes] == [("inside", {"firstname": "Inside"})]
    assert taken_over.watermark == T0 + timedelta(minutes=1)
    done = await watermark(world)
    assert not done.in_progress
    assert done.run_started is None

    nxt = await pull.run()  # the next window picks up what happened after the killed run's window
    assert nxt.completed
    assert [w.record_id for w in world.dataverse.writes] == ["inside", "outside"]


async def test_cancelled_run_gives_its_lease_back_and_the_next_run_resumes() -> None:
    world = World()
    ids = await ten_edited_contacts(world)
    pull = world.pull(PAGED)
    task = asyncio.create_task(pull.run())
    for _ in range(1000):  # until the run waits on its second feed page
        if world.spotler.calls["get_updates_page"] == 2:
            break
        await asyncio.sleep(0)
    # What a killed run leaves behind: the first page's cursor, saved, with the lease still held.
    mid_run = await watermark(world)
    assert (mid_run.run_last_id, mid_run.run_after, mid_run.run_started) == ("p1", 1, world.clock.now())
    assert mid_run.run_from == T0 + timedelta(minutes=1, seconds=2)  # the second of p1's change
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    cancelled = await watermark(world)
    assert cancelled.in_progress
    assert cancelled.run_started is None
    assert [w.record_id for w in world.dataverse.writes] == ids[:2]
    resumed = await pull.run()
    assert (resumed.started, resumed.completed, resumed.contacts) == (True, True, 8)
    assert_each_renamed_once(world, ids)


async def test_contact_changing_again_while_a_cut_off_run_waits_is_neither_lost_nor_written_twice() -> None:
    world = World()
    ids = [f"s{i}" for i in range(6)]
    for record_id in ids:
        await world.linked(record_id)
    world.clock.advance(minutes=1)
    for i, record_id in enumerate(ids):  # all within one millisecond: paging inside one second
        world.spotler.profile_edit(record_id, properties={"firstName": f"Name {i}"})
    world.clock.advance(minutes=1)
    pull = world.pull(PAGED)
    cut = await pull.run(max_pages=1)
    assert [w.record_id for w in world.dataverse.writes] == ["s0", "s1"]

    # s0 changes again: it leaves the cut-off run's window and every contact after it moves up one place.
    world.spotler.profile_edit("s0", properties={"firstName": "Renamed"})
    rest = await pull.run()
    world.clock.advance(seconds=1)
    nxt = await pull.run()

    assert (cut.contacts, rest.completed, nxt.completed) == (2, True, True)
    assert [w.changes for w in world.dataverse.writes_to("s0")] == [{"firstname": "Name 0"}, {"firstname": "Renamed"}]
    for i, record_id in enumerate(ids[1:], start=1):
        assert [w.changes for w in world.dataverse.writes_to(record_id)] == [{"firstname": f"Name {i}"}], record_id


# ---------------------------------------------------------------------------------------------- row failures


async def test_rows_a_truncated_batch_did_not_execute_are_applied_by_a_later_run() -> None:
    """A 424 `NotExecuted` result means the update was never tried: it must not be dropped like a rejection."""
    world = World()
    for record_id in ("a", "b", "c"):
        await world.linked(record_id)
    world.clock.advance(minutes=1)
    world.spotler.profile_edit("a", properties={"firstName": "Anne"})
    world.clock.advance(minutes=1)
    world.spotler.profile_edit("b", properties={"firstName": "Bea"})
    world.clock.advance(minutes=30)  # more than the overlap after b
    world.spotler.profile_edit("c", properties={"firstName": "Cleo"})
    world.clock.advance(minutes=1)
    pull = world.pull()
    world.dataverse.stop_next_batch_after(1)  # a is written; b and c are not executed

    with contextlib.suppress(RetryLater):  # giving the page back is one way to handle it
        await pull.run()
    world.clock.advance(minutes=15)
    await pull.run()

    names = {}
    for record_id in ("a", "b", "c"):
        row = world.dataverse.row("contact", record_id)
        assert row is not None
        names[record_id] = row.attributes["firstname"]
    assert names == {"a": "Anne", "b": "Bea", "c": "Cleo"}
    b_history = await world.state.list_status("contact", "b")
    assert ReasonCode.PERMANENT_ERROR not in [s.reason for s in b_history]


async def test_contact_whose_conflict_fix_spotler_rejects_does_not_block_the_pull() -> None:
    """A permanent rejection of one contact's write-back must not stop every later change from being pulled."""
    world = World()
    await world.linked("a")
    await world.linked("b")
    world.clock.advance(minutes=1)
    # Both sides change a's first name (the Dynamics change still waits in the queue); Dynamics wins, so the
    # pull sends its value back to Spotler, which rejects it.
    world.dataverse.edit_row("contact", "a", {"firstname": "Augusta Ada"})
    world.spotler.profile_edit("a", properties={"firstName": "Annie"})
    world.clock.advance(minutes=1)
    world.spotler.profile_edit("b", properties={"firstName": "Bea"})
    world.clock.advance(minutes=1)
    rejected = SpotlerInvalidData("Property is invalid: firstName", status=400, code="INVALID_PROPERTY")
    world.spotler.fail("update_contact", rejected, times=10, external_id="a")
    pull = world.pull()

    report = await pull.run()

    assert report.completed
    b_row = world.dataverse.row("contact", "b")
    assert b_row is not None
    assert b_row.attributes["firstname"] == "Bea"
    a_history = await world.state.list_status("contact", "a")
    assert a_history[0].reason is ReasonCode.PERMANENT_ERROR


# ---------------------------------------------------------------------------------------------- replays


async def park(world: World, push: PushService, record_id: str) -> ChangeEvent:
    """A Create that failed transiently and was dead-lettered by the queue worker after five deliveries."""
    event = change(record_id, modified_on=world.clock.now())
    world.spotler.fail("insert_contact", SpotlerTransientError("HTTP 503", status=503), external_id=record_id)
    with pytest.raises(RetryLater) as failure:
        await push.handle(event, owner=f"msg-{record_id}")
    await push.dead_letter(event, failure.value, attempts=5, now=world.clock.now())
    return event


async def test_replay_due_applies_due_letters_pushes_failures_out_and_leaves_the_rest() -> None:
    world = World()
    push = world.push()
    pull = world.pull(push=push)
    ok = await park(world, push, "r-ok")
    failing = await park(world, push, "r-fail")
    world.clock.advance(seconds=30)
    later = await park(world, push, "r-later")
    not_due = await world.state.get_dead_letter("contact", later.idempotency_key)
    assert not_due is not None
    assert not_due.next_retry == T0 + timedelta(seconds=90)
    now = world.clock.advance(seconds=31)  # T0 + 61 s: the first two are due (T0 + 60 s)
    world.spotler.fail("insert_contact", SpotlerTransientError("HTTP 502", status=502), external_id="r-fail")
    world.spotler.log.clear()

    report = await pull.replay_due()

    assert (report.replayed, report.replay_failures) == (1, 1)
    assert await world.state.get_dead_letter("contact", ok.idempotency_key) is None
    assert world.spotler.contact("r-ok") is not None
    link = await world.state.get_link("contact", "r-ok")
    assert link is not None
    assert link.reason is ReasonCode.CREATED
    again = await world.state.get_dead_letter("contact", failing.idempotency_key)
    assert again is not None
    assert (again.replays, again.attempts, again.last_failed) == (1, 5, now)
    assert again.next_retry == now + timedelta(seconds=120)
    assert again.message.startswith("SpotlerTransientError: HTTP 502")
    assert world.spotler.contact("r-fail") is None
    assert await world.state.get_dead_letter("contact", later.idempotency_key) == not_due
    assert all(external_id != "r-later" for _, external_id in world.spotler.log)

    assert await pull.replay_due() == PullReport()  # nothing else is due yet
    world.clock.advance(seconds=120)
    assert (await pull.replay_due()).replayed == 2
    assert await world.state.list_dead_letters() == []
    assert world.spotler.contact("r-fail") is not None
    assert world.spotler.contact("r-later") is not None


async def test_replays_stop_being_scheduled_after_max_replays() -> None:
    world = World()
    push = world.push()
    pull = world.pull(PullOptions(max_replays=2), push=push)
    event = await park(world, push, ID)
    world.spotler.fail("insert_contact", SpotlerTransientError("HTTP 503", status=503), times=2)
    due: list[datetime | None] = []

    for _ in range(2):
        letter = await world.state.get_dead_letter("contact", event.idempotency_key)
        assert letter is not None
        assert letter.next_retry is not None
        world.clock.advance(letter.next_retry - world.clock.now())
        assert (await pull.replay_due()).replay_failures == 1
        letter = await world.state.get_dead_letter("contact", event.idempotency_key)
        assert letter is not None
        due.append(letter.next_retry)

    assert due[0] == T0 + timedelta(seconds=60) + timedelta(seconds=120)
    assert due[1] is None  # parked for an operator now
    world.clock.advance(days=30)
    assert await pull.replay_due() == PullReport()
    assert await pull.replay("contact", event.idempotency_key)  # an operator's replay still works
    assert await world.state.get_dead_letter("contact", event.idempotency_key) is None


async def test_pull_leaves_a_record_alone_while_a_push_holds_it_and_applies_it_on_the_next_run() -> None:
    world = World()
    await world.linked(ID)
    pull = world.pull(lease_wait=timedelta(0))
    world.clock.advance(seconds=1)
    await pull.run()  # our own create: nothing to pull
    world.clock.advance(seconds=1)
    world.spotler.profile_edit(ID, properties={"firstName": "Zoë"})
    world.clock.advance(seconds=1)
    lease = f"record/contact/{ID}"
    token = await world.state.acquire_lease(lease, owner="msg-push", now=world.clock.now(), ttl=timedelta(minutes=5))
    assert token is not None

    with pytest.raises(RetryLater, match="being pushed"):
        await pull.run()
    assert world.dataverse.writes_to(ID) == []
    cut = await watermark(world)
    assert cut.in_progress
    assert cut.run_started is None

    await world.state.release_lease(lease, token)
    report = await pull.run()
    assert report.completed
    assert [w.changes for w in world.dataverse.writes_to(ID)] == [{"firstname": "Zoë"}]
    # The pull gave the record's lease back.
    next_owner = await world.state.acquire_lease(
        lease, owner="msg-next", now=world.clock.now(), ttl=timedelta(minutes=5)
    )
    assert next_owner is not None


async def test_a_withdrawal_one_row_makes_on_a_shared_contact_reaches_its_other_rows_in_the_same_pull() -> None:
    # A second record (no agreed value yet: it just joined the contact) says Do Not Bulk Email while the contact is
    # subscribed: the pull turns the bit off, and the contact's other row learns it in the same run, not the next.
    world = World()
    await world.linked(ID)
    lead = "0b000000-0000-4000-8000-0000000000aa"
    world.dataverse.put_row("lead", lead, row_attributes(ID, donotbulkemail=True))
    await world.state.save_link(LinkState("lead", lead, ID, email_hash=None, dv_version=1))
    world.clock.advance(minutes=1)
    world.spotler.profile_edit(ID, properties={"lastName": "Byron"})
    world.clock.advance(minutes=1)

    report = await world.pull().run()

    assert report.completed
    contact = world.spotler.contact(ID)
    assert contact is not None
    assert contact.permissions.get(1) is False
    row = world.dataverse.row("contact", ID)
    assert row is not None
    assert (row.attributes["donotbulkemail"], row.attributes["lastname"]) == (True, "Byron")
    writes_after_one_run = len(world.dataverse.writes)
    world.clock.advance(minutes=1)
    again = await world.pull().run()
    assert again.completed
    assert len(world.dataverse.writes) == writes_after_one_run
