"""Operating the connector end to end: nothing silently lost, deep health, run history, records by status,
the sync-health page's HTML, and the telemetry of a push."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.data.tables.aio import TableServiceClient

from sync_core import telemetry
from sync_core.services.runtime import get_runtime
from tests.e2e.conftest import Connector, ConnectorFactory
from tests.e2e.support import api, reason
from tests.fixtures.azurite import AzuriteInstance
from tests.fixtures.tcp_proxy import TcpProxy, table_port, with_table_endpoint

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def person(n: int) -> dict[str, Any]:
    return {"firstname": f"Ops{n}", "lastname": "Test", "emailaddress1": f"ops{n}@example.nl"}


async def dead_letters(connector: Connector) -> list[dict[str, Any]]:
    response = await api(connector, "GET", "deadletters")
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()["deadLetters"]
    return letters


class FastRetryTableService(TableServiceClient):
    """Table Storage clients that give up on a dead endpoint within a second instead of after ~10 s of retries.

    Only the client's retry timing changes: the connector sees the same errors, sooner.
    """

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> FastRetryTableService:
        kwargs.setdefault("retry_total", 1)
        kwargs.setdefault("retry_backoff_factor", 0.05)
        kwargs.setdefault("connection_timeout", 2)
        return super().from_connection_string(conn_str, **kwargs)


# --------------------------------------------------------------------------------------- nothing silently lost


async def test_table_storage_down_during_the_push_ends_in_dead_letters_that_replay_after_recovery(
    connector_factory: ConnectorFactory, azurite: AzuriteInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sync_core.state.tables.TableServiceClient", FastRetryTableService)
    monkeypatch.setattr("sync_core.state.reports.TableServiceClient", FastRetryTableService)
    async with TcpProxy(table_port(azurite.connection_string)) as tables:
        conn = with_table_endpoint(azurite.connection_string, tables.port)
        async with connector_factory(AzureWebJobsStorage=conn) as connector:
            dv, sp = connector.dataverse.sandbox, connector.spotler.store
            await tables.down()  # Table Storage stops answering; the queue still does
            ids = [dv.create("contact", person(n)) for n in range(2)]
            await asyncio.to_thread(dv.drain, timeout=30.0)
            assert [d.status for d in dv.deliveries()] == ["succeeded", "succeeded"], "the webhook still queues"

            rounds = []
            for _ in range(3):  # MAX_DELIVERY_ATTEMPTS=3 deliveries of each event
                rounds.append(await connector.host.run_queue_once())
            assert rounds == [(0, 2), (0, 2), (2, 0)], "two failed deliveries, then the last one parks them"
            assert sp.contacts() == []

            await tables.up()  # storage is back: the poison-queue trigger stores the parked events
            assert await connector.host.run_poison_queue() == (2, 0)
            letters = await dead_letters(connector)
            assert sorted(letter["recordId"] for letter in letters) == sorted(ids)
            assert {letter["errorClass"] for letter in letters} == {"ServiceRequestError"}
            assert {letter["attempts"] for letter in letters} == {3}

            page = await api(connector, "GET", "ui")
            assert page.status_code == 200
            for letter in letters:
                assert letter["eventId"] in page.text

            replayed = await api(connector, "POST", "deadletters/replay")
            assert replayed.json() == {"replayed": 2, "failed": 0, "remaining": 0}
            assert sorted(c["externalId"] for c in sp.contacts()) == sorted(ids)
            assert {await reason(connector, "contact", i) for i in ids} == {"created"}
            assert await dead_letters(connector) == []


async def test_a_message_put_straight_onto_the_poison_queue_becomes_a_dead_letter(connector: Connector) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    dv.set_webhook_options(hold=True)
    record_id = dv.create("contact", person(5))
    dv.release(order="reverse")
    await asyncio.to_thread(dv.drain, timeout=30.0)
    # Take the queued event off the event queue and put it onto the poison queue, as the host would.
    queue = connector.host._event_queue()
    [message] = await queue.receive(max_messages=1, visibility_timeout=60)
    await connector.host.put_poison(message.text)
    await queue.delete(message.id, message.pop_receipt)
    await connector.host.put_poison("this is not a change event")

    assert await connector.host.run_poison_queue() == (2, 0)
    letters = {letter["errorClass"]: letter for letter in await dead_letters(connector)}
    assert set(letters) == {"PoisonMessage", "EventDecodeError"}
    assert letters["PoisonMessage"]["recordId"] == record_id
    assert letters["EventDecodeError"]["recordId"] is None
    raw = await get_runtime().state.get_dead_letter("contact", letters["EventDecodeError"]["eventId"])
    assert raw is not None
    assert raw.event == {"raw": "this is not a change event"}, "the unreadable message keeps its raw body"

    replayed = await api(connector, "POST", f"deadletters/contact/{letters['PoisonMessage']['eventId']}/replay")
    assert replayed.json() == {"replayed": True}
    assert sp.contact(record_id) is not None


async def test_every_last_delivery_failure_becomes_a_dead_letter_with_its_error_class(
    connector: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    runtime = get_runtime()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("an unexpected failure")

    monkeypatch.setattr(runtime.push, "_apply", broken)
    record_id = dv.create("contact", person(6))
    await connector.deliver()
    [letter] = await dead_letters(connector)
    assert (letter["recordId"], letter["errorClass"], letter["attempts"]) == (record_id, "KeyError", 3)

    monkeypatch.undo()
    replayed = await api(connector, "POST", f"deadletters/contact/{letter['eventId']}/replay")
    assert replayed.json() == {"replayed": True}, "the claim was released: the replay is not taken for a duplicate"
    assert sp.contact(record_id) is not None


async def test_an_undecodable_message_on_the_event_queue_becomes_a_dead_letter_holding_its_body(
    connector: Connector,
) -> None:
    await connector.host._event_queue().send('{"v": 1, "entity": "lead"')
    await connector.host.run_queue(idle_rounds=1, poll_seconds=0.01)
    [letter] = await dead_letters(connector)
    assert (letter["entity"], letter["errorClass"], letter["attempts"]) == ("contact", "EventDecodeError", 1)
    stored = await get_runtime().state.get_dead_letter("contact", letter["eventId"])
    assert stored is not None
    assert stored.event == {"raw": '{"v": 1, "entity": "lead"'}


# --------------------------------------------------------------------------------------- health


async def test_health_names_spotler_when_it_fails_and_the_anonymous_route_shows_no_configuration(
    connector: Connector,
) -> None:
    healthy = await api(connector, "GET", "health")
    assert (healthy.status_code, healthy.json()) == (200, {"status": "healthy"})
    details = await api(connector, "GET", "health/details")
    assert details.status_code == 200, details.text
    checks = {c["name"]: c for c in details.json()["checks"]}
    assert {"storage", "queue", "spotler", "dataverse", "deadLetters", "mapping", "deliveryAttempts"} <= set(checks)
    assert {c["status"] for c in checks.values()} == {"healthy"}

    connector.spotler.store.inject_fault("*", "error", status=503, times=None)
    get_runtime().health_verdict.clear()  # the anonymous verdict is cached for 30 seconds
    details = await api(connector, "GET", "health/details")
    assert details.status_code == 503
    body = details.json()
    assert body["status"] == "unhealthy"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["spotler"]["status"] == "unhealthy"
    assert checks["spotler"]["errorType"] == "SpotlerTransientError"
    assert checks["dataverse"]["status"] == "healthy"

    anonymous = await api(connector, "GET", "health")
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "unhealthy"})
    for text in (anonymous.text, details.text):
        assert connector.spotler.url not in text
        assert connector.dataverse.url not in text
        assert "127.0.0.1" not in text
        assert "static_token" not in text


# --------------------------------------------------------------------------------------- runs and records


async def test_pull_runs_are_recorded_and_records_are_listed_by_status_page_by_page(connector: Connector) -> None:
    dv = connector.dataverse.sandbox
    ids = [dv.create("contact", person(n)) for n in range(3)]
    await connector.deliver()
    await connector.host.run_timer()

    runs = (await api(connector, "GET", "runs")).json()["runs"]
    assert len(runs) == 1
    assert (runs[0]["kind"], runs[0]["outcome"]) == ("pull", "completed")
    assert set(runs[0]["counts"]) >= {"pages", "contacts", "rows_updated", "replayed"}
    assert runs[0]["ended"] >= runs[0]["started"]

    first = (await api(connector, "GET", "status?reason=created&limit=2")).json()
    assert len(first["records"]) == 2
    assert first["next"]
    second = (await api(connector, "GET", f"status?reason=created&limit=2&cursor={first['next']}")).json()
    seen = [r["id"] for r in first["records"] + second["records"]]
    assert sorted(seen) == sorted(ids)
    assert {r["reason"] for r in first["records"]} == {"created"}
    assert not EMAIL.search(json.dumps(first) + json.dumps(second))

    errors = (await api(connector, "GET", "status")).json()
    assert errors["reasons"] == ["transient_error", "permanent_error", "configuration_error"]
    assert errors["records"] == []
    for bad in ("status?reason=nonsense", "status?limit=0", "status?cursor=%21%21", "runs?kind=weekly"):
        response = await api(connector, "GET", bad)
        assert response.status_code == 400, bad
        assert "error" in response.json()


# --------------------------------------------------------------------------------------- telemetry


@pytest.fixture
def exported() -> Iterator[tuple[Any, Any]]:
    """Install a recorder on in-memory OpenTelemetry providers for the test; (span exporter, metric reader)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    previous = telemetry.install(telemetry.Telemetry(tracer_provider, MeterProvider(metric_readers=[reader])))
    try:
        yield spans, reader
    finally:
        telemetry.install(previous)


