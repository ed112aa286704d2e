"""The updates-feed cursor: every change read once, and none lost while contacts change during the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sync_core.domain.feed import FeedCursor, PagingMode, advance, is_ordered, page_request, take_page
from sync_core.domain.records import SpotlerContact

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def contact(external_id: str, millis: int | None) -> SpotlerContact:
    changed = None if millis is None else T0 + timedelta(milliseconds=millis)
    return SpotlerContact(external_id=external_id, properties={}, last_changed=changed)


@dataclass
class Feed:
    """Spotler's documented feed: inclusive fromDate, exclusive toDate, offset paging, oldest change first."""

    changed: dict[str, int]  # externalId -> lastChanged, in ms after T0
    to_ms: int
    shuffled: bool = False
    reads: list[str] = field(default_factory=list)

    def page(self, cursor: FeedCursor, size: int, after: int | None = None) -> list[SpotlerContact]:
        start_ms = (cursor.start - T0) // timedelta(milliseconds=1)
        skip = cursor.skip if after is None else after
        window = sorted((ms, ext) for ext, ms in self.changed.items() if start_ms <= ms < self.to_ms)
        if self.shuffled:
            window.sort(key=lambda item: item[1][::-1])
        chosen = [contact(ext, ms) for ms, ext in window[skip : skip + size]]
        self.reads.extend(c.external_id for c in chosen)
        return chosen


def read_all(
    feed: Feed,
    size: int,
    start: datetime,
    between_pages: list[list[str]] | None = None,
    mode: PagingMode = "timestamp",
) -> list[str]:
    """Page through the feed as the pull does; returns the contacts handed over for applying."""
    cursor = FeedCursor(start, mode=mode)
    applied: list[str] = []
    pages = 0
    while True:
        after, asked = page_request(cursor, size)
        page = feed.page(cursor, asked, after)
        pages += 1
        if between_pages and pages <= len(between_pages):
            for ext in between_pages[pages - 1]:  # these contacts change again: they leave the window
                feed.changed[ext] = feed.to_ms + 1_000
        before = cursor
        fresh, cursor = take_page(cursor, page)
        applied.extend(c.external_id for c in fresh)
        restarted = cursor.start == before.start and cursor.skip < before.skip
        if not restarted and (len(page) < asked or not fresh):
            return applied
        assert pages < 10_000, "the cursor must always move on"


# Changes spread over a few seconds, many sharing a second and some sharing a millisecond.
stamps = st.lists(st.integers(min_value=0, max_value=4_000), min_size=0, max_size=60)


def feed_of(ms: list[int], **kw: object) -> Feed:
    return Feed({f"c{i:03d}": value for i, value in enumerate(ms)}, to_ms=10_000, **kw)  # type: ignore[arg-type]


@given(stamps, st.integers(min_value=1, max_value=7), st.integers(min_value=0, max_value=999))
def test_an_unchanging_feed_is_read_exactly_once(ms: list[int], size: int, start_ms: int) -> None:
    feed = feed_of([m + start_ms for m in ms])
    applied = read_all(feed, size, T0 + timedelta(milliseconds=start_ms))
    assert sorted(applied) == sorted(feed.changed)


@given(stamps, st.integers(min_value=1, max_value=7), st.data())
def test_contacts_changing_during_the_run_make_no_other_change_go_unread(
    ms: list[int], size: int, data: st.DataObject
) -> None:
    feed = feed_of(ms)
    ids = sorted(feed.changed)
    leaving = data.draw(st.lists(st.lists(st.sampled_from(ids), max_size=3) if ids else st.just([]), max_size=8))
    left = {ext for group in leaving for ext in group}
    applied = read_all(feed, size, T0, leaving)
    assert set(ids) - left <= set(applied)


def test_plain_offset_paging_would_lose_a_change_here() -> None:
    """The case the cursor exists for: c0 changes again after page 1, and offset paging skips c2."""
    feed = feed_of([1_000, 2_000, 3_000, 4_000])
    first = feed.page(FeedCursor(T0), 2)
    feed.changed["c000"] = feed.to_ms + 1
    offset_next = feed.page(FeedCursor(T0, skip=2, mode="offset"), 2)
    assert [c.external_id for c in offset_next] == ["c003"]
    cursor_next = feed.page(advance(FeedCursor(T0), first), 2)
    assert [c.external_id for c in cursor_next] == ["c002", "c003"]


def test_cursor_moves_to_the_newest_whole_second_and_counts_what_it_read_there() -> None:
    page = [contact("a", 100), contact("b", 1_200), contact("c", 1_700)]
    moved = advance(FeedCursor(T0), page)
    assert moved == FeedCursor(T0 + timedelta(seconds=1), 2, "timestamp", "c")


def test_a_page_within_one_second_steps_by_offset() -> None:
    start = T0 + timedelta(seconds=1)
    page = [contact("a", 1_000), contact("b", 1_000), contact("c", 1_999)]
    assert advance(FeedCursor(start, 4), page) == FeedCursor(start, 7, "timestamp", "c")


def test_an_unordered_page_falls_back_to_offset_paging_for_good() -> None:
    unordered = [contact("a", 2_000), contact("b", 1_000)]
    assert not is_ordered(unordered)
    moved = advance(FeedCursor(T0), unordered)
    assert moved == FeedCursor(T0, 2, "offset", "b")
    ordered = [contact("c", 3_000), contact("d", 4_000)]
    assert advance(moved, ordered) == FeedCursor(T0, 4, "offset", "d")
    assert page_request(moved, 5) == (2, 5)  # offset paging asks for no overlap


def test_a_contact_without_last_changed_means_offset_paging() -> None:
    assert advance(FeedCursor(T0), [contact("a", None)]) == FeedCursor(T0, 1, "offset", "a")


def test_an_empty_page_leaves_the_cursor() -> None:
    assert advance(FeedCursor(T0, 3), []) == FeedCursor(T0, 3)


@given(stamps, st.integers(min_value=1, max_value=7))
def test_offset_paging_reads_an_unordered_feed_exactly_once(ms: list[int], size: int) -> None:
    feed = feed_of(ms, shuffled=True)
    applied = read_all(feed, size, T0, mode="offset")
    assert sorted(applied) == sorted(feed.changed)


def test_a_contact_moving_inside_the_cursor_second_sends_the_cursor_back_to_the_start_of_that_second() -> None:
    feed = feed_of([0, 0, 0])
    first = feed.page(FeedCursor(T0), 1)
    fresh, cursor = take_page(FeedCursor(T0), first)
    assert [c.external_id for c in fresh] == ["c000"]
    assert (cursor.skip, cursor.last_id, page_request(cursor, 2)) == (1, "c000", (0, 3))
    feed.changed["c000"] = feed.to_ms + 1  # changed again: it leaves the window, c001 moves to offset 0
    fresh, cursor = take_page(cursor, feed.page(cursor, 3, 0))
    assert fresh == []
    assert cursor == FeedCursor(T0, 0, "timestamp", None)
    assert page_request(cursor, 2) == (0, 2)
    fresh, cursor = take_page(cursor, feed.page(cursor, 2, 0))
    assert [c.external_id for c in fresh] == ["c001", "c002"]
