"""Leaving the sync, shared contacts and the hold on re-subscription, rule by rule (pure plans, no I/O).

These pin `live_peers`, `plan_departure`, the leaving-scope plans, the re-subscription hold, the anonymized
linked contact, the purge body and the pull's skip of contacts without an address.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from sync_core.domain.convert import value_hash
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.plan import Departure, PushAction, live_peers, plan_departure, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, SuppressionCause
from tests.unit.domain_builders import KEY, T0, hashed, options, push_input

ADA = "ada@example.com"
SOON = T0 + timedelta(hours=1)
EMAIL = {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"}
JOB = {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"}
PHONE = {"dataverse": "telephone1", "spotler": "phoneNumber", "direction": "to_dynamics"}
BIT1 = {"bit": 1, "source": "not_donotbulkemail", "direction": "both"}
BIT2 = {"bit": 2, "dataverse": "new_newsletter", "direction": "both"}
BIT3_PULL_ONLY = {"bit": 3, "dataverse": "new_events", "direction": "to_dynamics"}
MAPPING = EntityMapping.model_validate({"fields": [EMAIL, JOB, PHONE], "permissions": [BIT1, BIT2, BIT3_PULL_ONLY]})


def attrs(**kw: Any) -> dict[str, Any]:
    return {"emailaddress1": ADA, "jobtitle": "Analyst", "new_newsletter": True, "statecode": 0, **kw}


def link(**kw: Any) -> LinkState:
    kw.setdefault("email_hash", hashed(ADA))
    return LinkState("contact", "c-1", "c-1", **kw)


def peer(record_id: str = "l-1", **kw: Any) -> LinkState:
    return LinkState("lead", record_id, "c-1", email_hash=hashed(ADA), **kw)


def contact(perms: dict[int, bool] | None = None, **props: Any) -> SpotlerContact:
    return SpotlerContact(
        "c-1",
        {"email": ADA, "jobTitle": "Analyst", **props},
        perms if perms is not None else {1: True, 2: True, 3: True},
    )


def plan(values: dict[str, Any], **kw: Any) -> Any:
    scope = kw.pop("on_leaving_scope", "unsubscribe")
    return plan_push(push_input(values, **kw), MAPPING, options(on_leaving_scope=scope))


# --- live peers -----------------------------------------------------------------------------------------------------


def test_live_peers_leave_out_anonymized_and_out_of_scope_links() -> None:
    alive = peer("l-live")
    anonymized = peer("l-anon", anonymized=True)
    gone = peer("l-gone", in_scope=False)
    same_id_other_table = LinkState("lead", "c-1", "c-1")
    found = live_peers([alive, anonymized, gone, same_id_other_table])
    assert found == [alive, same_id_other_table]


# --- plan_departure -------------------------------------------------------------------------------------------------


def test_departure_keeps_the_contact_for_a_live_peer_whatever_the_setting() -> None:
    for mode in ("unsubscribe", "anonymize", "keep"):
        got = plan_departure(contact(), [peer()], MAPPING, options(on_leaving_scope=mode))
        assert got == Departure(PushAction.NONE, "Spotler contact kept for lead l-1")


def test_departure_by_setting() -> None:
    assert plan_departure(contact(), [], MAPPING, options(on_leaving_scope="keep")) == Departure(
        PushAction.NONE, "Spotler contact kept (ON_LEAVING_SCOPE=keep)"
    )
    assert plan_departure(contact(), [], MAPPING, options(on_leaving_scope="anonymize")) == Departure(
        PushAction.ANONYMIZE, "Spotler contact anonymized"
    )


def test_unsubscribe_turns_off_only_the_pushed_bits_that_are_on() -> None:
    got = plan_departure(contact({1: True, 2: False, 3: True, 9: True}), [], MAPPING, options())
    # bit 2 is already off, bit 3 is Spotler's own (⬅), bit 9 is not mapped
    assert got == Departure(PushAction.UNSUBSCRIBE, "unsubscribed", SpotlerContact("c-1", permissions={1: False}))


def test_unsubscribe_with_every_bit_already_off_writes_nothing() -> None:
    assert plan_departure(contact({1: False, 2: False}), [], MAPPING, options()) == Departure(
        PushAction.NONE, "unsubscribed"
    )


# --- leaving the sync -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "reason", "detail"),
    [
        (attrs(emailaddress1=None), ReasonCode.NO_VALID_EMAIL, "no valid e-mail address"),
        (attrs(emailaddress1="not-an-address"), ReasonCode.NO_VALID_EMAIL, "no valid e-mail address"),
    ],
)
def test_a_linked_record_leaving_the_sync_unsubscribes_its_contact(
    values: dict[str, Any], reason: ReasonCode, detail: str
) -> None:
    got = plan(values, link=link(base={"x": "y"}, failures=2), spotler=contact())
    assert (got.action, got.reason, got.detail) == (PushAction.UNSUBSCRIBE, reason, f"{detail}; unsubscribed")
    assert got.contact == SpotlerContact("c-1", permissions={1: False, 2: False})
    assert got.external_id == "c-1"
    assert got.suppress is None
    new = got.link
    assert (new.unsubscribed, new.in_scope, new.anonymized, new.failures) == (True, False, False, 0)
    assert new.base == {"x": "y", "permission:1": value_hash(KEY, False), "permission:2": value_hash(KEY, False)}


def test_leaving_the_sync_with_anonymize_leaves_a_tombstone_and_keeps_the_leaving_reason() -> None:
    got = plan(attrs(emailaddress1=None), link=link(), spotler=contact(), on_leaving_scope="anonymize")
    assert (got.action, got.reason) == (PushAction.ANONYMIZE, ReasonCode.NO_VALID_EMAIL)
    assert got.detail == "no valid e-mail address; Spotler contact anonymized"
    assert got.link.reason is ReasonCode.NO_VALID_EMAIL
    assert got.link.anonymized
    assert not got.link.in_scope
    assert got.suppress is not None
    assert (got.suppress.email_hash, got.suppress.cause) == (hashed(ADA), SuppressionCause.ANONYMIZED)


def test_leaving_the_sync_never_synced_or_already_anonymized_writes_nothing() -> None:
    never = plan(attrs(emailaddress1=None))
    assert (never.action, never.reason, never.link) == (PushAction.NONE, ReasonCode.NO_VALID_EMAIL, None)
    gone = plan(attrs(emailaddress1=None), link=link(anonymized=True), spotler=contact())
    assert (gone.action, gone.detail) == (PushAction.NONE, "no valid e-mail address")
    no_contact = plan(attrs(emailaddress1=None), link=link())
    assert no_contact.action is PushAction.NONE
    assert not no_contact.link.in_scope


def test_leaving_the_sync_keeps_a_shared_contact_for_a_live_peer() -> None:
    got = plan(attrs(emailaddress1=None), link=link(), spotler=contact(), peers=[peer()])
    assert (got.action, got.detail) == (PushAction.NONE, "no valid e-mail address; Spotler contact kept for lead l-1")
    assert not got.link.in_scope
    assert not got.link.unsubscribed


def test_deactivation_with_anonymize_off_leaves_the_sync_but_a_qualified_lead_does_not() -> None:
    got = plan(attrs(statecode=1), kind=ChangeKind.SET_STATE, link=link(), spotler=contact())
    assert got.action is PushAction.ANONYMIZE  # ANONYMIZE_ON_DEACTIVATE is on by default
    off = plan_push(
        push_input(attrs(statecode=1), kind=ChangeKind.SET_STATE, link=link(), spotler=contact()),
        MAPPING,
        options(anonymize_on_deactivate=False),
    )
    assert (off.action, off.reason, off.detail) == (
        PushAction.UNSUBSCRIBE,
        ReasonCode.INACTIVE,
        "record is inactive; unsubscribed",
    )


# --- the hold on re-subscription -----------------------------------------------------------------------------------


def held_link() -> LinkState:
    off = value_hash(KEY, False)
    return link(unsubscribed=True, in_scope=False, base={"permission:1": off, "permission:2": off})


def test_back_in_scope_the_data_flows_but_no_bit_is_turned_on_without_an_opt_in() -> None:
    got = plan(
        attrs(jobtitle="Planner"),
        changed={"emailaddress1", "jobtitle"},
        link=held_link(),
        spotler=contact({1: False, 2: False}),
    )
    assert got.action is PushAction.UPDATE
    assert got.contact.properties == {"jobTitle": "Planner"}
    assert got.contact.permissions == {}
    assert got.detail == "updated in Spotler; subscriptions stay off until a new opt-in in Dynamics"
    assert got.link.unsubscribed
    assert got.link.in_scope


def test_a_bit_the_person_turned_on_in_spotler_is_left_alone_by_the_hold() -> None:
    got = plan(attrs(), changed={"jobtitle"}, link=held_link(), spotler=contact({1: True, 2: False}))
    assert got.contact is None or 1 not in got.contact.permissions


def test_an_explicit_opt_in_ends_the_hold() -> None:
    got = plan(
        attrs(),
        kind=ChangeKind.UPDATE,
        changed={"donotbulkemail"},
        link=held_link(),
        spotler=contact({1: False, 2: False}),
    )
    assert got.contact.permissions == {1: True, 2: True}
    assert not got.link.unsubscribed
    assert "subscriptions stay off" not in got.detail


# --- the anonymized linked contact ---------------------------------------------------------------------------------


def test_a_linked_contact_without_an_address_needs_a_new_opt_in() -> None:
    blank = SpotlerContact("c-1", {}, {1: False}, channels={"EMAIL": False})
    got = plan(attrs(), changed={"jobtitle"}, link=link(), spotler=blank)
    assert (got.action, got.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert got.detail == "the Spotler contact was anonymized; needs a new opt-in in Dynamics"
    back = plan(attrs(), changed={"donotemail"}, link=link(), spotler=blank)
    assert back.action is PushAction.UPDATE
    assert back.contact.properties["email"] == ADA


def test_a_contact_without_an_address_is_not_the_persons_opt_out() -> None:
    assert not SpotlerContact("c-1", {}, channels={"EMAIL": False}).opted_out
    assert SpotlerContact("c-1", {"email": ADA}, channels={"EMAIL": False}).opted_out
    assert not SpotlerContact("c-1", {"email": ADA}, channels={}).opted_out


# --- the purge body ------------------------------------------------------------------------------------------------


def test_the_purge_body_carries_every_mapped_value_spotler_owns_and_every_bit() -> None:
    current = contact({1: True, 2: False, 3: True, 7: True}, phoneNumber="+31 6", customerType="B2B")
    got = plan_push(
        push_input(attrs(jobtitle="Planner"), changed={"jobtitle"}, link=link(), spotler=current),
        MAPPING,
        options(purge_when_not_set=True),
    )
    assert got.purge
    assert got.contact.properties == {"email": ADA, "jobTitle": "Planner", "phoneNumber": "+31 6"}
    assert got.contact.permissions == {1: True, 2: True, 3: True, 7: True}


# --- the pull and anonymized contacts ------------------------------------------------------------------------------


def test_the_pull_reads_nothing_from_a_contact_without_an_address() -> None:
    blank = SpotlerContact("c-1", {}, {1: False, 2: False}, channels={"EMAIL": False}, last_changed=SOON)
    row = DataverseRow("contact", "c-1", attrs(), modified_on=T0)
    got = plan_pull(blank, dataclasses.replace(link(), reason=ReasonCode.CREATED), row, MAPPING, options(), SOON)
    assert got.skipped
    assert got.changes == {}
    assert got.detail == "the Spotler contact holds no address (anonymized); nothing is pulled"
