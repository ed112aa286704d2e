"""Spans, log attributes and metrics of the sync, for Application Insights (OpenTelemetry).

Every push, pull, dead letter and poison message is a span named `sync.<what>` with the attributes
`sync.entity`, `sync.record_id`, `sync.action`, `sync.reason` and, on a failure, `error.type` (the error's class).
No attribute ever holds an e-mail address or a secret: records are named by their Dataverse id only.

The OpenTelemetry packages are imported only when telemetry is configured (`configure_telemetry`, once per
process, when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set or the console exporter is asked for); until then
`current()` is a recorder that does nothing, so importing the Functions entry points stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from sync_core.settings import Settings

log = logging.getLogger("sync_core.telemetry")

INSTRUMENTATION = "sync_core"
ENTITY = "sync.entity"
RECORD_ID = "sync.record_id"
ACTION = "sync.action"
REASON = "sync.reason"
ERROR_TYPE = "error.type"

AttrValue = str | int | float | bool
UNTRACED_HTTP_CLIENTS = ("httpx", "httpx2", "requests", "urllib", "urllib3")


class SpanHandle(Protocol):
    def set_attribute(self, key: str, value: AttrValue) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: AttrValue) -> None:
        return None


def sync_attributes(
    *,
    entity: str | None = None,
    record_id: str | None = None,
    action: str | None = None,
    reason: str | None = None,
    error_type: str | None = None,
) -> dict[str, AttrValue]:
    """The shared attribute names, without the ones that are not known."""
    pairs = ((ENTITY, entity), (RECORD_ID, record_id), (ACTION, action), (REASON, reason), (ERROR_TYPE, error_type))
    return {key: value for key, value in pairs if value is not None}


class Telemetry:
    """Records spans and metrics through OpenTelemetry providers (the global ones unless given)."""

    enabled = True

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace  # noqa: PLC0415 (lazy: only when telemetry is on)

        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION)
        meter = meter_provider.get_meter(INSTRUMENTATION)
        self._status_error = trace.StatusCode.ERROR
        self._changes = meter.create_counter(
            "sync.changes", unit="{change}", description="Changes applied, by direction, action and reason code"
        )
        self._latency = meter.create_histogram(
            "sync.push.latency",
            unit="s",
            description="End to end: Dataverse modifiedon to the Spotler write",
        )
        self._dead_letters = meter.create_counter(
            "sync.dead_letters", unit="{event}", description="Events parked as dead letters, by error class"
        )
        self._backlog_age = meter.create_gauge(
            "sync.queue.backlog_age", unit="s", description="Age of the oldest change waiting in the queue"
        )
        self._watermark_age = meter.create_gauge(
            "sync.watermark.age", unit="s", description="Age of the pull's watermark (newest Spotler change applied)"
        )
        self._dead_letter_count = meter.create_gauge(
            "sync.dead_letters.waiting", unit="{event}", description="Dead letters waiting for a replay"
        )
        self._bulk_progress = meter.create_gauge(
            "sync.bulk.progress", unit="{record}", description="Records a bulk run has handled so far"
        )

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str | None) -> Iterator[SpanHandle]:
        """A span whose failure (an exception leaving it) carries `error.type` and an error status."""
        attrs = sync_attributes(**attributes)
        with self._tracer.start_as_current_span(
            name, attributes=attrs, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                span.set_status(self._status_error, type(exc).__name__)
                raise

    def change(self, *, direction: str, action: str, reason: str | None, count: int = 1) -> None:
        self._changes.add(count, {"sync.direction": direction, ACTION: action, REASON: reason or "none"})

    def push_latency(self, seconds: float, *, action: str) -> None:
        self._latency.record(max(0.0, seconds), {ACTION: action})

    def dead_letter(self, *, entity: str, error_type: str) -> None:
        self._dead_letters.add(1, {ENTITY: entity, ERROR_TYPE: error_type})

    def backlog_age(self, seconds: float) -> None:
        self._backlog_age.set(max(0.0, seconds))

    def watermark_age(self, seconds: float) -> None:
        self._watermark_age.set(max(0.0, seconds))

    def dead_letters_waiting(self, count: int) -> None:
        self._dead_letter_count.set(count)

    def bulk_progress(self, handled: int, *, run_id: str) -> None:
        self._bulk_progress.set(handled, {"sync.run_id": run_id})


class NoTelemetry:
    """What `current()` is when telemetry is not configured: every call does nothing."""

    enabled = False

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str | None) -> Iterator[SpanHandle]:
        yield _NoSpan()

    def change(self, *, direction: str, action: str, reason: str | None, count: int = 1) -> None:
        return None

    def push_latency(self, seconds: float, *, action: str) -> None:
        return None

    def dead_letter(self, *, entity: str, error_type: str) -> None:
        return None

    def backlog_age(self, seconds: float) -> None:
        return None

    def watermark_age(self, seconds: float) -> None:
        return None

    def dead_letters_waiting(self, count: int) -> None:
        return None

    def bulk_progress(self, handled: int, *, run_id: str) -> None:
        return None


Recorder = Telemetry | NoTelemetry


class _Process:
    """The process's recorder, and whether start-up configured telemetry already."""

    lock = threading.Lock()
    recorder: Recorder = NoTelemetry()
    configured = False


def current() -> Recorder:
    return _Process.recorder


def install(recorder: Recorder) -> Recorder:
    """Make `recorder` the process's recorder (tests install one on in-memory providers); returns the old one."""
    previous, _Process.recorder = _Process.recorder, recorder
    return previous


_CLIENT_ID = re.compile(r"(?:^|;)\s*ClientId=([^;]+)", re.IGNORECASE)


def _aad_client_id(authentication: str | None) -> str | None:
    """The managed identity's client id from `ClientId=<id>;Authorization=AAD`, None without AAD."""
    if not authentication or "authorization=aad" not in authentication.replace(" ", "").lower():
        return None
    match = _CLIENT_ID.search(authentication)
    return match.group(1).strip() if match else ""


def configure_telemetry(settings: Settings) -> bool:
    """Set up the exporters once per process; True when telemetry is on. Later calls change nothing."""
    with _Process.lock:
        if _Process.configured:
            return _Process.recorder.enabled
        _Process.configured = True
        if settings.applicationinsights_connection_string:
            from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415

            options: dict[str, Any] = {
                "connection_string": settings.applicationinsights_connection_string,
                "logger_name": "sync_core",
                "enable_live_metrics": False,
                # Outgoing HTTP calls are not traced by URL: Spotler's search puts an e-mail address in its query.
                "instrumentation_options": {name: {"enabled": False} for name in UNTRACED_HTTP_CLIENTS},
            }
            client_id = _aad_client_id(settings.applicationinsights_authentication_string)
            if client_id is not None:
                from azure.identity import ManagedIdentityCredential  # noqa: PLC0415

                options["credential"] = ManagedIdentityCredential(client_id=client_id or None)
            configure_azure_monitor(**options)
        elif settings.telemetry_console:
            _configure_console()
        else:
            return False
        install(Telemetry())
        log.info("telemetry configured")
        return True


def _configure_console() -> None:
    from opentelemetry import metrics, trace  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor  # noqa: PLC0415

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[PeriodicExportingMetricReader(ConsoleMetricExporter(), 60_000)])
    )


def seconds_between(earlier: datetime | None, later: datetime) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds()


def log_fields(attributes: Mapping[str, AttrValue]) -> dict[str, AttrValue]:
    """`extra` for a log line: the same `sync.*` names, exported as custom dimensions by the log handler."""
    return dict(attributes)
