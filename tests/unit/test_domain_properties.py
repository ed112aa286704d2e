"""Properties of the domain, checked on generated histories against a small pure model of both systems.

The model of Spotler's writes: an insert or update with purge=false replaces the given properties (a blank
clears one), merges the bits of set properties and of permissions, and leaves everything else alone; an
anonymization blanks the data and the permissions but keeps the externalId. Link rows, tombstones and the
Dataverse row are saved as the push and pull services would save them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from sync_core.domain.consent import email_hash, normalize_email
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import PullPlan, plan_pull
from sync_core.domain.plan import PushAction, PushInput, PushOptions, PushPlan, plan_push
from sync_core.domain.records import AttrValue, ChangeKind, DataverseRow, EntityName, PropValue, SpotlerContact
from sync_core.domain.state_model import LinkState, Suppression

KEY = b"property-test-hash-key-012345678"
START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RECORD = "r-1"

EMAIL_FIELD = {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "➡"}
RICH = EntityMapping.model_validate(
    {
        "fields": [
            EMAIL_FIELD,
            {"dataverse": "firstname", "spotler": "firstName", "direction": "🔁"},
            {"dataverse": "lastname", "spotler": "lastName", "direction": "🔁", "blank": "clear"},
            {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "➡"},
            {"dataverse": "birthdate", "spotler": "birthday", "type": "birthdate", "direction": "🔁"},
            {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"},
            {"dataverse": "new_budget", "spotler": "budget", "type": "money", "direction": "➡"},
            {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 1, "direction": "➡"},
            {"dataverse": "new_partner", "spotler": "flags", "type": "boolean", "bit": 2, "direction": "⬅"},
            {
                "dataverse": "gendercode",
                "spotler": "gender",
                "type": "choice",
                "choices": {1: "Male", 2: "Female"},
                "direction": "🔁",
            },
            {"dataverse": "new_segment", "spotler": "segment", "type": "choice", "bits": {10: 1, 20: 2}},
            {
                "dataverse": "new_topics",
                "spotler": "topics",
                "type": "multichoice",
                "bits": {100: 1, 200: 2, 300: 3},
                "direction": "🔁",
            },
            {"dataverse": "new_source", "spotler": "source", "create_only": True},
        ],
        "permissions": [
            {"bit": 1, "source": "not_donotbulkemail"},
            {"bit": 2, "dataverse": "new_events"},
        ],
    }
)
SINGLE_OWNER = EntityMapping.model_validate(
    {
        "fields": [
            EMAIL_FIELD,
            {"dataverse": "firstname", "spotler": "firstName", "direction": "➡"},
            {"dataverse": "lastname", "spotler": "lastName", "direction": "⬅"},
            {"dataverse": "jobtitle", "spotler": "jobTitle", "direction": "➡", "blank": "clear"},
            {"dataverse": "birthdate", "spotler": "birthday", "type": "birthdate", "direction": "⬅"},
            {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅", "blank": "clear"},
            {"dataverse": "new_budget", "spotler": "budget", "type": "money", "direction": "➡"},
            {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 1, "direction": "➡"},
            {"dataverse": "new_partner", "spotler": "flags", "type": "boolean", "bit": 2, "direction": "⬅"},
            {"dataverse": "new_topics", "spotler": "topics", "type": "multichoice", "bits": {100: 1, 200: 2}},
        ],
        "permissions": [{"bit": 1, "source": "not_donotbulkemail", "direction": "➡"}],
    }
)


# --- the model of both systems --------------------------------------------------------------------------------------


@dataclass
class World:
    """Dataverse's row, Spotler's contacts, and the connector's state, at one moment."""

    entity: EntityName = "contact"
    row: dict[str, AttrValue] | None = None
    version: int = 0
    modified: datetime = START
    contacts: dict[str, SpotlerContact] = field(default_factory=dict)
    link: LinkState | None = None
    suppressions: dict[str, Suppression] = field(default_factory=dict)

    def copy(self) -> World:
        return dataclasses.replace(
            self,
            row=dict(self.row) if self.row is not None else None,
            contacts=dict(self.contacts),
            suppressions=dict(self.suppressions),
        )


@dataclass(frozen=True)
class Event:
    kind: ChangeKind
    changed: frozenset[str]
    version: int
    modified: datetime


