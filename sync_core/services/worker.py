"""The queue worker around the push: nothing that reaches the queue is silently lost.

- Every delivery runs the push inside a `sync.push` span; a failure before the last delivery goes back to the
  queue (the host delivers it again).
- On the last delivery (`MAX_DELIVERY_ATTEMPTS`, checked against host.json `maxDequeueCount`) *every* failure,
  transient, permanent, storage or unexpected, becomes a dead letter with its error class.
- A message that is not a change event becomes a dead letter that holds its raw body.
- When the dead letter itself cannot be stored (Table Storage is down), the worker forwards the message to
  `<queue>-poison` wrapped with its error class; the poison-queue trigger (`deliver_poison`) turns whatever lands
  there, the worker's forwards and the host's own poison messages alike, into dead letters once storage answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from sync_core.domain.event_codec import EventDecodeError, decode_event
from sync_core.domain.ports import StateStore
from sync_core.domain.records import ENTITY_NAMES, ChangeEvent, EntityName
from sync_core.domain.state_model import DeadLetter
from sync_core.services.intake import EventSink
from sync_core.services.push import PushOutcome, PushService
from sync_core.telemetry import Recorder, current, log_fields, seconds_between, sync_attributes

log = logging.getLogger("sync_core.worker")

POISON_SUFFIX = "-poison"
ENVELOPE_VERSION = 1
UNDECODABLE = "EventDecodeError"
HOST_POISON = "PoisonMessage"
# Actions that wrote to Spotler: their end-to-end latency is measured from Dataverse's modifiedon.
WRITES = frozenset({"create", "update", "anonymize", "unsubscribe", "relink"})


def poison_queue_name(queue_name: str) -> str:
    """The queue the Functions host moves a message to after `maxDequeueCount` failed deliveries."""
    return f"{queue_name}{POISON_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one delivery came to: the push outcome, or the dead letter it was parked as."""

    outcome: PushOutcome | None = None
    dead_letter: str | None = None
    forwarded: bool = False


def _error_class(name: str) -> type[Exception]:
    """An exception type named like the original failure, for a failure known only by its class name."""
    safe = re.sub(r"\W", "", name) or "Exception"
    if not safe[0].isalpha():
        safe = f"E{safe}"
    return type(safe, (Exception,), {})


def _raw_event_id(body: str) -> str:
    return "raw-" + hashlib.sha256(body.encode("utf-8")).hexdigest()[:40]


