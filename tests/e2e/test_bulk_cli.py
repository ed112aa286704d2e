"""The bulk commands on the sandboxes and Azurite, as an operator runs them (no Functions host)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sandboxes.bulk_data import load_crm
from sync_core.cli.main import app
from tests.fixtures.azurite import AzuriteInstance
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox


@pytest.fixture
def environ(
    monkeypatch: pytest.MonkeyPatch,
    azurite: AzuriteInstance,
    storage_prefix: str,
    dataverse_sandbox: DataverseSandboxHandle,
    spotler_sandbox: SpotlerSandbox,
) -> None:
    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "SYNC_TABLE_PREFIX": storage_prefix,
        "SYNC_QUEUE_NAME": f"{storage_prefix}-events",
        "BULK_QUEUE_NAME": f"{storage_prefix}-bulk",
        "SPOTLER_BASE_URL": spotler_sandbox.url,
        "SPOTLER_CONSUMER_KEY": spotler_sandbox.consumer_key,
        "SPOTLER_CONSUMER_SECRET": spotler_sandbox.consumer_secret,
        "DATAVERSE_URL": dataverse_sandbox.url,
        "DATAVERSE_AUTH": "static_token",
        "DATAVERSE_STATIC_TOKEN": dataverse_sandbox.token,
        "WEBHOOK_SECRET": "cli-webhook-key",
        "SUPPRESSION_HASH_KEY": "cli-suppression-hash-key",
        "MASS_CHANGE_LIMIT": "3",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_backfill_dry_run_then_real_run_and_the_guard_exit_code(
    environ: None, dataverse_sandbox: DataverseSandboxHandle, spotler_sandbox: SpotlerSandbox
) -> None:
    crm = load_crm(dataverse_sandbox.sandbox, spotler_sandbox.store, 60)
    runner = CliRunner()
    dry = runner.invoke(app, ["backfill", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.output)
    assert planned["phase"] == "done"
    assert planned["assess"]["records"] == crm.total
    assert not any(k.startswith(("POST", "PUT")) for k in spotler_sandbox.store.call_counts())

    real = runner.invoke(app, ["backfill"])
    assert real.exit_code == 0, real.output
    assert "Result (written)" in real.output
    assert len(spotler_sandbox.store.contacts()) == crm.distinct_eligible_emails

    user = dataverse_sandbox.sandbox.human_user_id
    for record_id in sorted(r for e, r in crm.eligible if e == "contact")[:4]:
        dataverse_sandbox.sandbox.store.update("contact", record_id, {"donotemail": True}, user_id=user)
    stopped = runner.invoke(app, ["resync", "--table", "contact", "--filter", "donotemail eq true"])
    assert stopped.exit_code == 2, stopped.output
    assert "MASS_CHANGE_LIMIT=3" in stopped.output
    allowed = runner.invoke(
        app, ["resync", "--table", "contact", "--filter", "donotemail eq true", "--allow-mass-changes", "--json"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.output)["apply"]["outcomes"]["anonymize/anonymized"] == 4
