"""DataverseClient against the Dataverse sandbox over real loopback HTTP, and the sandbox's Web API rules."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from sync_core.dataverse import (
    DataverseAuthError,
    DataverseClient,
    DataverseConflict,
    DataverseInvalidData,
    DataverseNotFound,
    DataversePermanent,
    DataverseRateLimited,
    DataverseTransient,
    StaticTokenCredential,
    make_credential,
)
from sync_core.dataverse import client as client_module
from sync_core.domain.errors import ConflictError, NotFoundError, RateLimitedError, TransientError
from sync_core.domain.records import RowUpdate
from tests.fixtures.dataverse import DataverseSandboxHandle

COLUMNS = ["firstname", "lastname", "fullname", "emailaddress1", "statecode", "modifiedon"]


def seed_contact(handle: DataverseSandboxHandle, **attributes: object) -> str:
    values = {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com", **attributes}
    return handle.sandbox.seed("contact", values)


def client_for(handle: DataverseSandboxHandle, **settings: object) -> DataverseClient:
    options: dict[str, object] = {"backoff_base": 0.01, "max_retry_seconds": 10.0, "timeout": 5.0}
    options.update(settings)
    return DataverseClient(
        base_url=handle.url,
        credential=StaticTokenCredential(str(options.pop("token", handle.token))),
        **options,  # type: ignore[arg-type]
    )


# --- reads -------------------------------------------------------------------------------------------


async def test_get_row_returns_selected_columns_with_etag_version_and_modified_on(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox, birthdate="1990-04-01", parentcustomerid=None)
    stored = dataverse_sandbox.sandbox.row("contact", record_id)
    assert stored is not None

    row = await dataverse_client.get_row("contact", record_id, [*COLUMNS, "birthdate", "_ownerid_value"])

    assert row is not None
    assert row.id == record_id
    assert row.attributes["fullname"] == "Ada Lovelace"
    assert row.attributes["birthdate"] == "1990-04-01"
    assert row.attributes["ownerid"] == stored["ownerid"]  # lookups come back under their logical name
    assert "jobtitle" not in row.attributes
    assert not any("@" in key for key in row.attributes)
    assert row.etag == f'W/"{stored["versionnumber"]}"'
    assert row.version == stored["versionnumber"]
    assert row.modified_on is not None
    assert row.modified_on.isoformat().replace("+00:00", "Z") == stored["modifiedon"]
    assert row.statecode == 0


async def test_get_row_of_a_missing_row_is_none(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    assert await dataverse_client.get_row("contact", str(uuid.uuid4()), COLUMNS) is None


async def test_get_rows_reads_many_rows_in_one_query_per_chunk_and_leaves_out_missing_ones(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [seed_contact(dataverse_sandbox, firstname=f"Row{n}", emailaddress1=f"row{n}@example.com") for n in range(5)]
    seed_contact(dataverse_sandbox, firstname="NotAsked", emailaddress1="other@example.com")
    missing = str(uuid.uuid4())
    before = dataverse_sandbox.sandbox.request_count()

    rows = await dataverse_client.get_rows("contact", [ids[0].upper(), *ids[1:], missing], ["firstname"])

    assert dataverse_sandbox.sandbox.request_count() - before == 1
    assert set(rows) == set(ids)
    assert {rows[record_id].attributes["firstname"] for record_id in ids} == {f"Row{n}" for n in range(5)}
    for record_id in ids:
        single = await dataverse_client.get_row("contact", record_id, ["firstname"])
        assert single is not None
        assert rows[record_id].attributes == single.attributes
        assert rows[record_id].etag == single.etag

    monkeypatch.setattr(client_module, "ROWS_PER_QUERY", 2)
    before = dataverse_sandbox.sandbox.request_count()
    assert set(await dataverse_client.get_rows("contact", ids, ["firstname"])) == set(ids)
    assert dataverse_sandbox.sandbox.request_count() - before == 3
    assert await dataverse_client.get_rows("contact", [], ["firstname"]) == {}


async def test_get_row_with_an_unknown_column_is_invalid_data(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)

    with pytest.raises(DataverseInvalidData) as caught:
        await dataverse_client.get_row("contact", record_id, ["nosuchcolumn"])

    assert caught.value.code == "0x80060888"
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 1


async def test_iter_pages_follows_next_links_across_pages(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    ids = {seed_contact(dataverse_sandbox, firstname=f"P{i}", donotbulkemail=False) for i in range(7)}
    seed_contact(dataverse_sandbox, firstname="Excluded", donotbulkemail=True)

    pages = [
        page
        async for page in dataverse_client.iter_pages(
            "contact", ["firstname", "donotbulkemail"], filter_expr="donotbulkemail eq false", page_size=3
        )
    ]

    assert [len(page) for page in pages] == [3, 3, 1]
    assert {row.id for page in pages for row in page} == ids
    assert all(row.etag and row.version for page in pages for row in page)
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 3


async def test_iter_pages_filters_on_modifiedon(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    first = seed_contact(dataverse_sandbox)
    second = seed_contact(dataverse_sandbox)
    cutoff = dataverse_sandbox.sandbox.row("contact", second)["modifiedon"]  # type: ignore[index]

    pages = [
        page
        async for page in dataverse_client.iter_pages(
            "contact", ["modifiedon"], filter_expr=f"modifiedon ge {cutoff} and statecode eq 0"
        )
    ]

    assert [row.id for page in pages for row in page] == [second]
    assert first != second


async def test_unsupported_filter_is_a_400_without_retry(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    with pytest.raises(DataverseInvalidData):
        async for _ in dataverse_client.iter_pages("contact", ["firstname"], filter_expr="contains(firstname,'a')"):
            pass
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 1


# --- updates -----------------------------------------------------------------------------------------


async def test_update_row_with_the_current_etag_applies_and_bumps_the_version(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    before = await dataverse_client.get_row("contact", record_id, COLUMNS)
    assert before is not None

    await dataverse_client.update_row(
        "contact", record_id, {"sync_spotlerstatusdetail": "synced", "sync_interests": [1, 3]}, etag=before.etag
    )

    after = await dataverse_client.get_row("contact", record_id, ["sync_spotlerstatusdetail", "sync_interests"])
    assert after is not None
    assert after.attributes["sync_spotlerstatusdetail"] == "synced"
    assert after.attributes["sync_interests"] == [1, 3]
    assert after.version is not None
    assert before.version is not None
    assert after.version > before.version
    assert dataverse_sandbox.sandbox.writes[-1].user_id == dataverse_sandbox.app_user_id


async def test_update_row_with_a_stale_etag_is_a_conflict(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    stale = await dataverse_client.get_row("contact", record_id, COLUMNS)
    assert stale is not None
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "Analyst"})

    with pytest.raises(DataverseConflict) as caught:
        await dataverse_client.update_row("contact", record_id, {"firstname": "Lost"}, etag=stale.etag)

    assert isinstance(caught.value, ConflictError)
    assert caught.value.status == 412
    assert dataverse_sandbox.sandbox.row("contact", record_id)["firstname"] == "Ada"  # type: ignore[index]
    assert dataverse_sandbox.sandbox.request_count("PATCH /contacts") == 1


async def test_update_row_of_a_missing_row_is_not_found_and_creates_nothing(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    missing = str(uuid.uuid4())

    with pytest.raises(DataverseNotFound) as caught:
        await dataverse_client.update_row("contact", missing, {"firstname": "Ghost"})

    assert isinstance(caught.value, NotFoundError)
    assert caught.value.code == "0x80040217"
    assert dataverse_sandbox.sandbox.row("contact", missing) is None
    assert dataverse_sandbox.sandbox.rows("contact") == []


async def test_inactive_contact_is_read_only_until_reactivated(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.deactivate("contact", record_id)

    with pytest.raises(DataverseInvalidData, match="read-only"):
        await dataverse_client.update_row("contact", record_id, {"sync_spotlerstatusdetail": "x"})
    await dataverse_client.update_row("contact", record_id, {"statecode": 0, "statuscode": 1})
    await dataverse_client.update_row("contact", record_id, {"sync_spotlerstatusdetail": "x"})

    row = dataverse_sandbox.sandbox.row("contact", record_id)
    assert row is not None
    assert (row["statecode"], row["sync_spotlerstatusdetail"]) == (0, "x")


async def test_batch_with_a_failing_item_applies_the_others_and_reports_in_order(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    first, second, third = (seed_contact(dataverse_sandbox) for _ in range(3))
    stale_etag = 'W/"1"'
    missing = str(uuid.uuid4())

    results = await dataverse_client.update_rows(
        [
            RowUpdate("contact", first, {"sync_spotlerstatusdetail": "one"}),
            RowUpdate("contact", second, {"sync_spotlerstatusdetail": "two"}, etag=stale_etag),
            RowUpdate("contact", missing, {"sync_spotlerstatusdetail": "ghost"}),
            RowUpdate("contact", third, {"nosuchcolumn": 1}),
            RowUpdate("contact", third, {"sync_spotlerstatusdetail": "three"}),
        ]
    )

    assert [(r.record_id, r.status) for r in results] == [
        (first, 204),
        (second, 412),
        (missing, 404),
        (third, 400),
        (third, 204),
    ]
    assert results[1].error_code == "0x80060882"
    assert results[2].error_code == "0x80040217"
    assert "nosuchcolumn" in results[3].message
    rows = {rid: dataverse_sandbox.sandbox.row("contact", rid) for rid in (first, second, third)}
    assert [rows[rid]["sync_spotlerstatusdetail"] for rid in (first, second, third)] == ["one", None, "three"]  # type: ignore[index]
    assert dataverse_sandbox.sandbox.row("contact", missing) is None
    assert dataverse_sandbox.sandbox.request_count("POST /$batch") == 1


async def test_batch_above_1000_updates_is_split_into_several_requests(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    ids = [dataverse_sandbox.sandbox.seed("lead", {"lastname": f"L{i}"}) for i in range(1001)]

    results = await dataverse_client.update_rows([RowUpdate("lead", rid, {"jobtitle": "x"}) for rid in ids])

    assert len(results) == 1001
    assert all(result.ok for result in results)
    assert [r.record_id for r in results] == ids
    assert dataverse_sandbox.sandbox.request_count("POST /$batch") == 2


# --- retries and errors ------------------------------------------------------------------------------


async def test_429_is_retried_after_the_retry_after_seconds(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.inject_fault("GET /contacts", 429, times=2, retry_after=1)

    started = time.monotonic()
    row = await dataverse_client.get_row("contact", record_id, COLUMNS)

    assert row is not None
    assert time.monotonic() - started >= 2.0
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 3


async def test_a_429_storm_gives_up_after_max_attempts(dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.inject_fault("PATCH /contacts", 429, times=50, retry_after=0)

    async with client_for(dataverse_sandbox, max_attempts=4) as client:
        with pytest.raises(DataverseRateLimited) as caught:
            await client.update_row("contact", record_id, {"firstname": "X"})

    assert isinstance(caught.value, RateLimitedError)
    assert caught.value.code == "0x80072322"
    assert caught.value.retry_after == 0
    assert dataverse_sandbox.sandbox.request_count("PATCH /contacts") == 4


async def test_a_retry_after_beyond_the_retry_budget_is_raised_at_once(
    dataverse_sandbox: DataverseSandboxHandle,
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.inject_fault("GET /contacts", 429, times=5, retry_after=30)

    async with client_for(dataverse_sandbox, max_retry_seconds=5.0) as client:
        started = time.monotonic()
        with pytest.raises(DataverseRateLimited) as caught:
            await client.get_row("contact", record_id, COLUMNS)

    assert caught.value.retry_after == 30
    assert time.monotonic() - started < 2
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 1


async def test_request_limit_of_the_window_is_answered_with_429_and_retried(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.set_limits(requests_per_window=2, window_seconds=1.0)

    for _ in range(3):
        assert await dataverse_client.get_row("contact", record_id, COLUMNS) is not None

    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 4  # one 429, retried


async def test_concurrent_request_limit_answers_0x80072326(dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.set_limits(concurrent_requests=1)
    dataverse_sandbox.sandbox.set_latency("GET /contacts", 0.3)
    url = f"{dataverse_sandbox.api_url}/contacts({record_id})"
    headers = {"Authorization": f"Bearer {dataverse_sandbox.token}"}

    async with httpx.AsyncClient() as http:
        responses = await asyncio.gather(http.get(url, headers=headers), http.get(url, headers=headers))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 429]
    limited = next(response for response in responses if response.status_code == 429)
    assert limited.json()["error"]["code"] == "0x80072326"
    assert limited.headers["retry-after"] == "1"


async def test_503_is_retried(dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.inject_fault("PATCH /contacts", 503, times=2)

    await dataverse_client.update_row("contact", record_id, {"jobtitle": "Engineer"})

    assert dataverse_sandbox.sandbox.row("contact", record_id)["jobtitle"] == "Engineer"  # type: ignore[index]
    assert dataverse_sandbox.sandbox.request_count("PATCH /contacts") == 3


async def test_500_is_permanent_and_not_retried(
    dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.inject_fault("GET /contacts", 500, times=3)

    with pytest.raises(DataversePermanent) as caught:
        await dataverse_client.get_row("contact", record_id, COLUMNS)

    assert caught.value.status == 500
    assert not isinstance(caught.value, TransientError)
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 1


async def test_400_is_not_retried(dataverse_sandbox: DataverseSandboxHandle, dataverse_client: DataverseClient) -> None:
    record_id = seed_contact(dataverse_sandbox)

    with pytest.raises(DataverseInvalidData) as caught:
        await dataverse_client.update_row("contact", record_id, {"nosuchcolumn": "x"})

    assert caught.value.status == 400
    assert "nosuchcolumn" in caught.value.message
    assert dataverse_sandbox.sandbox.request_count("PATCH /contacts") == 1


async def test_timeouts_are_transient_and_bounded(dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)
    dataverse_sandbox.sandbox.set_latency("GET /contacts", 0.5)

    async with client_for(dataverse_sandbox, timeout=0.1, max_attempts=2) as client:
        with pytest.raises(DataverseTransient):
            await client.get_row("contact", record_id, COLUMNS)


async def test_the_token_is_sent_as_a_bearer(dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)
    seen: list[str] = []

    async def capture(request: httpx.Request) -> None:
        seen.append(request.headers["authorization"])

    async with httpx.AsyncClient(event_hooks={"request": [capture]}) as http:
        client = client_for(dataverse_sandbox, http=http)
        assert await client.get_row("contact", record_id, COLUMNS) is not None
        await client.aclose()
        assert not http.is_closed  # a supplied pool belongs to the caller

    assert seen == [f"Bearer {dataverse_sandbox.token}"]


async def test_a_wrong_token_is_an_auth_error_without_retry(dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)

    async with client_for(dataverse_sandbox, token="not-the-token") as client:
        with pytest.raises(DataverseAuthError) as caught:
            await client.get_row("contact", record_id, COLUMNS)

    assert caught.value.status == 401
    assert "not-the-token" not in str(caught.value)
    assert dataverse_sandbox.sandbox.request_count("GET /contacts") == 1


async def test_error_messages_do_not_carry_email_addresses(dataverse_sandbox: DataverseSandboxHandle) -> None:
    dataverse_sandbox.sandbox.inject_fault(
        "PATCH /contacts", 400, code="0x80040203", message="Duplicate of someone@example.com"
    )
    record_id = seed_contact(dataverse_sandbox)

    async with client_for(dataverse_sandbox) as client:
        with pytest.raises(DataverseInvalidData) as caught:
            await client.update_row("contact", record_id, {"firstname": "X"})

    assert "someone@example.com" not in str(caught.value)


# --- the sandbox's Web API, raw --------------------------------------------------------------------


@pytest.fixture
async def raw(dataverse_sandbox: DataverseSandboxHandle) -> httpx.AsyncClient:  # type: ignore[misc]
    async with httpx.AsyncClient(
        base_url=dataverse_sandbox.api_url,
        headers={"Authorization": f"Bearer {dataverse_sandbox.token}", "Accept": "application/json"},
    ) as http:
        yield http


async def test_sandbox_create_answers_204_with_the_entity_id_or_201_with_the_row(raw: httpx.AsyncClient) -> None:
    created = await raw.post("/contacts", json={"lastname": "Hopper"})
    represented = await raw.post(
        "/contacts?$select=fullname",
        json={"firstname": "Grace", "lastname": "Hopper"},
        headers={"Prefer": "return=representation"},
    )

    assert created.status_code == 204
    assert "/api/data/v9.2/contacts(" in created.headers["odata-entityid"]
    assert represented.status_code == 201
    assert represented.json()["fullname"] == "Grace Hopper"
    assert represented.json()["@odata.etag"].startswith('W/"')


async def test_sandbox_patch_without_precondition_upserts_and_if_none_match_refuses_existing(
    raw: httpx.AsyncClient, dataverse_sandbox: DataverseSandboxHandle
) -> None:
    new_id = str(uuid.uuid4())

    upserted = await raw.patch(f"/contacts({new_id})", json={"lastname": "Upsert"})
    refused = await raw.patch(f"/contacts({new_id})", json={"lastname": "Again"}, headers={"If-None-Match": "*"})

    assert upserted.status_code == 204
    assert dataverse_sandbox.sandbox.row("contact", new_id) is not None
    assert refused.status_code == 412
    assert refused.json()["error"]["code"] == "0x80040237"


async def test_sandbox_conditional_get_answers_304(
    raw: httpx.AsyncClient, dataverse_sandbox: DataverseSandboxHandle
) -> None:
    record_id = seed_contact(dataverse_sandbox)
    first = await raw.get(f"/contacts({record_id})?$select=firstname")

    again = await raw.get(
        f"/contacts({record_id})?$select=firstname", headers={"If-None-Match": first.json()["@odata.etag"]}
    )

    assert again.status_code == 304


async def test_sandbox_rejects_bad_tokens_and_unknown_columns_with_the_error_shape(
    raw: httpx.AsyncClient, dataverse_sandbox: DataverseSandboxHandle
) -> None:
    record_id = seed_contact(dataverse_sandbox)

    unauthenticated = await raw.get(f"/contacts({record_id})", headers={"Authorization": "Bearer nope"})
    unknown = await raw.patch(f"/contacts({record_id})", json={"nosuch": 1}, headers={"If-Match": "*"})
    paged = await raw.get("/contacts", headers={"Prefer": "odata.maxpagesize=9000"})

    assert unauthenticated.status_code == 401
    assert set(unauthenticated.json()["error"]) == {"code", "message"}
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        "Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.contact'."
    )
    assert paged.headers["preference-applied"] == "odata.maxpagesize=5000"


async def test_sandbox_change_set_is_atomic(raw: httpx.AsyncClient, dataverse_sandbox: DataverseSandboxHandle) -> None:
    record_id = seed_contact(dataverse_sandbox)
    body = (
        "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n"
        "--changeset_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n"
        f"PATCH /api/data/v9.2/contacts({record_id}) HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        '{"jobtitle":"first"}\r\n'
        "--changeset_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n"
        f"PATCH /api/data/v9.2/contacts({record_id}) HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        '{"nosuch":"second"}\r\n'
        "--changeset_1--\r\n--batch_1--\r\n"
    )

    response = await raw.post("/$batch", content=body, headers={"Content-Type": "multipart/mixed; boundary=batch_1"})

    assert response.status_code == 200
    assert "HTTP/1.1 400 Bad Request" in response.text
    assert dataverse_sandbox.sandbox.row("contact", record_id)["jobtitle"] is None  # type: ignore[index]


async def test_a_404_that_is_not_about_the_row_is_raised(dataverse_sandbox: DataverseSandboxHandle) -> None:
    async with client_for(dataverse_sandbox, api_path="/api/data/v9.2/nothing-here") as client:
        with pytest.raises(DataverseNotFound):
            await client.get_row("contact", str(uuid.uuid4()), COLUMNS)


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"client_id": "c", "client_secret": "s"}, "tenant_id"),
        ({"tenant_id": "t", "client_secret": "s"}, "client_id"),
        ({"tenant_id": "t", "client_id": "c"}, "client_secret"),
    ],
)
def test_make_credential_names_the_missing_argument(settings: dict[str, str], missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        make_credential("client_secret", **settings)


async def test_static_token_credential_hands_out_its_token() -> None:
    with pytest.raises(ValueError, match="token"):
        make_credential("static_token")
    credential = make_credential("static_token", token="abc")

    token = await credential.get_token("https://org.crm4.dynamics.com/.default")

    assert token.token == "abc"
    assert token.expires_on > time.time() + 600
    assert "abc" not in repr(credential)