def spotler_write(
    current: SpotlerContact | None, write: SpotlerContact, when: datetime, *, purge: bool = False
) -> SpotlerContact:
    """Spotler's write: with `purge` the contact holds only what was sent, else sent values replace and merge."""
    kept = current if current is not None and not purge else None
    props: dict[str, PropValue] = dict(kept.properties) if kept is not None else {}
    for name, value in write.properties.items():
        if isinstance(value, dict):
            old = props.get(name)
            props[name] = {**(old if isinstance(old, dict) else {}), **value}
        elif value is None or (isinstance(value, str) and not value.strip()):
            props.pop(name, None)
        else:
            props[name] = value
    perms = {**(kept.permissions if kept is not None else {}), **write.permissions}
    base = current or SpotlerContact(write.external_id, created=when, channels={"EMAIL": True})
    return dataclasses.replace(base, properties=props, permissions=perms, last_changed=when)


def spotler_anonymize(current: SpotlerContact, when: datetime) -> SpotlerContact:
    return dataclasses.replace(current, properties={}, permissions={}, last_changed=when)


def push_input(world: World, event: Event, now: datetime) -> PushInput:
    """What the push service gathers before planning (the same look-ups, in the same order)."""
    attrs = None if event.kind is ChangeKind.DELETE else world.row
    link = world.link
    external_id = link.external_id if link is not None else RECORD
    spotler = world.contacts.get(external_id)
    mapping = RICH if world.entity != "single" else SINGLE_OWNER
    email = normalize_email(attrs.get(mapping.email_attribute)) if attrs is not None else None
    email_match = None
    if link is None and spotler is None and email is not None:
        matches = [c for c in world.contacts.values() if c.email and c.email.casefold() == email.casefold()]
        email_match = min(matches, key=lambda c: c.external_id) if matches else None
    suppression = world.suppressions.get(email_hash(KEY, email)) if email else None
    return PushInput(
        entity=world.entity if world.entity != "single" else "contact",  # type: ignore[arg-type]
        record_id=RECORD,
        kind=event.kind,
        attributes=attrs,
        now=now,
        changed=event.changed,
        modified_on=event.modified,
        version=event.version,
        link=link,
        spotler=spotler,
        email_match=email_match,
        suppression=suppression,
    )


def apply_push(world: World, plan: PushPlan, when: datetime) -> World:
    out = world.copy()
    target = plan.external_id
    if plan.action in (PushAction.CREATE, PushAction.UPDATE, PushAction.UNSUBSCRIBE):
        assert plan.contact is not None
        out.contacts[plan.contact.external_id] = spotler_write(
            out.contacts.get(plan.contact.external_id), plan.contact, when, purge=plan.purge
        )
    elif plan.action is PushAction.ANONYMIZE and target is not None and target in out.contacts:
        out.contacts[target] = spotler_anonymize(out.contacts[target], when)
    if plan.suppress is not None:
        out.suppressions[plan.suppress.email_hash] = plan.suppress
    if plan.lift_suppression is not None:
        out.suppressions.pop(plan.lift_suppression, None)
    if plan.link is not None:
        out.link = plan.link
    return out


def apply_pull(world: World, plan: PullPlan, when: datetime) -> World:
    out = world.copy()
    if plan.changes and out.row is not None:
        out.row.update(plan.changes)
        out.version += 1
        out.modified = when
    if plan.spotler_fix is not None:
        ext = plan.spotler_fix.external_id
        out.contacts[ext] = spotler_write(out.contacts.get(ext), plan.spotler_fix, when)
    if plan.suppress is not None:
        out.suppressions[plan.suppress.email_hash] = plan.suppress
    out.link = plan.link
    return out


def mapping_of(world: World) -> EntityMapping:
    return SINGLE_OWNER if world.entity == "single" else RICH


def push(world: World, event: Event, options: PushOptions, now: datetime) -> tuple[World, PushPlan]:
    plan = plan_push(push_input(world, event, now), mapping_of(world), options)
    return apply_push(world, plan, now), plan


