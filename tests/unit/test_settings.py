"""The settings module: the one reader of the environment, failing fast and naming what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sync_core.settings import SettingsError, load_settings, setting_specs

ROOT = Path(__file__).resolve().parents[2]
VALID = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "SPOTLER_CONSUMER_KEY": "key",
    "SPOTLER_CONSUMER_SECRET": "secret",
    "DATAVERSE_URL": "https://contoso.crm4.dynamics.com/",
    "WEBHOOK_SECRET": "webhook",
    "SUPPRESSION_HASH_KEY": "0123456789abcdef",
}


def test_missing_required_setting_is_rejected_naming_it() -> None:
    env = dict(VALID)
    del env["SPOTLER_CONSUMER_KEY"]
    with pytest.raises(SettingsError, match="SPOTLER_CONSUMER_KEY"):
        load_settings(env)


def test_malformed_setting_is_rejected_naming_it() -> None:
    with pytest.raises(SettingsError, match="CONFLICT_WINNER"):
        load_settings({**VALID, "CONFLICT_WINNER": "whoever"})
    with pytest.raises(SettingsError, match="PULL_PAGE_SIZE"):
        load_settings({**VALID, "PULL_PAGE_SIZE": "lots"})


def test_client_secret_auth_requires_its_three_settings() -> None:
    with pytest.raises(SettingsError, match="DATAVERSE_TENANT_ID, DATAVERSE_CLIENT_ID, DATAVERSE_CLIENT_SECRET"):
        load_settings({**VALID, "DATAVERSE_AUTH": "client_secret"})


def test_storage_needs_a_connection_string_or_an_account_name() -> None:
    env = dict(VALID)
    del env["AzureWebJobsStorage"]
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        load_settings(env)
    assert load_settings({**env, "AzureWebJobsStorage__accountName": "acct"}).storage_account_name == "acct"


def test_secrets_never_print() -> None:
    settings = load_settings(VALID)
    assert "secret" not in repr(settings.spotler_consumer_secret)
    assert "0123456789abcdef" not in repr(settings)


def test_development_storage_expands_to_azurite_endpoints() -> None:
    conn = load_settings(VALID).resolved_storage_connection_string
    assert conn is not None
    assert "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1" in conn


def test_local_settings_sample_lists_exactly_the_settings_and_loads() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    names = {s.env_name for s in setting_specs()}
    assert set(sample) - {"FUNCTIONS_WORKER_RUNTIME"} == names
    values = {k: v for k, v in sample.items() if v != ""}
    settings = load_settings(values)
    assert settings.dataverse_auth == "static_token"


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([A-Za-z_]+)` \|", readme, flags=re.MULTILINE))
    assert table == {s.env_name for s in setting_specs()}


def test_no_module_outside_settings_reads_the_environment() -> None:
    offenders = []
    for path in [*sorted((ROOT / "sync_core").rglob("*.py")), ROOT / "function_app.py"]:
        if path.name == "settings.py" and path.parent.name == "sync_core":
            continue
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv|getenv\(|from os import environ", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_blank_optional_settings_are_unset() -> None:
    settings = load_settings(
        {**VALID, "MAPPING_FILE": "", "DATAVERSE_STATUS_COLUMN": "   ", "DATAVERSE_APP_USER_ID": ""}
    )
    assert settings.mapping_file is None
    assert settings.dataverse_status_column is None
    assert settings.dataverse_app_user_id is None


def test_a_blank_required_setting_is_missing() -> None:
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
        load_settings({**VALID, "WEBHOOK_SECRET": " "})
