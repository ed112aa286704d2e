"""Run the handlers of function_app.py as the Functions host would, on loopback (tests and the demo).

The Functions host (Core Tools) is not needed: HTTP routes are served by uvicorn on the caller's event loop,
the queue trigger is a poll of the storage queue that hands each message (with its dequeue count) to the
queue handler and deletes it only when the handler returns, and the timer is called on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func
import uvicorn
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import function_app
from sandboxes._server import free_port
from sandboxes.dataverse import DataverseSandbox
from sync_core.domain.records import ENTITY_NAMES
from sync_core.services.bulk_runtime import close_bulk_engines, get_bulk_engine
from sync_core.services.runtime import HOST_JSON, get_runtime, host_max_dequeue_count, reset_runtime
from sync_core.services.worker import poison_queue_name
from sync_core.state.queue import EventQueue, ReceivedMessage

log = logging.getLogger("sandboxes.functions_host")


def _to_func_request(request: Request, body: bytes) -> func.HttpRequest:
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=dict(request.headers),
        params=dict(request.query_params),
        route_params=dict(request.path_params),
        body=body,
    )


def _from_func_response(response: func.HttpResponse) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
    return Response(
        content=response.get_body(),
        status_code=response.status_code,
        media_type=response.mimetype or None,
        headers=headers or None,
    )


def _route(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        return _from_func_response(await handler(_to_func_request(request, body)))

    return endpoint


def create_host_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/api/dynamics/webhook", _route(function_app.dynamics_webhook), methods=["POST"]),
            Route("/api/status/{entity}/{id}", _route(function_app.record_status), methods=["GET"]),
            Route("/api/deadletters", _route(function_app.list_dead_letters), methods=["GET"]),
            Route("/api/deadletters/replay", _route(function_app.replay_dead_letters), methods=["POST"]),
            Route(
                "/api/deadletters/{entity}/{event_id}/replay",
                _route(function_app.replay_dead_letter),
                methods=["POST"],
            ),
            Route("/api/health", _route(function_app.health), methods=["GET"]),
            Route("/api/health/details", _route(function_app.health_details_route), methods=["GET"]),
            Route("/api/runs", _route(function_app.runs_route), methods=["GET"]),
            Route("/api/status", _route(function_app.records_route), methods=["GET"]),
            Route("/api/ui", _route(function_app.ui_page), methods=["GET"]),
            Route(
                "/api/ui/deadletters/{entity}/{event_id}/replay",
                _route(function_app.ui_replay),
                methods=["POST"],
            ),
            Route("/api/bulk/backfill", _route(function_app.bulk_backfill), methods=["POST"]),
            Route("/api/bulk/resync", _route(function_app.bulk_resync), methods=["POST"]),
            Route("/api/bulk/reconcile", _route(function_app.bulk_reconcile), methods=["POST"]),
            Route("/api/bulk/runs/{run_id}", _route(function_app.bulk_run), methods=["GET"]),
        ]
    )


@dataclass(frozen=True, slots=True)
class QueueSemantics:
    """host.json `extensions.queues`: how the host fetches and runs queue messages."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0


def _seconds(text: object, default: float) -> float:
    """A host.json TimeSpan ("00:00:02") in seconds."""
    if not isinstance(text, str):
        return default
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return default