def _raw_entity(body: str) -> EntityName:
    """The table a message names, if it names one; `contact` otherwise (the dead letter's partition)."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        data = json.loads(body)
        entity = data.get("entity") if isinstance(data, dict) else None
        if entity in ENTITY_NAMES:
            return entity  # type: ignore[no-any-return]
    return "contact"


class QueueWorker:
    """Delivers queued events to the push service and parks every last-delivery failure."""

    def __init__(
        self,
        *,
        push: PushService,
        state: StateStore,
        poison: EventSink | None,
        max_attempts: int,
        clock: Callable[[], datetime],
        telemetry: Callable[[], Recorder] = current,
    ) -> None:
        self._push = push
        self._state = state
        self._poison = poison
        self._max_attempts = max_attempts
        self._clock = clock
        self._telemetry = telemetry

    async def deliver(self, body: bytes, *, message_id: str | None, dequeue_count: int | None) -> Delivered:
        """Handle one delivery. Raises (so the host delivers again) only before the last delivery."""
        attempts = dequeue_count or 1
        last = attempts >= self._max_attempts
        text = body.decode("utf-8", errors="replace")
        try:
            event = decode_event(body.decode("utf-8"))
        except (EventDecodeError, UnicodeDecodeError) as exc:
            return await self._park_raw(text, _error_class(UNDECODABLE)(str(exc)), attempts=attempts)
        telemetry = self._telemetry()
        owner = message_id or event.idempotency_key
        try:
            with telemetry.span("sync.push", entity=event.entity, record_id=event.record_id) as span:
                span.set_attribute("sync.delivery", attempts)
                outcome = await self._push.handle(event, owner=owner)
                reason = outcome.reason.value if outcome.reason is not None else None
                span.set_attribute("sync.action", outcome.action)
                if reason is not None:
                    span.set_attribute("sync.reason", reason)
        except Exception as exc:
            telemetry.change(direction="push", action="failed", reason=type(exc).__name__)
            # The push gave its claim back without completing it (its lease row, in the same write), so a
            # replay of the dead letter is not taken for a duplicate.
            if not last:
                raise
            return await self._park_event(event, exc, attempts=attempts, body=text)
        telemetry.change(direction="push", action=outcome.action, reason=reason)
        if outcome.action in WRITES:
            latency = seconds_between(event.modified_on, self._clock())
            if latency is not None:
                telemetry.push_latency(latency, action=outcome.action)
        if outcome.action == "failed":  # a permanent failure: push.handle parked it already
            telemetry.dead_letter(entity=event.entity, error_type=outcome.reason.value if outcome.reason else "")
        return Delivered(outcome=outcome)

    async def _park_event(self, event: ChangeEvent, exc: Exception, *, attempts: int, body: str) -> Delivered:
        telemetry = self._telemetry()
        error_type = type(exc).__name__
        attrs = sync_attributes(
            entity=event.entity, record_id=event.record_id, action="dead_letter", error_type=error_type
        )
        with telemetry.span("sync.dead_letter", **_span_args(attrs)):
            try:
                await self._push.dead_letter(event, exc, attempts=attempts, now=self._clock())
            except Exception as store_exc:
                return await self._forward(body, error_type, str(exc), attempts, store_exc)
        telemetry.dead_letter(entity=event.entity, error_type=error_type)
        log.warning("last delivery failed; event parked as a dead letter", extra=log_fields(attrs))
        return Delivered(dead_letter=event.idempotency_key)

    async def _park_raw(self, body: str, exc: Exception, *, attempts: int, host_poison: bool = False) -> Delivered:
        """A message that is not a change event: a dead letter holding its raw body (never replayed as is)."""
        now = self._clock()
        entity = _raw_entity(body)
        event_id = _raw_event_id(body)
        error_type = type(exc).__name__
        attrs = sync_attributes(entity=entity, action="dead_letter", error_type=error_type)
        telemetry = self._telemetry()
        with telemetry.span("sync.dead_letter", **_span_args(attrs)):
            try:
                existing = await self._state.get_dead_letter(entity, event_id)
                await self._state.put_dead_letter(
                    DeadLetter(
                        entity=entity,
                        event_id=event_id,
                        event={"raw": body[:30_000]},
                        error_class=error_type,
                        message=str(exc)[:1000] or "the message is not a change event",
                        attempts=(existing.attempts if existing else 0) + attempts,
                        replays=existing.replays if existing else 0,
                        first_failed=existing.first_failed if existing else now,
                        last_failed=now,
                        next_retry=None,
                        etag=existing.etag if existing else None,
                    )
                )
            except Exception as store_exc:
                if host_poison:
                    raise
                return await self._forward(body, error_type, str(exc), attempts, store_exc)
        telemetry.dead_letter(entity=entity, error_type=error_type)
        log.warning("message parked as a dead letter with its raw body", extra=log_fields(attrs))
        return Delivered(dead_letter=event_id)

    async def _forward(
        self, body: str, error_type: str, message: str, attempts: int, store_exc: Exception
    ) -> Delivered:
        """The dead letter could not be stored: hand the message, with its error, to the poison queue."""
        if self._poison is None:
            raise store_exc
        envelope = {
            "deadLetter": ENVELOPE_VERSION,
            "errorClass": error_type,
            "message": message[:1000],
            "attempts": attempts,
            "body": body,
        }
        text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        # If the poison queue cannot take it either, the host's own retries and poison move are the net.
        try:
            await self._poison.send(text)
        except ResourceNotFoundError:
            # The host creates `<queue>-poison` on its first poison move (the infrastructure creates it too).
            ensure_ready = getattr(self._poison, "ensure_ready", None)
            if ensure_ready is None:
                raise
            await ensure_ready()
            await self._poison.send(text)
        log.warning(
            "dead letter not stored; message forwarded to the poison queue",
            extra={"error.type": error_type, "storage_error": type(store_exc).__name__},
        )
        return Delivered(forwarded=True)

    async def park_message(self, body: bytes, error_class: str, message: str, *, attempts: int) -> Delivered:
        """Park a message of another queue (bulk work) as a dead letter holding its raw body, with its error class.

        Raises while storage does not answer, so the queue delivers the message again.
        """
        text = body.decode("utf-8", errors="replace")
        return await self._park_raw(text, _error_class(error_class)(message), attempts=attempts, host_poison=True)

    async def deliver_poison(self, body: bytes, *, dequeue_count: int | None) -> Delivered:
        """Turn a message of `<queue>-poison` into a dead letter. Raises while storage does not answer."""
        text = body.decode("utf-8", errors="replace")
        envelope = _envelope(text)
        if envelope is not None:
            inner, error_type, message, attempts = envelope
        else:
            inner, error_type, attempts = text, HOST_POISON, self._max_attempts
            message = "moved to the poison queue by the Functions host after its last delivery failed"
        try:
            event = decode_event(inner)
        except EventDecodeError as exc:
            # The host's own poison message names no error: an unreadable body is the failure itself.
            cause = _error_class(UNDECODABLE if envelope is None else error_type)(message if envelope else str(exc))
            return await self._park_raw(inner, cause, attempts=attempts, host_poison=True)
        exc_type = _error_class(error_type)
        attrs = sync_attributes(
            entity=event.entity, record_id=event.record_id, action="dead_letter", error_type=exc_type.__name__
        )
        telemetry = self._telemetry()
        with telemetry.span("sync.poison", **_span_args(attrs)):
            await self._push.dead_letter(event, exc_type(message), attempts=attempts, now=self._clock())
        telemetry.dead_letter(entity=event.entity, error_type=exc_type.__name__)
        log.warning("poison message parked as a dead letter", extra=log_fields(attrs))
        return Delivered(dead_letter=event.idempotency_key)


def _span_args(attrs: dict[str, Any]) -> dict[str, str | None]:
    names = {"sync.entity": "entity", "sync.record_id": "record_id", "sync.action": "action", "sync.reason": "reason"}
    args: dict[str, str | None] = {names[k]: str(v) for k, v in attrs.items() if k in names}
    if "error.type" in attrs:
        args["error_type"] = str(attrs["error.type"])
    return args


def _envelope(text: str) -> tuple[str, str, str, int] | None:
    """(body, error class, message, attempts) of a message the worker forwarded, None for anything else."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(data, dict)
        or data.get("deadLetter") != ENVELOPE_VERSION
        or not isinstance(data.get("body"), str)
    ):
        return None
    attempts = data.get("attempts")
    return (
        data["body"],
        str(data.get("errorClass") or HOST_POISON),
        str(data.get("message") or ""),
        attempts if isinstance(attempts, int) and attempts > 0 else 1,
    )
