"""How the push service keeps one person on one Spotler contact, on the in-memory fakes (docs/identity.md).

Each test drives `PushService.handle` (or `apply_found`) and reads what a user could see afterwards: the Spotler
contacts and the flags of every write, the links, the tombstones and the status history. What happens in Spotler
between the push's read and its write (a merge by address, a form that creates a contact) is played by hooks of
`RacingSpotler`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import pytest

from sync_core.domain.mapping import MappingConfig, parse_mapping
from sync_core.domain.ports import ConcurrencyConflict
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, ChangeEvent, ChangeKind, EntityName, SpotlerContact
from sync_core.domain.state_model import SuppressionCause
from sync_core.services.leases import email_lease_name
from sync_core.services.push import PushOutcome, PushService, RetryLater
from sync_core.spotler.errors import SpotlerNotFound
from tests.unit.domain_builders import T0, hashed, options
from tests.unit.service_fakes import APP_USER, FakeClock, FakeSpotler, World, change, row_attributes

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"},
]
PERMISSIONS = [
    {"bit": 1, "source": "not_donotbulkemail", "direction": "both"},
    {"bit": 2, "dataverse": "new_newsletter", "direction": "both"},
]
MAPPING: MappingConfig = parse_mapping(
    {"entities": {e: {"fields": FIELDS, "permissions": PERMISSIONS} for e in ("contact", "lead", "account")}}
)
C1 = "0a000000-0000-4000-8000-000000000001"
C2 = "0a000000-0000-4000-8000-000000000002"
L1 = "0b000000-0000-4000-8000-000000000001"
A1 = "0c000000-0000-4000-8000-000000000001"
ADA = "ada@example.com"
BOB = "bob@example.com"
NOT_FOUND = SpotlerNotFound("Given contact not found", status=404, code="CONTACT_NOT_FOUND")
Write = tuple[str, str, bool | None, bool | None]  # (method, externalId, update, purge)


class RacingSpotler(FakeSpotler):
    """The fake, keeping the flags of every write and running a hook before the next call of a method.

    `near_misses` are put in front of every search answer (a search that also returns similar addresses), and
    `descending` returns the exact matches highest externalId first, so no rule can lean on the answer's order.
    """

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.writes: list[Write] = []
        self.near_misses: list[SpotlerContact] = []
        self.descending = False
        self._hooks: dict[str, Callable[[str], None]] = {}

    def before_next(self, method: str, hook: Callable[[str], None]) -> None:
        self._hooks[method] = hook

    def _run_hook(self, method: str, external_id: str) -> None:
        hook = self._hooks.pop(method, None)
        if hook is not None:
            hook(external_id)

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        self.writes.append(("insert", contact.external_id, update, purge))
        self._run_hook("insert_contact", contact.external_id)
        await super().insert_contact(contact, update=update, purge=purge)

    async def update_contact(self, contact: SpotlerContact, *, purge: bool) -> None:
        self.writes.append(("update", contact.external_id, None, purge))
        self._run_hook("update_contact", contact.external_id)
        await super().update_contact(contact, purge=purge)

    async def anonymize_contact(self, external_id: str) -> None:
        self.writes.append(("anonymize", external_id, None, None))
        self._run_hook("anonymize_contact", external_id)
        await super().anonymize_contact(external_id)

    async def search_by_email(self, email: str, *, page_size: int = 10) -> list[SpotlerContact]:
        found = await super().search_by_email(email, page_size=page_size)
        return [*self.near_misses, *(reversed(found) if self.descending else found)]

    def merge_into(self, gone: str, holder: str) -> None:
        """Spotler merged contact `gone` into `holder`: `holder` now has `gone`'s address."""
        stored = self.contact(gone)
        kept = self.contact(holder)
        assert stored is not None
        assert kept is not None
        self.remove(gone)
        self.seed(dataclasses.replace(kept, properties={**kept.properties, "email": stored.email}))


