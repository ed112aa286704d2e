"""The Dataverse sandbox: a loopback Web API (/api/data/v9.2) plus a control API (/_sandbox) for tests.

`DataverseSandbox` holds the store, the webhook sender, service protection limits and fault injection;
`create_app(sandbox)` serves it. The Python methods and the control routes do the same things.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandboxes.dataverse import changes
from sandboxes.dataverse.metadata import MetadataRegistry
from sandboxes.dataverse.store import (
    APP_USER_ID,
    ERR_BAD_PROPERTY,
    ERR_DUPLICATE,
    ERR_INVALID_ARGUMENT,
    HUMAN_USER_ID,
    DataverseStore,
    SandboxError,
    TableSchema,
    etag,
    not_found,
)
from sandboxes.dataverse.webhooks import Delivery, SenderOptions, WebhookRegistration, WebhookSender

API_PREFIX = "/api/data/v9.2"
DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - the loopback sandbox's well-known token
MAX_PAGE_SIZE = 5000
ERR_REQUESTS_LIMIT = "0x80072322"
ERR_CONCURRENCY_LIMIT = "0x80072326"
ERR_UNAUTHORIZED = "0x80048306"
_KEY_RE = re.compile(r"^([A-Za-z_]\w*)(?:\(([^)]*)\))?$")
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_TOKEN_RE = re.compile(
    rf"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<guid>{_GUID})"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_]\w*)|(?P<other>\S))"
)


@dataclass
class Limits:
    """Service protection limits per user (None = unlimited)."""

    requests_per_window: int | None = None
    window_seconds: float = 300.0
    concurrent_requests: int | None = None
    concurrency_retry_after: float = 1.0


@dataclass
class Fault:
    """Answer the next `times` requests of `route` ("GET /contacts", "POST /$batch", "*") with `status`."""

    route: str
    status: int
    times: int = 1
    retry_after: float | None = None
    code: str = ""
    message: str = "Injected fault"


class DataverseSandbox:
    """Everything the sandbox knows; thread-safe so tests can drive it in-process while it serves HTTP."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        app_user_id: str = APP_USER_ID,
        custom_columns: Mapping[str, Mapping[str, str]] | None = None,
        sender_options: SenderOptions | None = None,
        webhook_workers: int = 1,
    ) -> None:
        self.token = token
        self.app_user_id = app_user_id
        self.human_user_id = HUMAN_USER_ID
        self.store = DataverseStore(custom_columns=custom_columns)
        self.sender = WebhookSender(self.store, options=sender_options, workers=webhook_workers)
        self.metadata = MetadataRegistry(self.store, self.sender)
        self.limits = Limits()
        self.faults: list[Fault] = []
        self.latency: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._history: dict[str, deque[float]] = {}
        self._in_flight: Counter[str] = Counter()

    # --- administration ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty tables, no webhooks, deliveries, faults, limits or counts (custom columns stay)."""
        self.sender.reset()
        self.store.reset()
        self.metadata.reset()
        with self._lock:
            self.limits = Limits()
            self.faults.clear()
            self.latency.clear()
            self.counts.clear()
            self._history.clear()

    def close(self) -> None:
        self.sender.close()

    def add_column(self, entity: str, name: str, column_type: str, *, max_length: int | None = None) -> None:
        self.store.add_column(entity, name, column_type, max_length=max_length)

    # --- rows, "as a user would" ---------------------------------------------------------------------

    def seed(self, entity: str, attributes: Mapping[str, Any], *, record_id: str | None = None) -> str:
        """Insert a row without firing webhooks."""
        return self.store.seed(entity, attributes, record_id=record_id)

    def create(self, entity: str, attributes: Mapping[str, Any], *, user_id: str | None = None) -> str:
        return self.store.create(entity, attributes, user_id=user_id or self.human_user_id)

    def edit(
        self, entity: str, record_id: str, changes: Mapping[str, Any], *, user_id: str | None = None
    ) -> dict[str, Any]:
        """Update columns like a user in the app: bumps version and modifiedon, fires webhooks."""
        self.store.update(entity, record_id, changes, user_id=user_id or self.human_user_id)
        return self.row(entity, record_id) or {}

    def deactivate(self, entity: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        state = {"statecode": 2, "statuscode": 4} if entity == "lead" else {"statecode": 1, "statuscode": 2}
        return self.edit(entity, record_id, state, user_id=user_id)

    def activate(self, entity: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        return self.edit(entity, record_id, {"statecode": 0, "statuscode": 1}, user_id=user_id)

    def delete(self, entity: str, record_id: str, *, user_id: str | None = None) -> None:
        self.store.delete(entity, record_id, user_id=user_id or self.human_user_id)

    def row(self, entity: str, record_id: str) -> dict[str, Any] | None:
        return self.store.get(entity, record_id)

    def rows(self, entity: str) -> list[dict[str, Any]]:
        return self.store.all_rows(entity)

    # --- webhooks ------------------------------------------------------------------------------------

    def register_webhook(self, **settings: Any) -> WebhookRegistration:
        """Register a webhook; keyword arguments are WebhookRegistration fields."""
        return self.sender.register(_registration(settings))

    def deliveries(self) -> list[Delivery]:
        return self.sender.list_deliveries()

    def drain(self, *, timeout: float = 30.0) -> bool:
        return self.sender.drain(timeout=timeout)

    def release(self, *, order: Literal["reverse", "fifo"] = "reverse") -> int:
        return self.sender.release(order=order)

    def set_webhook_options(self, **options: Any) -> SenderOptions:
        current = asdict(self.sender.options)
        unknown = set(options) - set(current)
        if unknown:
            raise ValueError(f"unknown webhook options: {sorted(unknown)}")
        current.update(options)
        self.sender.options = SenderOptions(**current)
        return self.sender.options

    # --- limits, faults, counts ----------------------------------------------------------------------

    def set_limits(self, **limits: Any) -> Limits:
        with self._lock:
            self.limits = Limits(**{**asdict(self.limits), **limits})
            self._history.clear()
            return self.limits

    def inject_fault(
        self,
        route: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        code: str = "",
        message: str = "Injected fault",
    ) -> Fault:
        fault = Fault(route, status, times, retry_after, code, message)
        with self._lock:
            self.faults.append(fault)
        return fault

    def set_latency(self, route: str, seconds: float) -> None:
        with self._lock:
            self.latency[route] = seconds

    def request_count(self, route: str | None = None) -> int:
        with self._lock:
            return sum(self.counts.values()) if route is None else self.counts[route]

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    @property
    def writes(self) -> list[Any]:
        return list(self.store.writes)

    # --- Web API plumbing ----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and presented == self.token:
            return self.app_user_id
        raise SandboxError(
            401,
            ERR_UNAUTHORIZED,
            "The user is not authenticated: a valid bearer token is required.",
            headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.example/"'},
        )

    def admit(self, user_id: str, route: str) -> float:
        """Apply faults and limits to one request; the injected latency to wait, or a SandboxError."""
        with self._lock:
            self.counts[route] += 1
            for fault in self.faults:
                if fault.times > 0 and fault.route in (route, "*"):
                    fault.times -= 1
                    headers = {"Retry-After": _seconds(fault.retry_after)} if fault.retry_after is not None else {}
                    code = fault.code or (ERR_REQUESTS_LIMIT if fault.status == 429 else "")
                    raise SandboxError(fault.status, code, fault.message, headers=headers)
            limits, now = self.limits, time.monotonic()
            if limits.concurrent_requests is not None and self._in_flight[user_id] >= limits.concurrent_requests:
                raise SandboxError(
                    429,
                    ERR_CONCURRENCY_LIMIT,
                    f"Number of concurrent requests exceeded the limit of {limits.concurrent_requests}.",
                    headers={"Retry-After": _seconds(limits.concurrency_retry_after)},
                )
            if limits.requests_per_window is not None:
                history = self._history.setdefault(user_id, deque())
                while history and history[0] <= now - limits.window_seconds:
                    history.popleft()
                if len(history) >= limits.requests_per_window:
                    wait = history[0] + limits.window_seconds - now
                    raise SandboxError(
                        429,
                        ERR_REQUESTS_LIMIT,
                        f"Number of requests exceeded the limit of {limits.requests_per_window} over time "
                        f"window of {limits.window_seconds:g} seconds.",
                        headers={"Retry-After": _seconds(wait)},
                    )
                history.append(now)
            self._in_flight[user_id] += 1
            return self.latency.get(route, self.latency.get("*", 0.0))

    def done(self, user_id: str) -> None:
        with self._lock:
            self._in_flight[user_id] -= 1


def _seconds(value: float) -> str:
    return str(max(0, math.ceil(value)))


def _registration(settings: Mapping[str, Any]) -> WebhookRegistration:
    data = dict(settings)
    if "messages" in data:
        data["messages"] = frozenset(data["messages"])
    if data.get("filtering_attributes") is not None:
        data["filtering_attributes"] = frozenset(data["filtering_attributes"])
    for image in ("pre_image", "post_image"):
        if isinstance(data.get(image), list | tuple):
            data[image] = tuple(data[image])
    try:
        return WebhookRegistration(**data)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


# --- Web API -----------------------------------------------------------------------------------------


_SANDBOX_UNIT = "00000000-0000-0000-0000-00000000b001"
_SANDBOX_ORG = "00000000-0000-0000-0000-00000000a001"


@dataclass
class OpResult:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json_result(status: int, document: Any, headers: Mapping[str, str] | None = None) -> OpResult:
    merged = {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"}
    merged.update(headers or {})
    return OpResult(status, merged, json.dumps(document).encode())


def _error_result(error: SandboxError) -> OpResult:
    return _json_result(error.status, {"error": {"code": error.code, "message": error.message}}, error.headers)


def _prefer(headers: Mapping[str, str]) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for item in headers.get("prefer", "").split(","):
        name, _, value = item.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs


class WebApi:
    """Executes one Web API operation (a top-level request or one part of a $batch)."""

    def __init__(self, sandbox: DataverseSandbox) -> None:
        self.sandbox = sandbox
        self.store = sandbox.store

    def execute(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        user_id: str,
        root: str,
    ) -> OpResult:
        try:
            return self._execute(method, path, query, headers, body, user_id=user_id, root=root)
        except SandboxError as error:
            return _error_result(error)

    def _execute(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        user_id: str,
        root: str,
    ) -> OpResult:
        if method == "GET" and path.strip("/") == "WhoAmI":
            # The WhoAmI function: who the bearer token belongs to (health checks call it).
            return _json_result(
                200, {"UserId": user_id, "BusinessUnitId": _SANDBOX_UNIT, "OrganizationId": _SANDBOX_ORG}
            )
        if self.sandbox.metadata.handles(path):
            status, meta_headers, document = self.sandbox.metadata.execute(method, path, query, body, root=root)
            if document is None:
                return OpResult(status, {"OData-Version": "4.0", **meta_headers})
            return _json_result(status, document, meta_headers)
        match = _KEY_RE.match(path.strip("/"))
        if match is None:
            raise SandboxError(404, "0x8006088a", f"Resource not found for the segment '{path}'.")
        schema = self.store.schema_for_set(match.group(1))
        key = match.group(2)
        record_id = None
        if key is not None:
            raw = key.split("=", 1)[-1].strip("'")
            if not re.fullmatch(_GUID, raw):
                raise SandboxError(400, ERR_INVALID_ARGUMENT, f"Invalid key '{key}' for {schema.entity_set}.")
            record_id = raw.lower()
        prefs = _prefer(headers)
        if method == "GET":
            if record_id is None:
                return self._list(schema, query, prefs, root)
            return self._get(schema, record_id, query, headers, root)
        if method == "POST" and record_id is None:
            return self._create(schema, query, body, prefs, user_id, root)
        if method == "PATCH" and record_id is not None:
            return self._patch(schema, record_id, query, headers, body, prefs, user_id, root)
        if method == "DELETE" and record_id is not None:
            self.store.delete(schema.entity, record_id, user_id=user_id, if_match=headers.get("if-match"))
            return OpResult(204, {"OData-Version": "4.0"})
        raise SandboxError(405, "0x80060888", f"The method {method} is not allowed on this resource.")

    # --- reads ---------------------------------------------------------------------------------------

    def _get(
        self, schema: TableSchema, record_id: str, query: Mapping[str, str], headers: Mapping[str, str], root: str
    ) -> OpResult:
        select = _select(schema, query.get("$select"))
        row = self.store.get(schema.entity, record_id)
        if row is None:
            raise not_found(schema.entity, record_id)
        if headers.get("if-none-match") == etag(row):
            return OpResult(304, {"ETag": etag(row)})
        document = {"@odata.context": _context_url(root, schema, select, entity=True), **_render(schema, row, select)}
        return _json_result(200, document, {"ETag": etag(row)})

    def _list(self, schema: TableSchema, query: Mapping[str, str], prefs: Mapping[str, str], root: str) -> OpResult:
        tracked = changes.tracked_list(self.store, schema, query, prefs, root, max_page_size=MAX_PAGE_SIZE)
        if tracked is not None:
            return tracked
        unsupported = {"$skip", "$apply"} & set(query)
        if unsupported:
            raise SandboxError(400, ERR_BAD_PROPERTY, f"The query parameter {sorted(unsupported)[0]} is not supported.")
        select = _select(schema, query.get("$select"))
        rows = self.store.all_rows(schema.entity)
        conditions = _parse_filter(schema, query.get("$filter"))
        rows = [row for row in rows if all(_matches(schema, row, c) for c in conditions)]
        rows = _order(schema, rows, query.get("$orderby"))
        page_size = MAX_PAGE_SIZE
        applied: list[str] = []
        if "odata.maxpagesize" in prefs:
            try:
                page_size = max(1, min(MAX_PAGE_SIZE, int(prefs["odata.maxpagesize"])))
            except ValueError:
                raise SandboxError(400, ERR_INVALID_ARGUMENT, "odata.maxpagesize must be an integer.") from None
            applied.append(f"odata.maxpagesize={page_size}")
        elif "$top" in query:
            try:
                rows = rows[: int(query["$top"])]
            except ValueError:
                raise SandboxError(400, ERR_INVALID_ARGUMENT, "$top must be an integer.") from None
        offset = _decode_skiptoken(query["$skiptoken"]) if "$skiptoken" in query else 0
        page = rows[offset : offset + page_size]
        document: dict[str, Any] = {
            "@odata.context": _context_url(root, schema, select, entity=False),
            "value": [_render(schema, row, select) for row in page],
        }
        if offset + page_size < len(rows):
            next_query = {k: v for k, v in query.items() if k != "$skiptoken"}
            next_query["$skiptoken"] = _encode_skiptoken(
                offset + page_size, (offset + page_size) // page_size + 1, page[-1][schema.primary_key]
            )
            document["@odata.nextLink"] = f"{root}/{schema.entity_set}?{urlencode(next_query, quote_via=quote)}"
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return _json_result(200, document, headers)

    # --- writes --------------------------------------------------------------------------------------

    def _create(
        self,
        schema: TableSchema,
        query: Mapping[str, str],
        body: bytes,
        prefs: Mapping[str, str],
        user_id: str,
        root: str,
    ) -> OpResult:
        record_id = self.store.create(schema.entity, _body(body), user_id=user_id)
        return self._written(schema, record_id, query, prefs, root, created=True)

    def _patch(
        self,
        schema: TableSchema,
        record_id: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        prefs: Mapping[str, str],
        user_id: str,
        root: str,
    ) -> OpResult:
        changes = _body(body)
        if headers.get("if-none-match") == "*":
            if self.store.get(schema.entity, record_id) is not None:
                raise SandboxError(412, ERR_DUPLICATE, "A record with matching key values already exists.")
            self.store.create(schema.entity, changes, user_id=user_id, record_id=record_id)
            created = True
        else:
            created = self.store.update(
                schema.entity, record_id, changes, user_id=user_id, if_match=headers.get("if-match"), upsert=True
            )
        return self._written(schema, record_id, query, prefs, root, created=created)

    def _written(
        self,
        schema: TableSchema,
        record_id: str,
        query: Mapping[str, str],
        prefs: Mapping[str, str],
        root: str,
        *,
        created: bool,
    ) -> OpResult:
        row = self.store.get(schema.entity, record_id)
        assert row is not None
        if prefs.get("return") == "representation":
            select = _select(schema, query.get("$select"))
            document = {
                "@odata.context": _context_url(root, schema, select, entity=True),
                **_render(schema, row, select),
            }
            return _json_result(201 if created else 200, document, {"ETag": etag(row)})
        return OpResult(
            204,
            {"OData-Version": "4.0", "OData-EntityId": f"{root}/{schema.entity_set}({record_id})", "ETag": etag(row)},
        )


def _body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The request body must be a JSON object.")
    return document


def _select(schema: TableSchema, raw: str | None) -> list[str] | None:
    if not raw:
        return None
    names: list[str] = []
    for item in raw.split(","):
        name = item.strip()
        lookup = re.fullmatch(r"_(\w+)_value", name)
        column = schema.column(lookup.group(1) if lookup else name)
        if lookup is None and column.type == "lookup":
            raise SandboxError(
                400,
                ERR_BAD_PROPERTY,
                f"Could not find a property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{schema.entity}'. Lookups are selected as '_{name}_value'.",
            )
        names.append(column.name)
    return names


def _render(schema: TableSchema, row: Mapping[str, Any], select: list[str] | None) -> dict[str, Any]:
    document: dict[str, Any] = {"@odata.etag": etag(row)}
    for name in select if select is not None else list(schema.columns):
        column = schema.columns[name]
        value = row.get(name)
        if column.type == "lookup":
            document[f"_{name}_value"] = value
        elif column.type == "multichoice":
            document[name] = ",".join(str(v) for v in value) if value is not None else None
        else:
            document[name] = value
    document[schema.primary_key] = row[schema.primary_key]
    return document


def _context_url(root: str, schema: TableSchema, select: list[str] | None, *, entity: bool) -> str:
    columns = f"({','.join(select)})" if select else ""
    return f"{root}/$metadata#{schema.entity_set}{columns}" + ("/$entity" if entity else "")


def _encode_skiptoken(offset: int, page: int, last_id: str) -> str:
    cookie = base64.urlsafe_b64encode(json.dumps({"o": offset, "id": last_id}).encode()).decode()
    return f'<cookie pagenumber="{page}" pagingcookie="{cookie}" istracking="False" />'


def _decode_skiptoken(token: str) -> int:
    match = re.search(r'pagingcookie="([^"]+)"', token)
    try:
        assert match is not None
        offset = json.loads(base64.urlsafe_b64decode(match.group(1)))["o"]
        assert isinstance(offset, int)
        assert offset >= 0
    except Exception:  # any malformed cookie is the same client error
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The $skiptoken is invalid.") from None
    return offset


# --- $filter / $orderby ------------------------------------------------------------------------------

Condition = tuple[str, str, Any]


_IN_RE = re.compile(
    r"Microsoft\.Dynamics\.CRM\.In\(\s*PropertyName\s*=\s*'(?P<name>\w+)'\s*,"
    r"\s*PropertyValues\s*=\s*\[(?P<values>[^\]]*)\]\s*\)"
)
_IN_VALUE_RE = re.compile(r"\s*(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^']|'')*)')\s*(?:,|$)")


def _in_values(text: str, unsupported: Callable[[str], SandboxError]) -> frozenset[str]:
    """The strings of an `In` function's PropertyValues (a JSON array; single quotes are taken too)."""
    values: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _IN_VALUE_RE.match(text, position)
        if match is None:
            raise unsupported("PropertyValues must be a list of strings")
        double, single = match.groups()
        values.append(json.loads(f'"{double}"') if double is not None else single.replace("''", "'"))
        position = match.end()
    if not values:
        raise unsupported("PropertyValues must not be empty")
    return frozenset(value.lower() for value in values)


def _parse_filter(schema: TableSchema, raw: str | None) -> list[Condition]:
    """The sandbox's $filter subset: `col op literal` and the `Microsoft.Dynamics.CRM.In` query function, joined by
    `and`; anything else is a 400."""
    if not raw:
        return []
    conditions: list[Condition] = []

    def unsupported(detail: str) -> SandboxError:
        return SandboxError(400, ERR_BAD_PROPERTY, f"The $filter expression is not supported by the sandbox: {detail}")

    functions: list[Condition] = []

    def placeholder(match: re.Match[str]) -> str:
        column = schema.column(match.group("name"))
        functions.append((column.name, "in", _in_values(match.group("values"), unsupported)))
        return f"__in{len(functions) - 1}__"

    raw = _IN_RE.sub(placeholder, raw)
    tokens = [(m.lastgroup or "", m.group(m.lastgroup or 0)) for m in _TOKEN_RE.finditer(raw) if m.lastgroup]
    position = 0

    while True:
        function = re.fullmatch(r"__in(\d+)__", tokens[position][1]) if position < len(tokens) else None
        if function is not None and tokens[position][0] == "word":
            conditions.append(functions[int(function.group(1))])
            position += 1
            if position == len(tokens):
                return conditions
            if tokens[position] != ("word", "and"):
                raise unsupported(f"only 'and' is supported, got '{tokens[position][1]}'")
            position += 1
            continue
        if position + 3 > len(tokens):
            raise unsupported("expected '<column> <operator> <value>'")
        (kind, name), (op_kind, op), (lit_kind, literal) = tokens[position : position + 3]
        if kind != "word" or op_kind != "word" or op not in ("eq", "ne", "gt", "ge", "lt", "le"):
            raise unsupported(f"near '{name}'")
        lookup = re.fullmatch(r"_(\w+)_value", name)
        column = schema.column(lookup.group(1) if lookup else name)
        value = _literal(lit_kind, literal, unsupported)
        if op not in ("eq", "ne") and column.type not in ("datetime", "int", "bigint"):
            raise unsupported(f"'{op}' is supported only on date/time and integer columns")
        if column.type == "datetime" and value is not None and not isinstance(value, datetime):
            raise unsupported(f"'{name}' needs a date/time literal")
        conditions.append((column.name, op, value))
        position += 3
        if position == len(tokens):
            return conditions
        if tokens[position] != ("word", "and"):
            raise unsupported(f"only 'and' is supported, got '{tokens[position][1]}'")
        position += 1


def _literal(kind: str, text: str, unsupported: Callable[[str], SandboxError]) -> Any:
    if kind == "str":
        return text[1:-1].replace("''", "'")
    if kind == "guid":
        return text.lower()
    if kind == "dt":
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    if kind == "date":
        return text
    if kind == "num":
        return float(text) if "." in text else int(text)
    if kind == "word" and text in ("true", "false"):
        return text == "true"
    if kind == "word" and text == "null":
        return None
    raise unsupported(f"unsupported literal '{text}'")


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value.lower()
    return value


def _matches(schema: TableSchema, row: Mapping[str, Any], condition: Condition) -> bool:
    name, op, literal = condition
    value = row.get(name)
    if op == "in":
        return value is not None and str(value).lower() in literal
    if op in ("eq", "ne"):
        left = value.lower() if isinstance(value, str) else value
        right = literal.lower() if isinstance(literal, str) else literal
        if isinstance(literal, datetime):
            left = _comparable(value)
        equal = left == right
        return equal if op == "eq" else not equal
    if value is None or literal is None:
        return False
    left, right = _comparable(value), literal
    try:
        outcome: bool = {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]
    except TypeError:
        raise SandboxError(400, ERR_BAD_PROPERTY, f"The $filter value for '{name}' has the wrong type.") from None
    return outcome


def _order(schema: TableSchema, rows: list[dict[str, Any]], raw: str | None) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda row: row[schema.primary_key])
    if not raw:
        return rows
    for item in reversed([part.strip() for part in raw.split(",") if part.strip()]):
        name, _, direction = item.partition(" ")
        column = schema.column(name)
        descending = direction.strip().lower() == "desc"
        rows.sort(key=lambda row: (row.get(column.name) is not None, row.get(column.name) or 0), reverse=descending)
    return rows


# --- $batch ------------------------------------------------------------------------------------------


@dataclass
class _BatchOp:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


def _boundary(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if match is None:
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The $batch request must be multipart/mixed with a boundary.")
    return match.group(1).strip()


def _headers_and_rest(block: bytes) -> tuple[dict[str, str], bytes]:
    text = block.replace(b"\r\n", b"\n")
    head, _, rest = text.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + _boundary(content_type).encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.replace(b"\r\n", b"\n").split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(_headers_and_rest(chunk.lstrip(b"\n")))
    return parts


def _op(headers: Mapping[str, str], payload: bytes) -> _BatchOp:
    request_line, _, rest = payload.lstrip(b"\n").partition(b"\n")
    pieces = request_line.decode().split()
    if len(pieces) < 2:
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "A $batch part has no request line.")
    op_headers, body = _headers_and_rest(rest) if rest.strip() else ({}, b"")
    if not rest.startswith(b"\n") and b"\n\n" not in rest:
        op_headers, body = _headers_and_rest(rest + b"\n\n")
    return _BatchOp(pieces[0].upper(), pieces[1], op_headers, body.strip(), headers.get("content-id"))


def _relative_path(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    path = parts.path
    if API_PREFIX in path:
        path = path.split(API_PREFIX, 1)[1]
    return path.lstrip("/"), dict(parse_qsl(parts.query, keep_blank_values=True))


def _http_part(result: OpResult, content_id: str | None) -> list[str]:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {result.status} {HTTPStatus(result.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in result.headers.items()]
    lines += ["", result.body.decode()]
    return lines


def run_batch(
    api: WebApi, content_type: str, body: bytes, prefs: Mapping[str, str], *, user_id: str, root: str
) -> Response:
    continue_on_error = "odata.continue-on-error" in prefs
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    parts = _parts(content_type, body)
    if len(parts) > 1000:
        raise SandboxError(400, ERR_INVALID_ARGUMENT, "The number of requests in a batch exceeds 1000.")
    for headers, payload in parts:
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            ops = [_op(h, p) for h, p in _parts(part_type, payload)]
            if any(op.method == "GET" for op in ops):
                raise SandboxError(400, ERR_INVALID_ARGUMENT, "GET requests are not allowed inside a change set.")
            results, failed = _run_changeset(api, ops, user_id=user_id, root=root)
            if failed is not None:
                out += [f"--{boundary}", *_http_part(failed[1], failed[0].content_id)]
                if not continue_on_error:
                    break
                continue
            changeset = f"changesetresponse_{uuid.uuid4()}"
            out += [f"--{boundary}", f"Content-Type: multipart/mixed; boundary={changeset}", ""]
            for op, result in zip(ops, results, strict=True):
                out += [f"--{changeset}", *_http_part(result, op.content_id)]
            out += [f"--{changeset}--"]
        else:
            op = _op(headers, payload)
            path, query = _relative_path(op.url)
            result = api.execute(op.method, path, query, op.headers, op.body, user_id=user_id, root=root)
            out += [f"--{boundary}", *_http_part(result, op.content_id)]
            if result.status >= 400 and not continue_on_error:
                break
    out += [f"--{boundary}--", ""]
    headers = {"OData-Version": "4.0"}
    if continue_on_error:
        headers["Preference-Applied"] = "odata.continue-on-error"
    return Response(
        "\r\n".join(out).encode(), status_code=200, media_type=f"multipart/mixed; boundary={boundary}", headers=headers
    )


def _run_changeset(
    api: WebApi, ops: list[_BatchOp], *, user_id: str, root: str
) -> tuple[list[OpResult], tuple[_BatchOp, OpResult] | None]:
    results: list[OpResult] = []

    class _Rollback(Exception):
        pass

    failure: tuple[_BatchOp, OpResult] | None = None
    try:
        with api.store.transaction():
            for op in ops:
                path, query = _relative_path(op.url)
                result = api.execute(op.method, path, query, op.headers, op.body, user_id=user_id, root=root)
                if result.status >= 400:
                    failure = (op, result)
                    raise _Rollback
                results.append(result)
    except _Rollback:
        return [], failure
    return results, None


# --- HTTP layer --------------------------------------------------------------------------------------


def _route_key(method: str, path: str) -> str:
    segment = path.strip("/").split("/", 1)[0].split("(", 1)[0]
    return f"{method} /{segment}"


def _response(result: OpResult) -> Response:
    return Response(result.body, status_code=result.status, headers=result.headers)


async def web_api(request: Request) -> Response:
    sandbox: DataverseSandbox = request.app.state.sandbox
    api: WebApi = request.app.state.web_api
    path = request.path_params["path"]
    route = _route_key(request.method, path)
    root = f"{str(request.base_url).rstrip('/')}{API_PREFIX}"
    try:
        user_id = sandbox.authenticate(request.headers.get("authorization"))
    except SandboxError as error:
        with sandbox._lock:
            sandbox.counts[route] += 1
        return _response(_error_result(error))
    try:
        delay = sandbox.admit(user_id, route)
    except SandboxError as error:
        return _response(_error_result(error))
    try:
        if delay:
            await asyncio.sleep(delay)
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if path == "$batch" and request.method == "POST":
            try:
                return await run_in_threadpool(
                    run_batch, api, headers.get("content-type", ""), body, _prefer(headers), user_id=user_id, root=root
                )
            except SandboxError as error:
                return _response(_error_result(error))
        query = dict(request.query_params)
        result = await run_in_threadpool(
            api.execute, request.method, path, query, headers, body, user_id=user_id, root=root
        )
        return _response(result)
    finally:
        sandbox.done(user_id)


# --- control API -------------------------------------------------------------------------------------


def _ok(document: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(document, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("body must be a JSON object")
    return document


def control_routes() -> list[Route]:
    async def handle(request: Request) -> Response:
        sandbox: DataverseSandbox = request.app.state.sandbox
        name = request.scope["route"].name
        params = request.path_params
        try:
            body = await _json(request)
            return await _control(sandbox, name, params, body, dict(request.query_params))
        except SandboxError as error:
            return _response(_error_result(error))
        except (ValueError, TypeError, KeyError) as exc:
            return _ok({"error": {"code": "sandbox", "message": str(exc)}}, 400)

    table = [
        ("/_sandbox/reset", ["POST"], "reset"),
        ("/_sandbox/rows/{entity}", ["GET"], "rows"),
        ("/_sandbox/rows/{entity}", ["POST"], "seed"),
        ("/_sandbox/rows/{entity}/{id}", ["GET"], "row"),
        ("/_sandbox/rows/{entity}/{id}", ["PATCH"], "edit"),
        ("/_sandbox/rows/{entity}/{id}", ["DELETE"], "delete"),
        ("/_sandbox/rows/{entity}/{id}/deactivate", ["POST"], "deactivate"),
        ("/_sandbox/rows/{entity}/{id}/activate", ["POST"], "activate"),
        ("/_sandbox/columns/{entity}", ["POST"], "add_column"),
        ("/_sandbox/writes", ["GET"], "writes"),
        ("/_sandbox/webhooks", ["GET"], "webhooks"),
        ("/_sandbox/webhooks", ["POST"], "register"),
        ("/_sandbox/webhooks/options", ["PUT"], "options"),
        ("/_sandbox/webhooks/deliveries", ["GET"], "deliveries"),
        ("/_sandbox/webhooks/drain", ["POST"], "drain"),
        ("/_sandbox/webhooks/release", ["POST"], "release"),
        ("/_sandbox/webhooks/{id}", ["DELETE"], "unregister"),
        ("/_sandbox/requests", ["GET"], "requests"),
        ("/_sandbox/faults", ["POST"], "fault"),
        ("/_sandbox/faults", ["DELETE"], "clear_faults"),
        ("/_sandbox/latency", ["PUT"], "latency"),
        ("/_sandbox/limits", ["PUT"], "limits"),
        ("/_sandbox/changes/expire", ["POST"], "expire_changes"),
    ]
    return [Route(path, handle, methods=methods, name=name) for path, methods, name in table]


async def _control(
    sandbox: DataverseSandbox, name: str, params: Mapping[str, str], body: dict[str, Any], query: Mapping[str, str]
) -> Response:
    entity, record_id = params.get("entity", ""), params.get("id", "")
    user = body.get("user_id")
    if name == "reset":
        await run_in_threadpool(sandbox.reset)
        return _ok({"reset": True})
    if name == "rows":
        return _ok({"value": sandbox.rows(entity)})
    if name == "seed":
        if body.get("fire_webhooks"):
            new_id = await run_in_threadpool(sandbox.create, entity, body.get("attributes", {}), user_id=user)
        else:
            new_id = sandbox.seed(entity, body.get("attributes", {}), record_id=body.get("id"))
        return _ok(sandbox.row(entity, new_id), 201)
    if name == "row":
        row = sandbox.row(entity, record_id)
        return _ok(row) if row is not None else _response(_error_result(not_found(entity, record_id)))
    if name == "edit":
        return _ok(await run_in_threadpool(sandbox.edit, entity, record_id, body.get("attributes", {}), user_id=user))
    if name == "delete":
        await run_in_threadpool(sandbox.delete, entity, record_id, user_id=user)
        return Response(status_code=204)
    if name in ("deactivate", "activate"):
        return _ok(await run_in_threadpool(getattr(sandbox, name), entity, record_id, user_id=user))
    if name == "add_column":
        sandbox.add_column(entity, body["name"], body["type"], max_length=body.get("max_length"))
        return _ok({"added": body["name"]}, 201)
    if name == "writes":
        return _ok({"value": [asdict(w) for w in sandbox.writes]})
    if name == "webhooks":
        return _ok({"value": [r.to_json() for r in sandbox.sender.registrations.values()]})
    if name == "register":
        return _ok(sandbox.register_webhook(**body).to_json(), 201)
    if name == "unregister":
        sandbox.sender.unregister(record_id)
        return Response(status_code=204)
    if name == "options":
        return _ok(asdict(sandbox.set_webhook_options(**body)))
    if name == "deliveries":
        with_body = query.get("body", "true").lower() != "false"
        return _ok({"value": [d.to_json(with_body=with_body) for d in sandbox.deliveries()]})
    if name == "drain":
        timeout = float(body.get("timeout", 30.0))
        drained = await run_in_threadpool(lambda: sandbox.drain(timeout=timeout))
        return _ok({"drained": drained}, 200 if drained else 504)
    if name == "release":
        released = await run_in_threadpool(lambda: sandbox.release(order=body.get("order", "reverse")))
        return _ok({"released": released})
    if name == "requests":
        return _ok({"counts": sandbox.request_counts(), "total": sandbox.request_count()})
    if name == "fault":
        return _ok(asdict(sandbox.inject_fault(**body)), 201)
    if name == "clear_faults":
        with sandbox._lock:
            sandbox.faults.clear()
        return Response(status_code=204)
    if name == "latency":
        sandbox.set_latency(body["route"], float(body["seconds"]))
        return _ok({"latency": sandbox.latency})
    if name == "limits":
        return _ok(asdict(sandbox.set_limits(**body)))
    if name == "expire_changes":
        changes.expire_tokens(sandbox.store)
        return _ok({"expired": True})
    raise KeyError(name)  # pragma: no cover


def create_app(sandbox: DataverseSandbox | None = None, **settings: Any) -> Starlette:
    """The sandbox as an ASGI app; `settings` go to DataverseSandbox when none is given."""
    sandbox = sandbox or DataverseSandbox(**settings)
    routes = [
        *control_routes(),
        Route(API_PREFIX + "/{path:path}", web_api, methods=["GET", "POST", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    app.state.web_api = WebApi(sandbox)
    return app
