"""Queue message format of accepted change events (JSON, versioned)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sync_core.domain.records import ENTITY_NAMES, ChangeEvent, ChangeKind, EventSource

FORMAT_VERSION = 1


class EventDecodeError(ValueError):
    """A queue message is not a change event this version understands."""


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventDecodeError("timestamp is not a string")
    return datetime.fromisoformat(value)


def event_to_dict(event: ChangeEvent) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "entity": event.entity,
        "id": event.record_id,
        "kind": event.kind.value,
        "attributes": dict(event.attributes),
        "changed": sorted(event.changed),
        "key": event.idempotency_key,
        "source": event.source.value,
        "version": event.version,
        "modifiedOn": _dt(event.modified_on),
        "occurredOn": _dt(event.occurred_on),
        "initiatingUserId": event.initiating_user_id,
        "userId": event.user_id,
        "correlationId": event.correlation_id,
        "depth": event.depth,
        "complete": event.complete,
        "mergedInto": event.merged_into,
    }


def encode_event(event: ChangeEvent) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)


def event_from_dict(data: Any) -> ChangeEvent:
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
        raise EventDecodeError("not a version-1 change event")
    try:
        entity = data["entity"]
        if entity not in ENTITY_NAMES:
            raise EventDecodeError("unknown entity")
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise EventDecodeError("attributes is not an object")
        return ChangeEvent(
            entity=entity,
            record_id=str(data["id"]),
            kind=ChangeKind(data["kind"]),
            attributes=attributes,
            changed=frozenset(data.get("changed") or ()),
            idempotency_key=str(data["key"]),
            source=EventSource(data.get("source", EventSource.WEBHOOK.value)),
            version=data.get("version"),
            modified_on=_parse_dt(data.get("modifiedOn")),
            occurred_on=_parse_dt(data.get("occurredOn")),
            initiating_user_id=data.get("initiatingUserId"),
            user_id=data.get("userId"),
            correlation_id=data.get("correlationId"),
            depth=int(data.get("depth", 1)),
            complete=bool(data.get("complete", True)),
            merged_into=data.get("mergedInto"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, EventDecodeError):
            raise
        raise EventDecodeError(f"malformed change event: {type(exc).__name__}") from None


def decode_event(text: str) -> ChangeEvent:
    try:
        return event_from_dict(json.loads(text))
    except json.JSONDecodeError:
        raise EventDecodeError("queue message is not JSON") from None
