"""The Spotler status columns on contact, lead and account: names, types, and labels in English and Dutch.

`dataverse setup` creates them; the reason column's options are the reason codes with their stable option
values (`ReasonCode.option_value`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sync_core.domain.reasons import ReasonCode

ENGLISH = 1033
DUTCH = 1043

REASON_LABELS: dict[ReasonCode, tuple[str, str]] = {
    ReasonCode.SYNCED: ("Synced", "Gesynchroniseerd"),
    ReasonCode.CREATED: ("Created in Spotler", "Aangemaakt in Spotler"),
    ReasonCode.UPDATED: ("Updated", "Bijgewerkt"),
    ReasonCode.ANONYMIZED: ("Anonymized", "Geanonimiseerd"),
    ReasonCode.INACTIVE: ("Inactive, not synced", "Inactief, niet gesynchroniseerd"),
    ReasonCode.NO_VALID_EMAIL: ("No valid e-mail address", "Geen geldig e-mailadres"),
    ReasonCode.OPTED_OUT_IN_SPOTLER: ("Opted out in Spotler", "Afgemeld in Spotler"),
    ReasonCode.EXCLUDED_BY_FILTER: ("Excluded by a filter", "Uitgesloten door een filter"),
    ReasonCode.SUPPRESSED: ("Suppressed", "Geblokkeerd"),
    ReasonCode.CONFLICT_RESOLVED: ("Conflict resolved", "Conflict opgelost"),
    ReasonCode.TRANSIENT_ERROR: ("Temporary error, will retry", "Tijdelijke fout, wordt herhaald"),
    ReasonCode.PERMANENT_ERROR: ("Error, needs attention", "Fout, actie nodig"),
    ReasonCode.CONFIGURATION_ERROR: ("Configuration error, sync paused", "Configuratiefout, synchronisatie gepauzeerd"),
    ReasonCode.PAUSED_BY_GUARD: ("Held back by the mass-change guard", "Tegengehouden door de bulkbeveiliging"),
}

ColumnKind = Literal["choice", "string", "datetime"]


@dataclass(frozen=True, slots=True)
class StatusColumn:
    """One status column; its logical name is `<prefix>_<suffix>` on every synced table."""

    suffix: str
    schema_suffix: str
    kind: ColumnKind
    english: str
    dutch: str
    description: str
    setting: str | None  # the app setting that names it for the connector
    max_length: int | None = None

    def logical_name(self, prefix: str) -> str:
        return f"{prefix}_{self.suffix}"

    def schema_name(self, prefix: str) -> str:
        return f"{prefix}_{self.schema_suffix}"


STATUS_COLUMNS: tuple[StatusColumn, ...] = (
    StatusColumn(
        "spotlerreason",
        "SpotlerReason",
        "choice",
        "Spotler status",
        "Spotler-status",
        "Why the record is, or is not, in sync with Spotler Mail+.",
        "DATAVERSE_STATUS_COLUMN",
    ),
    StatusColumn(
        "spotlerdetail",
        "SpotlerDetail",
        "string",
        "Spotler status detail",
        "Spotler-statusdetail",
        "The last sync outcome in words (never an e-mail address).",
        "DATAVERSE_STATUS_DETAIL_COLUMN",
        max_length=2000,
    ),
    StatusColumn(
        "spotlerlastsyncedon",
        "SpotlerLastSyncedOn",
        "datetime",
        "Last synced with Spotler",
        "Laatst gesynchroniseerd met Spotler",
        "When the record was last in step with Spotler Mail+.",
        "DATAVERSE_STATUS_SYNCED_ON_COLUMN",
    ),
)

# The Dataverse AttributeType an existing column must have to be reused.
ATTRIBUTE_TYPES: dict[ColumnKind, str] = {"choice": "Picklist", "string": "String", "datetime": "DateTime"}
