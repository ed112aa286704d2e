"""The ports the services talk to. Each has a real adapter and an honest in-memory fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sync_core.domain.records import (
    AttrValue,
    BulkItemResult,
    DataverseRow,
    EntityName,
    RowUpdate,
    RowUpdateResult,
    SpotlerContact,
    SpotlerProperty,
    UpdatesPage,
)
from sync_core.domain.state_model import DeadLetter, LinkState, StatusEntry, Suppression, Watermark


class SpotlerGateway(Protocol):
    """Spotler Mail+ contact operations (REST API, OAuth 1.0a two-legged)."""

    async def list_properties(self) -> list[SpotlerProperty]: ...

    async def get_contact(self, external_id: str) -> SpotlerContact | None:
        """The contact, or None when Spotler answers 404."""
        ...

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        """POST /contact; with update=True an upsert by externalId."""
        ...

    async def insert_contacts(
        self, contacts: Sequence[SpotlerContact], *, update: bool, purge: bool
    ) -> list[BulkItemResult]:
        """POST /contact/list, at most 100 contacts; per-item results."""
        ...

    async def update_contact(self, contact: SpotlerContact, *, purge: bool) -> None:
        """PUT /contact/{externalId}; NotFoundError when it does not exist."""
        ...

    async def anonymize_contact(self, external_id: str) -> None: ...

    async def get_updates_page(
        self, *, from_date: datetime, to_date: datetime, after: int, page_size: int
    ) -> UpdatesPage:
        """One page of GET /contact/updates/list for [from_date, to_date)."""
        ...

    async def search_by_email(self, email: str, *, page_size: int = 10) -> list[SpotlerContact]: ...

    async def aclose(self) -> None: ...


class DataverseGateway(Protocol):
    """Dataverse Web API operations on contact, lead and account rows."""

    async def get_row(self, entity: EntityName, record_id: str, columns: Sequence[str]) -> DataverseRow | None:
        """The row with `columns` selected, or None when it does not exist."""
        ...

    async def get_rows(
        self, entity: EntityName, record_ids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, DataverseRow]:
        """The rows that exist among `record_ids` (keyed by lower-case id), read in as few requests as possible."""
        ...

    def iter_pages(
        self,
        entity: EntityName,
        columns: Sequence[str],
        *,
        filter_expr: str | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[DataverseRow]]:
        """Rows page by page, following @odata.nextLink."""
        ...

    async def update_row(
        self, entity: EntityName, record_id: str, changes: Mapping[str, AttrValue], *, etag: str | None = None
    ) -> None:
        """PATCH update-only (If-Match: etag, or * when none): never creates a row."""
        ...

    async def update_rows(self, updates: Sequence[RowUpdate]) -> list[RowUpdateResult]:
        """Several updates in one $batch, each in its own change set; results in the same order."""
        ...

    async def aclose(self) -> None: ...


class ConcurrencyConflict(Exception):
    """A conditional write lost: the stored row changed (or appeared) since it was read."""


@dataclass(frozen=True, slots=True)
class RecordClaim:
    """A record lease taken for one change, with what the record has seen; `token` None: a duplicate."""

    token: str | None
    done: tuple[str, ...] = ()
    version: int | None = None
    modified_on: datetime | None = None

    @property
    def duplicate(self) -> bool:
        return self.token is None


class StateStore(Protocol):
    """Links, suppressions, watermarks, status history, dead letters and delivery claims."""

    async def ensure_ready(self) -> None:
        """Create the tables if they do not exist (idempotent)."""
        ...

    async def get_link(self, entity: EntityName, record_id: str) -> LinkState | None: ...

    async def links_for_external_id(
        self, external_id: str, *, exclude: tuple[EntityName, str] | None = None
    ) -> list[LinkState]:
        """Every link whose Spotler contact is `external_id` (usually one); `exclude` names a link left out."""
        ...

    async def links_for_email_hash(self, email_hash: str) -> list[LinkState]:
        """Every link whose last synced e-mail has this keyed hash."""
        ...

    async def save_link(self, link: LinkState) -> LinkState:
        """Insert (etag None) or replace if unchanged (etag set); ConcurrencyConflict otherwise.

        Returns the link with its new etag and keeps the external-id and e-mail-hash lookups current.
        """
        ...

    async def get_suppression(self, email_hash: str) -> Suppression | None: ...

    async def put_suppression(self, suppression: Suppression) -> None: ...

    async def delete_suppression(self, email_hash: str) -> None: ...

    async def get_watermark(self, name: str) -> Watermark | None: ...

    async def save_watermark(self, watermark: Watermark) -> Watermark:
        """Insert (etag None) or replace if unchanged; ConcurrencyConflict otherwise."""
        ...

    async def append_status(self, entry: StatusEntry, *, keep: int = 20) -> None:
        """Add an outcome to the record's history, keeping only the newest `keep`."""
        ...

    async def list_status(self, entity: EntityName, record_id: str, *, limit: int = 20) -> list[StatusEntry]:
        """The record's history, newest first."""
        ...

    async def put_dead_letter(self, dead_letter: DeadLetter) -> None: ...

    async def get_dead_letter(self, entity: EntityName, event_id: str) -> DeadLetter | None: ...

    async def delete_dead_letter(self, entity: EntityName, event_id: str) -> None: ...

    async def list_dead_letters(self, *, due_before: datetime | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first; with `due_before`, only those whose next_retry is due."""
        ...

    async def acquire_lease(
        self, name: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> str | None:
        """Hold the lease `name` until `now + ttl` when it is free, expired or already held by `owner`.

        Returns the lease's token (None when another owner holds it); taking it again gives a new token.
        `existing` says the row is likely there already (a record's lease row stays once given back): it is read
        first instead of inserted first. A lease row that is taken keeps its other properties.
        """
        ...

    async def release_lease(self, name: str, token: str) -> None:
        """Give the lease up if it is still the one `token` was handed out for (else leave it)."""
        ...

    async def claim_record(
        self, name: str, key: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> RecordClaim | None:
        """Take the record lease `name` to apply the change `key`: the claim and the lease in one write.

        None while another owner holds the lease for another change; a claim without a token (nothing written)
        when `key` was completed already or another live holder is applying it. Taking it from an expired or free
        holder keeps what the row has seen (completed keys, the newest Dataverse version). `existing` as for
        `acquire_lease`.
        """
        ...

    async def free_record(
        self,
        name: str,
        token: str,
        *,
        done: tuple[str, ...] | None = None,
        version: int | None = None,
        modified_on: datetime | None = None,
    ) -> None:
        """Give a record lease back in one write, under `token` (else leave it): with `done`, the keys completed on
        the record (newest last); with `version` / `modified_on`, the newest Dataverse change seen."""
        ...

    async def aclose(self) -> None: ...
