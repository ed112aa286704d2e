"""What a push remembers on a link it does not rewrite, and which contact a linked record speaks for.

A record deleted while a peer keeps the contact, or merged into a master, keeps everything its link knew (the
last address, the bases, the Spotler change it last saw, its retry state): only the event's ordering data and
the time of the attempt move on. A linked record is paired by its link, never by an e-mail match.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import T0, hashed, options, person, push_input

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
]
PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
CONTACT = EntityMapping.model_validate({"fields": FIELDS, "permissions": PERMISSIONS})
ADA = "ada@example.com"
LATER = T0 + timedelta(hours=2)
NOW = T0 + timedelta(hours=3)


def remembered() -> LinkState:
    """A link with every field but `anonymized` away from its default."""
    return LinkState(
        entity="contact",
        record_id="c-1",
        external_id="c-1",
        email_hash=hashed(ADA),
        dv_version=3,
        dv_modified_on=T0,
        spotler_last_changed=T0 + timedelta(minutes=5),
        base={"firstName": "h-first", "permission:1": "h-bit"},
        anonymized=False,
        in_scope=False,
        unsubscribed=True,
        reason=ReasonCode.TRANSIENT_ERROR,
        detail="Spotler answered 503",
        last_attempt=T0,
        failures=2,
        next_retry=T0 + timedelta(minutes=10),
        etag="W/etag-1",
    )


def peer() -> LinkState:
    return LinkState("lead", "l-1", "c-1", email_hash=hashed(ADA), in_scope=True)


def test_a_record_deleted_while_a_peer_keeps_the_contact_keeps_what_its_link_knew() -> None:
    plan = plan_push(
        push_input(
            None, kind=ChangeKind.DELETE, version=4, modified_on=LATER, now=NOW, link=remembered(), peers=[peer()]
        ),
        CONTACT,
        options(),
    )
    assert plan.action is PushAction.NONE
    assert plan.link == dataclasses.replace(
        remembered(), anonymized=True, dv_version=4, dv_modified_on=LATER, last_attempt=NOW
    )


def test_an_event_without_ordering_data_keeps_the_link_s_ordering_data() -> None:
    plan = plan_push(
        push_input(None, kind=ChangeKind.DELETE, now=NOW, link=remembered(), peers=[peer()]), CONTACT, options()
    )
    assert plan.link == dataclasses.replace(remembered(), anonymized=True, last_attempt=NOW)


def test_a_record_merged_into_a_master_of_the_same_address_keeps_what_its_link_knew() -> None:
    plan = plan_push(
        push_input(
            person(),
            version=4,
            modified_on=LATER,
            now=NOW,
            link=remembered(),
            merged_into="c-2",
            master_attributes=person(),
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.relink_to) == (PushAction.RELINK, "c-2")
    assert plan.link == dataclasses.replace(
        remembered(),
        anonymized=True,
        dv_version=4,
        dv_modified_on=LATER,
        last_attempt=NOW,
        reason=ReasonCode.SYNCED,
        detail="merged into contact c-2; Spotler contact relinked",
    )


def test_a_linked_record_with_its_contact_is_not_paired_by_an_email_match() -> None:
    # An e-mail match only pairs a record that has neither a link nor a contact: a linked record that asks for
    # its subscription gets it, and its link is not marked as waiting for an opt-in.
    link = LinkState("contact", "c-1", "c-1", email_hash=hashed(ADA), base={})
    own = SpotlerContact("c-1", {"email": ADA, "firstName": "Ada", "lastName": "Lovelace"}, {1: False})
    stray = SpotlerContact("c-7", {"email": ADA}, {1: False}, channels={"EMAIL": True})
    plan = plan_push(
        push_input(person(), changed={"jobtitle"}, link=link, spotler=own, email_match=stray), CONTACT, options()
    )
    assert (plan.action, plan.external_id) == (PushAction.UPDATE, "c-1")
    assert plan.contact is not None
    assert plan.contact.permissions == {1: True}
    assert plan.link is not None
    assert not plan.link.unsubscribed
    assert plan.detail == "updated in Spotler"


def test_a_reactivation_over_an_opt_out_tombstone_is_recorded_on_the_link_though_the_contact_was_anonymized() -> None:
    # The contact lost its address since the last sync (anonymized for another record), so nothing agreed on it
    # stands; the reactivation is no opt-in over the person's own opt-out, and the link says so.
    link = LinkState("contact", "c-1", "c-1", email_hash=hashed(ADA), base={"firstName": "h-first"}, failures=1)
    wiped = SpotlerContact("c-1", {}, {1: False})
    tomb = Suppression(hashed(ADA), SuppressionCause.OPTED_OUT, "contact", "c-1", T0)
    plan = plan_push(
        push_input(
            person(),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            now=NOW,
            link=link,
            spotler=wiped,
            suppression=tomb,
        ),
        CONTACT,
        options(),
    )
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.SUPPRESSED)
    assert plan.detail == "suppressed (opted_out); needs a new opt-in in Dynamics"
    assert plan.link == dataclasses.replace(
        link,
        base={},
        in_scope=False,
        reason=ReasonCode.SUPPRESSED,
        detail=plan.detail,
        last_attempt=NOW,
        failures=0,
    )
