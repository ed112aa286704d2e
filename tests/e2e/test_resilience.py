"""Failures and races, end to end: Spotler outages, dead letters, out-of-order deliveries, a cut-off pull."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sync_core.services.pull import WATERMARK_NAME
from sync_core.services.runtime import get_runtime
from sync_core.spotler.errors import SpotlerTransientError
from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import PROFILE_FORM_MAPPING, api, reason, spotler_writes


def person(n: int) -> dict[str, Any]:
    return {"firstname": f"Person{n}", "lastname": "Test", "emailaddress1": f"person{n}@example.nl"}


async def test_spotler_down_while_fifty_changes_arrive_every_change_lands_once_after_recovery(
    connector: Connector,
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    # Spotler is down: first rate limited (429 with Retry-After), then failing with 503 until it recovers.
    sp.inject_fault("*", "rate_limit", times=4, retry_after=1)
    sp.inject_fault("*", "error", status=503, times=None)
    ids = [dv.create("contact", person(n)) for n in range(50)]
    await asyncio.to_thread(dv.drain, timeout=30.0)
    accepted = [d for d in dv.deliveries() if d.status == "succeeded"]
    assert len(accepted) == 50, "every webhook is accepted (queued) while Spotler is down"

    handled, failed = await connector.host.run_queue_once()
    assert (handled, failed) == (0, 50)
    assert sp.contacts() == []
    assert await reason(connector, "contact", ids[0]) == "transient_error"
    assert sp.call_counts().get("GET /contact/search", 0) >= 50  # each create starts with a search by address

    sp.clear_faults()  # Spotler is back
    sp.reset_call_counts()
    assert await connector.host.run_queue(idle_rounds=2, poll_seconds=0.05) == 50

    external_ids = Counter(c["externalId"] for c in sp.contacts())
    assert external_ids == Counter(ids), "each change landed, as exactly one contact per record"
    assert spotler_writes(connector) == {"POST /contact": 50}, "and none was written twice"
    assert {await reason(connector, "contact", i) for i in ids} == {"created"}
    letters = (await api(connector, "GET", "deadletters")).json()["deadLetters"]
    assert letters == []


async def test_a_write_that_lands_after_the_client_gave_up_is_retried_into_the_same_contact(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory(SPOTLER_TIMEOUT_SECONDS="0.5") as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        # Spotler answers the first create only after the client's timeout; the write still lands.
        sp.inject_fault("POST /contact", "delay", delay=1.5)
        record_id = dv.create("contact", person(1))
        await connector.deliver()
        await asyncio.sleep(1.5)  # let the slow first write land as well
        assert spotler_writes(connector)["POST /contact"] == 2, "the create really was sent twice"
        assert [c["externalId"] for c in sp.contacts()] == [record_id]
        assert sp.contact(record_id)["properties"]["email"] == "person1@example.nl"
        assert await reason(connector, "contact", record_id) == "created"


async def test_a_change_that_keeps_failing_becomes_a_dead_letter_and_is_replayed(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    sp.inject_fault("*", "error", status=503, times=None)
    record_id = dv.create("contact", person(7))
    await connector.deliver()  # three deliveries (MAX_DELIVERY_ATTEMPTS), then the worker parks it

    letters = (await api(connector, "GET", "deadletters")).json()["deadLetters"]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["entity"], letter["recordId"], letter["attempts"]) == ("contact", record_id, 3)
    assert letter["errorClass"] == "RetryLater"
    assert letter["nextRetry"] is not None
    assert "@" not in str(letter)
    status = (await api(connector, "GET", f"status/contact/{record_id}")).json()
    assert status["reason"] == "transient_error"
    assert status["history"][0]["action"] == "dead_lettered"
    assert sp.contacts() == []

    still_down = await api(connector, "POST", f"deadletters/contact/{letter['eventId']}/replay")
    assert (still_down.status_code, still_down.json()) == (409, {"replayed": False})
    assert (await api(connector, "GET", "deadletters")).json()["deadLetters"][0]["replays"] == 1

    sp.clear_faults()
    replayed = await api(connector, "POST", f"deadletters/contact/{letter['eventId']}/replay")
    assert (replayed.status_code, replayed.json()) == (200, {"replayed": True})
    assert sp.contact(record_id)["properties"]["email"] == "person7@example.nl"
    assert await reason(connector, "contact", record_id) == "created"
    assert (await api(connector, "GET", "deadletters")).json()["deadLetters"] == []
    missing = await api(connector, "POST", f"deadletters/contact/{letter['eventId']}/replay")
    assert missing.status_code == 404


async def test_deliveries_out_of_order_leave_the_newest_state_and_one_contact(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    dv.set_webhook_options(hold=True)
    record_id = dv.create("contact", person(3))
    dv.edit("contact", record_id, {"lastname": "Second"})
    dv.edit("contact", record_id, {"lastname": "Third", "jobtitle": "Baker"})
    assert dv.release(order="reverse") == 3  # newest first: Update(Third), Update(Second), Create
    handled = await connector.deliver()
    assert handled == 3

    contacts = [c for c in sp.contacts() if c["externalId"] == record_id]
    assert len(contacts) == 1
    assert contacts[0]["properties"]["lastName"] == "Third"
    assert contacts[0]["properties"]["jobTitle"] == "Baker"
    assert sum(spotler_writes(connector).values()) == 1, "the older events wrote nothing"
    # Whichever event came first wrote the newest row; the others found Spotler already agreeing.
    assert await reason(connector, "contact", record_id) in ("created", "synced")


async def test_pull_cut_off_after_page_two_of_five_resumes_and_applies_each_change_once(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory(PULL_PAGE_SIZE="2", MAPPING_FILE=PROFILE_FORM_MAPPING) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        ids = [dv.create("contact", person(n)) for n in range(10)]
        await connector.deliver()
        await asyncio.sleep(0.05)
        await connector.host.run_timer()  # reads the creations' echoes: nothing to write back
        state = get_runtime().state
        before = await state.get_watermark(WATERMARK_NAME)
        assert before is not None
        assert before.value is not None
        assert not before.in_progress
        writes_before = len(dv.writes)

        # Ten profile edits a quarter second apart on Spotler's clock: a feed of five pages of two, whose
        # page boundaries fall both inside and between whole seconds.
        sp.set_clock(datetime.now(UTC))
        for n, record_id in enumerate(ids):
            sp.advance_clock(0.25)
            sp.profile_edit(record_id, properties={"firstName": f"Edited{n}"})
        sp.use_wall_clock()
        await asyncio.sleep(2.6)  # until the last edit lies before the moment the pull starts

        # Page 3 fails for good: the run stops after applying pages 1 and 2.
        sp.inject_fault("GET /contact/updates/list", "error", status=500, times=None, after=2)
        with pytest.raises(SpotlerTransientError):
            await connector.host.run_timer()
        firstnames = [dv.row("contact", i)["firstname"] for i in ids]
        assert firstnames[:4] == ["Edited0", "Edited1", "Edited2", "Edited3"]
        assert firstnames[4:] == [f"Person{n}" for n in range(4, 10)]
        cut = await state.get_watermark(WATERMARK_NAME)
        assert cut is not None
        assert cut.in_progress
        assert cut.value == before.value, "the watermark itself moves only when the window is done"
        assert cut.run_started is None, "a failed run gives its lease back"

        # Meanwhile an already-read contact changes again and leaves the window: offset paging would skip one.
        sp.profile_edit(ids[0], properties={"firstName": "EditedAgain"})
        sp.clear_faults()
        await asyncio.sleep(0.05)
        await connector.host.run_timer()
        assert [dv.row("contact", i)["firstname"] for i in ids[1:]] == [f"Edited{n}" for n in range(1, 10)]
        await connector.host.run_timer()  # the next run picks up the change made during the cut
        assert dv.row("contact", ids[0])["firstname"] == "EditedAgain"

        pulled = Counter(w.record_id for w in dv.writes[writes_before:] if "firstname" in w.changed)
        assert pulled == Counter({**dict.fromkeys(ids[1:], 1), ids[0]: 2}), "every change applied exactly once"
        done = await state.get_watermark(WATERMARK_NAME)
        assert done is not None
        assert not done.in_progress
        newest = max(c["lastChanged"] for c in sp.contacts())
        assert done.value is not None
        assert int(done.value.timestamp() * 1000) == newest, "the watermark ends at the last change"


async def test_the_pull_run_replays_dead_letters_once_they_are_due(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    sp.inject_fault("*", "error", status=503, times=None)
    due_id = dv.create("contact", person(8))
    later_id = dv.create("contact", person(9))
    await connector.deliver()
    sp.clear_faults()
    state = get_runtime().state
    letters = {d.event["id"]: d for d in await state.list_dead_letters()}
    assert set(letters) == {due_id, later_id}
    # Time passes for one of them: its next automatic replay is now due, the other's is still ahead.
    past = datetime.now(UTC) - timedelta(seconds=1)
    await state.put_dead_letter(dataclasses.replace(letters[due_id], next_retry=past))

    await connector.host.run_timer()
    assert sp.contact(due_id)["properties"]["email"] == "person8@example.nl"
    assert await reason(connector, "contact", due_id) == "created"
    assert sp.contact(later_id) is None
    remaining = [d.event["id"] for d in await state.list_dead_letters()]
    assert remaining == [later_id]


async def test_two_pull_runs_at_once_read_and_write_once(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(MAPPING_FILE=PROFILE_FORM_MAPPING) as connector:
        await two_pull_runs_at_once(connector)


async def two_pull_runs_at_once(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    ids = [dv.create("contact", person(n)) for n in range(3)]
    await connector.deliver()
    await asyncio.sleep(0.05)
    await connector.host.run_timer()
    for n, record_id in enumerate(ids):
        sp.profile_edit(record_id, properties={"lastName": f"Overlap{n}"})
    await asyncio.sleep(0.05)
    sp.reset_call_counts()
    writes_before = len(dv.writes)

    await asyncio.gather(connector.host.run_timer(), connector.host.run_timer())
    assert sp.call_counts()["GET /contact/updates/list"] == 1, "only the run that claimed the watermark reads"
    pulled = Counter(w.record_id for w in dv.writes[writes_before:] if "lastname" in w.changed)
    assert pulled == Counter(ids)
    assert [dv.row("contact", i)["lastname"] for i in ids] == ["Overlap0", "Overlap1", "Overlap2"]


async def test_after_a_long_outage_an_operator_replays_every_dead_letter_at_once(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    sp.inject_fault("*", "error", status=503, times=None)
    ids = [dv.create("contact", person(20 + n)) for n in range(4)]
    await connector.deliver()
    assert len((await api(connector, "GET", "deadletters")).json()["deadLetters"]) == 4

    down = await api(connector, "POST", "deadletters/replay")
    assert (down.status_code, down.json()) == (200, {"replayed": 0, "failed": 4, "remaining": 4})
    sp.clear_faults()
    back = await api(connector, "POST", "deadletters/replay")
    assert (back.status_code, back.json()) == (200, {"replayed": 4, "failed": 0, "remaining": 0})
    assert sorted(c["externalId"] for c in sp.contacts()) == sorted(ids)
    assert {await reason(connector, "contact", i) for i in ids} == {"created"}
