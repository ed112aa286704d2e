"""`advance_delay`: how long a bulk phase waits before it counts its finished work items again."""

from __future__ import annotations

from sync_core.services.bulk import ADVANCE_MAX_SECONDS, advance_delay


def test_a_phase_with_nothing_finished_yet_looks_again_after_the_poll() -> None:
    assert advance_delay(0, 1000, 50.0, 1) == 1
    assert advance_delay(10, 1000, 0.0, 1) == 1


def test_the_next_look_comes_after_half_the_time_the_rest_is_expected_to_take() -> None:
    # 100 of 500 items in 40 s: 400 left at 2.5 items/s take 160 s; half of it, capped.
    assert advance_delay(100, 500, 40.0, 1) == ADVANCE_MAX_SECONDS
    # 490 of 500 in 98 s: 10 left take 2 s; look again after 1.
    assert advance_delay(490, 500, 98.0, 1) == 1
    # 450 of 500 in 90 s: 50 left take 10 s; look again after 5.
    assert advance_delay(450, 500, 90.0, 1) == 5


def test_the_delay_is_never_below_the_poll_nor_above_the_cap() -> None:
    for finished in range(1, 1000, 37):
        for elapsed in (0.5, 3.0, 60.0, 3600.0):
            delay = advance_delay(finished, 1000, elapsed, 2)
            assert 2 <= delay <= ADVANCE_MAX_SECONDS


def test_a_finished_count_at_or_past_the_expected_one_gets_the_poll() -> None:
    assert advance_delay(1000, 1000, 600.0, 1) == 1
    assert advance_delay(1200, 1000, 600.0, 1) == 1
