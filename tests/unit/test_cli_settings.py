"""The command line reads a Functions settings file, with the environment winning, and fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from typer.testing import CliRunner

from sync_core.cli import app as cli_app
from sync_core.cli.app import service_error_message
from sync_core.cli.main import app
from sync_core.settings import SettingsError, settings_environ


def test_settings_file_values_are_overlaid_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"SYNC_QUEUE_NAME": "from-file", "SYNC_TABLE_PREFIX": "filetables"}}))
    monkeypatch.setenv("SYNC_QUEUE_NAME", "from-env")
    values = settings_environ(path)
    assert values["SYNC_QUEUE_NAME"] == "from-env"
    assert values["SYNC_TABLE_PREFIX"] == "filetables"


def test_unreadable_settings_file_is_a_settings_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SettingsError, match=r"broken\.json"):
        settings_environ(path)


def test_values_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"Values": ["a"]}))
    with pytest.raises(SettingsError, match="Values"):
        settings_environ(path)


def test_help_lists_the_settings_option() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--settings" in result.output


def test_a_storage_failure_ends_the_command_in_one_line_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    version = HttpResponseError(
        message="The API version 2026-10-06 is not supported by Azurite. Please upgrade Azurite to latest version.\n"
        "RequestId:1\nTime:2026-12-01T07:57:37.913Z"
    )
    assert "--skipApiVersionCheck" in service_error_message(version)
    assert service_error_message(ServiceRequestError("Cannot connect to host 127.0.0.1:1")).startswith(
        "storage is not reachable (ServiceRequestError)"
    )
    assert service_error_message(ResourceNotFoundError("The table specified does not exist.\nRequestId:2")) == (
        "storage or Azure call failed (ResourceNotFoundError): The table specified does not exist."
    )

    def refused() -> None:
        raise version

    monkeypatch.setattr(cli_app, "app", refused)
    with pytest.raises(SystemExit) as exited:
        cli_app.run()
    assert exited.value.code == 1
    printed = capsys.readouterr().err
    assert "skipApiVersionCheck" in printed
    assert "Traceback" not in printed
