"""A webhook sender that behaves like Dataverse's: RemoteExecutionContext bodies, lower-case x-ms-dynamics-*
headers, the three authentication types, filtering attributes, images, sync/async steps, one retry on
502/503/504 only, a 60 s timeout, the 256 KB size rule and the split of state changes out of an Update.

Test options: hold deliveries and release them out of order, duplicate every delivery, force the
size-exceeded form. Every delivery is recorded (status, attempts, body).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from sandboxes.dataverse.store import (
    ERR_PLUGIN,
    PLATFORM_COLUMNS,
    STATE_COLUMNS,
    ChangeNotice,
    DataverseStore,
    SandboxError,
    TableSchema,
)

AuthType = Literal["webhook_key", "http_header", "http_query_string"]
StepMessage = Literal["Create", "Update", "Delete", "SetState"]
CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
RETRY_STATUSES = frozenset({502, 503, 504})
SIZE_LIMIT = 256 * 1024
ORGANIZATION_ID = "4ef5b371-e89e-e711-8122-000d3aa2331c"
BUSINESS_UNIT_ID = "e2b9dd85-e89e-e711-8122-000d3aa2331c"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class WebhookRegistration:
    """A service endpoint (contract 8) plus its steps for one table."""

    url: str
    entity: str
    messages: frozenset[str] = frozenset({"Create", "Update", "Delete"})
    auth_type: AuthType = "webhook_key"
    auth_value: str = ""
    auth_name: str = ""  # header or query parameter name (http_header / http_query_string)
    filtering_attributes: frozenset[str] | None = None  # Update only; None = every column
    pre_image: tuple[str, ...] | Literal["*"] | None = None  # columns, "*" = all, None = no image
    post_image: tuple[str, ...] | Literal["*"] | None = None
    mode: Literal["async", "sync"] = "async"
    stage: int = 40
    name: str = "sync webhook"
    escape_slashes: bool = False
    include_parent_context: bool = False
    pre_image_alias: str = "PreImage"
    post_image_alias: str = "PostImage"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def step_id(self, message: str) -> str:
        """One sdkmessageprocessingstep per message, stable for the registration."""
        return str(uuid.uuid5(uuid.UUID(self.id), message))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = sorted(self.messages)
        data["filtering_attributes"] = (
            sorted(self.filtering_attributes) if self.filtering_attributes is not None else None
        )
        data["auth_value"] = "***"
        return data


@dataclass
class SenderOptions:
    duplicate: bool = False  # send every delivery twice (a late success re-delivered)
    hold: bool = False  # keep async deliveries until release(), to deliver them out of order
    drop: int = 0  # lose the next N async deliveries, as Dataverse does once its retry has failed
    force_size_exceeded: bool = False
    size_limit: int = SIZE_LIMIT
    timeout: float = 60.0
    organization: str = "sandbox.crm4.dynamics.com"
    organization_name: str = "unqsandbox"
    utc_offset: str | None = None  # e.g. "+0200": /Date(ms+0200)/ everywhere, DateOnly at local midnight


@dataclass
class Delivery:
    """One webhook call (with its retry) as Dataverse's asyncoperation would record it."""

    id: str
    registration_id: str
    message: str
    entity: str
    record_id: str
    url: str
    body: str
    headers: dict[str, str]
    operation_id: str
    status: Literal["held", "pending", "succeeded", "failed", "dropped"] = "pending"
    attempts: list[int] = field(default_factory=list)  # HTTP status per attempt, 0 = no response
    error: str = ""
    size_exceeded: bool = False
    duplicate_of: str | None = None

    @property
    def context(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def to_json(self, *, with_body: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_body:
            data.pop("body")
        return data


class WebhookSender:
    """Listens to the store and posts RemoteExecutionContext JSON to the registered endpoints."""

    def __init__(self, store: DataverseStore, *, options: SenderOptions | None = None, workers: int = 1) -> None:
        """`workers`: async deliveries sent at a time (Dataverse's async service runs several jobs at once; one keeps
        the deliveries of a test in the order of the changes unless it holds them back)."""
        self.store = store
        self.options = options or SenderOptions()
        self.registrations: dict[str, WebhookRegistration] = {}
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] = []
        self._pending = 0
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dataverse-webhooks")
        self._http = httpx.Client()
        store.listeners.append(self)

    # --- administration ------------------------------------------------------------------------------

    def register(self, registration: WebhookRegistration) -> WebhookRegistration:
        self.store.schema(registration.entity)
        unknown = set(registration.messages) - {"Create", "Update", "Delete", "SetState"}
        if unknown:
            raise ValueError(f"unsupported messages: {sorted(unknown)}")
        if registration.auth_type not in ("webhook_key", "http_header", "http_query_string"):
            raise ValueError(f"unsupported auth type {registration.auth_type!r}")
        if registration.auth_type != "webhook_key" and not registration.auth_name:
            raise ValueError("auth_name is required for http_header and http_query_string")
        with self._cond:
            self.registrations[registration.id] = registration
        return registration

    def unregister(self, registration_id: str) -> None:
        with self._cond:
            self.registrations.pop(registration_id, None)

    def reset(self, *, drain_timeout: float = 5.0) -> None:
        self.drain(timeout=drain_timeout)
        with self._cond:
            self.registrations.clear()
            self.deliveries.clear()
            self._held.clear()
            self.options = SenderOptions()

    def drain(self, *, timeout: float = 30.0) -> bool:
        """Wait until no delivery is in flight (held ones excluded); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def release(self, *, order: Literal["reverse", "fifo"] = "reverse") -> int:
        """Send the held deliveries, newest first by default; returns how many."""
        with self._cond:
            held, self._held = self._held, []
        if order == "reverse":
            held.reverse()
        for delivery in held:
            self._submit(delivery)
        return len(held)

    def list_deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self.deliveries)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # --- store listener ------------------------------------------------------------------------------

    def sync_step(self, notice: ChangeNotice) -> None:
        for delivery in self._deliveries_for(notice, mode="sync"):
            self._execute(delivery)
            if delivery.status != "succeeded":
                raise SandboxError(
                    400,
                    ERR_PLUGIN,
                    f"The synchronous webhook step failed (attempts: {delivery.attempts}); "
                    "the operation was rolled back.",
                )

    def async_step(self, notice: ChangeNotice) -> None:
        for delivery in self._deliveries_for(notice, mode="async"):
            copies = [delivery]
            if self.options.duplicate:
                twin = copy.deepcopy(delivery)
                twin.id, twin.duplicate_of = str(uuid.uuid4()), delivery.id
                copies.append(twin)
            for item in copies:
                with self._cond:
                    self.deliveries.append(item)
                    if self.options.drop > 0:
                        self.options.drop -= 1
                        item.status, item.error = "dropped", "dropped on request (retry exhausted)"
                        continue
                    if self.options.hold:
                        item.status = "held"
                        self._held.append(item)
                        continue
                self._submit(item)

    # --- building ------------------------------------------------------------------------------------

    def _deliveries_for(self, notice: ChangeNotice, *, mode: str) -> list[Delivery]:
        with self._cond:
            registrations = [r for r in self.registrations.values() if r.entity == notice.entity and r.mode == mode]
        schema = self.store.schema(notice.entity)
        result: list[Delivery] = []
        for registration in registrations:
            for message, target, pre, post in _steps(notice, registration, schema.primary_key):
                body = self._context(registration, notice, message, target, pre, post)
                result.append(self._delivery(registration, notice, message, body))
        if mode == "sync":
            with self._cond:
                self.deliveries.extend(result)
        return result

    def _delivery(
        self, registration: WebhookRegistration, notice: ChangeNotice, message: str, context: dict[str, Any]
    ) -> Delivery:
        headers = {
            "content-type": "application/json",
            "x-ms-dynamics-organization": self.options.organization,
            "x-ms-dynamics-entity-name": notice.entity,
            "x-ms-dynamics-request-name": message,
            "x-ms-correlation-request-id": str(uuid.uuid4()),
        }
        text = _dumps(context, registration.escape_slashes)
        size_exceeded = self.options.force_size_exceeded or len(text.encode()) > self.options.size_limit
        if size_exceeded:
            for key in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages"):
                context.pop(key, None)
            text = _dumps(context, registration.escape_slashes)
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
        query: dict[str, str] = {}
        if registration.auth_type == "webhook_key":
            query["code"] = registration.auth_value
        elif registration.auth_type == "http_query_string":
            query[registration.auth_name] = registration.auth_value
        else:
            headers[registration.auth_name.lower()] = registration.auth_value
        parts = urlsplit(registration.url)
        url = urlunsplit(parts._replace(query="&".join(p for p in (parts.query, urlencode(query)) if p)))
        return Delivery(
            id=str(uuid.uuid4()),
            registration_id=registration.id,
            message=message,
            entity=notice.entity,
            record_id=notice.record_id,
            url=url,
            body=text,
            headers=headers,
            operation_id=context["OperationId"],
            size_exceeded=size_exceeded,
        )

    def _context(
        self,
        registration: WebhookRegistration,
        notice: ChangeNotice,
        message: str,
        target: dict[str, Any] | None,
        pre: dict[str, Any] | None,
        post: dict[str, Any] | None,
    ) -> dict[str, Any]:
        schema = self.store.schema(notice.entity)
        encoder = _Encoder(self.store, schema, self.options.utc_offset)
        record_ref = encoder.reference(notice.entity, notice.record_id, typed=True)
        inputs: list[dict[str, Any]]
        outputs: list[dict[str, Any]] = []
        if message == "Delete":
            inputs = [{"key": "Target", "value": record_ref}]
        elif message == "SetState":
            assert post is not None
            inputs = [
                {"key": "EntityMoniker", "value": record_ref},
                {"key": "State", "value": encoder.option(post["statecode"])},
                {"key": "Status", "value": encoder.option(post["statuscode"])},
            ]
        else:
            assert target is not None
            assert post is not None
            version = str(post["versionnumber"])
            inputs = [
                {
                    "key": "Target",
                    "value": encoder.entity(target, typed=True, version=version, formatted=message == "Create"),
                }
            ]
            if message == "Create":
                outputs = [{"key": "id", "value": notice.record_id}]
        sync = registration.mode == "sync"
        pre_images: list[dict[str, Any]] = []
        post_images: list[dict[str, Any]] = []
        if registration.pre_image is not None and pre is not None and message != "Create":
            pre_images.append(
                {
                    "key": registration.pre_image_alias,
                    "value": encoder.entity(_pick(pre, registration.pre_image), typed=False),
                }
            )
        if registration.post_image is not None and post is not None and message != "Delete":
            post_images.append(
                {
                    "key": registration.post_image_alias,
                    "value": encoder.entity(
                        _pick(post, registration.post_image), typed=False, version=str(post["versionnumber"])
                    ),
                }
            )
        if not sync and post is not None and message in ("Create", "Update"):
            primary = {schema.primary_name: post.get(schema.primary_name), schema.primary_key: notice.record_id}
            post_images.append({"key": "AsynchronousStepPrimaryName", "value": encoder.entity(primary, typed=False)})
        occurred = encoder.date(notice.at, date_only=False)
        context: dict[str, Any] = {
            "BusinessUnitId": BUSINESS_UNIT_ID,
            "CorrelationId": notice.correlation_id,
            "Depth": 1,
            "InitiatingUserAzureActiveDirectoryObjectId": str(uuid.uuid5(uuid.NAMESPACE_OID, notice.user_id)),
            "InitiatingUserId": notice.user_id,
            "InputParameters": inputs,
            "IsExecutingOffline": False,
            "IsInTransaction": sync,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": message,
            "Mode": 0 if sync else 1,
            "OperationCreatedOn": occurred,
            "OperationId": str(uuid.uuid4()),
            "OrganizationId": ORGANIZATION_ID,
            "OrganizationName": self.options.organization_name,
            "OutputParameters": outputs,
            "OwningExtension": {
                "Id": registration.step_id(message),
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": f"{registration.name}: {message} of {notice.entity}",
                "RowVersion": None,
            },
            "ParentContext": None,
            "PostEntityImages": post_images,
            "PreEntityImages": pre_images,
            "PrimaryEntityId": notice.record_id,
            "PrimaryEntityName": notice.entity,
            "RequestId": None,
            "SecondaryEntityName": "none",
            "SharedVariables": [{"key": "IsAutoTransact", "value": True}, {"key": "DefaultsAddedFlag", "value": True}],
            "Stage": registration.stage,
            "UserAzureActiveDirectoryObjectId": str(uuid.uuid5(uuid.NAMESPACE_OID, notice.user_id)),
            "UserId": notice.user_id,
            "InitiatingUserAgent": "sandbox",
        }
        if registration.include_parent_context:
            parent = copy.deepcopy(context)
            parent.update(
                Stage=30,
                Mode=0,
                IsInTransaction=True,
                PostEntityImages=[],
                PreEntityImages=[],
                OwningExtension={
                    "Id": "00000000-0000-0000-0000-000000000000",
                    "KeyAttributes": [],
                    "LogicalName": "sdkmessageprocessingstep",
                    "Name": None,
                    "RowVersion": None,
                },
                SharedVariables=[
                    {
                        "key": "ChangedEntityTypes",
                        "value": [
                            {
                                "__type": "KeyValuePairOfstringstring:#System.Collections.Generic",
                                "key": notice.entity,
                                "value": message,
                            }
                        ],
                    }
                ],
            )
            parent["InputParameters"] = [*inputs, {"key": "SuppressDuplicateDetection", "value": False}]
            context["ParentContext"] = parent
        return context

    # --- sending -------------------------------------------------------------------------------------

    def _submit(self, delivery: Delivery) -> None:
        with self._cond:
            self._pending += 1
            delivery.status = "pending"
        self._pool.submit(self._run, delivery)

    def _run(self, delivery: Delivery) -> None:
        try:
            self._execute(delivery)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _execute(self, delivery: Delivery) -> None:
        for attempt in (1, 2):
            try:
                response = self._http.post(
                    delivery.url,
                    content=delivery.body.encode(),
                    headers=delivery.headers,
                    timeout=self.options.timeout,
                )
            except httpx.TimeoutException:
                delivery.attempts.append(0)
                delivery.status, delivery.error = "failed", "timeout"
                return
            except httpx.HTTPError as exc:
                delivery.attempts.append(0)
                delivery.status, delivery.error = "failed", type(exc).__name__
                return
            delivery.attempts.append(response.status_code)
            if 200 <= response.status_code < 300:
                delivery.status, delivery.error = "succeeded", ""
                return
            delivery.status, delivery.error = "failed", f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUSES or attempt == 2:
                return


def _steps(
    notice: ChangeNotice, registration: WebhookRegistration, primary_key: str
) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]]:
    """(message, target, pre, post) for each step execution the write triggers for this registration."""
    messages = registration.messages
    if notice.message == "Create":
        if "Create" not in messages:
            return []
        assert notice.post is not None
        target = {k: v for k, v in notice.post.items() if v is not None}
        return [("Create", target, None, notice.post)]
    if notice.message == "Delete":
        return [("Delete", None, notice.pre, None)] if "Delete" in messages else []
    assert notice.pre is not None
    assert notice.post is not None
    platform = {k: notice.post.get(k) for k in PLATFORM_COLUMNS}
    platform[primary_key] = notice.record_id
    others = {k: v for k, v in notice.submitted.items() if k not in STATE_COLUMNS}
    states = {k: v for k, v in notice.submitted.items() if k in STATE_COLUMNS}
    recomputed = {"fullname": notice.post.get("fullname")} if {"firstname", "lastname"} & set(others) else {}
    result: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]] = []
    pre, post = notice.pre, notice.post
    if others and states:  # Dataverse runs the Update steps once for the other columns, then for state
        middle = {**notice.pre, **others, **recomputed, **platform}
        parts = [(others, pre, middle), (states, middle, post)]
    elif others:
        parts = [(others, pre, post)]
    else:
        parts = [(states, pre, post)]
    for columns, part_pre, part_post in parts:
        if "Update" in messages and (
            registration.filtering_attributes is None or registration.filtering_attributes & set(columns)
        ):
            extra = recomputed if columns is others else {}
            result.append(("Update", {**columns, **extra, **platform}, part_pre, part_post))
        if columns is states and "SetState" in messages:
            result.append(("SetState", None, part_pre, part_post))
    return result


def _pick(row: Mapping[str, Any], columns: Sequence[str] | str) -> dict[str, Any]:
    """The image of `row`: the registered columns that hold a value (Dataverse leaves null ones out)."""
    names = row if columns == "*" else columns
    return {name: row[name] for name in names if row.get(name) is not None}


def _dumps(context: Mapping[str, Any], escape_slashes: bool) -> str:
    text = json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    return text.replace("/", "\\/") if escape_slashes else text


class _Encoder:
    """Web API form -> the WCF JSON of RemoteExecutionContext values."""

    def __init__(self, store: DataverseStore, schema: TableSchema, utc_offset: str | None) -> None:
        self.store = store
        self.schema = schema
        self.offset = utc_offset

    def entity(
        self,
        attributes: Mapping[str, Any],
        *,
        typed: bool,
        version: str | None = None,
        formatted: bool = False,
    ) -> dict[str, Any]:
        values = [{"key": key, "value": self.value(key, value)} for key, value in attributes.items()]
        formatted_values: list[dict[str, str]] = []
        if formatted:
            for key, value in attributes.items():
                label = self.label(key, value)
                if label is not None:
                    formatted_values.append({"key": key, "value": label})
        body: dict[str, Any] = {
            "Attributes": values,
            "EntityState": None,
            "FormattedValues": formatted_values,
            "Id": attributes.get(self.schema.primary_key) or "00000000-0000-0000-0000-000000000000",
            "KeyAttributes": [],
            "LogicalName": self.schema.entity,
            "RelatedEntities": [],
            "RowVersion": version,
        }
        return {"__type": f"Entity:{CONTRACTS}", **body} if typed else body

    def value(self, key: str, value: Any) -> Any:
        column = self.schema.columns.get(key)
        if value is None or column is None:
            return value
        kind = column.type
        if kind == "choice":
            return self.option(value)
        if kind == "multichoice":
            return [self.option(item) for item in value]
        if kind == "money":
            return {"__type": f"Money:{CONTRACTS}", "Value": value}
        if kind == "lookup":
            return self.reference(self.store.owner_table(value, column.targets), value, typed=True)
        if kind == "date":
            return self.date(date.fromisoformat(value), date_only=True)
        if kind == "datetime":
            return self.date(datetime.fromisoformat(value.replace("Z", "+00:00")), date_only=False)
        if kind == "bigint":
            return value
        return value

    @staticmethod
    def option(value: int) -> dict[str, Any]:
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}

    @staticmethod
    def reference(entity: str, record_id: str, *, typed: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Id": record_id,
            "KeyAttributes": [],
            "LogicalName": entity,
            "Name": None,
            "RowVersion": None,
        }
        return {"__type": f"EntityReference:{CONTRACTS}", **body} if typed else body

    def date(self, value: date | datetime, *, date_only: bool) -> str:
        shift = timedelta()
        if self.offset:
            sign = -1 if self.offset[0] == "-" else 1
            shift = sign * timedelta(hours=int(self.offset[1:3]), minutes=int(self.offset[3:5]))
        if date_only or not isinstance(value, datetime):
            # DateOnly: midnight of the wall-clock date in the serializer's zone
            local_midnight = datetime(value.year, value.month, value.day, tzinfo=UTC)
            instant = local_midnight - shift
        else:
            instant = value
        millis = int((instant - _EPOCH) / timedelta(milliseconds=1))
        return f"/Date({millis}{self.offset or ''})/"

    def label(self, key: str, value: Any) -> str | None:
        if key == "statecode":
            return {0: "Active", 1: "Inactive", 2: "Disqualified"}.get(value)
        if key == "statuscode":
            return {1: "Active", 2: "Inactive"}.get(value)
        if isinstance(value, bool):
            return "Do Not Allow" if value else "Allow"
        return None
