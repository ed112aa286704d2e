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

    @property
    def is_error(self) -> bool:
        return self in (ReasonCode.TRANSIENT_ERROR, ReasonCode.PERMANENT_ERROR)

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
