"""Dataverse Web API client: reads, update-only PATCHes and $batch updates of contact, lead and account rows."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from sync_core.dataverse.errors import (
    DataverseAuthError,
    DataverseConflict,
    DataverseError,
    DataverseInvalidData,
    DataverseNotFound,
    DataversePermanent,
    DataverseRateLimited,
    DataverseTransient,
)
from sync_core.domain.records import AttrValue, DataverseRow, EntityName, RowUpdate, RowUpdateResult

logger = logging.getLogger("sync_core.dataverse")

ENTITY_SETS: dict[str, tuple[str, str]] = {
    "contact": ("contacts", "contactid"),
    "lead": ("leads", "leadid"),
    "account": ("accounts", "accountid"),
}
MAX_BATCH_REQUESTS = 1000
ROW_NOT_FOUND_CODE = "0x80040217"
MAX_PAGE_SIZE = 5000
ROWS_PER_QUERY = 200
"""Ids per `In` query: 200 GUIDs keep the URL near 9,000 characters, well inside the Web API's limit."""
TOKEN_REFRESH_MARGIN_SECONDS = 300
EXPIRED_VERSION_STAMP_CODE = "0x80044352"  # ExpiredVersionStamp: the delta token is past its retention


class DeltaTokenExpired(DataverseInvalidData):
    """The change-tracking delta token is too old: read everything again (a full sync) for a new one."""


@dataclass(frozen=True, slots=True)
class RowsPage:
    """One page of a (change-tracking) list request: rows, ids of deleted rows, and where to read next."""

    rows: list[DataverseRow]
    deleted: list[str] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


_ETAG_VERSION_RE = re.compile(r'^(?:W/)?"(\d+)"$')
_EMAIL_RE = re.compile(r"[^\s@'\"<>(),;]+@[^\s@'\"<>(),;]+")
_LOOKUP_RE = re.compile(r"^_(\w+)_value$")


