"""In-memory fakes of the two gateways, a controllable clock, and the wiring the service tests share.

`FakeSpotler` follows the sandbox's rules (see tests/integration/test_spotler_sandbox_rules.py): an insert
with update=True upserts by externalId (and lands on the contact that already holds the e-mail), an update
of an unknown contact is not found, a write that changes nothing leaves `lastChanged` alone, anonymize keeps
only the id, and the updates feed is `[fromDate, toDate)` by `lastChanged` (milliseconds), ordered by
`lastChanged` then externalId, offset-paged with `next_after` None on the last page.

`FakeDataverse` keeps rows with a version-number etag and answers update-only PATCHes and batches the way
`DataverseClient` does: 404 for a missing row, 412 for a stale etag, per-row results for a batch.

Every gateway call yields to the event loop once, as real I/O would, so that concurrent tasks interleave.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sync_core.dataverse.client import ROW_NOT_FOUND_CODE
from sync_core.dataverse.errors import DataverseConflict, DataverseNotFound
from sync_core.domain.mapping import MappingConfig
from sync_core.domain.ports import DataverseGateway, RecordClaim, SpotlerGateway
from sync_core.domain.records import (
    PERMISSIONS_PROPERTY,
    AttrValue,
    BulkItemResult,
    ChangeEvent,
    ChangeKind,
    DataverseRow,
    EntityName,
    PropValue,
    RowUpdate,
    RowUpdateResult,
    SpotlerContact,
    SpotlerProperty,
    UpdatesPage,
)
from sync_core.domain.state_model import LinkState, Watermark
from sync_core.services.leases import DEFAULT_TTL, RecordLeases
from sync_core.services.pull import PullOptions, PullService
from sync_core.services.push import ChangeGuard, PushService, StatusColumns
from sync_core.spotler.errors import SpotlerContactExists, SpotlerContactOptedOut, SpotlerError, SpotlerNotFound
from sync_core.state import InMemoryStateStore
from tests.unit.domain_builders import T0, options, person, two_way_names_mapping

MAX_FEED_PAGE = 10_000
"""Spotler's largest `pageSize`."""


