"""The state store on Azure Table Storage (async SDK).

Tables (all named `{prefix}<name>`):

| table        | PartitionKey                         | RowKey                         |
|--------------|--------------------------------------|--------------------------------|
| links        | entity                               | record id                      |
| index        | `x|<external id>` or `e|<email hash>` | `<entity>|<record id>`         |
| watermarks   | `spotler`                            | watermark name                 |
| status       | `<entity>|<record id>`               | inverted time (newest first)   |
| deadletters  | entity                               | event id                       |
| suppressions | first two characters of the hash     | e-mail hash                    |
| deliveries   | first two characters of the key      | idempotency key                |

Key values that Table Storage does not allow are replaced by a stable hash (see `codec.safe_key`); the
original values are always kept as properties. The index table is a hint: lookups re-read the link row
and keep only links that still match.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Self

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableEntity, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from sync_core.domain.ports import ConcurrencyConflict, RecordClaim
from sync_core.domain.records import EntityName
from sync_core.domain.state_model import DeadLetter, LinkState, StatusEntry, Suppression, Watermark
from sync_core.state import codec
from sync_core.state.bounds import table_client_options

logger = logging.getLogger(__name__)

_READ_LINKS_KEPT = 4096
"""Links whose index partitions are remembered from their last read (by ETag), to save a re-read before a save."""

TABLE_SUFFIXES = ("links", "index", "watermarks", "status", "deadletters", "suppressions", "deliveries")
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_MAX_TABLE_NAME = 63
Takeover = Literal["take", "keep", "refuse"]


def _validate_prefix(prefix: str) -> str:
    longest = max(len(suffix) for suffix in TABLE_SUFFIXES)
    if not _PREFIX_RE.match(prefix) or len(prefix) + longest > _MAX_TABLE_NAME:
        raise ValueError(
            "table prefix must start with a letter, hold only letters and digits and be at most "
            f"{_MAX_TABLE_NAME - longest} characters"
        )
    return prefix


def _to_entity(partition: str, row: str, props: Mapping[str, Any]) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for name, value in props.items():
        if isinstance(value, int) and not isinstance(value, bool):
            entity[name] = EntityProperty(value, EdmType.INT64)
        else:
            entity[name] = value
    return entity


def _props(entity: TableEntity) -> dict[str, Any]:
    return {name: value for name, value in entity.items() if name not in ("PartitionKey", "RowKey")}


def _etag(entity: TableEntity) -> str | None:
    etag = entity.metadata.get("etag")
    return None if etag is None else str(etag)


def _result_etag(result: Mapping[str, Any]) -> str:
    return str(result["etag"])


_STATUS_COUNTS_KEPT = 4096
"""Status partitions whose number of entries this process knows (it listed them, then added to them)."""
_RECORDS_KEPT = 4096
"""Record lease rows remembered as this process last wrote them (by ETag), to claim them in one write."""


def _record_is_free(row: codec.RecordRow, owner: str, now: datetime) -> bool:
    return row.owner in ("", owner) or row.expires is None or row.expires <= codec.utc(now, "now")


def _record_props(row: codec.RecordRow) -> dict[str, Any]:
    """A remembered record row as the properties it was read from (enough to merge a write into it)."""
    props = codec.record_free_props(row.done, row.version, row.modified_on)
    props.update(owner=row.owner, claimed=row.claimed)
    if row.expires is not None:
        props["expires"] = row.expires
    return props


class TableStateStore:
    """`StateStore` on Azure Table Storage; see the module docstring for the layout."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "sync") -> None:
        self._service = service
        self._prefix = _validate_prefix(prefix)
        self._read_links: dict[tuple[str, str], tuple[str, set[str]]] = {}
        self._records: dict[str, tuple[str, codec.RecordRow]] = {}
        self._status_counts: dict[str, int] = {}
        self._links = self._table("links")
        self._index = self._table("index")
        self._watermarks = self._table("watermarks")
        self._status = self._table("status")
        self._deadletters = self._table("deadletters")
        self._suppressions = self._table("suppressions")
        self._deliveries = self._table("deliveries")
        self._clients = (
            self._links,
            self._index,
            self._watermarks,
            self._status,
            self._deadletters,
            self._suppressions,
            self._deliveries,
        )
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "sync") -> TableStateStore:
        return cls(TableServiceClient.from_connection_string(conn, **table_client_options()), prefix=prefix)

    @classmethod
    def from_account(
        cls,
        account_name: str,
        credential: AsyncTokenCredential,
        *,
        prefix: str = "sync",
        endpoint_suffix: str = "core.windows.net",
    ) -> TableStateStore:
        endpoint = f"https://{account_name}.table.{endpoint_suffix}"
        return cls(
            TableServiceClient(endpoint=endpoint, credential=credential, **table_client_options()), prefix=prefix
        )

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(f"{self._prefix}{suffix}" for suffix in TABLE_SUFFIXES)

    def _table(self, suffix: str) -> TableClient:
        return self._service.get_table_client(f"{self._prefix}{suffix}")

    # ------------------------------------------------------------------------------------------ lifecycle

    async def ensure_ready(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            await asyncio.gather(*(self._service.create_table_if_not_exists(n) for n in self.table_names))
            self._ready = True

    async def _ensure(self) -> None:
        if not self._ready:
            await self.ensure_ready()

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()
        await self._service.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ helpers

    @staticmethod
    async def _get(table: TableClient, partition: str, row: str) -> TableEntity | None:
        try:
            return await table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    @staticmethod
    async def _insert_or_replace(table: TableClient, entity: dict[str, Any], etag: str | None, what: str) -> str:
        """Create (etag None) or replace-if-unchanged; the new etag, or ConcurrencyConflict."""
        try:
            if etag is None:
                result = await table.create_entity(entity)
            else:
                result = await table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except ResourceExistsError:
            raise ConcurrencyConflict(f"{what} already exists") from None
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ConcurrencyConflict(f"{what} changed since it was read") from None
        return _result_etag(result)

    # ------------------------------------------------------------------------------------------ links

    async def get_link(self, entity: EntityName, record_id: str) -> LinkState | None:
        await self._ensure()
        row = await self._get(self._links, entity, codec.safe_key(record_id))
        if row is None:
            return None
        link = codec.link_from_props(_props(row), _etag(row))
        self._remember_read(link)
        return link

    def _remember_read(self, link: LinkState) -> None:
        """The index partitions of the link version with this ETag: a save guarded by it needs no re-read."""
        if link.etag is None:
            return
        if len(self._read_links) >= _READ_LINKS_KEPT:
            self._read_links.pop(next(iter(self._read_links)))
        self._read_links[(link.entity, link.record_id)] = (link.etag, codec.link_index_partitions(link))

    async def links_for_external_id(
        self, external_id: str, *, exclude: tuple[EntityName, str] | None = None
    ) -> list[LinkState]:
        if not external_id:
            return []
        links = await self._links_from_index(codec.index_partition_for_external_id(external_id), exclude)
        return [link for link in links if codec.link_matches_external_id(link, external_id)]

    async def links_for_email_hash(self, email_hash: str) -> list[LinkState]:
        if not email_hash:
            return []
        links = await self._links_from_index(codec.index_partition_for_email_hash(email_hash))
        return [link for link in links if codec.link_matches_email_hash(link, email_hash)]

    async def _links_from_index(self, partition: str, exclude: tuple[EntityName, str] | None = None) -> list[LinkState]:
        await self._ensure()
        targets: list[tuple[EntityName, str]] = []
        async for row in self._index.query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition}, select=["entity", "record_id"]
        ):
            target = codec.index_target(row)
            if target != exclude:  # the caller has that link already: not read again
                targets.append(target)
        found = await asyncio.gather(*(self.get_link(entity, record_id) for entity, record_id in targets))
        links = [link for link in found if link is not None]
        links.sort(key=lambda link: (link.entity, link.record_id))
        return links

    async def save_link(self, link: LinkState) -> LinkState:
        await self._ensure()
        props = codec.link_to_props(link)
        row_key = codec.safe_key(link.record_id)
        old_partitions: set[str] = set()
        read = self._read_links.pop((link.entity, link.record_id), None)
        if link.etag is not None and read is not None and read[0] == link.etag:
            # Read by this process at this very ETag: the replace below is guarded by it, so a change since
            # then is still a ConcurrencyConflict, without reading the row again.
            old_partitions = set(read[1])
        elif link.etag is not None:
            current = await self._get(self._links, link.entity, row_key)
            if current is None or _etag(current) != link.etag:
                raise ConcurrencyConflict(f"link {link.entity}/{link.record_id} changed since it was read")
            old_partitions = codec.link_index_partitions(codec.link_from_props(_props(current), None))
        added = codec.link_index_partitions(link) - old_partitions
        removed = old_partitions - codec.link_index_partitions(link)
        # Index entries are written before the link, so that a committed link is always findable, and
        # again after a replace, so that a concurrent removal of the same entry (by a writer that moved the
        # link away from it a moment earlier) cannot leave the new link unindexed. A new link needs no
        # second write: links are never deleted, so an insert that succeeds had no earlier version that
        # another writer could be moving away from. Entries that turn out stale after a lost race are
        # filtered out on read.
        await self._put_index(link, added)
        etag = await self._insert_or_replace(
            self._links,
            _to_entity(link.entity, row_key, props),
            link.etag,
            f"link {link.entity}/{link.record_id}",
        )
        if link.etag is not None:
            await self._put_index(link, added)
        await asyncio.gather(*(self._drop_index(p, link.entity, link.record_id) for p in removed))
        saved = dataclasses.replace(link, etag=etag)
        self._remember_read(saved)
        return saved

    async def _put_index(self, link: LinkState, partitions: set[str]) -> None:
        row = codec.index_row_key(link.entity, link.record_id)
        props = codec.index_to_props(link)
        await asyncio.gather(
            *(self._index.upsert_entity(_to_entity(p, row, props), mode=UpdateMode.REPLACE) for p in partitions)
        )

    async def _drop_index(self, partition: str, entity: EntityName, record_id: str) -> None:
        """Delete a stale index entry, unless it was rewritten or the link points back at it meanwhile."""
        row = codec.index_row_key(entity, record_id)
        current = await self._get(self._index, partition, row)
        if current is None:
            return
        link = await self.get_link(entity, record_id)
        if link is not None and partition in codec.link_index_partitions(link):
            return
        try:
            await self._index.delete_entity(
                partition, row, etag=_etag(current), match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            return

    # ------------------------------------------------------------------------------------------ suppressions

    async def get_suppression(self, email_hash: str) -> Suppression | None:
        await self._ensure()
        row = await self._get(self._suppressions, *codec.suppression_keys(email_hash))
        return None if row is None else codec.suppression_from_props(_props(row), _etag(row))

    async def put_suppression(self, suppression: Suppression) -> None:
        await self._ensure()
        partition, row = codec.suppression_keys(suppression.email_hash)
        entity = _to_entity(partition, row, codec.suppression_to_props(suppression))
        await self._suppressions.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def delete_suppression(self, email_hash: str) -> None:
        await self._ensure()
        await self._suppressions.delete_entity(*codec.suppression_keys(email_hash))

    # ------------------------------------------------------------------------------------------ watermarks

    async def get_watermark(self, name: str) -> Watermark | None:
        await self._ensure()
        row = await self._get(self._watermarks, codec.WATERMARK_PARTITION, codec.safe_key(name))
        return None if row is None else codec.watermark_from_props(_props(row), _etag(row))

    async def save_watermark(self, watermark: Watermark) -> Watermark:
        await self._ensure()
        entity = _to_entity(
            codec.WATERMARK_PARTITION, codec.safe_key(watermark.name), codec.watermark_to_props(watermark)
        )
        etag = await self._insert_or_replace(self._watermarks, entity, watermark.etag, f"watermark {watermark.name}")
        return dataclasses.replace(watermark, etag=etag)

    # ------------------------------------------------------------------------------------------ status

    async def append_status(self, entry: StatusEntry, *, keep: int = 20) -> None:
        await self._ensure()
        partition = codec.status_partition(entry.entity, entry.record_id)
        entity = _to_entity(partition, codec.status_row_key(entry.at), codec.status_to_props(entry))
        await self._status.create_entity(entity)
        counted = self._status_counts.pop(partition, None)
        if counted is not None and counted < keep:
            # The partition held `counted` entries when this process last listed it, and this process added the
            # rest: no listing until it may hold more than `keep`. Entries other instances added meanwhile are
            # trimmed at that listing (and `list_status` shows the newest `limit` whatever the partition holds).
            self._count_status(partition, counted + 1)
            return
        rows = [
            str(row["RowKey"])
            async for row in self._status.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition}, select=["RowKey"]
            )
        ]
        rows.sort()
        await asyncio.gather(*(self._status.delete_entity(partition, row) for row in rows[max(keep, 0) :]))
        self._count_status(partition, min(len(rows), max(keep, 0)))

    def _count_status(self, partition: str, count: int) -> None:
        if len(self._status_counts) >= _STATUS_COUNTS_KEPT:
            self._status_counts.pop(next(iter(self._status_counts)))
        self._status_counts[partition] = count

    async def list_status(self, entity: EntityName, record_id: str, *, limit: int = 20) -> list[StatusEntry]:
        await self._ensure()
        if limit <= 0:
            return []
        partition = codec.status_partition(entity, record_id)
        rows: list[tuple[str, StatusEntry]] = []
        async for row in self._status.query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=min(limit, 1000)
        ):
            rows.append((str(row["RowKey"]), codec.status_from_props(_props(row))))
            if len(rows) >= limit:
                break
        rows.sort(key=lambda pair: pair[0])
        return [entry for _, entry in rows]

    # ------------------------------------------------------------------------------------------ dead letters

    async def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        await self._ensure()
        entity = _to_entity(
            dead_letter.entity, codec.safe_key(dead_letter.event_id), codec.dead_letter_to_props(dead_letter)
        )
        await self._deadletters.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def get_dead_letter(self, entity: EntityName, event_id: str) -> DeadLetter | None:
        await self._ensure()
        row = await self._get(self._deadletters, entity, codec.safe_key(event_id))
        return None if row is None else codec.dead_letter_from_props(_props(row), _etag(row))

    async def delete_dead_letter(self, entity: EntityName, event_id: str) -> None:
        await self._ensure()
        await self._deadletters.delete_entity(entity, codec.safe_key(event_id))

    async def list_dead_letters(self, *, due_before: datetime | None = None, limit: int = 100) -> list[DeadLetter]:
        await self._ensure()
        if limit <= 0:
            return []
        if due_before is None:
            pages = self._deadletters.list_entities()
        else:
            due = codec.utc(due_before, "due_before")
            pages = self._deadletters.query_entities("next_retry le @due", parameters={"due": due})
        letters = [codec.dead_letter_from_props(_props(row), _etag(row)) async for row in pages]
        letters.sort(key=codec.dead_letter_order)
        return letters[:limit]

    # ------------------------------------------------------------------------------------------ deliveries

    async def _insert_or_take(
        self, partition: str, row: str, props: Mapping[str, Any], decide: Callable[[TableEntity], Takeover]
    ) -> str | None:
        """Insert the row, or replace an existing one `decide` says may be taken ("take") or is ours already
        ("keep": left as it is); the row's etag, or None when someone else has it."""
        entity = _to_entity(partition, row, props)
        for _ in range(2):  # once more when the row disappears between our insert and our read
            try:
                return _result_etag(await self._deliveries.create_entity(entity))
            except ResourceExistsError:
                pass
            current = await self._get(self._deliveries, partition, row)
            if current is None:
                continue
            verdict = decide(current)
            if verdict != "take":
                return _etag(current) if verdict == "keep" else None
            try:
                result = await self._deliveries.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=_etag(current), match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                return None
            return _result_etag(result)
        return None

    # ------------------------------------------------------------------------------------------ leases

    async def acquire_lease(
        self, name: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> str | None:
        await self._ensure()
        row = codec.safe_key(name)
        props = codec.lease_props(name, owner, now + ttl)
        known = self._records.get(name)
        if known is not None and _record_is_free(known[1], owner, now):
            # As this process last wrote it: one merge under that ETag (a renewal, or a record given back here).
            token = await self._take_lease(name, row, props, known[0], known[1], owner)
            if token is not None:
                return token
        for attempt in range(2):  # once more when the row disappears between our insert and our read
            if not (existing and attempt == 0):
                try:
                    result = await self._deliveries.create_entity(_to_entity(codec.LEASE_PARTITION, row, props))
                except ResourceExistsError:
                    pass
                else:
                    self._remember_record(name, _result_etag(result), codec.record_row(props))
                    return _result_etag(result)
            current = await self._get(self._deliveries, codec.LEASE_PARTITION, row)
            if current is None:
                continue
            if not codec.lease_is_free(current, owner, now):
                return None
            return await self._take_lease(name, row, props, _etag(current) or "", codec.record_row(current), owner)
        return None

    async def _take_lease(
        self, name: str, row_key: str, props: dict[str, Any], etag: str, row: codec.RecordRow, owner: str
    ) -> str | None:
        # Merged: a record's lease row keeps what it has seen; a change claimed by another holder is not ours.
        taken = props if row.owner == owner else {**props, "claimed": ""}
        try:
            result = await self._deliveries.update_entity(
                _to_entity(codec.LEASE_PARTITION, row_key, taken),
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            self._records.pop(name, None)
            return None
        new_etag = _result_etag(result)
        self._remember_record(name, new_etag, codec.record_row({**_record_props(row), **taken}))
        return new_etag

    # ------------------------------------------------------------------------------------------ record claims

    async def claim_record(
        self, name: str, key: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> RecordClaim | None:
        await self._ensure()
        row_key = codec.safe_key(name)
        props = codec.record_claim_props(name, owner, now + ttl, key)
        known = self._records.get(name)
        if known is not None:
            # The row as this process last wrote it: a merge under that ETag takes it in one write, and fails
            # (then the row is read) if anyone changed it since.
            etag, row = known
            if codec.record_is_duplicate(row, key, owner, now):
                return RecordClaim(None, row.done, row.version, row.modified_on)  # completed keys stay completed
            if _record_is_free(row, owner, now):
                claim = await self._take_record(name, row_key, props, etag, row)
                if claim is not None:
                    return claim
        current = await self._get(self._deliveries, codec.LEASE_PARTITION, row_key) if existing else None
        if current is None:
            try:
                result = await self._deliveries.create_entity(_to_entity(codec.LEASE_PARTITION, row_key, props))
            except ResourceExistsError:
                pass
            else:
                etag = _result_etag(result)
                self._remember_record(name, etag, codec.record_row(props))
                return RecordClaim(etag)
            current = await self._get(self._deliveries, codec.LEASE_PARTITION, row_key)
        if current is None:
            return None  # given back and deleted meanwhile: the caller tries again
        row = codec.record_row(current)
        if codec.record_is_duplicate(row, key, owner, now):
            return RecordClaim(None, row.done, row.version, row.modified_on)
        if not _record_is_free(row, owner, now):
            return None
        return await self._take_record(name, row_key, props, _etag(current) or "", row)

    async def _take_record(
        self, name: str, row_key: str, props: dict[str, Any], etag: str, row: codec.RecordRow
    ) -> RecordClaim | None:
        try:
            result = await self._deliveries.update_entity(
                _to_entity(codec.LEASE_PARTITION, row_key, props),
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            self._records.pop(name, None)
            return None
        new_etag = _result_etag(result)
        taken = codec.record_row({**_record_props(row), **props})
        self._remember_record(name, new_etag, taken)
        return RecordClaim(new_etag, row.done, row.version, row.modified_on)

    async def free_record(
        self,
        name: str,
        token: str,
        *,
        done: tuple[str, ...] | None = None,
        version: int | None = None,
        modified_on: datetime | None = None,
    ) -> None:
        await self._ensure()
        props = codec.record_free_props(done, version, modified_on)
        try:
            result = await self._deliveries.update_entity(
                _to_entity(codec.LEASE_PARTITION, codec.safe_key(name), props),
                mode=UpdateMode.MERGE,
                etag=token,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            self._records.pop(name, None)
            logger.info("record lease changed since it was taken (expired and taken over); left as it is")
            return
        known = self._records.get(name)
        if known is None:
            return
        self._remember_record(name, _result_etag(result), codec.record_row({**_record_props(known[1]), **props}))

    def _remember_record(self, name: str, etag: str, row: codec.RecordRow) -> None:
        if name not in self._records and len(self._records) >= _RECORDS_KEPT:
            self._records.pop(next(iter(self._records)))
        self._records[name] = (etag, row)

    async def release_lease(self, name: str, token: str) -> None:
        await self._ensure()
        self._records.pop(name, None)
        try:
            await self._deliveries.delete_entity(
                codec.LEASE_PARTITION, codec.safe_key(name), etag=token, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            logger.info("lease changed since it was taken (expired and taken over); left as it is")
