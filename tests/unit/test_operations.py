"""The queue worker's dead-letter rules on fakes, and the small parsers of the operations routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from sync_core.domain.event_codec import encode_event
from sync_core.services.health import Check, HealthChecker
from sync_core.services.overview import ERROR_REASONS, BadQuery, parse_limit, parse_reasons
from sync_core.services.runtime import HOST_JSON, host_max_dequeue_count
from sync_core.services.worker import QueueWorker, poison_queue_name
from sync_core.settings import Settings
from sync_core.spotler.errors import SpotlerTransientError
from sync_core.state.queue import InMemoryEventQueue
from sync_core.state.reports import CursorError, decode_cursor, encode_cursor
from sync_core.telemetry import NoTelemetry, _aad_client_id, current
from tests.unit.service_fakes import MAPPING, World, change, row_attributes

ROOT = Path(__file__).resolve().parents[2]
RECORD = "0a1b2c3d-0000-4000-8000-0000000000aa"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"


class BrokenStore(Exception):
    """Table Storage does not answer."""


def worker(world: World, poison: InMemoryEventQueue | None = None, max_attempts: int = 3) -> QueueWorker:
    return QueueWorker(
        push=world.push(), state=world.state, poison=poison, max_attempts=max_attempts, clock=world.clock
    )


# --- host.json and the connector agree on the number of deliveries


def test_max_delivery_attempts_default_and_sample_match_host_json() -> None:
    host = json.loads(HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"]
    assert host_max_dequeue_count() == host
    assert Settings.model_fields["max_delivery_attempts"].default == host
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert int(sample["MAX_DELIVERY_ATTEMPTS"]) == host


def test_host_json_without_a_dequeue_count_reads_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text('{"version": "2.0"}')
    assert host_max_dequeue_count(path) is None
    assert host_max_dequeue_count(tmp_path / "missing.json") is None


def test_poison_queue_is_the_hosts_name() -> None:
    assert poison_queue_name("dataverse-events") == "dataverse-events-poison"


# --- the worker


async def test_an_unexpected_failure_goes_back_to_the_queue_until_the_last_delivery_then_dead_letters() -> None:
    world = World()
    world.dataverse.put_row("contact", RECORD, row_attributes(RECORD))
    body = encode_event(change(RECORD)).encode()
    world.spotler.search_by_email = _raise(ZeroDivisionError("boom"))  # type: ignore[method-assign]
    queue_worker = worker(world)
    for delivery in (1, 2):
        with pytest.raises(ZeroDivisionError):
            await queue_worker.deliver(body, message_id="m1", dequeue_count=delivery)
    assert await world.state.list_dead_letters() == []
    delivered = await queue_worker.deliver(body, message_id="m1", dequeue_count=3)
    [letter] = await world.state.list_dead_letters()
    assert delivered.dead_letter == letter.event_id
    assert (letter.error_class, letter.attempts, letter.message) == ("ZeroDivisionError", 3, "boom")
    assert letter.next_retry is not None, "an unexpected failure is replayed automatically"


async def test_when_the_dead_letter_cannot_be_stored_the_message_goes_to_the_poison_queue_with_its_error() -> None:
    world = World()
    world.dataverse.put_row("contact", RECORD, row_attributes(RECORD))
    text = encode_event(change(RECORD))
    broken = _raise(BrokenStore("storage down"))
    world.state.claim_record = broken  # type: ignore[method-assign]
    world.state.get_dead_letter = broken  # type: ignore[method-assign]
    poison = InMemoryEventQueue("events-poison")
    delivered = await worker(world, poison).deliver(text.encode(), message_id="m1", dequeue_count=3)
    assert delivered.forwarded
    [forwarded] = poison.texts()
    envelope = json.loads(forwarded)
    assert (envelope["errorClass"], envelope["attempts"], envelope["body"]) == ("BrokenStore", 3, text)

    # Storage answers again: the poison trigger parks it with the original error class.
    healthy = World()
    await worker(healthy).deliver_poison(forwarded.encode(), dequeue_count=1)
    [letter] = await healthy.state.list_dead_letters()
    assert (letter.error_class, letter.attempts, letter.event["id"]) == ("BrokenStore", 3, RECORD)


class PoisonQueueNotCreatedYet(InMemoryEventQueue):
    """A poison queue that does not exist until `ensure_ready` creates it, like a fresh storage account's."""

    def __init__(self) -> None:
        super().__init__("events-poison")
        self.created = False

    async def ensure_ready(self) -> None:
        self.created = True

    async def send(self, message: str) -> str:
        if not self.created:
            raise ResourceNotFoundError("The specified queue does not exist.")
        return await super().send(message)