def pull(world: World, options: PushOptions, now: datetime) -> tuple[World, PullPlan | None]:
    link = world.link
    if link is None or link.external_id not in world.contacts:
        return world, None
    entity: EntityName = "contact" if world.entity == "single" else world.entity
    row = (
        DataverseRow(entity, RECORD, dict(world.row), version=world.version, modified_on=world.modified)
        if world.row is not None
        else None
    )
    plan = plan_pull(world.contacts[link.external_id], link, row, mapping_of(world), options, now)
    return apply_pull(world, plan, now), plan


def dynamics_edit(world: World, attrs: Mapping[str, AttrValue], when: datetime) -> tuple[World, Event]:
    """Save the row in Dynamics; the event carries the columns that changed, as a webhook does."""
    out = world.copy()
    creating = out.row is None
    before = out.row or {}
    out.row = dict(attrs)
    out.version += 1
    out.modified = when
    changed = frozenset(attrs) if creating else frozenset(k for k in attrs if before.get(k) != attrs[k])
    kind = ChangeKind.CREATE if creating else ChangeKind.UPDATE
    if not creating and changed <= {"statecode", "statuscode"}:
        kind = ChangeKind.SET_STATE
    return out, Event(kind, changed, out.version, when)


def dynamics_delete(world: World, when: datetime) -> tuple[World, Event]:
    out = world.copy()
    out.row = None
    out.version += 1
    return out, Event(ChangeKind.DELETE, frozenset(), out.version, when)


def spotler_edit(world: World, props: Mapping[str, PropValue], perms: Mapping[int, bool], when: datetime) -> World:
    out = world.copy()
    ext = out.link.external_id if out.link is not None else RECORD
    if ext in out.contacts:
        out.contacts[ext] = spotler_write(out.contacts[ext], SpotlerContact(ext, dict(props), dict(perms)), when)
    return out


# --- generated data -------------------------------------------------------------------------------------------------

names = st.sampled_from(["Ada", "Bob", "Zoë", "  Ada ", "", None])
emails = st.sampled_from(["ada@example.com", "ADA@Example.com", "bob@example.org", "not-an-address", None])
valid_emails = st.sampled_from(["ada@example.com", "ADA@Example.com", "bob@example.org"])
dates = st.sampled_from([None, "1990-01-02", "1985-12-31T00:00:00Z", "2000-02-29"])
scores = st.one_of(st.none(), st.integers(-5, 500))
money = st.sampled_from([None, 0, 5, 12.345, 99.999, 1_000_000.5])
topics = st.lists(st.sampled_from([100, 200, 300]), unique=True, max_size=3)


