"""Metadata and plug-in registration in the Dataverse sandbox: what `dataverse setup` and the mapping check use.

* `EntityDefinitions(LogicalName='…')/Attributes`: read a table's column definitions, and create choice, string,
  memo, date/time, boolean, whole number and money columns the way the Web API does (an AttributeMetadata
  document with `@odata.type`, a SchemaName with a publisher prefix, localized display names);
* `serviceendpoints` (webhooks, contract 8), `sdkmessageprocessingsteps`, `sdkmessageprocessingstepimages`,
  and the `sdkmessages` / `sdkmessagefilters` look-ups a registration needs.

Every change to endpoints, steps or images re-derives the webhook sender's registrations, so a write to a row
is delivered exactly as registered: one call per enabled step, Update only when a filtering attribute was
submitted, the registered images with their aliases and columns, the endpoint's authentication.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from sandboxes.dataverse.store import (
    ERR_BAD_PROPERTY,
    ERR_DUPLICATE,
    ERR_INVALID_ARGUMENT,
    ERR_NOT_FOUND,
    Column,
    DataverseStore,
    SandboxError,
    TableSchema,
)
from sandboxes.dataverse.webhooks import WebhookRegistration, WebhookSender

MetaResult = tuple[int, dict[str, str], Any]

_NAMESPACE = uuid.UUID("0b1f5e0c-7c2a-4d0e-9a57-3f4f1d2b6c11")
MESSAGES = ("Create", "Update", "Delete", "SetState")
MESSAGE_PROPERTY = {"Create": "Id", "Update": "Target", "Delete": "Target", "SetState": "EntityMoniker"}
AUTH_TYPES = {4: "webhook_key", 5: "http_header", 6: "http_query_string"}
ERR_ATTRIBUTE_EXISTS = "0x80047013"  # the sandbox's guess; the real code for a duplicate column is undocumented

_ENTITY_DEFINITION_RE = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<entity>[^']+)'\)/Attributes(?:\(LogicalName='(?P<attribute>[^']+)'\))?$"
)
_ROW_RE = re.compile(r"^(?P<set>\w+)(?:\((?P<id>[0-9a-fA-F-]{36})\))?$")
_CONDITION_RE = re.compile(
    r"^\s*(?P<name>\w+)\s+eq\s+(?P<value>'(?:[^']|'')*'|[0-9a-fA-F-]{36}|-?\d+|true|false|null)\s*$"
)

# (AttributeType, AttributeTypeName) of each sandbox column type; state/status/owner/key columns are special.
_ATTRIBUTE_TYPES: dict[str, tuple[str, str]] = {
    "string": ("String", "StringType"),
    "memo": ("Memo", "MemoType"),
    "int": ("Integer", "IntegerType"),
    "bigint": ("BigInt", "BigIntType"),
    "bool": ("Boolean", "BooleanType"),
    "choice": ("Picklist", "PicklistType"),
    "multichoice": ("Virtual", "MultiSelectPicklistType"),
    "money": ("Money", "MoneyType"),
    "date": ("DateTime", "DateTimeType"),
    "datetime": ("DateTime", "DateTimeType"),
    "guid": ("Uniqueidentifier", "UniqueidentifierType"),
    "lookup": ("Lookup", "LookupType"),
}
# The @odata.type of a column definition -> the sandbox column type.
_CREATABLE: dict[str, str] = {
    "Microsoft.Dynamics.CRM.StringAttributeMetadata": "string",
    "Microsoft.Dynamics.CRM.MemoAttributeMetadata": "memo",
    "Microsoft.Dynamics.CRM.IntegerAttributeMetadata": "int",
    "Microsoft.Dynamics.CRM.BooleanAttributeMetadata": "bool",
    "Microsoft.Dynamics.CRM.PicklistAttributeMetadata": "choice",
    "Microsoft.Dynamics.CRM.MoneyAttributeMetadata": "money",
    "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata": "datetime",
}
# Lookup columns of the registration tables: navigation property bound with @odata.bind -> stored value name.
_BINDINGS: dict[str, dict[str, str]] = {
    "sdkmessageprocessingsteps": {
        "sdkmessageid": "_sdkmessageid_value",
        "sdkmessagefilterid": "_sdkmessagefilterid_value",
        "eventhandler_serviceendpoint": "_eventhandler_value",
    },
    "sdkmessageprocessingstepimages": {"sdkmessageprocessingstepid": "_sdkmessageprocessingstepid_value"},
}
_KEYS = {
    "serviceendpoints": "serviceendpointid",
    "sdkmessages": "sdkmessageid",
    "sdkmessagefilters": "sdkmessagefilterid",
    "sdkmessageprocessingsteps": "sdkmessageprocessingstepid",
    "sdkmessageprocessingstepimages": "sdkmessageprocessingstepimageid",
}
_WRITABLE = ("serviceendpoints", "sdkmessageprocessingsteps", "sdkmessageprocessingstepimages")


def message_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"sdkmessage:{name}"))


def filter_id(message: str, entity: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"sdkmessagefilter:{message}:{entity}"))


@dataclass
class _StepRegistration(WebhookRegistration):
    """A sender registration derived from one registered step: OwningExtension carries the step's own id."""

    owning_step_id: str = ""

    def step_id(self, message: str) -> str:
        return self.owning_step_id


