"""What the connector remembers between runs: links, suppressions, watermarks, history, dead letters.

Each record carries the storage `etag` it was read with; stores use it for optimistic concurrency, so two
workers that meet on one record cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sync_core.domain.feed import PagingMode
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import EntityName


@dataclass(frozen=True, slots=True)
class LinkState:
    """The pairing of one Dataverse row with one Spotler contact, and what both sides last agreed on.

    `base` maps a field key (a Spotler property name, or `permission:<bit>`) to the keyed hash of the
    canonical value both sides held after the last successful sync: the base of the three-way merge and
    the reference for echo suppression. `in_scope` says whether the record still speaks for a live, consenting
    person: a shared Spotler contact is kept while one of its records does, and given up when the last one leaves.
    `unsubscribed` is set when leaving the sync turned the person's permission bits off; only a new, explicit
    opt-in from Dynamics turns them on again.
    """

    entity: EntityName
    record_id: str
    external_id: str
    email_hash: str | None = None
    dv_version: int | None = None
    dv_modified_on: datetime | None = None
    spotler_last_changed: datetime | None = None
    base: Mapping[str, str] = field(default_factory=dict)
    anonymized: bool = False
    in_scope: bool = True  # the record qualifies (active, valid address, not excluded, no Do Not Email)
    unsubscribed: bool = False  # its permission bits were turned off when it left the sync; no re-subscription
    reason: ReasonCode | None = None
    detail: str = ""
    last_attempt: datetime | None = None
    failures: int = 0
    next_retry: datetime | None = None
    # The change (its idempotency key) whose failed attempt left the transient error `reason` holds.
    failed_change: str | None = None
    etag: str | None = None


class SuppressionCause(StrEnum):
    ANONYMIZED = "anonymized"
    OPTED_OUT = "opted_out"


@dataclass(frozen=True, slots=True)
class Suppression:
    """A tombstone: this person (by keyed e-mail hash) must not be re-created or re-subscribed."""

    email_hash: str
    cause: SuppressionCause
    entity: EntityName
    record_id: str
    created_on: datetime
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Watermark:
    """Cursor of the Spotler pull.

    `value` is the newest Spotler change fully applied. While a run is in progress, `run_to` fixes the end
    of its window and `run_from`/`run_after`/`run_mode`/`run_last_id` are the feed cursor of the first page not yet
    applied (see `sync_core.domain.feed`), so a run that is cut off resumes where it stopped. `run_started` is the
    run's lease: set while a run holds it, cleared when a run stops early or fails.
    """

    name: str
    value: datetime | None = None
    run_from: datetime | None = None
    run_to: datetime | None = None
    run_after: int = 0
    run_high: datetime | None = None
    run_id: str = ""
    run_started: datetime | None = None
    run_mode: PagingMode = "timestamp"
    run_last_id: str | None = None
    etag: str | None = None

    @property
    def in_progress(self) -> bool:
        return self.run_from is not None and self.run_to is not None


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """One outcome in a record's history (the newest is the record's current Spotler status)."""

    entity: EntityName
    record_id: str
    at: datetime
    reason: ReasonCode
    action: str
    detail: str = ""
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that kept failing: kept with its error so that it is visible and replayable."""

    entity: EntityName
    event_id: str
    event: Mapping[str, Any]
    error_class: str
    message: str
    attempts: int
    replays: int
    first_failed: datetime
    last_failed: datetime
    next_retry: datetime | None = None
    etag: str | None = None
