"""Webhook intake on the in-memory queue: what reaches the queue, and what a refusal leaves behind (nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync_core.dataverse.auth import WebhookAuthenticator
from sync_core.domain.event_codec import decode_event
from sync_core.domain.mapping import default_mapping
from sync_core.domain.records import ChangeKind
from sync_core.services.intake import WebhookIntake
from sync_core.state.queue import InMemoryEventQueue, encoded_size

DATA = Path(__file__).resolve().parents[1] / "data" / "webhooks"
KEY = "intake-test-key"
APP_USER = "5a1d7c11-a2b3-4c5d-8e9f-0a1b2c3d4e5f"


def payload(name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    body.update(changes)
    return body


def intake(queue: InMemoryEventQueue) -> WebhookIntake:
    return WebhookIntake(
        authenticator=WebhookAuthenticator("webhook_key", KEY),
        sink=queue,
        max_bytes=1_048_576,
        mapping=default_mapping(),
        app_user_id=APP_USER,
    )


async def post(queue: InMemoryEventQueue, body: dict[str, Any], *, code: str = KEY) -> int:
    result = await intake(queue).accept(json.dumps(body).encode(), {}, {"code": code})
    return result.status


async def test_only_the_columns_the_sync_reads_are_queued() -> None:
    queue = InMemoryEventQueue()
    body = payload("plugin_with_attributes.json")
    body["attributes"]["description"] = "long notes " * 100
    assert await post(queue, body) == 202
    [text] = queue.texts()
    event = decode_event(text)
    assert "description" not in event.attributes
    assert event.attributes["firstname"] == "James"
    assert event.attributes["emailaddress1"] == "james@example.com"


async def test_an_event_too_large_for_a_queue_message_is_queued_without_values_for_the_worker_to_read() -> None:
    queue = InMemoryEventQueue()
    body = payload("plugin_with_attributes.json")
    body["attributes"]["firstname"] = "J" * 80_000  # a mapped column far beyond one queue message
    assert await post(queue, body) == 202
    [text] = queue.texts()
    event = decode_event(text)
    assert (event.attributes, event.complete, event.kind) == ({}, False, ChangeKind.UPDATE)
    assert event.record_id == "6d81597f-0f9f-e711-8122-000d3aa2331c"
    assert encoded_size(text) < 64 * 1024


async def test_a_large_delete_keeps_the_address_its_tombstone_needs() -> None:
    queue = InMemoryEventQueue()
    body = payload("delete_with_preimage.json")
    image = body["PreEntityImages"][0]["value"]["Attributes"]
    image.append({"key": "firstname", "value": "J" * 80_000})
    assert await post(queue, body) == 202
    event = decode_event(queue.texts()[0])
    assert event.kind is ChangeKind.DELETE
    assert event.attributes == {"emailaddress1": "james@example.com"}


async def test_refused_calls_queue_nothing() -> None:
    queue = InMemoryEventQueue()
    assert await post(queue, payload("plugin_with_attributes.json"), code="wrong") == 401
    assert await post(queue, payload("plugin_with_attributes.json", entity="incident")) == 400
    assert await post(queue, payload("plugin_with_attributes.json", userId=APP_USER)) == 200
    assert queue.texts() == []
