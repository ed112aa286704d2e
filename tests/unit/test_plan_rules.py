"""The push decision, rule by rule: what each plan remembers, and rules that must not stop the ones after them.

Each test builds its links, contacts and mapping by hand; field and peer order matters where a rule must not
cut the loop short.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sync_core.domain.convert import value_hash
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, PushPlan, explicit_opt_in, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import KEY, T0, hashed, options, push_input

SOON = T0 + timedelta(hours=1)
LATER = T0 + timedelta(hours=2)
ADA = "ada@example.com"
EMAIL = {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"}
FIRST = {"dataverse": "firstname", "spotler": "firstName", "direction": "both"}
LAST = {"dataverse": "lastname", "spotler": "lastName", "direction": "both"}
JOB = {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"}
BIT1 = {"bit": 1, "source": "not_donotbulkemail", "direction": "both"}
BIT2 = {"bit": 2, "dataverse": "new_newsletter", "direction": "both"}


def mapping(*fields: dict[str, Any], permissions: tuple[dict[str, Any], ...] = (BIT1,)) -> EntityMapping:
    return EntityMapping.model_validate({"fields": [EMAIL, *fields], "permissions": list(permissions)})


def h(value: Any) -> str:
    return value_hash(KEY, value)


def attrs(**kw: Any) -> dict[str, Any]:
    return {"emailaddress1": ADA, "donotemail": False, "donotbulkemail": False, "statecode": 0, **kw}


def link(base: dict[str, str] | None = None, **kw: Any) -> LinkState:
    kw.setdefault("email_hash", hashed(ADA))
    return LinkState("contact", "c-1", "c-1", base=base or {}, **kw)


def contact(props: dict[str, Any] | None = None, perms: dict[int, bool] | None = None, **kw: Any) -> SpotlerContact:
    kw.setdefault("channels", {"EMAIL": True})
    return SpotlerContact("c-1", {"email": ADA, **(props or {})}, perms if perms is not None else {1: True}, **kw)


def push(m: EntityMapping, **kw: Any) -> PushPlan:
    names = ("conflict_winner", "purge_when_not_set", "anonymize_on_deactivate", "on_leaving_scope")
    opts = {k: kw.pop(k) for k in names if k in kw}
    values = kw.pop("values", attrs())
    return plan_push(push_input(values, **kw), m, options(**opts))


# --- what a plan remembers -------------------------------------------------------------------------------------------


def test_a_skip_records_its_reason_and_clears_the_retry_state() -> None:
    failing = link(failures=3, next_retry=SOON, reason=ReasonCode.TRANSIENT_ERROR, detail="boom", dv_version=4)
    plan = push(
        mapping(),
        values=attrs(emailaddress1="nope"),
        link=failing,
        spotler=contact(),
        version=None,
        on_leaving_scope="keep",
    )
    assert (plan.action, plan.reason, plan.external_id) == (PushAction.NONE, ReasonCode.NO_VALID_EMAIL, "c-1")
    assert plan.link is not None
    assert (plan.link.reason, plan.link.detail) == (
        ReasonCode.NO_VALID_EMAIL,
        "no valid e-mail address; Spotler contact kept (ON_LEAVING_SCOPE=keep)",
    )
    assert (plan.link.failures, plan.link.next_retry, plan.link.last_attempt) == (0, None, T0 + timedelta(hours=1))
    assert plan.link.dv_version == 4
    assert not plan.link.in_scope


def test_leaving_scope_unsubscribes_by_default_and_remembers_it_on_the_link() -> None:
    failing = link(failures=3, next_retry=SOON, reason=ReasonCode.TRANSIENT_ERROR, detail="boom", dv_version=4)
    plan = push(mapping(), values=attrs(emailaddress1="nope"), link=failing, spotler=contact(), version=None)
    assert (plan.action, plan.reason, plan.external_id) == (PushAction.UNSUBSCRIBE, ReasonCode.NO_VALID_EMAIL, "c-1")
    assert plan.contact == SpotlerContact("c-1", permissions={1: False})
    assert plan.link is not None
    assert (plan.link.detail, plan.link.unsubscribed, plan.link.in_scope) == (
        "no valid e-mail address; unsubscribed",
        True,
        False,
    )
    assert (plan.link.failures, plan.link.next_retry) == (0, None)


def test_an_update_records_the_event_order_without_moving_back_and_clears_the_retry_state() -> None:
    m = mapping(JOB)
    old = link({"jobTitle": h("A")}, dv_version=5, dv_modified_on=SOON, failures=2, next_retry=LATER)
    plan = push(m, values=attrs(jobtitle="B"), link=old, spotler=contact({"jobTitle": "A"}), version=None)
    assert plan.link is not None
    assert (plan.link.dv_version, plan.link.dv_modified_on, plan.link.last_attempt) == (
        5,
        SOON,
        T0 + timedelta(hours=1),
    )
    assert (plan.link.failures, plan.link.next_retry, plan.link.reason) == (0, None, ReasonCode.UPDATED)
    newer = push(
        m, values=attrs(jobtitle="B"), link=old, spotler=contact({"jobTitle": "A"}), version=6, modified_on=LATER
    )
    assert newer.link is not None
    assert (newer.link.dv_version, newer.link.dv_modified_on) == (6, LATER)


def test_stale_and_never_synced_deletes_leave_no_status() -> None:
    stale = push(mapping(), link=link(dv_version=9), spotler=contact(), version=3)
    assert (stale.action, stale.reason, stale.detail, stale.record_status) == (
        PushAction.NONE,
        ReasonCode.SYNCED,
        "stale event ignored",
        False,
    )
    gone = push(mapping(), values=None, kind=ChangeKind.DELETE)
    assert (gone.action, gone.reason, gone.detail, gone.record_status, gone.link) == (
        PushAction.NONE,
        ReasonCode.SYNCED,
        "deleted; never synced",
        False,
        None,
    )


# --- anonymizing -----------------------------------------------------------------------------------------------------


def test_anonymizing_without_a_link_remembers_the_row_and_its_address() -> None:
    plan = push(mapping(), values=attrs(donotemail=True), spotler=contact(), changed={"donotemail"})
    assert (plan.action, plan.reason, plan.detail, plan.external_id) == (
        PushAction.ANONYMIZE,
        ReasonCode.ANONYMIZED,
        "Do Not Email is set",
        "c-1",
    )
    assert plan.link is not None
    assert (plan.link.entity, plan.link.record_id, plan.link.external_id) == ("contact", "c-1", "c-1")
    assert (plan.link.email_hash, plan.link.anonymized, plan.link.detail) == (hashed(ADA), True, "Do Not Email is set")
    assert plan.suppress == Suppression(
        hashed(ADA), SuppressionCause.OPTED_OUT, "contact", "c-1", T0 + timedelta(hours=1)
    )


def test_anonymizing_keeps_the_known_address_when_the_row_has_none_and_prefers_the_rows_own() -> None:
    known = link(failures=2, next_retry=SOON, email_hash=hashed("old@example.org"))
    plan = push(mapping(), values=attrs(emailaddress1=None, donotemail=True), link=known, spotler=contact())
    assert plan.link is not None
    assert (plan.link.email_hash, plan.link.failures, plan.link.next_retry) == (hashed("old@example.org"), 0, None)
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("old@example.org")
    moved = push(
        mapping(), values=attrs(emailaddress1="new@example.org", donotemail=True), link=known, spotler=contact()
    )
    assert moved.link is not None
    assert moved.link.email_hash == hashed("new@example.org")


def test_a_contact_already_anonymized_or_gone_is_not_anonymized_again() -> None:
    done = push(mapping(), values=attrs(donotemail=True), link=link(anonymized=True), spotler=contact())
    assert (done.action, done.reason) == (PushAction.NONE, ReasonCode.ANONYMIZED)
    gone = push(mapping(), values=attrs(donotemail=True), link=link(), spotler=None)
    assert (gone.action, gone.reason) == (PushAction.NONE, ReasonCode.ANONYMIZED)
    assert gone.link is not None
    assert gone.link.anonymized
    assert gone.suppress is not None


def test_delete_without_any_known_address_leaves_no_tombstone() -> None:
    plan = push(mapping(), values=None, kind=ChangeKind.DELETE, spotler=SpotlerContact("c-1", {}, {1: True}))
    assert (plan.action, plan.suppress) == (PushAction.ANONYMIZE, None)


def test_delete_tombstones_the_links_address_before_the_pre_image_and_spotler() -> None:
    elsewhere = contact({"email": "spotler@example.org"})
    by_link = push(
        mapping(),
        values=attrs(emailaddress1="image@example.org"),
        kind=ChangeKind.DELETE,
        link=link(email_hash=hashed("link@example.org")),
        spotler=elsewhere,
    )
    assert by_link.suppress is not None
    assert by_link.suppress.email_hash == hashed("link@example.org")
    by_image = push(
        mapping(), values=attrs(emailaddress1="image@example.org"), kind=ChangeKind.DELETE, spotler=elsewhere
    )
    assert by_image.suppress is not None
    assert by_image.suppress.email_hash == hashed("image@example.org")


def test_delete_of_an_unlinked_row_whose_contact_another_row_uses_keeps_it() -> None:
    peer = LinkState("lead", "l-1", "c-1")
    plan = push(mapping(), values=None, kind=ChangeKind.DELETE, spotler=contact(), peers=[peer])
    assert (plan.action, plan.reason, plan.external_id, plan.link, plan.suppress) == (
        PushAction.NONE,
        ReasonCode.SYNCED,
        "c-1",
        None,
        None,
    )


# --- rows sharing a contact ------------------------------------------------------------------------------------------


def test_a_departed_higher_ranked_peer_does_not_hide_a_live_one_after_it() -> None:
    peers = [LinkState("contact", "c-0", "c-1", anonymized=True), LinkState("contact", "c-5", "c-1")]
    plan = push(
        mapping(FIRST),
        entity="lead",
        record_id="l-1",
        values=attrs(firstname="B"),
        link=link(),
        spotler=contact(),
        peers=peers,
    )
    assert plan.action is PushAction.NONE
    assert plan.detail == "shares its Spotler contact with contact c-5, which takes precedence"


# --- what an update sends --------------------------------------------------------------------------------------------


def test_rules_that_leave_one_field_out_do_not_stop_the_fields_after_it() -> None:
    pulled_only = {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"}
    create_only = {"dataverse": "new_source", "spotler": "source", "create_only": True}
    bad = {"dataverse": "new_rank", "spotler": "rank", "type": "int"}
    kept_blank = {"dataverse": "new_memo", "spotler": "memo", "blank": "keep"}
    m = mapping(pulled_only, create_only, bad, kept_blank, JOB)
    plan = push(
        m,
        values=attrs(new_score=1, new_source="web", new_rank="lots", new_memo=None, jobtitle="B"),
        link=link({"jobTitle": h("A")}),
        spotler=contact({"jobTitle": "A", "memo": "m"}),
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "B"}


def test_spotler_only_news_and_a_lost_conflict_do_not_stop_the_fields_after_them() -> None:
    m = mapping(FIRST, LAST, JOB)
    base = {"firstName": h("A"), "lastName": h("L"), "jobTitle": h("J")}
    spotler = contact({"firstName": "B", "lastName": "M", "jobTitle": "J"}, last_changed=LATER)
    plan = push(
        m,
        values=attrs(firstname="A", lastname="N", jobtitle="K"),
        link=link(base),
        spotler=spotler,
        modified_on=SOON,
        conflict_winner="most_recent",
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "K"}
    assert plan.conflicts == ("lastName",)


def test_most_recent_winner_needs_spotler_strictly_newer() -> None:
    m = mapping(FIRST)
    spotler = contact({"firstName": "B"}, last_changed=SOON)
    plan = push(
        m,
        values=attrs(firstname="C"),
        link=link({"firstName": h("A")}),
        spotler=spotler,
        modified_on=SOON,
        conflict_winner="most_recent",
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"firstName": "C"}


def test_a_one_way_field_changed_in_spotler_is_written_back_from_dynamics() -> None:
    plan = push(
        mapping(JOB), values=attrs(jobtitle="A"), link=link({"jobTitle": h("A")}), spotler=contact({"jobTitle": "Z"})
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "A"}


def test_two_booleans_on_one_set_property_are_sent_together() -> None:
    vip = {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4}
    press = {"dataverse": "new_press", "spotler": "flags", "type": "boolean", "bit": 5}
    plan = push(mapping(vip, press), values=attrs(new_vip=True, new_press=True), kind=ChangeKind.CREATE)
    assert plan.contact is not None
    assert plan.contact.properties["flags"] == {4: True, 5: True}


def test_permissions_already_as_wanted_are_not_sent_and_do_not_stop_the_ones_after() -> None:
    m = mapping(JOB, permissions=(BIT2, BIT1))
    base = {"permission:2": h(True), "permission:1": h(False), "jobTitle": h("A")}
    # Spotler dropped bit 2 (an unsubscribe the pull brings back); Dynamics subscribes to bit 1.
    spotler = contact({"jobTitle": "A"}, {1: False})
    plan = push(m, values=attrs(new_newsletter=True, jobtitle="A"), link=link(base), spotler=spotler)
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True}
    silent = push(
        m, values=attrs(new_newsletter=False, donotbulkemail=True, jobtitle="A"), link=link(base), spotler=spotler
    )
    assert (silent.action, silent.contact) == (PushAction.NONE, None)


# --- explicit opt-in, asked directly ------------------------------------------------------------------------------


@pytest.mark.parametrize("cause", list(SuppressionCause))
def test_a_delete_or_a_row_with_do_not_email_is_never_an_opt_in(cause: SuppressionCause) -> None:
    m = mapping(permissions=(BIT1, BIT2))
    everything = frozenset({"donotemail", "donotbulkemail", "new_newsletter", "statecode"})
    deleted = push_input(attrs(new_newsletter=True), kind=ChangeKind.DELETE, changed=everything)
    assert explicit_opt_in(deleted, m, attrs(new_newsletter=True), cause) is False
    refused = push_input(attrs(donotemail=True, new_newsletter=True), changed=everything)
    assert explicit_opt_in(refused, m, attrs(donotemail=True, new_newsletter=True), cause) is False
    cleared = push_input(attrs(new_newsletter=True), changed=everything)
    assert explicit_opt_in(cleared, m, attrs(new_newsletter=True), cause) is True


def test_plan_of_a_set_field_merges_bits_only_for_set_fields() -> None:
    text = {"dataverse": "new_code", "spotler": "code"}
    plan = push(mapping(text), values=attrs(new_code="X"), kind=ChangeKind.CREATE)
    assert plan.contact is not None
    assert plan.contact.properties["code"] == "X"


# --- exact outcomes of the branches ----------------------------------------------------------------------------------

SCORE = {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"}
NOW = T0 + timedelta(hours=1)


def test_merge_relink_remembers_the_departed_row_and_needs_no_link() -> None:
    master = attrs(emailaddress1="ADA@example.com")
    plan = push(
        mapping(),
        values=attrs(statecode=1),
        link=link(),
        spotler=contact(),
        merged_into="c-9",
        master_attributes=master,
    )
    assert (plan.action, plan.reason, plan.relink_to) == (PushAction.RELINK, ReasonCode.SYNCED, "c-9")
    assert plan.detail == "merged into contact c-9; Spotler contact relinked"
    assert plan.link is not None
    assert (plan.link.anonymized, plan.link.reason, plan.link.detail) == (True, ReasonCode.SYNCED, plan.detail)
    unlinked = push(
        mapping(), values=attrs(statecode=1), spotler=contact(), merged_into="c-9", master_attributes=master
    )
    assert (unlinked.action, unlinked.link, unlinked.external_id) == (PushAction.RELINK, None, "c-1")


def test_do_not_email_on_an_anonymized_row_leaves_an_opt_out_tombstone_only() -> None:
    plan = push(mapping(), values=attrs(donotemail=True), link=link(anonymized=True), spotler=None)
    assert (plan.action, plan.reason, plan.detail) == (
        PushAction.NONE,
        ReasonCode.SUPPRESSED,
        "Do Not Email is set; not sent to Spotler",
    )
    assert plan.suppress == Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "contact", "c-1", NOW)
    nothing = push(mapping(), values=attrs(donotemail=True, emailaddress1="nope"), kind=ChangeKind.CREATE)
    assert (nothing.reason, nothing.suppress) == (ReasonCode.SUPPRESSED, None)


def test_deactivation_anonymizes_by_link_or_by_contact_alone() -> None:
    by_link = push(mapping(), values=attrs(statecode=1), link=link(), spotler=None)
    assert (by_link.action, by_link.reason, by_link.detail) == (
        PushAction.NONE,
        ReasonCode.ANONYMIZED,
        "record deactivated",
    )
    assert by_link.link is not None
    assert by_link.link.anonymized
    by_contact = push(mapping(), values=attrs(statecode=1), spotler=contact())
    assert (by_contact.action, by_contact.external_id) == (PushAction.ANONYMIZE, "c-1")
    assert by_contact.suppress is not None
    assert by_contact.suppress.email_hash == hashed(ADA)
    never = push(mapping(), values=attrs(statecode=1), kind=ChangeKind.CREATE)
    assert (never.action, never.reason, never.detail) == (PushAction.NONE, ReasonCode.INACTIVE, "record is inactive")


def test_qualified_lead_detail() -> None:
    plan = push(mapping(), entity="lead", record_id="l-1", values=attrs(statecode=1), link=link(), spotler=contact())
    assert (plan.reason, plan.detail) == (ReasonCode.INACTIVE, "qualified lead; the person lives on as a contact")


def test_no_tombstone_lifted_by_an_ordinary_update_and_sync_detail() -> None:
    m = mapping(JOB)
    plan = push(
        m,
        values=attrs(jobtitle="A"),
        link=link({"jobTitle": h("A"), "permission:1": h(True)}),
        spotler=contact({"jobTitle": "A"}),
    )
    assert (plan.action, plan.reason, plan.detail, plan.lift_suppression) == (
        PushAction.NONE,
        ReasonCode.SYNCED,
        "already in sync",
        None,
    )
    conflict = push(
        mapping(FIRST),
        values=attrs(firstname="C"),
        link=link({"firstName": h("A")}),
        spotler=contact({"firstName": "B"}),
    )
    assert conflict.detail == "both sides changed firstName"


def test_reactivating_an_anonymized_row_without_a_tombstone_recreates_it_with_a_fresh_base() -> None:
    m = mapping(JOB, SCORE)
    stale = link({"score": h(5), "jobTitle": h("old")}, anonymized=True)
    blank = SpotlerContact("c-1", {}, {1: False}, channels={})
    plan = push(
        m,
        values=attrs(jobtitle="A"),
        kind=ChangeKind.SET_STATE,
        changed={"statecode"},
        link=stale,
        spotler=blank,
    )
    assert (plan.action, plan.reason, plan.lift_suppression) == (PushAction.UPDATE, ReasonCode.UPDATED, None)
    assert plan.link is not None
    assert "score" not in plan.link.base
    assert plan.link.base["jobTitle"] == h("A")
    assert not plan.link.anonymized


def test_reactivation_writes_only_what_the_kept_contact_lacks() -> None:
    kept = contact({"jobTitle": "A"})
    plan = push(
        mapping(JOB, FIRST),
        values=attrs(jobtitle="A", firstname="Ada"),
        kind=ChangeKind.SET_STATE,
        changed={"statecode"},
        link=link(anonymized=True),
        spotler=kept,
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"firstName": "Ada"}
    assert plan.contact.permissions == {}


def test_a_contact_gone_from_spotler_is_created_again_keeping_what_was_agreed_for_pulled_fields() -> None:
    m = mapping(JOB, SCORE)
    plan = push(m, values=attrs(jobtitle="A"), link=link({"score": h(5), "jobTitle": h("A")}), spotler=None)
    assert (plan.action, plan.reason) == (PushAction.CREATE, ReasonCode.CREATED)
    assert plan.link is not None
    assert plan.link.base["score"] == h(5)


def test_a_follower_remembers_its_own_address() -> None:
    peer = LinkState("contact", "c-0", "c-1")
    plan = push(
        mapping(),
        entity="lead",
        record_id="l-1",
        values=attrs(),
        link=link(email_hash=None),
        spotler=contact(),
        peers=[peer],
    )
    assert plan.link is not None
    assert (plan.link.email_hash, plan.link.anonymized) == (hashed(ADA), False)


def test_a_push_resends_the_unsubscribed_state_of_dynamics_over_a_newer_spotler_subscription() -> None:
    # Only Spotler's opt-outs are left for the pull; an unsubscribed state in Dynamics is always re-sent
    # (the side that sends no mail wins until Dynamics records the subscription).
    m = mapping(JOB, permissions=(BIT1, BIT2))
    agreed = {"jobTitle": h("A"), "permission:1": h(True), "permission:2": h(False)}
    resubscribed = contact({"jobTitle": "A"}, {1: True, 2: True})
    plan = push(m, values=attrs(jobtitle="B", new_newsletter=False), link=link(agreed), spotler=resubscribed)
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "B"}
    assert plan.contact.permissions == {2: False}


def test_a_permission_spotler_owns_does_not_stop_the_ones_after_it() -> None:
    pulled_only = {"bit": 3, "dataverse": "new_offers", "direction": "⬅"}
    m = mapping(permissions=(pulled_only, BIT1))
    plan = push(
        m, values=attrs(donotbulkemail=True, new_offers=True), link=link({"permission:1": h(True)}), spotler=contact()
    )
    assert plan.contact is not None
    assert plan.contact.permissions == {1: False}


def test_an_opted_in_follower_is_no_longer_anonymized() -> None:
    peer = LinkState("contact", "c-0", "c-1")
    plan = push(
        mapping(),
        entity="lead",
        record_id="l-1",
        values=attrs(),
        changed={"donotemail"},
        link=link(anonymized=True),
        spotler=contact(),
        peers=[peer],
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SYNCED)
    assert plan.link is not None
    assert plan.link.anonymized is False


def test_conflict_detail_names_every_conflicting_field_but_no_conversion_note() -> None:
    bad = {"dataverse": "new_rank", "spotler": "rank", "type": "int"}
    m = mapping(FIRST, LAST, bad)
    plan = push(
        m,
        values=attrs(firstname="C", lastname="N", new_rank="lots"),
        link=link({"firstName": h("A"), "lastName": h("L")}, detail="before"),
        spotler=contact({"firstName": "B", "lastName": "M"}),
    )
    assert plan.detail == "both sides changed firstName, lastName"
    assert plan.link is not None
    assert plan.link.detail == plan.detail
    assert plan.conflicts == ("firstName", "lastName", "new_rank: value cannot be converted; not sent")