def _bad(message: str, code: str = ERR_INVALID_ARGUMENT) -> SandboxError:
    return SandboxError(400, code, message)


def _labels(value: Any, what: str) -> list[dict[str, Any]]:
    labels = value.get("LocalizedLabels") if isinstance(value, Mapping) else None
    if not isinstance(labels, list) or not labels:
        raise _bad(f"{what} needs LocalizedLabels.")
    for label in labels:
        if not isinstance(label, Mapping) or not label.get("Label") or not isinstance(label.get("LanguageCode"), int):
            raise _bad(f"{what}: every LocalizedLabel needs Label and LanguageCode.")
    return [{"Label": str(label["Label"]), "LanguageCode": int(label["LanguageCode"])} for label in labels]


def _header_settings(value: str) -> dict[str, str]:
    """The `<settings><setting name="…" value="…" /></settings>` value of HttpHeader/HttpQueryString auth."""
    try:
        root = ElementTree.fromstring(value)  # noqa: S314 - our own registrations on loopback
    except ElementTree.ParseError:
        raise _bad('authvalue must be <settings><setting name="…" value="…" /></settings>.') from None
    pairs = {str(s.get("name")): str(s.get("value")) for s in root.iter("setting") if s.get("name")}
    if not pairs:
        raise _bad("authvalue holds no <setting name value>.")
    return pairs


