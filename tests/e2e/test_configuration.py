"""Set-up and configuration end to end: `dataverse setup` against the running connector, the configuration-error
pause of push and pull, and webhook secret rotation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from sync_core.dataverse import DataverseClient, StaticTokenCredential
from sync_core.dataverse.metadata import DataverseMetadata
from sync_core.dataverse.webhook import post_image_alias
from sync_core.domain.mapping import default_mapping
from sync_core.services.dataverse_setup import SetupOptions, run_setup
from sync_core.services.runtime import get_runtime
from tests.e2e.conftest import WEBHOOK_KEY, Connector, ConnectorFactory
from tests.e2e.support import api, spotler_writes

ADA = {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada.lovelace@example.org", "jobtitle": "Analyst"}


async def _setup_against(connector: Connector) -> None:
    """Replace the test registrations with what `dataverse setup` registers for this connector."""
    sandbox = connector.dataverse.sandbox
    for registration_id in list(sandbox.sender.registrations):
        sandbox.sender.unregister(registration_id)
    async with DataverseClient(
        base_url=connector.dataverse.url, credential=StaticTokenCredential(connector.dataverse.token)
    ) as client:
        options = SetupOptions(webhook_url=f"{connector.host.url}/api/dynamics/webhook", secret=WEBHOOK_KEY)
        report = await run_setup(DataverseMetadata(client), default_mapping(), options, dry_run=False)
    assert report.conflicts == []


def _dataverse_requests(connector: Connector) -> int:
    return connector.dataverse.sandbox.request_count()


async def test_after_setup_a_change_reaches_the_connector_with_its_post_image_and_the_push_reads_nothing(
    connector: Connector,
) -> None:
    await _setup_against(connector)
    health = await api(connector, "GET", "health")  # the start-up mapping check (cached from here on)
    assert health.status_code == 200, health.text
    before = _dataverse_requests(connector)

    record_id = connector.dataverse.sandbox.create("contact", ADA)
    connector.dataverse.sandbox.edit("contact", record_id, {"jobtitle": "Engineer", "telephone1": "+44 20 0000"})
    handled = await connector.deliver()

    assert handled == 2
    deliveries = connector.dataverse.sandbox.deliveries()
    assert [d.status for d in deliveries] == ["succeeded", "succeeded"]
    alias = post_image_alias(default_mapping().entities["contact"].columns())  # type: ignore[index]
    assert all(any(i["key"] == alias for i in d.context["PostEntityImages"]) for d in deliveries)
    contact = connector.spotler.store.contact(record_id)
    assert contact is not None
    assert contact["properties"]["jobTitle"] == "Engineer"
    assert _dataverse_requests(connector) - before == 0


def _misspelt_mapping(path: Path) -> Path:
    raw: dict[str, Any] = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["entities"]["contact"]["fields"][0]["spotler"] = "firstNme"
    raw["entities"]["contact"]["fields"][1]["dataverse"] = "lastnme"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


async def _queue_count(connector: Connector) -> int:
    from sync_core.state.queue import EventQueue

    async with EventQueue.from_connection_string(
        connector.settings["AzureWebJobsStorage"], connector.settings["SYNC_QUEUE_NAME"]
    ) as queue:
        return await queue.count()


async def test_a_mapping_that_does_not_fit_pauses_push_and_pull_and_a_fixed_one_resumes(
    connector_factory: ConnectorFactory, tmp_path: Path
) -> None:
    bad = _misspelt_mapping(tmp_path / "mapping.json")
    async with connector_factory(
        MAPPING_FILE=str(bad), MAPPING_RECHECK_SECONDS="1", DATAVERSE_STATUS_COLUMN="sync_spotlerstatus"
    ) as connector:
        anonymous = await api(connector, "GET", "health")
        assert (anonymous.status_code, anonymous.json()) == (503, {"status": "unhealthy"})
        health = await api(connector, "GET", "health/details")
        assert health.status_code == 503
        checks = {c["name"]: c for c in health.json()["checks"]}
        assert checks["mapping"]["status"] == "unhealthy"
        assert checks["mapping"]["reason"] == "configuration_error"
        problems = "\n".join(checks["mapping"]["problems"])
        assert "firstNme" in problems
        assert "Spotler" in problems
        assert "lastnme" in problems
        assert "Dataverse" in problems

        record_id = connector.dataverse.sandbox.create("contact", ADA)
        await asyncio.to_thread(connector.dataverse.sandbox.drain, timeout=30.0)
        for _ in range(3):  # every delivery puts the event back; none counts towards dead-lettering
            await asyncio.sleep(1.1)
            handled, failed = await connector.host.run_queue_once()
            assert (handled, failed) == (1, 0)
        spotler_before = connector.spotler.store.call_counts()
        await connector.host.run_timer()

        assert connector.spotler.store.contact(record_id) is None
        assert spotler_writes(connector) == {}
        app_user = connector.dataverse.app_user_id
        assert [w for w in connector.dataverse.sandbox.writes if w.user_id == app_user] == []  # no status written
        assert connector.spotler.store.call_counts() == spotler_before  # the pull did not run
        assert await get_runtime().state.list_dead_letters(limit=10) == []
        assert await _queue_count(connector) == 1  # the event is still there
        dead = await api(connector, "GET", "deadletters")
        assert dead.json() == {"deadLetters": []}

    # The operator fixes the mapping and restarts: the held event is applied.
    async with connector_factory(MAPPING_RECHECK_SECONDS="1") as fixed:
        assert (await api(fixed, "GET", "health")).status_code == 200
        handled = await fixed.host.run_queue(idle_rounds=2, poll_seconds=0.2)
        assert handled == 1
        assert fixed.spotler.store.contact(record_id) is not None
        assert await get_runtime().state.list_dead_letters(limit=10) == []


async def test_a_webhook_signed_with_the_next_secret_is_accepted_during_a_rotation_and_an_unknown_one_gets_401(
    connector_factory: ConnectorFactory,
) -> None:
    body = json.dumps({"entity": "contact", "id": "6d81597f-0f9f-e711-8122-000d3aa2331c", "message": "Delete"})
    async with connector_factory(WEBHOOK_SECRET_NEXT="the-next-webhook-key") as connector:
        url = f"{connector.host.url}/api/dynamics/webhook"
        async with httpx.AsyncClient() as http:
            current = await http.post(url, params={"code": WEBHOOK_KEY}, content=body)
            upcoming = await http.post(url, params={"code": "the-next-webhook-key"}, content=body)
            unknown = await http.post(url, params={"code": "an-old-webhook-key"}, content=body)

    assert current.status_code == 202
    assert upcoming.status_code == 202
    assert unknown.status_code == 401
    assert unknown.json() == {"status": "unauthorized"}


async def test_a_missing_spotler_property_pauses_until_it_exists_then_the_next_check_resumes_without_a_restart(
    connector_factory: ConnectorFactory, tmp_path: Path
) -> None:
    raw: dict[str, Any] = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["entities"]["contact"]["fields"].append({"dataverse": "telephone1", "spotler": "mobilePhone"})
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(raw), encoding="utf-8")
    async with connector_factory(MAPPING_FILE=str(mapping), MAPPING_RECHECK_SECONDS="1") as connector:
        record_id = connector.dataverse.sandbox.create("contact", {**ADA, "telephone1": "+31 6 1234 5678"})
        await asyncio.to_thread(connector.dataverse.sandbox.drain, timeout=30.0)
        assert await connector.host.run_queue_once() == (1, 0)
        replay = await api(connector, "POST", "deadletters/replay")
        assert replay.status_code == 503  # an operator's replay waits too
        assert connector.spotler.store.contact(record_id) is None

        connector.spotler.store.config.properties.append({"name": "mobilePhone", "type": "string"})
        await asyncio.sleep(1.1)  # the next check is due
        handled = await connector.host.run_queue(idle_rounds=2, poll_seconds=0.2)

        assert handled == 1
        contact = connector.spotler.store.contact(record_id)
        assert contact is not None
        assert contact["properties"]["mobilePhone"] == "+31 6 1234 5678"
        assert (await api(connector, "GET", "health")).status_code == 200
