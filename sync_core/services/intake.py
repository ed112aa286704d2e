"""Webhook intake: authenticate, parse and persist a Dataverse delivery before answering it.

A 202 means the event is in the queue. Nothing is persisted for a rejected request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sync_core.dataverse.auth import WebhookAuthenticator
from sync_core.dataverse.webhook import UnsupportedMessage, WebhookPayloadError, parse_delivery
from sync_core.domain.event_codec import encode_event
from sync_core.domain.mapping import EntityMapping, MappingConfig
from sync_core.domain.records import ChangeEvent, ChangeKind, EntityName
from sync_core.state.bounds import WEBHOOK_STORAGE_DEADLINE_SECONDS
from sync_core.state.queue import MessageTooLarge

log = logging.getLogger("sync_core.intake")


class EventSink(Protocol):
    """Where accepted events go (an Azure Storage queue)."""

    async def send(self, message: str) -> str: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class IntakeResult:
    status: int
    message: str
    message_id: str | None = None


class WebhookIntake:
    """Turns an HTTP delivery into a queued change event, or a clear refusal."""

    def __init__(
        self,
        *,
        authenticator: WebhookAuthenticator,
        sink: EventSink,
        max_bytes: int,
        mapping: MappingConfig,
        app_user_id: str | None = None,
        storage_deadline: float = WEBHOOK_STORAGE_DEADLINE_SECONDS,
    ) -> None:
        self._auth = authenticator
        self._deadline = storage_deadline
        self._sink = sink
        self._max_bytes = max_bytes
        self._mapping = mapping
        self._app_user = app_user_id

    def _image_columns(self, entity: EntityName) -> Sequence[str] | None:
        """The columns `dataverse setup` registers the table's post-image with (see `post_image_alias`)."""
        mapping = self._mapping.for_entity(entity)
        return mapping.columns() if mapping is not None else None

    async def _queue(self, event: ChangeEvent, mapping: EntityMapping) -> str:
        """Queue the event with only the columns the sync reads; when even that is too large for one queue
        message (a long text column), queue it without values: the worker reads the row instead."""
        needed = set(mapping.columns())
        event = dataclasses.replace(
            event,
            attributes={k: v for k, v in event.attributes.items() if k in needed},
            changed=event.changed & needed,
        )
        try:
            return await self._sink.send(encode_event(event))
        except MessageTooLarge:
            # A gone row cannot be read again: a delete keeps the one value its tombstone needs.
            email = mapping.email_attribute
            kept = (
                {email: event.attributes[email]}
                if event.kind is ChangeKind.DELETE and email in event.attributes
                else {}
            )
            log.info("event too large for the queue; queued without values", extra={"entity": event.entity})
            return await self._sink.send(encode_event(dataclasses.replace(event, attributes=kept, complete=False)))

    async def accept(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> IntakeResult:
        if not self._auth.verify(query, headers):
            return IntakeResult(401, "unauthorized")
        if len(body) > self._max_bytes:
            return IntakeResult(413, f"payload larger than {self._max_bytes} bytes")
        try:
            event = parse_delivery(body, headers, image_columns=self._image_columns)
        except UnsupportedMessage as exc:
            return IntakeResult(200, f"ignored: {exc}")
        except WebhookPayloadError as exc:
            return IntakeResult(400, str(exc))
        mapping = self._mapping.for_entity(event.entity)
        if mapping is None:
            return IntakeResult(200, f"ignored: {event.entity} is not mapped")
        if event.made_by(self._app_user):
            return IntakeResult(200, "ignored: change made by the connector itself")
        try:
            async with asyncio.timeout(self._deadline):
                message_id = await self._queue(event, mapping)
        except MessageTooLarge:
            # Even without values (a delete's address is all that is left): no retry can ever store it.
            return IntakeResult(413, "event too large for the queue even without its column values")
        except TimeoutError:
            log.error("event could not be queued in time", extra={"entity": event.entity, "record_id": event.record_id})
            return IntakeResult(503, "event could not be stored in time; retry")
        except Exception:
            log.exception("event could not be queued", extra={"entity": event.entity, "record_id": event.record_id})
            return IntakeResult(503, "event could not be stored; retry")
        log.info(
            "event accepted",
            extra={"entity": event.entity, "record_id": event.record_id, "kind": event.kind.value},
        )
        return IntakeResult(202, "accepted", message_id)