class MetadataRegistry:
    """Column definitions and the registration tables of one sandbox."""

    def __init__(self, store: DataverseStore, sender: WebhookSender) -> None:
        self.store = store
        self.sender = sender
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget registrations and the display names of created columns (the store drops those columns)."""
        with self._lock:
            self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in _KEYS}
            self.definitions: dict[tuple[str, str], dict[str, Any]] = {}
            self._derived: list[str] = []
            for name in MESSAGES:
                self.tables["sdkmessages"][message_id(name)] = {"sdkmessageid": message_id(name), "name": name}
            for entity in self.store.schemas:
                for name in MESSAGES:
                    row = {
                        "sdkmessagefilterid": filter_id(name, entity),
                        "primaryobjecttypecode": entity,
                        "_sdkmessageid_value": message_id(name),
                        "iscustomprocessingstepallowed": True,
                    }
                    self.tables["sdkmessagefilters"][row["sdkmessagefilterid"]] = row

    # --- routing ---------------------------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        head = path.strip("/").split("(", 1)[0].split("/", 1)[0]
        return head == "EntityDefinitions" or head in _KEYS

    def execute(self, method: str, path: str, query: Mapping[str, str], body: bytes, *, root: str) -> MetaResult:
        path = path.strip("/")
        with self._lock:
            definition = _ENTITY_DEFINITION_RE.match(path)
            if definition is not None:
                entity, attribute = definition.group("entity"), definition.group("attribute")
                if method == "GET":
                    return self._read_attributes(entity, attribute, query, root)
                if method == "POST" and attribute is None:
                    return self._create_attribute(entity, _document(body), root)
                raise SandboxError(405, "0x80060888", f"The method {method} is not allowed on this resource.")
            match = _ROW_RE.match(path)
            if match is None or match.group("set") not in _KEYS:
                raise SandboxError(404, "0x8006088a", f"Resource not found for the segment '{path}'.")
            entity_set, row_id = match.group("set"), match.group("id")
            if method == "GET":
                return self._read_rows(entity_set, row_id.lower() if row_id else None, query, root)
            if entity_set not in _WRITABLE:
                raise SandboxError(405, "0x80060888", f"{entity_set} is read-only.")
            if method == "POST" and row_id is None:
                new_id = self._create_row(entity_set, _document(body))
                self._derive()
                return 204, {"OData-EntityId": f"{root}/{entity_set}({new_id})"}, None
            if method == "PATCH" and row_id is not None:
                self._update_row(entity_set, row_id.lower(), _document(body))
                self._derive()
                return 204, {"OData-EntityId": f"{root}/{entity_set}({row_id.lower()})"}, None
            if method == "DELETE" and row_id is not None:
                self._delete_row(entity_set, row_id.lower())
                self._derive()
                return 204, {}, None
            raise SandboxError(405, "0x80060888", f"The method {method} is not allowed on this resource.")

    # --- attribute metadata --------------------------------------------------------------------------

    def _schema(self, entity: str) -> TableSchema:
        try:
            return self.store.schema(entity)
        except SandboxError:
            raise SandboxError(404, ERR_NOT_FOUND, f"Could not find an entity with the name '{entity}'.") from None

    def _attribute(self, schema: TableSchema, column: Column) -> dict[str, Any]:
        attribute_type, type_name = _ATTRIBUTE_TYPES[column.type]
        odata = f"#Microsoft.Dynamics.CRM.{type_name.removesuffix('Type')}AttributeMetadata"
        if column.name == "statecode":
            attribute_type, type_name, odata = "State", "StateType", "#Microsoft.Dynamics.CRM.StateAttributeMetadata"
        elif column.name == "statuscode":
            attribute_type, type_name, odata = "Status", "StatusType", "#Microsoft.Dynamics.CRM.StatusAttributeMetadata"
        elif column.name == "ownerid":
            attribute_type, type_name = "Owner", "OwnerType"
        elif column.type == "multichoice":
            odata = "#Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata"
        extra = self.definitions.get((schema.entity, column.name), {})
        document: dict[str, Any] = {
            "@odata.type": odata,
            "LogicalName": column.name,
            "SchemaName": extra.get("SchemaName", column.name),
            "MetadataId": str(uuid.uuid5(_NAMESPACE, f"attribute:{schema.entity}:{column.name}")),
            "AttributeType": attribute_type,
            "AttributeTypeName": {"Value": type_name},
            "IsValidForCreate": column.writable or column.name == schema.primary_key,
            "IsValidForUpdate": column.writable,
            "IsValidForRead": True,
            "IsCustomAttribute": bool(extra) or column.name.startswith("sync_"),
            "IsPrimaryId": column.name == schema.primary_key,
            "DisplayName": {"LocalizedLabels": extra.get("DisplayName", [])},
        }
        if column.type in ("string", "memo"):
            document["MaxLength"] = column.max_length
        if column.type == "date":
            document["Format"] = "DateOnly"
        elif column.type == "datetime":
            document["Format"] = "DateAndTime"
        if "OptionSet" in extra:
            document["OptionSet"] = extra["OptionSet"]
        return document

    def _read_attributes(self, entity: str, attribute: str | None, query: Mapping[str, str], root: str) -> MetaResult:
        schema = self._schema(entity)
        select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]

        def shaped(document: dict[str, Any]) -> dict[str, Any]:
            if not select:
                return document
            return {k: v for k, v in document.items() if k in select or k in ("@odata.type", "MetadataId")}

        context = f"{root}/$metadata#EntityDefinitions('{entity}')/Attributes"
        if attribute is not None:
            column = schema.columns.get(attribute)
            if column is None:
                raise SandboxError(
                    404, ERR_NOT_FOUND, f"Could not find an attribute with the name '{attribute}' on '{entity}'."
                )
            return 200, {}, {"@odata.context": context + "/$entity", **shaped(self._attribute(schema, column))}
        return (
            200,
            {},
            {"@odata.context": context, "value": [shaped(self._attribute(schema, c)) for c in schema.columns.values()]},
        )

    def _create_attribute(self, entity: str, document: dict[str, Any], root: str) -> MetaResult:
        schema = self._schema(entity)
        odata_type = str(document.get("@odata.type", ""))
        column_type = _CREATABLE.get(odata_type)
        if column_type is None:
            raise _bad(f"The sandbox cannot create a column of @odata.type '{odata_type}'.")
        schema_name = document.get("SchemaName")
        if not isinstance(schema_name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+", schema_name):
            raise _bad("SchemaName must start with a publisher prefix and an underscore, e.g. 'sync_SpotlerStatus'.")
        logical = schema_name.lower()
        if logical in schema.columns:
            raise SandboxError(400, ERR_ATTRIBUTE_EXISTS, f"An attribute named '{logical}' already exists on {entity}.")
        extra: dict[str, Any] = {
            "SchemaName": schema_name,
            "DisplayName": _labels(document.get("DisplayName"), "DisplayName"),
        }
        max_length = None
        if column_type in ("string", "memo"):
            max_length = document.get("MaxLength")
            if not isinstance(max_length, int) or not 1 <= max_length <= (4000 if column_type == "string" else 1048576):
                raise _bad("MaxLength must be a whole number between 1 and 4000.")
        if column_type == "datetime" and document.get("Format") == "DateOnly":
            column_type = "date"
        if column_type == "choice":
            option_set = document.get("OptionSet")
            options = option_set.get("Options") if isinstance(option_set, Mapping) else None
            if not isinstance(options, list) or not options:
                raise _bad("A choice column needs OptionSet.Options.")
            values = []
            rendered = []
            for option in options:
                if not isinstance(option, Mapping) or not isinstance(option.get("Value"), int):
                    raise _bad("Every option needs an integer Value.")
                values.append(option["Value"])
                rendered.append(
                    {
                        "Value": option["Value"],
                        "Label": {"LocalizedLabels": _labels(option.get("Label"), "Option Label")},
                    }
                )
            if len(set(values)) != len(values):
                raise SandboxError(400, ERR_DUPLICATE, "Two options of the choice column have the same value.")
            extra["OptionSet"] = {"IsGlobal": False, "OptionSetType": "Picklist", "Options": rendered}
        self.store.add_column(entity, logical, column_type, max_length=max_length, keep=False)
        self.definitions[(entity, logical)] = extra
        metadata_id = uuid.uuid5(_NAMESPACE, f"attribute:{entity}:{logical}")
        return (
            204,
            {"OData-EntityId": f"{root}/EntityDefinitions(LogicalName='{entity}')/Attributes({metadata_id})"},
            None,
        )

    # --- registration rows ---------------------------------------------------------------------------

    def _read_rows(self, entity_set: str, row_id: str | None, query: Mapping[str, str], root: str) -> MetaResult:
        table = self.tables[entity_set]
        select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]

        def shaped(row: dict[str, Any]) -> dict[str, Any]:
            visible = {k: v for k, v in row.items() if k != "authvalue"}  # authvalue is not valid for read
            if select:
                visible = {k: v for k, v in visible.items() if k in select or k == _KEYS[entity_set]}
            return visible

        if row_id is not None:
            row = table.get(row_id)
            if row is None:
                raise SandboxError(404, ERR_NOT_FOUND, f"{entity_set} With Id = {row_id} Does Not Exist")
            return 200, {}, {"@odata.context": f"{root}/$metadata#{entity_set}/$entity", **shaped(row)}
        conditions = _parse_conditions(query.get("$filter"))
        rows = [row for row in table.values() if all(_equal(row.get(name), value) for name, value in conditions)]
        return 200, {}, {"@odata.context": f"{root}/$metadata#{entity_set}", "value": [shaped(r) for r in rows]}

    def _create_row(self, entity_set: str, document: dict[str, Any]) -> str:
        key = _KEYS[entity_set]
        new_id = str(document.pop(key, None) or uuid.uuid4()).lower()
        if new_id in self.tables[entity_set]:
            raise SandboxError(412, ERR_DUPLICATE, "A record with matching key values already exists.")
        row = self._merged(entity_set, {key: new_id}, document)
        self._validate(entity_set, row)
        self.tables[entity_set][new_id] = row
        return new_id

    def _update_row(self, entity_set: str, row_id: str, document: dict[str, Any]) -> None:
        current = self.tables[entity_set].get(row_id)
        if current is None:
            raise SandboxError(404, ERR_NOT_FOUND, f"{entity_set} With Id = {row_id} Does Not Exist")
        row = self._merged(entity_set, dict(current), document)
        self._validate(entity_set, row)
        self.tables[entity_set][row_id] = row

    def _delete_row(self, entity_set: str, row_id: str) -> None:
        steps = self.tables["sdkmessageprocessingsteps"].values()
        if entity_set == "serviceendpoints" and any(s["_eventhandler_value"] == row_id for s in steps):
            raise _bad("The service endpoint cannot be deleted while steps are registered on it.")
        if self.tables[entity_set].pop(row_id, None) is None:
            raise SandboxError(404, ERR_NOT_FOUND, f"{entity_set} With Id = {row_id} Does Not Exist")
        if entity_set == "sdkmessageprocessingsteps":  # images go with their step
            images = self.tables["sdkmessageprocessingstepimages"]
            for image_id in [i for i, r in images.items() if r["_sdkmessageprocessingstepid_value"] == row_id]:
                del images[image_id]

    def _merged(self, entity_set: str, row: dict[str, Any], document: Mapping[str, Any]) -> dict[str, Any]:
        bindings = _BINDINGS.get(entity_set, {})
        for name, value in document.items():
            if name.endswith("@odata.bind"):
                navigation = name.removesuffix("@odata.bind")
                if navigation not in bindings:
                    raise _bad(f"An undeclared property '{navigation}' was found in the payload.", ERR_BAD_PROPERTY)
                found = re.fullmatch(r"/?(?:.*/)?(\w+)\(([0-9a-fA-F-]{36})\)", str(value))
                if found is None:
                    raise _bad(f"Invalid @odata.bind value for '{navigation}'.")
                row[bindings[navigation]] = found.group(2).lower()
            elif "@" not in name:
                row[name] = value
        return row

    def _validate(self, entity_set: str, row: dict[str, Any]) -> None:
        if entity_set == "serviceendpoints":
            _validate_endpoint(row)
        elif entity_set == "sdkmessageprocessingsteps":
            self._validate_step(row)
        else:
            self._validate_image(row)

    def _validate_step(self, row: dict[str, Any]) -> None:
        row.setdefault("mode", 0)
        row.setdefault("rank", 1)
        row.setdefault("statecode", 0)
        row.setdefault("asyncautodelete", False)
        row.setdefault("supporteddeployment", 0)
        if not row.get("name"):
            raise _bad("A step needs a name.")
        if row.get("stage") not in (10, 20, 40):
            raise _bad("stage must be 10 (pre-validation), 20 (pre-operation) or 40 (post-operation).")
        if row["mode"] not in (0, 1):
            raise _bad("mode must be 0 (synchronous) or 1 (asynchronous).")
        if row["mode"] == 1 and row["stage"] != 40:
            raise _bad("Asynchronous steps must be registered on the post-operation stage (40).")
        message = self.tables["sdkmessages"].get(row.get("_sdkmessageid_value", ""))
        message_filter = self.tables["sdkmessagefilters"].get(row.get("_sdkmessagefilterid_value", ""))
        if message is None or message_filter is None:
            raise _bad("A step needs sdkmessageid and sdkmessagefilterid of an existing message and filter.")
        if message_filter["_sdkmessageid_value"] != message["sdkmessageid"]:
            raise _bad("The message filter does not belong to the step's message.")
        if row.get("_eventhandler_value") not in self.tables["serviceendpoints"]:
            raise _bad("A step needs an event handler (eventhandler_serviceendpoint@odata.bind).")
        attributes = row.get("filteringattributes")
        if attributes:
            if message["name"] != "Update":
                raise _bad("Filtering attributes can only be set on an Update step.")
            self._check_columns(message_filter["primaryobjecttypecode"], attributes, "filteringattributes")

    def _validate_image(self, row: dict[str, Any]) -> None:
        step = self.tables["sdkmessageprocessingsteps"].get(row.get("_sdkmessageprocessingstepid_value", ""))
        if step is None:
            raise _bad("An image needs sdkmessageprocessingstepid of an existing step.")
        if not row.get("entityalias") or not row.get("name"):
            raise _bad("An image needs a name and an entityalias.")
        if row.get("imagetype") not in (0, 1, 2):
            raise _bad("imagetype must be 0 (pre-image), 1 (post-image) or 2 (both).")
        message = self.tables["sdkmessages"][step["_sdkmessageid_value"]]["name"]
        if row["imagetype"] in (0, 2) and message == "Create":
            raise _bad("A Create step has no pre-image.")
        if row["imagetype"] in (1, 2) and message == "Delete":
            raise _bad("A Delete step has no post-image.")
        if row.get("messagepropertyname") != MESSAGE_PROPERTY[message]:
            raise _bad(f"messagepropertyname of a {message} image must be '{MESSAGE_PROPERTY[message]}'.")
        entity = self.tables["sdkmessagefilters"][step["_sdkmessagefilterid_value"]]["primaryobjecttypecode"]
        if row.get("attributes"):
            self._check_columns(entity, row["attributes"], "attributes")
        for other_id, other in self.tables["sdkmessageprocessingstepimages"].items():
            same_step = other["_sdkmessageprocessingstepid_value"] == step["sdkmessageprocessingstepid"]
            clash = {other["imagetype"], row["imagetype"]} & {2} or other["imagetype"] == row["imagetype"]
            if same_step and other_id != row["sdkmessageprocessingstepimageid"] and clash:
                raise _bad("The sandbox supports one pre-image and one post-image per step.")

    def _check_columns(self, entity: str, value: Any, what: str) -> None:
        if not isinstance(value, str):
            raise _bad(f"{what} must be a comma-separated list of column names.")
        schema = self.store.schema(entity)
        for name in (part.strip() for part in value.split(",") if part.strip()):
            if name not in schema.columns:
                raise _bad(f"{what}: '{name}' is not a column of {entity}.", ERR_BAD_PROPERTY)

    # --- the sender ----------------------------------------------------------------------------------

    def _derive(self) -> None:
        """Replace the sender's step registrations with what the tables now say."""
        for registration_id in self._derived:
            self.sender.unregister(registration_id)
        self._derived = []
        images = list(self.tables["sdkmessageprocessingstepimages"].values())
        for step in self.tables["sdkmessageprocessingsteps"].values():
            endpoint = self.tables["serviceendpoints"].get(step["_eventhandler_value"])
            if step.get("statecode", 0) != 0 or endpoint is None or endpoint.get("contract") != 8:
                continue
            message = self.tables["sdkmessages"][step["_sdkmessageid_value"]]["name"]
            entity = self.tables["sdkmessagefilters"][step["_sdkmessagefilterid_value"]]["primaryobjecttypecode"]
            auth_type = AUTH_TYPES[endpoint["authtype"]]
            auth_name, auth_value = "", str(endpoint.get("authvalue") or "")
            if auth_type != "webhook_key":
                auth_name, auth_value = next(iter(_header_settings(auth_value).items()))
            step_id = step["sdkmessageprocessingstepid"]
            registration: dict[str, Any] = {
                "url": endpoint["url"],
                "entity": entity,
                "messages": frozenset({message}),
                "auth_type": auth_type,
                "auth_value": auth_value,
                "auth_name": auth_name,
                "filtering_attributes": _names(step.get("filteringattributes")) if message == "Update" else None,
                "mode": "async" if step["mode"] == 1 else "sync",
                "stage": step["stage"],
                "name": str(endpoint.get("name") or "webhook"),
                "id": step_id,
                "owning_step_id": step_id,
            }
            for image in images:
                if image["_sdkmessageprocessingstepid_value"] != step_id:
                    continue
                columns: tuple[str, ...] | str = tuple(sorted(_names(image.get("attributes")) or ())) or "*"
                if image["imagetype"] in (0, 2):
                    registration["pre_image"], registration["pre_image_alias"] = columns, image["entityalias"]
                if image["imagetype"] in (1, 2):
                    registration["post_image"], registration["post_image_alias"] = columns, image["entityalias"]
            self.sender.register(_StepRegistration(**registration))
            self._derived.append(step_id)


