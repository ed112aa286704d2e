"""An in-memory `StateStore` with the same semantics as the Table Storage one.

Rows are kept in the same serialized form as in Table Storage (via `codec`), so the fake accepts and
rejects the same input, round-trips records the same way and enforces the same etag rules. Etags are
incrementing strings.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sync_core.domain.ports import ConcurrencyConflict, RecordClaim
from sync_core.domain.records import EntityName
from sync_core.domain.state_model import DeadLetter, LinkState, StatusEntry, Suppression, Watermark
from sync_core.state import codec

_Key = tuple[str, str]


@dataclasses.dataclass
class _Row:
    props: dict[str, Any]
    etag: str


class _Table:
    """A partitioned key-value table with per-row etags."""

    def __init__(self, etags: itertools.count[int]) -> None:
        self._rows: dict[_Key, _Row] = {}
        self._etags = etags

    def _next_etag(self) -> str:
        return str(next(self._etags))

    def get(self, partition: str, row: str) -> _Row | None:
        found = self._rows.get((partition, row))
        return None if found is None else _Row(dict(found.props), found.etag)

    def create(self, partition: str, row: str, props: Mapping[str, Any]) -> str | None:
        """Insert; the new etag, or None when the row exists."""
        if (partition, row) in self._rows:
            return None
        etag = self._next_etag()
        self._rows[(partition, row)] = _Row(dict(props), etag)
        return etag

    def replace_if(self, partition: str, row: str, props: Mapping[str, Any], etag: str) -> str | None:
        """Replace if the row still has `etag`; the new etag, or None when it changed or is gone."""
        current = self._rows.get((partition, row))
        if current is None or current.etag != etag:
            return None
        new_etag = self._next_etag()
        self._rows[(partition, row)] = _Row(dict(props), new_etag)
        return new_etag

    def upsert(self, partition: str, row: str, props: Mapping[str, Any]) -> str:
        etag = self._next_etag()
        self._rows[(partition, row)] = _Row(dict(props), etag)
        return etag

    def delete(self, partition: str, row: str) -> None:
        self._rows.pop((partition, row), None)

    def delete_if(self, partition: str, row: str, etag: str) -> None:
        """Delete if the row still has `etag`."""
        current = self._rows.get((partition, row))
        if current is not None and current.etag == etag:
            del self._rows[(partition, row)]

    def partition(self, partition: str) -> list[tuple[str, _Row]]:
        """The partition's rows in row-key order."""
        return sorted(
            ((row, _Row(dict(value.props), value.etag)) for (p, row), value in self._rows.items() if p == partition),
            key=lambda pair: pair[0],
        )

    def rows(self) -> list[_Row]:
        return [_Row(dict(value.props), value.etag) for value in self._rows.values()]


