"""The three-way merge of the pull, rule by rule, on links and contacts built by hand.

Each test states the base both sides last agreed on, what Spotler holds and what Dynamics holds, with a
mapping of its own; field order in the mapping matters where a rule must not stop the fields after it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sync_core.domain.convert import value_hash
from sync_core.domain.mapping import EntityMapping
from sync_core.domain.merge import PullPlan, plan_pull
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import DataverseRow, SpotlerContact
from sync_core.domain.state_model import LinkState, SuppressionCause
from tests.unit.domain_builders import KEY, T0, hashed, options

SOON = T0 + timedelta(hours=1)
LATER = T0 + timedelta(hours=2)
ADA = "ada@example.com"
EMAIL = {"dataverse": "emailaddress1", "spotler": "email", "type": "email", "direction": "to_spotler"}
FIRST = {"dataverse": "firstname", "spotler": "firstName", "direction": "both"}
LAST = {"dataverse": "lastname", "spotler": "lastName", "direction": "both"}
SCORE = {"dataverse": "new_score", "spotler": "score", "type": "int", "direction": "⬅"}
BIT1 = {"bit": 1, "source": "not_donotbulkemail", "direction": "both"}
BIT2 = {"bit": 2, "dataverse": "new_newsletter", "direction": "both"}


def mapping(*fields: dict[str, Any], permissions: tuple[dict[str, Any], ...] = ()) -> EntityMapping:
    return EntityMapping.model_validate({"fields": [*fields, EMAIL], "permissions": list(permissions)})


def h(value: Any) -> str:
    return value_hash(KEY, value)


def link(base: dict[str, str] | None = None, **kw: Any) -> LinkState:
    return LinkState("contact", "c-1", "c-1", email_hash=hashed(ADA), base=base or {}, **kw)


def row(modified: Any = T0, **attrs: Any) -> DataverseRow:
    values = {"emailaddress1": ADA, "donotbulkemail": False, **attrs}
    return DataverseRow("contact", "c-1", values, etag='W/"5"', modified_on=modified)


def contact(props: dict[str, Any] | None = None, perms: dict[int, bool] | None = None, **kw: Any) -> SpotlerContact:
    kw.setdefault("last_changed", SOON)
    kw.setdefault("channels", {"EMAIL": True})
    return SpotlerContact("c-1", {"email": ADA, **(props or {})}, perms or {}, **kw)


def pull(m: EntityMapping, c: SpotlerContact, ln: LinkState, r: DataverseRow | None, **opts: Any) -> PullPlan:
    return plan_pull(c, ln, r, m, options(**opts), LATER)


# --- skipped contacts ------------------------------------------------------------------------------------------------


def test_missing_row_and_anonymized_link_are_skipped_with_their_reason() -> None:
    m = mapping(FIRST)
    gone = pull(m, contact({"firstName": "B"}), link({"firstName": h("A")}, reason=ReasonCode.UPDATED), None)
    assert (gone.skipped, gone.detail, gone.reason, gone.changes) == (
        True,
        "record no longer exists",
        ReasonCode.UPDATED,
        {},
    )
    anonymized = link({}, anonymized=True)
    plan = pull(m, contact({"firstName": "B"}), anonymized, row(firstname="A"))
    assert (plan.skipped, plan.detail, plan.reason) == (
        True,
        "anonymized; Spotler changes are not pulled",
        ReasonCode.SYNCED,
    )
    assert plan.link is anonymized


def test_older_spotler_change_is_skipped_but_one_at_the_same_moment_is_applied() -> None:
    m = mapping(FIRST)
    seen = link({"firstName": h("A")}, spotler_last_changed=SOON, reason=ReasonCode.CREATED)
    older = pull(m, contact({"firstName": "B"}, last_changed=T0), seen, row(firstname="A"))
    assert (older.skipped, older.detail, older.reason, older.link) == (
        True,
        "older Spotler change ignored",
        ReasonCode.CREATED,
        seen,
    )
    same = pull(m, contact({"firstName": "B"}, last_changed=SOON), seen, row(firstname="A"))
    assert not same.skipped
    assert same.changes == {"firstname": "B"}
    plain = link({"firstName": h("A")}, spotler_last_changed=SOON)
    assert pull(m, contact({"firstName": "B"}, last_changed=T0), plain, row(firstname="A")).reason is ReasonCode.SYNCED


# --- fields ----------------------------------------------------------------------------------------------------------


def test_pulled_change_is_described_and_remembered() -> None:
    m = mapping(FIRST, LAST)
    base = {"firstName": h("A"), "lastName": h("L")}
    plan = pull(m, contact({"firstName": "B", "lastName": "M"}), link(base), row(firstname="A", lastname="L"))
    assert plan.changes == {"firstname": "B", "lastname": "M"}
    assert (plan.reason, plan.detail) == (ReasonCode.UPDATED, "updated in Dynamics from Spotler: firstname, lastname")
    assert plan.etag == 'W/"5"'
    assert plan.link.base == {"firstName": h("B"), "lastName": h("M")}
    assert (plan.link.reason, plan.link.detail, plan.link.last_attempt) == (plan.reason, plan.detail, LATER)
    assert (plan.link.email_hash, plan.link.spotler_last_changed) == (hashed(ADA), SOON)


def test_nothing_new_keeps_the_link_reason_and_detail_or_says_in_sync() -> None:
    m = mapping(FIRST)
    kept = pull(
        m,
        contact({"firstName": "A"}),
        link({"firstName": h("A")}, reason=ReasonCode.CREATED, detail="x"),
        row(firstname="A"),
    )
    assert (kept.reason, kept.detail) == (ReasonCode.CREATED, "x")
    fresh = pull(m, contact({"firstName": "A"}), link({"firstName": h("A")}), row(firstname="A"))
    assert (fresh.reason, fresh.detail) == (ReasonCode.SYNCED, "already in sync")
    assert (fresh.link.reason, fresh.link.detail) == (ReasonCode.SYNCED, "already in sync")


def test_a_new_address_in_dynamics_becomes_the_links_address() -> None:
    plan = pull(
        mapping(FIRST), contact({"firstName": "A"}), link({"firstName": h("A")}), row(emailaddress1="n@example.org")
    )
    assert plan.link.email_hash == hashed("n@example.org")


def test_both_sides_reaching_the_same_value_becomes_the_new_base() -> None:
    plan = pull(mapping(FIRST), contact({"firstName": "B"}), link({"firstName": h("A")}), row(firstname="B"))
    assert plan.changes == {}
    assert plan.link.base == {"firstName": h("B")}


def test_conflict_names_every_field_and_dynamics_wins_without_stopping_other_fields() -> None:
    m = mapping(FIRST, LAST, SCORE)
    base = {"firstName": h("A"), "lastName": h("L"), "score": h(1)}
    plan = pull(
        m,
        contact({"firstName": "B", "lastName": "M", "score": 2}),
        link(base),
        row(firstname="C", lastname="N", new_score=1),
    )
    assert plan.conflicts == ("firstName", "lastName")
    assert (plan.reason, plan.detail) == (ReasonCode.CONFLICT_RESOLVED, "both sides changed firstName, lastName")
    assert plan.changes == {"new_score": 2}
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.properties == {"firstName": "C", "lastName": "N"}
    assert plan.link.base == {"firstName": h("C"), "lastName": h("N"), "score": h(2)}


def test_most_recent_winner_needs_spotler_strictly_newer() -> None:
    m = mapping(FIRST)
    base = {"firstName": h("A")}
    tie = pull(
        m,
        contact({"firstName": "B"}, last_changed=SOON),
        link(base),
        row(SOON, firstname="C"),
        conflict_winner="most_recent",
    )
    assert tie.changes == {}
    assert tie.spotler_fix is not None
    newer = pull(
        m,
        contact({"firstName": "B"}, last_changed=SOON),
        link(base),
        row(T0, firstname="C"),
        conflict_winner="most_recent",
    )
    assert newer.changes == {"firstname": "B"}
    assert newer.spotler_fix is None


def test_unconvertible_values_are_noted_and_do_not_stop_the_other_fields() -> None:
    choice = {"dataverse": "new_kind", "spotler": "kind", "type": "choice", "choices": {1: "Retail"}, "direction": "⬅"}
    m = mapping(SCORE, choice, FIRST)
    base = {"score": h(1), "kind": h("Retail"), "firstName": h("A")}
    plan = pull(
        m,
        contact({"score": "lots", "kind": "Wholesale", "firstName": "B"}),
        link(base),
        row(new_score=1, new_kind=1, firstname="A"),
    )
    assert plan.changes == {"firstname": "B"}
    assert plan.conflicts == (
        "score: value cannot be converted; not pulled",
        "kind: value cannot be converted; not pulled",
    )
    assert plan.reason is ReasonCode.UPDATED


def test_a_field_spotler_never_held_does_not_stop_the_fields_after_it() -> None:
    m = mapping(SCORE, FIRST)
    plan = pull(m, contact({"firstName": "B"}), link({"firstName": h("A")}), row(new_score=4, firstname="A"))
    assert plan.changes == {"firstname": "B"}


def test_blank_in_spotler_follows_the_field_policy_over_the_setting() -> None:
    cleared = {**SCORE, "blank": "clear"}
    kept = {**FIRST, "blank": "keep"}
    m = mapping(kept, cleared, LAST)
    base = {"firstName": h("A"), "score": h(3), "lastName": h("L")}
    plan = pull(m, contact({"lastName": "M"}), link(base), row(firstname="A", new_score=3, lastname="L"))
    assert plan.changes == {"new_score": None, "lastname": "M"}
    purged = pull(
        m,
        contact({"lastName": "M"}),
        link(base),
        row(firstname="A", new_score=3, lastname="L"),
        purge_when_not_set=True,
    )
    assert purged.changes == {"new_score": None, "lastname": "M"}
    plain = mapping(SCORE, LAST)
    assert pull(plain, contact({"lastName": "M"}), link(base), row(new_score=3, lastname="L")).changes == {
        "lastname": "M"
    }


def test_set_fields_count_as_held_only_when_spotler_carries_a_mapped_bit() -> None:
    flag = {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4, "direction": "⬅"}
    topics = {
        "dataverse": "new_topics",
        "spotler": "topics",
        "type": "multichoice",
        "bits": {10: 1, 20: 2},
        "direction": "⬅",
    }
    m = mapping(flag, topics, FIRST)
    other_bits = pull(
        m,
        contact({"flags": {5: True}, "topics": {9: True}, "firstName": "B"}),
        link({"firstName": h("A")}),
        row(new_vip=False, new_topics=[], firstname="A"),
    )
    assert other_bits.changes == {"firstname": "B"}
    held = pull(m, contact({"flags": {4: True}, "topics": {2: True}}), link({}), row(new_vip=False, new_topics=[]))
    assert held.changes == {"new_vip": True, "new_topics": [20]}
    not_a_set = pull(m, contact({"flags": "yes"}), link({}), row(new_vip=False, new_topics=[]))
    assert not_a_set.changes == {}


# --- permissions -----------------------------------------------------------------------------------------------------


def perm_base(plan: PullPlan) -> dict[str, str]:
    return {k: v for k, v in plan.link.base.items() if k.startswith("permission:")}


def test_permission_news_flows_to_its_column_and_becomes_the_base() -> None:
    m = mapping(FIRST, permissions=(BIT1, BIT2))
    base = {"permission:1": h(True), "permission:2": h(False)}
    plan = pull(m, contact(perms={1: False, 2: True}), link(base), row(new_newsletter=False))
    assert plan.changes == {"donotbulkemail": True, "new_newsletter": True}
    assert perm_base(plan) == {"permission:1": h(False), "permission:2": h(True)}


def test_a_bit_spotler_no_longer_lists_reads_as_off() -> None:
    m = mapping(FIRST, permissions=(BIT2,))
    plan = pull(m, contact(perms={}), link({"permission:2": h(True)}), row(new_newsletter=True))
    assert plan.changes == {"new_newsletter": False}


def test_permissions_spotler_never_listed_do_not_stop_the_ones_after_it() -> None:
    push_only = {"bit": 3, "dataverse": "new_offers", "direction": "➡"}
    m = mapping(FIRST, permissions=(push_only, BIT2, BIT1))
    plan = pull(
        m,
        contact(perms={1: False, 3: True}),
        link({"permission:1": h(True)}),
        row(new_newsletter=False, new_offers=False),
    )
    assert plan.changes == {"donotbulkemail": True}


def test_never_agreed_permission_spotler_lists_is_news_when_it_differs() -> None:
    m = mapping(FIRST, permissions=(BIT2,))
    plan = pull(m, contact(perms={2: True}), link({}), row(new_newsletter=False))
    assert plan.changes == {"new_newsletter": True}
    same = pull(m, contact(perms={2: False}), link({}), row(new_newsletter=False))
    assert same.changes == {}
    assert perm_base(same) == {"permission:2": h(False)}


def test_do_not_bulk_email_with_no_agreed_base_is_a_withdrawal_spotler_does_not_overrule() -> None:
    # A record that joined a subscribed contact (or moved onto it) and says Do Not Bulk Email: no base says which
    # side is newer, so the explicit no stands and Spotler is corrected, instead of the pull unticking it.
    m = mapping(FIRST, permissions=(BIT1,))
    plan = pull(m, contact(perms={1: True}), link({}), row(donotbulkemail=True))
    assert plan.changes == {}
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.permissions == {1: False}
    assert perm_base(plan) == {"permission:1": h(False)}


def test_both_sides_withdrawing_becomes_the_new_base() -> None:
    m = mapping(FIRST, permissions=(BIT1,))
    plan = pull(m, contact(perms={1: False}), link({"permission:1": h(True)}), row(donotbulkemail=True))
    assert plan.changes == {}
    assert perm_base(plan) == {"permission:1": h(False)}


def test_withdrawal_conflict_records_an_unsubscribed_base() -> None:
    m = mapping(FIRST, permissions=(BIT1,))
    plan = pull(m, contact(perms={1: True}), link({"permission:1": "f" * 32}), row(donotbulkemail=True))
    assert plan.spotler_fix is not None
    assert plan.spotler_fix.permissions == {1: False}
    assert perm_base(plan) == {"permission:1": h(False)}
    assert plan.conflicts == ("permission 1",)


def test_global_opt_out_turns_never_agreed_permissions_off_and_tombstones() -> None:
    m = mapping(FIRST, permissions=(BIT1, BIT2))
    plan = pull(m, contact(channels={"EMAIL": False}), link({}), row(new_newsletter=True))
    assert plan.changes == {"donotbulkemail": True, "new_newsletter": False}
    assert plan.suppress is not None
    assert (plan.suppress.cause, plan.suppress.email_hash, plan.suppress.created_on) == (
        SuppressionCause.OPTED_OUT,
        hashed(ADA),
        LATER,
    )


def test_a_dynamics_value_that_cannot_be_compared_is_noted_and_does_not_stop_the_fields_after_it() -> None:
    m = mapping(SCORE, FIRST)
    base = {"score": h(1), "firstName": h("A")}
    plan = pull(m, contact({"score": 2, "firstName": "B"}), link(base), row(new_score="lots", firstname="A"))
    assert plan.changes == {"firstname": "B"}
    assert plan.conflicts == ("score: value cannot be converted; not pulled",)


def test_a_set_field_spotler_holds_as_something_else_is_no_news() -> None:
    flag = {"dataverse": "new_vip", "spotler": "flags", "type": "boolean", "bit": 4, "direction": "⬅"}
    m = mapping(flag)
    for held in ("yes", None, 4):
        plan = pull(m, contact({"flags": held}), link({}), row(new_vip=True))
        assert plan.changes == {}, held
