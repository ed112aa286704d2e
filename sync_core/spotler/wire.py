"""Spotler JSON <-> the shared records.

Sources disagree on a few wire details, so reading is tolerant: `created`/`lastChanged` may be epoch
milliseconds or ISO 8601 strings (naive ones are in Spotler's local zone, Europe/Amsterdam by default), and
the updates feed may be a `{"paging", "contacts"}` wrapper or a bare array. Writing is strict and minimal:
set properties go out as `[{"bit", "enabled"}]`, and channels are never sent (Spotler documents them as
read-only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from sync_core.domain.records import (
    PERMISSIONS_PROPERTY,
    BulkItemResult,
    PropValue,
    SpotlerContact,
    SpotlerProperty,
    UpdatesPage,
)

SPOTLER_TIMEZONE = ZoneInfo("Europe/Amsterdam")

JsonObject = dict[str, Any]


class WireFormatError(ValueError):
    """A Spotler answer did not have the documented shape."""


# ---------------------------------------------------------------- writing


def set_to_wire(bits: Mapping[int, bool]) -> list[JsonObject]:
    """`{1: True, 2: False}` -> `[{"bit": 1, "enabled": true}, {"bit": 2, "enabled": false}]`."""
    return [{"bit": int(bit), "enabled": bool(enabled)} for bit, enabled in sorted(bits.items())]


def _value_to_wire(value: PropValue) -> Any:
    if isinstance(value, dict):
        return set_to_wire(value)
    return value


def contact_to_wire(contact: SpotlerContact) -> JsonObject:
    """The `contact` object of a ContactRequest; `permissions` travel inside `properties`.

    A property whose value is None is sent as JSON null, which asks Spotler to clear it.
    """
    properties: JsonObject = {
        name: _value_to_wire(value) for name, value in contact.properties.items() if name != PERMISSIONS_PROPERTY
    }
    permissions = dict(contact.permissions)
    embedded = contact.properties.get(PERMISSIONS_PROPERTY)
    if isinstance(embedded, dict):
        # `contact.permissions` is the canonical place; bits only found in properties are still honoured.
        permissions = {**embedded, **permissions}
    if permissions:
        properties[PERMISSIONS_PROPERTY] = set_to_wire(permissions)
    body: JsonObject = {"externalId": contact.external_id, "properties": properties}
    if contact.test_group is not None:
        body["testGroup"] = contact.test_group
    return body


def format_query_datetime(value: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC with an explicit offset (milliseconds only when non-zero)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Spotler query dates must be timezone-aware")
    utc = value.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=spec)


# ---------------------------------------------------------------- reading


def parse_timestamp(value: object, *, naive_tz: tzinfo = SPOTLER_TIMEZONE) -> datetime | None:
    """A Spotler timestamp (epoch milliseconds or ISO 8601 string) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WireFormatError("timestamp must be a number or a string, not a boolean")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError as exc:
            raise WireFormatError(f"unparseable timestamp {text!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=naive_tz)
        return parsed.astimezone(UTC)
    raise WireFormatError(f"timestamp must be a number or a string, not {type(value).__name__}")


def _is_set_value(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, Mapping) and "bit" in item for item in value)


def set_from_wire(items: Iterable[Mapping[str, Any]]) -> dict[int, bool]:
    """`[{"bit": 1, "enabled": true, ...}]` -> `{1: True}`."""
    return {int(item["bit"]): bool(item.get("enabled", False)) for item in items}


