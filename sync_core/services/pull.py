"""Pull: bring Spotler changes since the watermark to Dataverse, page by page, then replay due dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync_core.domain.eligibility import is_active
from sync_core.domain.errors import SyncError
from sync_core.domain.event_codec import EventDecodeError, event_from_dict
from sync_core.domain.feed import FeedCursor, PagingMode, page_request, take_page
from sync_core.domain.mapping import EntityMapping, MappingConfig
from sync_core.domain.merge import PullPlan, plan_pull
from sync_core.domain.plan import PushOptions
from sync_core.domain.ports import ConcurrencyConflict, DataverseGateway, SpotlerGateway, StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import (
    AttrValue,
    ChangeEvent,
    ChangeKind,
    DataverseRow,
    EntityName,
    EventSource,
    RowUpdate,
    SpotlerContact,
)
from sync_core.domain.state_model import LinkState, StatusEntry, Watermark
from sync_core.services.leases import RecordLeases
from sync_core.services.push import NO_STATUS_COLUMNS, PushService, RetryLater, StatusColumns, backoff_delay

log = logging.getLogger("sync_core.pull")

WATERMARK_NAME = "spotler-contacts"


@dataclass(frozen=True, slots=True)
class PullOptions:
    overlap: timedelta = timedelta(minutes=10)
    initial_lookback: timedelta = timedelta(hours=24)
    page_size: int = 500
    run_lease: timedelta = timedelta(minutes=10)
    max_replays: int = 12
    read_concurrency: int = 8
    paging: PagingMode = "timestamp"


@dataclass(slots=True)
class PullReport:
    started: bool = True
    completed: bool = False
    pages: int = 0
    contacts: int = 0
    rows_updated: int = 0
    spotler_fixes: int = 0
    conflicts: int = 0
    failed_rows: int = 0
    found_changes: int = 0  # rows found inactive or deleted whose webhook never arrived
    replayed: int = 0
    replay_failures: int = 0
    watermark: datetime | None = None
    note: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


class PullService:
    """Runs the Spotler -> Dynamics pull; safe against overlapping runs and restarts."""

    def __init__(
        self,
        *,
        state: StateStore,
        spotler: SpotlerGateway,
        dataverse: DataverseGateway,
        mapping: MappingConfig,
        options: PushOptions,
        pull_options: PullOptions,
        clock: Callable[[], datetime],
        push: PushService | None = None,
        status_columns: StatusColumns = NO_STATUS_COLUMNS,
        leases: RecordLeases | None = None,
    ) -> None:
        self._state = state
        self._spotler = spotler
        self._dataverse = dataverse
        self._mapping = mapping
        self._options = options
        self._pull = pull_options
        self._clock = clock
        self._push = push
        self._status_columns = status_columns
        self._leases = leases or RecordLeases(state, clock)

    async def run(self, *, max_pages: int | None = None) -> PullReport:
        """One pull run. `max_pages` stops early (as a cut-off run would); the next run resumes there.

        A run that fails or stops early keeps its cursor and gives up its lease, so the next run resumes at
        once; a run that is killed keeps the lease until it expires (`run_lease`, the function timeout).
        """
        report = PullReport()
        claimed = await self._begin(self._clock(), report)
        if claimed is None:
            return report
        progress = [claimed]  # the newest saved watermark, for giving the lease back
        try:
            finished = await self._read_window(progress, report, max_pages)
        except BaseException:
            await self._release(progress[-1])
            raise
        if not finished:
            await self._release(progress[-1])
            report.note = "stopped before the end of the feed; the next run resumes"
            report.watermark = progress[-1].value
            return report
        done = progress[-1]
        done = await self._state.save_watermark(
            dataclasses.replace(
                done,
                value=_latest(done.value, done.run_high),
                run_from=None,
                run_to=None,
                run_after=0,
                run_high=None,
                run_id="",
                run_started=None,
                run_mode="timestamp",
                run_last_id=None,
            )
        )
        report.completed = True
        report.watermark = done.value
        await self.replay_due(report)
        return report

    async def _read_window(self, progress: list[Watermark], report: PullReport, max_pages: int | None) -> bool:
        """Read and apply pages until the window is done (True) or `max_pages` were applied (False)."""
        while True:
            if max_pages is not None and report.pages >= max_pages:
                return False
            watermark = progress[-1]
            assert watermark.run_from is not None
            assert watermark.run_to is not None
            cursor = FeedCursor(watermark.run_from, watermark.run_after, watermark.run_mode, watermark.run_last_id)
            after, size = page_request(cursor, self._pull.page_size)
            page = await self._spotler.get_updates_page(
                from_date=cursor.start, to_date=watermark.run_to, after=after, page_size=size
            )
            fresh, moved = take_page(cursor, page.contacts)
            if moved.mode != cursor.mode:
                log.warning("the updates feed is not ordered by lastChanged; paging by offset for this run")
            restarted = moved.start == cursor.start and moved.skip < cursor.skip
            if restarted:
                log.info("contacts moved in the updates feed while paging; reading their second again")
            await self._apply_page(tuple(fresh), report, owner=f"pull:{watermark.run_id}")
            report.pages += 1
            report.contacts += len(fresh)
            high = watermark.run_high
            for contact in fresh:
                if contact.last_changed is not None and (high is None or contact.last_changed > high):
                    high = contact.last_changed
            watermark = dataclasses.replace(
                watermark,
                run_from=moved.start,
                run_after=moved.skip,
                run_mode=moved.mode,
                run_last_id=moved.last_id,
                run_high=high,
                run_started=self._clock(),
            )
            if not restarted and (page.next_after is None or not fresh):
                progress.append(watermark)
                return True
            progress.append(await self._state.save_watermark(watermark))

    async def _release(self, watermark: Watermark) -> None:
        """Give the lease back, keeping the cursor (best effort: an expired lease frees it too)."""
        try:
            await self._state.save_watermark(dataclasses.replace(watermark, run_started=None))
        except Exception:
            log.warning("could not release the pull lease; it expires by itself", exc_info=True)

    async def _begin(self, now: datetime, report: PullReport) -> Watermark | None:
        current = await self._state.get_watermark(WATERMARK_NAME) or Watermark(name=WATERMARK_NAME)
        if current.in_progress and current.run_started is not None and now - current.run_started < self._pull.run_lease:
            report.started = False
            report.note = "another pull run is in progress"
            return None
        if not current.in_progress:
            start = (current.value - self._pull.overlap) if current.value else now - self._pull.initial_lookback
            current = dataclasses.replace(
                current,
                run_from=start,
                run_to=now,
                run_after=0,
                run_high=current.value,
                run_id=uuid.uuid4().hex,
                run_started=now,
                run_mode=self._pull.paging,
                run_last_id=None,
            )
        else:
            current = dataclasses.replace(current, run_id=uuid.uuid4().hex, run_started=now)
        try:
            return await self._state.save_watermark(current)
        except ConcurrencyConflict:
            report.started = False
            report.note = "another pull run claimed the watermark first"
            return None

    async def _apply_page(self, contacts: tuple[SpotlerContact, ...], report: PullReport, owner: str) -> None:
        """Apply one page; raises (without moving the watermark) when a change could not be applied yet.

        The page holds the lease of every record it touches, so no push of the same record runs in between
        reading the row and writing both sides.
        """
        held: list[tuple[EntityName, str, str]] = []
        try:
            plans, found = await self._plan_page(contacts, owner, held)
            await self._write_page(plans, report)
            await self._apply_found(found, report, owner)
        finally:
            for entity, record_id, token in held:
                await self._leases.give_back(entity, record_id, token)

    async def _plan_page(
        self, contacts: tuple[SpotlerContact, ...], owner: str, held: list[tuple[EntityName, str, str]]
    ) -> tuple[list[PullPlan], list[ChangeEvent]]:
        now = self._clock()
        busy: list[str] = []
        found_changes: list[ChangeEvent] = []
        # The page's reads go out together, bounded well below Dataverse's concurrency limit.
        gate = asyncio.Semaphore(self._pull.read_concurrency)

        async def linked(contact: SpotlerContact) -> list[tuple[SpotlerContact, LinkState, EntityMapping]]:
            async with gate:
                found: list[tuple[SpotlerContact, LinkState, EntityMapping]] = []
                for candidate in await self._state.links_for_external_id(contact.external_id):
                    mapping = self._mapping.for_entity(candidate.entity)
                    if mapping is None:
                        continue
                    token = await self._leases.take(candidate.entity, candidate.record_id, owner)
                    if token is None:
                        busy.append(f"{candidate.entity} {candidate.record_id}")
                        continue
                    held.append((candidate.entity, candidate.record_id, token))
                    link = await self._state.get_link(candidate.entity, candidate.record_id)  # as of the lease
                    if link is not None:
                        found.append((contact, link, mapping))
                return found

        pairs = [pair for group in await asyncio.gather(*map(linked, contacts)) for pair in group]
        # The page's rows are read after its leases are held: one query per table, not a GET per row.
        ids: dict[EntityName, tuple[EntityMapping, list[str]]] = {}
        for _, link, mapping in pairs:
            ids.setdefault(link.entity, (mapping, []))[1].append(link.record_id)
        read = await asyncio.gather(
            *(self._dataverse.get_rows(entity, wanted, mapping.columns()) for entity, (mapping, wanted) in ids.items())
        )
        rows = {
            (entity, record_id): row
            for entity, found in zip(ids, read, strict=True)
            for record_id, row in found.items()
        }
        groups: dict[str, list[tuple[SpotlerContact, LinkState, EntityMapping, DataverseRow | None]]] = {}
        for contact, link, mapping in pairs:
            row = rows.get((link.entity, link.record_id.lower()))
            if (row is None or not is_active(row.attributes)) and not link.anonymized:
                # Inactive rows are read-only and gone ones cannot be written: the change that made them so
                # never reached the push (a lost webhook), so its rule is applied instead of a write-back.
                found_changes.append(_found_change(link, row, owner))
                continue
            groups.setdefault(contact.external_id, []).append((contact, link, mapping, row))
        plans: list[PullPlan] = []
        for group in groups.values():
            planned = [
                plan_pull(contact, link, row, mapping, self._options, now) for contact, link, mapping, row in group
            ]
            fixes = [p.spotler_fix for p in planned if p.spotler_fix is not None]
            if fixes:
                # A row's correction of the shared contact (a consent withdrawal) is what its other rows see: they
                # are planned against the corrected contact now, not on the next pull.
                contact = group[0][0]
                fixed = dataclasses.replace(
                    contact,
                    properties={**contact.properties, **{k: v for f in fixes for k, v in f.properties.items()}},
                    permissions={**contact.permissions, **{b: v for f in fixes for b, v in f.permissions.items()}},
                )
                planned = [
                    p if p.spotler_fix is not None else plan_pull(fixed, link, row, mapping, self._options, now)
                    for p, (_, link, mapping, row) in zip(planned, group, strict=True)
                ]
            plans.extend(p for p in planned if not p.skipped)
        if busy:
            raise RetryLater(f"records being pushed right now: {', '.join(busy[:5])}; the page is applied again")
        return plans, found_changes

    async def _apply_found(self, changes: list[ChangeEvent], report: PullReport, owner: str) -> None:
        """Apply the push rule to rows found inactive or gone (their leases are held by this page)."""
        if self._push is None:
            return
        for event in changes:
            try:
                outcome = await self._push.apply_found(event, note="found by the pull")
            except ConcurrencyConflict as exc:
                raise RetryLater(f"{event.entity} {event.record_id} changed while the pull applied it") from exc
            except SyncError as exc:
                if exc.retryable:
                    raise
                report.failed_rows += 1
                detail = f"{type(exc).__name__}: {exc.message} (found by the pull)"
                await self._status(event.entity, event.record_id, ReasonCode.PERMANENT_ERROR, detail, self._clock())
                continue
            report.found_changes += 1
            if outcome.reason is not None:
                report.reasons[outcome.reason.value] = report.reasons.get(outcome.reason.value, 0) + 1

    async def _write_page(self, plans: list[PullPlan], report: PullReport) -> None:
        now = self._clock()
        updates = [
            RowUpdate(p.link.entity, p.link.record_id, values, etag=p.etag)
            for p in plans
            if (values := {**p.changes, **self._status_values(p)}) and (p.changes or p.status_changed)
        ]
        results = {(r.entity, r.record_id): r for r in await self._dataverse.update_rows(updates)} if updates else {}
        for plan in plans:
            link = plan.link
            result = results.get((link.entity, link.record_id))
            if result is not None and not result.ok:
                # 412: changed since read; 424: a $batch that stopped early never ran it; 429/5xx: try again.
                if result.status in (412, 424, 429) or result.status >= 500:
                    raise RetryLater(f"Dataverse update of {link.entity} {link.record_id} answered {result.status}")
                report.failed_rows += 1
                detail = f"Dataverse refused the write-back ({result.status} {result.error_code}): {result.message}"
                await self._refused(plan, detail, now)
                continue
            if plan.spotler_fix is not None:
                try:
                    await self._spotler.update_contact(plan.spotler_fix, purge=False)
                except SyncError as exc:
                    if exc.retryable:
                        raise
                    # Spotler will never take this one: say so on the record and let the feed move on.
                    report.failed_rows += 1
                    detail = f"Spotler refused the correction: {type(exc).__name__}: {exc.message}"
                    await self._refused(plan, detail, now)
                    continue
                report.spotler_fixes += 1
            if plan.suppress is not None:
                await self._state.put_suppression(plan.suppress)
            await self._state.save_link(plan.link)
            if plan.changes:
                report.rows_updated += 1
            if plan.conflicts:
                report.conflicts += 1
            if plan.changes or plan.spotler_fix or plan.conflicts or plan.status_changed:
                await self._status(link.entity, link.record_id, plan.reason, plan.detail, now, link.external_id)
            report.reasons[plan.reason.value] = report.reasons.get(plan.reason.value, 0) + 1

    async def _refused(self, plan: PullPlan, detail: str, now: datetime) -> None:
        """A write the other side refused for good: the record's status says so (link, history, column)."""
        current = await self._state.get_link(plan.link.entity, plan.link.record_id)
        if current is not None:
            with contextlib.suppress(ConcurrencyConflict):
                await self._state.save_link(
                    dataclasses.replace(
                        current, reason=ReasonCode.PERMANENT_ERROR, detail=detail[:2000], last_attempt=now
                    )
                )
        await self._status(
            plan.link.entity, plan.link.record_id, ReasonCode.PERMANENT_ERROR, detail, now, plan.link.external_id
        )
        if self._push is not None:
            await self._push.write_status_columns(
                plan.link.entity, plan.link.record_id, ReasonCode.PERMANENT_ERROR, detail
            )

    def _status_values(self, plan: PullPlan) -> dict[str, AttrValue]:
        """The status columns, written in the same request as the pulled values (nothing extra is sent)."""
        return self._status_columns.values(plan.reason, plan.detail, self._clock())

    async def _status(
        self,
        entity: EntityName,
        record_id: str,
        reason: ReasonCode,
        detail: str,
        now: datetime,
        external_id: str | None = None,
    ) -> None:
        await self._state.append_status(StatusEntry(entity, record_id, now, reason, "pull", detail, external_id))

    async def replay_due(self, report: PullReport | None = None) -> PullReport:
        """Retry dead letters whose next attempt is due; each failure pushes the next attempt further out."""
        report = report or PullReport()
        if self._push is None:
            return report
        now = self._clock()
        for letter in await self._state.list_dead_letters(due_before=now, limit=50):
            ok = await self.replay(letter.entity, letter.event_id)
            if ok:
                report.replayed += 1
            else:
                report.replay_failures += 1
        return report

    async def replay_all(self, *, limit: int = 200) -> tuple[int, int]:
        """Replay every dead letter now, due or not (an operator's call after an outage); (replayed, failed)."""
        replayed = failed = 0
        for letter in await self._state.list_dead_letters(limit=limit):
            if await self.replay(letter.entity, letter.event_id):
                replayed += 1
            else:
                failed += 1
        return replayed, failed

    async def replay(self, entity: EntityName, event_id: str) -> bool:
        """Replay one dead letter now; True when it was applied (and removed)."""
        if self._push is None:
            return False
        letter = await self._state.get_dead_letter(entity, event_id)
        if letter is None:
            return False
        now = self._clock()
        try:
            event = dataclasses.replace(event_from_dict(dict(letter.event)), source=EventSource.REPLAY)
        except EventDecodeError:
            return False
        try:
            outcome = await self._push.handle(event, owner=f"replay:{event_id}:{letter.replays}")
        except (RetryLater, SyncError) as exc:
            replays = letter.replays + 1
            due = now + backoff_delay(replays + 1) if replays < self._pull.max_replays else None
            await self._state.put_dead_letter(
                dataclasses.replace(letter, replays=replays, last_failed=now, next_retry=due, message=str(exc)[:1000])
            )
            return False
        if outcome.reason is ReasonCode.PERMANENT_ERROR:
            return False
        await self._state.delete_dead_letter(letter.entity, letter.event_id)
        return True


def _found_change(link: LinkState, row: DataverseRow | None, owner: str) -> ChangeEvent:
    """The change a lost webhook would have carried: a delete (row gone) or a deactivation (row inactive)."""
    key = f"{owner}:found:{link.entity}:{link.record_id}"
    if row is None:
        return ChangeEvent(
            entity=link.entity,
            record_id=link.record_id,
            kind=ChangeKind.DELETE,
            attributes={},
            changed=frozenset(),
            idempotency_key=key,
            source=EventSource.PULL,
        )
    return ChangeEvent(
        entity=link.entity,
        record_id=link.record_id,
        kind=ChangeKind.SET_STATE,
        attributes=dict(row.attributes),
        changed=frozenset({"statecode"}),
        idempotency_key=key,
        source=EventSource.PULL,
        version=row.version,
        modified_on=row.modified_on,
    )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