async def test_a_poison_queue_that_does_not_exist_yet_is_created_for_the_forward() -> None:
    world = World()
    broken = _raise(BrokenStore("storage down"))
    world.state.claim_record = broken  # type: ignore[method-assign]
    world.state.get_dead_letter = broken  # type: ignore[method-assign]
    poison = PoisonQueueNotCreatedYet()
    delivered = await worker(world, poison).deliver(
        encode_event(change(RECORD)).encode(), message_id="m", dequeue_count=3
    )
    assert delivered.forwarded
    assert poison.created
    assert len(poison.texts()) == 1


async def test_without_a_poison_queue_a_storage_failure_on_the_last_delivery_is_raised_to_the_host() -> None:
    world = World()
    broken = _raise(BrokenStore("storage down"))
    world.state.claim_record = broken  # type: ignore[method-assign]
    world.state.get_dead_letter = broken  # type: ignore[method-assign]
    with pytest.raises(BrokenStore):
        await worker(world).deliver(encode_event(change(RECORD)).encode(), message_id="m1", dequeue_count=3)


async def test_an_undecodable_message_is_parked_at_once_with_its_raw_body() -> None:
    world = World()
    delivered = await worker(world).deliver(b"\xff\xfe not utf-8", message_id="m1", dequeue_count=1)
    [letter] = await world.state.list_dead_letters()
    assert delivered.dead_letter == letter.event_id
    assert letter.error_class == "EventDecodeError"
    assert letter.event == {"raw": "\ufffd\ufffd not utf-8"}
    assert letter.next_retry is None


async def test_a_poison_message_of_the_host_is_parked_as_such_and_twice_is_still_one_dead_letter() -> None:
    world = World()
    body = encode_event(change(RECORD)).encode()
    queue_worker = worker(world)
    await queue_worker.deliver_poison(body, dequeue_count=1)
    await queue_worker.deliver_poison(body, dequeue_count=1)
    [letter] = await world.state.list_dead_letters()
    assert letter.error_class == "PoisonMessage"
    assert letter.attempts == 6, "each arrival adds the host's deliveries"


def _raise(exc: Exception):  # type: ignore[no-untyped-def]
    async def fail(*args: object, **kwargs: object) -> None:
        raise exc

    return fail


# --- parsers and telemetry configuration


def test_reasons_default_to_the_error_reasons_and_unknown_ones_are_refused() -> None:
    assert parse_reasons(None) == ERROR_REASONS
    assert parse_reasons("created, synced,created") == ("created", "synced")
    with pytest.raises(BadQuery):
        parse_reasons("created,bogus")
    with pytest.raises(BadQuery):
        parse_reasons(",")


@pytest.mark.parametrize("value", ["0", "201", "-1", "ten", "1.5"])
def test_limits_outside_one_to_two_hundred_are_refused(value: str) -> None:
    with pytest.raises(BadQuery):
        parse_limit(value)


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    token = {"NextPartitionKey": "contact", "NextRowKey": "abc"}
    assert decode_cursor(encode_cursor(token)) == token
    assert encode_cursor(None) is None
    for junk in ("!!", "bm90IGpzb24", "WzFd"):  # not base64, not JSON, a list
        with pytest.raises(CursorError):
            decode_cursor(junk)


def test_entra_client_id_is_read_from_the_authentication_string() -> None:
    assert _aad_client_id("ClientId=abc-123;Authorization=AAD") == "abc-123"
    assert _aad_client_id("Authorization=AAD") == ""  # the system-assigned identity
    assert _aad_client_id(None) is None
    assert _aad_client_id("InstrumentationKey=x") is None


def test_telemetry_is_a_no_op_until_configured() -> None:
    assert isinstance(current(), NoTelemetry)


# --- health verdicts


def checker(world: World, **overrides: object) -> HealthChecker:
    options: dict[str, object] = {
        "state": world.state,
        "queue": None,
        "poison": None,
        "spotler": world.spotler,
        "dataverse": world.dataverse,
        "mapping": MAPPING,
        "clock": world.clock,
        "max_delivery_attempts": 5,
        "host_max_dequeue_count": 5,
    }
    options.update(overrides)
    return HealthChecker(**options)  # type: ignore[arg-type]