class Setup:
    """A world with a `RacingSpotler`, and Dataverse rows driven through the push service as events."""

    def __init__(
        self, spotler: type[RacingSpotler] = RacingSpotler, mapping: MappingConfig = MAPPING, **push_options: Any
    ) -> None:
        self.world = World()
        self.mapping = mapping
        self.spotler = spotler(self.world.clock)
        self.world.spotler = self.spotler
        self.options = push_options
        self.versions: dict[str, int] = {}
        self.rows: dict[str, tuple[EntityName, dict[str, AttrValue]]] = {}

    def service(self, **kw: Any) -> PushService:
        return PushService(
            state=self.world.state,
            spotler=self.spotler,
            dataverse=self.world.dataverse,
            mapping=self.mapping,
            options=options(**self.options),
            clock=self.world.clock,
            app_user_id=APP_USER,
            **kw,
        )

    def event(
        self,
        record_id: str,
        kind: ChangeKind,
        changes: dict[str, AttrValue] | None = None,
        entity: EntityName = "contact",
    ) -> ChangeEvent:
        """The next change of row `record_id` (an `entity` created on its first change), applied to the fake
        Dataverse."""
        version = self.versions.get(record_id, 0) + 1
        self.versions[record_id] = version
        changes = dict(changes or {})
        if record_id not in self.rows:
            attrs: dict[str, AttrValue] = {**row_attributes(record_id, new_newsletter=True), **changes}
            self.rows[record_id] = (entity, attrs)
            self.world.dataverse.put_row(entity, record_id, attrs)
        entity, attrs = self.rows[record_id]
        attrs.update(changes)
        if kind is ChangeKind.DELETE:
            self.world.dataverse._rows.pop((entity, record_id), None)
        elif version > 1:
            self.world.dataverse.edit_row(entity, record_id, changes)
        self.world.clock.advance(seconds=1)
        event = change(
            record_id,
            attrs if kind is not ChangeKind.DELETE else {},
            kind=kind,
            version=version,
            modified_on=self.world.clock.now(),
            changed=frozenset(attrs) if kind is ChangeKind.CREATE else frozenset(changes),
        )
        event = dataclasses.replace(event, entity=entity)
        return dataclasses.replace(event, attributes={}) if kind is ChangeKind.DELETE else event

    async def push(
        self,
        record_id: str,
        kind: ChangeKind,
        changes: dict[str, AttrValue] | None = None,
        entity: EntityName = "contact",
        service: PushService | None = None,
    ) -> PushOutcome:
        event = self.event(record_id, kind, changes, entity)
        return await (service or self.service()).handle(event, owner=f"msg-{record_id}-{self.versions[record_id]}")

    async def create(
        self, record_id: str, email: str, entity: EntityName = "contact", **cols: AttrValue
    ) -> PushOutcome:
        return await self.push(record_id, ChangeKind.CREATE, {"emailaddress1": email, **cols}, entity)

    async def link(self, entity: EntityName, record_id: str) -> Any:
        link = await self.world.state.get_link(entity, record_id)
        assert link is not None
        return link

    async def details(self, entity: EntityName, record_id: str) -> list[str]:
        return [s.detail for s in await self.world.state.list_status(entity, record_id)]

    def contact(self, external_id: str) -> SpotlerContact:
        contact = self.spotler.contact(external_id)
        assert contact is not None
        return contact


# --- one address at a time --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("held", ["new", "old"])
async def test_a_push_waits_while_another_push_holds_the_new_or_the_old_address(held: str) -> None:
    s = Setup()
    await s.create(C1, BOB)
    taken = await s.world.state.acquire_lease(
        email_lease_name(hashed(ADA if held == "new" else BOB)), owner="contact/other", now=T0, ttl=timedelta(hours=1)
    )
    assert taken is not None
    writes = list(s.spotler.writes)

    with pytest.raises(RetryLater) as deferred:
        await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": ADA}, service=s.service(lease_wait=timedelta(0)))

    assert str(deferred.value.__cause__) == "another change of this person's address is being applied"
    assert s.spotler.writes == writes
    assert s.contact(C1).email == BOB
    assert (await s.link("contact", C1)).email_hash == hashed(BOB)

    await s.world.state.release_lease(email_lease_name(hashed(ADA if held == "new" else BOB)), taken)
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE), idempotency_key="again", version=9)
    outcome = await s.service().handle(event, owner="again")
    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert s.contact(C1).email == ADA


