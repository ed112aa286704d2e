"""The sandbox's webhook sender posting to a real HTTP receiver that parses and authenticates what it gets."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandboxes._server import BackgroundServer
from sync_core.dataverse import DataverseClient, WebhookAuthenticator, parse_delivery
from sync_core.domain.records import ChangeEvent, ChangeKind
from tests.fixtures.dataverse import DataverseSandboxHandle

KEY = "function-key-for-tests"
IMAGE_COLUMNS = ["firstname", "lastname", "emailaddress1", "donotbulkemail", "statecode", "statuscode"]


@dataclass(frozen=True)
class Received:
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def event(self) -> ChangeEvent:
        return parse_delivery(self.body, self.headers)


class Receiver:
    """A webhook endpoint: records each call and answers with queued statuses (200 when none queued)."""

    def __init__(self) -> None:
        self.calls: list[Received] = []
        self.statuses: deque[int] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.calls.append(Received(dict(request.query_params), dict(request.headers), body))
            status = self.statuses.popleft() if self.statuses else 200
        return Response(status_code=status)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.statuses.clear()

    def events(self) -> list[ChangeEvent]:
        return [call.event() for call in self.calls]


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with BackgroundServer(receiver.app) as server:
        yield receiver, f"{server.url}/hook"


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, str]) -> Receiver:
    receiver_server[0].reset()
    return receiver_server[0]


@pytest.fixture
def hook_url(receiver_server: tuple[Receiver, str]) -> str:
    return receiver_server[1]


def register(handle: DataverseSandboxHandle, url: str, **settings: object) -> None:
    options: dict[str, object] = {
        "url": url,
        "entity": "contact",
        "auth_type": "webhook_key",
        "auth_value": KEY,
        "pre_image": IMAGE_COLUMNS,
        "post_image": "*",
    }
    options.update(settings)
    handle.sandbox.register_webhook(**options)


def seed(handle: DataverseSandboxHandle, **attributes: object) -> str:
    values = {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com", **attributes}
    return handle.sandbox.seed("contact", values)


def drain(handle: DataverseSandboxHandle) -> None:
    assert handle.sandbox.drain(timeout=10)


async def test_edit_through_the_control_api_delivers_an_event_matching_the_row(
    dataverse_sandbox: DataverseSandboxHandle,
    dataverse_client: DataverseClient,
    receiver: Receiver,
    hook_url: str,
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"])
    record_id = seed(dataverse_sandbox, donotbulkemail=False, birthdate="1990-04-01", sync_interests=[1, 2])
    authenticator = WebhookAuthenticator("webhook_key", KEY)

    async with httpx.AsyncClient(base_url=dataverse_sandbox.url) as control:
        edited = await control.patch(
            f"/_sandbox/rows/contact/{record_id}",
            json={"attributes": {"firstname": "Augusta", "donotbulkemail": True}},
        )
        drained = await control.post("/_sandbox/webhooks/drain", json={"timeout": 10})
    assert edited.status_code == 200
    assert drained.json() == {"drained": True}

    assert len(receiver.calls) == 1
    call = receiver.calls[0]
    assert authenticator.verify(call.query, call.headers)
    assert call.headers["x-ms-dynamics-entity-name"] == "contact"
    assert call.headers["x-ms-dynamics-request-name"] == "Update"
    assert call.headers["content-type"] == "application/json"
    assert "x-ms-correlation-request-id" in call.headers
    assert "x-ms-dynamics-organization" in call.headers
    event = call.event()
    columns = [
        "firstname",
        "lastname",
        "fullname",
        "emailaddress1",
        "donotbulkemail",
        "birthdate",
        "statecode",
        "statuscode",
        "modifiedon",
        "sync_interests",
    ]
    row = await dataverse_client.get_row("contact", record_id, columns)
    assert row is not None
    assert (event.entity, event.record_id, event.kind) == ("contact", record_id, ChangeKind.UPDATE)
    assert {name: event.attributes[name] for name in columns} == {name: row.attributes[name] for name in columns}
    assert {"firstname", "donotbulkemail"} <= event.changed
    assert "lastname" not in event.changed
    assert event.version == row.version
    assert event.modified_on == row.modified_on
    assert event.initiating_user_id == dataverse_sandbox.sandbox.human_user_id
    assert event.complete is True


async def test_writes_with_the_app_token_carry_the_app_user(
    dataverse_sandbox: DataverseSandboxHandle,
    dataverse_client: DataverseClient,
    receiver: Receiver,
    hook_url: str,
) -> None:
    register(dataverse_sandbox, hook_url)
    record_id = seed(dataverse_sandbox)

    await dataverse_client.update_row("contact", record_id, {"sync_spotlerstatusdetail": "synced"})
    drain(dataverse_sandbox)

    (event,) = receiver.events()
    assert event.initiating_user_id == dataverse_sandbox.app_user_id
    assert event.user_id == dataverse_sandbox.app_user_id
    assert event.attributes["modifiedby"] == dataverse_sandbox.app_user_id
    assert event.changed >= {"sync_spotlerstatusdetail"}


async def test_create_and_delete_are_delivered_with_their_images(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url)

    record_id = dataverse_sandbox.sandbox.create("contact", {"lastname": "Curie", "emailaddress1": "m@example.com"})
    dataverse_sandbox.sandbox.delete("contact", record_id)
    drain(dataverse_sandbox)

    created, deleted = receiver.events()
    assert (created.kind, created.record_id) == (ChangeKind.CREATE, record_id)
    assert created.attributes["emailaddress1"] == "m@example.com"
    assert created.attributes["statecode"] == 0
    assert (deleted.kind, deleted.record_id) == (ChangeKind.DELETE, record_id)
    assert deleted.attributes["emailaddress1"] == "m@example.com"  # from the pre-image
    assert created.idempotency_key != deleted.idempotency_key


async def test_one_retry_on_503_and_none_on_500(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"])
    record_id = seed(dataverse_sandbox)

    receiver.statuses.extend([503, 200])
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "first"})
    drain(dataverse_sandbox)
    receiver.statuses.append(500)
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "second"})
    drain(dataverse_sandbox)
    receiver.statuses.extend([503, 503, 200])
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "third"})
    drain(dataverse_sandbox)

    retried, failed, exhausted = dataverse_sandbox.sandbox.deliveries()
    assert (retried.attempts, retried.status) == ([503, 200], "succeeded")
    assert (failed.attempts, failed.status) == ([500], "failed")
    assert (exhausted.attempts, exhausted.status) == ([503, 503], "failed")
    first_call, second_call = receiver.calls[0], receiver.calls[1]
    assert first_call.body == second_call.body
    assert first_call.event().idempotency_key == second_call.event().idempotency_key
    assert len(receiver.calls) == 5


async def test_an_update_of_state_and_other_columns_is_split_in_two_calls(
    dataverse_sandbox: DataverseSandboxHandle,
    dataverse_client: DataverseClient,
    receiver: Receiver,
    hook_url: str,
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update", "SetState"])
    record_id = seed(dataverse_sandbox)

    await dataverse_client.update_row("contact", record_id, {"jobtitle": "Retired", "statecode": 1, "statuscode": 2})
    drain(dataverse_sandbox)

    messages = [call.headers["x-ms-dynamics-request-name"] for call in receiver.calls]
    assert messages == ["Update", "Update", "SetState"]
    others, states, set_state = receiver.events()
    assert "jobtitle" in others.changed
    assert not others.changed & {"statecode", "statuscode"}
    assert others.statecode == 0  # the post-image of the first part: still active
    assert states.changed >= {"statecode", "statuscode"}
    assert "jobtitle" not in states.changed
    assert states.statecode == 1
    assert (set_state.kind, set_state.statecode) == (ChangeKind.SET_STATE, 1)
    assert len({others.idempotency_key, states.idempotency_key, set_state.idempotency_key}) == 3


async def test_filtering_attributes_suppress_updates_of_other_columns(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"], filtering_attributes=["emailaddress1", "statecode"])
    record_id = seed(dataverse_sandbox)

    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "Not watched"})
    drain(dataverse_sandbox)
    assert receiver.calls == []
    assert dataverse_sandbox.sandbox.deliveries() == []

    dataverse_sandbox.sandbox.edit("contact", record_id, {"emailaddress1": "new@example.com"})
    dataverse_sandbox.sandbox.deactivate("contact", record_id)
    drain(dataverse_sandbox)
    email_change, deactivation = receiver.events()
    assert email_change.attributes["emailaddress1"] == "new@example.com"
    assert deactivation.statecode == 1


async def test_duplicated_delivery_sends_the_same_body_twice(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"])
    dataverse_sandbox.sandbox.set_webhook_options(duplicate=True)
    record_id = seed(dataverse_sandbox)

    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "Twice"})
    drain(dataverse_sandbox)

    first, second = receiver.calls
    assert first.body == second.body
    assert first.event().idempotency_key == second.event().idempotency_key


async def test_held_deliveries_are_released_out_of_order(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"])
    dataverse_sandbox.sandbox.set_webhook_options(hold=True)
    record_id = seed(dataverse_sandbox)

    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "older"})
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "newer"})
    drain(dataverse_sandbox)
    assert receiver.calls == []
    assert [d.status for d in dataverse_sandbox.sandbox.deliveries()] == ["held", "held"]

    assert dataverse_sandbox.sandbox.release(order="reverse") == 2
    drain(dataverse_sandbox)

    newer, older = receiver.events()
    assert (newer.attributes["jobtitle"], older.attributes["jobtitle"]) == ("newer", "older")
    assert newer.version is not None
    assert older.version is not None
    assert newer.version > older.version


async def test_size_exceeded_strips_the_payload_and_flags_the_header(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"], include_parent_context=True)
    record_id = seed(dataverse_sandbox)

    dataverse_sandbox.sandbox.set_webhook_options(force_size_exceeded=True)
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "forced"})
    dataverse_sandbox.sandbox.set_webhook_options(force_size_exceeded=False, size_limit=1024)
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "too big"})
    dataverse_sandbox.sandbox.set_webhook_options(size_limit=256 * 1024)
    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "fits"})
    drain(dataverse_sandbox)

    forced, automatic, normal = receiver.calls
    for call in (forced, automatic):
        assert "x-ms-dynamics-msg-size-exceeded" in call.headers
        for stripped in (b'"InputParameters"', b'"PreEntityImages"', b'"PostEntityImages"', b'"ParentContext"'):
            assert stripped not in call.body
        event = call.event()
        assert (event.record_id, event.complete) == (record_id, False)
    assert "x-ms-dynamics-msg-size-exceeded" not in normal.headers
    assert normal.event().complete is True
    assert b'"ParentContext":{' in normal.body


@pytest.mark.parametrize(("auth_type", "auth_name"), [("http_header", "x-sync-key"), ("http_query_string", "secret")])
async def test_header_and_query_string_authentication_are_sent_as_registered(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str, auth_type: str, auth_name: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"], auth_type=auth_type, auth_name=auth_name)
    record_id = seed(dataverse_sandbox)

    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "x"})
    drain(dataverse_sandbox)

    (call,) = receiver.calls
    assert WebhookAuthenticator(auth_type, KEY, name=auth_name).verify(call.query, call.headers)  # type: ignore[arg-type]
    assert not WebhookAuthenticator("webhook_key", KEY).verify(call.query, call.headers)


async def test_escaped_slashes_option_and_offset_dates_parse_the_same(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    register(dataverse_sandbox, hook_url, messages=["Update"], escape_slashes=True)
    dataverse_sandbox.sandbox.set_webhook_options(utc_offset="+0200")
    record_id = seed(dataverse_sandbox, birthdate="1985-12-31")

    dataverse_sandbox.sandbox.edit("contact", record_id, {"jobtitle": "x"})
    drain(dataverse_sandbox)

    (call,) = receiver.calls
    assert b"\\/Date(" in call.body
    assert b"+0200)\\/" in call.body
    event = call.event()
    row = dataverse_sandbox.sandbox.row("contact", record_id)
    assert row is not None
    assert event.attributes["birthdate"] == "1985-12-31"
    assert event.attributes["modifiedon"] == row["modifiedon"]


async def test_a_failing_synchronous_step_rolls_the_write_back(
    dataverse_sandbox: DataverseSandboxHandle,
    dataverse_client: DataverseClient,
    receiver: Receiver,
    hook_url: str,
) -> None:
    from sync_core.dataverse import DataverseInvalidData

    register(dataverse_sandbox, hook_url, messages=["Update"], mode="sync")
    record_id = seed(dataverse_sandbox)
    receiver.statuses.append(500)

    with pytest.raises(DataverseInvalidData) as caught:
        await dataverse_client.update_row("contact", record_id, {"jobtitle": "rolled back"})

    assert caught.value.code == "0x80040265"
    assert dataverse_sandbox.sandbox.row("contact", record_id)["jobtitle"] is None  # type: ignore[index]
    (call,) = receiver.calls
    assert call.event().kind is ChangeKind.UPDATE
    assert b'"Mode":0' in call.body


async def test_the_control_api_drives_the_sandbox_over_http(
    dataverse_sandbox: DataverseSandboxHandle, receiver: Receiver, hook_url: str
) -> None:
    async with httpx.AsyncClient(base_url=f"{dataverse_sandbox.url}/_sandbox") as control:
        registered = await control.post(
            "/webhooks",
            json={
                "url": hook_url,
                "entity": "lead",
                "auth_value": KEY,
                "messages": ["Create", "Update"],
                "filtering_attributes": ["emailaddress1"],
                "post_image": ["emailaddress1"],
            },
        )
        seeded = await control.post("/rows/lead", json={"attributes": {"lastname": "Quiet"}})
        created = await control.post(
            "/rows/lead",
            json={"attributes": {"lastname": "Loud", "emailaddress1": "l@example.com"}, "fire_webhooks": True},
        )
        lead_id = created.json()["leadid"]
        deactivated = await control.post(f"/rows/lead/{lead_id}/deactivate")
        await control.post("/webhooks/drain", json={"timeout": 10})
        deliveries = (await control.get("/webhooks/deliveries", params={"body": "false"})).json()["value"]
        listed = (await control.get("/webhooks")).json()["value"]
        rows = (await control.get("/rows/lead")).json()["value"]
        writes = (await control.get("/writes")).json()["value"]
        fault = await control.post("/faults", json={"route": "GET /leads", "status": 503, "times": 1})
        limits = await control.put("/limits", json={"requests_per_window": 100})
        column = await control.post("/columns/lead", json={"name": "sync_score", "type": "int"})
        api_call = await control.get(
            f"{dataverse_sandbox.api_url}/leads({lead_id})",
            headers={"Authorization": f"Bearer {dataverse_sandbox.token}"},
        )
        counts = (await control.get("/requests")).json()
        reset = await control.post("/reset")

    assert registered.status_code == 201
    assert registered.json()["auth_value"] == "***"
    assert seeded.status_code == 201
    assert deactivated.json()["statecode"] == 2
    assert [d["message"] for d in deliveries] == ["Create"]  # the state change is filtered out
    assert "body" not in deliveries[0]
    assert [r["entity"] for r in listed] == ["lead"]
    assert len(rows) == 2
    assert [w["message"] for w in writes] == ["Create", "Create", "Update"]
    assert writes[-1]["user_id"] == dataverse_sandbox.sandbox.human_user_id
    assert (fault.status_code, limits.status_code, column.status_code) == (201, 200, 201)
    assert api_call.status_code == 503
    assert counts["counts"] == {"GET /leads": 1}
    assert reset.status_code == 200
    assert dataverse_sandbox.sandbox.rows("lead") == []
    (event,) = receiver.events()
    assert (event.entity, event.kind) == ("lead", ChangeKind.CREATE)
