"""A Spotler contact shared by records of two addresses, and a create retried after its write landed.

A record whose linked contact went with another record to another address (or stayed on the old one while the
record moved on) changes that contact as much as the records of the address it holds: its change waits for their
address lease too, or an anonymize and an update of one contact interleave (the anonymize wipes the names, the
update brings the address back, and the record's three-way base then reads the blanks as Spotler's news).

A create whose write landed but whose push failed before the link was saved finds the record's own contact on
the retry: it holds the bits the first attempt held (a new row of an address another live record speaks for).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState
from sync_core.services.leases import email_lease_name
from sync_core.services.push import PushService, RetryLater
from sync_core.spotler.errors import SpotlerTimeout
from tests.unit.domain_builders import T0, hashed, options, person, push_input
from tests.unit.service_fakes import APP_USER, World, change, row_attributes
from tests.unit.test_identity_services import MAPPING
from tests.unit.test_joining_rules import CONTACT as CONTACT_MAPPING

C1 = "0a000000-0000-4000-8000-000000000001"
L7 = "0b000000-0000-4000-8000-000000000007"
GRACE = "grace@example.com"
MOVED = "moved@example.com"


def push_of(world: World) -> PushService:
    return PushService(
        state=world.state,
        spotler=world.spotler,
        dataverse=world.dataverse,
        mapping=MAPPING,
        options=options(),
        clock=world.clock,
        app_user_id=APP_USER,
        lease_wait=timedelta(0),  # one try: a held lease is a conflict at once
    )


async def test_a_change_of_a_record_whose_contact_holds_another_address_waits_for_that_address() -> None:
    world = World()
    # C1 spoke for sp-9 on grace's address; its row moved on to MOVED, and sp-9 still holds grace's address
    # (the records of that address may be anonymizing it right now).
    world.spotler.seed(SpotlerContact("sp-9", {"email": GRACE, "firstName": "Grace"}, {1: True}, created=T0))
    await world.state.save_link(LinkState("contact", C1, "sp-9", email_hash=hashed(MOVED), base={}))
    attrs = row_attributes(C1, emailaddress1=MOVED, firstname="Grace", jobtitle="CTO")
    world.dataverse.put_row("contact", C1, attrs)
    world.clock.advance(seconds=1)
    edit = change(C1, {"jobtitle": "CTO"}, kind=ChangeKind.UPDATE, version=2, modified_on=world.clock.now())
    edit = dataclasses.replace(edit, attributes=attrs)
    other = push_of(world)
    lease = await other.leases.take_named(email_lease_name(hashed(GRACE)), "contact/another-record")
    assert lease is not None
    try:
        with pytest.raises(RetryLater):
            await push_of(world).handle(edit, owner="first")
        contact = world.spotler.contact("sp-9")
        assert contact is not None
        assert contact.email == GRACE  # nothing written while the records of that address hold it
    finally:
        await other.leases.give_back_named(email_lease_name(hashed(GRACE)), lease)

    outcome = await push_of(world).handle(edit, owner="retry")
    assert outcome.action == "update"
    contact = world.spotler.contact("sp-9")
    assert contact is not None
    assert (contact.email, contact.properties.get("jobTitle")) == (MOVED, "CTO")


async def test_a_retried_create_whose_contact_landed_holds_the_bits_its_first_attempt_held() -> None:
    world = World()
    # L7 (Do Not Bulk Email ticked) still speaks for grace in Dynamics; its contact went with another record to
    # another address, so no contact holds grace's address when a new row for her is created.
    world.spotler.seed(SpotlerContact("sp-elsewhere", {"email": MOVED}, {1: True}, created=T0))
    await world.state.save_link(LinkState("lead", L7, "sp-elsewhere", email_hash=hashed(GRACE), base={}))
    attrs = row_attributes(C1, emailaddress1=GRACE)
    world.dataverse.put_row("contact", C1, attrs)
    world.clock.advance(seconds=1)
    create = dataclasses.replace(
        change(C1, {"emailaddress1": GRACE}, kind=ChangeKind.CREATE, version=1, modified_on=world.clock.now()),
        attributes=attrs,
    )
    # The create lands, the read-back that confirms where it went gets no answer: the push is retried.
    world.spotler.fail("get_contact", SpotlerTimeout("no answer in time"), external_id=C1)
    with pytest.raises(RetryLater):
        await push_of(world).handle(create, owner="first")
    landed = world.spotler.contact(C1)
    assert landed is not None
    assert landed.permissions.get(1) is not True
    assert await world.state.get_link("contact", C1) is None

    world.clock.advance(seconds=1)
    await push_of(world).handle(create, owner="retry")

    contact = world.spotler.contact(C1)
    assert contact is not None
    assert contact.permissions.get(1) is not True  # a new row is no opt-in, on its retry either
    link = await world.state.get_link("contact", C1)
    assert link is not None
    assert link.unsubscribed  # held until Dynamics records a new opt-in


def test_the_plan_for_the_records_own_contact_without_a_link_holds_the_bits_for_a_live_peer_of_the_address() -> None:
    silent = LinkState("lead", L7, "sp-elsewhere", email_hash=hashed(GRACE), base={})
    own = SpotlerContact(C1, {"email": GRACE}, {}, channels={"EMAIL": True})
    inp = push_input(
        person(emailaddress1=GRACE), kind=ChangeKind.CREATE, record_id=C1, spotler=own, address_peers=(silent,)
    )
    plan = plan_push(inp, CONTACT_MAPPING, options())
    assert plan.contact is None or plan.contact.permissions.get(1) is not True
    assert plan.link is not None
    assert plan.link.unsubscribed
    alone = plan_push(dataclasses.replace(inp, address_peers=()), CONTACT_MAPPING, options())
    assert alone.contact is not None
    assert alone.contact.permissions == {1: True}  # nobody else speaks for the address: the new row's flags


def test_a_record_coming_back_writes_its_values_over_the_blanks_of_a_contact_anonymized_while_it_was_out() -> None:
    # The record left the sync (deactivated) while another record kept the shared contact; that record left too
    # and the contact was anonymized; a third record of the address came back first and wrote the address again.
    # The blank names are no news from Spotler: the returning record writes its own.
    first = plan_push(push_input(person(), kind=ChangeKind.CREATE), CONTACT_MAPPING, options())
    assert first.link is not None
    left = dataclasses.replace(first.link, in_scope=False)
    refilled = SpotlerContact("c-1", {"email": "ada@example.com"}, {1: True}, channels={"EMAIL": True})
    plan = plan_push(
        push_input(person(), kind=ChangeKind.SET_STATE, changed={"statecode"}, link=left, spotler=refilled),
        CONTACT_MAPPING,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact is not None
    assert (plan.contact.properties.get("firstName"), plan.contact.properties.get("lastName")) == ("Ada", "Lovelace")


def test_a_record_leaving_a_linked_contact_that_holds_no_address_does_not_anonymize_it_again() -> None:
    # The contact was anonymized for the records of its address; this record (Do Not Email now) read it so. A
    # second anonymize, landing after a record of that address wrote it back, would wipe that record's contact.
    link = LinkState("contact", C1, "sp-9", email_hash=hashed(MOVED), base={})
    blank = SpotlerContact("sp-9", {}, {}, channels={"EMAIL": False})
    plan = plan_push(
        push_input(person(emailaddress1=MOVED, donotemail=True), changed={"donotemail"}, record_id=C1, link=link,
                   spotler=blank),
        CONTACT_MAPPING,
        options(),
    )  # fmt: skip
    assert plan.action is PushAction.NONE
    assert plan.link is not None
    assert plan.link.anonymized
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed(MOVED)  # the person's tombstone all the same
