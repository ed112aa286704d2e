"""The pull writes a Spotler contact's values only to the records that are that person."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import plan_pull
from sync_core.domain.records import DataverseRow, SpotlerContact
from tests.unit.domain_builders import T0, apply_write, options, person, synced

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "lastname", "spotler": "lastName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
]
PERMISSIONS = [{"bit": 1, "source": "not_donotbulkemail", "direction": "both"}]
CONTACT = EntityMapping.model_validate({"fields": FIELDS, "permissions": PERMISSIONS})
SOON = T0 + timedelta(hours=1)


def test_a_record_that_left_its_contact_for_another_address_is_not_written_by_the_pull() -> None:
    # The record moved to an address that waits for an opt-in (suppressed, out of scope) while another record of
    # the old address keeps the contact: the contact's changes are that other person's, not this record's.
    link, contact = synced(person(), mapping=CONTACT)
    left = dataclasses.replace(link, in_scope=False)
    edited = apply_write(contact, SpotlerContact("c-1", {"lastName": "Byron"}, {1: False}), SOON)
    row = DataverseRow("contact", "c-1", person(emailaddress1="someone.else@example.com"), modified_on=T0)
    plan = plan_pull(edited, left, row, CONTACT, options(), SOON)
    assert plan.skipped
    assert plan.changes == {}


def test_a_record_still_on_its_contact_s_address_gets_the_pull_even_out_of_scope() -> None:
    link, contact = synced(person(), mapping=CONTACT)
    left = dataclasses.replace(link, in_scope=False)
    edited = apply_write(contact, SpotlerContact("c-1", {"lastName": "Byron"}), SOON)
    row = DataverseRow("contact", "c-1", person(), modified_on=T0)
    plan = plan_pull(edited, left, row, CONTACT, options(), SOON)
    assert plan.changes == {"lastname": "Byron"}
