"""Where to read Spotler's updates feed next: a cursor that survives contacts changing while we page.

Spotler pages `/contact/updates/list` by offset (`after`) inside a `[fromDate, toDate)` window. Plain offset
paging loses changes: a contact read on page 1 that changes again moves out of the window (its `lastChanged`
passes `toDate`), every later contact moves one place up, and the contact at the page boundary is never read.
The cursor therefore moves `fromDate` up to the newest whole second already read and keeps only a small
offset for the contacts read inside that second. Only contacts changed within that one second can shift, and
the cursor checks for it: it asks for one contact early and expects the last one it read; when that one is
not there, it reads the second again from its start.

`fromDate` is sent with whole seconds (the documented format), so the cursor works whether the service
compares seconds or milliseconds. When a page is not ordered by `lastChanged` (the order is not documented),
the cursor falls back to offset paging for the rest of the run, which is what the service documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sync_core.domain.records import SpotlerContact

PagingMode = Literal["timestamp", "offset"]
MAX_PAGE_SIZE = 10_000
"""Spotler's largest `pageSize`."""


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Read the window `[start, end)` from offset `skip` on; `last_id` is the last contact read."""

    start: datetime
    skip: int = 0
    mode: PagingMode = "timestamp"
    last_id: str | None = None


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def is_ordered(contacts: Sequence[SpotlerContact]) -> bool:
    """True when every contact has a `lastChanged` and they come oldest first."""
    previous: datetime | None = None
    for contact in contacts:
        stamp = contact.last_changed
        if stamp is None or (previous is not None and stamp < previous):
            return False
        previous = stamp
    return True


def _checks_shift(cursor: FeedCursor) -> bool:
    return cursor.mode == "timestamp" and cursor.skip > 0 and cursor.last_id is not None


def page_request(cursor: FeedCursor, page_size: int) -> tuple[int, int]:
    """The `after` and `pageSize` to ask for.

    Inside a second the request starts one contact early, to check for shifts, and asks for one more.
    """
    if _checks_shift(cursor):
        return cursor.skip - 1, min(page_size + 1, MAX_PAGE_SIZE)
    return cursor.skip, page_size


def take_page(cursor: FeedCursor, contacts: Sequence[SpotlerContact]) -> tuple[list[SpotlerContact], FeedCursor]:
    """The contacts of a page read at `page_request(cursor, ...)` not read before, and the cursor after them.

    Inside a second the page starts with the last contact already read. When it is not there, a contact
    before it changed again and everything moved up: the cursor goes back to the start of the second
    (re-reading is harmless, the pull is idempotent) and no contact is returned for this page.
    """
    if _checks_shift(cursor):
        if not contacts or contacts[0].external_id != cursor.last_id:
            return [], FeedCursor(cursor.start, 0, cursor.mode)
        contacts = contacts[1:]
    return list(contacts), advance(cursor, contacts)


def advance(cursor: FeedCursor, contacts: Sequence[SpotlerContact]) -> FeedCursor:
    """The cursor after `contacts`, the new contacts of a page read at `cursor`, have been applied."""
    if not contacts:
        return cursor
    last_id = contacts[-1].external_id
    if cursor.mode == "offset" or not is_ordered(contacts):
        return FeedCursor(cursor.start, cursor.skip + len(contacts), "offset", last_id)
    newest = contacts[-1].last_changed
    assert newest is not None  # is_ordered checked it
    second = _second(newest)
    if second <= cursor.start:
        # The whole page lies within the cursor's second: step over it by offset.
        return FeedCursor(cursor.start, cursor.skip + len(contacts), "timestamp", last_id)
    in_second = sum(1 for c in contacts if c.last_changed is not None and _second(c.last_changed) == second)
    return FeedCursor(second, in_second, "timestamp", last_id)
