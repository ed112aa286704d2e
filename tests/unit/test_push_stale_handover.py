"""A stale delivery changes nothing: not the record, not the contact, and not who speaks for a shared contact.

A stale plan remembers no link; that must not read as "stopped speaking for the contact", which would name the
next record as successor and have `_hand_over` write its values and a status saying it speaks for the person now,
while the record that sent the stale change still does.
"""

from __future__ import annotations

import dataclasses

from sync_core.domain.records import ChangeKind
from tests.unit.test_identity_paths import ADA, C1, L1, Setup


async def test_a_stale_change_of_the_record_that_speaks_for_a_shared_contact_hands_nothing_over() -> None:
    s = Setup()
    await s.create(C1, ADA, firstname="Ada")
    assert (await s.create(L1, ADA, entity="lead", firstname="Lea")).external_id == C1
    await s.push(C1, ChangeKind.UPDATE, {"jobtitle": "Countess"})
    lead_history = await s.details("lead", L1)
    contact = s.contact(C1)
    stale = dataclasses.replace(s.event(C1, ChangeKind.UPDATE, {"jobtitle": "Clerk"}), version=1)

    outcome = await s.service().handle(stale, owner="stale")

    assert (outcome.action, outcome.detail) == ("none", "stale event ignored")
    assert s.contact(C1) == contact
    assert await s.details("lead", L1) == lead_history
    assert outcome.successor is None
