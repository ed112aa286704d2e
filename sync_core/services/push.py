"""Push: apply one accepted Dataverse change to Spotler, remember the outcome, and say why."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeVar

from sync_core.domain.consent import email_hash, normalize_email
from sync_core.domain.eligibility import is_active
from sync_core.domain.errors import NotFoundError, SyncError
from sync_core.domain.event_codec import event_to_dict
from sync_core.domain.mapping import EntityMapping, MappingConfig
from sync_core.domain.plan import (
    ENTITY_PRECEDENCE,
    PushAction,
    PushInput,
    PushOptions,
    PushPlan,
    live_peers,
    plan_departure,
    plan_push,
)
from sync_core.domain.ports import ConcurrencyConflict, DataverseGateway, RecordClaim, SpotlerGateway, StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, ChangeEvent, ChangeKind, EntityName, EventSource, SpotlerContact
from sync_core.domain.state_model import DeadLetter, LinkState, StatusEntry
from sync_core.services.leases import DEFAULT_TTL, RecordLeases, email_lease_name

log = logging.getLogger("sync_core.push")
_T = TypeVar("_T", int, datetime)


class ChangeGuard(Protocol):
    """The live mass-change guard: may this record be anonymized or unsubscribed now?"""

    async def admit(self, entity: EntityName, record_id: str, action: Literal["anonymize", "unsubscribe"]) -> bool: ...


class HeldByGuard(Exception):
    """The mass-change guard paused an anonymize or unsubscribe; nothing was written."""


class RetryLater(Exception):
    """A transient failure: the event must be delivered again (the queue retries, then dead-letters)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class PushOutcome:
    action: str
    reason: ReasonCode | None
    detail: str
    external_id: str | None = None
    successor: LinkState | None = None  # the record that speaks for the person now that this one left
    # Live records of an address this change left a tombstone on, linked before it was known: they are planned
    # again, so that none keeps a subscription the tombstone takes away.
    rechecks: tuple[LinkState, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusColumns:
    """Dataverse columns that receive the Spotler status (None: not written).

    `reason` is a choice column holding `ReasonCode.option_value` (as `dataverse setup` creates it) or, with
    `reason_as_text`, a text column holding the code itself. `synced_on` receives the time of the last outcome
    that left the record in sync; other outcomes leave it as it was.
    """

    reason: str | None = None
    detail: str | None = None
    synced_on: str | None = None
    reason_as_text: bool = False

    def values(self, reason: ReasonCode, detail: str, now: datetime) -> dict[str, AttrValue]:
        """The column values that say `reason` (empty when no status column is configured)."""
        if self.reason is None:
            return {}
        values: dict[str, AttrValue] = {self.reason: reason.value if self.reason_as_text else reason.option_value}
        if self.detail is not None:
            values[self.detail] = detail[:2000]
        if self.synced_on is not None and reason.is_synced:
            values[self.synced_on] = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return values


NO_STATUS_COLUMNS = StatusColumns()


def _noted(plan: PushPlan, note: str) -> PushPlan:
    """The plan with `note` added to its detail (on the record's status and link alike)."""
    detail = f"{plan.detail} ({note})"
    link = dataclasses.replace(plan.link, detail=detail) if plan.link is not None else None
    return dataclasses.replace(plan, detail=detail, link=link)


def _retarget(plan: PushPlan, external_id: str, why: str) -> PushPlan:
    """The plan with its link (and status) pointing at the Spotler contact `external_id`."""
    if external_id == plan.external_id:
        return plan
    detail = f"{plan.detail} ({why})"
    link = dataclasses.replace(plan.link, external_id=external_id, detail=detail) if plan.link is not None else None
    return dataclasses.replace(plan, external_id=external_id, link=link, detail=detail)


def backoff_delay(attempt: int, *, base_seconds: float = 60.0, cap_seconds: float = 6 * 3600.0) -> timedelta:
    """Exponential delay before the next automatic retry of a dead letter."""
    return timedelta(seconds=min(cap_seconds, base_seconds * (2 ** max(0, attempt - 1))))


class PushService:
    """Carries out push plans against Spotler and records links, tombstones and status."""

    def __init__(
        self,
        *,
        state: StateStore,
        spotler: SpotlerGateway,
        dataverse: DataverseGateway,
        mapping: MappingConfig,
        options: PushOptions,
        clock: Callable[[], datetime],
        app_user_id: str | None = None,
        status_columns: StatusColumns = NO_STATUS_COLUMNS,
        record_lease: timedelta = DEFAULT_TTL,
        lease_wait: timedelta = timedelta(seconds=10),
        guard: ChangeGuard | None = None,
    ) -> None:
        self._state = state
        self._spotler = spotler
        self._dataverse = dataverse
        self._mapping = mapping
        self._options = options
        self._clock = clock
        self._app_user = app_user_id
        self._status_columns = status_columns
        self._guard = guard
        self.leases = RecordLeases(state, clock, ttl=record_lease, wait=lease_wait)

    async def handle(self, event: ChangeEvent, *, owner: str) -> PushOutcome:
        """Apply `event` once. Raises RetryLater on a transient failure (after releasing its claim)."""
        mapping = self._mapping.for_entity(event.entity)
        if mapping is None:
            return PushOutcome("ignored", None, f"{event.entity} is not mapped")
        if event.made_by(self._app_user):  # our own pull write-backs and status columns
            return PushOutcome("ignored", None, "change made by the connector itself")
        now = self._clock()
        key = event.idempotency_key
        # One change of a record at a time: two workers must not write Spotler in an order nobody chose. The claim
        # of this delivery and the record's lease are one row (one write), given back with the outcome.
        claim = await self.leases.claim(
            event.entity, event.record_id, owner, key, existing=event.kind is not ChangeKind.CREATE
        )
        if claim is None:
            raise RetryLater("another change of this record is being applied")
        if claim.token is None:
            log.info("duplicate delivery ignored", extra={"entity": event.entity, "record_id": event.record_id})
            return PushOutcome("ignored", None, "duplicate delivery")
        completed = False
        try:
            outcome, completed = await self._handle_claimed(event, mapping, owner, now, claim)
            return outcome
        finally:
            if completed:
                # Completed: a duplicate is told by its key, and the newest version orders later events (the link
                # is not saved when the change changed nothing).
                await self.leases.give_back(
                    event.entity,
                    event.record_id,
                    claim.token,
                    done=(*claim.done, key),
                    version=_newest(claim.version, event.version),
                    modified_on=_newest(claim.modified_on, event.modified_on),
                )
            else:
                # Given back, not completed: a redelivery or an operator's replay of its dead letter claims it again.
                await self.leases.give_back(event.entity, event.record_id, claim.token)

    async def _handle_claimed(
        self, event: ChangeEvent, mapping: EntityMapping, owner: str, now: datetime, claim: RecordClaim
    ) -> tuple[PushOutcome, bool]:
        """The outcome, and whether the change is completed (False: it may be delivered or replayed again)."""
        try:
            outcome = await self._apply(event, mapping, now, seen=claim)
        except ConcurrencyConflict as exc:
            raise RetryLater("another worker updated the record's link at the same time") from exc
        except HeldByGuard as exc:
            # Held, not dropped: the queue delivers it again; on its last delivery it waits as a dead letter that
            # the pull replays once the hour has slid on (or an operator replays after a bulk run).
            await self._record_status(event, ReasonCode.PAUSED_BY_GUARD, "paused", str(exc), None, now)
            raise RetryLater(str(exc), retry_after=60.0) from exc
        except SyncError as exc:
            if exc.retryable:
                await self._record_failure(event, ReasonCode.TRANSIENT_ERROR, exc, now)
                raise RetryLater(
                    f"{type(exc).__name__}: {exc.message}", retry_after=getattr(exc, "retry_after", None)
                ) from exc
            await self._record_failure(event, ReasonCode.PERMANENT_ERROR, exc, now)
            await self.dead_letter(event, exc, attempts=1, now=now, retry=False)
            # Not completed: an operator's replay of the dead letter must be able to claim it again.
            return PushOutcome("failed", ReasonCode.PERMANENT_ERROR, exc.message), False
        if outcome.successor is not None:
            await self._hand_over(outcome.successor, owner)
        for other in outcome.rechecks:
            await self._hand_over(other, owner, note="its address has a tombstone now")
        return outcome, True

    async def _hand_over(self, successor: LinkState, owner: str, *, note: str = "speaks for the person now") -> None:
        """The record that spoke for a shared contact left: the next one's values are written now, not on its
        next save (the contact would keep the departed record's values until then). With another `note`: another
        record that this change concerns is planned again now."""
        lease = await self.leases.take(successor.entity, successor.record_id, owner)
        if lease is None:
            return  # a change of the successor is being applied right now; it writes its own values
        try:
            found = ChangeEvent(
                entity=successor.entity,
                record_id=successor.record_id,
                kind=ChangeKind.UPDATE,
                attributes={},
                changed=frozenset(),
                idempotency_key=f"handover:{successor.entity}:{successor.record_id}",
                source=EventSource.PULL,
                complete=False,
            )
            await self.apply_found(found, note=note)
        except ConcurrencyConflict as exc:
            raise RetryLater("the record taking over the Spotler contact changed at the same time") from exc
        finally:
            await self.leases.give_back(successor.entity, successor.record_id, lease)

    async def apply_found(self, event: ChangeEvent, *, note: str) -> PushOutcome:
        """Apply a change another run found (the caller holds the record's lease); `note` says who found it.

        The pull calls this for a linked row it read inactive or gone: the webhook for that change never came,
        so the rule the push would have applied is applied now. Failures propagate as they are.
        """
        mapping = self._mapping.for_entity(event.entity)
        if mapping is None:
            return PushOutcome("ignored", None, f"{event.entity} is not mapped")
        return await self._apply(event, mapping, self._clock(), note=note)

    async def _row_attributes(self, event: ChangeEvent, mapping: EntityMapping) -> dict[str, AttrValue] | None:
        if event.kind is ChangeKind.DELETE:
            return dict(event.attributes)  # the pre-image, if one was registered: the row itself is gone
        columns = mapping.columns()
        if event.complete and all(c in event.attributes for c in columns):
            return dict(event.attributes)
        row = await self._dataverse.get_row(event.entity, event.record_id, columns)
        return dict(row.attributes) if row is not None else None

    async def _apply(
        self,
        event: ChangeEvent,
        mapping: EntityMapping,
        now: datetime,
        *,
        note: str = "",
        seen: RecordClaim | None = None,
    ) -> PushOutcome:
        attrs = await self._row_attributes(event, mapping)
        link = await self._state.get_link(event.entity, event.record_id)
        if link is not None and seen is not None:
            link = _ordered(link, seen)  # a change that changed nothing moved only the record's lease row
        # A delete's pre-image feeds its tombstone and finds its contact, but a gone row is never paired by e-mail.
        address = normalize_email(attrs.get(mapping.email_attribute)) if attrs is not None else None
        email = address if event.kind is not ChangeKind.DELETE else None
        key = self._options.hash_key
        # Spotler merges by e-mail address: pushes that touch one address (the record's new and old one) run one
        # at a time, so two records of one person never both create a contact.
        hashes = sorted({h for h in (email_hash(key, address) if address else None, link and link.email_hash) if h})
        if link is not None and email is not None and not link.anonymized and hashes == [link.email_hash]:
            # The record keeps its address and its contact: when Spotler still holds that address there, and the
            # plan only updates it (or writes nothing) with no other record on the contact, no contact is created,
            # moved or given up, which is what the address lease serializes. Anything else takes the lease.
            contact = await self._spotler.get_contact(link.external_id)
            if contact is not None and contact.email is not None and contact.email.casefold() == email.casefold():
                with contextlib.suppress(_NeedsAddressLease):
                    return await self._apply_serialized(
                        event, mapping, now, attrs, link, email, address, note, known=contact
                    )
            elif contact is not None and contact.email is not None:
                hashes.append(email_hash(key, contact.email))  # its lease is needed too (below)
        leased = set(hashes)
        for _ in range(_LEASE_ROUNDS):
            held: list[tuple[str, str]] = []
            try:
                for name in map(email_lease_name, sorted(leased)):
                    token = await self.leases.take_named(name, f"{event.entity}/{event.record_id}")
                    if token is None:
                        raise ConcurrencyConflict("another change of this person's address is being applied")
                    held.append((name, token))
                return await self._apply_serialized(
                    event, mapping, now, attrs, link, email, address, note, leased=frozenset(leased)
                )
            except _NeedsContactLease as exc:
                leased.add(exc.email_hash)  # taken in order with the others, and the change planned again
            finally:
                for name, token in held:
                    await self.leases.give_back_named(name, token)
        raise ConcurrencyConflict("the linked Spotler contact keeps changing its address")

    async def _apply_serialized(
        self,
        event: ChangeEvent,
        mapping: EntityMapping,
        now: datetime,
        attrs: dict[str, AttrValue] | None,
        link: LinkState | None,
        email: str | None,
        address: str | None,
        note: str,
        *,
        known: SpotlerContact | None = None,
        leased: frozenset[str] = frozenset(),
    ) -> PushOutcome:
        """Plan and carry out the change. With `known` (the linked contact, read without the address lease), a
        plan that is more than an update of that contact raises _NeedsAddressLease before anything is written.
        Otherwise `leased` are the address hashes whose leases are held; a linked contact that holds another
        address raises _NeedsContactLease before anything is written."""
        stored = link  # as read: `link` may be pointed at another contact below, the stored one is not
        email_match: SpotlerContact | None = None
        spotler: SpotlerContact | None
        if known is not None:
            spotler = known
        elif link is None and email is not None:
            # No link points anywhere: one search by address finds the contact under the record's own id (a
            # create whose link was never saved) as well as another contact that holds the address.
            spotler, email_match = await self._own_or_holder(email, event.record_id), None
            if spotler is not None and spotler.external_id != event.record_id:
                spotler, email_match = None, spotler
        else:
            spotler = await self._spotler.get_contact(link.external_id if link is not None else event.record_id)
        if known is None and spotler is not None and spotler.email is not None:
            # The linked contact holds an address other than the record's (it went with the record that spoke for
            # it): the records of that address change it too, so this change waits for their lease as well.
            held_h = email_hash(self._options.hash_key, spotler.email)
            if held_h not in leased:
                raise _NeedsContactLease(held_h)
        moved_from: SpotlerContact | None = None
        moved_to: SpotlerContact | None = None  # the contact that holds the record's new address, once it moved there
        if link is not None and spotler is None and address is not None:
            # The linked contact is gone: Spotler merged it into the contact that holds the address. Follow it.
            holder = await self._holder(address)
            if holder is not None:
                link, spotler = dataclasses.replace(link, external_id=holder.external_id), holder
        elif (
            link is not None
            and spotler is not None
            and email is not None
            and other_address(link, spotler, email, attrs)
        ):
            # The record's address changed to one another contact already holds, or its contact was anonymized
            # while another contact took the address: the person is that contact now (never a second one).
            holder = await self._holder(email)
            if holder is not None and holder.external_id != link.external_id:
                moved_from = spotler if spotler.email is not None else None
                link, spotler = dataclasses.replace(link, external_id=holder.external_id, base={}), holder
                moved_to = holder
        suppression = await self._state.get_suppression(email_hash(self._options.hash_key, email)) if email else None
        address_peers: list[LinkState] = []
        if link is None and email_match is None and email is not None:
            # No other contact holds the address (the record's own may, from an attempt that wrote it and failed
            # before saving the link): a live record of it may still be linked to a contact that went with
            # another address; the person is not new then (plan: no bit on without an opt-in).
            address_peers = await self._state.links_for_email_hash(email_hash(self._options.hash_key, email))
        own_id = event.record_id
        target_id = link.external_id if link is not None else (email_match.external_id if email_match else own_id)
        peers = await self._peers(event.entity, event.record_id, target_id)
        master: dict[str, AttrValue] | None = None  # pragma: no mutate - read only with a merged_into (never empty)
        if event.merged_into:
            row = await self._dataverse.get_row(event.entity, event.merged_into, mapping.columns())
            master = dict(row.attributes) if row is not None else None
        plan = plan_push(
            PushInput(
                entity=event.entity,
                record_id=event.record_id,
                kind=event.kind,
                attributes=attrs,
                now=now,
                changed=event.changed,
                modified_on=event.modified_on,
                version=event.version,
                link=link,
                spotler=spotler,
                email_match=email_match,
                suppression=suppression,
                peers=peers,
                merged_into=event.merged_into,
                master_attributes=master,
                moved=moved_to is not None,
                left=moved_from,
                address_peers=address_peers,
            ),
            mapping,
            self._options,
        )
        if known is not None and not _plain_update(plan, peers, event):
            raise _NeedsAddressLease
        if self._guard is not None and plan.action in (PushAction.ANONYMIZE, PushAction.UNSUBSCRIBE):
            action: Literal["anonymize", "unsubscribe"] = (
                "anonymize" if plan.action is PushAction.ANONYMIZE else "unsubscribe"
            )
            if not await self._guard.admit(event.entity, event.record_id, action):
                raise HeldByGuard(
                    f"held by the mass-change guard: more than MASS_CHANGE_LIMIT {action} decisions in the last hour"
                )
        if moved_from is not None:
            await self._depart(moved_from, event, mapping)
            plan = _noted(plan, "moved to the Spotler contact that holds its new address")
        if note:
            plan = _noted(plan, note)
        # Dataverse keeps inactive and closed rows read-only: their status columns cannot be written.
        writable = attrs is not None and attrs.get("statecode") in (0, None)
        plan = await self._write_spotler(plan, event, address, leased=known is None)
        await self._remember(plan, event, now, status_columns=writable, previous=stored)
        # A record that stops speaking for a shared contact hands it to the next live record (docs/identity.md).
        # A delete or a merge that keeps the contact for others leaves its link anonymized (not speaking) too.
        # A stale or repeated delivery says nothing new about the record: it remembers nothing and stops nothing.
        stopped = plan.record_status and (
            plan.link is None or not plan.link.in_scope or (plan.link.anonymized and not (link and link.anonymized))
        )
        left = plan.action in (PushAction.NONE, PushAction.RELINK) and stopped
        if left and plan.action is PushAction.RELINK:
            assert plan.external_id is not None  # a relink keeps the contact the record was on
            # The master just joined; the record's own link, anonymized by the relink, is no live peer.
            peers = await self._state.links_for_external_id(plan.external_id)
        others = live_peers(peers) if left else []
        successor = min(others, key=lambda p: (ENTITY_PRECEDENCE[p.entity], p.record_id)) if others else None
        rechecks: tuple[LinkState, ...] = ()
        if plan.suppress is not None:
            rechecks = tuple(
                p
                for p in await self._state.links_for_email_hash(plan.suppress.email_hash)
                if p.in_scope and not p.anonymized and (p.entity, p.record_id) != (event.entity, event.record_id)
            )
        return PushOutcome(
            plan.action.value,
            plan.reason if plan.record_status else None,
            plan.detail,
            plan.external_id,
            successor,
            rechecks,
        )

    async def _own_or_holder(self, email: str, own_id: str) -> SpotlerContact | None:
        """The contact under `own_id` when it holds `email`, else the contact that holds it, if any."""
        matches = await self._spotler.search_by_email(email)
        matches = [m for m in matches if m.email and m.email.casefold() == email.casefold()]
        own = [m for m in matches if m.external_id == own_id]
        return own[0] if own else (min(matches, key=lambda m: m.external_id) if matches else None)

    async def _holder(self, email: str) -> SpotlerContact | None:
        """The Spotler contact that holds `email` (compared case-insensitively), if any."""
        matches = await self._spotler.search_by_email(email)
        matches = [m for m in matches if m.email and m.email.casefold() == email.casefold()]
        return min(matches, key=lambda m: m.external_id) if matches else None

    async def _peers(self, entity: EntityName, record_id: str, external_id: str) -> list[LinkState]:
        """The other records linked to the Spotler contact `external_id` (the store leaves the record itself out)."""
        return await self._state.links_for_external_id(external_id, exclude=(entity, record_id))

    async def _depart(self, contact: SpotlerContact, event: ChangeEvent, mapping: EntityMapping) -> None:
        """The record left `contact` (its address moved to another contact): give it up unless others need it."""
        peers = await self._peers(event.entity, event.record_id, contact.external_id)
        others = live_peers(peers)
        departure = plan_departure(contact, others, mapping, self._options)
        if departure.contact is not None:  # only an unsubscribe carries a contact: the bits to turn off
            await self._spotler.update_contact(departure.contact, purge=False)
        elif departure.action is PushAction.ANONYMIZE:
            await self._spotler.anonymize_contact(contact.external_id)

    async def _write_spotler(
        self, plan: PushPlan, event: ChangeEvent, address: str | None, *, leased: bool
    ) -> PushPlan:
        """Carry out the plan's Spotler write; the plan comes back pointing at the contact that really took it."""
        contact = plan.contact
        if plan.action is PushAction.CREATE and contact is not None:
            await self._spotler.insert_contact(contact, update=True, purge=False)
            return await self._landed(plan, contact)
        if plan.action is PushAction.UNSUBSCRIBE and contact is not None:
            try:
                await self._spotler.update_contact(contact, purge=False)
            except NotFoundError:
                return await self._on_holder(plan, event, address, unsubscribe=contact)
        elif contact is not None:  # an update: nothing but a create, an update and an unsubscribe carries a contact
            try:
                await self._spotler.update_contact(contact, purge=plan.purge)
            except NotFoundError:
                if leased or address is None:
                    await self._spotler.insert_contact(contact, update=True, purge=plan.purge)
                    return await self._landed(plan, contact)
                # Gone from Spotler since it was read: creating it again is serialized like any create.
                name = email_lease_name(email_hash(self._options.hash_key, address))
                token = await self.leases.take_named(name, f"{event.entity}/{event.record_id}")
                if token is None:
                    raise ConcurrencyConflict("another change of this person's address is being applied") from None
                try:
                    await self._spotler.insert_contact(contact, update=True, purge=plan.purge)
                    return await self._landed(plan, contact)
                finally:
                    await self.leases.give_back_named(name, token)
        elif plan.action is PushAction.ANONYMIZE and plan.external_id is not None:
            try:
                await self._spotler.anonymize_contact(plan.external_id)
            except NotFoundError:
                return await self._on_holder(plan, event, address, unsubscribe=None)
        return plan

    async def _landed(self, plan: PushPlan, contact: SpotlerContact) -> PushPlan:
        """Where a create went: Spotler merges a new contact whose address exists into the contact holding it."""
        if await self._spotler.get_contact(contact.external_id) is not None:
            return plan
        holder = await self._holder(contact.email) if contact.email else None
        if holder is None:
            raise ConcurrencyConflict("the new Spotler contact cannot be found yet")
        return _retarget(plan, holder.external_id, "merged by Spotler into the contact that holds its address")

    async def _on_holder(
        self, plan: PushPlan, event: ChangeEvent, address: str | None, *, unsubscribe: SpotlerContact | None
    ) -> PushPlan:
        """The linked contact answered 404: act on the contact that holds the person's address, if there is one.

        A 404 is "already gone" only once Spotler has no contact with the address either; a contact that another
        live record of the person still uses is left alone.
        """
        holder = await self._holder(address) if address else None
        if holder is None:
            log.info("contact already gone in Spotler", extra={"record_id": event.record_id})
            return plan
        peers = await self._peers(event.entity, event.record_id, holder.external_id)
        others = live_peers(peers)
        if not others:
            if unsubscribe is not None:
                await self._spotler.update_contact(
                    dataclasses.replace(unsubscribe, external_id=holder.external_id), purge=False
                )
            else:
                await self._spotler.anonymize_contact(holder.external_id)
        return _retarget(plan, holder.external_id, "found by e-mail")

    async def _remember(
        self,
        plan: PushPlan,
        event: ChangeEvent,
        now: datetime,
        *,
        status_columns: bool,
        previous: LinkState | None = None,
    ) -> None:
        if plan.relink_to is not None:  # only a relink names the record that takes its contact over
            await self._relink(event, plan, now)
        if plan.suppress is not None:
            await self._state.put_suppression(plan.suppress)
        if plan.lift_suppression is not None:
            await self._state.delete_suppression(plan.lift_suppression)
        if plan.link is not None and not _same_link(plan.link, previous):
            await self._state.save_link(plan.link)
        if (plan.record_status and not _repeats_status(plan, previous)) or await self._ends_a_failure(
            plan, event, previous
        ):
            await self._record_status(
                event, plan.reason, plan.action.value, plan.detail, plan.external_id, now, status_columns=status_columns
            )
        elif (
            not plan.record_status
            and previous is not None
            and previous.reason is ReasonCode.TRANSIENT_ERROR
            and previous.failed_change == event.idempotency_key
        ):
            # Only the error this very change left: another change's pending retry stays the record's status.
            await self._restore_outcome(event, previous, now, status_columns=status_columns)

    async def _restore_outcome(
        self, event: ChangeEvent, link: LinkState, now: datetime, *, status_columns: bool
    ) -> None:
        """A change whose earlier attempt failed turned out, on its retry, to say nothing new (stale, or already
        applied by another delivery): the record's outcome is the last one before the failure, not the error."""
        history = sorted(await self._state.list_status(event.entity, event.record_id), key=lambda h: h.at)
        last = next((h for h in reversed(history) if h.reason not in _FAILURE_REASONS), None)
        if last is None:
            return
        with contextlib.suppress(ConcurrencyConflict):  # another worker recorded a newer state: it stands
            await self._state.save_link(
                dataclasses.replace(
                    link, reason=last.reason, detail=last.detail, failures=0, next_retry=None, failed_change=None
                )
            )
        await self._record_status(
            event, last.reason, last.action, last.detail, last.external_id, now, status_columns=status_columns
        )

    async def _ends_a_failure(self, plan: PushPlan, event: ChangeEvent, previous: LinkState | None) -> bool:
        """A delete of a record never linked says nothing new, unless an earlier attempt of it left a transient
        error as the record's status: then its outcome is recorded, or that error would stand for good."""
        if plan.record_status or previous is not None or event.kind is not ChangeKind.DELETE:
            return False
        history = await self._state.list_status(event.entity, event.record_id, limit=1)
        return bool(history) and max(history, key=lambda h: h.at).reason is ReasonCode.TRANSIENT_ERROR

    async def _relink(self, event: ChangeEvent, plan: PushPlan, now: datetime) -> None:
        assert plan.relink_to is not None
        assert plan.external_id is not None
        master = await self._state.get_link(event.entity, plan.relink_to)
        if master is None:
            source = plan.link
            master = LinkState(
                entity=event.entity,
                record_id=plan.relink_to,
                external_id=plan.external_id,
                email_hash=source.email_hash if source else None,
                base=dict(source.base) if source else {},
                reason=ReasonCode.SYNCED,
                detail=f"took over the Spotler contact of merged {event.entity} {event.record_id}",
                last_attempt=now,
            )
            await self._state.save_link(master)

    async def _record_status(
        self,
        event: ChangeEvent,
        reason: ReasonCode,
        action: str,
        detail: str,
        external_id: str | None,
        now: datetime,
        *,
        status_columns: bool = True,
    ) -> None:
        await self._state.append_status(
            StatusEntry(event.entity, event.record_id, now, reason, action, detail, external_id)
        )
        log.info(
            "push outcome",
            extra={"entity": event.entity, "record_id": event.record_id, "reason": reason.value, "action": action},
        )
        if status_columns and event.kind is not ChangeKind.DELETE:
            await self.write_status_columns(event.entity, event.record_id, reason, detail)

    async def write_status_columns(self, entity: EntityName, record_id: str, reason: ReasonCode, detail: str) -> None:
        """Best effort: the status columns are information, a failure there must not fail the sync."""
        changes = self._status_columns.values(reason, detail, self._clock())
        if not changes:
            return
        try:
            await self._dataverse.update_row(entity, record_id, changes)
        except SyncError as exc:
            log.warning(
                "status column not written",
                extra={"entity": entity, "record_id": record_id, "error": type(exc).__name__},
            )

    async def _record_failure(self, event: ChangeEvent, reason: ReasonCode, exc: SyncError, now: datetime) -> None:
        link = await self._state.get_link(event.entity, event.record_id)
        failures = (link.failures if link else 0) + 1
        detail = f"{type(exc).__name__}: {exc.message}"
        if reason is ReasonCode.TRANSIENT_ERROR:
            next_retry = now + backoff_delay(failures, base_seconds=30.0)
            detail = f"{detail} (attempt {failures}, next attempt after {next_retry.isoformat(timespec='seconds')})"
        else:
            next_retry = None
        if link is not None:
            # On a conflict another worker recorded the newer state; its outcome stands.
            with contextlib.suppress(ConcurrencyConflict):
                await self._state.save_link(
                    dataclasses.replace(
                        link,
                        reason=reason,
                        detail=detail,
                        failures=failures,
                        next_retry=next_retry,
                        last_attempt=now,
                        failed_change=event.idempotency_key,
                    )
                )
        await self._record_status(event, reason, "failed", detail, link.external_id if link else None, now)

    async def dead_letter(
        self, event: ChangeEvent, exc: BaseException, *, attempts: int, now: datetime, retry: bool = True
    ) -> None:
        """Park an event that keeps failing: visible, with its error, and replayable."""
        existing = await self._state.get_dead_letter(event.entity, event.idempotency_key)
        replays = existing.replays if existing else 0
        due = now + backoff_delay(replays + 1) if retry else None
        message = getattr(exc, "message", None) or str(exc)
        await self._state.put_dead_letter(
            DeadLetter(
                entity=event.entity,
                event_id=event.idempotency_key,
                event=event_to_dict(event),
                error_class=type(exc).__name__,
                message=message[:1000],
                attempts=(existing.attempts if existing else 0) + attempts,
                replays=replays,
                first_failed=existing.first_failed if existing else now,
                last_failed=now,
                next_retry=due,
                etag=existing.etag if existing else None,
            )
        )
        log.warning(
            "event dead-lettered",
            extra={"entity": event.entity, "record_id": event.record_id, "error": type(exc).__name__},
        )
        if due is not None:
            # The record's status says where its change went; a permanent failure already said why.
            reason = ReasonCode.TRANSIENT_ERROR
            detail = (
                f"parked as dead letter {event.idempotency_key} after {attempts} deliveries; "
                f"next replay after {due.isoformat(timespec='seconds')}"
            )
            link = await self._state.get_link(event.entity, event.record_id)
            if link is not None:
                with contextlib.suppress(ConcurrencyConflict):
                    await self._state.save_link(dataclasses.replace(link, reason=reason, detail=detail, next_retry=due))
            await self._record_status(event, reason, "dead_lettered", detail, link.external_id if link else None, now)


def other_address(link: LinkState, contact: SpotlerContact, email: str, attrs: dict[str, AttrValue] | None) -> bool:
    """Does the record's address differ from the one its linked contact holds (a live record only, for a contact
    that holds none: an anonymized contact is looked past only by a record that may come back to life)?"""
    if contact.email is not None:
        return not link.anonymized and contact.email.casefold() != email.casefold()
    return attrs is not None and is_active(attrs)


def _newest(seen: _T | None, new: _T | None) -> _T | None:
    return new if seen is None or (new is not None and new > seen) else seen


def _ordered(link: LinkState, seen: RecordClaim) -> LinkState:
    """The link with the newest Dataverse version its record's lease row has seen (never moving backwards)."""
    version = _newest(link.dv_version, seen.version)
    modified = _newest(link.dv_modified_on, seen.modified_on)
    if version == link.dv_version and modified == link.dv_modified_on:
        return link
    return dataclasses.replace(link, dv_version=version, dv_modified_on=modified)


def _same_link(new: LinkState, previous: LinkState | None) -> bool:
    """Only the ordering data and the time of the attempt moved: nothing to save (the lease row keeps the order)."""
    if previous is None:
        return False

    def kept(link: LinkState) -> LinkState:
        return dataclasses.replace(link, dv_version=None, dv_modified_on=None, last_attempt=None, etag=None)

    return kept(new) == kept(previous)


class _NeedsAddressLease(Exception):
    """A change planned without the address lease turned out to need it (nothing was written)."""


class _NeedsContactLease(Exception):
    """The linked contact holds an address whose lease is not held yet (nothing was written)."""

    def __init__(self, email_hash: str) -> None:
        super().__init__("the linked Spotler contact holds another address")
        self.email_hash = email_hash


_FAILURE_REASONS = frozenset({ReasonCode.TRANSIENT_ERROR, ReasonCode.PERMANENT_ERROR, ReasonCode.PAUSED_BY_GUARD})
_LEASE_ROUNDS = 3  # the leases of a change are widened at most this often before it is retried as a conflict


def _plain_update(plan: PushPlan, peers: list[LinkState], event: ChangeEvent) -> bool:
    """Is the plan an update (or no write) of the record's own contact that no other record shares?

    (The contact was read holding the record's address, so the record has not moved away from it.)
    """
    return (
        plan.action in (PushAction.UPDATE, PushAction.NONE)
        and not peers
        and event.merged_into is None
        and plan.suppress is None
        and plan.lift_suppression is None
        and plan.relink_to is None
        and plan.link is not None
        and plan.link.in_scope
        and not plan.link.anonymized
        and plan.external_id == plan.link.external_id
    )


def _repeats_status(plan: PushPlan, previous: LinkState | None) -> bool:
    """A save that changed nothing says what the record's last status said: no history entry, no status write."""
    return (
        plan.action is PushAction.NONE
        and previous is not None
        and previous.failures == 0
        and previous.reason is plan.reason
        and previous.detail == plan.detail
    )
