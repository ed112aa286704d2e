"""Turn a Dataverse webhook delivery into a ChangeEvent. Pure functions, no I/O.

Two formats are accepted on the same endpoint:

* the RemoteExecutionContext JSON a registered webhook step posts (detected by its `MessageName`), and
* the small plug-in JSON documented in docs/dataverse.md (detected by its `entity` field).

Values are normalized to Web API form (see sync_core.domain.records). Error messages name fields, never values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sync_core.dataverse.errors import UnsupportedMessage, WebhookPayloadError
from sync_core.domain.records import ENTITY_NAMES, AttrValue, ChangeEvent, ChangeKind, EntityName, EventSource

__all__ = [
    "DATE_ONLY_COLUMNS",
    "POST_IMAGE",
    "SIZE_EXCEEDED_HEADER",
    "PluginDelivery",
    "UnsupportedMessage",
    "WebhookPayloadError",
    "parse_delivery",
    "post_image_alias",
]

SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
DATE_ONLY_COLUMNS: frozenset[str] = frozenset({"birthdate", "anniversary"})
"""Columns with DateOnly behaviour: their `/Date(...)/` becomes the wall-clock "YYYY-MM-DD"."""

STATE_COLUMNS = ("statecode", "statuscode")

_MESSAGES: dict[str, ChangeKind] = {
    "Create": ChangeKind.CREATE,
    "Update": ChangeKind.UPDATE,
    "Delete": ChangeKind.DELETE,
    "SetState": ChangeKind.SET_STATE,
    "SetStateDynamicEntity": ChangeKind.SET_STATE,
    "Merge": ChangeKind.UPDATE,
}
_DATE_RE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")


POST_IMAGE = "PostImage"


def post_image_alias(columns: Iterable[str]) -> str:
    """The alias `dataverse setup` gives a post-image of `columns`: it names the column set it was registered with.

    Dataverse leaves null columns out of an entity image, so a column missing from an image is null only when the
    image was registered with it; the alias tells a delivery's image apart from one registered with other columns
    (a mapping changed since the setup ran), whose missing columns are unknown.
    """
    names = ",".join(sorted({column.lower() for column in columns}))
    return f"{POST_IMAGE}{hashlib.sha256(names.encode('utf-8')).hexdigest()[:12]}"


def parse_delivery(
    body: bytes,
    headers: Mapping[str, str],
    *,
    date_only_columns: frozenset[str] = DATE_ONLY_COLUMNS,
    image_columns: Callable[[EntityName], Sequence[str] | None] | None = None,
) -> ChangeEvent:
    """Parse one delivery (RemoteExecutionContext or plug-in JSON) into a ChangeEvent.

    With `image_columns` (the columns `dataverse setup` registers a table's post-image with), a post-image whose
    alias says it was registered with exactly those columns counts as holding all of them: those it leaves out
    are null, and the event needs no read of the row.
    Raises WebhookPayloadError for malformed input and UnsupportedMessage for messages not synced.
    """
    document = _load_json(body)
    if not isinstance(document, dict):
        raise WebhookPayloadError("body must be a JSON object")
    size_exceeded = any(name.lower() == SIZE_EXCEEDED_HEADER for name in headers)
    if "MessageName" in document:
        event = _parse_context(document, size_exceeded=size_exceeded, date_only_columns=date_only_columns)
        if image_columns is not None and event.complete and event.merged_into is None:
            columns = image_columns(event.entity)
            if columns and post_image_alias(columns) in _post_image_aliases(document):
                nulls = {column: None for column in columns if column not in event.attributes}
                if nulls:
                    event = dataclasses.replace(event, attributes={**event.attributes, **nulls})
        return event
    if "entity" in document:
        return _parse_plugin(document, size_exceeded=size_exceeded)
    raise WebhookPayloadError("body is neither a RemoteExecutionContext (MessageName) nor plug-in JSON (entity)")


def _reject_constant(name: str) -> Any:
    raise WebhookPayloadError(f"body holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WebhookPayloadError("body holds a number too large for a double")
    return value


def _load_json(body: bytes) -> Any:
    """Strict JSON: finite numbers only, text that is valid Unicode (no lone surrogates), bounded nesting.

    Everything the parser accepts can be re-encoded as UTF-8 JSON for the queue; anything else is a 400 here,
    never an error later where a retry cannot help.
    """
    try:
        document = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except WebhookPayloadError:
        raise
    except RecursionError:
        raise WebhookPayloadError("body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise WebhookPayloadError("body is not valid JSON") from None
    _check_text(document)
    return document


MAX_NESTING = 256
"""Deeper JSON than any Dataverse delivery is refused (a context nests about ten levels per ParentContext)."""


def _check_text(document: Any) -> None:
    """Every key and string is encodable as UTF-8 and the nesting is at most MAX_NESTING (iterative walk)."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_str(node)
        elif isinstance(node, dict | list):
            if depth >= MAX_NESTING:
                raise WebhookPayloadError("body is nested too deeply")
            if isinstance(node, dict):
                for key, value in node.items():
                    _check_str(key)
                    stack.append((value, depth + 1))
            else:
                stack.extend((value, depth + 1) for value in node)


def _check_str(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise WebhookPayloadError("body holds text that is not valid Unicode (a lone surrogate)") from None


# --- RemoteExecutionContext -------------------------------------------------------------------------


def _parse_context(context: dict[str, Any], *, size_exceeded: bool, date_only_columns: frozenset[str]) -> ChangeEvent:
    message = context.get("MessageName")
    if not isinstance(message, str) or not message:
        raise WebhookPayloadError("MessageName must be a non-empty string")
    entity = _entity_name(context.get("PrimaryEntityName"), "PrimaryEntityName")
    record_id = _guid(context.get("PrimaryEntityId"), "PrimaryEntityId")
    if message not in _MESSAGES:
        raise UnsupportedMessage(_safe(message))
    kind = _MESSAGES[message]
    convert = _ValueConverter(date_only_columns)

    stripped = any(key not in context for key in ("InputParameters", "PreEntityImages", "PostEntityImages"))
    inputs = _key_values(context.get("InputParameters"), "InputParameters")
    pre_images = _images(context.get("PreEntityImages"), "PreEntityImages")
    post_images = _images(context.get("PostEntityImages"), "PostEntityImages")
    has_inputs = "InputParameters" in context

    attributes: dict[str, AttrValue] = {}
    for image in pre_images:
        attributes.update(convert.attributes(image, "PreEntityImages"))

    changed: set[str] = set()
    target_version: int | None = None
    merged_into: str | None = None
    if message in ("Create", "Update"):
        target = inputs.get("Target")
        if target is None:
            if has_inputs:
                raise WebhookPayloadError(f"InputParameters.Target is missing on {message}")
        else:
            if not _is_entity(target):
                raise WebhookPayloadError(f"InputParameters.Target must be an Entity on {message}")
            target_attributes = convert.attributes(target, "InputParameters.Target")
            attributes.update(target_attributes)
            changed.update(target_attributes)
            target_version = _row_version(target.get("RowVersion"), "InputParameters.Target.RowVersion")
    elif message == "Delete":
        target = inputs.get("Target")
        if target is None and has_inputs:
            raise WebhookPayloadError("InputParameters.Target is missing on Delete")
        if target is not None:
            _reference_id(target, "InputParameters.Target")
    elif message in ("SetState", "SetStateDynamicEntity"):
        changed.update(STATE_COLUMNS)
        moniker = inputs.get("EntityMoniker")
        if moniker is None and has_inputs:
            raise WebhookPayloadError(f"InputParameters.EntityMoniker is missing on {message}")
        if moniker is not None:
            _reference_id(moniker, "InputParameters.EntityMoniker")
            for key, column in (("State", "statecode"), ("Status", "statuscode")):
                if key in inputs:
                    value = convert.value(column, inputs[key], f"InputParameters.{key}")
                    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                        raise WebhookPayloadError(f"InputParameters.{key} must be an OptionSetValue")
                    attributes[column] = value
    else:  # Merge: the event is about the subordinate, which Dataverse deactivates into the master
        target = inputs.get("Target")
        if has_inputs:
            if target is None:
                raise WebhookPayloadError("InputParameters.Target is missing on Merge")
            merged_into = _reference_id(target, "InputParameters.Target")
            record_id = _guid(inputs.get("SubordinateId"), "InputParameters.SubordinateId")
            # the images describe the master, not the subordinate this event is about
            attributes = {}
        else:
            merged_into = record_id

    post_version: int | None = None
    if merged_into is None:
        for image in post_images:
            attributes.update(convert.attributes(image, "PostEntityImages"))
            image_version = _row_version(image.get("RowVersion"), "PostEntityImages.RowVersion")
            post_version = image_version or post_version

    version = post_version or target_version or _int_or_none(attributes.get("versionnumber"))
    modified_on = _iso_or_none(attributes.get("modifiedon"))
    occurred_on = None
    if context.get("OperationCreatedOn") is not None:
        occurred_on = _parse_date(context["OperationCreatedOn"], "OperationCreatedOn")[0]

    complete = not (size_exceeded or stripped) and message != "Merge"
    return ChangeEvent(
        entity=entity,
        record_id=record_id,
        kind=kind,
        attributes=attributes,
        changed=frozenset(changed),
        idempotency_key=_context_key(context, message),
        source=EventSource.WEBHOOK,
        version=version,
        modified_on=modified_on,
        occurred_on=occurred_on,
        initiating_user_id=_optional_guid(context.get("InitiatingUserId"), "InitiatingUserId"),
        user_id=_optional_guid(context.get("UserId"), "UserId"),
        correlation_id=_optional_guid(context.get("CorrelationId"), "CorrelationId"),
        depth=_depth(context.get("Depth")),
        complete=complete,
        merged_into=merged_into,
    )


def _context_key(context: Mapping[str, Any], message: str) -> str:
    """Same for a re-delivery of one step execution, different across operations and steps."""
    owning = context.get("OwningExtension")
    owning_id = owning.get("Id") if isinstance(owning, dict) else None
    parts = [
        str(context.get("OperationId") or "").lower(),
        str(owning_id or "").lower(),
        str(context.get("Stage") or ""),
        str(context.get("PrimaryEntityId") or "").lower(),
        message,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class _ValueConverter:
    """RemoteExecutionContext typed values -> Web API form."""

    def __init__(self, date_only_columns: frozenset[str]) -> None:
        self._date_only = date_only_columns

    def attributes(self, entity: Mapping[str, Any], where: str) -> dict[str, AttrValue]:
        result: dict[str, AttrValue] = {}
        for key, raw in _key_values(entity.get("Attributes"), f"{where}.Attributes").items():
            converted = self.value(key, raw, f"{where}.Attributes[{_safe(key)}]")
            if converted is not _SKIP:
                result[key] = converted  # type: ignore[assignment]
        return result

    def value(self, key: str, raw: Any, where: str) -> AttrValue | object:
        if raw is None or isinstance(raw, bool | int | float):
            return raw
        if isinstance(raw, str):
            if raw.startswith("/Date("):
                instant, wall_clock = _parse_date(raw, where)
                if key in self._date_only:
                    return wall_clock.date().isoformat()
                return instant.strftime("%Y-%m-%dT%H:%M:%SZ")
            return raw
        if isinstance(raw, list):
            return self._choices(raw, where)
        if isinstance(raw, dict):
            return self._typed(raw, where)
        raise WebhookPayloadError(f"{where} has an unsupported value type")

    def _typed(self, raw: dict[str, Any], where: str) -> AttrValue | object:
        type_name = str(raw.get("__type") or "").split(":", 1)[0]
        if type_name == "OptionSetValue" or (not type_name and set(raw) == {"Value"}):
            return _option_value(raw.get("Value"), where)
        if type_name == "Money":
            amount = raw.get("Value")
            if amount is None:
                return None
            if isinstance(amount, bool) or not isinstance(amount, int | float | str):
                raise WebhookPayloadError(f"{where} Money.Value must be a number")
            try:
                money = float(amount)
            except ValueError:
                raise WebhookPayloadError(f"{where} Money.Value must be a number") from None
            if not math.isfinite(money):
                raise WebhookPayloadError(f"{where} Money.Value must be a finite number")
            return money
        if type_name == "EntityReference" or (not type_name and "LogicalName" in raw and "Id" in raw):
            if "Attributes" in raw:
                return _SKIP  # a nested Entity is not a column value we sync
            return _guid(raw.get("Id"), f"{where}.Id")
        if type_name == "OptionSetValueCollection":
            items: Any = next((raw[k] for k in ("Value", "Values", "Items", "_items") if k in raw), [])
            if items is None:
                return None
            if not isinstance(items, list):
                raise WebhookPayloadError(f"{where} OptionSetValueCollection must hold a list")
            return self._choices(items, where)
        # EntityCollection, Entity, BooleanManagedProperty, ...: nothing a contact column sync needs
        return _SKIP

    @staticmethod
    def _choices(items: list[Any], where: str) -> list[int]:
        values: list[int] = []
        for item in items:
            raw = item.get("Value") if isinstance(item, dict) else item
            value = _option_value(raw, where)
            if value is None:
                raise WebhookPayloadError(f"{where} multi-select holds a null choice")
            values.append(value)
        return values


_SKIP = object()


def _option_value(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise WebhookPayloadError(f"{where} choice value must be an integer")
    return raw


def _parse_date(raw: Any, where: str) -> tuple[datetime, datetime]:
    """`/Date(ms±hhmm)/` -> (UTC instant, wall-clock time at the given offset)."""
    match = _DATE_RE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise WebhookPayloadError(f"{where} is not a valid /Date(ms)/ value")
    millis, offset = int(match.group(1)), match.group(2)
    try:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    except OverflowError:
        raise WebhookPayloadError(f"{where} is out of range") from None
    shift = timedelta()
    if offset:
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if minutes >= 60 or hours > 14:
            raise WebhookPayloadError(f"{where} has an invalid UTC offset")
        shift = timedelta(hours=hours, minutes=minutes) * (-1 if offset[0] == "-" else 1)
    try:
        wall_clock = (instant + shift).replace(tzinfo=None)
    except OverflowError:
        raise WebhookPayloadError(f"{where} is out of range") from None
    return instant, wall_clock


def _key_values(raw: Any, where: str) -> dict[str, Any]:
    """A WCF list of {"key","value"} pairs (an object is accepted too) -> dict."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if not isinstance(raw, list):
        raise WebhookPayloadError(f"{where} must be a list of key/value pairs")
    result: dict[str, Any] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise WebhookPayloadError(f"{where} must be a list of key/value pairs")
        result[item["key"]] = item.get("value")
    return result


def _post_image_aliases(context: Mapping[str, Any]) -> set[str]:
    """The aliases of the post-images a (parsed, hence well-formed) context carries."""
    if context.get("MessageName") not in ("Create", "Update"):
        return set()
    return {alias for alias, image in _key_values(context.get("PostEntityImages"), "PostEntityImages").items() if image}


def _images(raw: Any, where: str) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = []
    for alias, image in _key_values(raw, where).items():
        if image is None:
            continue
        if not _is_entity(image):
            raise WebhookPayloadError(f"{where}[{_safe(alias)}] must be an Entity")
        images.append(image)
    return images


def _is_entity(raw: Any) -> bool:
    if not isinstance(raw, dict) or "Attributes" not in raw:
        return False
    return str(raw.get("__type") or "Entity:").startswith("Entity:")


def _reference_id(raw: Any, where: str) -> str:
    if not isinstance(raw, dict) or "Id" not in raw or "Attributes" in raw:
        raise WebhookPayloadError(f"{where} must be an EntityReference")
    type_name = str(raw.get("__type") or "EntityReference:").split(":", 1)[0]
    if type_name != "EntityReference":
        raise WebhookPayloadError(f"{where} must be an EntityReference")
    return _guid(raw.get("Id"), f"{where}.Id")


def _row_version(raw: Any, where: str) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise WebhookPayloadError(f"{where} must be an integer string")
    try:
        value = int(raw)
    except ValueError:
        raise WebhookPayloadError(f"{where} must be an integer string") from None
    if not 0 <= value < 2**63:
        raise WebhookPayloadError(f"{where} is out of range")
    return value


def _int_or_none(value: AttrValue) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return None


def _iso_or_none(value: AttrValue) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _depth(raw: Any) -> int:
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise WebhookPayloadError("Depth must be a non-negative integer")
    return raw


def _entity_name(raw: Any, where: str) -> EntityName:
    for name in ENTITY_NAMES:
        if raw == name:
            return name
    if isinstance(raw, str) and _SAFE_NAME_RE.match(raw):
        raise WebhookPayloadError(f"{where} {raw!r} is not one of {', '.join(ENTITY_NAMES)}")
    raise WebhookPayloadError(f"{where} must be one of {', '.join(ENTITY_NAMES)}")


def _guid(raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise WebhookPayloadError(f"{where} is missing or not a GUID")
    try:
        return str(uuid.UUID(raw.strip("{}")))
    except ValueError:
        raise WebhookPayloadError(f"{where} is not a GUID") from None


def _optional_guid(raw: Any, where: str) -> str | None:
    return None if raw is None else _guid(raw, where)


def _safe(name: str) -> str:
    """A name fit for an error message: identifiers only, anything else elided."""
    return name if _SAFE_NAME_RE.match(name) else "?"


# --- plug-in JSON -----------------------------------------------------------------------------------


class PluginDelivery(BaseModel):
    """The documented JSON a custom plug-in (or any caller) posts instead of a RemoteExecutionContext."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    entity: EntityName
    id: str
    message: Literal["Create", "Update", "Delete", "SetState"]
    attributes: dict[str, AttrValue] | None = None
    version: int | None = Field(default=None, ge=0)
    modified_on: datetime | None = Field(default=None, alias="modifiedOn")
    delivery_id: str | None = Field(default=None, alias="deliveryId", min_length=1, max_length=200)
    user_id: str | None = Field(default=None, alias="userId")

    @field_validator("id", "user_id")
    @classmethod
    def _must_be_guid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value.strip("{}")))
        except ValueError:
            raise ValueError("must be a GUID") from None


_PLUGIN_KINDS: dict[str, ChangeKind] = {
    "Create": ChangeKind.CREATE,
    "Update": ChangeKind.UPDATE,
    "Delete": ChangeKind.DELETE,
    "SetState": ChangeKind.SET_STATE,
}


def _parse_plugin(document: dict[str, Any], *, size_exceeded: bool) -> ChangeEvent:
    try:
        delivery = PluginDelivery.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(_safe(str(part)) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise WebhookPayloadError(f"invalid plug-in JSON: {problems}") from None
    attributes: dict[str, AttrValue] = dict(delivery.attributes or {})
    modified_on = delivery.modified_on
    if modified_on is not None and modified_on.tzinfo is None:
        modified_on = modified_on.replace(tzinfo=UTC)
    if modified_on is None:
        modified_on = _iso_or_none(attributes.get("modifiedon"))
    version = delivery.version
    if version is None:
        version = _int_or_none(attributes.get("versionnumber"))
    if delivery.delivery_id is not None:
        key_source = "plugin|" + delivery.delivery_id
    else:
        key_source = "plugin-body|" + json.dumps(document, sort_keys=True, separators=(",", ":"))
    changed = frozenset(attributes) if delivery.message != "Delete" else frozenset()
    return ChangeEvent(
        entity=delivery.entity,
        record_id=delivery.id,
        kind=_PLUGIN_KINDS[delivery.message],
        attributes=attributes,
        changed=changed,
        idempotency_key=hashlib.sha256(key_source.encode()).hexdigest()[:32],
        source=EventSource.PLUGIN,
        version=version,
        modified_on=modified_on,
        initiating_user_id=delivery.user_id,
        user_id=delivery.user_id,
        complete=delivery.attributes is not None and not size_exceeded,
    )