async def test_the_leases_on_the_address_are_given_back_after_the_push() -> None:
    s = Setup()
    await s.create(C1, BOB)
    await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": ADA})
    for address in (ADA, BOB):
        name = email_lease_name(hashed(address))
        assert await s.world.state.acquire_lease(name, owner="next", now=T0, ttl=timedelta(seconds=1)) is not None


# --- where the contact is ---------------------------------------------------------------------------------------------


async def test_a_linked_contact_spotler_merged_away_is_followed_to_the_lowest_holder_of_exactly_its_address() -> None:
    s = Setup()
    await s.create(C1, ADA)
    s.spotler.seed(SpotlerContact("sp-9", {"email": "ADA@example.com"}, {1: True}, created=T0, last_changed=T0))
    s.spotler.seed(SpotlerContact("sp-5", {"email": "Ada@Example.com"}, {1: True}, created=T0, last_changed=T0))
    s.spotler.remove(C1)
    s.spotler.near_misses = [SpotlerContact("sp-0", {"email": "ada@example.com.evil"}, {1: True})]
    s.spotler.descending = True

    outcome = await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"})

    assert (outcome.action, outcome.external_id) == ("update", "sp-5")
    assert (await s.link("contact", C1)).external_id == "sp-5"
    assert s.contact("sp-5").properties["jobTitle"] == "Countess"
    assert "jobTitle" not in s.contact("sp-9").properties
    assert [c.external_id for c in s.spotler.contacts()] == ["sp-5", "sp-9"]  # nothing created under C1


async def test_an_address_changed_to_a_fresh_one_is_an_update_of_the_contact_the_record_was_paired_with() -> None:
    s = Setup()
    s.spotler.seed(SpotlerContact("sp-42", {"email": ADA}, {1: True}, created=T0, last_changed=T0))
    assert (await s.create(C1, ADA)).external_id == "sp-42"

    outcome = await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": "ada.new@example.com"})

    assert (outcome.action, outcome.reason, outcome.external_id) == ("update", ReasonCode.UPDATED, "sp-42")
    assert s.contact("sp-42").email == "ada.new@example.com"
    assert [c.external_id for c in s.spotler.contacts()] == ["sp-42"]
    link = await s.link("contact", C1)
    assert (link.external_id, link.email_hash) == ("sp-42", hashed("ada.new@example.com"))


async def test_a_record_without_a_link_prefers_its_own_contact_to_another_holder_of_the_address() -> None:
    s = Setup()
    s.spotler.seed(SpotlerContact("00-other", {"email": "ADA@example.com"}, {1: True}, created=T0, last_changed=T0))
    s.spotler.seed(SpotlerContact(C1, {"email": ADA, "firstName": "Ada"}, {1: True, 2: True}, created=T0))
    s.spotler.near_misses = [SpotlerContact("0", {"email": "ada@example.co"}, {1: True})]

    outcome = await s.create(C1, ADA, jobtitle="Countess")

    assert (outcome.action, outcome.external_id) == ("update", C1)
    assert s.contact(C1).properties["jobTitle"] == "Countess"
    assert "jobTitle" not in s.contact("00-other").properties
    assert (await s.link("contact", C1)).external_id == C1


async def test_a_record_without_a_link_pairs_with_the_lowest_contact_that_holds_exactly_its_address() -> None:
    s = Setup()
    for external_id in ("sp-3", "sp-9"):
        s.spotler.seed(SpotlerContact(external_id, {"email": "ADA@example.COM"}, {1: True}, created=T0))
    s.spotler.near_misses = [SpotlerContact("sp-0", {"email": "ada@example.com.evil"}, {1: True})]
    s.spotler.descending = True

    outcome = await s.create(C1, ADA)

    assert (outcome.external_id, outcome.detail) == (
        "sp-3",
        "paired by e-mail with an existing Spotler contact; updated",
    )
    assert s.spotler.writes == [("update", "sp-3", None, False)]
    assert (await s.link("contact", C1)).external_id == "sp-3"
    assert s.contact("sp-3").properties.get("firstName") == "Ada"
    assert "firstName" not in s.contact("sp-9").properties
    assert s.spotler.contact("sp-0") is None  # the near miss was never written


