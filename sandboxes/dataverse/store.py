"""The sandbox's tables: schemas, rows and the rules Dataverse enforces on writes.

Values are kept in Web API form (choice -> int, DateOnly -> "YYYY-MM-DD", DateTime -> "…Z", lookup -> guid).
Every committed write is recorded (who, which columns) and announced to listeners (the webhook sender):
`sync_step` runs inside the transaction (a failure rolls the write back), `async_step` after commit.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol

ColumnType = Literal[
    "string",
    "memo",
    "int",
    "bigint",
    "bool",
    "choice",
    "multichoice",
    "money",
    "date",
    "datetime",
    "guid",
    "lookup",
]
COLUMN_TYPES: tuple[str, ...] = (
    "string",
    "memo",
    "int",
    "bigint",
    "bool",
    "choice",
    "multichoice",
    "money",
    "date",
    "datetime",
    "guid",
    "lookup",
)
Message = Literal["Create", "Update", "Delete"]

APP_USER_ID = "5a1d7c11-a2b3-4c5d-8e9f-0a1b2c3d4e5f"
HUMAN_USER_ID = "75c2dd85-e89e-e711-8122-000d3aa2331c"
STATE_COLUMNS = frozenset({"statecode", "statuscode"})
PLATFORM_COLUMNS = ("modifiedon", "modifiedby", "modifiedonbehalfby")
DEFAULTS: dict[str, Any] = {"donotemail": False, "donotbulkemail": False}
DEFAULT_CUSTOM_COLUMNS: dict[str, dict[str, str]] = {
    entity: {
        "sync_spotlerstatus": "choice",
        "sync_spotlerstatusdetail": "string",
        "sync_spotlerlastsynced": "datetime",
        "sync_newsletter": "bool",
        "sync_interests": "multichoice",
    }
    for entity in ("contact", "lead", "account")
}
"""The connector's example custom columns, present unless other custom columns are configured."""

ERR_NOT_FOUND = "0x80040217"
ERR_DUPLICATE = "0x80040237"
ERR_VERSION_MISMATCH = "0x80060882"
ERR_BAD_PROPERTY = "0x80060888"
ERR_INVALID_ARGUMENT = "0x80040203"
ERR_PLUGIN = "0x80040265"

