"""Health of the running connector: each dependency and each backlog checked, one overall verdict.

`unhealthy` means the sync cannot work (storage, the queue, Spotler or Dataverse does not answer); `degraded`
means it works but something needs an operator (dead letters, a poison message, an old watermark or queue
backlog, a mapping that names unknown Spotler properties). The anonymous route gets only the verdict; the
details (function key) never hold a URL, a setting value, an e-mail address or a secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from azure.core.exceptions import ResourceNotFoundError

from sync_core.domain.mapping import MappingConfig
from sync_core.domain.ports import SpotlerGateway, StateStore
from sync_core.domain.records import ENTITY_NAMES
from sync_core.services.pull import WATERMARK_NAME

log = logging.getLogger("sync_core.health")

Verdict = Literal["healthy", "degraded", "unhealthy"]
_ORDER: dict[Verdict, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}
PULL_INTERVAL = timedelta(minutes=15)
CHECK_TIMEOUT_SECONDS = 20.0
# Spotler contact fields that are not in its property catalogue.
BUILT_IN_PROPERTIES = frozenset({"email", "externalId", "permissions", "channels", "testGroup"})


class QueueProbe(Protocol):
    async def count(self) -> int: ...

    async def oldest_age(self, now: datetime) -> float | None: ...


class WhoAmI(Protocol):
    async def who_am_i(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Verdict
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, **self.data}


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Verdict
    checks: tuple[Check, ...]

    def view(self) -> dict[str, Any]:
        return {"status": self.status, "checks": [c.view() for c in self.checks]}


def worst(statuses: list[Verdict]) -> Verdict:
    return max(statuses, key=lambda s: _ORDER[s], default="healthy")


def _failure(name: str, exc: BaseException) -> Check:
    kind = "timed out" if isinstance(exc, TimeoutError) else "does not answer"
    return Check(name, "unhealthy", f"{kind} ({type(exc).__name__})", {"errorType": type(exc).__name__})


async def _guarded(name: str, probe: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("health check failed", extra={"check": name, "error.type": type(exc).__name__})
        return _failure(name, exc)


@dataclass
class HealthChecker:
    """Runs the deep checks; every probe is bounded in time and isolated from the others."""

    state: StateStore
    queue: QueueProbe | None
    poison: QueueProbe | None
    spotler: SpotlerGateway
    dataverse: object
    mapping: MappingConfig
    clock: Callable[[], datetime]
    max_delivery_attempts: int
    host_max_dequeue_count: int | None = None
    pull_interval: timedelta = PULL_INTERVAL
    # More checks by name (for example a configuration check); each runs guarded like the built-in ones.
    extra: dict[str, Callable[[], Awaitable[Check]]] = field(default_factory=dict)

    async def run(self) -> HealthReport:
        checks = await asyncio.gather(
            _guarded("storage", self._storage),
            _guarded("queue", self._queue),
            _guarded("spotler", self._spotler),
            _guarded("dataverse", self._dataverse),
            _guarded("deadLetters", self._dead_letters),
            *(_guarded(name, probe) for name, probe in self.extra.items()),
        )
        # A named "mapping" check (the full live check against both systems) replaces the built-in one.
        builtin = "mapping" not in self.extra and checks[2].status == "healthy"
        mapping = await _guarded("mapping", self._mapping) if builtin else None
        results = [*checks, *(c for c in (mapping,) if c is not None), self._delivery_attempts()]
        return HealthReport(worst([c.status for c in results]), tuple(results))

    async def _storage(self) -> Check:
        started = time.monotonic()
        watermark = await self.state.get_watermark(WATERMARK_NAME)
        took = round((time.monotonic() - started) * 1000)
        if watermark is None or watermark.value is None:
            return Check("storage", "healthy", "Table Storage answers; no pull has completed yet", {"ms": took})
        age = (self.clock() - watermark.value).total_seconds()
        limit = 2 * self.pull_interval.total_seconds()
        data = {"ms": took, "watermarkAgeSeconds": round(age)}
        if age > limit:
            return Check("storage", "degraded", f"watermark older than two pull intervals ({round(age)} s)", data)
        return Check("storage", "healthy", "Table Storage answers; watermark recent", data)

    async def _queue(self) -> Check:
        if self.queue is None:
            return Check("queue", "healthy", "no queue to check")
        now = self.clock()
        try:
            backlog = await self.queue.count()
        except ResourceNotFoundError:
            # Locally nothing has created it yet (in Azure the infrastructure does): the first accepted webhook will.
            detail = "the event queue does not exist yet; the first accepted webhook creates it"
            return Check("queue", "degraded", detail, {"backlog": 0, "missing": True})
        oldest = await self.queue.oldest_age(now)
        data: dict[str, Any] = {"backlog": backlog, "oldestSeconds": None if oldest is None else round(oldest)}
        status: Verdict = "healthy"
        detail = "the event queue answers"
        if oldest is not None and oldest > self.pull_interval.total_seconds():
            status, detail = "degraded", f"the oldest queued change waits {round(oldest)} s"
        if self.poison is not None:
            try:
                poisoned = await self.poison.count()
            except ResourceNotFoundError:
                poisoned = 0  # no message was ever poisoned: the host creates the poison queue with the first
            data["poison"] = poisoned
            if poisoned:
                status, detail = "degraded", f"{poisoned} message(s) in the poison queue"
        return Check("queue", status, detail, data)

    async def _spotler(self) -> Check:
        started = time.monotonic()
        properties = await self.spotler.list_properties()
        took = round((time.monotonic() - started) * 1000)
        return Check(
            "spotler", "healthy", "Spotler answers an authenticated call", {"ms": took, "properties": len(properties)}
        )

    async def _dataverse(self) -> Check:
        started = time.monotonic()
        if not hasattr(self.dataverse, "who_am_i"):
            return Check("dataverse", "healthy", "no WhoAmI on this gateway")
        probe: WhoAmI = self.dataverse
        await probe.who_am_i()
        took = round((time.monotonic() - started) * 1000)
        return Check("dataverse", "healthy", "Dataverse answers WhoAmI", {"ms": took})

    async def _dead_letters(self) -> Check:
        letters = await self.state.list_dead_letters(limit=1000)
        if letters:
            return Check("deadLetters", "degraded", f"{len(letters)} dead letter(s) wait", {"count": len(letters)})
        return Check("deadLetters", "healthy", "no dead letters", {"count": 0})

    async def _mapping(self) -> Check:
        catalogue = {p.name for p in await self.spotler.list_properties()} | BUILT_IN_PROPERTIES
        unknown = sorted(
            {
                f.spotler
                for entity in ENTITY_NAMES
                if (m := self.mapping.for_entity(entity)) is not None
                for f in m.fields
                if f.spotler not in catalogue
            }
        )
        if unknown:
            return Check(
                "mapping", "degraded", "the mapping names properties Spotler does not have", {"unknown": unknown}
            )
        return Check("mapping", "healthy", "every mapped Spotler property exists")

    def _delivery_attempts(self) -> Check:
        host = self.host_max_dequeue_count
        data = {"maxDeliveryAttempts": self.max_delivery_attempts, "hostMaxDequeueCount": host}
        if host is not None and self.max_delivery_attempts > host:
            return Check(
                "deliveryAttempts",
                "degraded",
                "MAX_DELIVERY_ATTEMPTS is above host.json maxDequeueCount: failures reach the poison queue first",
                data,
            )
        return Check(
            "deliveryAttempts", "healthy", "the worker dead-letters on or before the host's last delivery", data
        )


class CachedVerdict:
    """The anonymous route's verdict, recomputed at most every `ttl` (anonymous callers cannot load Spotler)."""

    def __init__(self, ttl: timedelta = timedelta(seconds=30)) -> None:
        self._ttl = ttl.total_seconds()
        self._at = -1e18
        self._verdict: Verdict = "healthy"
        self._lock = asyncio.Lock()

    async def get(self, compute: Callable[[], Awaitable[Verdict]]) -> Verdict:
        async with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                self._verdict = await compute()
                self._at = time.monotonic()
            return self._verdict

    def clear(self) -> None:
        self._at = -1e18