async def test_a_record_found_under_its_own_id_without_a_link_defers_to_a_peer_that_takes_precedence() -> None:
    # The lead's create landed in Spotler but its link was never saved; the contact then paired with it.
    s = Setup()
    s.spotler.seed(SpotlerContact(L1, {"email": ADA, "firstName": "Lea"}, {1: True, 2: True}, created=T0))
    assert (await s.create(C1, ADA, firstname="Ada")).external_id == L1
    assert s.contact(L1).properties["firstName"] == "Ada"

    outcome = await s.create(L1, ADA, entity="lead", firstname="Lea")

    assert (outcome.action, outcome.reason, outcome.external_id) == ("none", ReasonCode.SYNCED, L1)
    assert outcome.detail == f"shares its Spotler contact with contact {C1}, which takes precedence"
    assert s.contact(L1).properties["firstName"] == "Ada"


# --- where a create landed --------------------------------------------------------------------------------------------


async def test_a_create_spotler_merged_into_a_contact_made_meanwhile_is_linked_to_that_contact() -> None:
    s = Setup()

    def form_signup(_: str) -> None:  # someone signs up through a Spotler form between the search and the create
        s.spotler.seed(SpotlerContact("sp-form", {"email": "ADA@example.com"}, {}, created=T0, last_changed=T0))

    s.spotler.before_next("insert_contact", form_signup)

    outcome = await s.create(C1, ADA, firstname="Ada")

    assert (outcome.action, outcome.external_id) == ("create", "sp-form")
    assert outcome.detail == "created in Spotler (merged by Spotler into the contact that holds its address)"
    assert s.spotler.contact(C1) is None
    assert s.contact("sp-form").properties["firstName"] == "Ada"
    link = await s.link("contact", C1)
    assert (link.external_id, link.detail) == ("sp-form", outcome.detail)
    assert s.spotler.writes == [("insert", C1, True, False)]


class LosingSpotler(RacingSpotler):
    """Answers a create and keeps nothing: the new contact is not visible (yet) under any id or address."""

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        self.writes.append(("insert", contact.external_id, update, purge))


async def test_a_create_that_lands_nowhere_is_retried_and_nothing_is_linked() -> None:
    s = Setup(spotler=LosingSpotler)

    with pytest.raises(RetryLater) as retried:
        await s.create(C1, ADA)

    assert str(retried.value.__cause__) == "the new Spotler contact cannot be found yet"
    assert await s.world.state.get_link("contact", C1) is None
    assert await s.world.state.list_status("contact", C1) == []
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE), idempotency_key="found")
    with pytest.raises(ConcurrencyConflict, match=r"^the new Spotler contact cannot be found yet$"):
        await s.service().apply_found(event, note="found by the pull")


async def test_a_lost_create_whose_contact_carries_no_address_property_is_retried_without_a_search() -> None:
    # The mapping sends the e-mail column to another Spotler property: there is no address to look the contact up by.
    fields = [{**f, "spotler": "mail"} if f["spotler"] == "email" else f for f in FIELDS]
    mapping = parse_mapping({"entities": {"contact": {"fields": fields, "permissions": PERMISSIONS}}})
    s = Setup(spotler=LosingSpotler, mapping=mapping)

    with pytest.raises(RetryLater) as retried:
        await s.create(C1, ADA)

    assert str(retried.value.__cause__) == "the new Spotler contact cannot be found yet"
    assert s.spotler.writes == [("insert", C1, True, False)]
    assert s.spotler.log == [("search_by_email", ""), ("get_contact", C1)]  # one search, before the create


# --- moving to the contact that holds a new address -------------------------------------------------------------------