def _validate_endpoint(row: dict[str, Any]) -> None:
    row.setdefault("messageformat", 2)
    row.setdefault("userclaim", 1)
    if not row.get("name"):
        raise _bad("A service endpoint needs a name.")
    if row.get("contract") != 8:
        raise _bad("The sandbox supports webhook service endpoints only (contract 8).")
    if row.get("authtype") not in AUTH_TYPES:
        raise _bad("authtype must be 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString).")
    url = row.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise _bad("url must be an http(s) URL.")
    if not row.get("authvalue"):
        raise _bad("authvalue is required.")
    if row["authtype"] != 4:
        _header_settings(str(row["authvalue"]))


def _names(value: Any) -> frozenset[str] | None:
    if not value:
        return None
    return frozenset(part.strip() for part in str(value).split(",") if part.strip())


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise _bad("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise _bad("The request body must be a JSON object.")
    return document


def _parse_conditions(raw: str | None) -> list[tuple[str, Any]]:
    if not raw:
        return []
    conditions = []
    for part in re.split(r"\s+and\s+", raw.strip()):
        match = _CONDITION_RE.match(part)
        if match is None:
            raise _bad(f"The sandbox supports `name eq value` joined with `and`; got '{part}'.", ERR_BAD_PROPERTY)
        value = match.group("value")
        parsed: Any
        if value.startswith("'"):
            parsed = value[1:-1].replace("''", "'")
        elif value in ("true", "false"):
            parsed = value == "true"
        elif value == "null":
            parsed = None
        elif re.fullmatch(r"-?\d+", value):
            parsed = int(value)
        else:
            parsed = value.lower()
        conditions.append((match.group("name"), parsed))
    return conditions


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    return bool(left == right)
