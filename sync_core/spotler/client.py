"""The Spotler Mail+ REST client: `SpotlerGateway` over httpx, OAuth 1.0a signed, retried with tenacity.

Retries cover 429 (waiting at least `Retry-After`), 5xx, timeouts and dropped connections, bounded by
both `max_attempts` and `max_retry_seconds`; other 4xx fail at once. After the last attempt the typed error
of that attempt is raised. Writes are retried too: Spotler keys contacts by externalId, so a repeated upsert
is harmless, but a repeated plain insert (`update=False`) may answer `CONTACT_ALREADY_EXISTS` if the first
one landed.

Logs go to `sync_core.spotler` and carry method, path template, status, attempt and elapsed time only. httpx
logs full URLs (the search query holds an e-mail address) and oauthlib logs signature base strings (which hold
the consumer key), so the client also installs a redacting filter on those two libraries' loggers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, tzinfo
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from sync_core.domain.errors import RateLimitedError, TransientError
from sync_core.domain.feed import MAX_PAGE_SIZE
from sync_core.domain.records import BulkItemResult, SpotlerContact, SpotlerProperty, UpdatesPage
from sync_core.spotler import wire
from sync_core.spotler.errors import (
    SpotlerConnectionError,
    SpotlerError,
    SpotlerNotFound,
    SpotlerPermanentError,
    SpotlerTimeout,
    error_from_response,
    redact_emails,
)
from sync_core.spotler.pacing import TokenBucket
from sync_core.spotler.signing import OAuth1Signer, SignatureType

logger = logging.getLogger("sync_core.spotler")
_T = TypeVar("_T")

DEFAULT_PATH_PREFIX: Final = "/integrationservice-1.1.0"
MAX_BULK_CONTACTS: Final = 100


class _RedactingFilter(logging.Filter):
    """Rewrites third-party log records: no e-mail address, consumer key/secret or OAuth header survives."""

    _OAUTH_HEADER = re.compile(r"OAuth\s+oauth_[^\n]*", re.IGNORECASE)
    _SIGNATURE = re.compile(r"(oauth_signature(?:=|%3D|%253D)\"?|Signature: )[^\"&,\s]+", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__()
        self._values: set[str] = set()

    def add_sensitive(self, *values: str) -> None:
        for value in values:
            # Very short values would redact ordinary words; keys and secrets are long in practice.
            if len(value) >= 4:
                self._values.update({value, quote(value, safe=""), quote(quote(value, safe=""), safe="")})

    def redact(self, text: str) -> str:
        text = self._OAUTH_HEADER.sub("OAuth <redacted>", text)
        text = self._SIGNATURE.sub(r"\1<redacted>", text)
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, "<redacted>")
        return redact_emails(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken third-party format string is not ours to fix
            return True
        cleaned = self.redact(text)
        if cleaned != text:
            record.msg = cleaned
            record.args = None
        return True


_REDACTOR = _RedactingFilter()
_FILTERED_LOGGERS = ("httpx", "oauthlib", "oauthlib.oauth1.rfc5849", "oauthlib.oauth1.rfc5849.signature")


def _install_redaction(signer: OAuth1Signer) -> None:
    _REDACTOR.add_sensitive(*signer.sensitive_values())
    for name in _FILTERED_LOGGERS:
        target = logging.getLogger(name)
        if _REDACTOR not in target.filters:
            target.addFilter(_REDACTOR)


class SpotlerClient:
    """Async client for Spotler's contact API; implements `sync_core.domain.ports.SpotlerGateway`.

    Use one instance for the app's lifetime (it pools connections) and close it with `aclose()` or
    `async with`. Pass `http` to share an existing `httpx.AsyncClient`; it is then not closed by this client.
    """

    def __init__(
        self,
        *,
        base_url: str,
        consumer_key: str,
        consumer_secret: str | SecretStr,
        path_prefix: str = DEFAULT_PATH_PREFIX,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        backoff_base: float = 0.5,
        http: httpx.AsyncClient | None = None,
        naive_timezone: str | tzinfo = "Europe/Amsterdam",
        signature_type: SignatureType = "header",
        signer: OAuth1Signer | None = None,
        calls_per_second: float | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0 or max_retry_seconds < 0 or backoff_base < 0:
            raise ValueError("timeout must be positive; max_retry_seconds and backoff_base non-negative")
        self._base_url = base_url.rstrip("/")
        prefix = path_prefix.strip("/")
        self._prefix = f"/{prefix}" if prefix else ""
        self._signer = signer or OAuth1Signer(
            consumer_key=consumer_key, consumer_secret=consumer_secret, signature_type=signature_type
        )
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_base, max=max(max_retry_seconds, backoff_base), jitter=backoff_base
        )
        self._naive_tz = ZoneInfo(naive_timezone) if isinstance(naive_timezone, str) else naive_timezone
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30.0),
            follow_redirects=False,
        )
        _install_redaction(self._signer)
        # Every attempt (retries too) waits for a token: calls leave evenly spaced, not in bursts that earn 429s.
        self.pacer = TokenBucket(calls_per_second) if calls_per_second else None

    def __repr__(self) -> str:
        return f"SpotlerClient(base_url={self._base_url!r}, path_prefix={self._prefix!r})"

    async def __aenter__(self) -> SpotlerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (only when this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------ contact operations

    async def list_properties(self) -> list[SpotlerProperty]:
        """The account's property catalogue (`GET /contact/properties/list`)."""
        body = await self._request("GET", "/contact/properties/list")
        if not isinstance(body, list):
            raise self._unexpected("GET /contact/properties/list", "expected an array")
        return self._convert("GET /contact/properties/list", lambda: [wire.property_from_wire(p) for p in body])

    async def get_contact(self, external_id: str) -> SpotlerContact | None:
        """The contact, or None when Spotler answers 404 / `CONTACT_NOT_FOUND`."""
        try:
            body = await self._request("GET", "/contact/{externalId}", path={"externalId": external_id})
        except SpotlerNotFound:
            return None
        return self._convert("GET /contact/{externalId}", lambda: wire.contact_from_wire(body, naive_tz=self._naive_tz))

    async def insert_contact(self, contact: SpotlerContact, *, update: bool, purge: bool) -> None:
        """POST /contact; with update=True an upsert by externalId, else `SpotlerContactExists` if present."""
        payload = {"update": update, "purge": purge, "contact": wire.contact_to_wire(contact)}
        await self._request("POST", "/contact", body=payload)

    async def insert_contacts(
        self, contacts: Sequence[SpotlerContact], *, update: bool, purge: bool
    ) -> list[BulkItemResult]:
        """POST /contact/list with at most 100 contacts; one result per contact, in Spotler's order."""
        if len(contacts) > MAX_BULK_CONTACTS:
            raise ValueError(f"at most {MAX_BULK_CONTACTS} contacts per bulk insert, got {len(contacts)}")
        if not contacts:
            return []
        payload = {
            "update": update,
            "purge": purge,
            "contacts": [wire.contact_to_wire(contact) for contact in contacts],
        }
        body = await self._request("POST", "/contact/list", body=payload)
        results = self._convert("POST /contact/list", lambda: wire.bulk_results_from_wire(body))
        return [
            BulkItemResult(external_id=r.external_id, code=r.code, message=redact_emails(r.message)) for r in results
        ]

    async def update_contact(self, contact: SpotlerContact, *, purge: bool) -> None:
        """PUT /contact/{externalId}; `SpotlerNotFound` (a NotFoundError) when it does not exist."""
        payload = {"purge": purge, "contact": wire.contact_to_wire(contact)}
        await self._request("PUT", "/contact/{externalId}", path={"externalId": contact.external_id}, body=payload)

    async def anonymize_contact(self, external_id: str) -> None:
        """PUT /contact/anonymize/{externalId}: Spotler's GDPR erase (there is no delete)."""
        await self._request("PUT", "/contact/anonymize/{externalId}", path={"externalId": external_id})

    async def get_updates_page(
        self, *, from_date: datetime, to_date: datetime, after: int, page_size: int
    ) -> UpdatesPage:
        """One page of contacts changed in [from_date, to_date); dates must be timezone-aware."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if after < 0:
            raise ValueError("after must not be negative")
        query = {
            "fromDate": wire.format_query_datetime(from_date),
            "toDate": wire.format_query_datetime(to_date),
            "after": str(after),
            "pageSize": str(page_size),
        }
        body = await self._request("GET", "/contact/updates/list", query=query)
        return self._convert(
            "GET /contact/updates/list",
            lambda: wire.contacts_page_from_wire(body, after=after, page_size=page_size, naive_tz=self._naive_tz),
        )

    async def search_by_email(self, email: str, *, page_size: int = 10) -> list[SpotlerContact]:
        """Contacts whose e-mail property equals `email` (Spotler does not enforce unique e-mails)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        query = {"MPSearchQuery": f"email={email}", "pageSize": str(page_size), "after": "0"}
        body = await self._request("GET", "/contact/search", query=query)
        page = self._convert(
            "GET /contact/search",
            lambda: wire.contacts_page_from_wire(body, after=0, page_size=page_size, naive_tz=self._naive_tz),
        )
        return list(page.contacts)

    # ------------------------------------------------------------ transport

    def _url(self, template: str, path: Mapping[str, str] | None, query: Mapping[str, str] | None) -> str:
        # Path segments and query values are fully percent-encoded ('+' -> %2B, '@' -> %40) so the URL that
        # is signed is byte for byte the URL that is sent, and the server's decoding recovers the values.
        resolved = template.format(**{k: quote(v, safe="") for k, v in (path or {}).items()})
        url = f"{self._base_url}{self._prefix}{resolved}"
        if query:
            url += "?" + urlencode(list(query.items()), quote_via=quote, safe="")
        return url

    async def _request(
        self,
        method: str,
        template: str,
        *,
        path: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: object = None,
    ) -> Any:
        """Send with retries; the decoded JSON of a 2xx answer (None when empty), else a typed error."""
        url = self._url(template, path, query)
        endpoint = f"{method} {template}"
        content = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts) | stop_before_delay(self._max_retry_seconds),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(
                    method, url, endpoint, content, attempt_number=attempt.retry_state.attempt_number
                )
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _attempt(
        self, method: str, url: str, endpoint: str, content: bytes | None, *, attempt_number: int
    ) -> Any:
        signed = self._signer.sign(method, url)  # fresh nonce and timestamp for every attempt
        headers = {"Accept": "application/json", **signed.headers}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if self.pacer is not None:
            await self.pacer.acquire()
        started = time.monotonic()
        try:
            response = await self._http.request(method, signed.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            self._log_attempt(endpoint, "timeout", attempt_number, started)
            raise self._tag(SpotlerTimeout(f"{type(exc).__name__}: no answer in time"), endpoint) from exc
        except httpx.TransportError as exc:
            self._log_attempt(endpoint, "connection error", attempt_number, started)
            raise self._tag(
                SpotlerConnectionError(f"{type(exc).__name__}: connection failed or dropped"), endpoint
            ) from exc
        self._log_attempt(endpoint, response.status_code, attempt_number, started)
        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError as exc:
                raise self._unexpected(endpoint, "success answer is not JSON") from exc
        try:
            error_body: object = response.json() if response.content else None
        except ValueError:
            error_body = None
        raise error_from_response(response.status_code, error_body, response.headers, endpoint=endpoint)

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, but never shorter than the server's Retry-After (capped)."""
        backoff = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            if self.pacer is not None:
                self.pacer.pause(min(exc.retry_after, self._max_retry_seconds))
            return max(backoff, min(exc.retry_after, self._max_retry_seconds))
        return backoff

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        endpoint = exc.endpoint if isinstance(exc, SpotlerError) else "?"
        logger.warning(
            "spotler %s failed (%s, attempt %d); retrying in %.2fs",
            endpoint,
            type(exc).__name__,
            state.attempt_number,
            state.upcoming_sleep,
        )

    @staticmethod
    def _log_attempt(endpoint: str, status: int | str, attempt: int, started: float) -> None:
        level = logging.DEBUG if isinstance(status, int) and status < 400 else logging.INFO
        logger.log(
            level,
            "spotler %s -> %s (attempt %d, %.3fs)",
            endpoint,
            status,
            attempt,
            time.monotonic() - started,
        )

    @staticmethod
    def _tag(error: SpotlerError, endpoint: str) -> SpotlerError:
        error.endpoint = endpoint
        return error

    def _unexpected(self, endpoint: str, detail: str) -> SpotlerPermanentError:
        error = SpotlerPermanentError(f"unexpected answer: {detail}")
        error.endpoint = endpoint
        return error

    def _convert(self, endpoint: str, build: Callable[[], _T]) -> _T:
        try:
            return build()
        except (wire.WireFormatError, ValueError, TypeError, KeyError) as exc:
            raise self._unexpected(endpoint, redact_emails(str(exc))) from exc