def host_queue_semantics(path: Path = HOST_JSON) -> QueueSemantics:
    """The queue settings of host.json, with the host's defaults (batchSize 16, newBatchThreshold batchSize/2)."""
    try:
        queues = json.loads(path.read_text(encoding="utf-8"))["extensions"]["queues"]
    except (OSError, ValueError, KeyError, TypeError):
        queues = {}
    batch = queues.get("batchSize", 16)
    batch = batch if isinstance(batch, int) and batch > 0 else 16
    threshold = queues.get("newBatchThreshold", batch // 2)
    threshold = threshold if isinstance(threshold, int) and threshold >= 0 else batch // 2
    return QueueSemantics(batch, threshold, _seconds(queues.get("maxPollingInterval"), 60.0))


class LocalFunctionsHost:
    """The connector's functions on a loopback port, with the queue and timer triggers driven on demand."""

    def __init__(self, settings: Mapping[str, str], *, port: int | None = None, visibility_timeout: int = 1) -> None:
        self._settings = dict(settings)
        self._saved: dict[str, str | None] = {}
        self.port = port or free_port()
        self._visibility = visibility_timeout
        self._server = uvicorn.Server(
            uvicorn.Config(create_host_app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._task: asyncio.Task[None] | None = None
        self._queue: EventQueue | None = None
        self._poison: EventQueue | None = None
        self._receipts: dict[str, str] = {}  # the latest pop receipt of a message whose handler failed
        # The host moves a message to `<queue>-poison` after this many failed deliveries (host.json).
        self.max_dequeue_count = host_max_dequeue_count() or 5

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LocalFunctionsHost:
        for key, value in self._settings.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        await reset_runtime()
        runtime = get_runtime()
        await runtime.state.ensure_ready()
        conn = runtime.settings.resolved_storage_connection_string
        assert conn is not None, "the local host needs a storage connection string"
        self._queue = EventQueue.from_connection_string(conn, runtime.settings.queue_name)
        await self._queue.ensure_ready()
        self._poison = EventQueue.from_connection_string(conn, poison_queue_name(runtime.settings.queue_name))
        await self._poison.ensure_ready()
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            await self._queue.aclose()
        if self._poison is not None:
            await self._poison.aclose()
        await close_bulk_engines()
        await reset_runtime()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    async def run_queue(
        self,
        *,
        idle_rounds: int = 3,
        max_rounds: int = 500,
        poll_seconds: float | None = None,
        batch_size: int | None = None,
        new_batch_threshold: int | None = None,
    ) -> int:
        """Deliver queued events to the push worker until the queue stays empty; returns handled messages.

        As the Functions host does (host.json `extensions.queues`): it receives `batchSize` messages and handles
        them concurrently, and receives the next batch as soon as no more than `newBatchThreshold` are still
        running (not when the whole batch is done). An empty queue is polled again after a delay that doubles
        from 100 ms up to `maxPollingInterval` (`poll_seconds` caps it here). A handler that raises leaves its
        message to reappear after the visibility timeout, as in Azure.
        """
        semantics = host_queue_semantics()
        batch = batch_size or semantics.batch_size
        threshold = semantics.new_batch_threshold if new_batch_threshold is None else new_batch_threshold
        if batch_size is not None and new_batch_threshold is None:
            threshold = batch // 2  # the host's default for a given batchSize
        ceiling = semantics.max_polling_interval if poll_seconds is None else poll_seconds
        handled = 0
        idle = 0
        delay = min(0.1, ceiling)
        running: set[asyncio.Task[bool]] = set()
        try:
            for _ in range(max_rounds):
                while len(running) > threshold:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    handled += sum(task.result() for task in done)
                received = await self._event_queue().receive(max_messages=batch, visibility_timeout=self._visibility)
                if received:
                    idle, delay = 0, min(0.1, ceiling)
                    running |= {asyncio.create_task(self._deliver_one(message)) for message in received}
                    continue
                if running:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    handled += sum(task.result() for task in done)
                    continue
                if await self._event_queue().count() == 0:
                    idle += 1
                    if idle >= idle_rounds:
                        break
                await asyncio.sleep(delay)
                delay = min(delay * 2, ceiling)
        finally:
            if running:
                handled += sum(await asyncio.gather(*running))
        return handled

    async def run_queue_once(self, *, batch_size: int = 8) -> tuple[int, int]:
        """Deliver every message visible now exactly once, a batch at a time; returns (handled, failed).

        Failed messages are made visible again afterwards (their dequeue count has gone up), so a test can
        see the state between two deliveries of the same events.
        """
        handled = 0
        failed: list[ReceivedMessage] = []
        while True:
            handled_now, failed_now = await self._deliver_batch(batch_size, 300)
            if not handled_now and not failed_now:
                break
            handled += handled_now
            failed += failed_now
        for message in failed:
            with contextlib.suppress(HttpResponseError, ResourceNotFoundError):  # received again meanwhile
                await self._event_queue().release(message.id, self._receipts.pop(message.id, message.pop_receipt))
        return handled, len(failed)

    def _event_queue(self) -> EventQueue:
        assert self._queue is not None, "the host is not running"
        return self._queue

    async def _deliver_batch(self, batch_size: int, visibility: int) -> tuple[int, list[ReceivedMessage]]:
        """Receive one batch and hand it to the queue handler concurrently; (handled, the failed messages).

        A handled message is deleted; a failed one stays hidden until `visibility` runs out, as in Azure.
        """
        queue = self._event_queue()
        batch = await queue.receive(max_messages=batch_size, visibility_timeout=visibility)
        outcomes = await asyncio.gather(*(self._deliver_one(m, visibility) for m in batch))
        return sum(outcomes), [m for m, ok in zip(batch, outcomes, strict=True) if not ok]

    async def _deliver_one(self, message: ReceivedMessage, visibility: int | None = None) -> bool:
        """Hand one message to the queue handler; True when it is done with (deleted), False to deliver again."""
        queue = self._event_queue()
        body = message.text.encode("utf-8")
        receipt = [message.pop_receipt]
        hidden_for = visibility or self._visibility

        async def keep_hidden() -> None:
            # As the host does: a message stays hidden while its handler runs, however long that takes.
            while True:
                await asyncio.sleep(max(hidden_for / 3, 0.2))
                try:
                    receipt[0] = await queue.keep_hidden(message.id, receipt[0], max(hidden_for, 1))
                except (HttpResponseError, ResourceNotFoundError):
                    log.info("message visible again before its renewal; it may be delivered twice")
                    return

        keeper = asyncio.create_task(keep_hidden())
        try:
            await function_app.push_worker(QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count))
        except Exception:
            if message.dequeue_count >= self.max_dequeue_count:
                # As the host does after maxDequeueCount failed deliveries: move it to `<queue>-poison`.
                log.info("queue handler failed on the last delivery; message moved to the poison queue")
                await self._stop(keeper)
                await self._poison_queue().send(message.text)
                await queue.delete(message.id, receipt[0])
                return True
            log.info("queue handler failed; the message will be delivered again", exc_info=True)
            await self._stop(keeper)
            self._receipts[message.id] = receipt[0]
            return False
        await self._stop(keeper)
        try:
            await queue.delete(message.id, receipt[0])
        except (HttpResponseError, ResourceNotFoundError):
            # Received again meanwhile (its renewal came too late): that delivery finishes it, as in Azure.
            log.info("message received again while it was handled; left to that delivery")
            return False
        return True

    @staticmethod
    async def _stop(keeper: asyncio.Task[None]) -> None:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper

    def _poison_queue(self) -> EventQueue:
        assert self._poison is not None, "the host is not running"
        return self._poison

    async def put_poison(self, text: str) -> str:
        """Put a message straight onto `<queue>-poison` (as the host does with one that keeps failing)."""
        return await self._poison_queue().send(text)

    async def run_poison_queue(self) -> tuple[int, int]:
        """Deliver every visible poison message once to the poison trigger; (handled, failed)."""
        poison = self._poison_queue()
        handled = failed = 0
        for message in await poison.receive(max_messages=32, visibility_timeout=300):
            try:
                await function_app.poison_worker(
                    QueueMessage(id=message.id, body=message.text.encode("utf-8"), dequeue_count=message.dequeue_count)
                )
            except Exception:
                log.info("poison handler failed; the message will be delivered again", exc_info=True)
                await poison.release(message.id, message.pop_receipt)
                failed += 1
                continue
            await poison.delete(message.id, message.pop_receipt)
            handled += 1
        return handled, failed

    async def run_timer(self) -> None:
        """One run of the 15-minute pull."""
        await function_app.spotler_pull(TimerRequest(past_due=False))

    def register_webhooks(self, dataverse: DataverseSandbox, *, key: str) -> None:
        """Register the connector in the Dataverse sandbox directly, with the least a delivery needs.

        Create, Update and Delete steps per mapped table, Update filtered to the columns the mapping
        watches, and a pre-image with the e-mail column so that a Delete can leave its tombstone. Without
        post-images the push reads each row; `python -m sync_core dataverse setup` registers the full set
        through the Web API (docs/dataverse.md).
        """
        runtime = get_runtime()
        for entity in ENTITY_NAMES:
            mapping = runtime.mapping.for_entity(entity)
            if mapping is None:
                continue
            dataverse.register_webhook(
                url=f"{self.url}/api/dynamics/webhook?code={key}",
                entity=entity,
                messages=frozenset({"Create", "Update", "Delete"}),
                auth_type="webhook_key",
                auth_value=key,
                filtering_attributes=frozenset(mapping.watched_columns()),
                pre_image=(mapping.email_attribute,),
            )

    async def run_bulk(self, run_id: str, *, batch_size: int = 8, visibility: int = 30, poll: float = 0.05) -> str:
        """Deliver the bulk queue to its queue trigger, a batch at a time, until the run ends; its final phase."""
        engine = get_bulk_engine(get_runtime())
        queue = engine.queue
        await queue.ensure_ready()
        while True:
            batch = await queue.receive(max_messages=batch_size, visibility_timeout=visibility)

            async def deliver(message: ReceivedMessage) -> None:
                body = message.text.encode("utf-8")
                try:
                    await function_app.bulk_worker(
                        QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count)
                    )
                except Exception:
                    log.info("bulk handler failed; the message will be delivered again", exc_info=True)
                    return
                await queue.delete(message.id, message.pop_receipt)

            await asyncio.gather(*(deliver(m) for m in batch))
            doc = await engine.run_doc(run_id)
            if doc is None or doc["phase"] in ("done", "stopped", "failed"):
                return "missing" if doc is None else str(doc["phase"])
            if not batch:
                await asyncio.sleep(poll)
