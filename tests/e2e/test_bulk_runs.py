"""Bulk runs through function_app.py: the HTTP routes start them, the bulk queue trigger carries them out.

Both sandboxes over HTTP and Azurite; a CRM of a few hundred rows (the 10,000-row run is bench/bench_bulk.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from azure.functions.queue import QueueMessage

import function_app
from sandboxes._server import free_port
from sandboxes.bulk_data import LoadedCrm, load_crm
from sync_core.domain.reasons import reason_from_option
from sync_core.services.bulk_runtime import get_bulk_engine
from sync_core.services.runtime import get_runtime
from tests.e2e.conftest import Connector, ConnectorFactory

SIZE = 240


async def start(connector: Connector, kind: str, body: dict[str, Any] | None = None) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{connector.host.url}/api/bulk/{kind}", json=body or {})
    assert response.status_code == 202, response.text
    return str(response.json()["run"])


async def run(connector: Connector, kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    run_id = await start(connector, kind, body)
    await connector.host.run_bulk(run_id)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{connector.host.url}/api/bulk/runs/{run_id}")
    assert response.status_code == 200
    summary: dict[str, Any] = response.json()
    return summary


def spotler_writes(connector: Connector) -> int:
    counts = connector.spotler.store.call_counts()
    return sum(v for k, v in counts.items() if k.startswith(("POST", "PUT")))


def dataverse_writes(connector: Connector) -> int:
    counts = connector.dataverse.sandbox.request_counts()
    return sum(v for k, v in counts.items() if not k.startswith("GET"))


async def reasons_of(crm: LoadedCrm) -> Counter[str]:
    state = get_runtime().state
    found: Counter[str] = Counter()
    for entity, ids in crm.records.items():
        views = await asyncio.gather(*(state.list_status(entity, i, limit=1) for i in ids))  # type: ignore[arg-type]
        for history in views:
            found[history[0].reason.value if history else "none"] += 1
    return found


def assert_loaded(connector: Connector, crm: LoadedCrm) -> None:
    contacts = connector.spotler.store.contacts()
    by_email: Counter[str] = Counter(str(c["properties"].get("email", "")).lower() for c in contacts)
    assert max(by_email.values()) == 1, "one person, one Spotler contact"
    for record in crm.eligible:
        assert crm.emails[record].lower() in by_email
    assert len(contacts) == crm.distinct_eligible_emails


async def test_backfill_dry_run_then_real_run_load_every_eligible_record_once(connector: Connector) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, SIZE)
    connector.spotler.store.reset_call_counts()
    spotler_before = connector.spotler.store.contacts()

    dry = await run(connector, "backfill", {"dryRun": True})
    assert dry["phase"] == "done"
    assert spotler_writes(connector) == 0
    assert dataverse_writes(connector) == 0
    assert connector.spotler.store.contacts() == spotler_before
    assert await reasons_of(crm) == Counter({"none": crm.total}), "a dry run records no status"

    real = await run(connector, "backfill")
    assert real["phase"] == "done"
    assert real["apply"]["outcomes"] == dry["assess"]["outcomes"], "the dry run's counts are the real run's"
    assert real["apply"]["records"] == crm.total
    assert_loaded(connector, crm)
    reasons = await reasons_of(crm)
    assert reasons["none"] == 0, "every record has a status"
    created = sum(n for k, n in real["apply"]["outcomes"].items() if k.startswith("create/"))
    assert created == crm.distinct_eligible_emails - crm.preexisting
    assert connector.spotler.store.call_counts().get("GET /contact/search", 0) == 0, "no search per record"
    items = sum(n for k, n in connector.spotler.store.call_counts().items() if k == "POST /contact/list")
    assert items <= (crm.total // 100 + 3) * 3 + 3

    again = await run(connector, "backfill")
    assert again["apply"]["spotlerWrites"] == 0, "a second backfill finds everything in step"


async def test_killed_backfill_resumes_without_duplicates_or_resending(connector_factory: ConnectorFactory) -> None:
    async with connector_factory() as connector:
        crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, SIZE)
        connector.spotler.store.reset_call_counts()
        run_id = await start(connector, "backfill")
        task = asyncio.create_task(connector.host.run_bulk(run_id, batch_size=2, visibility=2))
        for _ in range(600):
            await asyncio.sleep(0.02)
            if connector.spotler.store.call_counts().get("POST /contact/list", 0) >= 2:
                break
        task.cancel()  # the process dies mid-run: messages in flight reappear after their visibility timeout
        await asyncio.gather(task, return_exceptions=True)
        sent_before = connector.spotler.store.call_counts().get("POST /contact/list", 0)
        assert sent_before >= 2
        assert await connector.host.run_bulk(run_id) == "done"
        engine = get_bulk_engine(get_runtime())
        doc = await engine.run_doc(run_id)
        assert doc is not None
        items = sum(int(e["items"]) for e in doc["scans"]["apply"].values())
        total_sent = connector.spotler.store.call_counts()["POST /contact/list"]
        # Work items that had nothing to write send nothing; at most the two cut off in flight are sent twice.
        assert total_sent <= items + 2
        assert doc["apply"]["spotlerWrites"] <= items
        assert_loaded(connector, crm)


async def test_guard_stops_mass_anonymization_and_the_flag_lets_it_through(connector: Connector) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 120)
    assert (await run(connector, "backfill"))["phase"] == "done"
    store = connector.dataverse.sandbox.store
    # Contacts whose address no other record holds: a shared contact is kept for its other live record.
    holders = Counter(address.casefold() for address in crm.emails.values())
    marked = 0
    for record_id in crm.records["contact"]:
        alone = holders[crm.emails.get(("contact", record_id), "").casefold()] == 1
        if ("contact", record_id) in crm.eligible and alone and marked < 30:
            store.update("contact", record_id, {"donotemail": True}, user_id=connector.dataverse.sandbox.human_user_id)
            marked += 1
    connector.spotler.store.reset_call_counts()
    stopped = await run(connector, "resync", {})
    assert stopped["phase"] == "stopped"
    assert "MASS_CHANGE_SHARE" in stopped["verdict"]["message"]
    assert stopped["assess"]["massChanges"] == marked
    assert spotler_writes(connector) == 0, "stopped before writing anything"

    allowed = await run(connector, "resync", {"allowMassChanges": True})
    assert allowed["phase"] == "done"
    assert sum(n for k, n in allowed["apply"]["outcomes"].items() if k.startswith("anonymize/")) == marked


async def test_resync_one_record_repairs_a_hand_edit_in_spotler(connector: Connector) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 40)
    assert (await run(connector, "backfill"))["phase"] == "done"
    record = next(r for e, r in sorted(crm.eligible) if e == "contact" and not r.startswith("imported"))
    link = await get_runtime().state.get_link("contact", record)
    assert link is not None
    connector.spotler.store.profile_edit(
        link.external_id, properties={"jobTitle": "Changed by hand"}
    )  # Dynamics owns it
    connector.spotler.store.reset_call_counts()
    summary = await run(connector, "resync", {"table": "contact", "id": record})
    assert summary["apply"]["records"] == 1
    assert summary["apply"]["outcomes"] == {"update/updated": 1}
    contact = connector.spotler.store.contact(link.external_id)
    assert contact is not None
    row = connector.dataverse.sandbox.row("contact", record)
    assert row is not None
    assert contact["properties"]["jobTitle"] == row["jobtitle"]


async def test_resync_of_a_record_whose_contact_was_anonymized_joins_the_contact_that_holds_its_address(
    connector: Connector,
) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 40)
    assert (await run(connector, "backfill"))["phase"] == "done"
    record = next(r for e, r in sorted(crm.eligible) if e == "contact" and not r.startswith("imported"))
    link = await get_runtime().state.get_link("contact", record)
    assert link is not None
    store = connector.spotler.store
    before = store.contact(link.external_id)
    assert before is not None
    address = before["properties"]["email"]
    # The contact was anonymized in Spotler, and the person signed up again through a form: a new contact holds
    # the address now. Writing the record's address onto the anonymized contact would make it two contacts.
    store.anonymize(link.external_id)
    store.seed([{"externalId": "form-signup", "properties": {"email": address}}])

    summary = await run(connector, "resync", {"table": "contact", "id": record})

    assert summary["apply"]["records"] == 1
    holders = [c for c in store.contacts() if (c["properties"].get("email") or "").casefold() == address.casefold()]
    assert [c["externalId"] for c in holders] == ["form-signup"]
    moved = await get_runtime().state.get_link("contact", record)
    assert moved is not None
    assert moved.external_id == "form-signup"


async def test_a_dry_run_counts_records_the_live_rules_write_as_the_real_run_writes_them(
    connector: Connector,
) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 40)
    assert (await run(connector, "backfill"))["phase"] == "done"
    store = connector.spotler.store
    state = get_runtime().state
    records = [r for e, r in sorted(crm.eligible) if e == "contact" and not r.startswith("imported")]
    anonymized, merged = records[0], records[1]
    # One record's contact was anonymized while a form signup took its address; another's contact was merged by
    # Spotler into a contact that holds its address now. The real run writes both through the live push's rules,
    # which follow the address to the contact holding it; the dry run must count them the same way.
    for record, holder in ((anonymized, "form-signup"), (merged, "kept-duplicate")):
        link = await state.get_link("contact", record)
        assert link is not None
        current = store.contact(link.external_id)
        assert current is not None
        address = current["properties"]["email"]
        if record == anonymized:
            store.anonymize(link.external_id)
            store.seed([{"externalId": holder, "properties": {"email": address}}])
        else:
            store.seed([{"externalId": holder, "properties": {"email": address.upper()}}])
            store.merge_duplicates(link.external_id, holder)

    dry = await run(connector, "resync", {"table": "contact", "dryRun": True})
    real = await run(connector, "resync", {"table": "contact"})

    assert dry["phase"] == real["phase"] == "done"
    assert real["apply"]["outcomes"] == dry["assess"]["outcomes"], "the dry run's counts are the real run's"
    for record, holder in ((anonymized, "form-signup"), (merged, "kept-duplicate")):
        moved = await state.get_link("contact", record)
        assert moved is not None
        assert moved.external_id == holder


async def test_bad_bulk_requests_get_a_400_and_start_nothing(connector: Connector) -> None:
    async with httpx.AsyncClient() as http:
        for body in ({"table": "invoice"}, {"id": "x"}, [1]):
            response = await http.post(f"{connector.host.url}/api/bulk/resync", json=body)
            assert response.status_code == 400, body
        response = await http.get(f"{connector.host.url}/api/bulk/runs/nope")
        assert response.status_code == 404
    assert await get_bulk_engine(get_runtime()).tables.list_runs() == []


async def test_reconcile_repairs_a_dropped_webhook(connector: Connector) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 30)
    assert (await run(connector, "backfill"))["phase"] == "done"
    first = await run(connector, "reconcile")  # the first sweep reads everything and keeps the delta link
    assert first["phase"] == "done"
    assert first["apply"]["spotlerWrites"] == 0
    # The connector cannot be reached (a network outage): Dataverse tries, retries once, then drops the change.
    sandbox = connector.dataverse.sandbox
    for registration in list(sandbox.sender.registrations.values()):
        sandbox.sender.unregister(registration.id)
    sandbox.register_webhook(
        url=f"http://127.0.0.1:{free_port()}/api/dynamics/webhook", entity="contact", auth_type="webhook_key",
        auth_value="e2e-webhook-key",
    )  # fmt: skip
    record = next(r for e, r in sorted(crm.eligible) if e == "contact")
    sandbox.edit("contact", record, {"jobtitle": "Head of Purchasing"}, user_id=sandbox.human_user_id)
    await asyncio.to_thread(sandbox.drain, timeout=30.0)
    dropped = [d for d in sandbox.deliveries() if d.record_id == record]
    assert dropped
    assert all(d.status == "failed" for d in dropped)
    link = await get_runtime().state.get_link("contact", record)
    assert link is not None
    contact = connector.spotler.store.contact(link.external_id)
    assert contact is not None
    assert contact["properties"].get("jobTitle") != "Head of Purchasing"

    repaired = await run(connector, "reconcile")
    assert repaired["phase"] == "done"
    assert repaired["apply"]["records"] == 1, "only the row changed since the last sweep"
    assert repaired["apply"]["outcomes"] == {"update/updated": 1}
    contact = connector.spotler.store.contact(link.external_id)
    assert contact is not None
    assert contact["properties"]["jobTitle"] == "Head of Purchasing"


async def test_contacts_stamped_ahead_of_the_clock_are_still_paired(connector: Connector) -> None:
    store = connector.spotler.store
    store.set_clock(datetime.now(UTC) + timedelta(hours=2))  # Spotler's stamps run ahead of ours
    crm = load_crm(connector.dataverse.sandbox, store, 40)
    assert crm.preexisting > 0
    summary = await run(connector, "backfill")
    assert summary["apply"]["outcomes"].get("update/updated") == crm.preexisting
    assert connector.spotler.store.call_counts().get("GET /contact/search", 0) == 0
    assert_loaded(connector, crm)


async def test_a_backfill_writes_each_active_records_status_columns(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(
        DATAVERSE_STATUS_COLUMN="sync_spotlerstatus",
        DATAVERSE_STATUS_DETAIL_COLUMN="sync_spotlerstatusdetail",
        DATAVERSE_STATUS_SYNCED_ON_COLUMN="sync_spotlerlastsynced",
    ) as connector:
        crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 40)
        assert (await run(connector, "backfill"))["phase"] == "done"
        dv = connector.dataverse.sandbox
        state = get_runtime().state
        for entity, record_id in sorted(crm.eligible):
            row = dv.row(entity, record_id)
            assert row is not None
            [latest, *_] = await state.list_status(entity, record_id)
            assert reason_from_option(row["sync_spotlerstatus"]) == latest.reason  # the column says what the route says
            assert row["sync_spotlerlastsynced"]


async def test_finished_bulk_runs_join_the_run_history(connector: Connector) -> None:
    load_crm(connector.dataverse.sandbox, connector.spotler.store, 30)
    dry = await run(connector, "backfill", {"dryRun": True})
    real = await run(connector, "backfill")
    async with httpx.AsyncClient() as http:
        runs = (await http.get(f"{connector.host.url}/api/runs", params={"kind": "bulk"})).json()["runs"]
    by_id = {r["runId"]: r for r in runs}
    assert by_id[dry["run"]]["outcome"] == "completed"
    assert by_id[dry["run"]]["note"] == "backfill: dry run"
    assert by_id[real["run"]]["outcome"] == "completed"
    assert by_id[real["run"]]["counts"]["records"] == real["apply"]["records"] > 0


async def test_a_bulk_message_that_cannot_be_handled_ends_as_a_visible_dead_letter(connector: Connector) -> None:
    await function_app.bulk_worker(QueueMessage(id="m-1", body=b'["not", "a bulk message"]', dequeue_count=1))
    await function_app.bulk_worker(QueueMessage(id="m-3", body=b'{"t": "item"}', dequeue_count=1))
    await function_app.bulk_poison_worker(
        QueueMessage(id="m-2", body=b'{"t": "item", "run": "r-1", "entity": "lead"}', dequeue_count=1)
    )
    async with httpx.AsyncClient() as http:
        letters = (await http.get(f"{connector.host.url}/api/deadletters")).json()["deadLetters"]
    by_class = {letter["errorClass"]: letter for letter in letters}
    assert set(by_class) == {"BulkMessageError", "BulkWorkFailed"}
    assert sum(letter["errorClass"] == "BulkMessageError" for letter in letters) == 2
    assert by_class["BulkWorkFailed"]["entity"] == "lead"
    raws = [await get_runtime().state.get_dead_letter("contact", x["eventId"]) for x in letters]
    assert {"raw": '["not", "a bulk message"]'} in [r.event for r in raws if r is not None]
