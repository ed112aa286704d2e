"""The push plan's compiled field steps: worked out once per mapping and blank policy, kept in a bounded memo, and
sending text, e-mail and date fields the short way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync_core.domain import plan
from sync_core.domain.mapping import EntityMapping
from tests.unit.domain_builders import options

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
