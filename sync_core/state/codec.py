"""How state records become storage rows and back; shared by the Table store and the in-memory store.

Both stores keep rows in the same serialized form (plain properties, keys that are legal in Table
Storage, JSON strings for nested data), so that they accept and reject exactly the same input and
round-trip records identically.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import ENTITY_NAMES, EntityName
from sync_core.domain.state_model import (
    DeadLetter,
    LinkState,
    StatusEntry,
    Suppression,
    SuppressionCause,
    Watermark,
)

Props = dict[str, Any]
"""A row's properties without PartitionKey/RowKey: str, int, bool and aware UTC datetimes only."""

MAX_PROPERTY_BYTES = 64 * 1024
"""Table Storage limit for one property; strings are stored as UTF-16."""

MAX_TEXT_CHARS = 8000
"""Free-text fields (details, error messages) are cut to this length instead of failing the write."""

MAX_KEY_CHARS = 255
HASHED_KEY_MARK = "~"

WATERMARK_PARTITION = "spotler"


# ---------------------------------------------------------------------------------------------- keys


def _key_is_safe(value: str) -> bool:
    if not value or len(value) > MAX_KEY_CHARS or value.startswith(HASHED_KEY_MARK):
        return False
    for char in value:
        code = ord(char)
        if char in "/\\#?" or code < 0x20 or 0x7F <= code <= 0x9F:
            return False
    return True


def safe_key(value: str) -> str:
    """`value` when it is a legal PartitionKey/RowKey, otherwise a stable hash of it.

    Table Storage forbids `/ \\ # ?` and control characters in keys and caps their size. A hashed key
    starts with `~`, which no kept-as-is key does, so the two forms never collide.
    """
    if _key_is_safe(value):
        return value
    return HASHED_KEY_MARK + hashlib.sha256(value.encode("utf-8")).hexdigest()


def index_partition_for_external_id(external_id: str) -> str:
    return safe_key(f"x|{external_id}")


def index_partition_for_email_hash(email_hash: str) -> str:
    return safe_key(f"e|{email_hash}")


def index_row_key(entity: EntityName, record_id: str) -> str:
    return safe_key(f"{entity}|{record_id}")


def link_index_partitions(link: LinkState) -> set[str]:
    """The index partitions that must point at this link."""
    partitions: set[str] = set()
    if link.external_id:
        partitions.add(index_partition_for_external_id(link.external_id))
    if link.email_hash:
        partitions.add(index_partition_for_email_hash(link.email_hash))
    return partitions


def status_partition(entity: EntityName, record_id: str) -> str:
    return safe_key(f"{entity}|{record_id}")


_status_sequence = itertools.count(1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def status_row_key(at: datetime) -> str:
    """A row key that sorts newest first: inverted microseconds, then inverted append order, then noise."""
    at = utc(at, "at")
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    inverted = 10**18 - micros
    sequence = 10**12 - next(_status_sequence) % 10**12
    return f"{inverted:019d}-{sequence:012d}-{uuid.uuid4().hex[:6]}"


def suppression_keys(email_hash: str) -> tuple[str, str]:
    row = safe_key(email_hash)
    return row[:2], row


# ---------------------------------------------------------------------------------------------- values


def utc(value: datetime, name: str) -> datetime:
    """`value` as an aware UTC datetime; naive datetimes are refused (their zone is a guess)."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _check_size(name: str, text: str) -> str:
    size = len(text.encode("utf-16-le"))
    if size > MAX_PROPERTY_BYTES:
        raise ValueError(
            f"{name} is {size} bytes when stored; Table Storage allows at most {MAX_PROPERTY_BYTES} bytes per property"
        )
    return text


def _text(name: str, value: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        value = value[: MAX_TEXT_CHARS - 1] + "…"
    return _check_size(name, value)


def _json(name: str, value: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(dict(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serializable: {exc}") from None
    return _check_size(name, text)


def _put(props: Props, name: str, value: Any) -> None:
    """Set a property; None is omitted (Table Storage does not store nulls)."""
    if value is None:
        return
    if isinstance(value, datetime):
        value = utc(value, name)
    elif isinstance(value, str):
        value = _check_size(name, value)
    props[name] = value


def _opt_dt(props: Mapping[str, Any], name: str) -> datetime | None:
    value = props.get(name)
    return None if value is None else _as_datetime(value)


def _as_datetime(value: Any) -> datetime:
    """A plain aware UTC datetime (the Table service hands back a `TablesEntityDatetime` subclass)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=UTC,
    )


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    inner = getattr(value, "value", value)  # Edm.Int64 comes back wrapped in an EntityProperty
    return int(inner)


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _entity(value: Any) -> EntityName:
    for name in ENTITY_NAMES:
        if value == name:
            return name
    raise ValueError(f"unknown entity {value!r}")


# ---------------------------------------------------------------------------------------------- links


