"""Azure Functions entry points. Each handler parses its trigger, makes one sync_core call, maps the outcome."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from sync_core.event_codec import EventDecodeError, decode_event
from sync_core.records import ENTITY_NAMES, as_entity
from sync_core.services.config_gate import hold_event_if_misconfigured, mapping_health, pull_paused
from sync_core.services.push import RetryLater
from sync_core.services.runtime import Runtime, describe, get_runtime
from sync_core.services.status import dead_letter_view, record_status_view
from sync_core.settings import SettingsError

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")

QUEUE_CONNECTION = "AzureWebJobsStorage"


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _config_error(exc: SettingsError) -> func.HttpResponse:
    log.error("configuration invalid: %s", exc)
    return _json(500, {"error": "connector configuration is invalid; see the logs"})


async def _configuration_error(runtime: Runtime) -> func.HttpResponse | None:
    """503 while the mapping does not fit Spotler or Dataverse: replays wait like the push and the pull."""
    mapping = await mapping_health(runtime)
    if not mapping.problems:
        return None
    return _json(503, {"error": "configuration_error: the mapping does not fit", "mapping": mapping.as_dict()})


async def dynamics_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Dataverse webhook: authenticate, parse, queue durably, answer 202 (or a clear 4xx)."""
    try:
        runtime = get_runtime()
    except SettingsError as exc:
        return _config_error(exc)
    result = await runtime.intake.accept(req.get_body(), dict(req.headers), dict(req.params))
    return _json(result.status, {"status": result.message})


async def push_worker(msg: func.QueueMessage) -> None:
    """Apply one queued change to Spotler; transient failures retry, the last attempt dead-letters."""
    runtime = get_runtime()
    try:
        event = decode_event(msg.get_body().decode("utf-8"))
    except (EventDecodeError, UnicodeDecodeError):
        log.error("undecodable queue message dropped", extra={"message_id": msg.id})
        return
    if await hold_event_if_misconfigured(runtime, msg.get_body().decode("utf-8")):
        return  # configuration_error: queued again for after the next mapping check; nothing written
    try:
        await runtime.push.handle(event, owner=msg.id or event.idempotency_key)
    except RetryLater as exc:
        attempts = msg.dequeue_count or 1
        if attempts >= runtime.settings.max_delivery_attempts:
            await runtime.push.dead_letter(event, exc, attempts=attempts, now=runtime.clock())
            return
        raise


async def spotler_pull(timer: func.TimerRequest) -> None:
    """Every 15 minutes: Spotler changes since the watermark to Dynamics, then due dead letters."""
    runtime = get_runtime()
    if await pull_paused(runtime):
        return  # configuration_error: the watermark stays until the mapping fits again
    report = await runtime.pull.run()
    log.info(
        "pull run finished",
        extra={
            "completed": report.completed,
            "pages": report.pages,
            "contacts": report.contacts,
            "rows_updated": report.rows_updated,
            "replayed": report.replayed,
            "note": report.note,
        },
    )


async def record_status(req: func.HttpRequest) -> func.HttpResponse:
    """The Spotler status of one record: reason code, last outcome and attempt, externalId (no e-mail)."""
    entity = as_entity(req.route_params.get("entity", ""))
    record_id = req.route_params.get("id", "").strip("{}").lower()
    if entity is None:
        return _json(400, {"error": f"entity must be one of {', '.join(ENTITY_NAMES)}"})
    runtime = get_runtime()
    view = await record_status_view(runtime.state, entity, record_id)
    if view is None:
        return _json(404, {"entity": entity, "id": record_id, "status": "unknown"})
    return _json(200, view)


async def list_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Dead letters: events that kept failing, with their error, for operators."""
    runtime = get_runtime()
    letters = await runtime.state.list_dead_letters(limit=200)
    return _json(200, {"deadLetters": [dead_letter_view(d) for d in letters]})


async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Replay every dead letter now (after an outage); says how many were applied and how many remain."""
    runtime = get_runtime()
    if (paused := await _configuration_error(runtime)) is not None:
        return paused
    replayed, failed = await runtime.pull.replay_all()
    remaining = len(await runtime.state.list_dead_letters(limit=1000))
    return _json(200, {"replayed": replayed, "failed": failed, "remaining": remaining})


async def replay_dead_letter(req: func.HttpRequest) -> func.HttpResponse:
    """Replay one dead letter now."""
    entity = as_entity(req.route_params.get("entity", ""))
    event_id = req.route_params.get("event_id", "")
    if entity is None:
        return _json(400, {"error": f"entity must be one of {', '.join(ENTITY_NAMES)}"})
    runtime = get_runtime()
    if (paused := await _configuration_error(runtime)) is not None:
        return paused
    if await runtime.state.get_dead_letter(entity, event_id) is None:
        return _json(404, {"error": "no such dead letter"})
    applied = await runtime.pull.replay(entity, event_id)
    return _json(200 if applied else 409, {"replayed": applied})


async def health(req: func.HttpRequest) -> func.HttpResponse:
    """Configuration loaded and storage reachable."""
    try:
        runtime = get_runtime()
    except SettingsError:
        return _json(503, {"status": "unhealthy", "configuration": "invalid"})
    try:
        await runtime.state.get_watermark("health-probe")
    except Exception:
        return _json(503, {"status": "unhealthy", "configuration": "ok", "storage": "unreachable"})
    # The live mapping check (cached): a mapping that does not fit pauses push and pull.
    mapping = await mapping_health(runtime)
    if mapping.problems:
        return _json(503, {"status": "configuration_error", "storage": "ok", "mapping": mapping.as_dict()})
    return _json(200, {"status": "healthy", "configuration": describe(runtime.settings), "storage": "ok"})


# Registered without decorators so the handlers above stay plain, typed functions.
app.route(route="dynamics/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)(dynamics_webhook)
app.queue_trigger(arg_name="msg", queue_name="%SYNC_QUEUE_NAME%", connection=QUEUE_CONNECTION)(push_worker)
app.timer_trigger(schedule="0 */15 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)(spotler_pull)
app.route(route="status/{entity}/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(record_status)
app.route(route="deadletters", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(list_dead_letters)
app.route(route="deadletters/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(replay_dead_letters)
app.route(route="deadletters/{entity}/{event_id}/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(
    replay_dead_letter
)
app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)(health)
