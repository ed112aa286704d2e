"""Eligibility rules: is a Dataverse record one we may keep in Spotler, and if not, why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sync_core.domain.convert import is_blank
from sync_core.domain.mapping import EntityMapping, ExcludeRule
from sync_core.domain.records import AttrValue, EntityName

LEAD_QUALIFIED = 1
ACTIVE = 0


@dataclass(frozen=True, slots=True)
class Exclusion:
    """The filter that excluded a record, described for its status."""

    rule_index: int
    description: str


def is_active(attributes: Mapping[str, AttrValue]) -> bool:
    """Active contact/account, or open lead. A row with no known state counts as active."""
    state = attributes.get("statecode")
    return state is None or state == ACTIVE


def is_qualified_lead(entity: EntityName, attributes: Mapping[str, AttrValue]) -> bool:
    return entity == "lead" and attributes.get("statecode") == LEAD_QUALIFIED


def _same(value: object, wanted: object) -> bool:
    """Text compares case-insensitively; a boolean never equals a number (True is not 1 here)."""
    if isinstance(value, str) and isinstance(wanted, str):
        return value.strip().casefold() == wanted.strip().casefold()
    if isinstance(value, bool) != isinstance(wanted, bool):
        return False
    return value == wanted


def _matches(rule: ExcludeRule, value: AttrValue) -> bool:
    if rule.is_blank is not None:
        return is_blank(value) == rule.is_blank
    if rule.any_of is not None:
        chosen = value if isinstance(value, list) else [value]  # a multi-select matches on any chosen option
        return any(_same(v, wanted) for v in chosen for wanted in rule.any_of)
    return _same(value, rule.equals)


def excluded_by(mapping: EntityMapping, attributes: Mapping[str, AttrValue]) -> Exclusion | None:
    """The first exclude rule the record matches, if any."""
    for index, rule in enumerate(mapping.exclude):
        if _matches(rule, attributes.get(rule.attribute)):
            text = rule.description or f"exclude rule {index} on column {rule.attribute}"
            return Exclusion(index, text)
    return None


def wants_no_email(mapping: EntityMapping, attributes: Mapping[str, AttrValue]) -> bool:
    return attributes.get(mapping.donotemail_attribute) is True


def wants_no_bulk_email(mapping: EntityMapping, attributes: Mapping[str, AttrValue]) -> bool:
    return attributes.get(mapping.donotbulkemail_attribute) is True
