"""What a push sends: a purge body that shares nothing with the contact it was read from, and column permissions."""

from __future__ import annotations

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.records import SpotlerContact
from sync_core.domain.state_model import LinkState
from tests.unit.domain_builders import hashed, options, person, push_input

ADA = "ada@example.com"
FIELDS = [
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "to_spotler"},
    {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4, "direction": "to_dynamics"},
]
NEWSLETTER = {"bit": 2, "dataverse": "new_newsletter", "direction": "both"}
MAPPING = EntityMapping.model_validate({"fields": FIELDS, "permissions": [NEWSLETTER]})


def link() -> LinkState:
    return LinkState("contact", "c-1", "c-1", email_hash=hashed(ADA), base={})


def test_a_purge_body_carries_spotler_s_own_set_values_as_copies_of_what_was_read() -> None:
    flags = {4: True, 9: True}
    current = SpotlerContact("c-1", {"email": ADA, "jobTitle": "Analyst", "flags": flags}, {2: True})
    plan = plan_push(
        push_input(person(jobtitle="Planner", new_newsletter=True), changed={"jobtitle"}, link=link(), spotler=current),
        MAPPING,
        options(purge_when_not_set=True),
    )
    assert (plan.action, plan.purge) == (PushAction.UPDATE, True)
    assert plan.contact is not None
    assert plan.contact.properties == {"email": ADA, "jobTitle": "Planner", "flags": {4: True, 9: True}}
    assert plan.contact.properties["flags"] is not flags  # the write never shares a dict with the contact read
    assert plan.contact.permissions == {2: True}


def test_a_column_permission_follows_its_column() -> None:
    current = SpotlerContact("c-1", {"email": ADA, "jobTitle": "Analyst"}, {2: False})
    on = plan_push(
        push_input(
            person(jobtitle="Analyst", new_newsletter=True), changed={"new_newsletter"}, link=link(), spotler=current
        ),
        MAPPING,
        options(),
    )
    assert on.contact is not None
    assert on.contact.permissions == {2: True}
    off = plan_push(
        push_input(
            person(jobtitle="Analyst", new_newsletter=False), changed={"new_newsletter"}, link=link(), spotler=current
        ),
        MAPPING,
        options(),
    )
    assert (off.action, off.contact) == (PushAction.NONE, None)
