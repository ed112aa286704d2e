"""The connector end to end: pull write-back and echoes, duplicates, rejected calls, health, tombstones.

Per-table record lifecycles are in test_record_lifecycle.py, failures and races in test_resilience.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync_core.domain.reasons import reason_from_option
from tests.e2e.conftest import WEBHOOK_KEY, Connector, ConnectorFactory
from tests.e2e.support import PROFILE_FORM_MAPPING, reason

JAN = {"firstname": "Jan", "lastname": "Dijk", "emailaddress1": "jan.dijk@example.nl", "jobtitle": "Buyer"}


async def table_rows(connector: Connector) -> dict[str, int]:
    """Rows per state table, read straight from Azurite."""
    from azure.data.tables.aio import TableServiceClient

    from sync_core.state.tables import TABLE_SUFFIXES

    prefix = connector.settings["SYNC_TABLE_PREFIX"]
    counts: dict[str, int] = {}
    async with TableServiceClient.from_connection_string(connector.settings["AzureWebJobsStorage"]) as service:
        for suffix in TABLE_SUFFIXES:
            table = service.get_table_client(f"{prefix}{suffix}")
            counts[suffix] = len([row async for row in table.list_entities()])
    return counts


async def test_profile_edit_reaches_dynamics_for_two_way_fields_only_and_echo_writes_nothing(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory(MAPPING_FILE=PROFILE_FORM_MAPPING) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        record_id = dv.create("contact", JAN)
        await connector.deliver()
        sp.profile_edit(
            record_id,
            properties={"firstName": "Janneke", "jobTitle": "Chef", "phoneNumber": "+31 30 123 4567"},
            permissions={1: False},
        )
        # A pull reads the feed up to (excluding) the moment it starts; let the edit be strictly before that.
        await asyncio.sleep(0.05)
        await connector.host.run_timer()
        row = dv.row("contact", record_id)
        assert row is not None
        assert row["firstname"] == "Janneke"  # 🔁
        assert row["telephone1"] == "+31 30 123 4567"  # ⬅
        assert row["jobtitle"] == "Buyer"  # ➡ only: Spotler's value does not come back
        assert row["donotbulkemail"] is True  # the permission flowed back
        # Our own write-back is recognised: its webhook causes no Spotler write, and a second pull writes nothing.
        await connector.deliver()
        sp.reset_call_counts()
        writes_before = len(dv.writes)
        await connector.host.run_timer()
        await connector.deliver()
        counts = sp.call_counts()
        assert not any(k.startswith(("POST", "PUT")) for k in counts), counts
        assert len(dv.writes) == writes_before


async def test_default_mapping_sends_profile_fields_to_spotler_only_and_subscriptions_both_ways(
    connector: Connector,
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    record_id = dv.create("contact", {**JAN, "birthdate": "1980-04-02"})
    await connector.deliver()
    sp.profile_edit(
        record_id,
        properties={"firstName": "Janneke", "lastName": "Dijkstra", "birthday": "1981-05-03", "jobTitle": "Chef"},
        permissions={1: False},
    )
    await asyncio.sleep(0.05)
    await connector.host.run_timer()
    row = dv.row("contact", record_id)
    assert row is not None
    # ➡ fields: Spotler's edits never come back to Dynamics.
    assert (row["firstname"], row["lastname"], row["birthdate"], row["jobtitle"]) == (
        "Jan",
        "Dijk",
        "1980-04-02",
        "Buyer",
    )
    assert row["donotbulkemail"] is True  # 🔁 permissions: the unsubscribe flows back


async def test_duplicate_delivery_leaves_one_contact_and_one_write(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    dv.set_webhook_options(duplicate=True)
    record_id = dv.create("contact", JAN)
    handled = await connector.deliver()
    delivered = [d for d in dv.deliveries() if d.record_id == record_id and d.status == "succeeded"]
    assert len(delivered) == 2, "the sandbox must really have delivered the event twice"
    assert handled == 2
    assert len([c for c in sp.contacts() if c["externalId"] == record_id]) == 1
    writes = {k: v for k, v in sp.call_counts().items() if k.startswith(("POST", "PUT"))}
    assert sum(writes.values()) == 1, writes


@pytest.mark.parametrize(
    ("url_suffix", "body", "expected"),
    [
        (f"?code={WEBHOOK_KEY}", b"{not json", 400),
        ("?code=wrong", b"{}", 401),
        ("", b"{}", 401),
        (f"?code={WEBHOOK_KEY}", b"{" + b" " * 2_000_000 + b"}", 413),
    ],
)
async def test_rejected_webhook_calls_leave_queue_and_tables_untouched(
    connector: Connector, url_suffix: str, body: bytes, expected: int
) -> None:
    tables_before = await table_rows(connector)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{connector.host.url}/api/dynamics/webhook{url_suffix}", content=body)
    assert response.status_code == expected
    if expected == 401:
        assert response.json() == {"status": "unauthorized"}
    assert await connector.host.run_queue(idle_rounds=1, poll_seconds=0.01) == 0
    assert await table_rows(connector) == tables_before


async def test_health_answers_only_its_verdict(connector: Connector) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{connector.host.url}/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


async def test_delete_of_an_unlinked_record_tombstones_the_address_from_its_pre_image(connector: Connector) -> None:
    from sync_core.domain.consent import email_hash
    from sync_core.services.runtime import get_runtime

    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    # A row that exists in both systems but was never linked by the connector; Spotler holds no e-mail for it.
    record_id = dv.seed("contact", JAN)
    sp.seed([{"externalId": record_id, "properties": {"firstName": "Jan"}}])
    dv.delete("contact", record_id)
    await connector.deliver()

    runtime = get_runtime()
    key = connector.settings["SUPPRESSION_HASH_KEY"].encode()
    tombstone = await runtime.state.get_suppression(email_hash(key, JAN["emailaddress1"]))
    assert tombstone is not None
    assert await reason(connector, "contact", record_id) == "anonymized"


def column_reason(row: dict[str, Any] | None) -> str | None:
    """The reason code a row's Spotler status choice column shows."""
    assert row is not None
    code = reason_from_option(row.get("sync_spotlerstatus"))
    return code.value if code is not None else None


