"""No bit stays on for a person with a tombstone, whichever of their changes is applied first.

When changes come out of order, a record can reach Spotler (its own contact created, bits on) before the leave of
another record of its address is applied. The leave's tombstone then plans that record again, and a suppressed
record's own contact loses its bits.
"""

from __future__ import annotations

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState
from tests.unit.domain_builders import T0, hashed
from tests.unit.test_identity_paths import ADA, BOB, C1, L1, Setup


async def test_a_tombstone_left_after_a_record_reached_spotler_turns_that_records_bits_off() -> None:
    s = Setup()
    await s.create(C1, ADA)
    assert s.contact(C1).permissions == {1: True, 2: True}
    # A lead of the same person, linked to a contact that went with another address before it took Ada's; its
    # delete is applied only now.
    s.spotler.seed(SpotlerContact("sp-x", {"email": BOB}, {1: True}, created=T0, last_changed=T0))
    s.event(L1, ChangeKind.CREATE, {"emailaddress1": ADA}, entity="lead")
    await s.world.state.save_link(LinkState("lead", L1, "sp-x", email_hash=hashed(ADA), dv_version=1))

    outcome = await s.push(L1, ChangeKind.DELETE, entity="lead")

    assert (outcome.action, outcome.detail) == (
        "none",
        "deleted; its Spotler contact holds another address, left alone",
    )
    assert await s.world.state.get_suppression(hashed(ADA)) is not None
    contact = s.contact(C1)
    assert (contact.email, contact.permissions) == (ADA, {1: False, 2: False})
    link = await s.link("contact", C1)
    assert (link.in_scope, link.unsubscribed, link.reason) == (False, True, ReasonCode.SUPPRESSED)
    assert link.detail == (
        "suppressed (anonymized); needs a new opt-in in Dynamics; its subscriptions turned off "
        "(its address has a tombstone now)"
    )


async def test_a_tombstone_plans_again_no_record_of_another_address_or_out_of_the_sync() -> None:
    s = Setup()
    await s.create(C1, BOB)
    s.spotler.seed(SpotlerContact("sp-x", {"email": "carol@example.com"}, {1: True}, created=T0, last_changed=T0))
    s.event(L1, ChangeKind.CREATE, {"emailaddress1": ADA}, entity="lead")
    await s.world.state.save_link(LinkState("lead", L1, "sp-x", email_hash=hashed(ADA), dv_version=1))
    before = await s.details("contact", C1)

    await s.push(L1, ChangeKind.DELETE, entity="lead")

    assert s.contact(C1).permissions == {1: True, 2: True}
    assert await s.details("contact", C1) == before