def _property_from_wire(value: object) -> PropValue:
    if _is_set_value(value):
        assert isinstance(value, list)
        return set_from_wire(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    # Anything else (an unexpected object or list) is kept as its JSON text rather than dropped.
    return str(value)


def contact_from_wire(data: object, *, naive_tz: tzinfo = SPOTLER_TIMEZONE) -> SpotlerContact:
    """A Contact object from Spotler as a `SpotlerContact`."""
    if not isinstance(data, Mapping) or not data.get("externalId"):
        raise WireFormatError("contact without externalId")
    raw_properties = data.get("properties") or {}
    if not isinstance(raw_properties, Mapping):
        raise WireFormatError("contact properties must be an object")
    properties: dict[str, PropValue] = {}
    permissions: dict[int, bool] = {}
    for name, value in raw_properties.items():
        if name == PERMISSIONS_PROPERTY and isinstance(value, list):
            permissions = set_from_wire(value) if value else {}
            continue
        properties[str(name)] = _property_from_wire(value)
    channels: dict[str, bool] = {}
    for channel in data.get("channels") or []:
        if isinstance(channel, Mapping) and "name" in channel:
            channels[str(channel["name"]).upper()] = bool(channel.get("value"))
    test_group = data.get("testGroup")
    temporary = data.get("temporary")
    encrypted_id = data.get("encryptedId")
    return SpotlerContact(
        external_id=str(data["externalId"]),
        properties=properties,
        permissions=permissions,
        last_changed=parse_timestamp(data.get("lastChanged"), naive_tz=naive_tz),
        created=parse_timestamp(data.get("created"), naive_tz=naive_tz),
        encrypted_id=str(encrypted_id) if encrypted_id else None,
        test_group=bool(test_group) if test_group is not None else None,
        temporary=bool(temporary) if temporary is not None else None,
        channels=channels,
    )


def property_from_wire(data: object) -> SpotlerProperty:
    """One entry of `/contact/properties/list`."""
    if not isinstance(data, Mapping) or not data.get("name"):
        raise WireFormatError("property without name")
    entries = {
        int(entry["bit"]): str(entry.get("description") or "")
        for entry in data.get("entries") or []
        if isinstance(entry, Mapping) and "bit" in entry
    }
    return SpotlerProperty(
        name=str(data["name"]),
        type=str(data.get("type") or "string"),
        description=str(data.get("description") or ""),
        entries=entries,
    )


def bulk_results_from_wire(data: object) -> list[BulkItemResult]:
    """The per-contact answers of `POST /contact/list` (message e-mails are redacted by the caller)."""
    if not isinstance(data, list):
        raise WireFormatError("bulk insert answer must be an array")
    results = []
    for item in data:
        if not isinstance(item, Mapping):
            raise WireFormatError("bulk insert item must be an object")
        results.append(
            BulkItemResult(
                external_id=str(item.get("externalId") or ""),
                code=str(item.get("code") or "ERROR"),
                message=str(item.get("message") or ""),
            )
        )
    return results


def _after_from_next_url(next_url: str) -> int | None:
    values = parse_qs(urlsplit(next_url).query).get("after")
    if values and values[0].isdigit():
        return int(values[0])
    return None


def contacts_page_from_wire(
    data: object, *, after: int, page_size: int, naive_tz: tzinfo = SPOTLER_TIMEZONE
) -> UpdatesPage:
    """A `{"paging": {...}, "contacts": [...]}` wrapper or a bare array as one page.

    With the wrapper, more pages exist only when `paging.next` is present; the next offset is `paging.after`
    (or the `after` of the next URL). With a bare array, a full page means "ask again".
    """
    items: Sequence[object]
    next_after: int | None
    if isinstance(data, list):
        items = data
        next_after = after + len(items) if items and len(items) >= page_size else None
    elif isinstance(data, Mapping):
        raw_items = data.get("contacts")
        if raw_items is None:
            raw_items = []
        if not isinstance(raw_items, list):
            raise WireFormatError("contacts must be an array")
        items = raw_items
        paging = data.get("paging") or {}
        if not isinstance(paging, Mapping):
            raise WireFormatError("paging must be an object")
        next_url = paging.get("next")
        if next_url:
            raw_after = paging.get("after")
            if isinstance(raw_after, int) and not isinstance(raw_after, bool) and raw_after > after:
                next_after = raw_after
            else:
                next_after = _after_from_next_url(str(next_url)) or after + len(items)
        else:
            next_after = None
    else:
        raise WireFormatError("contacts page must be an array or an object")
    contacts = tuple(contact_from_wire(item, naive_tz=naive_tz) for item in items)
    if next_after is not None and next_after <= after:
        next_after = None  # never loop on a page that does not advance
    return UpdatesPage(contacts=contacts, after=after, next_after=next_after)
