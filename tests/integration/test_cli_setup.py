"""The operator commands `dataverse setup` and `mapping validate|show` on the sandboxes, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sync_core.cli.main import app
from sync_core.domain.mapping import default_mapping
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

WRITES = ("POST ", "PATCH ", "DELETE ")


@pytest.fixture
def settings_file(tmp_path: Path, spotler_sandbox: SpotlerSandbox, dataverse_sandbox: DataverseSandboxHandle) -> Path:
    """local.settings.json as a new user has it: the sample, pointed at the sandboxes."""
    sample = json.loads((Path(__file__).resolve().parents[2] / "local.settings.sample.json").read_text())
    values = {k: v for k, v in sample["Values"].items() if v != ""}
    values.update(
        SPOTLER_BASE_URL=spotler_sandbox.url,
        SPOTLER_CONSUMER_KEY=spotler_sandbox.consumer_key,
        SPOTLER_CONSUMER_SECRET=spotler_sandbox.consumer_secret,
        DATAVERSE_URL=dataverse_sandbox.url,
        DATAVERSE_STATIC_TOKEN=dataverse_sandbox.token,
        WEBHOOK_PUBLIC_URL="http://127.0.0.1:9/api/dynamics/webhook",
    )
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def _run(settings_file: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--settings", str(settings_file), *args])


def test_setup_dry_run_prints_the_plan_and_the_app_settings_and_writes_nothing(
    settings_file: Path, dataverse_sandbox: DataverseSandboxHandle
) -> None:
    result = _run(settings_file, "dataverse", "setup", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert "DATAVERSE_STATUS_COLUMN=sync_spotlerreason" in result.output
    assert "DATAVERSE_STATUS_DETAIL_COLUMN=sync_spotlerdetail" in result.output
    assert not any(k.startswith(WRITES) for k in dataverse_sandbox.sandbox.request_counts())


def test_setup_json_summary_then_a_second_run_changes_nothing(settings_file: Path) -> None:
    first = _run(settings_file, "dataverse", "setup", "--json")
    second = _run(settings_file, "dataverse", "setup", "--json")

    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["changes"] == 28
    assert json.loads(second.output)["changes"] == 0


def test_setup_with_next_secret_writes_the_key_and_refuses_without_one(
    settings_file: Path, dataverse_sandbox: DataverseSandboxHandle
) -> None:
    assert _run(settings_file, "dataverse", "setup").exit_code == 0
    refused = _run(settings_file, "dataverse", "setup", "--next-secret")
    assert refused.exit_code == 2
    assert "WEBHOOK_SECRET_NEXT" in refused.output

    document = json.loads(settings_file.read_text())
    document["Values"]["WEBHOOK_SECRET_NEXT"] = "rotated-webhook-key"
    settings_file.write_text(json.dumps(document))
    rotated = _run(settings_file, "dataverse", "setup", "--next-secret", "--json")

    assert rotated.exit_code == 0, rotated.output
    endpoint = next(iter(dataverse_sandbox.sandbox.metadata.tables["serviceendpoints"].values()))
    assert endpoint["authvalue"] == "rotated-webhook-key"
    assert all(r.auth_value == "rotated-webhook-key" for r in dataverse_sandbox.sandbox.sender.registrations.values())


def test_mapping_validate_exits_non_zero_naming_a_misspelt_property_and_a_misspelt_column(
    settings_file: Path, tmp_path: Path
) -> None:
    raw: dict[str, Any] = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["entities"]["lead"]["fields"][3]["spotler"] = "jobTitel"
    raw["entities"]["account"]["fields"][0]["dataverse"] = "nmae"
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(raw))

    good = _run(settings_file, "mapping", "validate")
    bad = _run(settings_file, "mapping", "validate", str(mapping))

    assert good.exit_code == 0, good.output
    assert bad.exit_code == 1
    assert "jobTitel" in bad.output
    assert "Spotler" in bad.output
    assert "nmae" in bad.output
    assert "Dataverse" in bad.output


def test_mapping_validate_reports_a_schema_error_in_one_line(settings_file: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"version": 1, "entities": {"contact": {"fields": []}}}))

    result = _run(settings_file, "mapping", "validate", str(mapping))

    assert result.exit_code == 1
    assert "no field maps the e-mail column" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_mapping_show_prints_directions_and_blank_policies(settings_file: Path) -> None:
    result = _run(settings_file, "mapping", "show")

    assert result.exit_code == 0, result.output
    assert "🔁" in result.output
    assert "➡" in result.output
    assert "keep (default)" in result.output
    assert "permission " in result.output  # the permission row (type column)
