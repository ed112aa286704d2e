"""Every setting the connector reads, typed, described and validated once at start-up.

This is the only module that reads the environment. A missing or malformed setting fails fast with an
error that names it; secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Azurite's published development account (https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_STORAGE = (
    f"DefaultEndpointsProtocol=http;AccountName={_DEV_ACCOUNT};AccountKey={_DEV_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{_DEV_ACCOUNT};QueueEndpoint=http://127.0.0.1:10001/{_DEV_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{_DEV_ACCOUNT};"
)


class Settings(BaseSettings):
    """The connector's configuration; field aliases are the environment variable (app setting) names."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, populate_by_name=False)

    # --- Storage: the Functions host account also holds the connector's tables and event queue.
    storage_connection_string: SecretStr | None = Field(
        default=None,
        validation_alias="AzureWebJobsStorage",
        description="Storage connection string, for local runs (`UseDevelopmentStorage=true` is Azurite). "
        "Leave unset in Azure and use the identity-based AzureWebJobsStorage__accountName.",
    )
    storage_account_name: str | None = Field(
        default=None,
        validation_alias="AzureWebJobsStorage__accountName",
        description="Storage account name for identity-based access (managed identity) in Azure.",
    )
    storage_client_id: str | None = Field(
        default=None,
        validation_alias="AzureWebJobsStorage__clientId",
        description="Client id of the user-assigned managed identity used for storage.",
    )
    table_prefix: str = Field(
        default="sync",
        validation_alias="SYNC_TABLE_PREFIX",
        pattern=r"^[A-Za-z][A-Za-z0-9]{0,29}$",
        description="Prefix of the state tables (links, watermarks, status, dead letters, suppressions).",
    )
    queue_name: str = Field(
        default="dataverse-events",
        validation_alias="SYNC_QUEUE_NAME",
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="Storage queue that holds accepted Dataverse events until the push worker applies them.",
    )

    # --- Spotler Mail+
    spotler_base_url: str = Field(
        default="https://restapi.mailplus.nl",
        validation_alias="SPOTLER_BASE_URL",
        description="Base URL of the Spotler Mail+ REST API.",
    )
    spotler_path_prefix: str = Field(
        default="/integrationservice-1.1.0",
        validation_alias="SPOTLER_PATH_PREFIX",
        description="Path prefix of the REST API (`/integrationservice-1.1.0` or `/integrationservice`).",
    )
    spotler_consumer_key: str = Field(
        validation_alias="SPOTLER_CONSUMER_KEY", min_length=1, description="OAuth 1.0a consumer key."
    )
    spotler_consumer_secret: SecretStr = Field(
        validation_alias="SPOTLER_CONSUMER_SECRET", description="OAuth 1.0a consumer secret (Key Vault)."
    )
    spotler_timeout_seconds: float = Field(
        default=30.0, gt=0, validation_alias="SPOTLER_TIMEOUT_SECONDS", description="Timeout of one call."
    )
    spotler_max_attempts: int = Field(
        default=5, ge=1, le=20, validation_alias="SPOTLER_MAX_ATTEMPTS", description="Attempts per call."
    )
    spotler_calls_per_second: float = Field(
        default=0,
        ge=0,
        le=1000,
        validation_alias="SPOTLER_CALLS_PER_SECOND",
        description="Spotler calls one instance sends per second at most, evenly spaced (a token bucket shared by "
        "its workers; retries included). Set it to the account's limit divided by the maximum instance count; "
        "0 sends unpaced and relies on 429 and Retry-After.",
    )

    # --- Dataverse
    dataverse_url: str = Field(
        validation_alias="DATAVERSE_URL",
        pattern=r"^https?://[^/\s]+/?$",
        description="Environment URL, e.g. https://contoso.crm4.dynamics.com.",
    )
    dataverse_auth: Literal["managed_identity", "client_secret", "default", "static_token"] = Field(
        default="managed_identity",
        validation_alias="DATAVERSE_AUTH",
        description="How to get tokens: managed_identity (preferred), client_secret, default "
        "(DefaultAzureCredential) or static_token (sandbox only).",
    )
    dataverse_tenant_id: str | None = Field(
        default=None, validation_alias="DATAVERSE_TENANT_ID", description="Entra tenant id (client_secret)."
    )
    dataverse_client_id: str | None = Field(
        default=None,
        validation_alias="DATAVERSE_CLIENT_ID",
        description="App registration id (client_secret) or user-assigned identity client id.",
    )
    dataverse_client_secret: SecretStr | None = Field(
        default=None, validation_alias="DATAVERSE_CLIENT_SECRET", description="Client secret (Key Vault)."
    )
    dataverse_static_token: SecretStr | None = Field(
        default=None,
        validation_alias="DATAVERSE_STATIC_TOKEN",
        description="Bearer token for the Dataverse sandbox (static_token only; never in Azure).",
    )
    dataverse_app_user_id: str | None = Field(
        default=None,
        validation_alias="DATAVERSE_APP_USER_ID",
        description="systemuser id of the connector's application user; events it causes are not pushed.",
    )
    dataverse_status_column: str | None = Field(
        default=None,
        validation_alias="DATAVERSE_STATUS_COLUMN",
        description="Column that receives the Spotler status reason code (unset: not written).",
    )
    dataverse_status_detail_column: str | None = Field(
        default=None,
        validation_alias="DATAVERSE_STATUS_DETAIL_COLUMN",
        description="Column that receives the status detail text (unset: not written).",
    )
    dataverse_status_column_type: Literal["choice", "text"] = Field(
        default="choice",
        validation_alias="DATAVERSE_STATUS_COLUMN_TYPE",
        description="How the status column holds the reason: `choice` (option values, as `dataverse setup` creates "
        "it) or `text` (the reason code itself).",
    )
    dataverse_status_synced_on_column: str | None = Field(
        default=None,
        validation_alias="DATAVERSE_STATUS_SYNCED_ON_COLUMN",
        description="Date-time column that receives when the record was last in sync (unset: not written).",
    )
    dataverse_timeout_seconds: float = Field(
        default=30.0, gt=0, validation_alias="DATAVERSE_TIMEOUT_SECONDS", description="Timeout of one call."
    )

    # --- Webhook intake
    webhook_auth_mode: Literal["webhook_key", "http_header", "http_query_string"] = Field(
        default="webhook_key",
        validation_alias="WEBHOOK_AUTH_MODE",
        description="Authentication the Dataverse webhook registration uses.",
    )
    webhook_secret: SecretStr = Field(
        validation_alias="WEBHOOK_SECRET", description="The webhook key / header / query value (Key Vault)."
    )
    webhook_auth_name: str = Field(
        default="x-spotler-sync-key",
        validation_alias="WEBHOOK_AUTH_NAME",
        description="Header name (http_header) or query parameter name (http_query_string).",
    )
    webhook_max_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        validation_alias="WEBHOOK_MAX_BYTES",
        description="Largest accepted webhook body; larger ones get 413.",
    )
    webhook_secret_next: SecretStr | None = Field(
        default=None,
        validation_alias="WEBHOOK_SECRET_NEXT",
        description="During a rotation: the next webhook secret, accepted as well as WEBHOOK_SECRET (Key Vault).",
    )
    webhook_public_url: str | None = Field(
        default=None,
        validation_alias="WEBHOOK_PUBLIC_URL",
        description="The connector's public webhook URL (https://<app>.azurewebsites.net/api/dynamics/webhook) "
        "that `dataverse setup` registers.",
    )

    # --- Sync behaviour
    mapping_file: Path | None = Field(
        default=None,
        validation_alias="MAPPING_FILE",
        description="Field mapping file (JSON); unset uses the shipped default mapping.",
    )
    anonymize_on_deactivate: bool = Field(
        default=True,
        validation_alias="ANONYMIZE_ON_DEACTIVATE",
        description="Anonymize the Spotler contact when its Dataverse record is deactivated.",
    )
    on_leaving_scope: Literal["unsubscribe", "anonymize", "keep"] = Field(
        default="unsubscribe",
        validation_alias="ON_LEAVING_SCOPE",
        description="What happens in Spotler when a synced record stops qualifying (no valid e-mail, excluded by "
        "a filter, inactive without ANONYMIZE_ON_DEACTIVATE): `unsubscribe` turns every mapped permission off and "
        "keeps the contact, `anonymize` anonymizes it, `keep` leaves it as it is.",
    )
    purge_existing_properties_when_not_set: bool = Field(
        default=False,
        validation_alias="PurgeExistingPropertiesWhenNotSet",
        description="Dynamics -> Spotler: true sends every update with Spotler's purge flag, so Spotler holds "
        "exactly what Dynamics sends (unsent properties are cleared; Spotler-owned ⬅ values and permissions are "
        "carried along). false keeps Spotler values the update does not carry.",
    )
    conflict_winner: Literal["dynamics", "most_recent"] = Field(
        default="dynamics",
        validation_alias="CONFLICT_WINNER",
        description="Who wins when both sides changed a two-way field since the last sync.",
    )
    suppression_hash_key: SecretStr = Field(
        validation_alias="SUPPRESSION_HASH_KEY",
        min_length=16,
        description="Key of the keyed hash of e-mail addresses in suppression tombstones (Key Vault).",
    )
    pull_overlap_minutes: int = Field(
        default=10,
        ge=0,
        le=1440,
        validation_alias="PULL_OVERLAP_MINUTES",
        description="The pull re-reads this many minutes before the watermark (clock skew, late commits).",
    )
    pull_initial_lookback_hours: int = Field(
        default=24,
        ge=0,
        validation_alias="PULL_INITIAL_LOOKBACK_HOURS",
        description="How far back the first pull reads when no watermark exists yet.",
    )
    pull_page_size: int = Field(
        default=500, ge=1, le=10000, validation_alias="PULL_PAGE_SIZE", description="Spotler feed page size."
    )
    pull_feed_paging: Literal["timestamp", "offset"] = Field(
        default="timestamp",
        validation_alias="PULL_FEED_PAGING",
        description="How the pull pages Spotler's feed: `timestamp` moves fromDate along (no change lost when "
        "contacts change mid-run; needs the feed ordered by lastChanged) or `offset` (plain `after`).",
    )
    max_delivery_attempts: int = Field(
        default=5,
        ge=1,
        le=50,
        validation_alias="MAX_DELIVERY_ATTEMPTS",
        description="Queue deliveries of an event before it becomes a dead letter (match host.json).",
    )
    dead_letter_max_replays: int = Field(
        default=12,
        ge=0,
        validation_alias="DEAD_LETTER_MAX_REPLAYS",
        description="Automatic replays of a dead letter by the pull run before it waits for an operator "
        "(the delay doubles from 1 minute up to 6 hours: 12 replays span about a day).",
    )
    mapping_blob: str | None = Field(
        default=None,
        validation_alias="MAPPING_BLOB",
        pattern=r"^$|^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]/\S+$",
        description="Mapping file read from a blob of the storage account, as `container/path.json` (wins over "
        "MAPPING_FILE); change the mapping without a redeployment, then restart the app.",
    )
    mapping_recheck_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        validation_alias="MAPPING_RECHECK_SECONDS",
        description="While the mapping does not fit Spotler or Dataverse (configuration_error), how often the "
        "live check runs again; queued events wait this long before they are tried again.",
    )

    # --- Telemetry
    applicationinsights_connection_string: str | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING",
        description="Application Insights connection string; set: spans, log records and metrics are exported "
        "there (azure-monitor-opentelemetry). Set by the infrastructure.",
    )
    applicationinsights_authentication_string: str | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        description="`ClientId=<id>;Authorization=AAD`: export with that managed identity (Entra) instead of "
        "the connection string's key. Set by the infrastructure.",
    )
    telemetry_console: bool = Field(
        default=False,
        validation_alias="SYNC_TELEMETRY_CONSOLE",
        description="Print spans and metrics to the console (local troubleshooting; not for Azure).",
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, data: Any) -> Any:
        """A setting given as an empty string (or only spaces) is not set: its default applies, or it is missing.

        Function App settings and local.settings.json cannot leave a key out of a template, so "" is how an
        unset optional setting arrives there.
        """
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    # --- Bulk work (backfill, resync, reconcile) and the mass-change guard
    bulk_queue_name: str = Field(
        default="bulk-work",
        validation_alias="BULK_QUEUE_NAME",
        description="Storage queue of bulk work (backfill, resync, reconcile), separate from live changes.",
    )
    bulk_page_size: int = Field(
        default=5000,
        ge=1,
        le=5000,
        validation_alias="BULK_PAGE_SIZE",
        description="Dataverse rows read per request by bulk runs (mapped columns only).",
    )
    bulk_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        validation_alias="BULK_CONCURRENCY",
        description="Work items one command-line run handles at a time when it drives the bulk queue itself.",
    )
    mass_change_limit: int = Field(
        default=100,
        ge=0,
        validation_alias="MASS_CHANGE_LIMIT",
        description="A bulk run (or the live push, per sliding hour) that would anonymize or unsubscribe more "
        "records than this stops before writing.",
    )
    mass_change_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        validation_alias="MASS_CHANGE_SHARE",
        description="A bulk run that would anonymize or unsubscribe more than this share of its records stops "
        "before writing.",
    )
    reconcile_schedule: str = Field(
        default="0 30 2 * * *",
        validation_alias="RECONCILE_SCHEDULE",
        description="NCRONTAB schedule of the reconciliation run (Dataverse change tracking); daily by default.",
    )

    @field_validator("spotler_base_url", "dataverse_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.storage_connection_string is None and not self.storage_account_name:
            raise ValueError(
                "AzureWebJobsStorage: set a connection string (local) or AzureWebJobsStorage__accountName (Azure)"
            )
        if self.dataverse_auth == "client_secret":
            missing = [
                name
                for name, value in (
                    ("DATAVERSE_TENANT_ID", self.dataverse_tenant_id),
                    ("DATAVERSE_CLIENT_ID", self.dataverse_client_id),
                    ("DATAVERSE_CLIENT_SECRET", self.dataverse_client_secret),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"DATAVERSE_AUTH=client_secret needs {', '.join(missing)}")
        if self.dataverse_auth == "static_token" and self.dataverse_static_token is None:
            raise ValueError("DATAVERSE_AUTH=static_token needs DATAVERSE_STATIC_TOKEN")
        return self

    @property
    def resolved_storage_connection_string(self) -> str | None:
        """The connection string with `UseDevelopmentStorage=true` expanded to Azurite's endpoints."""
        if self.storage_connection_string is None:
            return None
        value = self.storage_connection_string.get_secret_value()
        return DEVELOPMENT_STORAGE if value.strip().lower() == "usedevelopmentstorage=true" else value


class SettingsError(Exception):
    """Configuration is missing or malformed; the message names every offending setting."""


@dataclass(frozen=True)
class SettingSpec:
    """What the README table, local.settings.sample.json and the Bicep drift test know of a setting."""

    env_name: str
    required: bool
    secret: bool
    default: str
    description: str


def setting_specs() -> list[SettingSpec]:
    """Every setting, in declaration order."""
    specs: list[SettingSpec] = []
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        env_name = alias if isinstance(alias, str) else name.upper()
        annotation = str(info.annotation)
        default = "" if info.is_required() or info.default is None else str(info.default)
        if isinstance(info.default, bool):
            default = str(info.default).lower()
        specs.append(
            SettingSpec(
                env_name=env_name,
                required=info.is_required(),
                secret="SecretStr" in annotation,
                default=default,
                description=info.description or "",
            )
        )
    return specs


def settings_environ(settings_file: Path | None) -> dict[str, str]:
    """A Functions settings file's `Values` overlaid with the process environment (the environment wins)."""
    values: dict[str, str] = {}
    if settings_file is not None:
        try:
            document = json.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{settings_file}: cannot read settings ({exc})") from None
        raw = document.get("Values", {}) if isinstance(document, dict) else {}
        if not isinstance(raw, dict):
            raise SettingsError(f"{settings_file}: `Values` must be an object")
        values.update({str(k): str(v) for k, v in raw.items()})
    values.update(os.environ)
    return values


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the settings (from `environ` when given, else the process environment)."""
    try:
        if environ is None:
            return Settings()
        return Settings.model_validate(environ)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{where}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