@pytest.mark.parametrize("on_leaving_scope", ["unsubscribe", "anonymize", "keep"])
async def test_an_address_moved_onto_another_record_s_contact_moves_the_record_and_gives_up_its_old_contact(
    on_leaving_scope: Literal["unsubscribe", "anonymize", "keep"],
) -> None:
    s = Setup(on_leaving_scope=on_leaving_scope)
    await s.create(C1, ADA, firstname="Ada")
    await s.create(C2, BOB, firstname="Bob", jobtitle="Clerk")
    old = s.contact(C2)

    outcome = await s.push(C2, ChangeKind.UPDATE, {"emailaddress1": "ADA@example.com"})

    assert outcome.external_id == C1
    assert outcome.detail.endswith("(moved to the Spotler contact that holds its new address)")
    link = await s.link("contact", C2)
    assert (link.external_id, link.email_hash, link.detail) == (C1, hashed(ADA), outcome.detail)
    assert [p.record_id for p in await s.world.state.links_for_external_id(C1)] == [C1, C2]
    assert s.contact(C1).properties["firstName"] == "Ada"  # the contact's own record still speaks for it
    left = s.contact(C2)
    if on_leaving_scope == "unsubscribe":
        assert left.properties == old.properties
        assert left.permissions == {1: False, 2: False}
        assert ("update", C2, None, False) in s.spotler.writes
    elif on_leaving_scope == "anonymize":
        assert (left.properties, left.permissions) == ({}, {1: False, 2: False})
    else:
        assert left == old


async def test_a_record_moved_to_another_contact_writes_its_values_there_when_it_speaks_for_it() -> None:
    s = Setup()
    await s.create(C2, ADA, firstname="Ada", jobtitle="Analyst")
    await s.create(C1, BOB, firstname="Bob", jobtitle="Clerk")

    outcome = await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": ADA})

    assert (outcome.action, outcome.external_id) == ("update", C2)  # C1 takes precedence over C2 now
    assert outcome.detail == "updated in Spotler (moved to the Spotler contact that holds its new address)"
    assert (s.contact(C2).properties["firstName"], s.contact(C2).properties["jobTitle"]) == ("Bob", "Clerk")
    link = await s.link("contact", C1)
    assert link.external_id == C2


async def test_the_old_contact_of_a_moved_record_is_kept_while_another_live_record_uses_it() -> None:
    s = Setup(on_leaving_scope="anonymize")
    await s.create(C1, ADA)
    await s.create(C2, BOB)
    assert (await s.create(L1, BOB, entity="lead")).external_id == C2
    old = s.contact(C2)

    outcome = await s.push(C2, ChangeKind.UPDATE, {"emailaddress1": ADA})

    assert outcome.external_id == C1
    assert s.contact(C2) == old
    assert not any(w[0] == "anonymize" for w in s.spotler.writes)


async def test_a_record_whose_address_changed_to_one_nobody_holds_stays_on_its_contact() -> None:
    s = Setup()
    await s.create(C1, ADA)
    outcome = await s.push(C1, ChangeKind.UPDATE, {"emailaddress1": "ada.new@example.com"})
    assert (outcome.action, outcome.external_id, outcome.detail) == ("update", C1, "updated in Spotler")
    assert [c.external_id for c in s.spotler.contacts()] == [C1]


async def test_a_record_leaving_the_sync_has_its_contact_unsubscribed_and_kept() -> None:
    s = Setup(anonymize_on_deactivate=False)
    await s.create(C1, ADA, firstname="Ada", jobtitle="Analyst")

    outcome = await s.push(C1, ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})

    assert (outcome.action, outcome.reason, outcome.external_id) == ("unsubscribe", ReasonCode.INACTIVE, C1)
    assert s.spotler.writes[-1] == ("update", C1, None, False)
    kept = s.contact(C1)
    assert (kept.email, kept.properties["firstName"], kept.properties["jobTitle"]) == (ADA, "Ada", "Analyst")
    assert kept.permissions == {1: False, 2: False}
    assert await s.world.state.get_suppression(hashed(ADA)) is None


# --- a 404 is checked by address --------------------------------------------------------------------------------------


