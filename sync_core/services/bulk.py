"""The bulk engine: backfill, resync and reconcile as one queue-driven run.

A run is a chain of messages on the bulk queue (never the live queue), each small and idempotent, so the
Functions host spreads the work over its instances and a stopped run carries on where it was:

1. `index` — read Spotler's contact feed a page at a time into the run's e-mail → contact index (Table
   Storage), so that pairing a record with an existing contact costs no Spotler search.
2. `scan` (phase `assess`) — read one Dataverse page (up to 5,000 rows, mapped columns only; with change
   tracking for reconcile), cut it into work items of up to 100 rows, enqueue them and the scan of the next
   page (its `@odata.nextLink`). The page number is the checkpoint.
3. `item` (assess) — plan each row with `plan_push`, exactly as a live change is planned, and record the
   item's impact (counts per action and reason, mass changes). Nothing is written anywhere.
4. `advance` — when every item of the phase is recorded: a dry run ends with the impact; the mass-change guard
   stops a run that would anonymize or unsubscribe too much; otherwise the `apply` phase scans again.
5. `item` (apply) — take the records' leases (one batch), plan again and write: one Spotler bulk insert
   (`POST /contact/list`, `update=true`) per item, each contact's result code into its status, links in batch
   transactions, statuses per record. A finished item is recorded; a redelivered one is skipped, so a restart
   does not send completed work again.

An item reads its state set-wise and once (`BulkTables`: range queries, multi-key queries, batch claims) and
carries it from the plan to the write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_core.dataverse.client import DataverseClient, DeltaTokenExpired
from sync_core.domain.bulk_plan import (
    MAX_ITEM_RECORDS,
    Impact,
    RunKind,
    WorkRow,
    check_mass_change,
    chunk,
    follow_claim,
    is_mass_change,
    merged_hint,
    pack,
    reason_for_result,
    unpack,
)
from sync_core.domain.consent import email_hash, normalize_email
from sync_core.domain.errors import NotFoundError, SyncError, TransientError
from sync_core.domain.mapping import EntityMapping, MappingConfig
from sync_core.domain.plan import PushAction, PushInput, PushOptions, PushPlan, plan_push
from sync_core.domain.ports import ConcurrencyConflict, SpotlerGateway, StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import (
    ENTITY_NAMES,
    ChangeEvent,
    ChangeKind,
    EntityName,
    EventSource,
    RowUpdate,
    SpotlerContact,
)
from sync_core.domain.state_model import LinkState, StatusEntry, Suppression
from sync_core.services.bulk_tables import BulkTables
from sync_core.services.leases import lease_name
from sync_core.services.push import NO_STATUS_COLUMNS, PushService, StatusColumns, other_address
from sync_core.services.runs import RunHistory, bulk_run
from sync_core.state.queue import EventQueue, MessageTooLarge

_BULK_WRITES = (PushAction.CREATE, PushAction.UPDATE, PushAction.UNSUBSCRIBE)

log = logging.getLogger("sync_core.bulk")

INDEX_PAGE_SIZE = 1000
FEED_START = datetime(2000, 1, 1, tzinfo=UTC)
TERMINAL = frozenset({"done", "stopped", "failed"})
LEASE_POLL_SECONDS = 0.25
DRIVER_ATTEMPTS = 10
"""Consecutive failures to read the bulk queue or the run after which the local driver gives up."""


@dataclass(frozen=True, slots=True)
class BulkOptions:
    page_size: int = 5000
    mass_change_limit: int = 100
    mass_change_share: float = 0.05
    advance_poll_seconds: int = 1
    planning_concurrency: int = 16
    lease_seconds: float = 60.0
    lease_wait_seconds: float = 10.0


class RecordsBusy(TransientError):
    """Records of a work item are held by live pushes longer than the item waits; it is delivered again."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What an operator asks for."""

    kind: RunKind
    entities: tuple[EntityName, ...]
    filter_expr: str | None = None
    record_id: str | None = None
    dry_run: bool = False
    allow_mass_changes: bool = False


@dataclass(slots=True)
class _Planned:
    entity: EntityName
    row: WorkRow
    plan: PushPlan
    current: SpotlerContact | None
    email: str | None
    previous: ReasonCode | None = None
    # The record's identity needs the live push's look-ups by address (its linked contact is gone, anonymized
    # while another contact may hold the address, or holds another address): the write goes through its rules.
    live: bool = False