class FakeClock:
    """A clock that only moves when told to; pass the instance itself as `clock=`."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**parts)
        return self._now


@dataclass
class _Fault:
    error: Exception
    times: int
    skip: int
    target: str | None


class _Faults:
    """Raise a given error on the next N matching calls of a method (optionally after `skip` good ones)."""

    def __init__(self) -> None:
        self._faults: dict[str, list[_Fault]] = {}

    def add(self, method: str, error: Exception, *, times: int, skip: int, target: str | None) -> None:
        self._faults.setdefault(method, []).append(_Fault(error, times, skip, target))

    def check(self, method: str, target: str) -> None:
        for fault in self._faults.get(method, []):
            if fault.times <= 0 or (fault.target is not None and fault.target != target):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.times -= 1
            raise fault.error


def _ms(moment: datetime) -> datetime:
    """`moment` in UTC at millisecond precision, as Spotler stores and compares timestamps."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("Spotler dates must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _blank(value: PropValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class FakeSpotler:
    """`SpotlerGateway` over a dict of contacts keyed by externalId."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._contacts: dict[str, SpotlerContact] = {}
        self._opted_out: set[str] = set()
        self._faults = _Faults()
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (method, externalId or "") of every call, in order
        self.feed_requests: list[tuple[datetime, datetime, int, int]] = []  # (from, to, after, page_size)
        self.closed = False

    # ------------------------------------------------------------------ test control

    def fail(
        self, method: str, error: Exception, *, times: int = 1, skip: int = 0, external_id: str | None = None
    ) -> None:
        """Raise `error` on the next `times` calls of `method` (about `external_id`, if given) after `skip`."""
        self._faults.add(method, error, times=times, skip=skip, target=external_id)

    def remove(self, external_id: str) -> None:
        """The contact is gone from Spotler (merged away or removed outside the API)."""
        del self._contacts[external_id]

    def contact(self, external_id: str) -> SpotlerContact | None:
        """The stored contact as the API would return it; not counted as a call."""
        stored = self._contacts.get(external_id)
        return None if stored is None else self._render(stored)

    def contacts(self) -> list[SpotlerContact]:
        return [self._render(c) for _, c in sorted(self._contacts.items())]

    def seed(self, contact: SpotlerContact) -> None:
        """Store `contact` as given (its `last_changed` decides where it appears in the feed)."""
        self._contacts[contact.external_id] = contact

    def profile_edit(
        self,
        external_id: str,
        *,
        properties: Mapping[str, PropValue] | None = None,
        permissions: Mapping[int, bool] | None = None,
        opt_out: bool | None = None,
    ) -> SpotlerContact:
        """A change the person makes through a Spotler form: always visible in the feed when it changed."""
        stored = self._contacts[external_id]
        was_out = external_id in self._opted_out
        written = self._merge(stored, SpotlerContact(external_id, dict(properties or {}), dict(permissions or {})))
        if permissions and any(permissions.values()):
            self._opted_out.discard(external_id)
        if opt_out is True:
            self._opted_out.add(external_id)
            written = dataclasses.replace(written, permissions=dict.fromkeys(written.permissions, False))
        elif opt_out is False:
            self._opted_out.discard(external_id)
        if written != stored or was_out != (external_id in self._opted_out):
            written = dataclasses.replace(written, last_changed=self._stamp())
        self._contacts[external_id] = written
        return self._render(written)

    # ------------------------------------------------------------------ SpotlerGateway

    async def list_properties(self) -> list[SpotlerProperty]:
        await self._enter("list_properties", "")
        return []

    async def get_contact(self, external_id: str) -> SpotlerContact | None:
        await self._enter("get_contact", external_id)
        return self.contact(external_id)

    async def search_by_email(self, email: str, *, page_size: int = 10) -> list[SpotlerContact]:
        await self._enter("search_by_email", "")
        wanted = email.strip().casefold()
        found = [
            self._render(c)
            for _, c in sorted(self._contacts.items())
            if isinstance(c.properties.get("email"), str) and str(c.properties["email"]).casefold() == wanted
        ]
        return found[:page_size]

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        await self._enter("insert_contact", contact.external_id)
        self._insert(contact, update=update, purge=purge)

    async def insert_contacts(
        self, contacts: Sequence[SpotlerContact], *, update: bool, purge: bool
    ) -> list[BulkItemResult]:
        await self._enter("insert_contacts", "")
        results: list[BulkItemResult] = []
        for contact in contacts:
            try:
                self._insert(contact, update=update, purge=purge)
            except SpotlerError as exc:
                results.append(BulkItemResult(contact.external_id, exc.code or "ERROR", exc.message))
            else:
                results.append(BulkItemResult(contact.external_id, "OK"))
        return results

    async def update_contact(self, contact: SpotlerContact, *, purge: bool) -> None:
        await self._enter("update_contact", contact.external_id)
        stored = self._contacts.get(contact.external_id)
        if stored is None:
            raise SpotlerNotFound("Given contact not found", status=404, code="CONTACT_NOT_FOUND")
        self._write(stored, contact, purge=purge)

    async def anonymize_contact(self, external_id: str) -> None:
        await self._enter("anonymize_contact", external_id)
        stored = self._contacts.get(external_id)
        if stored is None:
            raise SpotlerNotFound("Given contact not found", status=404, code="CONTACT_NOT_FOUND")
        erased = dataclasses.replace(stored, properties={}, permissions=dict.fromkeys(stored.permissions, False))
        if erased != stored:
            erased = dataclasses.replace(erased, last_changed=self._stamp())
        self._contacts[external_id] = erased

    async def get_updates_page(
        self, *, from_date: datetime, to_date: datetime, after: int, page_size: int
    ) -> UpdatesPage:
        if not 1 <= page_size <= MAX_FEED_PAGE:
            raise ValueError(f"page_size must be between 1 and {MAX_FEED_PAGE}")
        if after < 0:
            raise ValueError("after must not be negative")
        start, end = _ms(from_date), _ms(to_date)
        await self._enter("get_updates_page", "")
        self.feed_requests.append((from_date, to_date, after, page_size))
        matches = sorted(
            (c for c in self._contacts.values() if c.last_changed is not None and start <= c.last_changed < end),
            key=lambda c: (c.last_changed, c.external_id),
        )
        page = matches[after : after + page_size]
        following = after + len(page)
        next_after = following if following < len(matches) and following > after else None
        return UpdatesPage(tuple(self._render(c) for c in page), after=after, next_after=next_after)

    async def aclose(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ rules

    async def _enter(self, method: str, external_id: str) -> None:
        self.calls[method] += 1
        self.log.append((method, external_id))
        await asyncio.sleep(0)
        self._faults.check(method, external_id)

    def _stamp(self) -> datetime:
        return _ms(self._clock.now())

    def _insert(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        stored = self._contacts.get(contact.external_id)
        if stored is not None:
            if not update:
                raise SpotlerContactExists("Contact already exists", status=400, code="CONTACT_ALREADY_EXISTS")
            self._write(stored, contact, purge=purge)
            return
        email = contact.properties.get("email")
        if isinstance(email, str) and email.strip():
            # Spotler keeps one contact per address: the write lands on the contact that already has it.
            for other in sorted(self._contacts.values(), key=lambda c: (c.created or T0, c.external_id)):
                have = other.properties.get("email")
                if isinstance(have, str) and have.casefold() == email.strip().casefold():
                    self._write(other, dataclasses.replace(contact, external_id=other.external_id), purge=purge)
                    return
        stamp = self._stamp()
        created = self._merge(SpotlerContact(contact.external_id, created=stamp), contact, purge=True)
        self._contacts[contact.external_id] = dataclasses.replace(created, last_changed=stamp)

    def _write(self, stored: SpotlerContact, write: SpotlerContact, *, purge: bool) -> None:
        if stored.external_id in self._opted_out and any(write.permissions.values()):
            raise SpotlerContactOptedOut(
                "Contact has opted out; permissions cannot be enabled", status=400, code="CONTACT_OPTOUT"
            )
        written = self._merge(stored, write, purge=purge)
        if written != stored:
            written = dataclasses.replace(written, last_changed=self._stamp())
        self._contacts[stored.external_id] = written

    @staticmethod
    def _merge(stored: SpotlerContact, write: SpotlerContact, *, purge: bool = False) -> SpotlerContact:
        """Given properties replace, None or blank clears one, set bits merge; purge starts from nothing."""
        props: dict[str, PropValue] = {} if purge else dict(stored.properties)
        perms: dict[int, bool] = {} if purge else dict(stored.permissions)
        for name, value in write.properties.items():
            if name == PERMISSIONS_PROPERTY and isinstance(value, dict):
                perms.update(value)
            elif isinstance(value, dict):
                old = props.get(name)
                props[name] = {**(old if isinstance(old, dict) else {}), **value}
            elif _blank(value):
                props.pop(name, None)
            else:
                props[name] = value
        perms.update(write.permissions)
        return dataclasses.replace(stored, properties=props, permissions=perms)

    def _render(self, stored: SpotlerContact) -> SpotlerContact:
        out = stored.external_id in self._opted_out
        channels = {"EMAIL": bool(stored.email) and not out}
        return dataclasses.replace(stored, channels=channels)


# ---------------------------------------------------------------------------------------------- Dataverse


@dataclass(frozen=True, slots=True)
class RowWrite:
    """One applied write: `update_row` (a single PATCH) or `update_rows` (one change set of a batch)."""

    method: str
    entity: EntityName
    record_id: str
    changes: Mapping[str, AttrValue]


@dataclass
class _StoredRow:
    attributes: dict[str, AttrValue]
    version: int
    modified_on: datetime

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


_PRIMARY_KEYS: dict[str, str] = {"contact": "contactid", "lead": "leadid", "account": "accountid"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FakeDataverse:
    """`DataverseGateway` over a dict of rows; every applied write is recorded in `writes`."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._rows: dict[tuple[EntityName, str], _StoredRow] = {}
        self._faults = _Faults()
        self.calls: Counter[str] = Counter()
        self.writes: list[RowWrite] = []
        self.closed = False
        self._batch_stops: list[int] = []

    # ------------------------------------------------------------------ test control

    def stop_next_batch_after(self, executed: int) -> None:
        """The next `update_rows` answers only its first `executed` requests, as a truncated $batch does.

        `DataverseClient` reports each request the response did not answer as 424 `NotExecuted`.
        """
        self._batch_stops.append(executed)

    def put_row(self, entity: EntityName, record_id: str, attributes: Mapping[str, AttrValue]) -> DataverseRow:
        now = self._clock.now()
        self._rows[(entity, record_id)] = _StoredRow({**attributes, "modifiedon": _iso(now)}, 1, now)
        row = self.row(entity, record_id)
        assert row is not None
        return row

    def edit_row(self, entity: EntityName, record_id: str, changes: Mapping[str, AttrValue]) -> DataverseRow:
        """A user's save in Dynamics: the row changes (new version) without a gateway write."""
        stored = self._rows[(entity, record_id)]
        now = self._clock.now()
        stored.attributes.update({**changes, "modifiedon": _iso(now)})
        stored.version += 1
        stored.modified_on = now
        row = self.row(entity, record_id)
        assert row is not None
        return row

    def row(self, entity: EntityName, record_id: str) -> DataverseRow | None:
        """The whole stored row; not counted as a call."""
        stored = self._rows.get((entity, record_id))
        if stored is None:
            return None
        return DataverseRow(entity, record_id, dict(stored.attributes), stored.etag, stored.version, stored.modified_on)

    def fail(
        self, method: str, error: Exception, *, times: int = 1, skip: int = 0, record_id: str | None = None
    ) -> None:
        """Raise `error` on the next `times` calls of `method` (about `record_id`, if given) after `skip`."""
        self._faults.add(method, error, times=times, skip=skip, target=record_id)

    def writes_to(self, record_id: str) -> list[RowWrite]:
        return [w for w in self.writes if w.record_id == record_id]

    # ------------------------------------------------------------------ DataverseGateway

    async def get_row(self, entity: EntityName, record_id: str, columns: Sequence[str]) -> DataverseRow | None:
        await self._enter("get_row", record_id)
        stored = self._rows.get((entity, record_id))
        if stored is None:
            return None
        # The Web API returns every selected column (null when empty) and the primary key.
        attributes = {c: stored.attributes.get(c) for c in columns} if columns else dict(stored.attributes)
        attributes[_PRIMARY_KEYS[entity]] = record_id
        return DataverseRow(entity, record_id, attributes, stored.etag, stored.version, stored.modified_on)

    async def get_rows(
        self, entity: EntityName, record_ids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, DataverseRow]:
        rows = {}
        for record_id in record_ids:
            row = await self.get_row(entity, record_id, columns)
            if row is not None:
                rows[record_id.lower()] = row
        return rows

    async def iter_pages(
        self,
        entity: EntityName,
        columns: Sequence[str],
        *,
        filter_expr: str | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[DataverseRow]]:
        if filter_expr is not None:
            raise NotImplementedError("FakeDataverse does not evaluate OData filters")
        await self._enter("iter_pages", "")
        ids = sorted(record_id for (e, record_id) in self._rows if e == entity)
        for start in range(0, len(ids), page_size):
            page: list[DataverseRow] = []
            for record_id in ids[start : start + page_size]:
                row = self.row(entity, record_id)
                assert row is not None
                page.append(
                    dataclasses.replace(row, attributes={c: row.attributes.get(c) for c in columns}) if columns else row
                )
            yield page

    async def update_row(
        self, entity: EntityName, record_id: str, changes: Mapping[str, AttrValue], *, etag: str | None = None
    ) -> None:
        await self._enter("update_row", record_id)
        status = self._apply("update_row", RowUpdate(entity, record_id, changes, etag))
        if status == 404:
            raise DataverseNotFound(
                f"{entity} With Id = {record_id} Does Not Exist", status=404, code=ROW_NOT_FOUND_CODE
            )
        if status == 412:
            raise DataverseConflict("The version of the existing record doesn't match", status=412)

    async def update_rows(self, updates: Sequence[RowUpdate]) -> list[RowUpdateResult]:
        await self._enter("update_rows", "")
        executed = self._batch_stops.pop(0) if self._batch_stops else len(updates)
        results: list[RowUpdateResult] = []
        for index, update in enumerate(updates):
            if index >= executed:
                results.append(
                    RowUpdateResult(
                        update.entity, update.record_id, 424, "NotExecuted", "the batch stopped before this request"
                    )
                )
                continue
            status = self._apply("update_rows", update)
            if status == 404:
                code, message = ROW_NOT_FOUND_CODE, f"{update.entity} With Id = {update.record_id} Does Not Exist"
            elif status == 412:
                code, message = "0x80060882", "The version of the existing record doesn't match"
            else:
                code, message = "", ""
            results.append(RowUpdateResult(update.entity, update.record_id, status, code, message))
        return results

    async def aclose(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ rules

    async def _enter(self, method: str, record_id: str) -> None:
        self.calls[method] += 1
        await asyncio.sleep(0)
        self._faults.check(method, record_id)

    def _apply(self, method: str, update: RowUpdate) -> int:
        """Apply an update-only PATCH; the HTTP status it gets (204, 404 or 412)."""
        stored = self._rows.get((update.entity, update.record_id))
        if stored is None:
            return 404
        if update.etag is not None and update.etag != stored.etag:
            return 412
        now = self._clock.now()
        stored.attributes.update(update.changes)
        stored.attributes["modifiedon"] = _iso(now)
        stored.version += 1
        stored.modified_on = now
        self.writes.append(RowWrite(method, update.entity, update.record_id, dict(update.changes)))
        return 204


# ---------------------------------------------------------------------------------------------- state


class YieldingStateStore(InMemoryStateStore):
    """The in-memory store, yielding to the event loop before the calls where concurrent workers meet.

    The in-memory store never suspends, so without this a task runs from one gateway call to the next
    without letting another task read the same watermark, link, claim or lease in between.
    """

    async def get_link(self, entity: EntityName, record_id: str) -> LinkState | None:
        await asyncio.sleep(0)
        return await super().get_link(entity, record_id)

    async def save_link(self, link: LinkState) -> LinkState:
        await asyncio.sleep(0)
        return await super().save_link(link)

    async def get_watermark(self, name: str) -> Watermark | None:
        await asyncio.sleep(0)
        return await super().get_watermark(name)

    async def save_watermark(self, watermark: Watermark) -> Watermark:
        await asyncio.sleep(0)
        return await super().save_watermark(watermark)

    async def acquire_lease(
        self, name: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> str | None:
        await asyncio.sleep(0)
        return await super().acquire_lease(name, owner=owner, now=now, ttl=ttl, existing=existing)

    async def claim_record(
        self, name: str, key: str, *, owner: str, now: datetime, ttl: timedelta, existing: bool = False
    ) -> RecordClaim | None:
        await asyncio.sleep(0)
        return await super().claim_record(name, key, owner=owner, now=now, ttl=ttl, existing=existing)

    async def free_record(
        self,
        name: str,
        token: str,
        *,
        done: tuple[str, ...] | None = None,
        version: int | None = None,
        modified_on: datetime | None = None,
    ) -> None:
        await asyncio.sleep(0)
        await super().free_record(name, token, done=done, version=version, modified_on=modified_on)


# ---------------------------------------------------------------------------------------------- wiring

MAPPING: MappingConfig = two_way_names_mapping()
APP_USER = "5a6b7c8d-0000-4000-8000-00000000a99e"


def row_attributes(record_id: str, **overrides: AttrValue) -> dict[str, AttrValue]:
    """A contact row holding every column the default mapping reads, with an e-mail of its own."""
    attrs = person(emailaddress1=f"{record_id}@example.com", statuscode=1)
    attrs.pop("companyname")  # lead and account columns
    attrs.pop("name")
    attrs.update(overrides)
    return attrs


def change(
    record_id: str,
    overrides: Mapping[str, AttrValue] | None = None,
    *,
    kind: ChangeKind = ChangeKind.CREATE,
    key: str | None = None,
    version: int | None = 1,
    modified_on: datetime | None = T0,
    changed: frozenset[str] | None = None,
    initiating_user_id: str | None = None,
    user_id: str | None = None,
) -> ChangeEvent:
    """A complete change event (every mapped column present) of contact `record_id`.

    `overrides` are the columns this change set; for an Update they are also its `changed` columns.
    """
    attrs = dict(overrides or {})
    attributes = row_attributes(record_id, **attrs)
    attributes.setdefault("modifiedon", _iso(modified_on or T0))
    if changed is None:
        changed = frozenset(attributes) if kind is ChangeKind.CREATE else frozenset(attrs)
    return ChangeEvent(
        entity="contact",
        record_id=record_id,
        kind=kind,
        attributes=attributes,
        changed=changed,
        idempotency_key=key or f"{record_id}:{kind.value}:{version}",
        version=version,
        modified_on=modified_on,
        initiating_user_id=initiating_user_id,
        user_id=user_id or "5a6b7c8d-0000-4000-8000-000000000001",
    )


@dataclass
class World:
    """One connector's worth of fakes around a state store, and the services wired to them."""

    clock: FakeClock = field(default_factory=FakeClock)
    state: InMemoryStateStore = field(default_factory=InMemoryStateStore)
    spotler: FakeSpotler = field(init=False)
    dataverse: FakeDataverse = field(init=False)

    def __post_init__(self) -> None:
        self.spotler = FakeSpotler(self.clock)
        self.dataverse = FakeDataverse(self.clock)

    def push(
        self,
        *,
        app_user_id: str | None = APP_USER,
        status_columns: StatusColumns | None = None,
        record_lease: timedelta = DEFAULT_TTL,
        lease_wait: timedelta | None = None,
        guard: ChangeGuard | None = None,
    ) -> PushService:
        """The push service as `build_runtime` wires it; `lease_wait` (real time) keeps its default unless given."""
        waits = {} if lease_wait is None else {"lease_wait": lease_wait}
        return PushService(
            state=self.state,
            spotler=self.spotler,
            dataverse=self.dataverse,
            mapping=MAPPING,
            options=options(),
            clock=self.clock,
            app_user_id=app_user_id,
            status_columns=status_columns or StatusColumns(),
            record_lease=record_lease,
            guard=guard,
            **waits,
        )

    def pull(
        self,
        pull_options: PullOptions | None = None,
        *,
        push: PushService | None = None,
        lease_wait: timedelta | None = None,
    ) -> PullService:
        leases = None if lease_wait is None else RecordLeases(self.state, self.clock, wait=lease_wait)
        return PullService(
            state=self.state,
            spotler=self.spotler,
            dataverse=self.dataverse,
            mapping=MAPPING,
            options=options(),
            pull_options=pull_options or PullOptions(),
            clock=self.clock,
            push=push,
            leases=leases,
        )

    async def linked(self, record_id: str, **attrs: AttrValue) -> ChangeEvent:
        """Create contact `record_id` in Dataverse and push it to Spotler; the create event."""
        self.dataverse.put_row("contact", record_id, row_attributes(record_id, **attrs))
        event = change(record_id, attrs, modified_on=self.clock.now())
        outcome = await self.push().handle(event, owner=f"msg-{record_id}-create")
        assert outcome.action == "create", outcome
        return event


if TYPE_CHECKING:

    def _conforms(spotler: FakeSpotler, dataverse: FakeDataverse) -> tuple[SpotlerGateway, DataverseGateway]:
        """Checked by mypy only: the fakes implement the gateway Protocols."""
        return spotler, dataverse