async def test_health_is_degraded_by_dead_letters_and_unknown_properties_and_unhealthy_when_spotler_fails() -> None:
    world = World()
    report = await checker(world).run()
    checks = {c.name: c for c in report.checks}
    # The fake's catalogue is empty: every mapped property outside Spotler's built-in fields is unknown.
    assert checks["mapping"].status == "degraded"
    assert "firstName" in checks["mapping"].data["unknown"]
    assert "email" not in checks["mapping"].data["unknown"]
    assert report.status == "degraded"

    world.spotler.fail("list_properties", SpotlerTransientError("down", status=503), times=5)
    report = await checker(world).run()
    checks = {c.name: c for c in report.checks}
    assert (report.status, checks["spotler"].status, checks["spotler"].data["errorType"]) == (
        "unhealthy",
        "unhealthy",
        "SpotlerTransientError",
    )
    assert "mapping" not in checks, "the mapping is only compared with a Spotler that answers"


async def test_extra_checks_join_the_verdict_and_a_failing_one_is_contained() -> None:
    world = World()

    async def configuration() -> Check:
        return Check("configuration", "healthy", "ok")

    async def broken() -> Check:
        raise RuntimeError("probe crashed")

    report = await checker(world, extra={"configuration": configuration, "broken": broken}).run()
    checks = {c.name: c for c in report.checks}
    assert checks["configuration"].status == "healthy"
    assert (checks["broken"].status, checks["broken"].data["errorType"]) == ("unhealthy", "RuntimeError")
    assert report.status == "unhealthy"


async def test_more_delivery_attempts_than_the_host_allows_is_degraded() -> None:
    report = await checker(World(), max_delivery_attempts=6, host_max_dequeue_count=5).run()
    assert {c.name: c.status for c in report.checks}["deliveryAttempts"] == "degraded"


def test_configuring_application_insights_traces_no_http_client_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.monitor.opentelemetry as distro

    from sync_core import telemetry

    calls: list[dict[str, object]] = []
    CLIENT_ID = "11111111-2222-3333-4444-555555555555"
    monkeypatch.setattr(distro, "configure_azure_monitor", lambda **options: calls.append(options))
    monkeypatch.setattr(telemetry._Process, "configured", False)
    monkeypatch.setattr(telemetry._Process, "recorder", NoTelemetry())
    settings = Settings.model_validate(
        {
            "AzureWebJobsStorage__accountName": "syncstate",
            "SPOTLER_CONSUMER_KEY": "k",
            "SPOTLER_CONSUMER_SECRET": "s",
            "DATAVERSE_URL": "https://example.crm4.dynamics.com",
            "WEBHOOK_SECRET": "w",
            "SUPPRESSION_HASH_KEY": "a-key-of-sixteen-or-more",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={CLIENT_ID};Authorization=AAD",
        }
    )
    assert telemetry.configure_telemetry(settings) is True
    assert telemetry.configure_telemetry(settings) is True, "a second call changes nothing"
    [options] = calls
    disabled = options["instrumentation_options"]
    assert isinstance(disabled, dict)
    assert {name for name, opt in disabled.items() if opt == {"enabled": False}} >= {"httpx", "requests", "urllib3"}
    assert type(options["credential"]).__name__ == "ManagedIdentityCredential"
    assert telemetry.current().enabled


class QueueNotCreatedYet(InMemoryEventQueue):
    """A queue nothing has created yet, as on a fresh Azurite before the first webhook: every call is a 404."""

    async def count(self) -> int:
        raise ResourceNotFoundError("The specified queue does not exist.")


async def test_an_event_queue_not_created_yet_is_degraded_with_a_reason_not_a_failure() -> None:
    report = await checker(World(), queue=QueueNotCreatedYet("events")).run()
    queue = {c.name: c for c in report.checks}["queue"]
    assert (queue.status, queue.detail) == (
        "degraded",
        "the event queue does not exist yet; the first accepted webhook creates it",
    )
    assert report.status == "degraded"


async def test_a_poison_queue_not_created_yet_counts_as_empty() -> None:
    events = InMemoryEventQueue("events")
    await events.send("m")
    report = await checker(World(), queue=events, poison=QueueNotCreatedYet("events-poison")).run()
    queue = {c.name: c for c in report.checks}["queue"]
    assert (queue.status, queue.data["backlog"], queue.data["poison"]) == ("healthy", 1, 0)