class BulkEngine:
    """Starts runs and handles their messages (the queue trigger and the local driver call `handle`)."""

    def __init__(
        self,
        *,
        tables: BulkTables,
        queue: EventQueue,
        state: StateStore,
        spotler: SpotlerGateway,
        dataverse: DataverseClient,
        mapping: MappingConfig,
        options: PushOptions,
        bulk: BulkOptions,
        clock: Callable[[], datetime],
        status_columns: StatusColumns = NO_STATUS_COLUMNS,
        history: RunHistory | None = None,
        live: PushService | None = None,
    ) -> None:
        self._live = live
        self._status_columns = status_columns
        self._history = history
        self.tables = tables
        self.queue = queue
        self._state = state
        self._spotler = spotler
        self._dataverse = dataverse
        self._mapping = mapping
        self._options = options
        self._bulk = bulk
        self._clock = clock

    # ------------------------------------------------------------------------------------------ starting

    def mapped_entities(self, only: EntityName | None = None) -> tuple[EntityName, ...]:
        names = [e for e in ENTITY_NAMES if self._mapping.for_entity(e) is not None]
        if only is not None:
            if only not in names:
                raise ValueError(f"{only} is not mapped")
            return (only,)
        return tuple(names)

    async def start(self, request: RunRequest) -> dict[str, Any]:
        """Record a new run and enqueue its first message; the run document."""
        await self.tables.ensure_ready()
        await self.queue.ensure_ready()
        await self._state.ensure_ready()
        run_id = f"{request.kind}-{self._clock().strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        doc: dict[str, Any] = {
            "id": run_id,
            "kind": request.kind,
            "entities": list(request.entities),
            "filter": request.filter_expr,
            "record": request.record_id,
            "dryRun": request.dry_run,
            "allowMassChanges": request.allow_mass_changes,
            "phase": "index",
            "started": self._clock().isoformat(),
            "finished": None,
            "scans": {},
            "delta": {},
            "assess": None,
            "apply": None,
            "verdict": None,
            "error": None,
        }
        await self.tables.put_run(doc, None)
        # The whole feed, up to a day ahead: Spotler stamps may run ahead of this clock.
        await self._send(
            {"t": "index", "run": run_id, "after": 0, "to": (self._clock() + timedelta(days=1)).isoformat()}
        )
        await self._send({"t": "advance", "run": run_id})
        log.info("bulk run started", extra={"run": run_id, "kind": request.kind, "dry_run": request.dry_run})
        return doc

    async def run_doc(self, run_id: str) -> dict[str, Any] | None:
        found = await self.tables.get_run(run_id)
        return found[0] if found else None

    async def _send(self, message: dict[str, Any]) -> None:
        await self.queue.send(pack(message))

    async def _update_run(self, run_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        for _ in range(20):
            found = await self.tables.get_run(run_id)
            if found is None:
                raise KeyError(run_id)
            doc, etag = found
            change(doc)
            try:
                await self.tables.put_run(doc, etag)
            except ConcurrencyConflict:
                await asyncio.sleep(0.05)
                continue
            return doc
        raise RuntimeError(f"run {run_id} is too busy to update")

    # ------------------------------------------------------------------------------------------ messages

    async def handle(self, text: str) -> None:
        """Handle one bulk queue message. Raises on a transient failure (the queue delivers it again)."""
        message = unpack(text)
        if "run" not in message:
            raise ValueError("not a bulk message: it names no run")
        run = await self.run_doc(str(message["run"]))
        if run is None or run["phase"] in TERMINAL:
            return
        kind = message.get("t")
        if kind == "index":
            await self._index(run, message)
        elif kind == "scan":
            await self._scan(run, message)
        elif kind == "item":
            await self._item(run, message)
        elif kind == "advance":
            await self._advance(run)
        else:
            raise ValueError(f"not a bulk message: unknown type {str(kind)[:40]!r}")

    async def _index(self, run: dict[str, Any], message: dict[str, Any]) -> None:
        """One page of Spotler's contact feed into the run's index; then the next page, or the first scan."""
        after = int(message["after"])
        page = await self._spotler.get_updates_page(
            from_date=FEED_START,
            to_date=datetime.fromisoformat(str(message["to"])) + timedelta(seconds=1),
            after=after,
            page_size=INDEX_PAGE_SIZE,
        )
        key = self._options.hash_key
        entries = []
        for contact in page.contacts:
            email = normalize_email(contact.email) if contact.email else None
            entries.append((contact, email_hash(key, email) if email else None))
        await self.tables.put_index(run["id"], entries)
        if page.next_after is not None and page.contacts:
            await self._send({**message, "after": page.next_after})
            return
        now = self._clock().isoformat()

        def assessing(doc: dict[str, Any]) -> None:
            if doc["phase"] == "index":
                doc["phase"] = "assess"
                doc.setdefault("phaseStarted", {})["assess"] = now

        doc = await self._update_run(run["id"], assessing)
        if doc["phase"] == "assess":
            await self._send_first_scan(doc, "assess")

    async def _send_first_scan(self, run: dict[str, Any], phase: str) -> None:
        entity = run["entities"][0]
        await self._send({"t": "scan", "run": run["id"], "phase": phase, "entity": entity, "page": 0, "url": None})

    async def _scan(self, run: dict[str, Any], message: dict[str, Any]) -> None:
        phase, entity, page_no = str(message["phase"]), str(message["entity"]), int(message["page"])
        progress = run["scans"].get(phase, {}).get(entity)
        if progress is not None and (progress["done"] or progress["pages"] > page_no):
            return  # this page was already cut into work items (a redelivered scan message)
        mapping = self._mapping.for_entity(entity)  # type: ignore[arg-type]
        assert mapping is not None
        tracked = run["kind"] == "reconcile"
        url = message.get("url")
        if tracked and url is None and page_no == 0:
            url = await self.tables.get_delta_link(entity)  # type: ignore[arg-type]
        filter_expr = run["filter"]
        if run.get("record"):
            filter_expr = f"{_primary_key(entity)} eq {run['record']}"
        try:
            page = await self._dataverse.read_page(
                entity,  # type: ignore[arg-type]
                mapping.columns(),
                url=url,
                filter_expr=None if tracked else filter_expr,
                page_size=self._bulk.page_size,
                track_changes=tracked,
            )
        except DeltaTokenExpired:
            log.warning("delta token expired; reading everything again", extra={"run": run["id"], "entity": entity})
            page = await self._dataverse.read_page(
                entity,  # type: ignore[arg-type]
                mapping.columns(),
                page_size=self._bulk.page_size,
                track_changes=True,
            )
        rows = [
            WorkRow(
                r.id.lower(),
                dict(r.attributes),
                r.version,
                r.modified_on.isoformat() if r.modified_on else None,
            )
            for r in page.rows
        ] + [WorkRow(record_id, None) for record_id in page.deleted]
        items = list(chunk(rows, MAX_ITEM_RECORDS))
        for n, item_rows in enumerate(items):
            await self._send_item(run["id"], phase, entity, f"{entity}:{page_no:05d}:{n:02d}", item_rows)
        last = page.next_link is None

        def record(doc: dict[str, Any]) -> None:
            entry = doc["scans"].setdefault(phase, {}).setdefault(entity, {"pages": 0, "items": 0, "done": False})
            if entry["pages"] > page_no:
                return
            entry["pages"] = page_no + 1
            entry["items"] += len(items)
            entry["done"] = last
            if last and page.delta_link:
                doc["delta"].setdefault(phase, {})[entity] = page.delta_link

        doc = await self._update_run(run["id"], record)
        if not last:
            await self._send({**message, "page": page_no + 1, "url": page.next_link})
            return
        remaining = doc["entities"][doc["entities"].index(entity) + 1 :]
        if remaining:
            await self._send(
                {"t": "scan", "run": run["id"], "phase": phase, "entity": remaining[0], "page": 0, "url": None}
            )

    async def _send_item(self, run_id: str, phase: str, entity: str, item_id: str, rows: Sequence[WorkRow]) -> None:
        message = {"t": "item", "run": run_id, "phase": phase, "entity": entity, "id": item_id,
                   "rows": [r.to_json() for r in rows]}  # fmt: skip
        try:
            await self._send(message)
        except MessageTooLarge:
            if len(rows) == 1:
                raise
            half = len(rows) // 2
            await self._send_item(run_id, phase, entity, f"{item_id}a", rows[:half])
            await self._send_item(run_id, phase, entity, f"{item_id}b", rows[half:])

    async def _advance(self, run: dict[str, Any]) -> None:
        """Move the run on when its phase is complete; otherwise look again a little later."""
        phase = run["phase"]
        delay = self._bulk.advance_poll_seconds
        if phase in ("assess", "apply"):
            scans = run["scans"].get(phase, {})
            scanned = all(scans.get(e, {}).get("done") for e in run["entities"])
            expected = sum(int(scans.get(e, {}).get("items", 0)) for e in run["entities"])
            if scanned:
                finished = await self.tables.count_items(run["id"], phase)
                if finished >= expected:
                    await self._finish_phase(run, phase)
                    doc = await self.run_doc(run["id"])
                    if doc is None or doc["phase"] in TERMINAL:
                        return
                else:
                    started = run.get("phaseStarted", {}).get(phase)
                    elapsed = (self._clock() - datetime.fromisoformat(started)).total_seconds() if started else 0.0
                    delay = advance_delay(finished, expected, elapsed, self._bulk.advance_poll_seconds)
        await self.queue.send_later(pack({"t": "advance", "run": run["id"]}), delay)

    async def _finish_phase(self, run: dict[str, Any], phase: str) -> None:
        impact = Impact.total(Impact.from_json(i) for i in await self.tables.item_impacts(run["id"], phase))
        now = self._clock().isoformat()
        if phase == "assess":
            single = bool(run.get("record"))  # a named record is the operator's explicit choice
            verdict = check_mass_change(
                impact,
                limit=self._bulk.mass_change_limit,
                share=self._bulk.mass_change_share,
                allow=bool(run["allowMassChanges"]) or single,
            )

            def assessed(doc: dict[str, Any]) -> None:
                if doc["phase"] != "assess":
                    return
                doc["assess"] = impact.to_json()
                doc["verdict"] = {"allowed": verdict.allowed, "message": verdict.message}
                if doc["dryRun"]:
                    doc["phase"], doc["finished"] = "done", now
                elif not verdict.allowed:
                    doc["phase"], doc["finished"] = "stopped", now
                else:
                    doc["phase"] = "apply"
                    doc.setdefault("phaseStarted", {})["apply"] = now

            doc = await self._update_run(run["id"], assessed)
            if doc["phase"] == "apply":
                await self._send_first_scan(doc, "apply")
            else:
                await self._record_history(doc)
            log.info("bulk run assessed", extra={"run": run["id"], "phase": doc["phase"], "records": impact.records})
            return

        def applied(doc: dict[str, Any]) -> None:
            if doc["phase"] == "apply":
                doc["apply"] = impact.to_json()
                doc["phase"], doc["finished"] = "done", now

        doc = await self._update_run(run["id"], applied)
        await self._record_history(doc)
        if doc["kind"] == "reconcile":
            for entity, link in doc["delta"].get("apply", {}).items():
                await self.tables.save_delta_link(entity, link)
        log.info("bulk run finished", extra={"run": run["id"], "records": impact.records, "writes": impact.writes})

    async def _record_history(self, doc: dict[str, Any]) -> None:
        """A finished run joins the run history (`/api/runs`, the sync-health page); best effort."""
        if self._history is None or doc["phase"] not in TERMINAL:
            return
        try:
            await self._history.record_run(bulk_run(doc))
        except Exception:
            log.warning("bulk run not recorded in the run history", extra={"run": doc["id"]}, exc_info=True)

    # ------------------------------------------------------------------------------------------ work items

    async def _item(self, run: dict[str, Any], message: dict[str, Any]) -> None:
        phase, item_id = str(message["phase"]), str(message["id"])
        if phase != run["phase"]:
            return  # an item of a phase that is over
        if await self.tables.item_done(run["id"], phase, item_id):
            return  # finished before a restart: not sent again
        entity: EntityName = message["entity"]
        mapping = self._mapping.for_entity(entity)
        assert mapping is not None
        rows = [WorkRow.from_json(r) for r in message["rows"]]
        if phase == "assess":
            planned = await self._plan_rows(run["id"], phase, entity, mapping, rows)
            impact = Impact()
            for p in planned:
                impact.add(
                    entity, p.row.record_id, p.plan.action.value, p.plan.reason, mass=is_mass_change(p.plan, p.current)
                )
        else:
            # The records' leases are held from before their state is read until it is saved, as a live push
            # holds its record's: a live push of one of them waits for this item, or this item for it.
            tokens = await self._take_leases(run["id"], item_id, entity, rows)
            try:
                planned = await self._plan_rows(run["id"], phase, entity, mapping, rows)
                impact = await self._apply(entity, planned)
            finally:
                await self.tables.give_back_leases(self._state, tokens)
        await self.tables.finish_item(run["id"], phase, item_id, impact.to_json())

    async def _take_leases(
        self, run_id: str, item_id: str, entity: EntityName, rows: Sequence[WorkRow]
    ) -> dict[str, str]:
        """The record leases of a work item's rows (one batch). A lease a live push holds is waited for, up to
        `lease_wait_seconds`; still held then, the item gives back what it took and fails before writing anything,
        and the queue delivers it again later."""
        owner = f"bulk/{run_id}/{item_id}"
        ttl = timedelta(seconds=self._bulk.lease_seconds)
        names = [lease_name(entity, r.record_id) for r in rows]
        held: dict[str, str] = {}
        deadline = asyncio.get_running_loop().time() + self._bulk.lease_wait_seconds
        while names:
            taken = await self.tables.take_leases(self._state, names, owner=owner, now=self._clock(), ttl=ttl)
            held.update((n, t) for n, t in taken.items() if t is not None)
            names = [n for n, t in taken.items() if t is None]
            if not names:
                break
            if asyncio.get_running_loop().time() >= deadline:
                await self.tables.give_back_leases(self._state, held)
                raise RecordsBusy(f"{len(names)} records of work item {item_id} are being pushed; delivered again")
            await asyncio.sleep(LEASE_POLL_SECONDS)
        return held

    async def _plan_rows(
        self, run_id: str, phase: str, entity: EntityName, mapping: EntityMapping, rows: Sequence[WorkRow]
    ) -> list[_Planned]:
        gate = asyncio.Semaphore(self._bulk.planning_concurrency)
        now = self._clock()
        key = self._options.hash_key
        # What the item needs, read set-wise and once, then carried to the write: its links (one range query),
        # the index's snapshots of the contacts they point at (a range query per index partition), the
        # tombstones of its addresses and, for records not yet paired, the contacts holding their addresses.
        emails: dict[str, str | None] = {}
        for r in rows:
            emails[r.record_id] = (
                normalize_email(r.attributes.get(mapping.email_attribute)) if r.attributes is not None else None
            )
        hashes = {rid: email_hash(key, e) for rid, e in emails.items() if e}
        links, suppressions = await asyncio.gather(
            self.tables.links_of(entity, [r.record_id for r in rows]), self.tables.suppressions(hashes.values())
        )
        targets = {links[r.record_id].external_id if r.record_id in links else r.record_id for r in rows}
        contacts = await self.tables.indexed_contacts(run_id, targets)
        unpaired = [h for rid, h in hashes.items() if rid not in links and rid not in contacts]
        # A record the live push writes (its linked contact is gone, or holds another address) follows its
        # address to the contact that holds it, as the push does: its holder is looked up in the index too.
        moving = {r.record_id for r in rows if self._follows_address(r, links, contacts, emails)}
        unpaired += [hashes[rid] for rid in moving]
        by_email = await self.tables.indexed_emails(run_id, unpaired) if unpaired else {}
        if by_email:
            contacts = {**contacts, **await self.tables.indexed_contacts(run_id, set(by_email.values()))}

        async def one(row: WorkRow) -> _Planned:
            h = hashes.get(row.record_id)
            link = links.get(row.record_id)
            found = by_email.get(h) if h is not None and (link is None or row.record_id in moving) else None
            async with gate:
                return await self._plan_row(
                    entity,
                    mapping,
                    row,
                    now,
                    link=link,
                    email=emails[row.record_id],
                    spotler=contacts.get(link.external_id if link is not None else row.record_id),
                    email_match=contacts.get(found) if found is not None else None,
                    suppression=suppressions.get(h) if h is not None else None,
                    follows=row.record_id in moving,
                )

        planned = list(await asyncio.gather(*(one(r) for r in rows)))
        # Records of this run that share an address end on one contact: the first to take it writes.
        claiming = [
            i
            for i, p in enumerate(planned)
            if p.plan.action in (PushAction.CREATE, PushAction.UPDATE) and p.row.record_id in hashes
        ]
        claims = [
            (hashes[p.row.record_id], entity, p.row.record_id, p.plan.external_id or p.row.record_id)
            for p in (planned[i] for i in claiming)
        ]
        owners = await self.tables.claim_emails(run_id, phase, claims)
        for i, owner in zip(claiming, owners, strict=True):
            if owner is not None:
                p = planned[i]
                planned[i] = dataclasses.replace(p, plan=follow_claim(p.plan, owner, entity, p.row.record_id))
        return planned

    async def _plan_row(
        self,
        entity: EntityName,
        mapping: EntityMapping,
        row: WorkRow,
        now: datetime,
        *,
        link: LinkState | None,
        email: str | None,
        spotler: SpotlerContact | None,
        email_match: SpotlerContact | None,
        suppression: Suppression | None,
        follows: bool = False,
    ) -> _Planned:
        """`plan_push` for one row, from the state read for its work item (only peers are read here).

        With `follows` (the record's linked contact is gone, or holds another address: the live push writes it),
        `email_match` is the contact that holds its address now and the plan follows it there, as the push's
        own planning does, so that a dry run counts the record as the real run will write it.
        """
        attrs = row.attributes
        live = self._live is not None and follows
        holder = email_match if follows else None
        moved = False
        left: SpotlerContact | None = None
        if link is not None and holder is not None and holder.external_id != link.external_id:
            if spotler is None:
                link, spotler = dataclasses.replace(link, external_id=holder.external_id), holder
            else:
                left = spotler if spotler.email is not None else None
                link, spotler, moved = dataclasses.replace(link, external_id=holder.external_id, base={}), holder, True
        if link is not None or spotler is not None:
            email_match = None  # paired already: the address is not looked up (as the live push does)
        external_id = link.external_id if link is not None else row.record_id
        target = link.external_id if link else (email_match.external_id if email_match else external_id)
        peers: list[LinkState] = []
        if link is not None or spotler is not None or email_match is not None:
            peers = await self._state.links_for_external_id(target, exclude=(entity, row.record_id))
        inp = PushInput(
            entity=entity,
            record_id=row.record_id,
            kind=ChangeKind.DELETE if attrs is None else ChangeKind.UPDATE,
            attributes=attrs,
            now=now,
            modified_on=datetime.fromisoformat(row.modified_on) if row.modified_on else None,
            version=row.version,
            link=link,
            spotler=spotler,
            email_match=email_match,
            suppression=suppression,
            peers=peers,
            moved=moved,
            left=left,
        )
        plan = plan_push(inp, mapping, self._options)
        if link is None and email_match is None and email is not None and _turns_a_bit_on(plan):
            # A record new to the connector whose address no other contact holds: as in the live push, a live
            # record of the address linked to a contact that went with another address speaks for the person,
            # and this row's default flags are no opt-in (looked up only when a bit would be turned on).
            address_peers = await self._state.links_for_email_hash(email_hash(self._options.hash_key, email))
            if address_peers:
                plan = plan_push(dataclasses.replace(inp, address_peers=address_peers), mapping, self._options)
        current = spotler if spotler is not None else email_match
        return _Planned(entity, row, plan, current, email, link.reason if link is not None else None, live=live)

    @staticmethod
    def _follows_address(
        row: WorkRow,
        links: Mapping[str, LinkState],
        contacts: Mapping[str, SpotlerContact],
        emails: Mapping[str, str | None],
    ) -> bool:
        """Does the live push's rule of following the address apply to this record (its linked contact is gone
        from the index, or holds another address)?"""
        link = links.get(row.record_id)
        email = emails.get(row.record_id)
        if link is None or email is None or row.attributes is None:
            return False
        contact = contacts.get(link.external_id)
        return contact is None or other_address(link, contact, email, dict(row.attributes))

    async def _apply(self, entity: EntityName, planned: list[_Planned]) -> Impact:
        """Write one work item: one bulk insert, anonymizations, tombstones, links and statuses."""
        impact = Impact()
        now = self._clock()
        # Creates, updates and unsubscribes (permission bits only) all go in the one bulk insert (update=true).
        handed = [p for p in planned if p.live]
        planned = [p for p in planned if not p.live]
        for p in handed:
            await self._apply_live(p, impact)
        writes = [p for p in planned if p.plan.action in _BULK_WRITES and p.plan.contact]
        writing = {id(p) for p in writes}
        results: dict[str, tuple[str, str]] = {}
        if writes:
            answer = await self._spotler.insert_contacts(
                [p.plan.contact for p in writes if p.plan.contact is not None], update=True, purge=False
            )
            impact.spotler_writes += 1
            results = {r.external_id: (r.code, r.message) for r in answer}
        links: list[LinkState] = []
        statuses: list[StatusEntry] = []
        for p in planned:
            plan, reason, action, detail = p.plan, p.plan.reason, p.plan.action.value, p.plan.detail
            link = plan.link
            if id(p) in writing:
                code, message = results.get(plan.external_id or "", ("ERROR", "no result for this contact"))
                if code != "OK":
                    reason = reason_for_result(code)
                    detail = f"Spotler refused the contact: {code}" + (f" ({message[:200]})" if message else "")
                    action = "failed"
                    link = (
                        dataclasses.replace(p.plan.link, reason=reason, detail=detail, last_attempt=now)
                        if p.plan.link is not None and p.plan.link.etag is not None
                        else None  # never keep a link to an externalId that holds no contact
                    )
                elif merged_hint(message):
                    link, detail = await self._confirm(p, link)
            elif plan.action is PushAction.ANONYMIZE and plan.external_id is not None:
                try:
                    await self._spotler.anonymize_contact(plan.external_id)
                    impact.spotler_writes += 1
                except NotFoundError:
                    log.info("contact already gone in Spotler", extra={"record_id": p.row.record_id})
            if action != "failed":
                if plan.suppress is not None:
                    await self._state.put_suppression(plan.suppress)
                if plan.lift_suppression is not None:
                    await self._state.delete_suppression(plan.lift_suppression)
            if link is not None:
                links.append(link)
            if plan.record_status or action == "failed":
                statuses.append(StatusEntry(entity, p.row.record_id, now, reason, action, detail, plan.external_id))
            impact.add(entity, p.row.record_id, action if action == "failed" else plan.action.value, reason,
                       mass=is_mass_change(plan, p.current))  # fmt: skip
        await self.tables.save_links(self._state, links)
        await self.tables.append_statuses(statuses)
        await self._write_status_columns(entity, planned, statuses)
        return impact

    async def _apply_live(self, p: _Planned, impact: Impact) -> None:
        """Write one record through the live push's rules (the item holds its lease), counted by their outcome."""
        assert self._live is not None
        assert p.row.attributes is not None
        event = ChangeEvent(
            entity=p.entity,
            record_id=p.row.record_id,
            kind=ChangeKind.UPDATE,
            attributes=p.row.attributes,
            changed=frozenset(),
            idempotency_key=f"bulk:{p.entity}:{p.row.record_id}:{p.row.version}",
            source=EventSource.BACKFILL,
            version=p.row.version,
            modified_on=datetime.fromisoformat(p.row.modified_on) if p.row.modified_on else None,
        )
        outcome = await self._live.apply_found(event, note="written by a bulk run through the live rules")
        if outcome.action in ("create", "update", "anonymize", "unsubscribe"):
            impact.spotler_writes += 1
        impact.add(p.entity, p.row.record_id, outcome.action, outcome.reason or p.plan.reason,
                   mass=is_mass_change(p.plan, p.current))  # fmt: skip

    async def _write_status_columns(
        self, entity: EntityName, planned: Sequence[_Planned], statuses: Sequence[StatusEntry]
    ) -> None:
        """The changed statuses into the Dataverse status columns, one $batch per work item (best effort)."""
        cols = self._status_columns
        if cols.reason is None:
            return
        rows = {p.row.record_id: p for p in planned}
        updates = []
        for entry in statuses:
            p = rows[entry.record_id]
            attrs = p.row.attributes
            if attrs is None or attrs.get("statecode", 0) not in (0, None) or p.previous is entry.reason:
                continue  # gone, read-only (inactive), or the column already says so
            updates.append(RowUpdate(entity, entry.record_id, cols.values(entry.reason, entry.detail, entry.at)))
        if not updates:
            return
        try:
            await self._dataverse.update_rows(updates)
        except SyncError as exc:
            log.warning("status columns not written", extra={"entity": entity, "error": type(exc).__name__})

    async def _confirm(self, p: _Planned, link: LinkState | None) -> tuple[LinkState | None, str]:
        """Spotler merged the contact into one with the same address: follow it to where it landed."""
        plan = p.plan
        assert plan.external_id is not None
        if await self._spotler.get_contact(plan.external_id) is not None:
            return link, plan.detail
        landed: list[SpotlerContact] = []
        if p.email:
            landed = [
                c
                for c in await self._spotler.search_by_email(p.email)
                if (c.email or "").casefold() == p.email.casefold()
            ]
        if not landed or link is None:
            return None, "merged by Spotler into a contact that could not be found"
        target = min(landed, key=lambda c: c.external_id).external_id
        detail = f"merged by Spotler into the contact with the same e-mail address ({target})"
        return dataclasses.replace(link, external_id=target, detail=detail), detail


def _turns_a_bit_on(plan: PushPlan) -> bool:
    return plan.contact is not None and any(plan.contact.permissions.values())


ADVANCE_MAX_SECONDS = 30


def advance_delay(finished: int, expected: int, elapsed: float, poll: int) -> int:
    """Seconds until the next look at a phase with `finished` of `expected` work items after `elapsed` seconds.

    Counting the finished items reads all of them, so a look every `poll` seconds would cost work that grows with
    the square of the run. The next look comes after half the time the rest is expected to take at the rate so
    far (at least `poll`, at most `ADVANCE_MAX_SECONDS`): a few looks per halving of what is left, and the phase
    ends at most half the remaining estimate late.
    """
    if finished <= 0 or elapsed <= 0 or expected <= finished:
        return poll
    remaining = (expected - finished) * elapsed / finished
    return int(max(poll, min(ADVANCE_MAX_SECONDS, remaining / 2)))


def _primary_key(entity: str) -> str:
    return f"{entity}id"


# ------------------------------------------------------------------------------------------------ local driver


class LocalDriver:
    """Drives the bulk queue in this process until a run ends (the command line without a Functions host).

    It does what the queue trigger does on each instance: receive a batch, handle the messages concurrently,
    delete the handled ones; a message whose handler failed reappears after the visibility timeout.
    """

    def __init__(self, engine: BulkEngine, *, concurrency: int = 8, visibility_timeout: int = 60) -> None:
        self._engine = engine
        self._concurrency = max(1, min(32, concurrency))
        self._visibility = visibility_timeout
        self.items_handled = 0

    async def run_until_done(
        self, run_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None, poll: float = 0.2
    ) -> dict[str, Any]:
        queue = self._engine.queue
        in_flight: set[asyncio.Task[None]] = set()

        async def deliver(text: str, message_id: str, receipt: str) -> None:
            try:
                await self._engine.handle(text)
            except Exception:
                log.warning("bulk message failed; it will be delivered again", exc_info=True)
                return
            try:
                await queue.delete(message_id, receipt)
            except Exception:
                log.warning("handled bulk message not deleted; it will be delivered again and skipped", exc_info=True)
                return
            if text.startswith("z:") or '"t":"item"' in text:
                self.items_handled += 1

        loop = asyncio.get_running_loop()
        next_look = 0.0
        failures = 0
        try:
            while True:
                # A pipeline, as the host's queue trigger is: a free slot takes the next message at once, so
                # one slow message does not hold up the others.
                free = self._concurrency - len(in_flight)
                look = loop.time() >= next_look or not in_flight
                try:
                    batch = await queue.receive(max_messages=free, visibility_timeout=self._visibility) if free else []
                    for m in batch:
                        in_flight.add(asyncio.create_task(deliver(m.text, m.id, m.pop_receipt)))
                    doc = await self._engine.run_doc(run_id) if look else None
                except Exception:
                    # Storage that does not answer for a moment (a timeout, a dropped connection) stops
                    # nothing: messages in flight carry on, and the queue keeps what was not received.
                    failures += 1
                    if failures >= DRIVER_ATTEMPTS:
                        raise
                    log.warning("bulk queue or run unreadable; trying again", exc_info=True)
                    await asyncio.sleep(min(30.0, poll * 2**failures))
                    continue
                failures = 0
                if look:
                    if doc is None:
                        raise KeyError(run_id)
                    if on_progress is not None:
                        on_progress(doc)
                    if doc["phase"] in TERMINAL:
                        return doc
                    next_look = loop.time() + poll
                if in_flight and (not batch or len(in_flight) >= self._concurrency):
                    done, in_flight = await asyncio.wait(in_flight, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                    del done
                elif not batch:
                    await asyncio.sleep(poll)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)


def summary_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The run as operators see it: phase, the guard's verdict and the impact of each phase."""
    return {
        "run": doc["id"],
        "kind": doc["kind"],
        "dryRun": doc["dryRun"],
        "phase": doc["phase"],
        "entities": doc["entities"],
        "verdict": doc.get("verdict"),
        "assess": doc.get("assess"),
        "apply": doc.get("apply"),
        "started": doc.get("started"),
        "phaseStarted": doc.get("phaseStarted", {}),
        "finished": doc.get("finished"),
    }


def impact_of(doc: dict[str, Any], phase: str) -> Impact | None:
    data = doc.get(phase)
    return Impact.from_json(data) if data else None


def expected_items(doc: dict[str, Any]) -> int:
    """Work items the run's scans have cut so far (both phases)."""
    return sum(int(e.get("items", 0)) for scans in doc.get("scans", {}).values() for e in scans.values())
