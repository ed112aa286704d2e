"""The push plan's compiled field steps: worked out once per mapping and blank policy, kept in a bounded memo, and
sending text, e-mail and date fields the short way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync_core.domain import plan
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.plan import PushAction, plan_push
from sync_core.domain.records import SpotlerContact
from sync_core.domain.state_model import LinkState
from tests.unit.domain_builders import options, push_input

ADA = "ada@example.com"

FIELDS = [
    {"dataverse": "firstname", "spotler": "firstName", "direction": "both"},
    {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"},
    {"dataverse": "birthdate", "spotler": "dob", "type": "birthdate", "direction": "to_spotler"},
    {"dataverse": "new_start", "spotler": "start", "type": "date", "direction": "to_spotler"},
    {"dataverse": "new_count", "spotler": "count", "type": "int", "direction": "to_spotler"},
    {"dataverse": "new_pulled", "spotler": "pulled", "direction": "to_dynamics"},
]


def mapping() -> EntityMapping:
    return EntityMapping.model_validate({"fields": FIELDS})


@pytest.fixture
def memo() -> Iterator[dict[Any, Any]]:
    table: dict[Any, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "_steps_memo", table)
        yield table


def test_each_pushed_field_gets_the_way_of_its_type(memo: dict[Any, Any]) -> None:
    steps, _ = plan._compiled(mapping(), options())
    kinds = {step[2]: step[4] for step in steps}
    assert kinds == {
        "firstName": plan._TEXT,
        "email": plan._EMAIL,
        "dob": plan._DATE,
        "start": plan._DATE,
        "count": plan._OTHER,
    }


def test_the_steps_are_worked_out_once_per_mapping_and_blank_policy(memo: dict[Any, Any]) -> None:
    one, other = mapping(), mapping()
    plan._compiled(one, options())
    kept = plan._compiled(one, options())[0]
    assert plan._compiled(one, options())[0] is kept
    assert memo[(id(one), False)][0] is one
    purging = plan._compiled(one, options(purge_when_not_set=True))[0]
    assert purging is not kept
    assert plan._compiled(other, options())[0] is not kept
    assert plan._compiled(one, options())[0] is kept


def test_the_memo_starts_over_when_it_is_full(memo: dict[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan, "_STEPS_KEPT", 2)
    kept = [mapping() for _ in range(3)]
    for m in kept:
        plan._compiled(m, options())
    assert len(memo) == 1


# --- the short way for text gives what the long way gives ---------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "value", "sent"),
    [
        (7, None, None),  # a number Spotler holds is cleared by a blank (with the purge policy)
        (7, "Ada", "Ada"),
        ("  ", None, "nothing"),  # blank on both sides: nothing to send
        (None, None, "nothing"),
        (None, 42, "42"),  # a number in a text column is sent as its text
        ("Ada", None, None),
        ("Ada", " Ada ", "nothing"),
    ],
)
def test_a_text_field_is_sent_only_when_it_differs(held: Any, value: Any, sent: Any) -> None:
    props: dict[str, Any] = {"email": ADA} if held is None else {"email": ADA, "firstName": held}
    got = plan_push(
        push_input(
            {"emailaddress1": ADA, "firstname": value, "statecode": 0},
            link=LinkState("contact", "c-1", "c-1"),
            spotler=SpotlerContact("c-1", props, {}),
        ),
        mapping(),
        options(purge_when_not_set=True),
    )
    if sent == "nothing":
        assert (got.action, got.contact) == (PushAction.NONE, None)
        return
    assert got.action is PushAction.UPDATE
    assert got.contact is not None
    assert got.contact.properties.get("firstName") == sent
    assert ("firstName" in got.contact.properties) is (sent is not None)


def test_a_blank_kept_for_spotler_does_not_stop_the_fields_after_it() -> None:
    counted_first = EntityMapping.model_validate({"fields": [FIELDS[4], FIELDS[1], FIELDS[0]]})
    got = plan_push(
        push_input(
            {"emailaddress1": ADA, "new_count": None, "firstname": "Ada", "statecode": 0},
            link=LinkState("contact", "c-1", "c-1"),
            spotler=SpotlerContact("c-1", {"email": ADA, "count": 3}, {}),
        ),
        counted_first,
        options(),
    )
    assert got.contact is not None
    assert got.contact.properties == {"firstName": "Ada"}


def test_a_contact_created_again_for_an_unsubscribed_record_keeps_its_subscriptions_off() -> None:
    with_bits = EntityMapping.model_validate(
        {"fields": FIELDS[:2], "permissions": [{"bit": 2, "dataverse": "new_newsletter", "direction": "both"}]}
    )
    got = plan_push(
        push_input(
            {"emailaddress1": ADA, "firstname": "Ada", "new_newsletter": True, "statecode": 0},
            link=LinkState("contact", "c-1", "c-1", unsubscribed=True),
        ),
        with_bits,
        options(),
    )
    assert got.action is PushAction.CREATE
    assert got.contact is not None
    assert got.contact.permissions == {}
    assert got.detail.endswith("subscriptions stay off until a new opt-in in Dynamics")
