"""Read models for operators: a record's Spotler status and the dead letters (never an e-mail address)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sync_core.domain.ports import StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import EntityName
from sync_core.domain.state_model import DeadLetter, LinkState, StatusEntry


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def current_outcome(link: LinkState | None, history: Sequence[StatusEntry]) -> tuple[ReasonCode | None, str]:
    """The record's latest outcome: the newest history entry (every outcome appends one), else the link's.

    The one place that decides what a record's Spotler status is, so the route and the CLI cannot disagree
    with the history they show.
    """
    if history:
        newest = max(history, key=lambda h: h.at)
        return newest.reason, newest.detail
    if link is not None:
        return link.reason, link.detail
    return None, ""


async def record_status_view(state: StateStore, entity: EntityName, record_id: str) -> dict[str, Any] | None:
    """The record's reason code, last outcome and attempt, Spotler externalId, and recent history."""
    link = await state.get_link(entity, record_id)
    history = await state.list_status(entity, record_id, limit=10)
    if link is None and not history:
        return None
    reason, detail = current_outcome(link, history)
    latest = max(history, key=lambda h: h.at) if history else None
    return {
        "entity": entity,
        "id": record_id,
        "reason": reason.value if reason else None,
        "detail": detail,
        "spotlerExternalId": link.external_id if link is not None else None,
        "anonymized": link.anonymized if link is not None else False,
        "lastAttempt": _iso(latest.at if latest is not None else (link.last_attempt if link is not None else None)),
        "failures": link.failures if link is not None else 0,
        "nextRetry": _iso(link.next_retry) if link is not None else None,
        "history": [
            {"at": _iso(h.at), "reason": h.reason.value, "action": h.action, "detail": h.detail} for h in history
        ],
    }


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    return {
        "entity": letter.entity,
        "eventId": letter.event_id,
        "recordId": letter.event.get("id"),
        "errorClass": letter.error_class,
        "message": letter.message,
        "attempts": letter.attempts,
        "replays": letter.replays,
        "firstFailed": _iso(letter.first_failed),
        "lastFailed": _iso(letter.last_failed),
        "nextRetry": _iso(letter.next_retry),
    }