class DataverseClient:
    """DataverseGateway over the Web API with one pooled httpx.AsyncClient and bounded retries.

    Retries 429 (honouring Retry-After), 502/503/504, timeouts and connection errors with exponential
    backoff and jitter, bounded by `max_attempts` and `max_retry_seconds`; other 4xx are never retried.
    Lookup columns come back under their logical name (`_parentcustomerid_value` -> `parentcustomerid`),
    the form the webhook parser uses. The Web API reads and writes multi-select choices as "1,2,3";
    columns named in `multi_select_columns` are converted to and from list[int].
    """

    def __init__(
        self,
        *,
        base_url: str,
        credential: AsyncTokenCredential,
        scope: str | None = None,
        api_path: str = "/api/data/v9.2",
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        backoff_base: float = 0.5,
        http: httpx.AsyncClient | None = None,
        multi_select_columns: Collection[str] = (),
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._api = self._base_url + "/" + api_path.strip("/")
        self._credential = credential
        self._scope = scope or f"{self._base_url}/.default"
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_base = backoff_base
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        self._multi = frozenset(multi_select_columns)
        self._token: AccessToken | None = None
        self._token_lock = asyncio.Lock()

    @property
    def api_url(self) -> str:
        return self._api

    async def __aenter__(self) -> DataverseClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP pool when this client created it (the credential belongs to the caller)."""
        if self._owns_http:
            await self._http.aclose()

    # --- DataverseGateway ---------------------------------------------------------------------------

    async def who_am_i(self) -> str:
        """The WhoAmI function: the id of the user the connector's token belongs to (a cheap health check)."""
        response = await self._request("GET", f"{self._api}/WhoAmI")
        return str(response.json().get("UserId", ""))

    async def get_row(self, entity: EntityName, record_id: str, columns: Sequence[str]) -> DataverseRow | None:
        """The row with `columns` selected, or None when it does not exist."""
        entity_set, _ = _entity_set(entity)
        url = f"{self._api}/{entity_set}({_guid(record_id)})"
        params = {"$select": ",".join(columns)} if columns else None
        try:
            response = await self._request("GET", url, params=params)
        except DataverseNotFound as exc:
            # only "this row does not exist"; a wrong entity set or URL must not look like a missing row
            if exc.code == ROW_NOT_FOUND_CODE or "Does Not Exist" in exc.message:
                return None
            raise
        return _row(entity, response.json(), self._multi)

    async def get_rows(
        self, entity: EntityName, record_ids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, DataverseRow]:
        """The rows that exist among `record_ids`, keyed by lower-case id: one query per `ROWS_PER_QUERY` ids
        (`$filter` with the `Microsoft.Dynamics.CRM.In` query function on the primary key) instead of a GET each."""
        ids = sorted({_guid(record_id) for record_id in record_ids})
        _, primary_key = _entity_set(entity)
        select = list(dict.fromkeys([*columns, primary_key])) if columns else []
        rows: dict[str, DataverseRow] = {}
        for start in range(0, len(ids), ROWS_PER_QUERY):
            values = ",".join(f'"{record_id}"' for record_id in ids[start : start + ROWS_PER_QUERY])
            expr = f"Microsoft.Dynamics.CRM.In(PropertyName='{primary_key}',PropertyValues=[{values}])"
            async for page in self.iter_pages(entity, select, filter_expr=expr, page_size=MAX_PAGE_SIZE):
                rows.update((row.id, row) for row in page)
        return rows

    async def iter_pages(
        self,
        entity: EntityName,
        columns: Sequence[str],
        *,
        filter_expr: str | None = None,
        page_size: int = 500,
    ) -> AsyncIterator[list[DataverseRow]]:
        """Rows page by page (Prefer: odata.maxpagesize), following @odata.nextLink verbatim."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        entity_set, _ = _entity_set(entity)
        params: dict[str, str] = {}
        if columns:
            params["$select"] = ",".join(columns)
        if filter_expr:
            params["$filter"] = filter_expr
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        url: str | None = f"{self._api}/{entity_set}"
        query: dict[str, str] | None = params or None
        pages = 0
        while url is not None:
            response = await self._request("GET", url, params=query, headers=headers)
            body = response.json()
            pages += 1
            rows = [_row(entity, item, self._multi) for item in body.get("value", [])]
            logger.debug("read page %d of %s (%d rows)", pages, entity_set, len(rows))
            yield rows
            next_link = body.get("@odata.nextLink")
            url, query = (next_link, None) if isinstance(next_link, str) and next_link else (None, None)

    async def read_page(
        self,
        entity: EntityName,
        columns: Sequence[str],
        *,
        url: str | None = None,
        filter_expr: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        track_changes: bool = False,
    ) -> RowsPage:
        """One page of rows: the first (url None) or the one at a nextLink / deltaLink the service gave.

        With `track_changes` the request carries `Prefer: odata.track-changes`: the last page holds a delta link
        and pages read from a delta link list deleted rows (`$deletedEntity`) by id. An expired delta token
        raises `DeltaTokenExpired`.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        prefer = [f"odata.maxpagesize={page_size}"]
        if track_changes:
            prefer.insert(0, "odata.track-changes")
        headers = {"Prefer": ",".join(prefer)}
        query: dict[str, str] | None = None
        if url is None:
            entity_set, _ = _entity_set(entity)
            url = f"{self._api}/{entity_set}"
            query = {}
            if columns:
                query["$select"] = ",".join(columns)
            if filter_expr:
                query["$filter"] = filter_expr
        try:
            response = await self._request("GET", url, params=query or None, headers=headers)
        except DataverseInvalidData as exc:
            if exc.code == EXPIRED_VERSION_STAMP_CODE:
                raise DeltaTokenExpired(exc.message) from exc
            raise
        body = response.json()
        rows: list[DataverseRow] = []
        deleted: list[str] = []
        for item in body.get("value", []):
            if str(item.get("@odata.context", "")).endswith("/$deletedEntity"):
                deleted.append(str(item.get("id", "")).lower())
            else:
                rows.append(_row(entity, item, self._multi))
        next_link = body.get("@odata.nextLink")
        delta_link = body.get("@odata.deltaLink")
        return RowsPage(
            rows=rows,
            deleted=deleted,
            next_link=next_link if isinstance(next_link, str) and next_link else None,
            delta_link=delta_link if isinstance(delta_link, str) and delta_link else None,
        )

    async def update_row(
        self, entity: EntityName, record_id: str, changes: Mapping[str, AttrValue], *, etag: str | None = None
    ) -> None:
        """PATCH update-only (If-Match: etag, or * when none): never creates a row.

        DataverseNotFound when the row is missing, DataverseConflict when the etag no longer matches.
        """
        entity_set, _ = _entity_set(entity)
        url = f"{self._api}/{entity_set}({_guid(record_id)})"
        headers = {"If-Match": etag or "*", "Content-Type": "application/json"}
        payload = _json_bytes(_to_web_api(changes, self._multi))
        await self._request("PATCH", url, headers=headers, content=payload)
        logger.info("updated %s %s (%d columns)", entity, record_id, len(changes))

    async def update_rows(self, updates: Sequence[RowUpdate]) -> list[RowUpdateResult]:
        """Several updates in $batch requests (≤1000 each), one change set per update, continue on error."""
        results: list[RowUpdateResult] = []
        for start in range(0, len(updates), MAX_BATCH_REQUESTS):
            results.extend(await self._batch(updates[start : start + MAX_BATCH_REQUESTS]))
        return results

    # --- $batch -------------------------------------------------------------------------------------

    async def _batch(self, updates: Sequence[RowUpdate]) -> list[RowUpdateResult]:
        if not updates:
            return []
        boundary = f"batch_{uuid.uuid4()}"
        body = _batch_body(self._api, boundary, updates, self._multi)
        headers = {
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Prefer": "odata.continue-on-error",
        }
        response = await self._request("POST", f"{self._api}/$batch", headers=headers, content=body)
        parts = _parse_multipart(response.headers.get("content-type", ""), response.content)
        results: list[RowUpdateResult] = []
        # one request per change set, so the i-th response answers the i-th update
        for index, update in enumerate(updates):
            if index >= len(parts):
                results.append(
                    RowUpdateResult(
                        entity=update.entity,
                        record_id=update.record_id,
                        status=424,
                        error_code="NotExecuted",
                        message="the batch stopped before this request",
                    )
                )
                continue
            part = parts[index]
            code, message = ("", "") if 200 <= part.status < 300 else _error_fields(part.body)
            results.append(
                RowUpdateResult(
                    entity=update.entity,
                    record_id=update.record_id,
                    status=part.status,
                    error_code=code,
                    message=message,
                )
            )
        failed = sum(1 for result in results if not result.ok)
        logger.info("batch of %d updates: %d failed", len(updates), failed)
        return results

    # --- transport ----------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One Web API request relative to the API root (metadata and registration rows), with the retries.

        A JSON `body` is sent as `application/json`; an error status raises the typed error.
        """
        merged = dict(headers or {})
        content = None
        if body is not None:
            content = _json_bytes(body)
            merged.setdefault("Content-Type", "application/json; charset=utf-8")
        return await self._request(
            method, f"{self._api}/{path.lstrip('/')}", params=params, headers=merged, content=content
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        started = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((DataverseRateLimited, DataverseTransient)),
            wait=self._wait,
            stop=lambda state: self._should_stop(state, started),
            reraise=True,
            before_sleep=_log_retry,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send_once(method, url, params=params, headers=headers, content=content)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DataverseRateLimited) and error.retry_after is not None:
            return max(0.0, error.retry_after)
        base = min(self._max_retry_seconds, self._backoff_base * 2.0 ** (state.attempt_number - 1))
        return base * (0.5 + secrets.randbelow(1000) / 1000)  # ±50% jitter so clients spread out

    def _should_stop(self, state: RetryCallState, started: float) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        # give up now rather than sleep past the budget; the caller can reschedule with retry_after
        return time.monotonic() - started + state.upcoming_sleep > self._max_retry_seconds

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        content: bytes | None,
    ) -> httpx.Response:
        request_headers = {
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "Authorization": f"Bearer {await self._bearer()}",
        }
        request_headers.update(headers or {})
        try:
            response = await self._http.request(method, url, params=params, headers=request_headers, content=content)
        except httpx.TimeoutException as exc:
            raise DataverseTransient(f"{method} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise DataverseTransient(f"{method} failed: {type(exc).__name__}") from exc
        if response.status_code < 400:
            return response
        if response.status_code == 401:
            self._token = None  # fetch a fresh token next time
        raise _error_for(method, response)

    async def _bearer(self) -> str:
        async with self._token_lock:
            token = self._token
            if token is None or token.expires_on - time.time() < TOKEN_REFRESH_MARGIN_SECONDS:
                try:
                    token = await self._credential.get_token(self._scope)
                except Exception as exc:
                    raise DataverseAuthError(f"could not get a token: {type(exc).__name__}") from exc
                self._token = token
            return token.token


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.warning(
        "Dataverse request failed (%s, status %s); retry %d in %.2fs",
        type(error).__name__,
        getattr(error, "status", None),
        state.attempt_number,
        state.upcoming_sleep,
    )


# --- helpers ----------------------------------------------------------------------------------------


def _entity_set(entity: str) -> tuple[str, str]:
    try:
        return ENTITY_SETS[entity]
    except KeyError:
        raise ValueError(f"unsupported entity {entity!r}") from None


def _guid(record_id: str) -> str:
    try:
        return str(uuid.UUID(record_id))
    except (ValueError, AttributeError, TypeError):
        raise ValueError("record_id must be a GUID") from None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _to_web_api(changes: Mapping[str, AttrValue], multi: frozenset[str]) -> dict[str, Any]:
    return {
        key: ",".join(str(v) for v in value) if key in multi and isinstance(value, list) else value
        for key, value in changes.items()
    }


def _multi_select(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        return value


def _row(entity: EntityName, item: Mapping[str, Any], multi: frozenset[str] = frozenset()) -> DataverseRow:
    attributes: dict[str, AttrValue] = {}
    for key, value in item.items():
        if "@" in key:
            continue  # @odata.etag, FormattedValue and other annotations
        lookup = _LOOKUP_RE.match(key)
        name = lookup.group(1) if lookup else key
        attributes[name] = _multi_select(value) if name in multi else value
    _, primary_key = ENTITY_SETS[entity]
    record_id = str(item.get(primary_key) or "")
    etag = item.get("@odata.etag")
    etag = etag if isinstance(etag, str) else None
    return DataverseRow(
        entity=entity,
        id=record_id.lower(),
        attributes=attributes,
        etag=etag,
        version=_etag_version(etag),
        modified_on=_datetime(attributes.get("modifiedon")),
    )


def _etag_version(etag: str | None) -> int | None:
    match = _ETAG_VERSION_RE.match(etag) if etag else None
    return int(match.group(1)) if match else None


def _datetime(value: AttrValue) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def redact(text: str) -> str:
    """Remove e-mail addresses from a remote error message before it is logged or stored."""
    return _EMAIL_RE.sub("<email>", text)


def _error_fields(body: bytes) -> tuple[str, str]:
    try:
        document = json.loads(body)
    except ValueError:
        return "", ""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), redact(str(error.get("message") or ""))[:1000]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _error_for(method: str, response: httpx.Response) -> DataverseError:
    status = response.status_code
    code, detail = _error_fields(response.content)
    message = f"Dataverse {method} answered {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    if status == 400:
        return DataverseInvalidData(message, status=status, code=code)
    if status in (401, 403):
        return DataverseAuthError(message, status=status, code=code)
    if status == 404:
        return DataverseNotFound(message, status=status, code=code)
    if status == 412:
        return DataverseConflict(message, status=status, code=code)
    if status == 429:
        return DataverseRateLimited(message, retry_after=_retry_after(response), status=status, code=code)
    if status in (502, 503, 504):
        return DataverseTransient(message, status=status, code=code)
    return DataversePermanent(message, status=status, code=code)


def _batch_body(api: str, boundary: str, updates: Sequence[RowUpdate], multi: frozenset[str]) -> bytes:
    lines: list[str] = []
    for index, update in enumerate(updates):
        entity_set, _ = _entity_set(update.entity)
        changeset = f"changeset_{uuid.uuid4()}"
        payload = _json_bytes(_to_web_api(update.changes, multi)).decode()
        lines += [
            f"--{boundary}",
            f"Content-Type: multipart/mixed; boundary={changeset}",
            "",
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {index + 1}",
            "",
            f"PATCH {api}/{entity_set}({_guid(update.record_id)}) HTTP/1.1",
            "Content-Type: application/json; charset=utf-8",
            f"If-Match: {update.etag or '*'}",
            "",
            payload,
            f"--{changeset}--",
            "",
        ]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode()


class _Part:
    """One embedded HTTP response of a $batch answer."""

    __slots__ = ("body", "content_id", "status")

    def __init__(self, status: int, body: bytes, content_id: str | None) -> None:
        self.status = status
        self.body = body
        self.content_id = content_id


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    return match.group(1).strip() if match else None


def _split_headers(block: bytes) -> tuple[dict[str, str], bytes]:
    normalized = block.replace(b"\r\n", b"\n")
    head, _, rest = normalized.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parse_multipart(content_type: str, body: bytes) -> list[_Part]:
    """Flatten a (possibly nested) multipart/mixed $batch response into its HTTP responses, in order."""
    boundary = _boundary(content_type)
    if boundary is None:
        raise DataversePermanent("the $batch response is not multipart")
    parts: list[_Part] = []
    delimiter = b"--" + boundary.encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        headers, rest = _split_headers(chunk.lstrip(b"\r\n"))
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            parts.extend(_parse_multipart(part_type, rest))
            continue
        status_line, _, http_rest = rest.partition(b"\n")
        match = re.match(rb"HTTP/\d\.\d (\d{3})", status_line.strip())
        if match is None:
            continue
        _, payload = _split_headers(http_rest)
        parts.append(_Part(int(match.group(1)), payload.strip(), headers.get("content-id")))
    return parts