_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class SandboxError(Exception):
    """A failure the Web API answers with `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    max_length: int | None = None
    writable: bool = True
    targets: tuple[str, ...] = ()  # lookup: the tables it may point at


@dataclass
class TableSchema:
    entity: str
    entity_set: str
    primary_key: str
    primary_name: str
    columns: dict[str, Column]
    states: dict[int, tuple[int, ...]]  # statecode -> allowed statuscodes, the first is the default
    editable_states: frozenset[int] = frozenset({0})

    def column(self, name: str) -> Column:
        try:
            return self.columns[name]
        except KeyError:
            raise SandboxError(
                400,
                ERR_BAD_PROPERTY,
                f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{self.entity}'.",
            ) from None


def _columns(*columns: Column) -> dict[str, Column]:
    return {column.name: column for column in columns}


def _common(entity: str) -> list[Column]:
    return [
        Column(f"{entity}id", "guid", writable=False),
        Column("emailaddress1", "string", 100),
        Column("telephone1", "string", 50),
        Column("donotemail", "bool"),
        Column("donotbulkemail", "bool"),
        Column("statecode", "choice"),
        Column("statuscode", "choice"),
        Column("createdon", "datetime", writable=False),
        Column("modifiedon", "datetime", writable=False),
        Column("versionnumber", "bigint", writable=False),
        Column("createdby", "lookup", writable=False, targets=("systemuser",)),
        Column("modifiedby", "lookup", writable=False, targets=("systemuser",)),
        Column("modifiedonbehalfby", "lookup", writable=False, targets=("systemuser",)),
        Column("ownerid", "lookup", targets=("systemuser",)),
    ]


def _address() -> list[Column]:
    return [
        Column("address1_line1", "string", 250),
        Column("address1_city", "string", 80),
        Column("address1_postalcode", "string", 20),
        Column("address1_country", "string", 80),
    ]


def default_schemas() -> dict[str, TableSchema]:
    """contact, lead and account with the columns of the reference (reference §3.2)."""
    person = [
        Column("firstname", "string", 50),
        Column("lastname", "string", 50),
        Column("fullname", "string", 160, writable=False),
        Column("jobtitle", "string", 100),
    ]
    contact = TableSchema(
        "contact",
        "contacts",
        "contactid",
        "fullname",
        _columns(
            *_common("contact"),
            *person,
            *_address(),
            Column("birthdate", "date"),
            Column("parentcustomerid", "lookup", targets=("account", "contact")),
        ),
        {0: (1,), 1: (2,)},
    )
    lead = TableSchema(
        "lead",
        "leads",
        "leadid",
        "fullname",
        _columns(
            *_common("lead"),
            *person,
            *_address(),
            Column("subject", "string", 300),
            Column("companyname", "string", 100),
        ),
        {0: (1, 2), 1: (3,), 2: (4, 5, 6, 7)},
    )
    account = TableSchema(
        "account",
        "accounts",
        "accountid",
        "name",
        _columns(*_common("account"), *_address(), Column("name", "string", 160)),
        {0: (1,), 1: (2,)},
    )
    return {schema.entity: schema for schema in (contact, lead, account)}


@dataclass(frozen=True)
class ChangeNotice:
    """One committed write of one row, as the event pipeline sees it."""

    entity: str
    record_id: str
    message: Message
    submitted: dict[str, Any]  # the columns the caller sent (the webhook Target)
    pre: dict[str, Any] | None
    post: dict[str, Any] | None
    user_id: str
    correlation_id: str
    at: datetime


@dataclass(frozen=True)
class WriteRecord:
    entity: str
    record_id: str
    message: Message
    user_id: str
    changed: tuple[str, ...]
    version: int | None


class ChangeListener(Protocol):
    def sync_step(self, notice: ChangeNotice) -> None: ...

    def async_step(self, notice: ChangeNotice) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Transaction:
    notices: list[ChangeNotice] = field(default_factory=list)
    undo: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)  # original rows


class DataverseStore:
    """In-memory tables with Dataverse's write rules; thread-safe."""

    def __init__(self, *, custom_columns: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._lock = threading.RLock()
        chosen = DEFAULT_CUSTOM_COLUMNS if custom_columns is None else custom_columns
        self._custom = {entity: dict(columns) for entity, columns in chosen.items()}
        self.listeners: list[ChangeListener] = []
        self.clock: Callable[[], datetime] = utc_now
        self._tx: _Transaction | None = None
        self.reset()

    # --- administration ------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.schemas = default_schemas()
            for entity, columns in self._custom.items():
                for name, column_type in columns.items():
                    self._add_column(entity, name, column_type)
            self.rows: dict[str, dict[str, dict[str, Any]]] = {entity: {} for entity in self.schemas}
            self.writes: list[WriteRecord] = []
            self._version = 1000
            self._last_time: datetime | None = None

    def add_column(
        self, entity: str, name: str, column_type: str, *, max_length: int | None = None, keep: bool = True
    ) -> None:
        """Add a custom column (kept across resets unless `keep` is False, as for columns made over the Web API)."""
        with self._lock:
            self._add_column(entity, name, column_type, max_length)
            if keep:
                self._custom.setdefault(entity, {})[name] = column_type

    def _add_column(self, entity: str, name: str, column_type: str, max_length: int | None = None) -> None:
        if column_type not in COLUMN_TYPES:
            raise ValueError(f"unknown column type {column_type!r}; use one of {', '.join(COLUMN_TYPES)}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"invalid column name {name!r}")
        length = max_length or (4000 if column_type == "string" else None)
        self.schema(entity).columns[name] = Column(name, column_type, length)  # type: ignore[arg-type]

    def schema(self, entity: str) -> TableSchema:
        try:
            return self.schemas[entity]
        except KeyError:
            raise SandboxError(404, "0x80040217", f"Entity '{entity}' was not found.") from None

    def schema_for_set(self, entity_set: str) -> TableSchema:
        for schema in self.schemas.values():
            if schema.entity_set == entity_set:
                return schema
        raise SandboxError(404, "0x8006088a", f"Resource not found for the segment '{entity_set}'.")

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, entity: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.rows[self.schema(entity).entity].get(record_id.lower())
            return copy.deepcopy(row) if row is not None else None

    def all_rows(self, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(row) for row in self.rows[self.schema(entity).entity].values()]

    def owner_table(self, record_id: str, targets: Sequence[str]) -> str:
        """The logical name of the table holding `record_id` among `targets` (for EntityReference)."""
        with self._lock:
            for target in targets:
                if target in self.rows and record_id in self.rows[target]:
                    return target
        return targets[0] if targets else "systemuser"

    # --- writes --------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside succeed or none do; async listeners hear about them only after commit."""
        with self._lock:
            if self._tx is not None:
                yield
                return
            version, writes, last_time = self._version, len(self.writes), self._last_time
            self._tx = _Transaction()
            try:
                yield
            except BaseException:
                for (entity, record_id), original in self._tx.undo.items():
                    if original is None:
                        self.rows[entity].pop(record_id, None)
                    else:
                        self.rows[entity][record_id] = original
                self._version, self._last_time = version, last_time
                del self.writes[writes:]
                self._tx = None
                raise
            notices, self._tx = self._tx.notices, None
        for notice in notices:
            for listener in list(self.listeners):
                listener.async_step(notice)

    def seed(self, entity: str, attributes: Mapping[str, Any], *, record_id: str | None = None) -> str:
        """Insert a row without firing webhooks (test data)."""
        return self._create(entity, attributes, record_id=record_id, user_id=HUMAN_USER_ID, notify=False)

    def create(self, entity: str, attributes: Mapping[str, Any], *, user_id: str, record_id: str | None = None) -> str:
        return self._create(entity, attributes, record_id=record_id, user_id=user_id, notify=True)

    def _create(
        self,
        entity: str,
        attributes: Mapping[str, Any],
        *,
        record_id: str | None,
        user_id: str,
        notify: bool,
    ) -> str:
        schema = self.schema(entity)
        values = dict(attributes)
        given_id = values.pop(schema.primary_key, None) or record_id
        new_id = _check_guid(given_id) if given_id else str(uuid.uuid4())
        with self.transaction():
            if new_id in self.rows[entity]:
                raise SandboxError(412, ERR_DUPLICATE, "A record with matching key values already exists.")
            clean = self._validated(schema, values, creating=True)
            now = self._tick()
            row: dict[str, Any] = dict.fromkeys(schema.columns)
            row.update(DEFAULTS)
            row.update(clean)
            row[schema.primary_key] = new_id
            state = row.get("statecode")
            row["statecode"] = 0 if state is None else state
            if row.get("statuscode") is None:
                row["statuscode"] = schema.states[row["statecode"]][0]
            self._check_state(schema, row["statecode"], row["statuscode"])
            row.update(
                createdon=iso(now),
                modifiedon=iso(now),
                createdby=user_id,
                modifiedby=user_id,
                versionnumber=self._next_version(),
            )
            if row.get("ownerid") is None:
                row["ownerid"] = user_id
            _compute(schema, row)
            self._remember(entity, new_id)
            self.rows[entity][new_id] = row
            self.writes.append(
                WriteRecord(entity, new_id, "Create", user_id, tuple(sorted(clean)), row["versionnumber"])
            )
            if notify:
                self._notify(entity, new_id, "Create", clean, None, row, user_id)
        return new_id

    def update(
        self,
        entity: str,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        user_id: str,
        if_match: str | None = None,
        upsert: bool = False,
    ) -> bool:
        """Apply `changes`; True when the row was created (upsert). 404 when missing and not upserting."""
        schema = self.schema(entity)
        record_id = _check_guid(record_id)
        with self.transaction():
            current = self.rows[entity].get(record_id)
            if current is None:
                if upsert and if_match is None:
                    self.create(entity, changes, user_id=user_id, record_id=record_id)
                    return True
                raise not_found(entity, record_id)
            if if_match not in (None, "*") and if_match != etag(current):
                raise SandboxError(
                    412,
                    ERR_VERSION_MISMATCH,
                    "The version of the existing record doesn't match the RowVersion property provided.",
                )
            clean = self._validated(schema, dict(changes), creating=False)
            self._check_editable(schema, current, clean)
            row = copy.deepcopy(current)
            row.update(clean)
            if "statecode" in clean and "statuscode" not in clean:
                row["statuscode"] = schema.states.get(row["statecode"], (None,))[0]
                clean["statuscode"] = row["statuscode"]
            self._check_state(schema, row["statecode"], row["statuscode"])
            _compute(schema, row)
            row.update(modifiedon=iso(self._tick()), modifiedby=user_id, versionnumber=self._next_version())
            self._remember(entity, record_id)
            self.rows[entity][record_id] = row
            self.writes.append(
                WriteRecord(entity, record_id, "Update", user_id, tuple(sorted(clean)), row["versionnumber"])
            )
            self._notify(entity, record_id, "Update", clean, current, row, user_id)
        return False

    def delete(self, entity: str, record_id: str, *, user_id: str, if_match: str | None = None) -> None:
        self.schema(entity)
        record_id = _check_guid(record_id)
        with self.transaction():
            current = self.rows[entity].get(record_id)
            if current is None:
                raise not_found(entity, record_id)
            if if_match not in (None, "*") and if_match != etag(current):
                raise SandboxError(
                    412,
                    ERR_VERSION_MISMATCH,
                    "The version of the existing record doesn't match the RowVersion property provided.",
                )
            self._remember(entity, record_id)
            del self.rows[entity][record_id]
            version = self._next_version()  # change tracking reports the delete after this version
            self.writes.append(WriteRecord(entity, record_id, "Delete", user_id, (), version))
            self._notify(entity, record_id, "Delete", {}, current, None, user_id)

    # --- rules ---------------------------------------------------------------------------------------

    def _validated(self, schema: TableSchema, values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key.endswith("@odata.bind"):
                name, bound = self._bind(schema, key[: -len("@odata.bind")], value)
                clean[name] = bound
                continue
            if "@" in key:
                continue  # @odata.type and other annotations carry no data
            column = schema.column(key)
            if not column.writable and not (creating and column.name == schema.primary_key):
                raise SandboxError(400, ERR_INVALID_ARGUMENT, f"The property '{key}' cannot be set: it is read-only.")
            clean[key] = coerce(column, value)
        return clean

    def _bind(self, schema: TableSchema, navigation: str, value: Any) -> tuple[str, str | None]:
        candidates = [navigation, navigation.rsplit("_", 1)[0]]
        column = next(
            (schema.columns[c] for c in candidates if c in schema.columns and schema.columns[c].type == "lookup"),
            None,
        )
        if column is None:
            raise SandboxError(
                400,
                ERR_BAD_PROPERTY,
                f"An undeclared property '{navigation}' which only has property annotations in the payload "
                "but no property value was found in the payload.",
            )
        if value is None:
            return column.name, None
        match = re.fullmatch(r"/?(?:.*/)?(\w+)\(([0-9a-fA-F-]{36})\)", str(value))
        if match is None:
            raise SandboxError(400, ERR_INVALID_ARGUMENT, f"Invalid @odata.bind value for '{navigation}'.")
        return column.name, match.group(2).lower()

    def _check_editable(self, schema: TableSchema, current: Mapping[str, Any], clean: Mapping[str, Any]) -> None:
        if current.get("statecode") in schema.editable_states:
            return
        reactivating = clean.get("statecode") in schema.editable_states
        if reactivating or set(clean) <= STATE_COLUMNS:
            return
        raise SandboxError(
            400,
            ERR_INVALID_ARGUMENT,
            f"{schema.entity} With Id = {current[schema.primary_key]} is read-only because it is inactive or "
            "closed; set statecode to active before changing other columns.",
        )

    @staticmethod
    def _check_state(schema: TableSchema, statecode: Any, statuscode: Any) -> None:
        allowed = schema.states.get(statecode)
        if allowed is None:
            raise SandboxError(400, ERR_INVALID_ARGUMENT, f"{statecode} is not a valid state code on {schema.entity}.")
        if statuscode not in allowed:
            raise SandboxError(
                400,
                ERR_INVALID_ARGUMENT,
                f"{statuscode} is not a valid status code for state code {statecode} on {schema.entity}.",
            )

    def _notify(
        self,
        entity: str,
        record_id: str,
        message: Message,
        submitted: dict[str, Any],
        pre: dict[str, Any] | None,
        post: dict[str, Any] | None,
        user_id: str,
    ) -> None:
        notice = ChangeNotice(
            entity=entity,
            record_id=record_id,
            message=message,
            submitted=copy.deepcopy(submitted),
            pre=copy.deepcopy(pre),
            post=copy.deepcopy(post),
            user_id=user_id,
            correlation_id=str(uuid.uuid4()),
            at=self._last_time or utc_now(),
        )
        for listener in list(self.listeners):
            listener.sync_step(notice)  # may raise: the transaction rolls back
        assert self._tx is not None
        self._tx.notices.append(notice)

    def _remember(self, entity: str, record_id: str) -> None:
        assert self._tx is not None
        self._tx.undo.setdefault((entity, record_id), self.rows[entity].get(record_id))

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _tick(self) -> datetime:
        """Now, strictly later than the previous write, so modifiedon orders writes like versionnumber."""
        now = self.clock()
        if self._last_time is not None and now <= self._last_time:
            now = self._last_time + timedelta(seconds=1)
        self._last_time = now
        return now


def _compute(schema: TableSchema, row: dict[str, Any]) -> None:
    if "fullname" in schema.columns:
        full = " ".join(part for part in (row.get("firstname"), row.get("lastname")) if part)
        row["fullname"] = full or None


def etag(row: Mapping[str, Any]) -> str:
    return f'W/"{row["versionnumber"]}"'


def not_found(entity: str, record_id: str) -> SandboxError:
    return SandboxError(404, ERR_NOT_FOUND, f"{entity} With Id = {record_id} Does Not Exist")


def _check_guid(value: Any) -> str:
    if not isinstance(value, str) or not _GUID_RE.match(value.strip("{}")):
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The id is not a valid GUID.")
    return value.strip("{}").lower()


def _type_error(column: Column, expected: str) -> SandboxError:
    return SandboxError(
        400,
        ERR_BAD_PROPERTY,
        f"Cannot convert the literal value of property '{column.name}' to the expected type '{expected}'.",
    )


def coerce(column: Column, value: Any) -> Any:
    """A JSON value for `column` in Web API form, or a 400 like the Web API's."""
    if value is None:
        return None
    kind = column.type
    if kind in ("string", "memo"):
        if not isinstance(value, str):
            raise _type_error(column, "Edm.String")
        if column.max_length is not None and len(value) > column.max_length:
            raise SandboxError(
                400,
                ERR_INVALID_ARGUMENT,
                f"A validation error occurred. The length of the '{column.name}' attribute exceeded the "
                f"maximum allowed length of '{column.max_length}'.",
            )
        return value
    if kind in ("int", "bigint", "choice"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(column, "Edm.Int32" if kind != "bigint" else "Edm.Int64")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(column, "Edm.Boolean")
        return value
    if kind == "money":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(column, "Edm.Decimal")
        return float(value)
    if kind == "multichoice":
        if isinstance(value, str):  # the Web API's own form: "1,2,3"
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise _type_error(column, "Edm.String") from None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise _type_error(column, "Edm.String")
        return list(value)
    if kind == "date":
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise _type_error(column, "Edm.Date") from None
    if kind == "datetime":
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise _type_error(column, "Edm.DateTimeOffset") from None
        return iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    if kind in ("guid", "lookup"):
        return _check_guid(value)
    raise _type_error(column, kind)  # pragma: no cover
