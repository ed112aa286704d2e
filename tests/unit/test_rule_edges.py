"""The consent and identity rules at their edges, as pure plans (no I/O).

Do Not Email on a shared contact, leaving the sync by filter or with every bit already off, reactivation as a new
opt-in, the hold on re-subscription next to a subscription turned off, the purge body of a set property, the
pull's skips and its status, and the keyed hashes links store.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest

from sync_core.domain.convert import value_hash
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.plan import Departure, PushAction, plan_departure, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, SuppressionCause
from tests.unit.domain_builders import KEY, T0, entity_mapping, hashed, options, person, push_input, synced

ADA = "ada@example.com"
SOON = T0 + timedelta(hours=1)
LATER = T0 + timedelta(hours=2)
EMAIL = {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"}
JOB = {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"}
BIT1 = {"bit": 1, "source": "not_donotbulkemail", "direction": "both"}
BIT2 = {"bit": 2, "dataverse": "new_newsletter", "direction": "both"}
MAPPING = EntityMapping.model_validate(
    {
        "fields": [EMAIL, JOB],
        "permissions": [BIT1, BIT2],
        "exclude": [{"attribute": "new_test", "equals": True, "description": "a test record"}],
    }
)


def attrs(**kw: Any) -> dict[str, Any]:
    return {"emailaddress1": ADA, "jobtitle": "Analyst", "new_newsletter": True, "statecode": 0, **kw}


def link(external_id: str = "c-1", **kw: Any) -> LinkState:
    kw.setdefault("email_hash", hashed(ADA))
    return LinkState("contact", "c-1", external_id, **kw)


def peer(record_id: str = "l-1") -> LinkState:
    return LinkState("lead", record_id, "c-1", email_hash=hashed(ADA))


def contact(perms: dict[int, bool] | None = None, external_id: str = "c-1", **props: Any) -> SpotlerContact:
    return SpotlerContact(
        external_id, {"email": ADA, "jobTitle": "Analyst", **props}, perms if perms is not None else {1: True, 2: True}
    )


def plan(values: dict[str, Any], mapping: EntityMapping = MAPPING, **kw: Any) -> Any:
    opts = {k: kw.pop(k) for k in ("on_leaving_scope", "anonymize_on_deactivate", "purge_when_not_set") if k in kw}
    return plan_push(push_input(values, **kw), mapping, options(**opts))


# --- Do Not Email on a shared contact -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("own_link", "own_contact"),
    [(link(), None), (None, contact()), (link(), contact())],
    ids=["linked-contact-missing", "own-contact-without-link", "linked"],
)
def test_do_not_email_keeps_a_shared_contact_for_a_live_peer(own_link: LinkState | None, own_contact: Any) -> None:
    got = plan(attrs(donotemail=True), changed={"donotemail"}, link=own_link, spotler=own_contact, peers=[peer()])
    assert (got.action, got.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert got.detail == "Do Not Email is set; Spotler contact kept for lead l-1"
    assert got.suppress is None


def test_do_not_email_on_a_record_that_already_gave_up_the_shared_contact_leaves_its_tombstone() -> None:
    got = plan(
        attrs(donotemail=True), changed={"donotemail"}, link=link(anonymized=True, in_scope=False), peers=[peer()]
    )
    assert (got.action, got.reason, got.detail) == (
        PushAction.NONE,
        ReasonCode.SUPPRESSED,
        "Do Not Email is set; not sent to Spotler",
    )
    assert got.suppress is not None
    assert (got.suppress.email_hash, got.suppress.cause) == (hashed(ADA), SuppressionCause.OPTED_OUT)


# --- leaving the sync -----------------------------------------------------------------------------------------------


def test_unsubscribing_turns_off_only_bits_the_contact_has_on() -> None:
    got = plan_departure(contact({1: True}), [], MAPPING, options())  # bit 2 is not on the contact at all
    assert got == Departure(PushAction.UNSUBSCRIBE, "unsubscribed", SpotlerContact("c-1", permissions={1: False}))


def test_a_linked_record_matching_an_exclude_rule_unsubscribes_its_contact() -> None:
    got = plan(attrs(new_test=True), changed={"new_test"}, link=link(), spotler=contact())
    assert (got.action, got.reason, got.detail) == (
        PushAction.UNSUBSCRIBE,
        ReasonCode.EXCLUDED_BY_FILTER,
        "a test record; unsubscribed",
    )
    assert got.contact == SpotlerContact("c-1", permissions={1: False, 2: False})
    assert (got.link.reason, got.link.unsubscribed, got.link.in_scope) == (ReasonCode.EXCLUDED_BY_FILTER, True, False)


def test_leaving_the_sync_with_every_bit_already_off_still_holds_the_record_unsubscribed() -> None:
    got = plan(attrs(emailaddress1=None), link=link(), spotler=contact({1: False, 2: False}))
    assert (got.action, got.reason, got.detail) == (
        PushAction.NONE,
        ReasonCode.NO_VALID_EMAIL,
        "no valid e-mail address; unsubscribed",
    )
    assert got.contact is None
    assert (got.link.reason, got.link.unsubscribed, got.link.in_scope) == (ReasonCode.NO_VALID_EMAIL, True, False)


def test_leaving_the_sync_with_anonymize_anonymizes_the_contact_the_link_points_at() -> None:
    got = plan(
        attrs(emailaddress1=None), link=link("sp-9"), spotler=contact(external_id="sp-9"), on_leaving_scope="anonymize"
    )
    assert (got.action, got.external_id) == (PushAction.ANONYMIZE, "sp-9")
    assert got.suppress is not None
    assert got.suppress.email_hash == hashed(ADA)


def test_an_anonymized_link_is_out_of_scope() -> None:
    got = plan(attrs(statecode=1), kind=ChangeKind.SET_STATE, changed={"statecode"}, link=link(), spotler=contact())
    assert got.action is PushAction.ANONYMIZE
    assert got.link.anonymized is True
    assert got.link.in_scope is False


# --- reactivation and the hold --------------------------------------------------------------------------------------


def reactivated(**kw: Any) -> Any:
    return plan(attrs(), kind=ChangeKind.SET_STATE, changed={"statecode", "statuscode"}, **kw)


def test_reactivating_a_record_whose_linked_contact_was_anonymized_is_a_new_opt_in() -> None:
    blank = SpotlerContact("c-1", {}, {1: False, 2: False}, channels={"EMAIL": False})
    got = reactivated(link=link(), spotler=blank)
    assert got.action is PushAction.UPDATE
    assert got.contact.properties["email"] == ADA
    assert got.contact.permissions == {1: True, 2: True}


def test_reactivating_a_record_unsubscribed_when_it_was_deactivated_ends_the_hold() -> None:
    off = value_hash(KEY, False)
    held = link(unsubscribed=True, in_scope=False, base={"permission:1": off, "permission:2": off})
    got = reactivated(link=held, spotler=contact({1: False, 2: False}))
    assert got.contact.permissions == {1: True, 2: True}
    assert not got.link.unsubscribed


def test_the_hold_keeps_bits_off_but_a_subscription_turned_off_in_dynamics_still_reaches_spotler() -> None:
    on, off = value_hash(KEY, True), value_hash(KEY, False)
    held = link(unsubscribed=True, in_scope=False, base={"permission:1": off, "permission:2": on})
    got = plan(attrs(new_newsletter=False), changed={"new_newsletter"}, link=held, spotler=contact({1: False, 2: True}))
    assert got.contact.permissions == {2: False}
    assert got.detail == "updated in Spotler; subscriptions stay off until a new opt-in in Dynamics"
    assert got.link.unsubscribed


# --- the purge body of a set property -------------------------------------------------------------------------------


def test_the_purge_body_of_a_set_property_overlays_the_bits_dynamics_sets_on_spotler_s_own() -> None:
    flags = [
        {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4, "direction": "to_spotler"},
        {"dataverse": "new_press", "spotler": "flags", "type": "boolean", "bit": 5, "direction": "to_spotler"},
        {"dataverse": "new_region", "spotler": "regions", "type": "boolean", "bit": 1, "direction": "to_dynamics"},
        {"dataverse": "new_member", "spotler": "labels", "type": "boolean", "bit": 3, "direction": "to_spotler"},
        JOB,
        EMAIL,
    ]
    mapping = EntityMapping.model_validate({"fields": flags, "permissions": [BIT1]})
    current = SpotlerContact(
        "c-1", {"email": ADA, "jobTitle": "Analyst", "flags": {4: False, 9: True}, "regions": {1: True}}, {1: True}
    )
    got = plan(
        attrs(new_vip=True, new_press=False, new_member=True, jobtitle="Planner"),
        mapping,
        changed={"new_vip", "jobtitle"},
        link=link(),
        spotler=current,
        purge_when_not_set=True,
    )
    assert got.purge
    assert got.contact.properties == {
        "email": ADA,
        "jobTitle": "Planner",
        "flags": {4: True, 9: True},  # bit 5 is off on both sides: nothing to send
        "regions": {1: True},
        "labels": {3: True},  # a set property Spotler did not hold yet
    }


# --- the pull -------------------------------------------------------------------------------------------------------


def test_the_pull_of_a_contact_without_an_address_keeps_the_link_and_its_reason() -> None:
    blank = SpotlerContact("c-1", {}, {1: False}, channels={"EMAIL": False}, last_changed=SOON)
    row = DataverseRow("contact", "c-1", attrs(), modified_on=T0)
    for reason, shown in ((ReasonCode.CREATED, ReasonCode.CREATED), (None, ReasonCode.SYNCED)):
        known = link(reason=reason)
        got = plan_pull(blank, known, row, MAPPING, options(), LATER)
        assert (got.skipped, got.reason, got.link, got.changes) == (True, shown, known, {})


def pulled(contact_changes: dict[str, Any], *, opted_out: bool = False, reason: ReasonCode | None = None) -> Any:
    mapping = entity_mapping("contact")
    values = person()
    known, current = synced(values, mapping=mapping)
    known = dataclasses.replace(known, reason=reason or known.reason)
    changed = dataclasses.replace(
        current,
        properties={**current.properties, **contact_changes},
        channels={"EMAIL": not opted_out},
        last_changed=SOON,
    )
    return plan_pull(changed, known, DataverseRow("contact", "c-1", values, modified_on=T0), mapping, options(), LATER)


def test_the_pull_of_an_opt_out_names_what_it_also_brought_to_dynamics() -> None:
    got = pulled({"firstName": "Augusta", "lastName": "King"}, opted_out=True)
    assert got.reason is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert got.detail == "opted out in Spotler; Dynamics updated: donotbulkemail, firstname, lastname"


def test_the_pull_says_whether_the_record_s_status_changed() -> None:
    assert pulled({"firstName": "Augusta"}, reason=ReasonCode.CREATED).status_changed is True
    assert pulled({"firstName": "Augusta"}, reason=ReasonCode.UPDATED).status_changed is False


# --- the keyed hashes links store -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, 42, -7, 1.5, "", "Ada", 'é "quoted" \\ \u2028', [[1, True], [2, False]], ["é"], {"b": 1}],
)
def test_a_stored_hash_is_the_keyed_hash_of_the_value_s_compact_json(value: Any) -> None:
    # Links written by any version compare equal: the fast paths for scalars hash the same bytes as the encoder.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert value_hash(KEY, value) == hmac.new(KEY, text.encode(), "sha256").hexdigest()[:32]