async def test_status_columns_show_each_records_spotler_status_in_dynamics(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(
        DATAVERSE_STATUS_COLUMN="sync_spotlerstatus",
        DATAVERSE_STATUS_DETAIL_COLUMN="sync_spotlerstatusdetail",
        DATAVERSE_STATUS_SYNCED_ON_COLUMN="sync_spotlerlastsynced",
        MAPPING_FILE=PROFILE_FORM_MAPPING,
    ) as connector:
        dv = connector.dataverse.sandbox
        synced = dv.create("contact", JAN)
        no_email = dv.create("contact", {"firstname": "Piet", "lastname": "Zonder", "emailaddress1": "piet@"})
        await connector.deliver()
        assert column_reason(dv.row("contact", synced)) == "created"
        assert dv.row("contact", synced)["sync_spotlerlastsynced"]
        row = dv.row("contact", no_email)
        assert column_reason(row) == "no_valid_email"
        assert row["sync_spotlerstatusdetail"]
        assert row.get("sync_spotlerlastsynced") is None  # never in sync
        assert "piet@" not in row["sync_spotlerstatusdetail"]
        assert connector.spotler.store.contact(no_email) is None
        # A pulled change carries its status in the same request as the pulled value.
        connector.spotler.store.profile_edit(synced, properties={"firstName": "Johannes"})
        await asyncio.sleep(0.05)
        writes_before = len(dv.writes)
        await connector.host.run_timer()
        assert [(w.record_id, set(w.changed)) for w in dv.writes[writes_before:]] == [
            (synced, {"firstname", "sync_spotlerstatus", "sync_spotlerstatusdetail", "sync_spotlerlastsynced"})
        ]
        pulled = dv.row("contact", synced)
        assert (pulled["firstname"], column_reason(pulled)) == ("Johannes", "updated")
        assert "firstname" in pulled["sync_spotlerstatusdetail"]
        await connector.deliver()  # the write-back's own webhook
        # The status write is the connector's own: it sends no webhook back to it (the column is not watched).
        before = len(dv.deliveries())
        dv.edit("contact", synced, {"donotemail": True})
        await connector.deliver()
        assert column_reason(dv.row("contact", synced)) == "anonymized"
        assert len(dv.deliveries()) == before + 1


async def test_a_pulled_global_opt_out_shows_as_opted_out_on_the_route_and_the_column(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory(
        DATAVERSE_STATUS_COLUMN="sync_spotlerstatus", DATAVERSE_STATUS_DETAIL_COLUMN="sync_spotlerstatusdetail"
    ) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        record_id = dv.create("contact", JAN)
        await connector.deliver()
        sp.profile_edit(record_id, opt_out=True)  # the person unsubscribes from everything in Spotler
        await asyncio.sleep(0.05)
        await connector.host.run_timer()
        await connector.deliver()
        row = dv.row("contact", record_id)
        assert row is not None
        assert row["donotbulkemail"] is True
        assert await reason(connector, "contact", record_id) == "opted_out_in_spotler"
        assert column_reason(row) == "opted_out_in_spotler"
        # A later save in Dynamics writes nothing to the opted-out contact and keeps the status.
        dv.edit("contact", record_id, {"jobtitle": "Koper"})
        await connector.deliver()
        assert await reason(connector, "contact", record_id) == "opted_out_in_spotler"
        assert column_reason(dv.row("contact", record_id)) == "opted_out_in_spotler"


async def test_webhook_answers_503_and_keeps_nothing_when_the_queue_cannot_store_the_event(
    connector: Connector,
) -> None:
    from azure.storage.queue.aio import QueueClient

    dv = connector.dataverse.sandbox
    dv.set_webhook_options(hold=True)
    record_id = dv.create("contact", JAN)
    [held] = [d for d in dv.deliveries() if d.record_id == record_id]
    queue = QueueClient.from_connection_string(
        connector.settings["AzureWebJobsStorage"], connector.settings["SYNC_QUEUE_NAME"]
    )
    async with queue, httpx.AsyncClient() as http:
        await queue.delete_queue()  # storage refuses the write
        down = await http.post(held.url, content=held.body.encode(), headers=held.headers)
        assert (down.status_code, down.json()) == (503, {"status": "event could not be stored; retry"})
        await queue.create_queue()
        assert list(await queue.peek_messages(max_messages=32)) == []
        up = await http.post(held.url, content=held.body.encode(), headers=held.headers)
        assert up.status_code == 202
    assert await connector.host.run_queue(idle_rounds=2, poll_seconds=0.05) == 1
    assert await reason(connector, "contact", record_id) == "created"