def _metric_points(reader: Any) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_a_push_and_a_failure_are_spans_with_sync_attributes_and_no_email(
    connector: Connector, exported: tuple[Any, Any]
) -> None:
    spans, reader = exported
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    created = dv.create("contact", person(8))
    await connector.deliver()
    sp.inject_fault("*", "error", status=503, times=None)
    failing = dv.create("contact", person(9))
    await connector.deliver()

    finished = spans.get_finished_spans()
    pushes = [s for s in finished if s.name == "sync.push"]
    ok = next(s for s in pushes if s.attributes["sync.record_id"] == created)
    assert dict(ok.attributes) == {
        "sync.entity": "contact",
        "sync.record_id": created,
        "sync.delivery": 1,
        "sync.action": "create",
        "sync.reason": "created",
    }
    failed = [s for s in pushes if s.attributes["sync.record_id"] == failing]
    assert len(failed) == 3, "one span per delivery"
    assert {s.attributes["error.type"] for s in failed} == {"RetryLater"}
    assert all(not s.status.is_ok for s in failed)
    [parked] = [s for s in finished if s.name == "sync.dead_letter"]
    assert parked.attributes["sync.record_id"] == failing
    assert parked.attributes["error.type"] == "RetryLater"
    for span in finished:
        assert not EMAIL.search(json.dumps(dict(span.attributes), default=str)), span.name

    points = _metric_points(reader)
    changes = {(p.attributes["sync.action"], p.attributes["sync.reason"]): p.value for p in points["sync.changes"]}
    assert changes[("create", "created")] == 1
    assert changes[("failed", "RetryLater")] == 3
    assert [p.attributes["error.type"] for p in points["sync.dead_letters"]] == ["RetryLater"]
    assert points["sync.push.latency"][0].count == 1


