"""Bulk writes and live pushes of the same records: the record leases, and the work item's set-wise reads.

Both sandboxes over HTTP and Azurite, through function_app.py (the bulk queue trigger).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from azure.data.tables.aio import TableServiceClient

from sandboxes.bulk_data import load_crm
from sync_core.services.bulk_runtime import get_bulk_engine
from sync_core.services.bulk_tables import RANGE_MIN, RANGE_SLACK, read_keys
from sync_core.services.leases import RecordLeases, lease_name
from sync_core.services.runtime import get_runtime
from tests.e2e.conftest import Connector
from tests.e2e.test_bulk_runs import assert_loaded, start


def inserts(connector: Connector) -> int:
    return connector.spotler.store.call_counts().get("POST /contact/list", 0)


async def test_a_work_item_waits_for_a_live_push_holding_one_of_its_records(connector: Connector) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 40)
    runtime = get_runtime()
    engine = get_bulk_engine(runtime)
    held = sorted(r for e, r in crm.eligible if e == "contact")[0]
    live = RecordLeases(runtime.state, runtime.clock)
    token = await live.take("contact", held, "live-push")  # a live push is busy with this record
    assert token is not None
    run_id = await start(connector, "backfill")
    task = asyncio.create_task(connector.host.run_bulk(run_id))
    expected = None
    for _ in range(600):  # until the apply phase is scanned and every other work item finished
        await asyncio.sleep(0.05)
        doc = await engine.run_doc(run_id)
        assert doc is not None
        scans = doc["scans"].get("apply", {})
        if doc["phase"] in ("apply", "done") and all(scans.get(e, {}).get("done") for e in doc["entities"]):
            expected = sum(int(e["items"]) for e in scans.values())
            if await engine.tables.count_items(run_id, "apply") >= expected - 1:
                break
    assert expected is not None
    await asyncio.sleep(1.0)
    # The contacts' work item holds still while the live push has the record; nothing of it was sent.
    assert await engine.tables.count_items(run_id, "apply") == expected - 1
    assert connector.spotler.store.contact(held) is None
    await live.give_back("contact", held, token)
    assert await asyncio.wait_for(task, 120) == "done"
    assert connector.spotler.store.contact(held) is not None
    assert_loaded(connector, crm)
    # Every lease the run took was given back: the live push takes the record at once.
    again = await runtime.state.acquire_lease(
        lease_name("contact", held), owner="next-push", now=runtime.clock(), ttl=timedelta(seconds=5)
    )
    assert again is not None


async def test_a_record_held_longer_than_the_wait_fails_its_item_before_anything_is_written(
    connector: Connector,
) -> None:
    crm = load_crm(connector.dataverse.sandbox, connector.spotler.store, 30)
    runtime = get_runtime()
    engine = get_bulk_engine(runtime)
    engine._bulk = dataclasses.replace(engine._bulk, lease_wait_seconds=0.3)
    held = sorted(r for e, r in crm.eligible if e == "lead")[0]
    token = await runtime.state.acquire_lease(
        lease_name("lead", held), owner="live-push", now=runtime.clock(), ttl=timedelta(minutes=5)
    )
    assert token is not None
    run_id = await start(connector, "backfill")
    task = asyncio.create_task(connector.host.run_bulk(run_id, visibility=2))
    unfinished = None
    for _ in range(600):  # until every other work item of the apply phase is finished
        await asyncio.sleep(0.1)
        doc = await engine.run_doc(run_id)
        assert doc is not None
        scans = doc["scans"].get("apply", {})
        if doc["phase"] == "apply" and all(scans.get(e, {}).get("done") for e in doc["entities"]):
            expected = sum(int(e["items"]) for e in scans.values())
            if await engine.tables.count_items(run_id, "apply") == expected - 1:
                unfinished = expected
                break
    assert unfinished is not None, "the other work items finish while one record is held"
    await asyncio.sleep(3.0)  # the held item is delivered again and fails again, writing nothing
    assert not task.done()
    sent = inserts(connector)
    assert connector.spotler.store.contact(held) is None
    await runtime.state.release_lease(lease_name("lead", held), token)
    assert await asyncio.wait_for(task, 60) == "done"
    assert connector.spotler.store.contact(held) is not None
    assert inserts(connector) == sent + 1, "the held item was sent once, after the lease was given back"
    assert_loaded(connector, crm)


async def test_a_range_read_cut_short_reads_the_rest_point_by_point(connector: Connector) -> None:
    del connector
    settings = get_runtime().settings
    conn = settings.resolved_storage_connection_string
    assert conn is not None
    async with TableServiceClient.from_connection_string(conn) as service:
        table = await service.create_table_if_not_exists(f"{settings.table_prefix}rangeprobe")
        rows = [{"PartitionKey": "p", "RowKey": f"k{n:04d}", "n": n} for n in range(400)]
        for start_at in range(0, len(rows), 100):
            await table.submit_transaction([("upsert", r) for r in rows[start_at : start_at + 100]])
        wanted = ["k0000", "k0005", "k0399", "k0398", "absent"]
        assert RANGE_SLACK * len(wanted) + RANGE_MIN < 400  # the span holds more rows than the budget
        found = await read_keys(table, "p", wanted)
        assert sorted(found) == ["k0000", "k0005", "k0398", "k0399"]
        assert found["k0399"]["n"] == 399
        assert await read_keys(table, "p", ["k0007"]) == {"k0007": await table.get_entity("p", "k0007")}
        await service.delete_table(f"{settings.table_prefix}rangeprobe")


async def test_claims_of_one_item_give_each_address_one_owner(connector: Connector) -> None:
    del connector
    tables = get_bulk_engine(get_runtime()).tables
    await tables.ensure_ready()
    run = "claims-probe"
    first = [("a1" * 32, "contact", "c1", "c1"), ("b2" * 32, "contact", "c2", "c2")]
    assert await tables.claim_emails(run, "apply", first) == [None, None]
    # Again (a redelivered item): each record still holds its own address.
    assert await tables.claim_emails(run, "apply", first) == [None, None]
    # A later item: one address taken by c1, one named twice in the item, one free.
    later = [
        ("a1" * 32, "lead", "l1", "l1"),
        ("c3" * 32, "lead", "l2", "l2"),
        ("c3" * 32, "lead", "l3", "l3"),
        ("d4" * 32, "lead", "l4", "l4"),
    ]
    owners = await tables.claim_emails(run, "apply", later)
    assert owners[0] is not None
    assert (owners[0].entity, owners[0].record_id, owners[0].external_id) == ("contact", "c1", "c1")
    assert owners[1] is None
    assert owners[2] is not None
    assert owners[2].record_id == "l2"
    assert owners[3] is None
    # Another phase claims afresh.
    assert await tables.claim_emails(run, "assess", later[:1]) == [None]
