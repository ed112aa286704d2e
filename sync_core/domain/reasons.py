"""The "Spotler status": one closed set of reason codes that explains every outcome of a record.

The same code appears in the status endpoint, the CLI, the Dataverse status column and the logs.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a record is, or is not, in sync with Spotler."""

    SYNCED = "synced"  # both sides already agree; nothing was written
    CREATED = "created"  # a new Spotler contact was created for the record
    UPDATED = "updated"  # the Spotler contact (or the Dataverse row, for a pull) was updated
    ANONYMIZED = "anonymized"  # Do Not Email, deactivation or deletion: the Spotler contact was anonymized
    INACTIVE = "inactive"  # the record is inactive (or a closed lead) and is not synced
    NO_VALID_EMAIL = "no_valid_email"  # no e-mail address, or one that is not valid
    OPTED_OUT_IN_SPOTLER = "opted_out_in_spotler"  # the person opted out in Spotler; we do not write
    EXCLUDED_BY_FILTER = "excluded_by_filter"  # a mapping filter excludes the record
    SUPPRESSED = "suppressed"  # a suppression tombstone blocks re-creating or re-subscribing the person
    CONFLICT_RESOLVED = "conflict_resolved"  # both sides changed a two-way field; the configured winner won
    TRANSIENT_ERROR = "transient_error"  # Spotler or Dataverse failed temporarily; will be retried
    PERMANENT_ERROR = "permanent_error"  # the remote rejected the change; needs attention, no retry
    CONFIGURATION_ERROR = "configuration_error"  # the mapping does not fit Spotler or Dataverse; sync paused
    PAUSED_BY_GUARD = "paused_by_guard"  # the mass-change guard held the change back; nothing was written

    @property
    def is_error(self) -> bool:
        return self in (ReasonCode.TRANSIENT_ERROR, ReasonCode.PERMANENT_ERROR, ReasonCode.CONFIGURATION_ERROR)

    @property
    def is_held(self) -> bool:
        """True when the connector held the change back on purpose (it is applied once released)."""
        return self is ReasonCode.PAUSED_BY_GUARD

    @property
    def option_value(self) -> int:
        """The option value of this code in the Dataverse status choice column (stable; never renumber)."""
        return REASON_OPTION_VALUES[self]

    @property
    def is_synced(self) -> bool:
        """True when the record's Spotler contact reflects it (or it was deliberately anonymized)."""
        return self in (
            ReasonCode.SYNCED,
            ReasonCode.CREATED,
            ReasonCode.UPDATED,
            ReasonCode.ANONYMIZED,
            ReasonCode.CONFLICT_RESOLVED,
        )


# Option values of the Dataverse "Spotler status" choice column. Append new codes; never change a number.
REASON_OPTION_VALUES: dict[ReasonCode, int] = {
    ReasonCode.SYNCED: 910_000_000,
    ReasonCode.CREATED: 910_000_001,
    ReasonCode.UPDATED: 910_000_002,
    ReasonCode.ANONYMIZED: 910_000_003,
    ReasonCode.INACTIVE: 910_000_004,
    ReasonCode.NO_VALID_EMAIL: 910_000_005,
    ReasonCode.OPTED_OUT_IN_SPOTLER: 910_000_006,
    ReasonCode.EXCLUDED_BY_FILTER: 910_000_007,
    ReasonCode.SUPPRESSED: 910_000_008,
    ReasonCode.CONFLICT_RESOLVED: 910_000_009,
    ReasonCode.TRANSIENT_ERROR: 910_000_010,
    ReasonCode.PERMANENT_ERROR: 910_000_011,
    ReasonCode.CONFIGURATION_ERROR: 910_000_012,
    ReasonCode.PAUSED_BY_GUARD: 910_000_013,
}


def reason_from_option(value: object) -> ReasonCode | None:
    """The reason code a status choice column's option value stands for (None for anything else)."""
    for code, option in REASON_OPTION_VALUES.items():
        if option == value:
            return code
    return None
