"""The Spotler sandbox's state and rules: contacts keyed by externalId, the updates feed, and test controls.

Rules follow /work/shared/reference/spotler-api.md sections 5, 7 and 9 (documented behaviour where known, the
recommended reading where the docs are silent). Everything here is synchronous and guarded by one lock, so
tests may call the control methods from their own thread while uvicorn serves requests in another.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email

from sandboxes.spotler.catalogue import DEFAULT_PROPERTIES

FaultKind = Literal["rate_limit", "error", "delay", "drop"]
NL_POSTCODE = re.compile(r"^[1-9][0-9]{3}\s?[A-Za-z]{2}$")


@dataclass
class SandboxConfig:
    """How the sandbox behaves where Spotler's documentation is silent or sources conflict."""

    consumers: dict[str, str] = field(default_factory=lambda: {"sandbox-consumer-key": "sandbox-secret"})
    timestamp_window: float = 300.0  # seconds an OAuth timestamp may differ from the wall clock
    properties: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_PROPERTIES))
    invalid_email_error_type: str = "INVALID_PARAMS"  # or INVALID_PROPERTY
    duplicate_email_mode: Literal["merge", "allow"] = "merge"
    api_writes_in_feed: bool = True
    strict_postcode: bool = False  # True: postcode properties must be Dutch (1234 AB)
    updates_shape: Literal["wrapper", "array"] = "wrapper"
    timestamp_format: Literal["epoch_ms", "iso"] = "epoch_ms"
    naive_timezone: str = "Europe/Amsterdam"  # for query dates without an offset
    max_page_size: int = 10_000
    max_bulk: int = 100


