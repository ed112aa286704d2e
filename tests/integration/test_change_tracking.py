"""Dataverse change tracking over HTTP (the sandbox and the client), and the live guard on Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.data.tables.aio import TableServiceClient

from sync_core.dataverse import DataverseClient
from sync_core.dataverse.client import DeltaTokenExpired
from sync_core.services.guard import MassChangeGuard, TableDecisionLog
from tests.fixtures.azurite import AzuriteInstance
from tests.fixtures.dataverse import DataverseSandboxHandle

COLUMNS = ["emailaddress1", "firstname", "statecode"]


def seed(handle: DataverseSandboxHandle, n: int) -> list[str]:
    return [
        handle.sandbox.store.seed("contact", {"emailaddress1": f"p{i}@example.org", "firstname": f"F{i}"})
        for i in range(n)
    ]


async def full_read(client: DataverseClient, page_size: int) -> tuple[list[str], str, int]:
    ids: list[str] = []
    page = await client.read_page("contact", COLUMNS, page_size=page_size, track_changes=True)
    pages = 1
    while True:
        ids += [r.id for r in page.rows]
        if page.next_link is None:
            break
        page = await client.read_page("contact", COLUMNS, url=page.next_link, page_size=page_size, track_changes=True)
        pages += 1
    assert page.delta_link is not None
    return ids, page.delta_link, pages


async def test_initial_read_pages_then_the_delta_link_lists_changes_and_deletes(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    ids = seed(dataverse_sandbox, 25)
    read, delta, pages = await full_read(dataverse_client, 10)
    assert sorted(read) == sorted(ids)
    assert pages == 3
    nothing = await dataverse_client.read_page("contact", COLUMNS, url=delta, track_changes=True)
    assert nothing.rows == []
    assert nothing.deleted == []

    user = dataverse_sandbox.sandbox.human_user_id
    dataverse_sandbox.sandbox.edit("contact", ids[3], {"firstname": "Changed"}, user_id=user)
    dataverse_sandbox.sandbox.delete("contact", ids[4], user_id=user)
    created = dataverse_sandbox.sandbox.create("contact", {"emailaddress1": "new@example.org"}, user_id=user)
    changes = await dataverse_client.read_page("contact", COLUMNS, url=delta, track_changes=True)
    assert sorted(r.id for r in changes.rows) == sorted([ids[3], created])
    assert next(r for r in changes.rows if r.id == ids[3]).attributes["firstname"] == "Changed"
    assert changes.deleted == [ids[4]]
    assert changes.delta_link is not None
    assert changes.delta_link != delta
    after = await dataverse_client.read_page("contact", COLUMNS, url=changes.delta_link, track_changes=True)
    assert (after.rows, after.deleted) == ([], [])


async def test_expired_token_answers_as_documented_and_filter_is_refused(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    seed(dataverse_sandbox, 3)
    _, delta, _ = await full_read(dataverse_client, 5000)
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{dataverse_sandbox.url}/_sandbox/changes/expire")).status_code == 200
        response = await http.get(delta, headers={"Authorization": f"Bearer {dataverse_sandbox.token}"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "0x80044352"
        refused = await http.get(
            f"{dataverse_sandbox.api_url}/contacts?$filter=statecode eq 0",
            headers={"Authorization": f"Bearer {dataverse_sandbox.token}", "Prefer": "odata.track-changes"},
        )
        assert refused.status_code == 400
        assert "isn't supported when Change Tracking is enabled" in refused.json()["error"]["message"]
    with pytest.raises(DeltaTokenExpired):
        await dataverse_client.read_page("contact", COLUMNS, url=delta, track_changes=True)


async def test_plain_pages_hold_up_to_5000_rows_with_next_links(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    seed(dataverse_sandbox, 5003)
    first = await dataverse_client.read_page("contact", COLUMNS, page_size=5000)
    assert len(first.rows) == 5000
    assert first.next_link is not None
    second = await dataverse_client.read_page("contact", COLUMNS, url=first.next_link, page_size=5000)
    assert len(second.rows) == 3
    assert second.next_link is None


async def test_live_guard_counts_across_instances_in_table_storage(
    azurite: AzuriteInstance, storage_prefix: str
) -> None:
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    services = [TableServiceClient.from_connection_string(azurite.connection_string) for _ in range(2)]
    logs = [TableDecisionLog(s, prefix=storage_prefix) for s in services]
    one, two = (MassChangeGuard(log, lambda: now, limit=2) for log in logs)
    assert await one.admit("contact", "a", "anonymize")
    assert await two.admit("contact", "b", "anonymize")
    assert not await one.admit("contact", "c", "anonymize"), "the second instance's decision counts too"
    assert await two.admit("contact", "a", "anonymize"), "a redelivery is admitted without counting"
    later = MassChangeGuard(logs[0], lambda: now + timedelta(minutes=61), limit=2)
    assert await later.admit("contact", "c", "anonymize")
    for log, service in zip(logs, services, strict=True):
        await log.aclose()
        await service.close()
