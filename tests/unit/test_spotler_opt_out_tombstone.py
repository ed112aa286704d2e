"""A person's own opt-out in Spotler leaves a tombstone on the address the contact holds, seen by push and pull."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ChangeKind, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression, SuppressionCause
from tests.unit.domain_builders import T0, hashed, options, person, push_input

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
]
PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
CONTACT = EntityMapping.model_validate({"fields": FIELDS, "permissions": PERMISSIONS})
GRACE = "grace@example.com"
SOON = T0 + timedelta(hours=1)


def opted_out(email: str = GRACE) -> SpotlerContact:
    return SpotlerContact("c-9", {"email": email, "lastName": "Hopper"}, {1: False}, channels={"EMAIL": False})


def test_the_push_leaves_an_opt_out_tombstone_for_a_contact_that_opted_out_in_spotler() -> None:
    link = LinkState("contact", "c-1", "c-9", email_hash=hashed(GRACE))
    plan = plan_push(push_input(person(emailaddress1=GRACE), link=link, spotler=opted_out()), CONTACT, options())
    assert (plan.action, plan.reason) == (PushAction.NONE, ReasonCode.OPTED_OUT_IN_SPOTLER)
    assert plan.suppress is not None
    assert (plan.suppress.email_hash, plan.suppress.cause) == (hashed(GRACE), SuppressionCause.OPTED_OUT)


def test_the_push_does_not_write_the_opt_out_tombstone_again() -> None:
    link = LinkState("contact", "c-1", "c-9", email_hash=hashed(GRACE))
    known = Suppression(hashed(GRACE), SuppressionCause.OPTED_OUT, "contact", "c-1", T0)
    plan = plan_push(
        push_input(person(emailaddress1=GRACE), link=link, spotler=opted_out(), suppression=known), CONTACT, options()
    )
    assert plan.reason is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert plan.suppress is None


def test_a_reactivation_after_a_spotler_opt_out_and_a_deactivation_is_no_opt_in() -> None:
    link = LinkState("contact", "c-1", "c-9", email_hash=hashed(GRACE))
    seen = plan_push(push_input(person(emailaddress1=GRACE), link=link, spotler=opted_out()), CONTACT, options())
    deactivated = plan_push(
        push_input(
            person(emailaddress1=GRACE, statecode=1),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            link=seen.link,
            spotler=opted_out(),
            suppression=seen.suppress,
        ),
        CONTACT,
        options(),
    )
    assert deactivated.action is PushAction.ANONYMIZE
    assert deactivated.suppress is not None
    assert deactivated.suppress.cause is SuppressionCause.OPTED_OUT
    reactivated = plan_push(
        push_input(
            person(emailaddress1=GRACE),
            kind=ChangeKind.SET_STATE,
            changed={"statecode"},
            link=deactivated.link,
            spotler=SpotlerContact("c-9", {}, {1: False}),  # anonymized: no address any more
            suppression=deactivated.suppress,
        ),
        CONTACT,
        options(),
    )
    assert reactivated.action is PushAction.NONE
    assert reactivated.reason is ReasonCode.SUPPRESSED


def test_the_pull_keys_the_opt_out_tombstone_by_the_contact_s_address_not_the_row_s_old_one() -> None:
    # The row just moved onto the opted-out contact: its link still knows its previous address.
    link = LinkState("contact", "c-1", "c-9", email_hash=hashed("ada@example.com"))
    contact = dataclasses.replace(opted_out(), last_changed=SOON)
    row = DataverseRow("contact", "c-1", person(emailaddress1=GRACE), modified_on=T0)
    plan = plan_pull(contact, link, row, CONTACT, options(), SOON)
    assert plan.suppress is not None
    assert (plan.suppress.email_hash, plan.suppress.cause) == (hashed(GRACE), SuppressionCause.OPTED_OUT)
