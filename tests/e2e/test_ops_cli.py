"""The day-two commands on the sandboxes and Azurite: a record's status and the health checks, no Functions host."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sandboxes.bulk_data import load_crm
from sync_core.cli.main import app
from tests.e2e.test_bulk_cli import environ  # noqa: F401  (the same settings as the bulk commands)
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox


def test_status_shows_what_the_route_serves_for_a_synced_and_an_ineligible_record(
    environ: None,  # noqa: F811
    dataverse_sandbox: DataverseSandboxHandle,
    spotler_sandbox: SpotlerSandbox,
) -> None:
    crm = load_crm(dataverse_sandbox.sandbox, spotler_sandbox.store, 20)
    runner = CliRunner()
    assert runner.invoke(app, ["backfill", "--json"]).exit_code == 0

    synced = sorted(r for e, r in crm.eligible if e == "contact")[0]
    shown = runner.invoke(app, ["status", "contact", synced.upper(), "--json"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.output)
    assert (view["id"], view["reason"], view["spotlerExternalId"]) == (synced, "created", synced)
    assert spotler_sandbox.store.contact(synced) is not None
    assert "@" not in shown.output, "no e-mail address in what an operator prints"

    without_email = next(
        r for r in crm.records["contact"] if dataverse_sandbox.sandbox.store.get("contact", r)["emailaddress1"] is None
    )
    text = runner.invoke(app, ["status", "contact", without_email])
    assert text.exit_code == 0, text.output
    assert f"contact {without_email}: no_valid_email" in text.output
    assert "recent outcomes" in text.output


def test_status_of_a_record_never_seen_or_of_an_unknown_table_is_refused(environ: None) -> None:  # noqa: F811
    runner = CliRunner()
    unseen = runner.invoke(app, ["status", "contact", "00000000-0000-0000-0000-0000000000aa"])
    assert unseen.exit_code == 2
    assert "has not seen this record" in unseen.output
    table = runner.invoke(app, ["status", "invoice", "00000000-0000-0000-0000-0000000000aa"])
    assert table.exit_code == 2
    assert "unknown table 'invoice'" in table.output


def test_health_before_the_first_webhook_is_degraded_by_the_missing_queue_and_says_why(
    environ: None,  # noqa: F811
) -> None:
    result = CliRunner().invoke(app, ["health", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    checks = {c["name"]: c for c in body["checks"]}
    assert body["status"] == "degraded"
    assert checks["queue"]["detail"] == "the event queue does not exist yet; the first accepted webhook creates it"
    assert {checks[n]["status"] for n in ("storage", "spotler", "dataverse")} == {"healthy"}


def test_health_is_unhealthy_with_exit_code_one_when_spotler_refuses_the_credentials(
    environ: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOTLER_CONSUMER_SECRET", "not-the-secret")
    result = CliRunner().invoke(app, ["health"])
    assert result.exit_code == 1, result.output
    assert "unhealthy" in result.output
    assert "not-the-secret" not in result.output
