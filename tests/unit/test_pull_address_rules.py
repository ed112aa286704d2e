"""Which address the pull acts for: the record's, the contact's, or the one the opt-out tombstone is left on."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.records import DataverseRow, SpotlerContact
from sync_core.domain.state_model import SuppressionCause
from tests.unit.domain_builders import T0, apply_write, hashed, options, person, synced

PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
NAMES = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
]
ADDRESS = {"dataverse": "emailaddress1", "spotler": "email", "type": "email"}
PUSHED_ADDRESS = EntityMapping.model_validate(
    {"fields": [*NAMES, {**ADDRESS, "direction": "to_spotler"}], "permissions": PERMISSIONS}
)
PULLED_ADDRESS = EntityMapping.model_validate(
    {"fields": [*NAMES, {**ADDRESS, "direction": "both"}], "permissions": PERMISSIONS}
)
SOON = T0 + timedelta(hours=1)
ADA = "ada@example.com"
OTHER = "someone.else@example.com"


def test_a_record_that_left_for_another_address_is_pulled_when_the_mapping_brings_the_address_back() -> None:
    # With the address mapped ⬅/🔁, the record is the contact's person whatever address Dynamics holds now.
    link, contact = synced(person(), mapping=PULLED_ADDRESS)
    left = dataclasses.replace(link, in_scope=False)
    edited = apply_write(contact, SpotlerContact("c-1", {"lastName": "Byron"}), SOON)
    row = DataverseRow("contact", "c-1", person(emailaddress1=OTHER), modified_on=T0)
    plan = plan_pull(edited, left, row, PULLED_ADDRESS, options(), SOON)
    assert not plan.skipped
    assert plan.changes == {"lastname": "Byron"}


def test_a_record_that_left_for_another_address_is_not_pulled_when_only_dynamics_writes_the_address() -> None:
    link, contact = synced(person(), mapping=PUSHED_ADDRESS)
    left = dataclasses.replace(link, in_scope=False)
    edited = apply_write(contact, SpotlerContact("c-1", {"lastName": "Byron"}), SOON)
    row = DataverseRow("contact", "c-1", person(emailaddress1=OTHER), modified_on=T0)
    plan = plan_pull(edited, left, row, PUSHED_ADDRESS, options(), SOON)
    assert plan.skipped
    assert plan.changes == {}


def test_the_pull_s_opt_out_tombstone_is_on_the_contact_s_address_not_the_record_s_or_the_link_s() -> None:
    link, contact = synced(person(), mapping=PUSHED_ADDRESS)
    remembered = dataclasses.replace(link, email_hash=hashed("earlier@example.com"))
    gone = dataclasses.replace(
        apply_write(contact, SpotlerContact("c-1", {}, {1: False}), SOON), channels={"EMAIL": False}
    )
    row = DataverseRow("contact", "c-9", person(emailaddress1=OTHER), modified_on=T0)
    plan = plan_pull(gone, remembered, row, PUSHED_ADDRESS, options(), SOON)
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed(ADA)
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT
    assert (plan.suppress.entity, plan.suppress.record_id, plan.suppress.created_on) == ("contact", "c-9", SOON)
    assert plan.link.email_hash == hashed(OTHER)  # the link follows the record's own address


def test_the_pull_leaves_no_tombstone_while_the_person_is_not_opted_out_in_spotler() -> None:
    link, contact = synced(person(), mapping=PUSHED_ADDRESS)
    unsubscribed = apply_write(contact, SpotlerContact("c-1", {"lastName": "Byron"}, {1: False}), SOON)
    row = DataverseRow("contact", "c-1", person(), modified_on=T0)
    plan = plan_pull(unsubscribed, link, row, PUSHED_ADDRESS, options(), SOON)
    assert plan.changes == {"lastname": "Byron", "donotbulkemail": True}
    assert plan.suppress is None
