"""How the push service finds a change's Spotler contact, its e-mail match and its peers, and how it writes.

On the in-memory fakes; `RecordingSpotler` also keeps the flags of every write so the upsert-without-purge
contract with Spotler is checked, not assumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sync_core.domain.mapping import parse_mapping
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.services.push import PushOutcome, PushService, StatusColumns
from sync_core.spotler.errors import SpotlerNotFound
from tests.unit.domain_builders import T0, hashed, options
from tests.unit.service_fakes import APP_USER, FakeClock, FakeSpotler, World, change, row_attributes

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"},
]
PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
MAPPING = parse_mapping(
    {"entities": {e: {"fields": FIELDS, "permissions": PERMISSIONS} for e in ("contact", "lead", "account")}}
)
C1 = "0a000000-0000-4000-8000-000000000001"
C2 = "0a000000-0000-4000-8000-000000000002"
L1 = "0b000000-0000-4000-8000-000000000001"
STATUS = StatusColumns("sync_spotlerstatus", "sync_spotlerstatusdetail")


class RecordingSpotler(FakeSpotler):
    """The fake, keeping (method, externalId, update, purge) of every write; `loose_search` adds near misses."""

    def __init__(self, clock: FakeClock, *, loose_search: Sequence[SpotlerContact] = ()) -> None:
        super().__init__(clock)
        self.writes: list[tuple[str, str, bool | None, bool]] = []
        self._loose = list(loose_search)

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        self.writes.append(("insert", contact.external_id, update, purge))
        await super().insert_contact(contact, update=update, purge=purge)

    async def update_contact(self, contact: SpotlerContact, *, purge: bool) -> None:
        self.writes.append(("update", contact.external_id, None, purge))
        await super().update_contact(contact, purge=purge)

    async def search_by_email(self, email: str, *, page_size: int = 10) -> list[SpotlerContact]:
        return [*self._loose, *await super().search_by_email(email, page_size=page_size)]


def world_with(spotler: FakeSpotler | None = None) -> World:
    world = World()
    if spotler is not None:
        world.spotler = spotler
    return world


def push_of(world: World, status_columns: StatusColumns | None = None) -> PushService:
    return PushService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=MAPPING,
        options=options(),
        clock=world.clock,
        app_user_id=APP_USER,
        status_columns=status_columns or StatusColumns(),
    )


def seed(world: World, external_id: str, email: str, **props: Any) -> None:
    world.spotler.seed(SpotlerContact(external_id, {"email": email, **props}, {1: True}, created=T0, last_changed=T0))


async def send(
    world: World, record_id: str, kind: ChangeKind, version: int, entity: str = "contact", **cols: Any
) -> PushOutcome:
    world.clock.advance(seconds=1)
    attrs = {**row_attributes(record_id), **cols}
    if kind is not ChangeKind.DELETE:
        world.dataverse.put_row(entity, record_id, attrs)  # type: ignore[arg-type]
    event = change(record_id, cols, kind=kind, version=version, modified_on=world.clock.now())
    event = dataclasses.replace(event, entity=entity, attributes=attrs)  # type: ignore[arg-type]
    return await push_of(world).handle(event, owner=f"{record_id}-{version}")


async def test_creates_and_updates_are_upserts_without_purge() -> None:
    world = world_with(RecordingSpotler(FakeClock()))
    world.spotler._clock = world.clock  # type: ignore[attr-defined]
    await send(world, C1, ChangeKind.CREATE, 1)
    await send(world, C1, ChangeKind.UPDATE, 2, jobtitle="CTO")
    assert world.spotler.writes == [("insert", C1, True, False), ("update", C1, None, False)]  # type: ignore[attr-defined]


async def test_update_of_a_contact_gone_from_spotler_inserts_it_again_without_purge() -> None:
    world = world_with(RecordingSpotler(FakeClock()))
    world.spotler._clock = world.clock  # type: ignore[attr-defined]
    await send(world, C1, ChangeKind.CREATE, 1)
    world.spotler.fail(
        "update_contact", SpotlerNotFound("Given contact not found", status=404, code="CONTACT_NOT_FOUND")
    )
    outcome = await send(world, C1, ChangeKind.UPDATE, 2, jobtitle="CTO")
    assert outcome.reason is ReasonCode.UPDATED
    assert world.spotler.writes[-1] == ("insert", C1, True, False)  # type: ignore[attr-defined]
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.properties["jobTitle"] == "CTO"
    assert contact.properties["email"] == f"{C1}@example.com"


async def test_a_404_on_anonymize_is_checked_by_e_mail_before_the_contact_counts_as_gone() -> None:
    world = World()
    await send(world, C1, ChangeKind.CREATE, 1)
    world.spotler.fail(
        "anonymize_contact", SpotlerNotFound("Given contact not found", status=404, code="CONTACT_NOT_FOUND")
    )
    searches = world.spotler.calls.get("search_by_email", 0)
    outcome = await send(world, C1, ChangeKind.UPDATE, 2, donotemail=True)
    assert outcome.reason is ReasonCode.ANONYMIZED
    assert world.spotler.calls["search_by_email"] == searches + 1  # looked up by address after the 404
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.email is None  # the contact that still held the address was anonymized


async def test_a_contact_gone_from_spotler_is_not_written_and_the_record_is_anonymized() -> None:
    world = World()
    await send(world, C1, ChangeKind.CREATE, 1)
    world.spotler.remove(C1)
    writes = {k: world.spotler.calls.get(k, 0) for k in ("anonymize_contact", "update_contact", "insert_contact")}
    outcome = await send(world, C1, ChangeKind.UPDATE, 2, donotemail=True)
    assert outcome.reason is ReasonCode.ANONYMIZED
    assert {k: world.spotler.calls.get(k, 0) for k in writes} == writes
    assert await world.state.get_suppression(hashed(f"{C1}@example.com")) is not None


async def test_a_paired_row_keeps_writing_the_contact_it_was_paired_with() -> None:
    world = World()
    seed(world, "sp-42", "Ada@Example.com")
    first = await send(world, C1, ChangeKind.CREATE, 1, emailaddress1="ada@example.com")
    assert first.external_id == "sp-42"
    again = await send(world, C1, ChangeKind.UPDATE, 2, emailaddress1="ada@example.com", jobtitle="CTO")
    assert (again.action, again.detail, again.external_id) == ("update", "updated in Spotler", "sp-42")
    assert world.spotler.contact(C1) is None
    contact = world.spotler.contact("sp-42")
    assert contact is not None
    assert contact.properties["jobTitle"] == "CTO"


async def test_pairing_takes_only_exact_addresses_and_the_lowest_external_id() -> None:
    near_miss = SpotlerContact("sp-00", {"email": "ada@example.com.evil"}, {1: True}, created=T0, last_changed=T0)
    world = world_with(RecordingSpotler(FakeClock(), loose_search=[near_miss]))
    world.spotler._clock = world.clock  # type: ignore[attr-defined]
    seed(world, "sp-9", "ADA@example.com")
    seed(world, "sp-3", "ada@EXAMPLE.com")
    outcome = await send(world, C1, ChangeKind.CREATE, 1, emailaddress1="ada@example.com")
    assert outcome.external_id == "sp-3"
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert link.external_id == "sp-3"


async def test_a_row_found_by_email_whose_contact_another_row_speaks_for_follows_it() -> None:
    world = World()
    await send(world, C1, ChangeKind.CREATE, 1, emailaddress1="ada@example.com")
    outcome = await send(
        world, L1, ChangeKind.CREATE, 1, entity="lead", emailaddress1="ADA@example.com", firstname="Addie"
    )
    assert (outcome.action, outcome.reason, outcome.external_id) == ("none", ReasonCode.SYNCED, C1)
    assert outcome.detail == f"shares its Spotler contact with contact {C1}, which takes precedence"
    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.properties["firstName"] == "Ada"


async def test_a_delete_with_a_pre_image_is_never_looked_up_by_email() -> None:
    world = World()
    seed(world, "sp-42", f"{C1}@example.com")
    outcome = await send(world, C1, ChangeKind.DELETE, 1)
    assert outcome.action == "none"
    assert world.spotler.calls["search_by_email"] == 0
    assert world.spotler.contact("sp-42") is not None
    assert world.spotler.contact("sp-42").email == f"{C1}@example.com"  # type: ignore[union-attr]


async def test_status_columns_are_written_for_active_rows_only() -> None:
    world = World()
    push = push_of(world, STATUS)
    world.dataverse.put_row("contact", C1, row_attributes(C1))
    await push.handle(change(C1, modified_on=world.clock.now()), owner="a")
    created = ReasonCode.CREATED.option_value
    assert [w.changes.get("sync_spotlerstatus") for w in world.dataverse.writes_to(C1)] == [created]
    world.clock.advance(seconds=1)
    world.dataverse.edit_row("contact", C1, {"statecode": 1, "statuscode": 2})
    deactivated = change(
        C1, {"statecode": 1, "statuscode": 2}, kind=ChangeKind.SET_STATE, version=2, modified_on=world.clock.now()
    )
    outcome = await push.handle(deactivated, owner="b")
    assert outcome.reason is ReasonCode.ANONYMIZED
    assert [w.changes.get("sync_spotlerstatus") for w in world.dataverse.writes_to(C1)] == [created]


async def test_merge_into_a_missing_master_anonymizes_and_into_a_live_one_hands_over_the_link() -> None:
    world = World()
    await send(world, C1, ChangeKind.CREATE, 1, emailaddress1="ada@example.com")
    world.dataverse.edit_row("contact", C1, {"statecode": 1})
    world.clock.advance(seconds=1)
    gone_master = dataclasses.replace(
        change(C1, {"statecode": 1}, kind=ChangeKind.UPDATE, version=2, modified_on=world.clock.now()),
        merged_into=C2,
        attributes={**row_attributes(C1, emailaddress1="ada@example.com"), "statecode": 1},
    )
    outcome = await push_of(world).handle(gone_master, owner="m1")
    assert outcome.reason is ReasonCode.ANONYMIZED

    world = World()
    await send(world, C1, ChangeKind.CREATE, 1, emailaddress1="ada@example.com")
    source = await world.state.get_link("contact", C1)
    assert source is not None
    world.dataverse.edit_row("contact", C1, {"statecode": 1})
    world.dataverse.put_row("contact", C2, row_attributes(C2, emailaddress1="ADA@example.com"))
    world.clock.advance(seconds=1)
    merged = dataclasses.replace(gone_master, modified_on=world.clock.now())
    outcome = await push_of(world).handle(merged, owner="m2")
    assert outcome.action == "relink"
    master = await world.state.get_link("contact", C2)
    assert master is not None
    assert (master.external_id, master.email_hash, master.base) == (C1, hashed("ada@example.com"), source.base)
    assert (master.reason, master.last_attempt) == (ReasonCode.SYNCED, world.clock.now())
    assert master.detail == "already in sync (speaks for the person now)"  # the master's values were written


async def test_merge_of_a_row_never_linked_hands_its_contact_over_with_nothing_agreed() -> None:
    world = World()
    seed(world, C1, "ada@example.com")
    world.dataverse.put_row("contact", C1, {**row_attributes(C1, emailaddress1="ada@example.com"), "statecode": 1})
    world.dataverse.put_row("contact", C2, row_attributes(C2, emailaddress1="ada@example.com"))
    merged = dataclasses.replace(
        change(C1, {"statecode": 1}, kind=ChangeKind.UPDATE, version=2, modified_on=world.clock.now()),
        merged_into=C2,
        attributes={**row_attributes(C1, emailaddress1="ada@example.com"), "statecode": 1},
    )
    outcome = await push_of(world).handle(merged, owner="m")
    assert outcome.action == "relink"
    master = await world.state.get_link("contact", C2)
    assert master is not None
    assert master.external_id == C1
    assert master.detail.endswith("(speaks for the person now)")  # the master's own values reached Spotler


async def test_a_link_that_follows_a_merged_contact_is_saved_even_when_nothing_else_changed() -> None:
    world = World()
    await send(world, C1, ChangeKind.CREATE, 1)
    await send(world, C1, ChangeKind.UPDATE, 2)  # "already in sync": the status the next save repeats
    created = world.spotler.contact(C1)
    assert created is not None
    # Spotler merged the record's contact into another one that holds the same address and values.
    world.spotler.remove(C1)
    world.spotler.seed(dataclasses.replace(created, external_id="sp-merged"))

    outcome = await send(world, C1, ChangeKind.UPDATE, 3)
    assert (outcome.action, outcome.external_id) == ("none", "sp-merged")
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert link.external_id == "sp-merged"
