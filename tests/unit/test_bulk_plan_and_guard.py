"""Run-level rules of bulk work (pure) and the live push's sliding-hour guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sync_core.domain.bulk_plan import (
    Impact,
    WorkRow,
    check_mass_change,
    chunk,
    follow_claim,
    is_mass_change,
    merged_hint,
    pack,
    reason_for_result,
    unpack,
)
from sync_core.domain.plan import PushAction, PushPlan
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import SpotlerContact
from sync_core.domain.state_model import LinkState
from sync_core.services.guard import InMemoryDecisionLog, MassChangeGuard


def impact(records: int, mass: int) -> Impact:
    out = Impact()
    for n in range(records):
        action, reason = ("anonymize", ReasonCode.ANONYMIZED) if n < mass else ("create", ReasonCode.CREATED)
        out.add("contact", f"id{n}", action, reason, mass=n < mass)
    return out


def test_guard_allows_within_both_limits() -> None:
    assert check_mass_change(impact(2000, 100), limit=100, share=0.05, allow=False).allowed


def test_guard_stops_above_the_count_limit_and_says_why() -> None:
    verdict = check_mass_change(impact(5000, 101), limit=100, share=0.05, allow=False)
    assert not verdict.allowed
    assert "MASS_CHANGE_LIMIT=100" in verdict.message
    assert "--allow-mass-changes" in verdict.message


def test_guard_stops_above_the_share_and_the_flag_lets_it_through() -> None:
    assert not check_mass_change(impact(100, 6), limit=100, share=0.05, allow=False).allowed
    assert check_mass_change(impact(100, 5), limit=100, share=0.05, allow=False).allowed
    allowed = check_mass_change(impact(100, 6), limit=100, share=0.05, allow=True)
    assert allowed.allowed
    assert "allowed by --allow-mass-changes" in allowed.message


def test_impact_adds_up_and_round_trips() -> None:
    a, b = impact(10, 2), impact(5, 1)
    total = Impact.total([a, b])
    assert total.records == 15
    assert total.mass_changes == 3
    assert total.by_action() == {"anonymize": 3, "create": 12}
    assert total.writes == 15
    assert len(total.examples["created"]) == 3
    assert Impact.from_json(total.to_json()).to_json() == total.to_json()


def test_unsubscribe_counts_as_a_mass_change_only_when_a_bit_goes_off() -> None:
    current = SpotlerContact("x", permissions={1: True})
    off = PushPlan(PushAction.UPDATE, ReasonCode.UPDATED, "", "x", SpotlerContact("x", permissions={1: False}))
    on = PushPlan(PushAction.UPDATE, ReasonCode.UPDATED, "", "x", SpotlerContact("x", permissions={1: True}))
    assert is_mass_change(off, current)
    assert not is_mass_change(on, current)
    assert not is_mass_change(off, None)
    assert is_mass_change(PushPlan(PushAction.ANONYMIZE, ReasonCode.ANONYMIZED, "", "x"), None)


def test_work_items_hold_at_most_100_rows_and_messages_round_trip() -> None:
    rows = [WorkRow(f"id{n}", {"emailaddress1": f"p{n}@example.org", "statecode": 0}, n) for n in range(250)]
    items = list(chunk(rows))
    assert [len(i) for i in items] == [100, 100, 50]
    message = pack({"t": "item", "rows": [r.to_json() for r in items[0]]})
    assert message.startswith("z:")
    assert [WorkRow.from_json(r) for r in unpack(message)["rows"]] == items[0]
    assert unpack(pack({"t": "advance"})) == {"t": "advance"}


def test_a_record_whose_address_is_taken_follows_the_owner() -> None:
    owner = LinkState("contact", "c1", "c1")
    plan = PushPlan(
        PushAction.CREATE,
        ReasonCode.CREATED,
        "created",
        "l1",
        SpotlerContact("l1"),
        LinkState("lead", "l1", "l1"),
    )
    followed = follow_claim(plan, owner, "lead", "l1")
    assert followed.action is PushAction.NONE
    assert followed.reason is ReasonCode.SYNCED
    assert followed.contact is None
    assert followed.link is not None
    assert followed.link.external_id == "c1"
    skip = PushPlan(PushAction.NONE, ReasonCode.NO_VALID_EMAIL, "")
    assert follow_claim(skip, owner, "lead", "l1") is skip


def test_result_codes_become_statuses() -> None:
    assert reason_for_result("CONTACT_OPTOUT") is ReasonCode.OPTED_OUT_IN_SPOTLER
    assert reason_for_result("PROPERTY_INVALID") is ReasonCode.PERMANENT_ERROR
    assert reason_for_result("SOMETHING_NEW") is ReasonCode.PERMANENT_ERROR
    assert merged_hint("Merged into an existing contact with the same e-mail")
    assert not merged_hint("")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_live_guard_pauses_above_the_limit_in_a_sliding_hour() -> None:
    clock = Clock()
    guard = MassChangeGuard(InMemoryDecisionLog(), clock, limit=3)
    assert [await guard.admit("contact", f"c{n}", "anonymize") for n in range(3)] == [True] * 3
    assert not await guard.admit("contact", "c3", "anonymize")
    assert await guard.admit("contact", "c0", "anonymize"), "a redelivery of an admitted decision"
    assert await guard.count() == 3
    clock.now += timedelta(minutes=59)
    assert not await guard.admit("lead", "l1", "unsubscribe")
    clock.now += timedelta(minutes=2)  # the first three left the window
    assert await guard.admit("lead", "l1", "unsubscribe")
    assert await guard.count() == 1


async def test_live_guard_with_limit_zero_pauses_everything() -> None:
    guard = MassChangeGuard(InMemoryDecisionLog(), Clock(), limit=0)
    assert not await guard.admit("account", "a1", "anonymize")
