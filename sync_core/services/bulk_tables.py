"""Table Storage of bulk runs: the run document, finished work items, the run's Spotler index and e-mail claims,
and batch writes of links and statuses.

| table       | PartitionKey                    | RowKey             | what                                          |
|-------------|---------------------------------|--------------------|-----------------------------------------------|
| bulkruns    | `run`                           | run id             | the run document (JSON) with its ETag         |
| bulkruns    | `delta`                         | entity             | the change-tracking delta link of reconcile   |
| bulkitems   | `<run>|<phase>`                 | work item id       | a finished work item and its impact           |
| bulkindex   | `<run>|x|<2 chars>`             | Spotler externalId | a snapshot of the Spotler contact             |
| bulkindex   | `<run>|e|<1 hex>`               | e-mail hash        | the externalId holding that e-mail address    |
| bulkindex   | `<run>|<phase>|c|<1 hex>`       | e-mail hash        | the record of the run that took that address |

Links keep their table (`links`, partition = entity) and are written in batch transactions of up to 100; their
lookup index and the status history are written per record, as the state store does.

A work item's rows come from a page that Dataverse orders by primary key, so its records are a contiguous range
of ids: the item reads their links (and the index's snapshots of their contacts, partitioned by the first two
characters of the externalId) with one range query per partition instead of a point read per record
(`read_keys`). A range that holds far more rows than the item needs (rows of a change-tracking page, ordered by
version) is cut short and the rest is read point by point.

Record leases (the state store's `deliveries` table, partition `lease`) are taken and given back for a whole
work item in one batch transaction each (`take_leases`, `give_back_leases`); a batch that meets a held or
stale lease falls back to the state store's per-record acquire, which knows when a lease may be taken over.

Keys by e-mail hash cannot be ranges. Their partitions are coarse (16 per run and kind), so that a work item's
addresses fall into few of them: they are read with one query per partition naming up to `KEYS_PER_QUERY` keys
(`read_many`), and claimed with one batch insert per partition (a batch that meets an address already taken is
claimed record by record).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from sync_core.domain.ports import ConcurrencyConflict, StateStore
from sync_core.domain.records import EntityName, SpotlerContact
from sync_core.domain.state_model import LinkState, StatusEntry, Suppression
from sync_core.state import codec
from sync_core.state.tables import _to_entity

RANGE_SLACK = 4
"""A range query reads at most this many rows per wanted key (plus `RANGE_MIN`) before point reads take over."""
RANGE_MIN = 50
KEYS_PER_QUERY = 12
"""Keys named in one query (Table Storage allows 15 comparisons in a filter; one is the partition)."""

BATCH = 100
RUN_PARTITION = "run"
DELTA_PARTITION = "delta"


def _e_partition(run_id: str, email_h: str) -> str:
    return f"{run_id}|e|{email_h[:1]}"


def _c_partition(run_id: str, phase: str, email_h: str) -> str:
    return f"{run_id}|{phase}|c|{email_h[:1]}"


def _x_partition(run_id: str, external_id: str) -> str:
    """The index partition of a contact: by the leading characters of its key, so that ids close together (a
    work item's range of record ids) share a partition and one range query reads them."""
    return f"{run_id}|x|{codec.safe_key(external_id)[:2]}"


def contact_to_json(contact: SpotlerContact) -> str:
    properties: dict[str, Any] = {}
    for name, value in contact.properties.items():
        properties[name] = {"$set": {str(b): on for b, on in value.items()}} if isinstance(value, dict) else value
    return json.dumps(
        {
            "x": contact.external_id,
            "p": properties,
            "b": {str(b): on for b, on in contact.permissions.items()},
            "c": dict(contact.channels),
            "l": contact.last_changed.isoformat() if contact.last_changed else None,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def contact_from_json(text: str) -> SpotlerContact:
    data = json.loads(text)
    properties: dict[str, Any] = {}
    for name, value in dict(data.get("p", {})).items():
        if isinstance(value, dict) and "$set" in value:
            properties[name] = {int(b): bool(on) for b, on in value["$set"].items()}
        else:
            properties[name] = value
    last = data.get("l")
    return SpotlerContact(
        external_id=str(data["x"]),
        properties=properties,
        permissions={int(b): bool(on) for b, on in dict(data.get("b", {})).items()},
        channels={str(k): bool(v) for k, v in dict(data.get("c", {})).items()},
        last_changed=datetime.fromisoformat(last) if last else None,
    )


class BulkTables:
    """The bulk run tables on Azure Table Storage."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "sync") -> None:
        self._service = service
        self._prefix = prefix
        self.runs = service.get_table_client(f"{prefix}bulkruns")
        self.items = service.get_table_client(f"{prefix}bulkitems")
        self.index = service.get_table_client(f"{prefix}bulkindex")
        self.links = service.get_table_client(f"{prefix}links")
        self.link_index = service.get_table_client(f"{prefix}index")
        self.status = service.get_table_client(f"{prefix}status")
        self.deliveries = service.get_table_client(f"{prefix}deliveries")
        self.suppression_table = service.get_table_client(f"{prefix}suppressions")
        self._ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "sync") -> BulkTables:
        # No proxy settings from the environment: aiohttp would look them up in a thread for every request.
        return cls(TableServiceClient.from_connection_string(conn, use_env_settings=False), prefix=prefix)

    async def ensure_ready(self) -> None:
        async with self._lock:
            if self._ready:
                return
            names = [f"{self._prefix}{s}" for s in ("bulkruns", "bulkitems", "bulkindex")]
            await asyncio.gather(*(self._service.create_table_if_not_exists(n) for n in names))
            self._ready = True

    async def aclose(self) -> None:
        for client in (
            self.runs,
            self.items,
            self.index,
            self.links,
            self.link_index,
            self.status,
            self.deliveries,
            self.suppression_table,
        ):
            await client.close()
        await self._service.close()

    # ------------------------------------------------------------------------------------------ runs

    async def get_run(self, run_id: str) -> tuple[dict[str, Any], str] | None:
        await self.ensure_ready()
        try:
            row = await self.runs.get_entity(RUN_PARTITION, run_id)
        except ResourceNotFoundError:
            return None
        return json.loads(str(row["doc"])), str(row.metadata["etag"])

    async def put_run(self, doc: Mapping[str, Any], etag: str | None) -> str:
        """Create (etag None) or replace the run document if unchanged; ConcurrencyConflict otherwise."""
        await self.ensure_ready()
        entity = {"PartitionKey": RUN_PARTITION, "RowKey": str(doc["id"]), "doc": json.dumps(doc)}
        try:
            if etag is None:
                result = await self.runs.create_entity(entity)
            else:
                result = await self.runs.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            raise ConcurrencyConflict(f"run {doc['id']} changed since it was read") from None
        return str(result["etag"])

    async def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        await self.ensure_ready()
        docs: list[dict[str, Any]] = []
        async for row in self.runs.query_entities("PartitionKey eq @pk", parameters={"pk": RUN_PARTITION}):
            docs.append(json.loads(str(row["doc"])))
        docs.sort(key=lambda d: str(d.get("started", "")), reverse=True)
        return docs[:limit]

    async def get_delta_link(self, entity: EntityName) -> str | None:
        await self.ensure_ready()
        try:
            row = await self.runs.get_entity(DELTA_PARTITION, entity)
        except ResourceNotFoundError:
            return None
        return str(row["link"]) or None

    async def save_delta_link(self, entity: EntityName, link: str) -> None:
        await self.ensure_ready()
        await self.runs.upsert_entity(
            {"PartitionKey": DELTA_PARTITION, "RowKey": entity, "link": link}, mode=UpdateMode.REPLACE
        )

    # ------------------------------------------------------------------------------------------ work items

    async def item_done(self, run_id: str, phase: str, item_id: str) -> bool:
        try:
            await self.items.get_entity(f"{run_id}|{phase}", item_id, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

    async def finish_item(self, run_id: str, phase: str, item_id: str, impact: Mapping[str, Any]) -> None:
        await self.items.upsert_entity(
            {"PartitionKey": f"{run_id}|{phase}", "RowKey": item_id, "impact": json.dumps(impact)},
            mode=UpdateMode.REPLACE,
        )

    async def count_items(self, run_id: str, phase: str) -> int:
        count = 0
        async for _ in self.items.query_entities(
            "PartitionKey eq @pk", parameters={"pk": f"{run_id}|{phase}"}, select=["RowKey"]
        ):
            count += 1
        return count

    async def item_impacts(self, run_id: str, phase: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for row in self.items.query_entities(
            "PartitionKey eq @pk", parameters={"pk": f"{run_id}|{phase}"}, select=["impact"]
        ):
            out.append(json.loads(str(row["impact"])))
        return out

    # ------------------------------------------------------------------------------------------ Spotler index

    async def put_index(self, run_id: str, contacts: Iterable[tuple[SpotlerContact, str | None]]) -> None:
        """Remember contacts (and the keyed hash of their e-mail address) for the run, in batches."""
        groups: dict[str, list[dict[str, Any]]] = {}
        seen: set[tuple[str, str]] = set()
        for contact, email_h in contacts:
            pk = _x_partition(run_id, contact.external_id)
            rk = codec.safe_key(contact.external_id)
            if (pk, rk) not in seen:
                seen.add((pk, rk))
                groups.setdefault(pk, []).append({"PartitionKey": pk, "RowKey": rk, "c": contact_to_json(contact)})
            if email_h is not None:
                epk = _e_partition(run_id, email_h)
                if (epk, email_h) not in seen:
                    seen.add((epk, email_h))
                    groups.setdefault(epk, []).append(
                        {"PartitionKey": epk, "RowKey": email_h, "x": contact.external_id}
                    )
        await asyncio.gather(*(self._upsert_batches(self.index, rows) for rows in groups.values()))

    async def _upsert_batches(self, table: TableClient, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), BATCH):
            ops: list[Any] = [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows[start : start + BATCH]]
            await table.submit_transaction(ops)

    async def indexed_contact(self, run_id: str, external_id: str) -> SpotlerContact | None:
        try:
            row = await self.index.get_entity(_x_partition(run_id, external_id), codec.safe_key(external_id))
        except ResourceNotFoundError:
            return None
        return contact_from_json(str(row["c"]))

    async def indexed_contacts(self, run_id: str, external_ids: Iterable[str]) -> dict[str, SpotlerContact]:
        """The index's snapshots of these contacts (those it holds), by externalId: a range query per partition."""
        by_partition: dict[str, dict[str, str]] = {}
        for external_id in external_ids:
            by_partition.setdefault(_x_partition(run_id, external_id), {})[codec.safe_key(external_id)] = external_id
        reads = await asyncio.gather(*(read_keys(self.index, pk, list(keys)) for pk, keys in by_partition.items()))
        out: dict[str, SpotlerContact] = {}
        for (_, keys), rows in zip(by_partition.items(), reads, strict=True):
            for key, row in rows.items():
                out[keys[key]] = contact_from_json(str(row["c"]))
        return out

    async def links_of(self, entity: EntityName, record_ids: Iterable[str]) -> dict[str, LinkState]:
        """The links of these records (those that have one), by record id, with their ETags: one range query."""
        keys = {codec.safe_key(r): r for r in record_ids}
        rows = await read_keys(self.links, entity, list(keys))
        return {keys[k]: codec.link_from_props(_props(row), str(row.metadata["etag"])) for k, row in rows.items()}

    # ------------------------------------------------------------------------------------------ record leases

    async def take_leases(
        self, state: StateStore, names: Sequence[str], *, owner: str, now: datetime, ttl: timedelta
    ) -> dict[str, str | None]:
        """Take the leases `names` for `owner`: name -> token, or None where another holder has it.

        One batch transaction inserts them all when none exists (the usual case); otherwise each is taken on its
        own through the state store (which takes over an expired lease and refuses a held one).
        """
        out: dict[str, str | None] = {}
        for start in range(0, len(names), BATCH):
            part = names[start : start + BATCH]
            expires = now + ttl
            ops: list[Any] = [
                ("create", _to_entity(codec.LEASE_PARTITION, codec.safe_key(n), codec.lease_props(n, owner, expires)))
                for n in part
            ]
            try:
                results = await self.deliveries.submit_transaction(ops)
            except TableTransactionError:
                tokens = await asyncio.gather(*(state.acquire_lease(n, owner=owner, now=now, ttl=ttl) for n in part))
                out.update(zip(part, tokens, strict=True))
                continue
            out.update((n, str(r["etag"])) for n, r in zip(part, results, strict=True))
        return out

    async def give_back_leases(self, state: StateStore, tokens: Mapping[str, str]) -> None:
        """Give leases back (only those still held with these tokens): one batch, or one by one if it fails."""
        items = list(tokens.items())
        for start in range(0, len(items), BATCH):
            part = items[start : start + BATCH]
            ops: list[Any] = [
                (
                    "delete",
                    {"PartitionKey": codec.LEASE_PARTITION, "RowKey": codec.safe_key(name)},
                    {"etag": token, "match_condition": MatchConditions.IfNotModified},
                )
                for name, token in part
            ]
            try:
                await self.deliveries.submit_transaction(ops)
            except TableTransactionError:
                await asyncio.gather(*(state.release_lease(name, token) for name, token in part))

    async def indexed_email(self, run_id: str, email_h: str) -> str | None:
        try:
            row = await self.index.get_entity(_e_partition(run_id, email_h), email_h)
        except ResourceNotFoundError:
            return None
        return str(row["x"])

    async def indexed_emails(self, run_id: str, hashes: Iterable[str]) -> dict[str, str]:
        """e-mail hash -> the externalId holding that address, for those the index knows (a query per partition)."""
        by_partition: dict[str, list[str]] = {}
        for h in set(hashes):
            by_partition.setdefault(_e_partition(run_id, h), []).append(h)
        reads = await asyncio.gather(*(read_many(self.index, pk, keys) for pk, keys in by_partition.items()))
        return {key: str(row["x"]) for rows in reads for key, row in rows.items()}

    async def suppressions(self, hashes: Iterable[str]) -> dict[str, Suppression]:
        """The tombstones of these e-mail hashes (the state store's table), by hash."""
        keys = {h: codec.suppression_keys(h) for h in set(hashes)}

        async def one(h: str) -> tuple[str, Suppression | None]:
            try:
                row = await self.suppression_table.get_entity(*keys[h])
            except ResourceNotFoundError:
                return h, None
            return h, codec.suppression_from_props(_props(row), str(row.metadata["etag"]))

        found = await asyncio.gather(*(one(h) for h in keys))
        return {h: sup for h, sup in found if sup is not None}

    async def claim_emails(
        self, run_id: str, phase: str, claims: Sequence[tuple[str, EntityName, str, str]]
    ) -> list[LinkState | None]:
        """`claim_email` for many (email hash, entity, record id, externalId): one batch insert per partition
        when none of its addresses is taken yet; otherwise (and for an address named twice) one by one."""
        out: list[LinkState | None] = [None] * len(claims)
        groups: dict[str, list[int]] = {}
        for i, (h, *_) in enumerate(claims):
            groups.setdefault(_c_partition(run_id, phase, h), []).append(i)

        async def one(i: int) -> None:
            out[i] = await self.claim_email(run_id, phase, *claims[i])

        async def group(pk: str, indexes: list[int]) -> None:
            first: dict[str, int] = {}
            later: list[int] = []
            for i in indexes:
                if claims[i][0] in first:
                    later.append(i)
                else:
                    first[claims[i][0]] = i
            ops: list[Any] = [
                ("create", {"PartitionKey": pk, "RowKey": h, "entity": claims[i][1], "record_id": claims[i][2],
                            "x": claims[i][3]})
                for h, i in first.items()
            ]  # fmt: skip
            try:
                for start in range(0, len(ops), BATCH):
                    await self.index.submit_transaction(ops[start : start + BATCH])
            except TableTransactionError:
                await asyncio.gather(*(one(i) for i in first.values()))
            for i in later:
                await one(i)

        await asyncio.gather(*(group(pk, idx) for pk, idx in groups.items()))
        return out

    async def claim_email(
        self, run_id: str, phase: str, email_h: str, entity: EntityName, record_id: str, external_id: str
    ) -> LinkState | None:
        """Take the e-mail address for this record in this run: None when taken (or already held by it), else
        the record that holds it (as a link to its contact)."""
        pk = _c_partition(run_id, phase, email_h)
        row = {"PartitionKey": pk, "RowKey": email_h, "entity": entity, "record_id": record_id, "x": external_id}
        try:
            await self.index.create_entity(row)
            return None
        except ResourceExistsError:
            current = await self.index.get_entity(pk, email_h)
        if str(current["entity"]) == entity and str(current["record_id"]) == record_id:
            return None  # a redelivered work item: the record already holds it
        return LinkState(
            entity=codec.index_target(current)[0],
            record_id=str(current["record_id"]),
            external_id=str(current["x"]),
        )

    # ------------------------------------------------------------------------------------------ links and status

    async def save_links(self, state: StateStore, links: Sequence[LinkState]) -> int:
        """Save links in batch transactions per table partition (insert new, replace-if-unchanged known).

        A batch that loses a race (a live push saved one of its links meanwhile) is saved link by link; a link
        that still conflicts keeps the newer state another writer left. Returns the links saved.
        """
        by_entity: dict[str, list[LinkState]] = {}
        for link in links:
            by_entity.setdefault(link.entity, []).append(link)
        saved = 0
        for entity, group in by_entity.items():
            for start in range(0, len(group), BATCH):
                part = group[start : start + BATCH]
                ops: list[Any] = []
                for link in part:
                    row = _to_entity(entity, codec.safe_key(link.record_id), codec.link_to_props(link))
                    if link.etag is None:
                        ops.append(("create", row))
                    else:
                        ops.append(
                            ("update", row, {"mode": UpdateMode.REPLACE, "etag": link.etag,
                                             "match_condition": MatchConditions.IfNotModified})
                        )  # fmt: skip
                try:
                    await self.links.submit_transaction(ops)
                except TableTransactionError:
                    saved += await self._save_one_by_one(state, part)
                    continue
                saved += len(part)
                await self._index_links(part)
        return saved

    async def _save_one_by_one(self, state: StateStore, links: Sequence[LinkState]) -> int:
        saved = 0
        for link in links:
            try:
                await state.save_link(link)
                saved += 1
            except ConcurrencyConflict:
                continue
        return saved

    async def _index_links(self, links: Sequence[LinkState]) -> None:
        rows = [
            _to_entity(p, codec.index_row_key(link.entity, link.record_id), codec.index_to_props(link))
            for link in links
            for p in codec.link_index_partitions(link)
        ]
        await asyncio.gather(*(self.link_index.upsert_entity(row, mode=UpdateMode.REPLACE) for row in rows))

    async def append_statuses(self, entries: Sequence[StatusEntry]) -> None:
        """One history row per record (the status history is partitioned per record)."""
        rows = [
            _to_entity(
                codec.status_partition(e.entity, e.record_id),
                codec.status_row_key(e.at),
                codec.status_to_props(e),
            )
            for e in entries
        ]
        await asyncio.gather(*(self.status.create_entity(row) for row in rows))


def _props(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in ("PartitionKey", "RowKey")}


async def read_many(table: TableClient, partition: str, keys: Sequence[str]) -> dict[str, Any]:
    """The rows of `keys` in one partition that exist, by RowKey: queries naming up to `KEYS_PER_QUERY` keys."""
    wanted = sorted(set(keys))

    async def query(part: Sequence[str]) -> list[Any]:
        names = {f"k{n}": key for n, key in enumerate(part)}
        text = " or ".join(f"RowKey eq @{name}" for name in names)
        return [
            row
            async for row in table.query_entities(
                f"PartitionKey eq @pk and ( {text} )", parameters={"pk": partition, **names}
            )
        ]

    parts = [wanted[i : i + KEYS_PER_QUERY] for i in range(0, len(wanted), KEYS_PER_QUERY)]
    found: dict[str, Any] = {}
    for rows in await asyncio.gather(*(query(part) for part in parts)):
        found.update((str(row["RowKey"]), row) for row in rows)
    return found


async def read_keys(table: TableClient, partition: str, keys: Sequence[str]) -> dict[str, Any]:
    """The rows of `keys` in one partition that exist, by RowKey.

    One range query over the keys' span (rows come back in RowKey order); when the span holds more than
    `RANGE_SLACK` rows per key, the query stops there and the keys past the rows read are read one by one.
    """
    wanted = sorted(set(keys))
    found: dict[str, Any] = {}
    if not wanted:
        return found
    rest = wanted
    if len(wanted) > 1:
        budget = RANGE_SLACK * len(wanted) + RANGE_MIN
        read, last = 0, None
        want = set(wanted)
        complete = True
        async for row in table.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey le @hi",
            parameters={"pk": partition, "lo": wanted[0], "hi": wanted[-1]},
            results_per_page=min(1000, budget),
        ):
            key = str(row["RowKey"])
            if key in want:
                found[key] = row
            read, last = read + 1, key
            if read >= budget:
                complete = False
                break
        rest = [] if complete else [k for k in wanted if last is None or k > last]

    async def point(key: str) -> None:
        try:
            found[key] = await table.get_entity(partition, key)
        except ResourceNotFoundError:
            return

    await asyncio.gather(*(point(k) for k in rest))
    return found


def utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def replace_link(link: LinkState, **changes: Any) -> LinkState:
    return dataclasses.replace(link, **changes)