class ApiError(Exception):
    """An answer with Spotler's error shape `{"errorType", "message"}`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> dict[str, str]:
        return {"errorType": self.error_type, "message": self.message}


@dataclass
class StoredContact:
    external_id: str
    encrypted_id: str
    created: int  # epoch ms
    last_changed: int
    feed_changed: int | None  # when it entered the updates feed; None while invisible to it
    properties: dict[str, Any] = field(default_factory=dict)  # set properties as {bit: enabled}
    test_group: bool = False
    temporary: bool = False
    opted_out: bool = False
    anonymized: bool = False

    def snapshot(self) -> tuple[Any, ...]:
        return (copy.deepcopy(self.properties), self.test_group, self.opted_out, self.anonymized)


@dataclass
class Fault:
    """An injected misbehaviour for one endpoint (or "*"): `times` None means until cleared.

    `after` calls pass untouched first, so a fault can hit, say, the third page of a feed.
    """

    kind: FaultKind
    times: int | None = 1
    after: int = 0
    status: int = 500
    retry_after: float | None = None
    retry_after_http_date: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class WriteOutcome:
    external_id: str  # the contact that was written (differs from the request on a duplicate merge)
    created: bool
    changed: bool
    merged: bool = False


class SpotlerStore:
    """In-memory Spotler account: contacts, catalogue, call counts, faults, rate limit and a settable clock."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._initial = copy.deepcopy(config or SandboxConfig())
        self._lock = threading.RLock()
        self.config = copy.deepcopy(self._initial)
        self._contacts: dict[str, StoredContact] = {}
        self._calls: Counter[str] = Counter()
        self._faults: dict[str, list[Fault]] = {}
        self._rate_limit: float | None = None
        self._recent: deque[float] = deque()
        self._nonces: dict[tuple[str, str, str], float] = {}
        self._fixed_now: int | None = None
        self._last_stamp = 0

    # ------------------------------------------------------------------ control: lifecycle, clock, config

    def reset(self) -> None:
        """Back to the initial configuration with no contacts, counts, faults, rate limit; wall clock."""
        with self._lock:
            self.config = copy.deepcopy(self._initial)
            self._contacts.clear()
            self._calls.clear()
            self._faults.clear()
            self._rate_limit = None
            self._recent.clear()
            self._nonces.clear()
            self._fixed_now = None
            self._last_stamp = 0

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change config fields at run time (reset() restores the initial ones)."""
        known = {f.name for f in fields(SandboxConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown sandbox settings: {sorted(unknown)}")
        with self._lock:
            self.config = replace(self.config, **changes)
            return self.config

    def now_ms(self) -> int:
        """The sandbox's "now" in epoch ms: the set clock, or the wall clock."""
        with self._lock:
            if self._fixed_now is not None:
                return self._fixed_now
            return int(time.time() * 1000)

    def set_clock(self, now: datetime | int) -> int:
        """Freeze "now" at `now` (aware datetime or epoch ms); it moves only by advance_clock()."""
        with self._lock:
            self._fixed_now = now if isinstance(now, int) else _to_ms(now)
            return self._fixed_now

    def advance_clock(self, seconds: float) -> int:
        """Move the frozen clock on (freezing it at the wall clock first if needed)."""
        with self._lock:
            self._fixed_now = self.now_ms() + round(seconds * 1000)
            return self._fixed_now

    def use_wall_clock(self) -> None:
        with self._lock:
            self._fixed_now = None

    def _stamp(self) -> int:
        # lastChanged must be strictly increasing under the wall clock so feed order is the write order.
        now = self.now_ms()
        if self._fixed_now is None:
            now = max(now, self._last_stamp + 1)
        self._last_stamp = max(self._last_stamp, now)
        return now

    # ------------------------------------------------------------------ control: calls, faults, rate limit

    def count_call(self, endpoint: str) -> None:
        with self._lock:
            self._calls[endpoint] += 1

    def call_counts(self) -> dict[str, int]:
        """Calls per endpoint, e.g. {"GET /contact/{externalId}": 3}, faults and 401s included."""
        with self._lock:
            return dict(self._calls)

    def reset_call_counts(self) -> None:
        with self._lock:
            self._calls.clear()

    def inject_fault(
        self,
        endpoint: str,
        kind: FaultKind,
        *,
        times: int | None = 1,
        status: int | None = None,
        retry_after: float | None = None,
        retry_after_http_date: bool = False,
        delay: float = 0.0,
        after: int = 0,
    ) -> Fault:
        """Misbehave on `endpoint` ("GET /contact/{externalId}", or "*" for all) for the next `times` calls.

        With `after`, that many calls pass normally before the fault starts.

        Kinds: `rate_limit` (429 + Retry-After), `error` (status, default 500), `delay` (answer normally after
        `delay` seconds) and `drop` (close the connection without answering).
        """
        if kind not in ("rate_limit", "error", "delay", "drop"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if after < 0 or (times is not None and times < 1):
            raise ValueError("after must be >= 0 and times >= 1 (or None)")
        default_status = 429 if kind == "rate_limit" else 500
        fault = Fault(
            kind=kind,
            times=times,
            status=status or default_status,
            retry_after=retry_after,
            retry_after_http_date=retry_after_http_date,
            delay=delay,
            after=after,
        )
        with self._lock:
            self._faults.setdefault(endpoint, []).append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, endpoint: str) -> Fault | None:
        """The fault to apply to this call, if any (consumes one of its `times`)."""
        with self._lock:
            for key in (endpoint, "*"):
                queue = self._faults.get(key, [])
                while queue:
                    fault = queue[0]
                    if fault.after > 0:
                        fault.after -= 1
                        break
                    if fault.times is None:
                        return fault
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            queue.pop(0)
                        return fault
                    queue.pop(0)
            return None

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Answer 429 once more than this many API requests arrive within one second (None: no limit)."""
        with self._lock:
            self._rate_limit = requests_per_second
            self._recent.clear()

    def check_rate_limit(self) -> float | None:
        """Seconds to wait when this request exceeds the rate limit, else None (and the request counts)."""
        with self._lock:
            if not self._rate_limit:
                return None
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self._rate_limit:
                return max(0.001, 1.0 - (now - self._recent[0]))
            self._recent.append(now)
            return None

    def remember_nonce(self, client_key: str, timestamp: str, nonce: str) -> bool:
        """False when this (key, timestamp, nonce) was seen before: a replay."""
        with self._lock:
            horizon = time.time() - 2 * self.config.timestamp_window
            for key in [k for k, seen in self._nonces.items() if seen < horizon]:
                del self._nonces[key]
            marker = (client_key, timestamp, nonce)
            if marker in self._nonces:
                return False
            self._nonces[marker] = time.time()
            return True

    # ------------------------------------------------------------------ control: contacts

    def seed(self, contacts: list[dict[str, Any]]) -> list[str]:
        """Create or overwrite contacts from wire-shaped dicts (validated like the API; no opt-out rule).

        Extra keys: `optedOut` (bool) marks a global opt-out; `lastChanged` / `created` (epoch ms) pin times.
        """
        ids = []
        with self._lock:
            for raw in contacts:
                external_id = _external_id(raw)
                self._contacts.pop(external_id, None)
                self._write(None, raw, purge=True, source="seed", external_id=external_id)
                stored = self._contacts[external_id]
                if raw.get("optedOut"):
                    self._opt_out(stored)
                for key, attr in (("lastChanged", "last_changed"), ("created", "created")):
                    if isinstance(raw.get(key), int):
                        setattr(stored, attr, raw[key])
                        if attr == "last_changed":
                            stored.feed_changed = raw[key]
                ids.append(external_id)
        return ids

    def profile_edit(
        self,
        external_id: str,
        *,
        properties: dict[str, Any] | None = None,
        permissions: dict[int, bool] | None = None,
        opt_out: bool | None = None,
    ) -> dict[str, Any]:
        """Change a contact the way the contact would through a Spotler profile form.

        Always visible in the updates feed when something changed. `opt_out=True` is a global unsubscribe
        (channel EMAIL off, every permission off); enabling a permission here re-subscribes the contact.
        """
        with self._lock:
            stored = self._require(external_id)
            before = stored.snapshot()
            body: dict[str, Any] = {"externalId": external_id, "properties": dict(properties or {})}
            if permissions:
                body["properties"]["permissions"] = [
                    {"bit": int(bit), "enabled": bool(on)} for bit, on in permissions.items()
                ]
            if body["properties"]:
                self._write(stored, body, purge=False, source="profile", external_id=external_id)
            if permissions and any(permissions.values()):
                stored.opted_out = False
            if opt_out is True:
                self._opt_out(stored)
            elif opt_out is False:
                stored.opted_out = False
            if stored.snapshot() != before:
                stamp = self._stamp()
                stored.last_changed = stamp
                stored.feed_changed = stamp
            return self.render(stored)

    def merge_duplicates(self, source_id: str, into_id: str) -> None:
        """Merge contact `source_id` into `into_id`, as Spotler's duplicate merge does outside the API.

        The surviving contact keeps its data and externalId; `source_id` no longer exists (GET answers 404).
        """
        with self._lock:
            self._require(source_id)
            survivor = self._require(into_id)
            del self._contacts[source_id]
            self._touch(survivor, source="profile")

    def contact(self, external_id: str) -> dict[str, Any] | None:
        """One contact as the API would return it (plus sandbox-only `optedOut`/`anonymized`), or None."""
        with self._lock:
            stored = self._contacts.get(external_id)
            return self._inspect(stored) if stored else None

    def contacts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._inspect(c) for c in sorted(self._contacts.values(), key=lambda c: c.external_id)]

    def _inspect(self, stored: StoredContact) -> dict[str, Any]:
        return {**self.render(stored), "optedOut": stored.opted_out, "anonymized": stored.anonymized}

    # ------------------------------------------------------------------ API operations

    def list_properties(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.config.properties)

    def get(self, external_id: str) -> dict[str, Any]:
        with self._lock:
            return self.render(self._require(external_id))

    def insert(self, body: object) -> WriteOutcome:
        """POST /contact."""
        request = _object(body, "request body")
        with self._lock:
            return self._insert_one(
                request.get("contact"),
                update=_flag(request, "update"),
                purge=_flag(request, "purge"),
            )

    def insert_many(self, body: object) -> list[dict[str, str]]:
        """POST /contact/list: per-item codes; only malformed requests fail as a whole."""
        request = _object(body, "request body")
        contacts = request.get("contacts")
        if not isinstance(contacts, list):
            raise ApiError(400, "INVALID_PARAMS", "No contacts provided")
        if len(contacts) > self.config.max_bulk:
            raise ApiError(400, "INVALID_PARAMS", f"Too many contacts provided (max is {self.config.max_bulk})")
        if any(not isinstance(c, dict) or not c.get("externalId") for c in contacts):
            raise ApiError(400, "INVALID_PARAMS", "Contact without externalId found")
        update, purge = _flag(request, "update"), _flag(request, "purge")
        results = []
        with self._lock:
            for item in contacts:
                external_id = str(item["externalId"])
                try:
                    outcome = self._insert_one(item, update=update, purge=purge)
                except ApiError as exc:
                    results.append({"externalId": external_id, "code": _bulk_code(exc), "message": exc.message})
                    continue
                message = "Merged into an existing contact with the same e-mail" if outcome.merged else ""
                results.append({"externalId": external_id, "code": "OK", "message": message})
        return results

    def update(self, external_id: str, body: object) -> WriteOutcome:
        """PUT /contact/{externalId}."""
        request = _object(body, "request body")
        contact = _object(request.get("contact"), "contact")
        with self._lock:
            stored = self._contacts.get(external_id)
            if stored is None:
                raise ApiError(404, "CONTACT_NOT_FOUND", "Given contact not found")
            if "externalId" in contact and str(contact["externalId"]) != external_id:
                raise ApiError(400, "INVALID_PARAMS", "Path externalId doesn't match contact externalId")
            return self._write(stored, contact, purge=_flag(request, "purge"), source="api", external_id=external_id)

    def anonymize(self, external_id: str) -> None:
        """PUT /contact/anonymize/{externalId}: keep the record and its externalId, erase everything else."""
        with self._lock:
            stored = self._require(external_id)
            before = stored.snapshot()
            bits = self._set_bits("permissions")
            stored.properties = {"permissions": dict.fromkeys(bits, False)} if bits else {}
            stored.test_group = False
            stored.anonymized = True
            if stored.snapshot() != before:
                self._touch(stored, source="api")

    def updates(self, query: dict[str, str], *, next_base: str) -> object:
        """GET /contact/updates/list: [fromDate, toDate) by feed time, ordered, offset-paged."""
        from_ms = self._query_date(query.get("fromDate"), "fromDate")
        to_ms = self._query_date(query.get("toDate"), "toDate")
        page_size, after = self._paging(query)
        with self._lock:
            matches = sorted(
                (
                    c
                    for c in self._contacts.values()
                    if c.feed_changed is not None and from_ms <= c.feed_changed < to_ms
                ),
                key=lambda c: (c.feed_changed or 0, c.external_id),
            )
            page = [self.render(c) for c in matches[after : after + page_size]]
            shape = self.config.updates_shape
        if shape == "array":
            return page
        return {"paging": _paging_block(next_base, query, after, len(page), len(matches)), "contacts": page}

    def search(self, query: dict[str, str], *, next_base: str) -> dict[str, Any]:
        """GET /contact/search with `MPSearchQuery=<property>=<value>` (e-mail matched case-insensitively)."""
        expression = query.get("MPSearchQuery")
        if not expression or "=" not in expression:
            raise ApiError(400, "INVALID_PARAMS", "Invalid MPSearchQuery or no MPSearchQuery given")
        name, value = (part.strip() for part in expression.split("=", 1))
        page_size, after = self._paging(query)
        with self._lock:
            if name not in self._catalogue():
                raise ApiError(400, "INVALID_PROPERTY", "Property is invalid")

            def matches(c: StoredContact) -> bool:
                have = c.properties.get(name)
                if name == "email" and isinstance(have, str):
                    return have.lower() == value.lower()
                return have is not None and str(have) == value

            found = sorted((c for c in self._contacts.values() if matches(c)), key=lambda c: c.external_id)
            page = [self.render(c) for c in found[after : after + page_size]]
        return {"paging": _paging_block(next_base, query, after, len(page), len(found)), "contacts": page}

    # ------------------------------------------------------------------ rendering

    def render(self, stored: StoredContact) -> dict[str, Any]:
        """The contact as Spotler's GET returns it (properties only when they hold data)."""
        catalogue = self._catalogue()
        properties: dict[str, Any] = {}
        for name, value in stored.properties.items():
            prop = catalogue.get(name, {})
            if prop.get("type") == "set":
                properties[name] = [
                    {
                        "bit": entry["bit"],
                        "description": entry.get("description", ""),
                        "enabled": bool(value.get(int(entry["bit"]), False)),
                    }
                    for entry in prop.get("entries", [])
                ]
            else:
                properties[name] = value
        email = properties.get("email")
        # The e-mail channel is on only when the contact has an address and has not opted out (an anonymized
        # contact has no address, so its channel reads off without the person having opted out).
        channels = [{"name": "EMAIL", "value": bool(email) and not stored.opted_out}]
        return {
            "externalId": stored.external_id,
            "encryptedId": stored.encrypted_id,
            "created": self._timestamp(stored.created),
            "lastChanged": self._timestamp(stored.last_changed),
            "testGroup": stored.test_group,
            "temporary": stored.temporary,
            "properties": properties,
            "channels": channels,
        }

    def _timestamp(self, ms: int) -> int | str:
        if self.config.timestamp_format == "iso":
            return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
        return ms

    # ------------------------------------------------------------------ rules

    def _insert_one(self, contact: object, *, update: bool, purge: bool) -> WriteOutcome:
        data = _object(contact, "contact")
        external_id = _external_id(data)
        existing = self._contacts.get(external_id)
        if existing is not None:
            if not update:
                raise ApiError(400, "CONTACT_ALREADY_EXISTS", "Contact already exists")
            return self._write(existing, data, purge=purge, source="api", external_id=external_id)
        duplicate = self._by_email(data)
        if duplicate is not None and self.config.duplicate_email_mode == "merge":
            # Spotler prevents duplicate e-mail addresses: the write lands on the contact that has it.
            outcome = self._write(duplicate, data, purge=purge, source="api", external_id=duplicate.external_id)
            return replace(outcome, merged=True)
        return self._write(None, data, purge=purge, source="api", external_id=external_id)

    def _by_email(self, data: dict[str, Any]) -> StoredContact | None:
        properties = data.get("properties")
        email = properties.get("email") if isinstance(properties, dict) else None
        if not isinstance(email, str) or not email.strip():
            return None
        wanted = email.strip().lower()
        for stored in sorted(self._contacts.values(), key=lambda c: c.created):
            have = stored.properties.get("email")
            if isinstance(have, str) and have.lower() == wanted:
                return stored
        return None

    def _write(
        self,
        stored: StoredContact | None,
        data: dict[str, Any],
        *,
        purge: bool,
        source: Literal["api", "seed", "profile"],
        external_id: str,
    ) -> WriteOutcome:
        raw_properties = data.get("properties") or {}
        if not isinstance(raw_properties, dict):
            raise ApiError(400, "INVALID_PARAMS", "Contact properties must be an object")
        test_group = data.get("testGroup", raw_properties.get("testGroup"))
        if test_group is not None and not isinstance(test_group, bool):
            raise ApiError(400, "INVALID_PROPERTY", "Property is invalid: testGroup")
        catalogue = self._catalogue()
        validated: dict[str, Any] = {}
        for name, value in raw_properties.items():
            if name in ("externalId", "testGroup"):
                continue
            prop = catalogue.get(name)
            if prop is None:
                raise ApiError(400, "INVALID_PROPERTY", f"Property is invalid: {name}")
            validated[name] = self._validate(prop, value)
        if source == "api" and stored is not None and stored.opted_out:
            wanted = validated.get("permissions")
            if isinstance(wanted, dict) and any(wanted.values()):
                raise ApiError(400, "CONTACT_OPTOUT", "Contact has opted out; permissions cannot be enabled")

        properties: dict[str, Any] = {} if purge or stored is None else copy.deepcopy(stored.properties)
        for name, value in validated.items():
            if value is None:
                properties.pop(name, None)
            elif isinstance(value, dict) and isinstance(properties.get(name), dict):
                properties[name].update(value)  # unsent bits keep their value
            else:
                properties[name] = value

        if stored is None:
            stamp = self._stamp()
            new = StoredContact(
                external_id=external_id,
                encrypted_id=secrets.token_urlsafe(12),
                created=stamp,
                last_changed=stamp,
                feed_changed=stamp if source != "api" or self.config.api_writes_in_feed else None,
                properties=properties,
                test_group=bool(test_group),
            )
            self._contacts[external_id] = new
            return WriteOutcome(external_id=external_id, created=True, changed=True)

        before = stored.snapshot()
        stored.properties = properties
        if test_group is not None:
            stored.test_group = test_group
        elif purge:
            stored.test_group = False
        if stored.anonymized and properties.get("email"):
            stored.anonymized = False
        changed = stored.snapshot() != before
        if changed and source != "profile":  # profile_edit stamps once for all its changes
            self._touch(stored, source=source)
        return WriteOutcome(external_id=stored.external_id, created=False, changed=changed)

    def _touch(self, stored: StoredContact, *, source: str) -> None:
        stamp = self._stamp()
        stored.last_changed = stamp
        if source != "api" or self.config.api_writes_in_feed:
            stored.feed_changed = stamp

    def _opt_out(self, stored: StoredContact) -> None:
        stored.opted_out = True
        bits = self._set_bits("permissions")
        current = stored.properties.get("permissions")
        merged = {**dict.fromkeys(bits, False), **dict.fromkeys(current or {}, False)}
        if merged:
            stored.properties["permissions"] = merged

    def _validate(self, prop: dict[str, Any], value: Any) -> Any:
        name, kind = prop["name"], prop.get("type", "string")
        if value is None:
            return None

        def invalid() -> ApiError:
            return ApiError(400, "INVALID_PROPERTY", f"Property is invalid: {name}")

        if kind == "email":
            if not isinstance(value, str):
                raise ApiError(400, self.config.invalid_email_error_type, "Email is invalid")
            if not value.strip():
                return None
            try:
                validate_email(value.strip(), check_deliverability=False)
            except EmailNotValidError:
                raise ApiError(400, self.config.invalid_email_error_type, "Email is invalid") from None
            return value.strip()
        if kind == "set":
            if not isinstance(value, list):
                raise invalid()
            allowed = {int(e["bit"]) for e in prop.get("entries", [])}
            bits: dict[int, bool] = {}
            for item in value:
                if not isinstance(item, dict) or isinstance(item.get("bit"), bool):
                    raise invalid()
                bit, enabled = item.get("bit"), item.get("enabled", True)
                if not isinstance(bit, int) or bit not in allowed or not isinstance(enabled, bool):
                    raise invalid()
                bits[bit] = enabled
            return bits
        if kind in ("date", "birthdate"):
            if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise invalid()
            try:
                date.fromisoformat(value)
            except ValueError:
                raise invalid() from None
            return value
        if kind == "dateTime":
            if not isinstance(value, str):
                raise invalid()
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise invalid() from None
            return value
        if kind == "int":
            if isinstance(value, bool):
                raise invalid()
            if isinstance(value, int):
                return value
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
            raise invalid()
        if kind == "money":
            if isinstance(value, bool):
                raise invalid()
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise invalid() from None
            if not math.isfinite(number):
                raise invalid()
            return number
        if kind == "gender":
            if not isinstance(value, str) or value.upper() not in ("M", "F"):
                raise invalid()
            return value.upper()
        if kind == "boolean":
            if not isinstance(value, bool):
                raise invalid()
            return value
        if kind == "postcode":
            if not isinstance(value, str):
                raise invalid()
            if self.config.strict_postcode and not NL_POSTCODE.match(value.strip()):
                raise invalid()
            return value.strip()
        # string, mobNr and unknown types: text; numbers are accepted and kept as text.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise invalid()
        return str(value)

    # ------------------------------------------------------------------ helpers

    def _catalogue(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.config.properties}

    def _set_bits(self, name: str) -> list[int]:
        prop = self._catalogue().get(name, {})
        return [int(e["bit"]) for e in prop.get("entries", [])]

    def _require(self, external_id: str) -> StoredContact:
        stored = self._contacts.get(external_id)
        if stored is None:
            raise ApiError(404, "CONTACT_NOT_FOUND", "Given contact not found")
        return stored

    def _query_date(self, value: str | None, name: str) -> int:
        message = f"Invalid {name} or no {name} given"
        if not value:
            raise ApiError(400, "INVALID_PARAMS", message)
        text = value.strip()
        # An unencoded '+' in a query string arrives as a space: "…T10:00:00 01:00".
        text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise ApiError(400, "INVALID_PARAMS", message) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=ZoneInfo(self.config.naive_timezone))
        return _to_ms(parsed)

    def _paging(self, query: dict[str, str]) -> tuple[int, int]:
        raw_size, raw_after = query.get("pageSize"), query.get("after", "0") or "0"
        if raw_size is None or not raw_size.isdigit() or int(raw_size) < 1:
            raise ApiError(400, "INVALID_PARAMS", "Invalid pageSize or no pageSize given")
        if int(raw_size) > self.config.max_page_size:
            raise ApiError(400, "INVALID_PARAMS", f"pageSize exceeds maximum of {self.config.max_page_size}")
        if not raw_after.isdigit():
            raise ApiError(400, "INVALID_PARAMS", "Invalid after")
        return int(raw_size), int(raw_after)


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("clock values must be timezone-aware")
    return round(value.timestamp() * 1000)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "INVALID_PARAMS", f"Invalid {what}")
    return value


def _flag(request: dict[str, Any], name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "INVALID_PARAMS", f"Invalid {name}")
    return value


def _external_id(data: dict[str, Any]) -> str:
    value = data.get("externalId")
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        raise ApiError(400, "INVALID_PARAMS", "Contact without externalId found")
    return str(value)


def _bulk_code(error: ApiError) -> str:
    if error.error_type in ("INVALID_PROPERTY", "INVALID_PARAMS"):
        return "PROPERTY_INVALID"
    if error.error_type in ("CONTACT_ALREADY_EXISTS", "CONTACT_OPTOUT"):
        return error.error_type
    return "ERROR"


def _paging_block(next_base: str, query: dict[str, str], after: int, returned: int, total: int) -> dict[str, Any]:
    following = after + returned
    paging: dict[str, Any] = {"after": following}
    if following < total:
        params = {**query, "after": str(following)}
        paging["next"] = f"{next_base}?{urlencode(list(params.items()), quote_via=quote, safe='')}"
    return paging
