"""Composition: build the adapters and services from Settings, once per process (and per event loop)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sync_core.dataverse.auth import WebhookAuthenticator
from sync_core.dataverse.credentials import make_credential
from sync_core.domain.mapping import MappingConfig, default_mapping, parse_mapping
from sync_core.domain.plan import PushOptions
from sync_core.domain.ports import DataverseGateway, SpotlerGateway, StateStore
from sync_core.services.clients import dataverse_client, spotler_client
from sync_core.services.guard import MassChangeGuard, live_guard
from sync_core.services.health import CachedVerdict, Check, HealthChecker
from sync_core.services.intake import EventSink, WebhookIntake
from sync_core.services.pull import PullOptions, PullService
from sync_core.services.push import PushService, StatusColumns
from sync_core.services.worker import QueueWorker, poison_queue_name
from sync_core.settings import Settings, load_settings
from sync_core.state.mapping_blob import read_mapping_blob
from sync_core.state.queue import EventQueue
from sync_core.state.reports import TableReports
from sync_core.state.tables import TableStateStore
from sync_core.telemetry import configure_telemetry

log = logging.getLogger("sync_core.runtime")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """The wired connector: what the Functions handlers call."""

    settings: Settings
    mapping: MappingConfig
    state: StateStore
    queue: EventSink
    spotler: SpotlerGateway
    dataverse: DataverseGateway
    intake: WebhookIntake
    push: PushService
    pull: PullService
    clock: Callable[[], datetime] = utc_now
    # Operations: the poison queue, the queue worker around the push, run history and read models, health.
    poison: EventQueue | None = None
    worker: QueueWorker | None = None
    reports: TableReports | None = None
    health_verdict: CachedVerdict = field(default_factory=CachedVerdict)
    health_extra: dict[str, Callable[[], Awaitable[Check]]] = field(default_factory=dict)
    guard: MassChangeGuard | None = None

    async def aclose(self) -> None:
        await self.push.leases.aclose()  # stop renewing; a lease still held expires within its TTL
        for closer in (self.spotler.aclose, self.dataverse.aclose, self.state.aclose, self.queue.aclose):
            try:
                await closer()
            except Exception:
                log.debug("close failed", exc_info=True)
        for extra in (self.poison, self.reports, self.guard):
            if extra is not None:
                try:
                    await extra.aclose()
                except Exception:
                    log.debug("close failed", exc_info=True)

    def health_checker(self) -> HealthChecker:
        return HealthChecker(
            state=self.state,
            queue=self.queue if isinstance(self.queue, EventQueue) else None,
            poison=self.poison,
            spotler=self.spotler,
            dataverse=self.dataverse,
            mapping=self.mapping,
            clock=self.clock,
            max_delivery_attempts=self.settings.max_delivery_attempts,
            host_max_dequeue_count=host_max_dequeue_count(),
            extra=dict(self.health_extra),
        )


def load_mapping(settings: Settings) -> MappingConfig:
    if settings.mapping_blob:
        return parse_mapping(read_mapping_blob(settings, settings.mapping_blob))
    if settings.mapping_file is None:
        return default_mapping()
    return parse_mapping(json.loads(settings.mapping_file.read_text(encoding="utf-8")))


def push_options(settings: Settings) -> PushOptions:
    return PushOptions(
        hash_key=settings.suppression_hash_key.get_secret_value().encode("utf-8"),
        anonymize_on_deactivate=settings.anonymize_on_deactivate,
        purge_when_not_set=settings.purge_existing_properties_when_not_set,
        conflict_winner=settings.conflict_winner,
        on_leaving_scope=settings.on_leaving_scope,
    )


def status_columns(settings: Settings) -> StatusColumns:
    return StatusColumns(
        reason=settings.dataverse_status_column,
        detail=settings.dataverse_status_detail_column,
        synced_on=settings.dataverse_status_synced_on_column,
        reason_as_text=settings.dataverse_status_column_type == "text",
    )


def build_runtime(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Runtime:
    """Wire real adapters: Table Storage + queue, the Spotler client and the Dataverse client."""
    mapping = load_mapping(settings)
    conn = settings.resolved_storage_connection_string
    if conn is not None:
        state: StateStore = TableStateStore.from_connection_string(conn, prefix=settings.table_prefix)
        queue: EventSink = EventQueue.from_connection_string(conn, settings.queue_name)
    else:
        assert settings.storage_account_name is not None
        # DefaultAzureCredential: the app's managed identity in Azure (the user-assigned one when a client id is
        # set), a developer's sign-in elsewhere.
        storage_credential = make_credential("default", client_id=settings.storage_client_id)
        state = TableStateStore.from_account(
            settings.storage_account_name, storage_credential, prefix=settings.table_prefix
        )
        queue = EventQueue.from_account(settings.storage_account_name, storage_credential, settings.queue_name)
    spotler = spotler_client(settings)
    dataverse = dataverse_client(settings, multi_select_columns=mapping.multi_select_columns())
    options = push_options(settings)
    guard = live_guard(settings, clock)
    push = PushService(
        state=state,
        spotler=spotler,
        dataverse=dataverse,
        mapping=mapping,
        options=options,
        clock=clock,
        app_user_id=settings.dataverse_app_user_id,
        status_columns=status_columns(settings),
        guard=guard,
    )
    pull = PullService(
        state=state,
        spotler=spotler,
        dataverse=dataverse,
        mapping=mapping,
        options=options,
        pull_options=PullOptions(
            overlap=timedelta(minutes=settings.pull_overlap_minutes),
            initial_lookback=timedelta(hours=settings.pull_initial_lookback_hours),
            page_size=settings.pull_page_size,
            paging=settings.pull_feed_paging,
            max_replays=settings.dead_letter_max_replays,
        ),
        clock=clock,
        push=push,
        status_columns=status_columns(settings),
        leases=push.leases,
    )
    intake = WebhookIntake(
        authenticator=WebhookAuthenticator(
            settings.webhook_auth_mode,
            settings.webhook_secret.get_secret_value(),
            name=settings.webhook_auth_name,
            next_secret=settings.webhook_secret_next.get_secret_value() if settings.webhook_secret_next else None,
        ),
        sink=queue,
        max_bytes=settings.webhook_max_bytes,
        mapping=mapping,
        app_user_id=settings.dataverse_app_user_id,
    )
    runtime = Runtime(settings, mapping, state, queue, spotler, dataverse, intake, push, pull, clock, guard=guard)
    wire_operations(runtime)
    return runtime


HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"


def host_max_dequeue_count(path: Path = HOST_JSON) -> int | None:
    """host.json `extensions.queues.maxDequeueCount` (the host's deliveries before its poison move), if set."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        value = document["extensions"]["queues"]["maxDequeueCount"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def wire_operations(runtime: Runtime) -> None:
    """The poison queue, the queue worker, run history and read models, on the runtime's storage account."""
    settings = runtime.settings
    poison_name = poison_queue_name(settings.queue_name)
    conn = settings.resolved_storage_connection_string
    if conn is not None:
        runtime.poison = EventQueue.from_connection_string(conn, poison_name)
        runtime.reports = TableReports.from_connection_string(conn, prefix=settings.table_prefix)
    elif settings.storage_account_name is not None:
        credential = make_credential("default", client_id=settings.storage_client_id)
        runtime.poison = EventQueue.from_account(settings.storage_account_name, credential, poison_name)
        runtime.reports = TableReports.from_account(
            settings.storage_account_name, credential, prefix=settings.table_prefix
        )
    runtime.worker = QueueWorker(
        push=runtime.push,
        state=runtime.state,
        poison=runtime.poison,
        max_attempts=settings.max_delivery_attempts,
        clock=runtime.clock,
    )


_cache: dict[int, Runtime] = {}


def get_runtime(environ: dict[str, str] | None = None) -> Runtime:
    """The process's runtime for the running event loop (clients are bound to the loop that made them)."""
    loop_id = id(asyncio.get_running_loop())
    runtime = _cache.get(loop_id)
    if runtime is None:
        runtime = build_runtime(load_settings(environ))
        _cache[loop_id] = runtime
        configure_telemetry(runtime.settings)  # once per process; later calls change nothing
    return runtime


async def reset_runtime() -> None:
    """Close and forget the cached runtime (tests, configuration reloads)."""
    runtimes = list(_cache.values())
    _cache.clear()
    for runtime in runtimes:
        await runtime.aclose()


def describe(settings: Settings) -> dict[str, Any]:
    """Non-secret facts about the configuration, for the health endpoint."""
    return {
        "spotler": settings.spotler_base_url,
        "dataverse": settings.dataverse_url,
        "dataverseAuth": settings.dataverse_auth,
        "webhookAuth": settings.webhook_auth_mode,
        "queue": settings.queue_name,
        "tablePrefix": settings.table_prefix,
        "anonymizeOnDeactivate": settings.anonymize_on_deactivate,
        "conflictWinner": settings.conflict_winner,
    }