def link_to_props(link: LinkState) -> Props:
    props: Props = {}
    _put(props, "entity", link.entity)
    _put(props, "record_id", link.record_id)
    _put(props, "external_id", link.external_id)
    _put(props, "email_hash", link.email_hash)
    _put(props, "dv_version", link.dv_version)
    _put(props, "dv_modified_on", link.dv_modified_on)
    _put(props, "spotler_last_changed", link.spotler_last_changed)
    props["base"] = _json("base", link.base)
    props["anonymized"] = bool(link.anonymized)
    props["in_scope"] = bool(link.in_scope)
    props["unsubscribed"] = bool(link.unsubscribed)
    _put(props, "reason", None if link.reason is None else str(link.reason))
    props["detail"] = _text("detail", link.detail)
    _put(props, "last_attempt", link.last_attempt)
    props["failures"] = int(link.failures)
    _put(props, "next_retry", link.next_retry)
    _put(props, "failed_change", link.failed_change)
    return props


def link_from_props(props: Mapping[str, Any], etag: str | None) -> LinkState:
    reason = props.get("reason")
    base = json.loads(props.get("base") or "{}")
    return LinkState(
        entity=_entity(props["entity"]),
        record_id=str(props["record_id"]),
        external_id=str(props.get("external_id", "")),
        email_hash=props.get("email_hash"),
        dv_version=_opt_int(props.get("dv_version")),
        dv_modified_on=_opt_dt(props, "dv_modified_on"),
        spotler_last_changed=_opt_dt(props, "spotler_last_changed"),
        base={str(k): str(v) for k, v in base.items()},
        anonymized=bool(props.get("anonymized", False)),
        in_scope=bool(props.get("in_scope", True)),
        unsubscribed=bool(props.get("unsubscribed", False)),
        reason=None if reason is None else ReasonCode(reason),
        detail=str(props.get("detail", "")),
        last_attempt=_opt_dt(props, "last_attempt"),
        failures=_int(props.get("failures")),
        next_retry=_opt_dt(props, "next_retry"),
        failed_change=props.get("failed_change"),
        etag=etag,
    )


def index_to_props(link: LinkState) -> Props:
    return {"entity": link.entity, "record_id": link.record_id}


def index_target(props: Mapping[str, Any]) -> tuple[EntityName, str]:
    return _entity(props["entity"]), str(props["record_id"])


def link_matches_external_id(link: LinkState, external_id: str) -> bool:
    return bool(external_id) and link.external_id == external_id


def link_matches_email_hash(link: LinkState, email_hash: str) -> bool:
    return bool(email_hash) and link.email_hash == email_hash


# ---------------------------------------------------------------------------------------------- suppressions


def suppression_to_props(suppression: Suppression) -> Props:
    props: Props = {}
    _put(props, "email_hash", suppression.email_hash)
    _put(props, "cause", str(suppression.cause))
    _put(props, "entity", suppression.entity)
    _put(props, "record_id", suppression.record_id)
    _put(props, "created_on", suppression.created_on)
    return props


def suppression_from_props(props: Mapping[str, Any], etag: str | None) -> Suppression:
    return Suppression(
        email_hash=str(props["email_hash"]),
        cause=SuppressionCause(props["cause"]),
        entity=_entity(props["entity"]),
        record_id=str(props["record_id"]),
        created_on=_as_datetime(props["created_on"]),
        etag=etag,
    )


# ---------------------------------------------------------------------------------------------- watermarks


def watermark_to_props(watermark: Watermark) -> Props:
    props: Props = {}
    _put(props, "name", watermark.name)
    _put(props, "value", watermark.value)
    _put(props, "run_from", watermark.run_from)
    _put(props, "run_to", watermark.run_to)
    props["run_after"] = int(watermark.run_after)
    _put(props, "run_high", watermark.run_high)
    props["run_id"] = _check_size("run_id", watermark.run_id)
    _put(props, "run_started", watermark.run_started)
    props["run_mode"] = watermark.run_mode
    _put(props, "run_last_id", watermark.run_last_id)
    return props


def watermark_from_props(props: Mapping[str, Any], etag: str | None) -> Watermark:
    return Watermark(
        name=str(props["name"]),
        value=_opt_dt(props, "value"),
        run_from=_opt_dt(props, "run_from"),
        run_to=_opt_dt(props, "run_to"),
        run_after=_int(props.get("run_after")),
        run_high=_opt_dt(props, "run_high"),
        run_id=str(props.get("run_id", "")),
        run_started=_opt_dt(props, "run_started"),
        run_mode="offset" if props.get("run_mode") == "offset" else "timestamp",
        run_last_id=None if props.get("run_last_id") is None else str(props["run_last_id"]),
        etag=etag,
    )


# ---------------------------------------------------------------------------------------------- status


def status_to_props(entry: StatusEntry) -> Props:
    props: Props = {}
    _put(props, "entity", entry.entity)
    _put(props, "record_id", entry.record_id)
    _put(props, "at", entry.at)
    _put(props, "reason", str(entry.reason))
    props["action"] = _text("action", entry.action)
    props["detail"] = _text("detail", entry.detail)
    _put(props, "external_id", entry.external_id)
    return props


