"""The command line reads a Functions settings file, with the environment winning, and fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
