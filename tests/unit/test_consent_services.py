"""The consent and identity rules carried out by the push and pull services, on the honest in-memory fakes.

The services are wired with a mapping of their own, so the tests hold whatever directions the shipped
default mapping gives its fields.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from sync_core.domain.mapping import MappingConfig, parse_mapping
from sync_core.domain.plan import PushAction
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import SuppressionCause
from sync_core.services.pull import PullOptions, PullService
from sync_core.services.push import PushService
from tests.unit.domain_builders import T0, hashed, options
from tests.unit.service_fakes import APP_USER, World, change, row_attributes

NEWSLETTER = 2
FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"},
]
PERMISSIONS = [
    {"bit": 1, "source": "not_donotbulkemail", "direction": "both"},
    {"bit": NEWSLETTER, "dataverse": "new_newsletter", "direction": "both"},
]
MAPPING: MappingConfig = parse_mapping(
    {"entities": {e: {"fields": FIELDS, "permissions": PERMISSIONS} for e in ("contact", "lead", "account")}}
)
C1 = "0a000000-0000-4000-8000-000000000001"
L1 = "0b000000-0000-4000-8000-000000000001"


def push_of(world: World) -> PushService:
    return PushService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=MAPPING,
        options=options(),
        clock=world.clock,
        app_user_id=APP_USER,
    )


def pull_of(world: World) -> PullService:
    return PullService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=MAPPING,
        options=options(),
        pull_options=PullOptions(),
        clock=world.clock,
    )


class Person:
    """One Dataverse row driven through the push service: creates, edits and state changes as events."""

    def __init__(self, world: World, record_id: str, entity: str = "contact", **attrs: object) -> None:
        self.world, self.record_id, self.entity = world, record_id, entity
        self.version = 0
        self.attrs = {**row_attributes(record_id, new_newsletter=True), **attrs}
        world.dataverse.put_row(entity, record_id, self.attrs)  # type: ignore[arg-type]

    async def push(self, kind: ChangeKind, changes: dict[str, object] | None = None) -> object:
        self.version += 1
        changes = dict(changes or {})
        self.attrs.update(changes)
        if kind is ChangeKind.DELETE:
            self.world.dataverse._rows.pop((self.entity, self.record_id), None)  # type: ignore[arg-type]
        elif self.version > 1:
            self.world.dataverse.edit_row(self.entity, self.record_id, changes)  # type: ignore[arg-type]
        self.world.clock.advance(seconds=1)
        event = change(
            self.record_id,
            self.attrs if kind is not ChangeKind.DELETE else {},  # type: ignore[arg-type]
            kind=kind,
            version=self.version,
            modified_on=self.world.clock.now(),
            changed=frozenset(self.attrs) if kind is ChangeKind.CREATE else frozenset(changes),
        )
        event = dataclasses.replace(event, entity=self.entity)  # type: ignore[arg-type]
        if kind is ChangeKind.DELETE:
            event = dataclasses.replace(event, attributes={})
        return await push_of(self.world).handle(event, owner=f"msg-{self.record_id}-{self.version}")


async def test_email_pairing_ignores_letter_case_on_either_side() -> None:
    world = World()
    world.spotler.seed(
        SpotlerContact(
            "sp-42", {"email": "Ada.Lovelace@Example.COM", "firstName": "Ada"}, {1: True}, created=T0, last_changed=T0
        )
    )
    ada = Person(world, C1, emailaddress1="ADA.lovelace@example.com")
    outcome = await ada.push(ChangeKind.CREATE)
    assert outcome.action == PushAction.UPDATE.value  # type: ignore[attr-defined]
    assert outcome.external_id == "sp-42"  # type: ignore[attr-defined]
    assert outcome.detail == "paired by e-mail with an existing Spotler contact; updated"  # type: ignore[attr-defined]
    assert world.spotler.contact(C1) is None
    assert [c.external_id for c in world.spotler.contacts()] == ["sp-42"]
    assert world.spotler.calls["insert_contact"] == 0
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert link.external_id == "sp-42"
    assert link.email_hash == hashed("ada.lovelace@example.com")


async def test_new_row_is_not_written_to_an_opted_out_contact_found_by_email() -> None:
    world = World()
    world.spotler.seed(SpotlerContact("sp-7", {"email": "ada@example.com"}, {1: True}, created=T0, last_changed=T0))
    world.spotler.profile_edit("sp-7", opt_out=True)
    before = world.spotler.contact("sp-7")
    ada = Person(world, C1, emailaddress1="Ada@Example.com")
    outcome = await ada.push(ChangeKind.CREATE)
    assert outcome.reason is ReasonCode.OPTED_OUT_IN_SPOTLER  # type: ignore[attr-defined]
    assert world.spotler.contact("sp-7") == before
    assert world.spotler.contact(C1) is None
    assert sum(world.spotler.calls[m] for m in ("insert_contact", "update_contact", "anonymize_contact")) == 0
    [entry] = await world.state.list_status("contact", C1)
    assert entry.reason is ReasonCode.OPTED_OUT_IN_SPOTLER


async def shared_by_contact_and_lead(world: World) -> tuple[Person, Person]:
    contact = Person(world, C1, emailaddress1="ada@example.com")
    await contact.push(ChangeKind.CREATE)
    lead = Person(world, L1, entity="lead", emailaddress1="ADA@example.com")
    outcome = await lead.push(ChangeKind.CREATE)
    assert outcome.external_id == C1  # type: ignore[attr-defined]
    return contact, lead


@pytest.mark.parametrize("leaving", ["contact", "lead"])
async def test_deactivating_one_of_two_rows_sharing_a_contact_keeps_it_for_the_live_one(leaving: str) -> None:
    world = World()
    contact, lead = await shared_by_contact_and_lead(world)
    gone = contact if leaving == "contact" else lead
    outcome = await gone.push(ChangeKind.SET_STATE, {"statecode": 1 if leaving == "contact" else 2, "statuscode": 2})
    assert outcome.reason is ReasonCode.INACTIVE  # type: ignore[attr-defined]
    kept = world.spotler.contact(C1)
    assert kept is not None
    assert kept.email == "ada@example.com"
    assert kept.permissions == {1: True, NEWSLETTER: True}
    assert world.spotler.calls["anonymize_contact"] == 0
    assert await world.state.get_suppression(hashed("ada@example.com")) is None


@pytest.mark.parametrize("leaving", ["contact", "lead"])
async def test_deleting_one_of_two_rows_sharing_a_contact_keeps_it_for_the_live_one(leaving: str) -> None:
    world = World()
    contact, lead = await shared_by_contact_and_lead(world)
    gone = contact if leaving == "contact" else lead
    await gone.push(ChangeKind.DELETE)
    kept = world.spotler.contact(C1)
    assert kept is not None
    assert kept.email == "ada@example.com"
    assert world.spotler.calls["anonymize_contact"] == 0
    assert await world.state.get_suppression(hashed("ada@example.com")) is None


async def test_when_every_row_sharing_a_contact_has_left_the_contact_is_anonymized() -> None:
    world = World()
    contact, lead = await shared_by_contact_and_lead(world)
    await lead.push(ChangeKind.SET_STATE, {"statecode": 2, "statuscode": 6})
    await contact.push(ChangeKind.DELETE)
    gone = world.spotler.contact(C1)
    assert gone is not None
    assert gone.email is None
    assert await world.state.get_suppression(hashed("ada@example.com")) is not None


async def test_deleting_both_rows_sharing_a_contact_anonymizes_it_once_the_last_one_goes() -> None:
    world = World()
    contact, lead = await shared_by_contact_and_lead(world)
    await lead.push(ChangeKind.DELETE)
    assert world.spotler.calls["anonymize_contact"] == 0
    await contact.push(ChangeKind.DELETE)
    gone = world.spotler.contact(C1)
    assert gone is not None
    assert gone.email is None
    assert set(gone.permissions.values()) == {False}
    tombstone = await world.state.get_suppression(hashed("ada@example.com"))
    assert tombstone is not None
    assert tombstone.cause is SuppressionCause.ANONYMIZED


async def test_pull_before_the_push_does_not_undo_do_not_bulk_email_ticked_in_dynamics() -> None:
    world = World()
    ada = Person(world, C1)
    await ada.push(ChangeKind.CREATE)
    world.clock.advance(minutes=1)
    # Dynamics withdraws consent; the person edits their name on a Spotler form; the pull runs before the push.
    world.dataverse.edit_row("contact", C1, {"donotbulkemail": True})
    world.spotler.profile_edit(C1, properties={"firstName": "Augusta"})
    world.clock.advance(minutes=1)
    report = await pull_of(world).run()
    assert report.completed
    row = world.dataverse.row("contact", C1)
    assert row is not None
    assert row.attributes["firstname"] == "Augusta"
    assert row.attributes["donotbulkemail"] is True
    assert row.attributes["new_newsletter"] is True
    # The push then withdraws every subscription in Spotler.
    ada.attrs.update(donotbulkemail=True, firstname="Augusta")
    ada.version = row.version or ada.version
    outcome = await ada.push(ChangeKind.UPDATE, {"donotbulkemail": True})
    assert outcome.reason is ReasonCode.UPDATED  # type: ignore[attr-defined]
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.permissions == {1: False, NEWSLETTER: False}
    # And a later pull leaves it that way on both sides.
    world.clock.advance(minutes=1)
    await pull_of(world).run()
    row = world.dataverse.row("contact", C1)
    assert row is not None
    assert row.attributes["donotbulkemail"] is True


async def test_spotler_opt_out_after_an_email_change_tombstones_the_address_that_opted_out() -> None:
    world = World()
    ada = Person(world, C1, emailaddress1="ada@example.com")
    await ada.push(ChangeKind.CREATE)
    world.clock.advance(minutes=1)
    world.dataverse.edit_row("contact", C1, {"emailaddress1": "ada.new@example.org"})  # not pushed yet
    world.spotler.profile_edit(C1, opt_out=True)
    world.clock.advance(minutes=1)
    await pull_of(world).run()
    old = await world.state.get_suppression(hashed("ada@example.com"))
    assert old is not None
    assert old.cause is SuppressionCause.OPTED_OUT
    assert await world.state.get_suppression(hashed("ada.new@example.org")) is None


async def test_deactivation_keeps_the_cause_of_an_opt_out_tombstone() -> None:
    world = World()
    ada = Person(world, C1)
    await ada.push(ChangeKind.CREATE)
    world.clock.advance(minutes=1)
    world.spotler.profile_edit(C1, opt_out=True)
    world.clock.advance(minutes=1)
    await pull_of(world).run()
    await ada.push(ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})
    tombstone = await world.state.get_suppression(hashed(f"{C1}@example.com"))
    assert tombstone is not None
    assert tombstone.cause is SuppressionCause.OPTED_OUT


async def test_reactivation_alone_does_not_lift_an_opt_out_tombstone() -> None:
    world = World()
    ada = Person(world, C1)
    await ada.push(ChangeKind.CREATE)
    world.clock.advance(minutes=1)
    world.spotler.profile_edit(C1, opt_out=True)
    world.clock.advance(minutes=1)
    await pull_of(world).run()
    assert await world.state.get_suppression(hashed(f"{C1}@example.com")) is not None
    await ada.push(ChangeKind.SET_STATE, {"statecode": 1, "statuscode": 2})
    writes_before = dict(world.spotler.calls)
    outcome = await ada.push(ChangeKind.SET_STATE, {"statecode": 0, "statuscode": 1})
    assert outcome.reason in (ReasonCode.SUPPRESSED, ReasonCode.OPTED_OUT_IN_SPOTLER)  # type: ignore[attr-defined]
    assert world.spotler.calls["insert_contact"] == writes_before.get("insert_contact", 0)
    assert world.spotler.calls["update_contact"] == writes_before.get("update_contact", 0)
    assert await world.state.get_suppression(hashed(f"{C1}@example.com")) is not None


async def test_ticking_do_not_bulk_email_on_a_new_row_of_a_deleted_person_does_not_recreate_it() -> None:
    world = World()
    ada = Person(world, C1, emailaddress1="ada@example.com")
    await ada.push(ChangeKind.CREATE)
    await ada.push(ChangeKind.DELETE)
    assert await world.state.get_suppression(hashed("ada@example.com")) is not None
    again = Person(world, L1, entity="lead", emailaddress1="ada@example.com", new_newsletter=False)
    created = await again.push(ChangeKind.CREATE)
    assert created.reason is ReasonCode.SUPPRESSED  # type: ignore[attr-defined]
    ticked = await again.push(ChangeKind.UPDATE, {"donotbulkemail": True})
    assert ticked.reason is ReasonCode.SUPPRESSED  # type: ignore[attr-defined]
    assert world.spotler.calls["insert_contact"] == 1  # the first row's create only
    assert world.spotler.calls["update_contact"] == 0
    assert await world.state.get_suppression(hashed("ada@example.com")) is not None
    # Clearing it again is the person's new opt-in: the lead is created (paired with the kept contact).
    cleared = await again.push(ChangeKind.UPDATE, {"donotbulkemail": False})
    assert cleared.reason in (ReasonCode.CREATED, ReasonCode.UPDATED)  # type: ignore[attr-defined]
    assert await world.state.get_suppression(hashed("ada@example.com")) is None


async def test_anonymize_leaves_no_permission_bit_on() -> None:
    world = World()
    ada = Person(world, C1)
    await ada.push(ChangeKind.CREATE)
    assert world.spotler.contact(C1).permissions == {1: True, NEWSLETTER: True}  # type: ignore[union-attr]
    await ada.push(ChangeKind.UPDATE, {"donotemail": True})
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.properties == {}
    assert contact.permissions == {1: False, NEWSLETTER: False}
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert (link.anonymized, link.reason, link.base) == (True, ReasonCode.ANONYMIZED, {})
    tombstone = await world.state.get_suppression(hashed(f"{C1}@example.com"))
    assert tombstone is not None
    assert (tombstone.cause, tombstone.record_id) == (SuppressionCause.OPTED_OUT, C1)


async def test_merged_record_hands_its_contact_to_the_master_holding_the_same_address() -> None:
    world = World()
    ada = Person(world, C1, emailaddress1="ada@example.com")
    await ada.push(ChangeKind.CREATE)
    master = "0a000000-0000-4000-8000-00000000000f"
    world.dataverse.put_row("contact", master, row_attributes(master, emailaddress1="ADA@example.com"))
    world.clock.advance(seconds=5)
    event = change(
        C1,
        {"statecode": 1, "statuscode": 2},
        kind=ChangeKind.UPDATE,
        version=9,
        modified_on=world.clock.now(),
    )
    event = dataclasses.replace(event, merged_into=master, attributes={**ada.attrs, "statecode": 1, "statuscode": 2})
    outcome = await push_of(world).handle(event, owner="merge")
    assert outcome.action == PushAction.RELINK.value
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.email == "ada@example.com"
    taken = await world.state.get_link("contact", master)
    assert taken is not None
    assert (taken.external_id, taken.email_hash) == (C1, hashed("ada@example.com"))
    assert await world.state.get_suppression(hashed("ada@example.com")) is None
    # Replaying the merge does not replace the master's link that now exists.
    world.clock.advance(seconds=5)
    again = dataclasses.replace(event, version=10, idempotency_key="merge-again", modified_on=world.clock.now())
    await push_of(world).handle(again, owner="merge-2")
    assert await world.state.get_link("contact", master) == taken


async def test_change_without_mapping_or_by_the_connector_touches_nothing() -> None:
    world = World()
    only_contacts = parse_mapping({"entities": {"contact": {"fields": FIELDS, "permissions": PERMISSIONS}}})
    push = PushService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=only_contacts,
        options=options(),
        clock=world.clock,
        app_user_id=APP_USER,
    )
    lead = dataclasses.replace(change(L1), entity="lead")
    assert (await push.handle(lead, owner="m")).action == "ignored"
    own = change(C1, initiating_user_id=APP_USER)
    assert (await push.handle(own, owner="m")).action == "ignored"
    assert sum(world.spotler.calls.values()) == 0


@pytest.mark.parametrize("delay", [timedelta(0)])
async def test_delete_of_a_record_never_synced_writes_nothing(delay: timedelta) -> None:
    world = World()
    world.clock.advance(delay)
    event = dataclasses.replace(change(C1, kind=ChangeKind.DELETE), attributes={})
    outcome = await push_of(world).handle(event, owner="m")
    assert outcome.action == "none"
    assert world.spotler.calls["search_by_email"] == 0
    assert sum(world.spotler.calls[m] for m in ("insert_contact", "update_contact", "anonymize_contact")) == 0