def status_from_props(props: Mapping[str, Any]) -> StatusEntry:
    external_id = props.get("external_id")
    return StatusEntry(
        entity=_entity(props["entity"]),
        record_id=str(props["record_id"]),
        at=_as_datetime(props["at"]),
        reason=ReasonCode(props["reason"]),
        action=str(props.get("action", "")),
        detail=str(props.get("detail", "")),
        external_id=None if external_id is None else str(external_id),
    )


# ---------------------------------------------------------------------------------------------- dead letters


def dead_letter_to_props(dead_letter: DeadLetter) -> Props:
    props: Props = {}
    _put(props, "entity", dead_letter.entity)
    _put(props, "event_id", dead_letter.event_id)
    props["event"] = _json("event", dead_letter.event)
    props["error_class"] = _text("error_class", dead_letter.error_class)
    props["message"] = _text("message", dead_letter.message)
    props["attempts"] = int(dead_letter.attempts)
    props["replays"] = int(dead_letter.replays)
    _put(props, "first_failed", dead_letter.first_failed)
    _put(props, "last_failed", dead_letter.last_failed)
    _put(props, "next_retry", dead_letter.next_retry)
    return props


def dead_letter_from_props(props: Mapping[str, Any], etag: str | None) -> DeadLetter:
    event = json.loads(props.get("event") or "{}")
    return DeadLetter(
        entity=_entity(props["entity"]),
        event_id=str(props["event_id"]),
        event=event,
        error_class=str(props.get("error_class", "")),
        message=str(props.get("message", "")),
        attempts=_int(props.get("attempts")),
        replays=_int(props.get("replays")),
        first_failed=_as_datetime(props["first_failed"]),
        last_failed=_as_datetime(props["last_failed"]),
        next_retry=_opt_dt(props, "next_retry"),
        etag=etag,
    )


def dead_letter_order(dead_letter: DeadLetter) -> tuple[datetime, str, str]:
    """Oldest first; ties broken by entity and event id so both stores list in the same order."""
    return dead_letter.first_failed, dead_letter.entity, dead_letter.event_id


# ---------------------------------------------------------------------------------------------- deliveries


LEASE_PARTITION = "lease"


def lease_props(name: str, owner: str, expires: datetime) -> Props:
    props: Props = {"name": _check_size("name", name), "owner": _check_size("owner", owner)}
    _put(props, "expires", expires)
    return props


def lease_is_free(props: Mapping[str, Any], owner: str, now: datetime) -> bool:
    """A lease row can be taken by `owner`: it holds it already, or it has expired."""
    expires = _opt_dt(props, "expires")
    return props.get("owner") == owner or expires is None or expires <= utc(now, "now")


# ---------------------------------------------------------------------------------------------- record claims

RECORD_DONE_KEPT = 16
"""Idempotency keys of the last changes completed on a record, kept on its lease row to tell a duplicate."""
FREE = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RecordRow:
    """A record's lease row: who holds it (until when), for which change, and what it has seen so far."""

    owner: str
    expires: datetime | None
    claimed: str
    done: tuple[str, ...]
    version: int | None
    modified_on: datetime | None


def record_row(props: Mapping[str, Any]) -> RecordRow:
    try:
        done = json.loads(props.get("done") or "[]")
    except ValueError:
        done = []
    return RecordRow(
        owner=str(props.get("owner") or ""),
        expires=_opt_dt(props, "expires"),
        claimed=str(props.get("claimed") or ""),
        done=tuple(str(key) for key in done) if isinstance(done, list) else (),
        version=_opt_int(props.get("version")),
        modified_on=_opt_dt(props, "modified_on"),
    )


def record_claim_props(name: str, owner: str, expires: datetime, claimed: str) -> Props:
    """What a claim writes (merged into the row: what the row has seen stays)."""
    props = lease_props(name, owner, expires)
    props["claimed"] = _check_size("claimed", claimed)
    return props


def record_free_props(done: tuple[str, ...] | None, version: int | None, modified_on: datetime | None) -> Props:
    """What giving a record back writes (merged): nobody holds it; with `done`, the completed keys."""
    props: Props = {"owner": "", "claimed": ""}
    _put(props, "expires", FREE)
    if done is not None:
        props["done"] = _check_size("done", json.dumps(list(done[-RECORD_DONE_KEPT:]), separators=(",", ":")))
    _put(props, "version", version)
    _put(props, "modified_on", modified_on)
    return props


def record_is_duplicate(row: RecordRow, key: str, owner: str, now: datetime) -> bool:
    """`key` was completed already, or another live holder is applying it right now."""
    if key in row.done:
        return True
    held = row.owner not in ("", owner) and row.expires is not None and row.expires > utc(now, "now")
    return held and row.claimed == key