def mostly(value: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`value` nine times in ten, else one of `others`."""
    return st.sampled_from([value] * 9 + list(others))


COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "emailaddress1": st.one_of(valid_emails, valid_emails, valid_emails, emails),
    "firstname": names,
    "lastname": names,
    "jobtitle": names,
    "birthdate": dates,
    "new_score": scores,
    "new_budget": money,
    "new_vip": st.booleans(),
    "new_partner": st.booleans(),
    "gendercode": st.sampled_from([None, 1, 2]),
    "new_segment": st.sampled_from([None, 10, 20, 30]),
    "new_topics": topics,
    "new_source": names,
    "new_events": st.booleans(),
    "statecode": mostly(0, 1, 2),
    "donotemail": mostly(False, True),
    "donotbulkemail": mostly(False, True),
}


@st.composite
def rich_rows(draw: st.DrawFn, *, eligible: bool = False) -> dict[str, AttrValue]:
    row = {column: draw(strategy) for column, strategy in COLUMNS.items()}
    if eligible:
        row.update(emailaddress1=draw(valid_emails), statecode=0, donotemail=False)
    return row


# A save in Dynamics: a few columns take new values.
row_edits = st.lists(st.sampled_from(sorted(COLUMNS)), unique=True, min_size=1, max_size=4).flatmap(
    lambda cols: st.fixed_dictionaries({c: COLUMNS[c] for c in cols})
)


@st.composite
def spotler_edits(draw: st.DrawFn) -> tuple[dict[str, PropValue], dict[int, bool]]:
    candidates: dict[str, st.SearchStrategy[Any]] = {
        "email": st.sampled_from(["ada@example.com", "other@example.net"]),
        "firstName": names,
        "lastName": names,
        "jobTitle": names,
        "birthday": dates,
        "score": scores,
        "budget": money,
        "flags": st.dictionaries(st.sampled_from([1, 2, 7]), st.booleans(), max_size=3),
        "gender": st.sampled_from([None, "Male", "female"]),
        "segment": st.dictionaries(st.sampled_from([1, 2]), st.booleans(), max_size=2),
        "topics": st.dictionaries(st.sampled_from([1, 2, 3]), st.booleans(), max_size=3),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(candidates)), unique=True, max_size=4))
    props = {name: draw(candidates[name]) for name in chosen}
    perms = draw(st.dictionaries(st.sampled_from([1, 2]), st.booleans(), max_size=2))
    return props, perms


push_options = st.builds(
    PushOptions,
    hash_key=st.just(KEY),
    anonymize_on_deactivate=st.booleans(),
    purge_when_not_set=st.booleans(),
    conflict_winner=st.sampled_from(["dynamics", "most_recent"]),
)

dynamics_step = st.tuples(st.just("dynamics"), row_edits)
spotler_step = st.tuples(st.just("spotler"), spotler_edits())
steps = st.lists(
    st.one_of(
        dynamics_step,
        dynamics_step,
        dynamics_step,
        spotler_step,
        spotler_step,
        st.tuples(st.just("pull"), st.none()),
        st.sampled_from([("pull", None)] * 4 + [("opt_out", None)]),
    ),
    max_size=6,
)


def run_history(
    world: World, history: list[tuple[str, Any]], options: PushOptions, clock: datetime
) -> tuple[World, list[Event], datetime]:
    """Play a history through the real plans; returns the world, the events delivered, and the clock."""
    events: list[Event] = []
    for kind, payload in history:
        clock += timedelta(minutes=1)
        if kind == "dynamics":
            world, event = dynamics_edit(world, {**(world.row or {}), **payload}, clock)
            events.append(event)
            world, _ = push(world, event, options, clock)
        elif kind == "spotler":
            world = spotler_edit(world, payload[0], payload[1], clock)
        elif kind == "opt_out" and world.link is not None and world.link.external_id in world.contacts:
            ext = world.link.external_id
            world.contacts[ext] = dataclasses.replace(
                world.contacts[ext], channels={"EMAIL": False}, last_changed=clock
            )
        else:
            world, _ = pull(world, options, clock)
    return world, events, clock


def note(plan: PushPlan) -> None:
    """Label the example for `--hypothesis-show-statistics`: which decisions the generated histories reach."""
    event(f"{plan.action.value}/{plan.reason.value}")
    if plan.conflicts:
        event("with conflicts")


# --- (a) a plan applied, then planned again, is a no-op -------------------------------------------------------------


@given(
    entity=st.sampled_from(["contact", "lead"]),
    first=rich_rows(),
    history=steps,
    final=st.one_of(
        dynamics_step,
        dynamics_step,
        dynamics_step,
        st.tuples(st.just("delete"), st.none()),
        st.tuples(st.just("redeliver"), st.integers(0, 10)),
        st.tuples(st.just("both_sides"), st.tuples(names, names, st.sampled_from(["firstname", "lastname"]))),
    ),
    options=push_options,
    other_contact=st.booleans(),
)
def test_applying_a_plan_twice_equals_applying_it_once(
    entity: EntityName,
    first: dict[str, AttrValue],
    history: list[tuple[str, Any]],
    final: tuple[str, Any],
    options: PushOptions,
    other_contact: bool,
) -> None:
    world = World(entity=entity)
    if other_contact:  # the person already exists in Spotler under another externalId
        world.contacts["sp-0"] = SpotlerContact(
            "sp-0", {"email": "ada@example.com", "firstName": "Old"}, {1: True}, channels={"EMAIL": True}
        )
    world, events, clock = run_history(world, [("dynamics", first), *history], options, START)
    clock += timedelta(minutes=1)
    kind, payload = final
    if kind == "dynamics":
        world, event = dynamics_edit(world, {**(world.row or {}), **payload}, clock)
    elif kind == "both_sides":  # Spotler and Dynamics both change one two-way field before the push
        in_spotler, in_dynamics, column = payload
        world = spotler_edit(world, {"firstName" if column == "firstname" else "lastName": in_spotler}, {}, clock)
        clock += timedelta(seconds=1)
        world, event = dynamics_edit(world, {**(world.row or {}), column: in_dynamics}, clock)
    elif kind == "delete":
        world, event = dynamics_delete(world, clock)
    else:
        event = events[payload % len(events)]  # a duplicate or late delivery of an earlier event

    once, plan = push(world, event, options, clock)
    note(plan)
    twice = apply_push(once, plan, clock)
    assert twice.contacts == once.contacts
    assert twice.link == once.link
    assert twice.suppressions.keys() == once.suppressions.keys()

    later = clock + timedelta(minutes=1)
    again, replan = push(once, event, options, later)
    assert replan.action is PushAction.NONE, (plan, replan)
    assert replan.contact is None
    assert again.contacts == once.contacts
    assert again.suppressions.keys() == once.suppressions.keys()
    if replan.link is not None and once.link is not None:
        assert replan.link.base == once.link.base
        assert replan.link.external_id == once.link.external_id
        assert replan.link.anonymized == once.link.anonymized


# --- (b) the echo of our own push writes nothing --------------------------------------------------------------------


@given(
    entity=st.sampled_from(["contact", "lead"]),
    first=rich_rows(),
    edits=st.lists(row_edits, max_size=3),
    options=push_options,
)
def test_pull_of_our_own_push_writes_nothing(
    entity: EntityName, first: dict[str, AttrValue], edits: list[dict[str, AttrValue]], options: PushOptions
) -> None:
    world, clock = World(entity=entity), START
    for attrs in [first, *edits]:
        clock += timedelta(minutes=1)
        world, event = dynamics_edit(world, {**(world.row or {}), **attrs}, clock)
        world, plan = push(world, event, options, clock)
        note(plan)
        pulled, pull_plan = pull(world, options, clock + timedelta(seconds=30))
        if pull_plan is None:
            continue
        assert pull_plan.changes == {}, (plan, pull_plan)
        assert pull_plan.spotler_fix is None, (plan, pull_plan)
        world = pulled


# --- (c) single-owner fields converge whatever the order of push and pull -------------------------------------------


@st.composite
def single_owner_rows(draw: st.DrawFn) -> dict[str, AttrValue]:
    row = draw(rich_rows(eligible=True))
    return {k: v for k, v in row.items() if k in SINGLE_OWNER.columns() or k == "new_topics"}


@given(
    start=single_owner_rows(),
    dynamics=single_owner_rows(),
    spotler=spotler_edits(),
    options=push_options,
    spotler_first=st.booleans(),
)
def test_single_owner_fields_end_the_same_in_either_order(
    start: dict[str, AttrValue],
    dynamics: dict[str, AttrValue],
    spotler: tuple[dict[str, PropValue], dict[int, bool]],
    options: PushOptions,
    spotler_first: bool,
) -> None:
    world, clock = World(entity="single"), START
    world, event = dynamics_edit(world, start, clock)
    world, plan = push(world, event, options, clock)
    assert plan.action is PushAction.CREATE
    world, _ = pull(world, options, clock + timedelta(seconds=1))

    # Both sides are edited before either change is processed.
    t_dv, t_sp = (clock + timedelta(minutes=2), clock + timedelta(minutes=1))
    if spotler_first:
        t_dv, t_sp = t_sp, t_dv
    world, dv_event = dynamics_edit(world, dynamics, t_dv)
    world = spotler_edit(world, spotler[0], spotler[1], t_sp)
    run_at = clock + timedelta(minutes=5)

    # Order A: the push, then the pull.
    a, _ = push(world, dv_event, options, run_at)
    a, _ = pull(a, options, run_at + timedelta(seconds=1))

    # Order B: the pull, then the push (of the row as the pull left it: its write is the newest event).
    b, pull_plan = pull(world, options, run_at)
    if pull_plan is not None and pull_plan.changes:
        b_event = Event(ChangeKind.UPDATE, frozenset(pull_plan.changes), b.version, b.modified)
        b, _ = push(b, dv_event, options, run_at + timedelta(seconds=1))  # the late webhook of the edit
        b, _ = push(b, b_event, options, run_at + timedelta(seconds=2))
    else:
        b, _ = push(b, dv_event, options, run_at + timedelta(seconds=1))

    assert a.row == b.row
    ext = RECORD
    assert a.contacts[ext].properties == b.contacts[ext].properties
    assert a.contacts[ext].permissions == b.contacts[ext].permissions
