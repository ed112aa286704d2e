"""The Spotler sandbox as a Starlette app: the contact API (OAuth 1.0a verified) and a `/_sandbox/` control API.

The API is served under both `/integrationservice/` and `/integrationservice-1.1.0/`. Each call is counted by
endpoint template before anything else happens, so injected faults and 401s show up in the counts; then come
the rate limit, injected faults, signature verification and finally the rules in `store.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, RequestValidator, SignatureOnlyEndpoint
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from sandboxes.spotler.store import ApiError, Fault, SandboxConfig, SpotlerStore

logger = logging.getLogger("sandboxes.spotler")

PREFIXES = ("/integrationservice-1.1.0", "/integrationservice")
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._~\-]{1,256}$")

Handler = Callable[[SpotlerStore, dict[str, str], dict[str, str], Any, str], Response]


class _Validator(RequestValidator):  # type: ignore[misc]
    """Two-legged OAuth 1.0a: consumer key + secret, no token; nonces remembered by the store."""

    def __init__(self, store: SpotlerStore) -> None:
        super().__init__()
        self._store = store

    @property
    def enforce_ssl(self) -> bool:
        return False  # the sandbox serves plain http on loopback

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        return (SIGNATURE_HMAC_SHA1,)

    @property
    def timestamp_lifetime(self) -> float:
        return self._store.config.timestamp_window

    @property
    def dummy_client(self) -> str:
        return "sandbox-dummy-client"

    def check_client_key(self, client_key: str) -> bool:
        return bool(SAFE_TOKEN.match(client_key))

    def check_nonce(self, nonce: str) -> bool:
        return bool(SAFE_TOKEN.match(nonce))

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key in self._store.config.consumers

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self._store.config.consumers.get(client_key, "sandbox-dummy-secret")

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return ""  # a non-empty oauth_token is tolerated and signed with an empty token secret

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        return self._store.remember_nonce(client_key, timestamp, nonce)


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"errorType": error_type, "message": message}, status_code=status, headers=headers)


# ---------------------------------------------------------------------- API handlers


def _list_properties(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    return JSONResponse(store.list_properties())


def _insert(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    store.insert(body)
    return Response(status_code=204)


def _insert_many(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    return JSONResponse(store.insert_many(body))


def _get(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    return JSONResponse(store.get(path["externalId"]))


def _update(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    store.update(path["externalId"], body)
    return Response(status_code=204)


def _anonymize(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    store.anonymize(path["externalId"])
    return Response(status_code=204)


def _updates(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    return JSONResponse(store.updates(query, next_base=url))


def _search(store: SpotlerStore, path: dict[str, str], query: dict[str, str], body: Any, url: str) -> Response:
    return JSONResponse(store.search(query, next_base=url))


# Specific paths before `/contact/{externalId}`, as a real router would match them.
API_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/contact/properties/list", _list_properties),
    ("POST", "/contact/list", _insert_many),
    ("GET", "/contact/updates/list", _updates),
    ("GET", "/contact/search", _search),
    ("PUT", "/contact/anonymize/{externalId}", _anonymize),
    ("POST", "/contact", _insert),
    ("GET", "/contact/{externalId}", _get),
    ("PUT", "/contact/{externalId}", _update),
]


def _match(template: str, segments: list[str]) -> dict[str, str] | None:
    parts = template.strip("/").split("/")
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


class SpotlerApi:
    """The contact API as a raw ASGI app, so a fault can drop the connection without any answer."""

    def __init__(self, store: SpotlerStore) -> None:
        self.store = store
        self._oauth = SignatureOnlyEndpoint(_Validator(store))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path.split(b"?", 1)[0].decode("latin-1")
        response = await self._handle(request, raw_path, scope, receive)
        if response is not None:
            await response(scope, receive, send)

    async def _handle(self, request: Request, raw_path: str, scope: Scope, receive: Receive) -> Response | None:
        store = self.store
        method = request.method
        prefix = next((p for p in PREFIXES if raw_path == p or raw_path.startswith(p + "/")), None)
        relative = raw_path[len(prefix) :] if prefix else raw_path
        segments = [unquote(s) for s in relative.strip("/").split("/")]
        endpoint, handler, params = f"{method} (unmatched)", None, None
        path_matched = False
        for route_method, template, route_handler in API_ROUTES:
            found = _match(template, segments) if prefix else None
            if found is None:
                continue
            path_matched = True
            if route_method == method:
                endpoint, handler, params = f"{method} {template}", route_handler, found
                break
        store.count_call(endpoint)

        try:
            # Read the body before any injected delay, so a slow write still lands after the client gave up.
            body_bytes = await request.body()
        except ClientDisconnect:
            return None

        wait = store.check_rate_limit()
        if wait is not None:
            return _error(429, "TOO_MANY_REQUESTS", "Rate limit exceeded", {"Retry-After": str(math.ceil(wait))})
        fault = store.take_fault(endpoint)
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "drop":
                await _drop_connection(receive)
                return None
            else:
                return _fault_response(fault)

        if handler is None or params is None:
            if path_matched:
                return _error(405, "INVALID_PARAMS", f"Method {method} not allowed")
            return _error(404, "RESOURCE_NOT_FOUND", "Resource not found")

        if not self._authorized(request, raw_path, body_bytes):
            return _error(401, "NOT_AUTHORIZED", "Not authorized: invalid consumer key, signature or timestamp")

        body: Any = None
        if body_bytes.strip():
            try:
                body = json.loads(body_bytes)
            except ValueError:
                return _error(400, "INVALID_PARAMS", "Request body is not valid JSON")
        query = {k: v for k, v in request.query_params.items() if not k.startswith("oauth_")}
        next_base = f"{scope.get('scheme', 'http')}://{request.headers.get('host', '')}{raw_path}"
        try:
            return handler(store, params, query, body, next_base)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    def _authorized(self, request: Request, raw_path: str, body: bytes) -> bool:
        # Rebuild the URI exactly as the client signed it: scheme://host:port/raw-path?raw-query.
        host = request.headers.get("host", "")
        query = request.scope.get("query_string", b"").decode("latin-1")
        uri = f"{request.scope.get('scheme', 'http')}://{host}{raw_path}" + (f"?{query}" if query else "")
        try:
            valid, _ = self._oauth.validate_request(
                uri, http_method=request.method, body=body.decode("utf-8", "replace"), headers=dict(request.headers)
            )
        except ValueError:  # oauthlib rejects malformed query strings before looking at the signature
            return False
        return bool(valid)


def _fault_response(fault: Fault) -> Response:
    if fault.kind == "rate_limit":
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            if fault.retry_after_http_date:
                when = datetime.now(UTC) + timedelta(seconds=fault.retry_after)
                headers["Retry-After"] = format_datetime(when, usegmt=True)
            else:
                headers["Retry-After"] = f"{fault.retry_after:g}"
        return _error(fault.status, "TOO_MANY_REQUESTS", "Too many requests", headers)
    return _error(fault.status, "BACKEND_EXCEPTION", "Injected failure")


async def _drop_connection(receive: Receive) -> None:
    """Close the TCP connection without a response (uvicorn's receive is bound to its request cycle)."""
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("injected drop")  # uvicorn answers 500 if it cannot be dropped
    transport.close()
    # Let uvicorn notice the closed connection so it does not try to send a 500 afterwards.
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------- control API


def _control_routes(store: SpotlerStore) -> list[Route]:
    async def reset(request: Request) -> Response:
        store.reset()
        return JSONResponse({"status": "reset"})

    async def seed(request: Request) -> Response:
        payload = await request.json()
        contacts = payload.get("contacts") if isinstance(payload, dict) else payload
        if not isinstance(contacts, list):
            return _error(400, "INVALID_PARAMS", 'Expected {"contacts": [...]}')
        try:
            ids = store.seed(contacts)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse({"externalIds": ids}, status_code=201)

    async def list_contacts(request: Request) -> Response:
        return JSONResponse(store.contacts())

    async def one_contact(request: Request) -> Response:
        contact = store.contact(request.path_params["externalId"])
        if contact is None:
            return _error(404, "CONTACT_NOT_FOUND", "Given contact not found")
        return JSONResponse(contact)

    async def profile_edit(request: Request) -> Response:
        payload = await request.json()
        permissions = payload.get("permissions")
        try:
            contact = store.profile_edit(
                request.path_params["externalId"],
                properties=payload.get("properties"),
                permissions={int(k): bool(v) for k, v in permissions.items()} if permissions else None,
                opt_out=payload.get("optOut"),
            )
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse(contact)

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            store.reset_call_counts()
            return Response(status_code=204)
        return JSONResponse(store.call_counts())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            store.clear_faults()
            return Response(status_code=204)
        payload = await request.json()
        try:
            store.inject_fault(
                payload.get("endpoint", "*"),
                payload["kind"],
                times=payload.get("times", 1),
                status=payload.get("status"),
                retry_after=payload.get("retryAfter"),
                retry_after_http_date=bool(payload.get("retryAfterHttpDate", False)),
                delay=float(payload.get("delay", 0.0)),
                after=int(payload.get("after", 0)),
            )
        except (KeyError, ValueError) as exc:
            return _error(400, "INVALID_PARAMS", str(exc))
        return Response(status_code=204)

    async def rate_limit(request: Request) -> Response:
        payload = await request.json()
        store.set_rate_limit(payload.get("requestsPerSecond"))
        return Response(status_code=204)

    async def clock(request: Request) -> Response:
        if request.method == "DELETE":
            store.use_wall_clock()
        elif request.method == "POST":
            payload = await request.json()
            if "now" in payload:
                now = payload["now"]
                store.set_clock(now if isinstance(now, int) else datetime.fromisoformat(now))
            if "advanceSeconds" in payload:
                store.advance_clock(float(payload["advanceSeconds"]))
        now_ms = store.now_ms()
        return JSONResponse({"now": now_ms, "iso": datetime.fromtimestamp(now_ms / 1000, tz=UTC).isoformat()})

    async def config(request: Request) -> Response:
        if request.method == "PATCH":
            try:
                store.configure(**await request.json())
            except (TypeError, ValueError) as exc:
                return _error(400, "INVALID_PARAMS", str(exc))
        current = store.config
        return JSONResponse(
            {
                "invalid_email_error_type": current.invalid_email_error_type,
                "duplicate_email_mode": current.duplicate_email_mode,
                "api_writes_in_feed": current.api_writes_in_feed,
                "strict_postcode": current.strict_postcode,
                "updates_shape": current.updates_shape,
                "timestamp_format": current.timestamp_format,
                "timestamp_window": current.timestamp_window,
            }
        )

    return [
        Route("/reset", reset, methods=["POST"]),
        Route("/contacts", seed, methods=["POST"]),
        Route("/contacts", list_contacts, methods=["GET"]),
        Route("/contacts/{externalId}", one_contact, methods=["GET"]),
        Route("/contacts/{externalId}/profile-edit", profile_edit, methods=["POST"]),
        Route("/calls", calls, methods=["GET", "DELETE"]),
        Route("/faults", faults, methods=["POST", "DELETE"]),
        Route("/rate-limit", rate_limit, methods=["PUT"]),
        Route("/clock", clock, methods=["GET", "POST", "DELETE"]),
        Route("/config", config, methods=["GET", "PATCH"]),
    ]


def create_app(config: SandboxConfig | None = None, *, store: SpotlerStore | None = None) -> Starlette:
    """The sandbox app; its store is `app.state.store` (pass `store` to share one you already hold)."""
    store = store or SpotlerStore(config)
    api = SpotlerApi(store)
    app = Starlette(
        routes=[
            Mount("/_sandbox", routes=_control_routes(store)),
            Route("/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )
    app.state.store = store
    return app
