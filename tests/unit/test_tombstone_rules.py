"""The tombstone rules as pure plans: a record that leaves while its contact holds another address, and the
tombstone of a person who opted out in Spotler.

Every plan is checked whole: the action, reason and detail, the link left behind and the tombstone.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import PullPlan, plan_pull
from sync_core.domain.plan import PushAction, PushPlan, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import T0, entity_mapping, hashed, options, person, push_input, synced

ADA = "ada@example.com"
BOB = "bob@example.com"
NOW = T0 + timedelta(hours=1)
RETRY = T0 + timedelta(minutes=30)


def link(**kw: Any) -> LinkState:
    kw.setdefault("email_hash", hashed(ADA))
    return LinkState("contact", "c-1", "sp-1", failures=3, next_retry=RETRY, in_scope=True, **kw)


def contact(email: str | None = BOB, *, opted_out: bool = False, external_id: str = "sp-1") -> SpotlerContact:
    props: dict[str, Any] = {"email": email} if email is not None else {}
    return SpotlerContact(external_id, props, {1: True}, channels={"EMAIL": not opted_out})


def peer(email: str, record_id: str = "l-1", **kw: Any) -> LinkState:
    return LinkState("lead", record_id, "sp-1", email_hash=hashed(email), **kw)


def run(attrs: Any, kind: ChangeKind = ChangeKind.UPDATE, **kw: Any) -> PushPlan:
    kw.setdefault("link", link())
    return plan_push(push_input(attrs, kind=kind, **kw), entity_mapping(), options())


# --- leaving while the contact holds another address ------------------------------------------------------------


LEAVING = [
    pytest.param(
        None,
        ChangeKind.DELETE,
        ReasonCode.SYNCED,
        "deleted",
        SuppressionCause.ANONYMIZED,
        True,
        id="deleted",
    ),
    pytest.param(
        person(),
        ChangeKind.DELETE,
        ReasonCode.SYNCED,
        "deleted",
        SuppressionCause.ANONYMIZED,
        True,
        id="deleted-with-pre-image",
    ),
    pytest.param(
        person(donotemail=True),
        ChangeKind.UPDATE,
        ReasonCode.SUPPRESSED,
        "Do Not Email is set",
        SuppressionCause.OPTED_OUT,
        False,
        id="do-not-email",
    ),
    pytest.param(
        person(statecode=1),
        ChangeKind.UPDATE,
        ReasonCode.INACTIVE,
        "inactive",
        SuppressionCause.ANONYMIZED,
        False,
        id="deactivated",
    ),
]


def expected_left(reason: ReasonCode, what: str, anonymized: bool, version: int | None = None) -> PushPlan:
    detail = f"{what}; its Spotler contact holds another address, left alone"
    left = LinkState(
        "contact",
        "c-1",
        "sp-1",
        email_hash=hashed(ADA),
        dv_version=version,
        in_scope=False,
        anonymized=anonymized,
        reason=reason,
        detail=detail,
        last_attempt=NOW,
        failures=0,
        next_retry=None,
    )
    return PushPlan(PushAction.NONE, reason, detail, external_id="sp-1", link=left)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_leaving_while_the_contact_holds_another_address_leaves_it_alone_and_tombstones_the_address(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(BOB), version=7)
    tomb = Suppression(hashed(ADA), cause, "contact", "c-1", NOW)
    assert got == PushPlan(
        **{**_fields(expected_left(reason, what, anonymized, version=7)), "suppress": tomb},
    )


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_a_live_record_of_the_same_address_keeps_the_tombstone_away(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(BOB), peers=[peer(BOB, "l-2"), peer(ADA)])
    assert got == expected_left(reason, what, anonymized)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_a_peer_of_another_address_does_not_keep_the_tombstone_away(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(BOB), peers=[peer(BOB, "l-2")])
    assert got.suppress == Suppression(hashed(ADA), cause, "contact", "c-1", NOW)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_the_address_already_tombstoned_gets_no_second_tombstone(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    known = Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "lead", "l-9", T0)
    got = run(attrs, kind, spotler=contact(BOB), suppression=known)
    assert got == expected_left(reason, what, anonymized)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_a_tombstone_of_another_address_does_not_count(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    other = Suppression(hashed(BOB), SuppressionCause.OPTED_OUT, "lead", "l-9", T0)
    got = run(attrs, kind, spotler=contact(BOB), suppression=other)
    assert got.suppress == Suppression(hashed(ADA), cause, "contact", "c-1", NOW)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_leaving_from_the_records_own_contact_follows_the_usual_rules(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(ADA))
    assert "holds another address" not in got.detail
    assert got.action is PushAction.ANONYMIZE


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_leaving_from_a_contact_without_address_follows_the_usual_rules(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(None))
    assert "holds another address" not in got.detail


def _fields(plan: PushPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in PushPlan.__slots__}


# --- the opt-out tombstone of a person who opted out in Spotler --------------------------------------------------


def opted_out_plan(**kw: Any) -> PushPlan:
    return plan_push(push_input(person(), **kw), entity_mapping(), options())


@pytest.mark.parametrize("where", ["spotler", "email_match"])
def test_an_opt_out_in_spotler_leaves_its_tombstone_under_the_contacts_address(where: str) -> None:
    found = contact("Ada@Example.COM", opted_out=True)
    got = opted_out_plan(**{where: found})
    assert (got.action, got.reason) == (PushAction.NONE, ReasonCode.OPTED_OUT_IN_SPOTLER)
    assert got.suppress == Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "contact", "c-1", NOW)


def test_the_opt_out_tombstone_follows_the_address_that_opted_out_not_the_records() -> None:
    got = opted_out_plan(link=link(), spotler=contact(BOB, opted_out=True))
    assert got.suppress == Suppression(hashed(BOB), SuppressionCause.OPTED_OUT, "contact", "c-1", NOW)


def test_an_opt_out_already_tombstoned_is_not_written_again() -> None:
    known = Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "lead", "l-9", T0)
    got = opted_out_plan(spotler=contact(ADA, opted_out=True), suppression=known)
    assert got.reason is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert got.suppress is None


@pytest.mark.parametrize(
    "known",
    [
        Suppression(hashed(ADA), SuppressionCause.ANONYMIZED, "lead", "l-9", T0),
        Suppression(hashed(BOB), SuppressionCause.OPTED_OUT, "lead", "l-9", T0),
    ],
    ids=["anonymized-tombstone-is-strengthened", "tombstone-of-another-address"],
)
def test_a_weaker_or_other_tombstone_gets_the_opt_out_all_the_same(known: Suppression) -> None:
    got = opted_out_plan(spotler=contact(ADA, opted_out=True), suppression=known)
    assert got.suppress == Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "contact", "c-1", NOW)


# --- the pull to a record that left its contact for another address ----------------------------------------------

PULL_MAPPING = EntityMapping.model_validate(
    {
        "fields": [
            {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
            {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "both"},
        ],
        "permissions": [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}],
    }
)


def pulled(held: str, *, in_scope: bool, reason: ReasonCode | None) -> PullPlan:
    known = LinkState("contact", "c-1", "sp-1", email_hash=hashed(ADA), in_scope=in_scope, reason=reason)
    spotler = SpotlerContact("sp-1", {"email": held, "jobTitle": "Engineer"}, {1: False}, last_changed=NOW)
    row = DataverseRow("contact", "c-1", {"emailaddress1": ADA, "jobtitle": "Analyst", "donotbulkemail": False})
    return plan_pull(spotler, known, row, PULL_MAPPING, options(), NOW)


@pytest.mark.parametrize(
    ("reason", "shown"), [(ReasonCode.SUPPRESSED, ReasonCode.SUPPRESSED), (None, ReasonCode.SYNCED)]
)
def test_nothing_is_pulled_to_a_record_that_left_the_contact_for_another_address(
    reason: ReasonCode | None, shown: ReasonCode
) -> None:
    got = pulled(BOB, in_scope=False, reason=reason)
    why = "the record's e-mail address is not the Spotler contact's; nothing is pulled"
    known = LinkState("contact", "c-1", "sp-1", email_hash=hashed(ADA), in_scope=False, reason=reason)
    assert got == PullPlan({}, shown, why, known, skipped=True)


@pytest.mark.parametrize(
    ("held", "in_scope"), [("Ada@Example.COM", False), (BOB, True)], ids=["same-address-other-case", "in-scope"]
)
def test_the_pull_goes_on_for_the_records_own_address_or_a_record_in_scope(held: str, in_scope: bool) -> None:
    got = pulled(held, in_scope=in_scope, reason=ReasonCode.SYNCED)
    assert not got.skipped
    assert got.changes == {"jobtitle": "Engineer", "donotbulkemail": True}


# --- a peer that moved to another address keeps nothing for this person -------------------------------------------


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_a_peer_that_moved_to_another_address_does_not_keep_the_contact(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(ADA), peers=[peer(BOB)])
    assert got.action is PushAction.ANONYMIZE
    assert got.suppress is not None
    assert got.suppress.email_hash == hashed(ADA)


@pytest.mark.parametrize(("attrs", "kind", "reason", "what", "cause", "anonymized"), LEAVING)
def test_a_peer_of_the_same_address_keeps_the_contact(
    attrs: Any, kind: ChangeKind, reason: ReasonCode, what: str, cause: SuppressionCause, anonymized: bool
) -> None:
    got = run(attrs, kind, spotler=contact(ADA), peers=[peer(ADA)])
    assert got.action is PushAction.NONE
    assert got.detail.endswith("Spotler contact kept for lead l-1")
    assert got.suppress is None


@pytest.mark.parametrize("spotler", [contact(ADA), None], ids=["contact", "contact-gone"])
def test_a_delete_tombstones_the_linked_address_before_the_pre_image(spotler: SpotlerContact | None) -> None:
    got = run(person(emailaddress1=BOB), ChangeKind.DELETE, spotler=spotler)
    assert got.suppress == Suppression(hashed(ADA), SuppressionCause.ANONYMIZED, "contact", "c-1", NOW)


# --- a record that follows a shared contact ----------------------------------------------------------------------

OWNER = LinkState("contact", "c-0", "sp-1", email_hash=hashed(ADA))


def followed(**kw: Any) -> PushPlan:
    return plan_push(push_input(person(), peers=[OWNER], **kw), entity_mapping(), options())


def test_a_record_that_joins_a_contact_another_record_speaks_for_follows_it_unsubscribed() -> None:
    got = followed(email_match=contact(ADA))
    detail = "shares its Spotler contact with contact c-0, which takes precedence"
    assert (got.action, got.reason, got.detail, got.external_id) == (PushAction.NONE, ReasonCode.SYNCED, detail, "sp-1")
    assert got.link is not None
    assert (got.link.unsubscribed, got.link.in_scope, got.link.anonymized) == (True, True, False)
    assert got.link.email_hash == hashed(ADA)


@pytest.mark.parametrize("unsubscribed", [False, True])
def test_a_linked_follower_keeps_its_own_unsubscribed_flag(unsubscribed: bool) -> None:
    got = followed(link=link(unsubscribed=unsubscribed), spotler=contact(ADA))
    assert got.link is not None
    assert got.link.unsubscribed is unsubscribed


# --- a contact anonymized under a linked record ----------------------------------------------------------------


def test_an_opt_in_on_a_contact_anonymized_meanwhile_writes_every_value_again() -> None:
    agreed, _ = synced(person())
    erased = SpotlerContact("c-1", {}, {1: False, 2: False}, channels={"EMAIL": False})
    got = plan_push(
        push_input(person(), link=agreed, spotler=erased, changed={"donotbulkemail"}), entity_mapping(), options()
    )
    assert got.action is PushAction.UPDATE
    assert got.contact is not None
    assert {"email": ADA, "jobTitle": "Analyst", "firstName": "Ada"}.items() <= got.contact.properties.items()
    assert got.link is not None
    assert got.link.base["jobTitle"] == agreed.base["jobTitle"]
    assert (got.link.dv_version, got.link.dv_modified_on) == (1, T0)  # the link goes on, what it agreed on does not


def test_an_opt_in_on_an_anonymized_link_starts_from_a_fresh_base_even_when_the_contact_is_there() -> None:
    agreed, held = synced(person())
    gone = dataclasses.replace(agreed, anonymized=True, base={**agreed.base, "oldProperty": "stale"})
    got = plan_push(
        push_input(person(), link=gone, spotler=held, changed={"donotbulkemail"}), entity_mapping(), options()
    )
    assert got.link is not None
    assert "oldProperty" not in got.link.base
    assert not got.link.anonymized