@pytest.mark.parametrize("leaving", ["anonymize", "unsubscribe"])
async def test_a_404_on_giving_up_a_contact_acts_on_the_contact_that_now_holds_the_address(leaving: str) -> None:
    s = Setup(anonymize_on_deactivate=leaving == "anonymize")
    await s.create(C1, ADA, firstname="Ada")
    await s.create(C2, BOB)
    s.spotler.seed(dataclasses.replace(s.contact(C2), external_id="sp-9", created=T0))  # a holder no record uses
    s.spotler.before_next(f"{'anonymize' if leaving == 'anonymize' else 'update'}_contact", lambda _: merge(s))

    outcome = await s.push(C1, ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})

    assert outcome.external_id == "sp-9"
    assert outcome.detail.endswith("(found by e-mail)")
    assert (await s.link("contact", C1)).external_id == "sp-9"
    holder = s.contact("sp-9")
    if leaving == "anonymize":
        assert (holder.properties, set(holder.permissions.values())) == ({}, {False})
        assert s.spotler.writes[-1] == ("anonymize", "sp-9", None, None)
    else:
        assert holder.email == ADA
        assert holder.properties["firstName"] == "Ada"
        assert holder.permissions == {1: False, 2: False}
        assert s.spotler.writes[-1] == ("update", "sp-9", None, False)
    assert s.contact(C2).email == BOB  # the other record's contact is untouched


def merge(s: Setup) -> None:
    """Spotler merges C1 into sp-9 between the push's read and its write."""
    s.spotler.merge_into(C1, "sp-9")


@pytest.mark.parametrize("leaving", ["anonymize", "unsubscribe"])
async def test_a_404_leaves_the_contact_holding_the_address_alone_while_another_live_record_uses_it(
    leaving: str,
) -> None:
    s = Setup(anonymize_on_deactivate=leaving == "anonymize")
    await s.create(C1, ADA)
    await s.create(L1, BOB, entity="lead")
    method = "anonymize_contact" if leaving == "anonymize" else "update_contact"
    s.spotler.before_next(method, lambda _: s.spotler.merge_into(C1, L1))
    before = s.contact(L1)
    writes = len(s.spotler.writes)

    outcome = await s.push(C1, ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})

    assert outcome.external_id == L1
    assert outcome.detail.endswith("(found by e-mail)")
    assert s.contact(L1) == dataclasses.replace(before, properties={**before.properties, "email": ADA})
    assert len(s.spotler.writes) == writes + 1  # the write that answered 404, nothing after it


async def test_a_404_with_no_contact_holding_the_address_counts_as_gone_and_logs_no_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup()
    await s.create(C1, ADA)
    s.spotler.before_next("anonymize_contact", lambda _: s.spotler.remove(C1))
    caplog.set_level(logging.INFO, logger="sync_core.push")

    outcome = await s.push(C1, ChangeKind.UPDATE, {"donotemail": True})

    assert (outcome.action, outcome.reason, outcome.external_id) == ("anonymize", ReasonCode.ANONYMIZED, C1)
    assert s.spotler.contacts() == []
    tombstone = await s.world.state.get_suppression(hashed(ADA))
    assert tombstone is not None
    assert tombstone.cause is SuppressionCause.OPTED_OUT  # Do Not Email is the person's own opt-out
    [gone] = [r for r in caplog.records if r.getMessage() == "contact already gone in Spotler"]
    assert gone.__dict__["record_id"] == C1
    assert "@" not in gone.getMessage()
    assert ADA not in str(gone.__dict__)


async def test_a_delete_without_a_pre_image_answered_404_counts_as_gone_without_a_search() -> None:
    s = Setup()
    await s.create(C1, ADA)
    s.spotler.fail("anonymize_contact", NOT_FOUND)
    searches = s.spotler.calls["search_by_email"]

    outcome = await s.push(C1, ChangeKind.DELETE)

    assert (outcome.action, outcome.reason) == ("anonymize", ReasonCode.ANONYMIZED)
    assert s.spotler.calls["search_by_email"] == searches  # no address to look up: the contact is gone
    assert await s.world.state.get_suppression(hashed(ADA)) is not None