async def test_telemetry_is_off_and_its_packages_are_not_imported_without_a_connection_string() -> None:
    code = (
        "import sys, function_app;"
        "from sync_core import telemetry;"
        "assert not telemetry.current().enabled;"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor', 'jinja2'))];"
        "assert loaded == [], loaded"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def test_the_page_lists_counts_and_dead_letters_and_its_replay_button_redirects(
    connector_factory: ConnectorFactory,
) -> None:
    async with connector_factory() as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        dv.create("contact", person(1))
        await connector.deliver()
        sp.inject_fault("*", "error", status=503, times=None)
        failing = dv.create("contact", person(2))
        await connector.deliver()
        [letter] = await dead_letters(connector)
        async with httpx.AsyncClient(base_url=connector.host.url) as http:
            page = await http.get("/api/ui", params={"code": "page-key"})
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert 'data-reason="created"' in page.text
            assert failing in page.text
            replay_url = f"/api/ui/deadletters/contact/{letter['eventId']}/replay?code=page-key"
            assert replay_url in page.text
            assert not EMAIL.search(page.text)
            sp.clear_faults()
            replayed = await http.post(replay_url)
            assert replayed.status_code == 303
            assert replayed.headers["location"] == "/api/ui?notice=replayed&code=page-key"
            missing = await http.post(replay_url)
            assert missing.headers["location"] == "/api/ui?notice=missing&code=page-key"
            assert (await http.get("/api/ui", params={"reason": "bogus"})).status_code == 400