class InMemoryStateStore:
    """`StateStore` in dicts; same keys, same etag rules, same index, trimming and claim semantics."""

    def __init__(self) -> None:
        etags = itertools.count(1)
        self._links = _Table(etags)
        self._index = _Table(etags)
        self._watermarks = _Table(etags)
        self._status = _Table(etags)
        self._deadletters = _Table(etags)
        self._suppressions = _Table(etags)
        self._deliveries = _Table(etags)
        self.closed = False

    async def ensure_ready(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ links

    async def get_link(self, entity: EntityName, record_id: str) -> LinkState | None:
        return self._read_link(entity, record_id)

    def _read_link(self, entity: EntityName, record_id: str) -> LinkState | None:
        row = self._links.get(entity, codec.safe_key(record_id))
        return None if row is None else codec.link_from_props(row.props, row.etag)

    async def links_for_external_id(
        self, external_id: str, *, exclude: tuple[EntityName, str] | None = None
    ) -> list[LinkState]:
        if not external_id:
            return []
        links = [
            link
            for link in self._links_from_index(codec.index_partition_for_external_id(external_id))
            if (link.entity, link.record_id) != exclude
        ]
        return [link for link in links if codec.link_matches_external_id(link, external_id)]

    async def links_for_email_hash(self, email_hash: str) -> list[LinkState]:
        if not email_hash:
            return []
        links = self._links_from_index(codec.index_partition_for_email_hash(email_hash))
        return [link for link in links if codec.link_matches_email_hash(link, email_hash)]

    def _links_from_index(self, partition: str) -> list[LinkState]:
        links: list[LinkState] = []
        for _, row in self._index.partition(partition):
            entity, record_id = codec.index_target(row.props)
            link = self._read_link(entity, record_id)
            if link is not None:
                links.append(link)
        links.sort(key=lambda link: (link.entity, link.record_id))
        return links

    async def save_link(self, link: LinkState) -> LinkState:
        props = codec.link_to_props(link)
        row_key = codec.safe_key(link.record_id)
        what = f"link {link.entity}/{link.record_id}"
        old_partitions: set[str] = set()
        if link.etag is None:
            if self._links.get(link.entity, row_key) is not None:
                raise ConcurrencyConflict(f"{what} already exists")
        else:
            current = self._links.get(link.entity, row_key)
            if current is None or current.etag != link.etag:
                raise ConcurrencyConflict(f"{what} changed since it was read")
            old_partitions = codec.link_index_partitions(codec.link_from_props(current.props, None))
        new_partitions = codec.link_index_partitions(link)
        index_row = codec.index_row_key(link.entity, link.record_id)
        for partition in new_partitions - old_partitions:
            self._index.upsert(partition, index_row, codec.index_to_props(link))
        if link.etag is None:
            etag = self._links.create(link.entity, row_key, props)
        else:
            etag = self._links.replace_if(link.entity, row_key, props, link.etag)
        assert etag is not None  # checked above, and nothing awaits in between
        for partition in old_partitions - new_partitions:
            self._index.delete(partition, index_row)
        return dataclasses.replace(link, etag=etag)

    # ------------------------------------------------------------------------------------------ suppressions

    async def get_suppression(self, email_hash: str) -> Suppression | None:
        row = self._suppressions.get(*codec.suppression_keys(email_hash))
        return None if row is None else codec.suppression_from_props(row.props, row.etag)

    async def put_suppression(self, suppression: Suppression) -> None:
        partition, row = codec.suppression_keys(suppression.email_hash)
        self._suppressions.upsert(partition, row, codec.suppression_to_props(suppression))

    async def delete_suppression(self, email_hash: str) -> None:
        self._suppressions.delete(*codec.suppression_keys(email_hash))

    # ------------------------------------------------------------------------------------------ watermarks

    async def get_watermark(self, name: str) -> Watermark | None:
        row = self._watermarks.get(codec.WATERMARK_PARTITION, codec.safe_key(name))
        return None if row is None else codec.watermark_from_props(row.props, row.etag)

    async def save_watermark(self, watermark: Watermark) -> Watermark:
        props = codec.watermark_to_props(watermark)
        row = codec.safe_key(watermark.name)
        if watermark.etag is None:
            etag = self._watermarks.create(codec.WATERMARK_PARTITION, row, props)
            if etag is None:
                raise ConcurrencyConflict(f"watermark {watermark.name} already exists")
        else:
            etag = self._watermarks.replace_if(codec.WATERMARK_PARTITION, row, props, watermark.etag)
            if etag is None:
                raise ConcurrencyConflict(f"watermark {watermark.name} changed since it was read")
        return dataclasses.replace(watermark, etag=etag)

    # ------------------------------------------------------------------------------------------ status

    async def append_status(self, entry: StatusEntry, *, keep: int = 20) -> None:
        partition = codec.status_partition(entry.entity, entry.record_id)
        props = codec.status_to_props(entry)
        self._status.create(partition, codec.status_row_key(entry.at), props)
        for row, _ in self._status.partition(partition)[max(keep, 0) :]:
            self._status.delete(partition, row)

    async def list_status(self, entity: EntityName, record_id: str, *, limit: int = 20) -> list[StatusEntry]:
        if limit <= 0:
            return []
        rows = self._status.partition(codec.status_partition(entity, record_id))[:limit]
        return [codec.status_from_props(row.props) for _, row in rows]

    # ------------------------------------------------------------------------------------------ dead letters

    async def put_dead_letter(self, dead_letter: DeadLetter) -> None:
        props = codec.dead_letter_to_props(dead_letter)
        self._deadletters.upsert(dead_letter.entity, codec.safe_key(dead_letter.event_id), props)

    async def get_dead_letter(self, entity: EntityName, event_id: str) -> DeadLetter | None:
        row = self._deadletters.get(entity, codec.safe_key(event_id))
        return None if row is None else codec.dead_letter_from_props(row.props, row.etag)

    async def delete_dead_letter(self, entity: EntityName, event_id: str) -> None:
        self._deadletters.delete(entity, codec.safe_key(event_id))

    async def list_dead_letters(self, *, due_before: datetime | None = None, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        due = None if due_before is None else codec.utc(due_before, "due_before")
        letters = [codec.dead_letter_from_props(row.props, row.etag) for row in self._deadletters.rows()]
        if due is not None:
            letters = [dl for dl in letters if dl.next_retry is not None and dl.next_retry <= due]
        letters.sort(key=codec.dead_letter_order)
        return letters[:limit]

    # ------------------------------------------------------------------------------------------ deliveries

    # ------------------------------------------------------------------------------------------ leases

    async def acquire_lease(
        self, name: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> str | None:
        row = codec.safe_key(name)
        props = codec.lease_props(name, owner, now + ttl)
        current = self._deliveries.get(codec.LEASE_PARTITION, row)
        if current is None:
            return self._deliveries.create(codec.LEASE_PARTITION, row, props)
        if not codec.lease_is_free(current.props, owner, now):
            return None
        # Merged: a record's lease row keeps what it has seen; a change claimed by another holder is not ours.
        taken = props if current.props.get("owner") == owner else {**props, "claimed": ""}
        return self._deliveries.replace_if(codec.LEASE_PARTITION, row, {**current.props, **taken}, current.etag)

    async def claim_record(
        self, name: str, key: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> RecordClaim | None:
        row_key = codec.safe_key(name)
        props = codec.record_claim_props(name, owner, now + ttl, key)
        current = self._deliveries.get(codec.LEASE_PARTITION, row_key)
        if current is None:
            etag = self._deliveries.create(codec.LEASE_PARTITION, row_key, props)
            return None if etag is None else RecordClaim(etag)
        row = codec.record_row(current.props)
        if codec.record_is_duplicate(row, key, owner, now):
            return RecordClaim(None, row.done, row.version, row.modified_on)
        if not codec.lease_is_free(current.props, owner, now):
            return None
        etag = self._deliveries.replace_if(codec.LEASE_PARTITION, row_key, {**current.props, **props}, current.etag)
        return None if etag is None else RecordClaim(etag, row.done, row.version, row.modified_on)

    async def free_record(
        self,
        name: str,
        token: str,
        *,
        done: tuple[str, ...] | None = None,
        version: int | None = None,
        modified_on: datetime | None = None,
    ) -> None:
        row_key = codec.safe_key(name)
        current = self._deliveries.get(codec.LEASE_PARTITION, row_key)
        if current is None or current.etag != token:
            return
        props = codec.record_free_props(done, version, modified_on)
        self._deliveries.replace_if(codec.LEASE_PARTITION, row_key, {**current.props, **props}, token)

    async def release_lease(self, name: str, token: str) -> None:
        self._deliveries.delete_if(codec.LEASE_PARTITION, codec.safe_key(name), token)
