"""The pull decision: a three-way merge of a Spotler change into one linked Dataverse row."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta

from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import PullPlan, plan_pull
from sync_core.domain.plan import PushAction, PushOptions, plan_push
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import AttrValue, DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, SuppressionCause
from tests.unit.domain_builders import T0, apply_write, entity_mapping, hashed, options, person, push_input, synced

BASE = entity_mapping("contact")
MAPPING = EntityMapping.model_validate(
    {
        **BASE.model_dump(),
        "fields": [
            *(f.model_dump() for f in BASE.fields),
            {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"},
            {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4, "direction": "⬅"},
        ],
        "permissions": [
            {"bit": 1, "source": "not_donotbulkemail"},
            {"bit": 2, "dataverse": "new_events"},
        ],
    }
)
ATTRS = person(new_score=3, new_vip=False, new_events=True)
SOON = T0 + timedelta(hours=1)
LATER = T0 + timedelta(hours=2)


def state(attrs: Mapping[str, AttrValue] = ATTRS, opts: PushOptions | None = None) -> tuple[LinkState, SpotlerContact]:
    link, contact = synced(attrs, mapping=MAPPING, opts=opts)
    # The first pull of the created contact records Spotler's side of the ⬅ fields in the base.
    first = pull(contact, link, attrs, opts=opts)
    assert first.changes == {}
    return first.link, contact


def row(attrs: Mapping[str, AttrValue], modified: datetime = T0) -> DataverseRow:
    return DataverseRow("contact", "c-1", dict(attrs), etag='W/"7"', modified_on=modified)


def pull(
    contact: SpotlerContact,
    link: LinkState,
    attrs: Mapping[str, AttrValue] | None,
    *,
    opts: PushOptions | None = None,
    modified: datetime = T0,
) -> PullPlan:
    return plan_pull(
        contact, link, row(attrs, modified) if attrs is not None else None, MAPPING, opts or options(), LATER
    )


def spotler_edit(contact: SpotlerContact, when: datetime = SOON, **props: object) -> SpotlerContact:
    perms = props.pop("permissions", {})
    return apply_write(contact, SpotlerContact("c-1", dict(props), perms), when)  # type: ignore[arg-type]


def test_only_to_dynamics_and_two_way_fields_are_pulled() -> None:
    link, contact = state()
    edited = spotler_edit(contact, jobTitle="Spy", firstName="Augusta", score=9, flags={4: True})
    plan = pull(edited, link, ATTRS)
    assert plan.changes == {"firstname": "Augusta", "new_score": 9, "new_vip": True}
    assert plan.reason is ReasonCode.UPDATED
    assert plan.etag == 'W/"7"'
    assert plan.spotler_fix is None


def test_to_spotler_field_is_never_pulled() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, jobTitle="Spy", city="Paris", email="other@example.com"), link, ATTRS)
    assert plan.changes == {}


def test_only_fields_changed_against_the_base_are_pulled() -> None:
    link, contact = state()
    # Dynamics changed lastname (not pushed yet); Spotler changed firstName only.
    plan = pull(spotler_edit(contact, firstName="Augusta"), link, {**ATTRS, "lastname": "King"})
    assert plan.changes == {"firstname": "Augusta"}
    assert plan.conflicts == ()


def test_pull_records_the_new_base_so_a_repeat_writes_nothing() -> None:
    link, contact = state()
    edited = spotler_edit(contact, firstName="Augusta", score=9)
    plan = pull(edited, link, ATTRS)
    applied = {**ATTRS, **plan.changes}
    again = pull(edited, plan.link, applied)
    assert again.changes == {}
    assert again.spotler_fix is None
    assert plan.link.spotler_last_changed == SOON


def test_echo_of_our_own_push_writes_nothing() -> None:
    link, contact = state()
    edit = {**ATTRS, "firstname": "Ada A.", "jobtitle": "CTO", "donotbulkemail": True, "new_events": False}
    pushed = plan_push(push_input(edit, link=link, spotler=contact, changed=set(edit)), MAPPING, options())
    assert pushed.action is PushAction.UPDATE
    assert pushed.contact is not None
    assert pushed.link is not None
    echo = apply_write(contact, pushed.contact, SOON)
    plan = pull(echo, pushed.link, edit, modified=SOON)
    assert plan.changes == {}
    assert plan.spotler_fix is None
    assert plan.conflicts == ()


def test_echo_of_a_create_writes_nothing_even_when_purging() -> None:
    opts = options(purge_when_not_set=True)
    link, contact = synced(ATTRS, mapping=MAPPING, opts=opts)
    plan = pull(contact, link, ATTRS, opts=opts)
    assert plan.changes == {}  # the new contact has no score or flags yet: no news, nothing cleared
    assert plan.spotler_fix is None


def test_conflict_dynamics_wins_by_default() -> None:
    link, contact = state()
    edited = spotler_edit(contact, LATER, firstName="Augusta")
    plan = pull(edited, link, {**ATTRS, "firstname": "Ada A."}, modified=SOON)
    assert "firstname" not in plan.changes
    assert plan.conflicts == ("firstName",)
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.properties == {"firstName": "Ada A."}
    assert plan.link.base["firstName"] != link.base["firstName"]


def test_conflict_most_recent_spotler_wins_when_newer() -> None:
    opts = options(conflict_winner="most_recent")
    link, contact = state(opts=opts)
    edited = spotler_edit(contact, LATER, firstName="Augusta")
    plan = pull(edited, link, {**ATTRS, "firstname": "Ada A."}, opts=opts, modified=SOON)
    assert plan.changes == {"firstname": "Augusta"}
    assert plan.conflicts == ("firstName",)
    assert plan.reason is ReasonCode.CONFLICT_RESOLVED
    assert plan.spotler_fix is None


def test_conflict_most_recent_dynamics_wins_when_newer() -> None:
    opts = options(conflict_winner="most_recent")
    link, contact = state(opts=opts)
    edited = spotler_edit(contact, SOON, firstName="Augusta")
    plan = pull(edited, link, {**ATTRS, "firstname": "Ada A."}, opts=opts, modified=LATER)
    assert "firstname" not in plan.changes
    assert plan.conflicts == ("firstName",)
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.properties == {"firstName": "Ada A."}


def test_to_dynamics_field_has_no_conflict_spotler_owns_it() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, score=9), link, {**ATTRS, "new_score": 5})
    assert plan.changes == {"new_score": 9}
    assert plan.conflicts == ()


def test_permission_change_flows_to_the_mapped_column() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, permissions={2: False}), link, ATTRS)
    assert plan.changes == {"new_events": False}
    plan = pull(spotler_edit(contact, permissions={1: False}), link, ATTRS)
    assert plan.changes == {"donotbulkemail": True}


def test_permission_subscribe_in_spotler_clears_do_not_bulk_email() -> None:
    attrs = {**ATTRS, "donotbulkemail": True, "new_events": False}
    link, contact = state(attrs)
    assert contact.permissions == {1: False, 2: False}
    plan = pull(spotler_edit(contact, permissions={1: True}), link, attrs)
    assert plan.changes == {"donotbulkemail": False}


def test_dynamics_withdrawing_consent_is_left_to_the_push() -> None:
    link, contact = state()
    # Dynamics turned Do Not Bulk Email on (not pushed yet); Spotler still shows the base: it has no news.
    plan = pull(spotler_edit(contact, jobTitle="Spy"), link, {**ATTRS, "donotbulkemail": True})
    assert plan.changes == {}
    assert plan.spotler_fix is None
    pushed = plan_push(
        push_input({**ATTRS, "donotbulkemail": True}, link=plan.link, spotler=contact), MAPPING, options()
    )
    assert pushed.contact is not None
    assert pushed.contact.permissions == {1: False, 2: False}


def test_spotler_global_opt_out_turns_permissions_off_and_leaves_a_tombstone() -> None:
    link, contact = state()
    opted_out = dataclasses.replace(contact, channels={"EMAIL": False}, last_changed=SOON)
    plan = pull(opted_out, link, ATTRS)
    assert plan.changes == {"donotbulkemail": True, "new_events": False}
    assert plan.suppress is not None
    assert plan.suppress.cause is SuppressionCause.OPTED_OUT
    assert plan.suppress.email_hash == hashed("ada@example.com")
    assert plan.suppress.record_id == "c-1"


def test_global_opt_out_tombstone_uses_the_row_when_the_link_has_no_hash() -> None:
    link, contact = state()
    opted_out = dataclasses.replace(contact, channels={"EMAIL": False}, last_changed=SOON)
    plan = pull(opted_out, dataclasses.replace(link, email_hash=None), ATTRS)
    assert plan.suppress is not None
    assert plan.suppress.email_hash == hashed("ada@example.com")


def test_anonymized_link_pulls_nothing() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, firstName="Augusta"), dataclasses.replace(link, anonymized=True), ATTRS)
    assert plan.skipped
    assert plan.changes == {}
    assert plan.spotler_fix is None


def test_missing_row_pulls_nothing() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, firstName="Augusta"), link, None)
    assert plan.skipped
    assert plan.changes == {}


def test_older_spotler_change_is_ignored() -> None:
    link, contact = state()
    newer = pull(spotler_edit(contact, LATER, firstName="Augusta"), link, ATTRS)
    older = pull(spotler_edit(contact, SOON, firstName="Augustine"), newer.link, {**ATTRS, **newer.changes})
    assert older.skipped
    assert older.changes == {}
    assert older.link == newer.link


def test_spotler_blank_keeps_the_dynamics_value_by_default() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, firstName=None, score=None), link, ATTRS)
    assert plan.changes == {}


def test_purge_setting_does_not_let_a_spotler_blank_clear_dynamics() -> None:
    opts = options(purge_when_not_set=True)
    link, contact = state(opts=opts)
    edited = spotler_edit(contact, score=9)
    link = pull(edited, link, ATTRS, opts=opts).link
    plan = pull(spotler_edit(edited, LATER, firstName=None, score=None), link, {**ATTRS, "new_score": 9}, opts=opts)
    assert plan.changes == {}  # PurgeExistingPropertiesWhenNotSet governs Dynamics -> Spotler only


def test_spotler_blank_clears_dynamics_where_the_fields_blank_policy_says_clear() -> None:
    fields = [
        {**f.model_dump(), "blank": "clear"} if f.dataverse == "new_score" else f.model_dump() for f in MAPPING.fields
    ]
    mapping = MAPPING.model_copy(update={"fields": [type(MAPPING.fields[0]).model_validate(f) for f in fields]})
    link, contact = synced(ATTRS, mapping=mapping)
    edited = spotler_edit(contact, score=9)
    link = plan_pull(edited, link, row(ATTRS, SOON), mapping, options(), LATER).link
    blanked = spotler_edit(edited, LATER, firstName=None, score=None)
    plan = plan_pull(blanked, link, row({**ATTRS, "new_score": 9}, SOON), mapping, options(), LATER)
    assert plan.changes == {"new_score": None}  # firstname keeps its value: its policy is the default (keep)


def test_unconvertible_spotler_value_is_noted_not_written() -> None:
    link, contact = state()
    plan = pull(spotler_edit(contact, score="many", firstName="Augusta"), link, ATTRS)
    assert plan.changes == {"firstname": "Augusta"}
    assert any(c.startswith("score:") for c in plan.conflicts)
    assert plan.reason is ReasonCode.UPDATED


def test_nothing_new_keeps_the_link_reason() -> None:
    link, contact = state()
    plan = pull(contact, link, ATTRS)
    assert plan.changes == {}
    assert plan.reason is link.reason
