"""Small builders shared by the domain tests: a person's row, synced state, and a Spotler write simulator."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_core.domain.consent import email_hash
from sync_core.domain.mapping import EntityMapping, MappingConfig, default_mapping_text, parse_mapping
from sync_core.domain.plan import PushAction, PushInput, PushOptions, plan_push
from sync_core.domain.records import AttrValue, ChangeKind, EntityName, PropValue, SpotlerContact
from sync_core.domain.state_model import LinkState

KEY = b"unit-test-hash-key-0123456789abc"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TWO_WAY_NAME_FIELDS = frozenset({"firstname", "lastname", "birthdate"})


def two_way_names_mapping() -> MappingConfig:
    """The shipped default mapping with name and birthdate two-way (🔁), so the rules of both directions show."""
    data = json.loads(default_mapping_text())
    for entity in data["entities"].values():
        for field in entity["fields"]:
            if field["dataverse"] in TWO_WAY_NAME_FIELDS:
                field["direction"] = "both"
    return parse_mapping(data)


MAPPING = two_way_names_mapping()


def entity_mapping(entity: EntityName = "contact") -> EntityMapping:
    mapping = MAPPING.for_entity(entity)
    assert mapping is not None
    return mapping


def options(**kw: Any) -> PushOptions:
    return PushOptions(hash_key=KEY, **kw)


def person(**overrides: AttrValue) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {
        "firstname": "Ada",
        "lastname": "Lovelace",
        "emailaddress1": "ada@example.com",
        "jobtitle": "Analyst",
        "birthdate": "1815-12-10",
        "address1_line1": "1 St James's Square",
        "address1_postalcode": "SW1Y 4JH",
        "address1_city": "London",
        "address1_country": "UK",
        "companyname": "Analytical Engines",
        "name": "Analytical Engines",
        "statecode": 0,
        "donotemail": False,
        "donotbulkemail": False,
    }
    attrs.update(overrides)
    return attrs


def hashed(email: str) -> str:
    return email_hash(KEY, email)


def push_input(
    attrs: Mapping[str, AttrValue] | None,
    *,
    entity: EntityName = "contact",
    record_id: str = "c-1",
    kind: ChangeKind = ChangeKind.UPDATE,
    now: datetime | None = None,
    changed: frozenset[str] | set[str] | None = None,
    **kw: Any,
) -> PushInput:
    if changed is None:
        changed = frozenset(attrs or {}) if kind is ChangeKind.CREATE else frozenset()
    return PushInput(
        entity=entity,
        record_id=record_id,
        kind=kind,
        attributes=attrs,
        now=now or T0 + timedelta(hours=1),
        changed=frozenset(changed),
        **kw,
    )


def apply_write(
    current: SpotlerContact | None, write: SpotlerContact, when: datetime, *, purge: bool = False
) -> SpotlerContact:
    """Spotler's insert/update: given properties replace, set bits merge, others stay (all go with `purge`)."""
    kept = current if current is not None and not purge else None
    props: dict[str, PropValue] = dict(kept.properties) if kept is not None else {}
    for name, value in write.properties.items():
        if isinstance(value, dict):
            old = props.get(name)
            merged = dict(old) if isinstance(old, dict) else {}
            merged.update(value)
            props[name] = merged
        elif value is None or (isinstance(value, str) and not value.strip()):
            props.pop(name, None)
        else:
            props[name] = value
    perms = dict(kept.permissions) if kept is not None else {}
    perms.update(write.permissions)
    base = current or SpotlerContact(external_id=write.external_id, created=when, channels={"EMAIL": True})
    return dataclasses.replace(base, properties=props, permissions=perms, last_changed=when)


def synced(
    attrs: Mapping[str, AttrValue],
    *,
    entity: EntityName = "contact",
    record_id: str = "c-1",
    opts: PushOptions | None = None,
    mapping: EntityMapping | None = None,
    at: datetime = T0,
    version: int = 1,
) -> tuple[LinkState, SpotlerContact]:
    """The link and Spotler contact after the row was created in Spotler."""
    plan = plan_push(
        push_input(
            attrs, entity=entity, record_id=record_id, kind=ChangeKind.CREATE, now=at, version=version, modified_on=at
        ),
        mapping or entity_mapping(entity),
        opts or options(),
    )
    assert plan.action is PushAction.CREATE, plan
    assert plan.contact is not None
    assert plan.link is not None
    return plan.link, apply_write(None, plan.contact, at)
