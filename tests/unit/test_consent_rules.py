"""The consent and identity rules of the push and pull decisions, each pinned on its own.

Every test builds its own mapping (below), so the rules are tested whatever directions the shipped default
mapping gives its fields.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.plan import PushAction, PushPlan, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import T0, apply_write, hashed, options, person, push_input, synced

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
CONTACT = EntityMapping.model_validate({"fields": FIELDS, "permissions": PERMISSIONS})
LEAD = CONTACT
SOON = T0 + timedelta(hours=1)
LATER = T0 + timedelta(hours=2)
ADA = "ada@example.com"


def subscribed(**overrides: object) -> dict[str, object]:
    return person(**{"new_newsletter": True, **overrides})  # type: ignore[arg-type]


def tomb(cause: SuppressionCause, email: str = ADA) -> Suppression:
    return Suppression(hashed(email), cause, "contact", "c-1", T0)


def anonymized_link() -> LinkState:
    link, _ = synced(subscribed(), mapping=CONTACT)
    return dataclasses.replace(link, anonymized=True, base={})


# --- tombstones and what counts as a new opt-in --------------------------------------------------------------------


@pytest.mark.parametrize("cause", list(SuppressionCause))
def test_ticking_do_not_bulk_email_is_no_opt_in(cause: SuppressionCause) -> None:
    plan = plan_push(
        push_input(subscribed(donotbulkemail=True), changed={"donotbulkemail"}, suppression=tomb(cause)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.lift_suppression is None
    assert plan.contact is None
    assert plan.detail == f"suppressed ({cause.value}); needs a new opt-in in Dynamics"


def test_ticking_do_not_bulk_email_on_an_anonymized_link_is_no_opt_in() -> None:
    plan = plan_push(
        push_input(subscribed(donotbulkemail=True), changed={"donotbulkemail"}, link=anonymized_link()),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.detail == "anonymized; needs a new opt-in in Dynamics"
    assert plan.link is not None
    assert plan.link.anonymized


@pytest.mark.parametrize("cause", list(SuppressionCause))
def test_clearing_do_not_bulk_email_is_an_opt_in(cause: SuppressionCause) -> None:
    plan = plan_push(
        push_input(subscribed(donotbulkemail=False), changed={"donotbulkemail"}, suppression=tomb(cause)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.CREATE, ReasonCode.CREATED)
    assert plan.lift_suppression == hashed(ADA)
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True, NEWSLETTER: True}


@pytest.mark.parametrize("cause", list(SuppressionCause))
def test_ticking_a_subscription_column_is_an_opt_in(cause: SuppressionCause) -> None:
    plan = plan_push(push_input(subscribed(), changed={"new_newsletter"}, suppression=tomb(cause)), CONTACT, options())
    assert plan.action is PushAction.CREATE
    assert plan.lift_suppression == hashed(ADA)


@pytest.mark.parametrize("cause", list(SuppressionCause))
def test_unticking_a_subscription_column_is_no_opt_in(cause: SuppressionCause) -> None:
    plan = plan_push(
        push_input(person(new_newsletter=False), changed={"new_newsletter"}, suppression=tomb(cause)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.lift_suppression is None


def test_ticking_a_subscription_column_while_do_not_bulk_email_stays_ticked_is_no_opt_in() -> None:
    plan = plan_push(
        push_input(
            subscribed(donotbulkemail=True),
            changed={"new_newsletter"},
            suppression=tomb(SuppressionCause.OPTED_OUT),
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.lift_suppression is None


def test_reactivating_a_record_does_not_lift_an_opt_out_tombstone() -> None:
    plan = plan_push(
        push_input(
            subscribed(),
            kind=ChangeKind.SET_STATE,
            changed={"statecode", "statuscode"},
            suppression=tomb(SuppressionCause.OPTED_OUT),
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.lift_suppression is None
    assert plan.contact is None
    assert plan.detail == "suppressed (opted_out); needs a new opt-in in Dynamics"


def test_reactivating_a_record_lifts_a_tombstone_left_by_its_deactivation() -> None:
    blank = SpotlerContact("c-1", channels={"EMAIL": True})
    plan = plan_push(
        push_input(
            subscribed(),
            kind=ChangeKind.SET_STATE,
            changed={"statecode", "statuscode"},
            link=anonymized_link(),
            spotler=blank,
            suppression=tomb(SuppressionCause.ANONYMIZED),
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.UPDATE, ReasonCode.UPDATED)
    assert plan.lift_suppression == hashed(ADA)
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True, NEWSLETTER: True}
    assert plan.contact.properties["email"] == ADA
    assert plan.link is not None
    assert not plan.link.anonymized
    assert plan.link.email_hash == hashed(ADA)


def test_deactivating_an_opted_out_person_keeps_the_opt_out_cause() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    plan = plan_push(
        push_input(
            subscribed(statecode=1),
            kind=ChangeKind.SET_STATE,
            changed={"statecode", "statuscode"},
            link=link,
            spotler=contact,
            suppression=tomb(SuppressionCause.OPTED_OUT),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.ANONYMIZE
    assert plan.suppress is None or plan.suppress.cause is SuppressionCause.OPTED_OUT


def test_a_change_that_does_not_touch_the_state_is_no_reactivation() -> None:
    plan = plan_push(
        push_input(subscribed(), changed={"jobtitle"}, suppression=tomb(SuppressionCause.ANONYMIZED)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)


def test_a_reactivation_event_of_a_row_that_stays_inactive_lifts_nothing() -> None:
    plan = plan_push(
        push_input(
            subscribed(statecode=1),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            suppression=tomb(SuppressionCause.ANONYMIZED),
            link=anonymized_link(),
        ),
        CONTACT,
        options(),
    )
    assert plan.lift_suppression is None
    assert plan.action is PushAction.NONE


@pytest.mark.parametrize("changed", [frozenset(), frozenset({"jobtitle"}), frozenset({"firstname", "lastname"})])
def test_an_edit_that_names_no_consent_column_is_no_opt_in(changed: frozenset[str]) -> None:
    for cause in SuppressionCause:
        plan = plan_push(push_input(subscribed(), changed=changed, suppression=tomb(cause)), CONTACT, options())
        assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)


def test_a_new_row_with_every_column_submitted_is_no_opt_in_unless_a_subscription_is_ticked() -> None:
    unsubscribed = person(new_newsletter=False)
    plan = plan_push(
        push_input(unsubscribed, kind=ChangeKind.CREATE, suppression=tomb(SuppressionCause.OPTED_OUT)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    # Ticked, but Do Not Bulk Email is ticked too: still no opt-in.
    plan = plan_push(
        push_input(
            subscribed(donotbulkemail=True), kind=ChangeKind.CREATE, suppression=tomb(SuppressionCause.OPTED_OUT)
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    plan = plan_push(
        push_input(subscribed(), kind=ChangeKind.CREATE, suppression=tomb(SuppressionCause.OPTED_OUT)),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.lift_suppression) == (PushAction.CREATE, hashed(ADA))


def test_a_delete_is_never_an_opt_in() -> None:
    plan = plan_push(
        push_input(
            subscribed(), kind=ChangeKind.DELETE, changed={"donotemail"}, suppression=tomb(SuppressionCause.OPTED_OUT)
        ),
        CONTACT,
        options(),
    )
    assert plan.lift_suppression is None
    assert plan.contact is None


def test_do_not_email_set_with_a_tombstone_is_no_opt_in_even_when_named() -> None:
    plan = plan_push(
        push_input(subscribed(donotemail=True), changed={"donotemail"}, suppression=tomb(SuppressionCause.OPTED_OUT)),
        CONTACT,
        options(),
    )
    assert plan.lift_suppression is None
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SUPPRESSED
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT


# --- e-mail pairing --------------------------------------------------------------------------------------------------


def test_an_opted_out_contact_found_by_email_is_not_written() -> None:
    opted_out = SpotlerContact("sp-7", {"email": "Ada@Example.com"}, {1: False}, channels={"EMAIL": False})
    plan = plan_push(push_input(subscribed(), kind=ChangeKind.CREATE, email_match=opted_out), CONTACT, options())
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.OPTED_OUT_IN_SPOTLER)
    assert plan.contact is None
    assert plan.link is None
    assert plan.detail == "opted out in Spotler; nothing is written"


def test_an_opted_out_contact_found_by_email_is_not_written_by_an_explicit_opt_in_either() -> None:
    opted_out = SpotlerContact("sp-7", {"email": ADA}, {1: False}, channels={"EMAIL": False})
    plan = plan_push(
        push_input(
            subscribed(),
            changed={"donotbulkemail", "new_newsletter"},
            email_match=opted_out,
            suppression=tomb(SuppressionCause.OPTED_OUT),
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.OPTED_OUT_IN_SPOTLER)
    assert plan.lift_suppression is None


def test_pairing_by_email_links_the_row_to_the_contact_found_and_writes_only_differences() -> None:
    found = SpotlerContact(
        "sp-7", {"email": "ADA@example.COM", "firstName": "Ada"}, {1: True}, channels={"EMAIL": True}
    )
    plan = plan_push(push_input(subscribed(), kind=ChangeKind.CREATE, email_match=found), CONTACT, options())
    assert (plan.action, plan.reason) == (PushAction.UPDATE, ReasonCode.UPDATED)
    assert plan.detail == "paired by e-mail with an existing Spotler contact; updated"
    assert plan.external_id == "sp-7"
    assert plan.contact is not None
    assert plan.contact.external_id == "sp-7"
    assert plan.contact.properties == {"lastName": "Lovelace", "jobTitle": "Analyst"}
    assert plan.contact.permissions == {NEWSLETTER: True}
    assert plan.link is not None
    assert (plan.link.external_id, plan.link.anonymized, plan.link.email_hash) == ("sp-7", False, hashed(ADA))


def test_a_contact_at_the_record_id_takes_precedence_over_an_email_match() -> None:
    _, own = synced(subscribed(), mapping=CONTACT)
    other = SpotlerContact("sp-7", {"email": ADA}, {1: True}, channels={"EMAIL": True})
    plan = plan_push(push_input(subscribed(jobtitle="CTO"), spotler=own, email_match=other), CONTACT, options())
    assert plan.external_id == "c-1"
    assert plan.contact is not None
    assert plan.contact.external_id == "c-1"
    assert plan.detail == "updated in Spotler"


# --- rows that share one Spotler contact -----------------------------------------------------------------------------


def shared_pair() -> tuple[LinkState, LinkState, SpotlerContact]:
    contact_link, shared = synced(subscribed(), mapping=CONTACT)
    lead_link = LinkState("lead", "l-1", "c-1", email_hash=hashed(ADA), base=dict(contact_link.base))
    return contact_link, lead_link, shared


@pytest.mark.parametrize("anonymize_on_deactivate", [True, False])
def test_deactivating_one_of_two_rows_sharing_a_contact_keeps_it_for_the_live_one(
    anonymize_on_deactivate: bool,
) -> None:
    contact_link, lead_link, shared = shared_pair()
    # An inactive contact has state 1; a lead leaves as 1 (qualified: it lives on anyway) or 2 (disqualified).
    for entity, link, peer in (("contact", contact_link, lead_link), ("lead", lead_link, contact_link)):
        plan = plan_push(
            push_input(
                subscribed(statecode=1 if entity == "contact" else 2),
                entity=entity,  # type: ignore[arg-type]
                record_id=link.record_id,
                kind=ChangeKind.SET_STATE,
                changed={"statecode", "statuscode"},
                link=link,
                spotler=shared,
                peers=[peer],
            ),
            CONTACT,
            options(anonymize_on_deactivate=anonymize_on_deactivate),
        )
        assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.INACTIVE)
        assert plan.suppress is None
        assert plan.contact is None
        assert plan.link is not None
        assert plan.link.external_id == "c-1"
        if anonymize_on_deactivate:
            assert plan.detail == f"inactive; Spotler contact kept for {peer.entity} {peer.record_id}"


def test_deactivating_the_last_live_row_anonymizes_even_with_departed_peers() -> None:
    contact_link, lead_link, shared = shared_pair()
    departed = dataclasses.replace(lead_link, anonymized=True)
    plan = plan_push(
        push_input(
            subscribed(statecode=1),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            link=contact_link,
            spotler=shared,
            peers=[departed],
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.ANONYMIZE, ReasonCode.ANONYMIZED)
    assert plan.suppress is not None
    assert (plan.suppress.cause, plan.suppress.email_hash) == (SuppressionCause.ANONYMIZED, hashed(ADA))
    assert plan.detail == "record deactivated"


def test_deleting_the_last_live_row_anonymizes_even_with_departed_peers() -> None:
    contact_link, lead_link, shared = shared_pair()
    plan = plan_push(
        push_input(
            None,
            kind=ChangeKind.DELETE,
            link=contact_link,
            spotler=shared,
            peers=[dataclasses.replace(lead_link, anonymized=True)],
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.ANONYMIZE, ReasonCode.ANONYMIZED)
    assert plan.detail == "record deleted"


def test_deleting_one_of_two_rows_unlinks_only_the_departing_row() -> None:
    contact_link, lead_link, shared = shared_pair()
    plan = plan_push(
        push_input(None, kind=ChangeKind.DELETE, link=contact_link, spotler=shared, peers=[lead_link], version=5),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SYNCED)
    assert plan.detail == "deleted; Spotler contact kept for lead l-1"
    assert plan.suppress is None
    assert plan.link is not None
    assert (plan.link.record_id, plan.link.anonymized, plan.link.dv_version) == ("c-1", True, 5)


def test_the_lower_ranked_row_follows_silently_and_the_higher_ranked_row_writes() -> None:
    contact_link, lead_link, shared = shared_pair()
    follower = plan_push(
        push_input(
            subscribed(firstname="Addie"),
            entity="lead",
            record_id="l-1",
            link=lead_link,
            spotler=shared,
            peers=[contact_link],
        ),
        LEAD,
        options(),
    )
    assert (follower.action, follower.reason, follower.contact) == (PushAction.NONE, ReasonCode.SYNCED, None)
    assert follower.detail == "shares its Spotler contact with contact c-1, which takes precedence"
    assert follower.link is not None
    assert (follower.link.external_id, follower.link.anonymized) == ("c-1", False)
    # A departed (anonymized) higher-ranked row no longer speaks for the person.
    speaking = plan_push(
        push_input(
            subscribed(firstname="Addie"),
            entity="lead",
            record_id="l-1",
            link=lead_link,
            spotler=shared,
            peers=[dataclasses.replace(contact_link, anonymized=True)],
        ),
        LEAD,
        options(),
    )
    assert speaking.action is PushAction.UPDATE
    assert speaking.contact is not None
    assert speaking.contact.properties == {"firstName": "Addie"}


def test_precedence_is_contact_then_lead_then_account_then_lowest_id() -> None:
    contact_link, _, shared = shared_pair()
    account = LinkState("account", "a-0", "c-1")
    lead = LinkState("lead", "l-9", "c-1")
    contact_b = dataclasses.replace(contact_link, record_id="c-2")
    cases = [
        ("lead", "l-9", [account], PushAction.UPDATE),
        ("account", "a-0", [lead], PushAction.NONE),
        ("contact", "c-2", [account, lead], PushAction.UPDATE),
        ("contact", "c-3", [contact_b], PushAction.NONE),
        ("contact", "c-1", [contact_b], PushAction.UPDATE),
    ]
    for entity, record_id, peers, action in cases:
        link = LinkState(entity, record_id, "c-1", base=dict(contact_link.base))  # type: ignore[arg-type]
        plan = plan_push(
            push_input(
                subscribed(firstname="Addie"),
                entity=entity,  # type: ignore[arg-type]
                record_id=record_id,
                link=link,
                spotler=shared,
                peers=peers,
            ),
            CONTACT,
            options(),
        )
        assert plan.action is action, (entity, record_id, peers)


def test_do_not_email_on_a_row_sharing_the_contact_keeps_it_while_another_live_row_uses_it() -> None:
    contact_link, lead_link, shared = shared_pair()

    def do_not_email(peer: LinkState) -> PushPlan:
        return plan_push(
            push_input(
                subscribed(donotemail=True),
                entity="lead",
                record_id="l-1",
                changed={"donotemail"},
                link=lead_link,
                spotler=shared,
                peers=[peer],
            ),
            LEAD,
            options(),
        )

    kept = do_not_email(contact_link)
    assert (kept.action, kept.reason, kept.suppress) == (PushAction.NONE, ReasonCode.SUPPRESSED, None)
    plan = do_not_email(dataclasses.replace(contact_link, in_scope=False))  # the contact row left earlier
    assert (plan.action, plan.reason) == (PushAction.ANONYMIZE, ReasonCode.ANONYMIZED)
    assert plan.external_id == "c-1"
    assert plan.suppress is not None
    assert (plan.suppress.cause, plan.suppress.email_hash, plan.suppress.entity) == (
        SuppressionCause.OPTED_OUT,
        hashed(ADA),
        "lead",
    )


def pulled(contact: SpotlerContact, link: LinkState, attrs: dict[str, object], *, modified: object = T0) -> object:
    row = DataverseRow("contact", "c-1", attrs, etag='W/"3"', modified_on=modified)  # type: ignore[arg-type]
    return plan_pull(contact, link, row, CONTACT, options(), LATER)


def test_pull_of_an_unrelated_spotler_change_does_not_undo_do_not_bulk_email_ticked_in_dynamics() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    edited = apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), SOON)
    plan = plan_pull(
        edited,
        link,
        DataverseRow("contact", "c-1", subscribed(donotbulkemail=True, new_newsletter=False), modified_on=SOON),
        CONTACT,
        options(),
        LATER,
    )
    assert plan.changes == {"firstname": "Augusta"}
    assert "donotbulkemail" not in plan.changes
    assert "new_newsletter" not in plan.changes
    assert plan.spotler_fix is None


def test_pull_where_both_sides_left_the_base_keeps_the_dynamics_withdrawal_and_corrects_spotler() -> None:
    # Neither side matches the base any more (as after the hash key changed): Spotler still says subscribed,
    # Dynamics withdrew. The opt-out wins: nothing is cleared in Dynamics, Spotler is told to unsubscribe.
    link, contact = synced(subscribed(), mapping=CONTACT)
    unknown = {k: ("0" * 32 if k.startswith("permission:") else v) for k, v in link.base.items()}
    link = dataclasses.replace(link, base=unknown)
    seen = dataclasses.replace(contact, last_changed=SOON)
    plan = plan_pull(
        seen,
        link,
        DataverseRow("contact", "c-1", subscribed(donotbulkemail=True, new_newsletter=False), modified_on=SOON),
        CONTACT,
        options(),
        LATER,
    )
    assert "donotbulkemail" not in plan.changes
    assert "new_newsletter" not in plan.changes
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.permissions == {1: False, NEWSLETTER: False}
    assert plan.spotler_fix.external_id == "c-1"
    assert set(plan.conflicts) == {"permission 1", f"permission {NEWSLETTER}"}
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED


def test_pull_brings_a_spotler_unsubscribe_to_dynamics() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    off = apply_write(contact, SpotlerContact("c-1", permissions={1: False, NEWSLETTER: False}), SOON)
    plan = plan_pull(off, link, DataverseRow("contact", "c-1", subscribed()), CONTACT, options(), LATER)
    assert plan.changes == {"donotbulkemail": True, "new_newsletter": False}
    assert plan.spotler_fix is None


def test_spotler_opt_out_after_an_email_change_leaves_the_tombstone_under_the_address_that_opted_out() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    opted_out = dataclasses.replace(contact, channels={"EMAIL": False}, last_changed=SOON)
    # Dynamics already holds the person's new address; Spotler (and the link) still the one that opted out.
    moved = subscribed(emailaddress1="ada.new@example.org")
    plan = plan_pull(opted_out, link, DataverseRow("contact", "c-1", moved), CONTACT, options(), LATER)
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed(ADA)
    assert plan.suppress.email_hash != hashed("ada.new@example.org")
    assert (plan.suppress.cause, plan.suppress.entity, plan.suppress.record_id) == (
        SuppressionCause.OPTED_OUT,
        "contact",
        "c-1",
    )
    assert plan.changes == {"donotbulkemail": True, "new_newsletter": False}


def test_spotler_opt_out_is_tombstoned_by_the_contact_s_address_when_the_row_and_link_know_none() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    opted_out = dataclasses.replace(contact, channels={"EMAIL": False}, last_changed=SOON)
    plan = plan_pull(
        opted_out,
        dataclasses.replace(link, email_hash=None),
        DataverseRow("contact", "c-1", subscribed(emailaddress1="not an address")),
        CONTACT,
        options(),
        LATER,
    )
    assert plan.suppress is not None
    assert (plan.suppress.email_hash, plan.suppress.cause) == (hashed(ADA), SuppressionCause.OPTED_OUT)


def test_a_subscribed_spotler_contact_leaves_no_tombstone() -> None:
    link, contact = synced(subscribed(), mapping=CONTACT)
    plan = plan_pull(
        apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), SOON),
        link,
        DataverseRow("contact", "c-1", subscribed()),
        CONTACT,
        options(),
        LATER,
    )
    assert plan.suppress is None
