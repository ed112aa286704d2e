"""The shipped local.settings.sample.json works as it is: its blank settings mean "not set"."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.e2e.conftest import ConnectorFactory
from tests.e2e.support import reason, spotler_contact

SAMPLE = Path(__file__).resolve().parents[2] / "local.settings.sample.json"
# Where the test's own Azurite and sandboxes listen, and their credentials; every other value is the sample's.
ENDPOINTS = {
    "AzureWebJobsStorage",
    "SYNC_TABLE_PREFIX",
    "SYNC_QUEUE_NAME",
    "SPOTLER_BASE_URL",
    "SPOTLER_CONSUMER_KEY",
    "SPOTLER_CONSUMER_SECRET",
    "DATAVERSE_URL",
    "DATAVERSE_STATIC_TOKEN",
    "DATAVERSE_APP_USER_ID",
    "WEBHOOK_SECRET",
    "SUPPRESSION_HASH_KEY",
}


def sample_values() -> dict[str, str]:
    values: dict[str, str] = json.loads(SAMPLE.read_text(encoding="utf-8"))["Values"]
    return {k: v for k, v in values.items() if k not in ENDPOINTS and k != "FUNCTIONS_WORKER_RUNTIME"}


def test_the_sample_leaves_optional_settings_blank() -> None:
    values = sample_values()
    assert values["MAPPING_FILE"] == ""
    assert values["DATAVERSE_STATUS_COLUMN"] == ""


async def test_push_and_pull_run_with_the_sample_settings_as_shipped(connector_factory: ConnectorFactory) -> None:
    async with connector_factory(**sample_values()) as connector:
        dv, sp = connector.dataverse.sandbox, connector.spotler.store
        record_id = dv.create("contact", {"firstname": "Sem", "lastname": "Jong", "emailaddress1": "sem@example.nl"})
        await connector.deliver()
        assert await reason(connector, "contact", record_id) == "created"
        assert spotler_contact(connector, record_id)["properties"]["firstName"] == "Sem"

        sp.profile_edit(record_id, permissions={1: False})
        await asyncio.sleep(0.05)
        await connector.host.run_timer()
        row = dv.row("contact", record_id)
        assert row is not None
        assert row["donotbulkemail"] is True  # the pulled unsubscribe landed (no column named "" was written)
        assert "" not in row
