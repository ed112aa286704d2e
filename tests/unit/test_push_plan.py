"""The push decision: one test per reason code and one per product rule.

TRANSIENT_ERROR and PERMANENT_ERROR are not decided here: plan_push only plans, and those codes come from the
push service when carrying a plan out fails (retry with backoff, or a dead letter with the remote message).
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import (
    T0,
    apply_write,
    entity_mapping,
    hashed,
    options,
    person,
    push_input,
    synced,
)

CONTACT = entity_mapping("contact")
LEAD = entity_mapping("lead")
LATER = T0 + timedelta(hours=1)


def mapping_with(**changes: object) -> EntityMapping:
    data = CONTACT.model_dump()
    data.update(changes)
    return EntityMapping.model_validate(data)


def tombstone(email: str = "ada@example.com", cause: SuppressionCause = SuppressionCause.ANONYMIZED) -> Suppression:
    return Suppression(hashed(email), cause, "contact", "c-old", T0)


# --- one test per reason code ---------------------------------------------------------------------------------------


def test_every_reason_code_has_a_test() -> None:
    module = sys.modules[__name__]
    planned = {code for code in ReasonCode if not code.is_error and not code.is_held}
    missing = [code.value for code in planned if not hasattr(module, f"test_reason_{code.value}")]
    assert not missing


def test_reason_synced() -> None:
    link, contact = synced(person())
    plan = plan_push(push_input(person(), link=link, spotler=contact, version=2), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SYNCED
    assert plan.contact is None
    assert plan.link is not None
    assert plan.link.dv_version == 2


def test_reason_created() -> None:
    plan = plan_push(push_input(person(), kind=ChangeKind.CREATE, version=1), CONTACT, options())
    assert plan.action is PushAction.CREATE
    assert plan.reason is ReasonCode.CREATED
    assert plan.contact is not None
    assert plan.contact.external_id == "c-1"
    assert plan.contact.properties["email"] == "ada@example.com"
    assert plan.contact.properties["firstName"] == "Ada"
    assert plan.contact.properties["birthday"] == "1815-12-10"
    assert plan.contact.permissions == {1: True}
    assert plan.link is not None
    assert plan.link.external_id == "c-1"
    assert plan.link.email_hash == hashed("ada@example.com")


def test_reason_updated() -> None:
    link, contact = synced(person())
    plan = plan_push(push_input(person(jobtitle="Engineer"), link=link, spotler=contact), CONTACT, options())
    assert plan.action is PushAction.UPDATE
    assert plan.reason is ReasonCode.UPDATED
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "Engineer"}


def test_reason_anonymized() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(donotemail=True), link=link, spotler=contact, changed={"donotemail"}), CONTACT, options()
    )
    assert plan.action is PushAction.ANONYMIZE
    assert plan.reason is ReasonCode.ANONYMIZED
    assert plan.external_id == "c-1"
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT
    assert plan.suppress.email_hash == hashed("ada@example.com")
    assert plan.link is not None
    assert plan.link.anonymized


def test_reason_inactive() -> None:
    plan = plan_push(push_input(person(statecode=1), kind=ChangeKind.CREATE), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.INACTIVE
    assert plan.contact is None
    assert (plan.detail, plan.link, plan.suppress) == ("record is inactive", None, None)


def test_reason_no_valid_email() -> None:
    for email in ("not-an-address", "", None):
        plan = plan_push(push_input(person(emailaddress1=email), kind=ChangeKind.CREATE), CONTACT, options())
        assert plan.action is PushAction.NONE
        assert plan.reason is ReasonCode.NO_VALID_EMAIL
        assert (plan.detail, plan.link, plan.suppress, plan.contact) == ("no valid e-mail address", None, None, None)


def test_reason_opted_out_in_spotler() -> None:
    link, contact = synced(person())
    opted_out = dataclasses.replace(contact, channels={"EMAIL": False})
    plan = plan_push(push_input(person(jobtitle="Engineer"), link=link, spotler=opted_out), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert plan.contact is None


def test_reason_excluded_by_filter() -> None:
    mapping = mapping_with(exclude=[{"attribute": "jobtitle", "equals": "Competitor", "description": "competitors"}])
    plan = plan_push(push_input(person(jobtitle="competitor"), kind=ChangeKind.CREATE), mapping, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.EXCLUDED_BY_FILTER
    assert plan.detail == "competitors"


def test_reason_suppressed() -> None:
    plan = plan_push(push_input(person(), changed={"firstname"}, suppression=tombstone()), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SUPPRESSED
    assert plan.lift_suppression is None


def test_reason_conflict_resolved() -> None:
    link, contact = synced(person())
    spotler = apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), LATER)
    plan = plan_push(push_input(person(firstname="Ada A."), link=link, spotler=spotler), CONTACT, options())
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.conflicts == ("firstName",)
    assert "firstName" in plan.detail


# --- one test per rule ----------------------------------------------------------------------------------------------


def test_do_not_bulk_email_turns_every_mapped_permission_off() -> None:
    mapping = mapping_with(
        permissions=[
            {"bit": 1, "source": "not_donotbulkemail"},
            {"bit": 2, "dataverse": "new_events"},
            {"bit": 3, "dataverse": "new_offers", "direction": "➡"},
        ]
    )
    attrs = person(new_events=True, new_offers=True)
    link, contact = synced(attrs, mapping=mapping)
    assert contact.permissions == {1: True, 2: True, 3: True}
    plan = plan_push(
        push_input(
            person(new_events=True, new_offers=True, donotbulkemail=True),
            link=link,
            spotler=contact,
            changed={"donotbulkemail"},
        ),
        mapping,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact is not None
    assert plan.contact.permissions == {1: False, 2: False, 3: False}
    assert plan.contact.properties == {}


def test_do_not_bulk_email_on_create_creates_unsubscribed() -> None:
    plan = plan_push(push_input(person(donotbulkemail=True), kind=ChangeKind.CREATE), CONTACT, options())
    assert plan.action is PushAction.CREATE
    assert plan.contact is not None
    assert plan.contact.permissions == {1: False}


def test_email_change_updates_the_same_spotler_contact() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(
            person(emailaddress1="ada@newmail.example.org"), link=link, spotler=contact, changed={"emailaddress1"}
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.external_id == "c-1"
    assert plan.contact is not None
    assert plan.contact.external_id == "c-1"
    assert plan.contact.properties == {"email": "ada@newmail.example.org"}
    assert plan.link is not None
    assert plan.link.external_id == "c-1"
    assert plan.link.email_hash == hashed("ada@newmail.example.org")


def test_email_change_without_link_still_uses_the_row_id() -> None:
    _, contact = synced(person())
    plan = plan_push(push_input(person(emailaddress1="ada@newmail.example.org"), spotler=contact), CONTACT, options())
    assert plan.action is PushAction.UPDATE
    assert plan.external_id == "c-1"
    assert (plan.reason, plan.detail, plan.suppress) == (ReasonCode.UPDATED, "updated in Spotler", None)
    assert plan.link is not None
    assert (plan.link.external_id, plan.link.email_hash) == ("c-1", hashed("ada@newmail.example.org"))


def test_email_case_change_is_not_a_change() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(emailaddress1="ADA@Example.com"), link=link, spotler=contact), CONTACT, options()
    )
    assert plan.action is PushAction.NONE
    assert (plan.reason, plan.detail, plan.contact, plan.suppress) == (ReasonCode.SYNCED, "already in sync", None, None)
    assert plan.link is not None
    assert (plan.link.external_id, plan.link.email_hash) == ("c-1", hashed("ada@example.com"))


def test_stale_event_changes_nothing() -> None:
    link, contact = synced(person())
    link = dataclasses.replace(link, dv_version=10, dv_modified_on=LATER)
    for stale in (
        push_input(person(donotemail=True), link=link, spotler=contact, version=9),
        push_input(person(donotemail=True), link=link, spotler=contact, modified_on=T0),
        push_input(None, kind=ChangeKind.DELETE, link=link, spotler=contact, version=3),
    ):
        plan = plan_push(stale, CONTACT, options())
        assert plan.action is PushAction.NONE
        assert plan.link is None
        assert plan.contact is None
        assert plan.suppress is None
        assert not plan.record_status


def test_event_ordering_data_never_moves_backwards() -> None:
    link, contact = synced(person())
    link = dataclasses.replace(link, dv_version=10, dv_modified_on=LATER)
    plan = plan_push(push_input(person(), link=link, spotler=contact, version=10), CONTACT, options())
    assert plan.link is not None
    assert plan.link.dv_version == 10
    assert plan.link.dv_modified_on == LATER


def test_qualified_lead_is_not_anonymized_by_default() -> None:
    attrs = person(statecode=1)
    link, contact = synced(person(), entity="lead", record_id="l-1")
    plan = plan_push(
        push_input(attrs, entity="lead", record_id="l-1", kind=ChangeKind.SET_STATE, link=link, spotler=contact),
        LEAD,
        options(),
    )
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.INACTIVE
    assert plan.suppress is None
    assert "qualified" in plan.detail

    anonymizing = LEAD.model_copy(update={"anonymize_closed_leads": True})
    plan = plan_push(
        push_input(attrs, entity="lead", record_id="l-1", kind=ChangeKind.SET_STATE, link=link, spotler=contact),
        anonymizing,
        options(),
    )
    assert plan.action is PushAction.ANONYMIZE
    assert (plan.reason, plan.detail, plan.external_id) == (ReasonCode.ANONYMIZED, "record deactivated", "l-1")
    assert plan.suppress is not None
    assert (plan.suppress.cause, plan.suppress.email_hash) == (SuppressionCause.ANONYMIZED, hashed("ada@example.com"))
    assert plan.link is not None
    assert plan.link.anonymized


def test_disqualified_lead_is_anonymized() -> None:
    link, contact = synced(person(), entity="lead", record_id="l-1")
    plan = plan_push(
        push_input(person(statecode=2), entity="lead", record_id="l-1", link=link, spotler=contact), LEAD, options()
    )
    assert plan.action is PushAction.ANONYMIZE
    assert (plan.reason, plan.external_id) == (ReasonCode.ANONYMIZED, "l-1")
    assert plan.suppress is not None
    assert (plan.suppress.cause, plan.suppress.email_hash) == (SuppressionCause.ANONYMIZED, hashed("ada@example.com"))
    assert plan.link is not None
    assert (plan.link.anonymized, plan.link.base) == (True, {})


def test_merged_contact_is_relinked_when_master_has_same_email() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(
            person(statecode=1),
            link=link,
            spotler=contact,
            merged_into="c-master",
            master_attributes=person(emailaddress1="ADA@example.com", firstname="Ada"),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.RELINK
    assert plan.relink_to == "c-master"
    assert plan.external_id == "c-1"
    assert plan.suppress is None
    assert plan.reason is ReasonCode.SYNCED


def test_merged_contact_is_anonymized_when_master_has_another_email() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(
            person(statecode=1),
            link=link,
            spotler=contact,
            merged_into="c-master",
            master_attributes=person(emailaddress1="someone.else@example.com"),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.ANONYMIZE
    assert (plan.reason, plan.relink_to, plan.external_id) == (ReasonCode.ANONYMIZED, None, "c-1")
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("ada@example.com")
    assert plan.link is not None
    assert plan.link.anonymized


def test_deleted_record_is_anonymized_and_tombstoned() -> None:
    link, contact = synced(person())
    plan = plan_push(push_input(None, kind=ChangeKind.DELETE, link=link, spotler=contact), CONTACT, options())
    assert plan.action is PushAction.ANONYMIZE
    assert plan.reason is ReasonCode.ANONYMIZED
    assert plan.external_id == "c-1"
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("ada@example.com")
    assert plan.suppress.cause is SuppressionCause.ANONYMIZED
    assert plan.link is not None
    assert plan.link.anonymized
    assert plan.link.base == {}


def test_deleted_record_without_link_is_tombstoned_from_its_pre_image() -> None:
    _, contact = synced(person())
    plan = plan_push(push_input(person(), kind=ChangeKind.DELETE, spotler=contact), CONTACT, options())
    assert plan.action is PushAction.ANONYMIZE
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("ada@example.com")


def test_deleted_record_without_link_or_image_is_tombstoned_from_spotler() -> None:
    _, contact = synced(person())
    plan = plan_push(push_input(None, kind=ChangeKind.DELETE, spotler=contact), CONTACT, options())
    assert (plan.action, plan.reason, plan.detail) == (PushAction.ANONYMIZE, ReasonCode.ANONYMIZED, "record deleted")
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("ada@example.com")
    assert plan.suppress.cause is SuppressionCause.ANONYMIZED
    assert plan.link is not None
    assert (plan.link.external_id, plan.link.anonymized) == ("c-1", True)


def test_deleted_record_never_synced_changes_nothing() -> None:
    plan = plan_push(push_input(None, kind=ChangeKind.DELETE), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.link is None
    assert plan.suppress is None


def test_deactivation_anonymizes_by_default() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(statecode=1), kind=ChangeKind.SET_STATE, link=link, spotler=contact), CONTACT, options()
    )
    assert plan.action is PushAction.ANONYMIZE
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.ANONYMIZED


def test_deactivation_does_not_anonymize_when_setting_off() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(statecode=1), kind=ChangeKind.SET_STATE, link=link, spotler=contact),
        CONTACT,
        options(anonymize_on_deactivate=False),
    )
    # Not anonymized: ON_LEAVING_SCOPE (unsubscribe by default) applies instead.
    assert plan.action is PushAction.UNSUBSCRIBE
    assert plan.contact is not None
    assert plan.contact.permissions == {1: False}
    assert plan.contact.properties == {}
    assert plan.reason is ReasonCode.INACTIVE
    assert plan.detail == "record is inactive; unsubscribed"
    assert plan.suppress is None
    assert plan.link is not None
    assert not plan.link.anonymized
    assert plan.link.unsubscribed
    assert not plan.link.in_scope


def test_deactivation_keeps_the_contact_as_it_is_when_leaving_scope_is_keep() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(statecode=1), kind=ChangeKind.SET_STATE, link=link, spotler=contact),
        CONTACT,
        options(anonymize_on_deactivate=False, on_leaving_scope="keep"),
    )
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.INACTIVE
    assert plan.link is not None
    assert not plan.link.unsubscribed
    assert not plan.link.in_scope


def test_anonymized_person_is_not_recreated_without_new_opt_in() -> None:
    # A brand-new row for the same person: creating it is no opt-in, even with Do Not Email submitted as false.
    create = push_input(person(), record_id="c-2", kind=ChangeKind.CREATE, suppression=tombstone())
    plan = plan_push(create, CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SUPPRESSED
    assert plan.lift_suppression is None
    # An ordinary edit, a replay or a backfill of the anonymized row is no opt-in either.
    link, contact = synced(person())
    anonymized = dataclasses.replace(link, anonymized=True, base={})
    for changed in (frozenset({"jobtitle"}), frozenset()):
        plan = plan_push(push_input(person(), link=anonymized, spotler=contact, changed=changed), CONTACT, options())
        assert plan.action is PushAction.NONE
        assert plan.reason is ReasonCode.SUPPRESSED


def test_clearing_do_not_email_is_an_explicit_opt_in() -> None:
    opted_out = tombstone(cause=SuppressionCause.OPTED_OUT)
    plan = plan_push(
        push_input(person(donotemail=False), changed={"donotemail"}, suppression=opted_out), CONTACT, options()
    )
    assert plan.action is PushAction.CREATE
    assert plan.reason is ReasonCode.CREATED
    assert plan.lift_suppression == opted_out.email_hash


def test_ticking_a_subscription_on_create_is_an_explicit_opt_in() -> None:
    mapping = mapping_with(permissions=[{"bit": 2, "dataverse": "new_newsletter"}])
    plan = plan_push(
        push_input(person(new_newsletter=True), kind=ChangeKind.CREATE, suppression=tombstone()), mapping, options()
    )
    assert plan.action is PushAction.CREATE
    assert plan.lift_suppression == tombstone().email_hash


def test_reactivating_an_anonymized_record_is_an_opt_in() -> None:
    link, _contact = synced(person())
    anonymized = dataclasses.replace(link, anonymized=True, base={})
    blank = SpotlerContact("c-1", channels={"EMAIL": True})
    plan = plan_push(
        push_input(
            person(),
            kind=ChangeKind.SET_STATE,
            changed={"statecode", "statuscode"},
            link=anonymized,
            spotler=blank,
            suppression=tombstone(),
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.lift_suppression == tombstone().email_hash
    assert plan.contact is not None
    assert plan.contact.properties["email"] == "ada@example.com"
    assert plan.contact.permissions == {1: True}
    assert plan.link is not None
    assert not plan.link.anonymized


def test_new_row_pairs_with_existing_spotler_contact_by_email() -> None:
    existing = SpotlerContact(
        "sp-42", {"email": "ADA@example.com", "firstName": "Ada"}, {1: True}, channels={"EMAIL": True}
    )
    plan = plan_push(push_input(person(), kind=ChangeKind.CREATE, email_match=existing), CONTACT, options())
    assert plan.action is PushAction.UPDATE
    assert plan.external_id == "sp-42"
    assert plan.contact is not None
    assert plan.contact.external_id == "sp-42"
    assert "firstName" not in plan.contact.properties  # already equal
    assert plan.link is not None
    assert plan.link.external_id == "sp-42"
    assert "paired" in plan.detail


def test_lower_precedence_row_does_not_overwrite_shared_contact() -> None:
    contact_link, contact = synced(person())
    plan = plan_push(
        push_input(
            person(firstname="Addie", jobtitle="Lead"),
            entity="lead",
            record_id="l-1",
            kind=ChangeKind.CREATE,
            email_match=contact,
            peers=[contact_link],
        ),
        LEAD,
        options(),
    )
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SYNCED
    assert plan.contact is None
    assert "contact c-1" in plan.detail
    # The lead is linked to the shared contact, so a pull updates it and a deletion of the contact keeps it.
    assert plan.link is not None
    assert plan.link.external_id == "c-1"


def test_higher_precedence_row_writes_the_shared_contact() -> None:
    lead_link, shared = synced(person(), entity="lead", record_id="l-1")
    plan = plan_push(
        push_input(
            person(firstname="Addie"), record_id="c-9", kind=ChangeKind.CREATE, email_match=shared, peers=[lead_link]
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.external_id == "l-1"
    assert plan.contact is not None
    assert plan.contact.properties == {"firstName": "Addie", "birthday": "1815-12-10"}  # the lead maps no birthday


def test_same_entity_duplicates_are_decided_by_lowest_record_id() -> None:
    link_a, shared = synced(person(), record_id="a")
    link_b = dataclasses.replace(link_a, record_id="b")
    loser = plan_push(
        push_input(person(firstname="B"), record_id="b", link=link_b, spotler=shared, peers=[link_a]),
        CONTACT,
        options(),
    )
    assert loser.action is PushAction.NONE
    assert (loser.reason, loser.contact) == (ReasonCode.SYNCED, None)
    assert loser.detail == "shares its Spotler contact with contact a, which takes precedence"
    assert loser.link is not None
    assert (loser.link.record_id, loser.link.external_id, loser.link.anonymized) == ("b", "a", False)
    winner = plan_push(
        push_input(person(firstname="A"), record_id="a", link=link_a, spotler=shared, peers=[link_b]),
        CONTACT,
        options(),
    )
    assert winner.action is PushAction.UPDATE
    assert winner.reason is ReasonCode.UPDATED
    assert winner.contact is not None
    assert winner.contact.properties == {"firstName": "A"}
    assert winner.link is not None
    assert winner.link.external_id == "a"


def test_deleting_one_of_two_rows_sharing_a_contact_keeps_the_contact() -> None:
    contact_link, shared = synced(person())
    lead_link = LinkState("lead", "l-1", "c-1")
    plan = plan_push(
        push_input(None, kind=ChangeKind.DELETE, link=contact_link, spotler=shared, peers=[lead_link]),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.NONE
    assert plan.suppress is None
    assert plan.link is not None
    assert plan.link.anonymized  # this row no longer speaks for the contact
    assert "lead l-1" in plan.detail


def test_update_sends_only_properties_that_differ() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(
            person(jobtitle="Engineer", address1_city="Paris", lastname="Lovelace "), link=link, spotler=contact
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.UPDATE
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "Engineer", "city": "Paris"}
    assert plan.contact.permissions == {}


def test_blank_keeps_spotler_value_by_default() -> None:
    link, contact = synced(person())
    plan = plan_push(
        push_input(person(jobtitle=None, address1_city="  "), link=link, spotler=contact), CONTACT, options()
    )
    assert plan.action is PushAction.NONE
    assert plan.contact is None


def test_blank_clears_when_purge_setting_on() -> None:
    link, contact = synced(person())
    contact = dataclasses.replace(contact, properties={**contact.properties, "customerType": "B2B"})
    plan = plan_push(
        push_input(person(jobtitle=None), link=link, spotler=contact), CONTACT, options(purge_when_not_set=True)
    )
    assert plan.action is PushAction.UPDATE
    assert plan.purge is True
    assert plan.contact is not None
    # Spotler will hold exactly this: every mapped value, the blank job title left out (the purge clears it),
    # and the unmapped customerType gone too.
    expected = {k: v for k, v in contact.properties.items() if k not in ("jobTitle", "customerType")}
    assert plan.contact.properties == expected
    assert plan.contact.permissions == {1: True}  # every bit goes along, so the purge never unsubscribes


def test_without_purge_only_the_changed_property_is_sent_and_others_stay() -> None:
    link, contact = synced(person())
    plan = plan_push(push_input(person(jobtitle="Chief"), link=link, spotler=contact), CONTACT, options())
    assert plan.purge is False
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "Chief"}
    assert plan.contact.permissions == {}


def test_purge_carries_spotler_owned_values_so_they_are_not_erased() -> None:
    fields = [f.model_dump() for f in CONTACT.fields]
    fields.append({"dataverse": "telephone1", "spotler": "phoneNumber", "direction": "to_dynamics"})
    mapping = mapping_with(fields=fields)
    link, contact = synced(person(), mapping=mapping)
    contact = dataclasses.replace(contact, properties={**contact.properties, "phoneNumber": "+31 6 1234 5678"})
    plan = plan_push(
        push_input(person(jobtitle="Chief"), link=link, spotler=contact), mapping, options(purge_when_not_set=True)
    )
    assert plan.contact is not None
    assert plan.contact.properties["jobTitle"] == "Chief"
    assert plan.contact.properties["phoneNumber"] == "+31 6 1234 5678"  # ⬅: Spotler's value is sent back as it is


def test_an_unchanged_save_writes_nothing_even_with_purge() -> None:
    link, contact = synced(person())
    plan = plan_push(push_input(person(), link=link, spotler=contact), CONTACT, options(purge_when_not_set=True))
    assert plan.action is PushAction.NONE
    assert plan.contact is None


def test_field_blank_policy_overrides_the_purge_setting() -> None:
    fields = [f.model_dump() for f in CONTACT.fields]
    for f in fields:
        if f["dataverse"] == "jobtitle":
            f["blank"] = "clear"
        if f["dataverse"] == "address1_city":
            f["blank"] = "keep"
    mapping = mapping_with(fields=fields)
    link, contact = synced(person(), mapping=mapping)
    attrs = person(jobtitle=None, address1_city=None)
    kept = plan_push(push_input(attrs, link=link, spotler=contact), mapping, options())
    assert kept.contact is not None
    assert kept.contact.properties == {"jobTitle": None}
    purged = plan_push(push_input(attrs, link=link, spotler=contact), mapping, options(purge_when_not_set=True))
    assert purged.contact is not None
    assert "jobTitle" not in purged.contact.properties  # `clear`: left out, so the purge clears it
    assert purged.contact.properties["city"] == "London"  # `keep`: Spotler's value is carried through the purge


def test_create_only_field_not_sent_on_update() -> None:
    fields = [
        *(f.model_dump() for f in CONTACT.fields),
        {
            "dataverse": "leadsourcecode",
            "spotler": "source",
            "type": "choice",
            "choices": {1: "Web", 2: "Fair"},
            "create_only": True,
        },
    ]
    mapping = mapping_with(fields=fields)
    link, contact = synced(person(leadsourcecode=1), mapping=mapping)
    assert contact.properties["source"] == "Web"
    plan = plan_push(
        push_input(person(leadsourcecode=2, jobtitle="CTO"), link=link, spotler=contact), mapping, options()
    )
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "CTO"}


def test_to_dynamics_field_is_never_pushed() -> None:
    fields = [
        *(f.model_dump() for f in CONTACT.fields),
        {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"},
    ]
    mapping = mapping_with(fields=fields)
    plan = plan_push(push_input(person(new_score=7), kind=ChangeKind.CREATE), mapping, options())
    assert plan.contact is not None
    assert "score" not in plan.contact.properties


def test_two_way_field_changed_only_in_spotler_is_not_pushed() -> None:
    link, contact = synced(person())
    spotler = apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), LATER)
    plan = plan_push(push_input(person(jobtitle="CTO"), link=link, spotler=spotler), CONTACT, options())
    assert plan.contact is not None
    assert plan.contact.properties == {"jobTitle": "CTO"}
    assert plan.conflicts == ()
    assert plan.link is not None
    assert plan.link.base["firstName"] == link.base["firstName"]  # the pull still sees Spotler's news


def test_conflict_dynamics_wins_by_default() -> None:
    link, contact = synced(person())
    spotler = apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), LATER + timedelta(hours=1))
    plan = plan_push(
        push_input(person(firstname="Ada A."), link=link, spotler=spotler, modified_on=LATER), CONTACT, options()
    )
    assert plan.action is PushAction.UPDATE
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.contact is not None
    assert plan.contact.properties == {"firstName": "Ada A."}
    assert plan.conflicts == ("firstName",)


def test_conflict_most_recent_option() -> None:
    link, contact = synced(person())
    opts = options(conflict_winner="most_recent")
    spotler = apply_write(contact, SpotlerContact("c-1", {"firstName": "Augusta"}), LATER + timedelta(hours=1))
    # Spotler changed later: its value stands and is not overwritten.
    plan = plan_push(
        push_input(person(firstname="Ada A."), link=link, spotler=spotler, modified_on=LATER), CONTACT, opts
    )
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.action is PushAction.NONE
    assert plan.conflicts == ("firstName",)
    # Dynamics changed later: its value wins.
    plan = plan_push(
        push_input(person(firstname="Ada A."), link=link, spotler=spotler, modified_on=LATER + timedelta(hours=2)),
        CONTACT,
        opts,
    )
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.contact is not None
    assert plan.contact.properties == {"firstName": "Ada A."}


def test_spotler_opt_out_is_not_overridden_by_push() -> None:
    link, contact = synced(person())
    # The person unsubscribed in Spotler (permission bit off); Dynamics did not ask to subscribe again.
    unsubscribed = apply_write(contact, SpotlerContact("c-1", permissions={1: False}), LATER)
    plan = plan_push(push_input(person(jobtitle="CTO"), link=link, spotler=unsubscribed), CONTACT, options())
    assert plan.contact is not None
    assert plan.contact.permissions == {}
    # A global opt-out (the e-mail channel off) blocks every write.
    globally = dataclasses.replace(contact, channels={"EMAIL": False})
    plan = plan_push(push_input(person(jobtitle="CTO"), link=link, spotler=globally), CONTACT, options())
    assert plan.reason is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert plan.contact is None


def test_dynamics_resubscribing_after_a_spotler_opt_out_is_sent() -> None:
    link, contact = synced(person(donotbulkemail=True))
    assert contact.permissions == {1: False}
    plan = plan_push(
        push_input(person(donotbulkemail=False), link=link, spotler=contact, changed={"donotbulkemail"}),
        CONTACT,
        options(),
    )
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True}


def test_do_not_email_without_spotler_contact_leaves_a_tombstone() -> None:
    plan = plan_push(push_input(person(donotemail=True), kind=ChangeKind.CREATE), CONTACT, options())
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SUPPRESSED
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT


def test_unconvertible_value_is_not_sent_and_noted() -> None:
    fields = [*(f.model_dump() for f in CONTACT.fields), {"dataverse": "new_score", "spotler": "score", "type": "int"}]
    mapping = mapping_with(fields=fields)
    plan = plan_push(push_input(person(new_score="lots"), kind=ChangeKind.CREATE), mapping, options())
    assert plan.action is PushAction.CREATE
    assert plan.contact is not None
    assert "score" not in plan.contact.properties
    assert plan.reason is ReasonCode.CREATED
    assert any(c.startswith("new_score:") for c in plan.conflicts)
    assert all("lots" not in c for c in plan.conflicts)


def test_do_not_email_on_one_record_keeps_the_shared_contact_for_the_live_one() -> None:
    contact_link, shared = synced(person())
    first = plan_push(
        push_input(
            person(), entity="lead", record_id="l-1", kind=ChangeKind.CREATE, email_match=shared, peers=[contact_link]
        ),
        LEAD,
        options(),
    )
    assert first.link is not None
    plan = plan_push(
        push_input(
            person(donotemail=True),
            entity="lead",
            record_id="l-1",
            link=first.link,
            spotler=shared,
            peers=[contact_link],
            changed={"donotemail"},
        ),
        LEAD,
        options(),
    )
    assert plan.action is PushAction.NONE
    assert plan.reason is ReasonCode.SUPPRESSED
    assert plan.detail == "Do Not Email is set; Spotler contact kept for contact c-1"
    assert plan.suppress is None  # a tombstone would lock the live record's person out
    assert plan.link is not None
    assert not plan.link.in_scope


def test_do_not_email_on_the_last_live_record_anonymizes_the_shared_contact() -> None:
    contact_link, shared = synced(person())
    gone = dataclasses.replace(contact_link, in_scope=False, reason=ReasonCode.INACTIVE)
    lead_link = dataclasses.replace(contact_link, entity="lead", record_id="l-1", external_id="c-1")
    plan = plan_push(
        push_input(
            person(donotemail=True),
            entity="lead",
            record_id="l-1",
            link=lead_link,
            spotler=shared,
            peers=[gone],
            changed={"donotemail"},
        ),
        LEAD,
        options(),
    )
    assert plan.action is PushAction.ANONYMIZE
    assert plan.external_id == "c-1"
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT


def test_every_reason_code_has_a_distinct_choice_option_value() -> None:
    values = [code.option_value for code in ReasonCode]
    assert len(set(values)) == len(ReasonCode)