async def test_a_change_whose_row_is_gone_when_it_is_read_counts_as_a_delete() -> None:
    s = Setup()
    await s.create(C1, ADA)
    event = dataclasses.replace(s.event(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"}), complete=False)
    s.world.dataverse._rows.pop(("contact", C1))

    outcome = await s.service().handle(event, owner="late")

    assert (outcome.action, outcome.reason) == ("anonymize", ReasonCode.ANONYMIZED)
    assert s.contact(C1).email is None
    assert await s.world.state.get_suppression(hashed(ADA)) is not None


# --- the guard is asked about what it guards --------------------------------------------------------------------------


class RecordingGuard:
    def __init__(self, admit: bool = True) -> None:
        self.asked: list[tuple[str, str, str]] = []
        self._admit = admit

    async def admit(self, entity: EntityName, record_id: str, action: Literal["anonymize", "unsubscribe"]) -> bool:
        self.asked.append((entity, record_id, action))
        return self._admit


@pytest.mark.parametrize("action", ["anonymize", "unsubscribe"])
async def test_the_guard_is_asked_about_each_anonymize_and_unsubscribe_by_entity_record_and_action(
    action: str,
) -> None:
    s = Setup(anonymize_on_deactivate=action == "anonymize")
    await s.create(L1, ADA, entity="lead")
    guard = RecordingGuard()
    await s.push(L1, ChangeKind.UPDATE, {"jobtitle": "Countess"}, service=s.service(guard=guard))
    assert guard.asked == []

    outcome = await s.push(L1, ChangeKind.SET_STATE, {"statecode": 2, "statuscode": 6}, service=s.service(guard=guard))

    assert outcome.action == action
    assert guard.asked == [("lead", L1, action)]


async def test_an_unsubscribe_the_guard_refuses_writes_nothing() -> None:
    s = Setup(anonymize_on_deactivate=False)
    await s.create(C1, ADA)
    writes = list(s.spotler.writes)
    with pytest.raises(RetryLater, match="more than MASS_CHANGE_LIMIT unsubscribe decisions"):
        await s.push(C1, ChangeKind.SET_STATE, {"statecode": 1}, service=s.service(guard=RecordingGuard(False)))
    assert s.spotler.writes == writes
    assert s.contact(C1).permissions == {1: True, 2: True}


# --- the next record speaks for a shared contact ----------------------------------------------------------------------


async def shared_by_three(s: Setup) -> None:
    """Contact C1, account A1 and lead L1 share C1's Spotler contact; C1 speaks for it."""
    await s.create(C1, ADA, firstname="Ada")
    others: list[tuple[str, EntityName, str]] = [(A1, "account", "Acme"), (L1, "lead", "Lea")]
    for record_id, entity, name in others:
        outcome = await s.create(record_id, ADA.upper(), entity=entity, firstname=name)
        assert (outcome.action, outcome.external_id) == ("none", C1)


async def test_when_the_record_that_speaks_for_a_shared_contact_leaves_the_next_by_precedence_takes_over() -> None:
    s = Setup()
    await shared_by_three(s)
    account_history = await s.details("account", A1)

    outcome = await s.push(C1, ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})

    assert outcome.reason is ReasonCode.INACTIVE
    assert s.contact(C1).properties["firstName"] == "Lea"  # the lead goes before the account
    assert s.contact(C1).email == ADA
    [latest, *_] = await s.details("lead", L1)
    assert latest.endswith("(speaks for the person now)")
    assert await s.details("account", A1) == account_history


@pytest.mark.parametrize("save", ["edit", "unchanged"])
async def test_a_save_of_the_record_that_speaks_for_a_shared_contact_hands_nothing_over(save: str) -> None:
    s = Setup()
    await shared_by_three(s)
    histories = [await s.details("lead", L1), await s.details("account", A1)]

    outcome = await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"} if save == "edit" else {"firstname": "Ada"})

    assert outcome.action == ("update" if save == "edit" else "none")
    assert [await s.details("lead", L1), await s.details("account", A1)] == histories
    assert s.contact(C1).properties["firstName"] == "Ada"
