"""Azure Functions entry points. Each handler parses its trigger, makes one sync_core call, maps the outcome."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import azure.functions as func

from sync_core.domain.records import ENTITY_NAMES, as_entity

if TYPE_CHECKING:
    from sync_core.services.bulk import RunRequest
    from sync_core.services.runtime import Runtime
    from sync_core.settings import SettingsError

# The connector (its adapters, the Azure SDKs, pydantic-settings) is imported by the first call, not when the
# host indexes the functions: a cold start pays for the handlers it runs, once.

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
    from sync_core.services.config_gate import mapping_health  # noqa: PLC0415

    mapping = await mapping_health(runtime)
    if not mapping.problems:
        return None
    return _json(503, {"error": "configuration_error: the mapping does not fit", "mapping": mapping.as_dict()})


async def dynamics_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Dataverse webhook: authenticate, parse, queue durably, answer 202 (or a clear 4xx)."""
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415
    from sync_core.settings import SettingsError  # noqa: PLC0415

    try:
        runtime = get_runtime()
    except SettingsError as exc:
        return _config_error(exc)
    result = await runtime.intake.accept(req.get_body(), dict(req.headers), dict(req.params))
    return _json(result.status, {"status": result.message})


async def push_worker(msg: func.QueueMessage) -> None:
    """Apply one queued change to Spotler; failures retry, and on the last delivery every failure dead-letters."""
    from sync_core.services.config_gate import hold_event_if_misconfigured  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    runtime = get_runtime()
    if await hold_event_if_misconfigured(runtime, msg.get_body().decode("utf-8", errors="replace")):
        return  # configuration_error: queued again for after the next mapping check; nothing written
    assert runtime.worker is not None
    await runtime.worker.deliver(msg.get_body(), message_id=msg.id, dequeue_count=msg.dequeue_count)


async def spotler_pull(timer: func.TimerRequest) -> None:
    """Every 15 minutes: Spotler changes since the watermark to Dynamics, then due dead letters."""
    from sync_core.services.config_gate import pull_paused  # noqa: PLC0415
    from sync_core.services.operations import record_pull_run  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    runtime = get_runtime()
    if await pull_paused(runtime):
        return  # configuration_error: the watermark stays until the mapping fits again
    report = await record_pull_run(runtime)
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
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415
    from sync_core.services.status import record_status_view  # noqa: PLC0415

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
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415
    from sync_core.services.status import dead_letter_view  # noqa: PLC0415

    runtime = get_runtime()
    letters = await runtime.state.list_dead_letters(limit=200)
    return _json(200, {"deadLetters": [dead_letter_view(d) for d in letters]})


async def replay_dead_letters(req: func.HttpRequest) -> func.HttpResponse:
    """Replay every dead letter now (after an outage); says how many were applied and how many remain."""
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    runtime = get_runtime()
    if (paused := await _configuration_error(runtime)) is not None:
        return paused
    replayed, failed = await runtime.pull.replay_all()
    remaining = len(await runtime.state.list_dead_letters(limit=1000))
    return _json(200, {"replayed": replayed, "failed": failed, "remaining": remaining})


async def replay_dead_letter(req: func.HttpRequest) -> func.HttpResponse:
    """Replay one dead letter now."""
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

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
    """Anonymous: only healthy / degraded / unhealthy (the deep checks, at most every 30 s); no configuration."""
    from sync_core.services.operations import health_verdict  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415
    from sync_core.settings import SettingsError  # noqa: PLC0415

    try:
        runtime = get_runtime()
    except SettingsError:
        return _json(503, {"status": "unhealthy"})
    verdict = await runtime.health_verdict.get(health_verdict(runtime))
    return _json(503 if verdict == "unhealthy" else 200, {"status": verdict})


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


# --- Operations: the poison-queue net, deep health, run history, records by status, the sync-health page.


async def poison_worker(msg: func.QueueMessage) -> None:
    """`<queue>-poison`: whatever lands there becomes a dead letter (retried while storage does not answer)."""
    from sync_core.services.operations import process_poison  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    await process_poison(get_runtime(), msg.get_body(), dequeue_count=msg.dequeue_count)


async def health_details_route(req: func.HttpRequest) -> func.HttpResponse:
    """Function key: every check with its verdict; 503 when unhealthy."""
    from sync_core.services.operations import health_details  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415
    from sync_core.settings import SettingsError  # noqa: PLC0415

    try:
        runtime = get_runtime()
    except SettingsError as exc:
        return _config_error(exc)
    status, body = await health_details(runtime)
    return _json(status, body)


async def runs_route(req: func.HttpRequest) -> func.HttpResponse:
    """Function key: the newest pull, bulk and reconciliation runs with their counts and outcome."""
    from sync_core.services.operations import list_runs  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    status, body = await list_runs(get_runtime(), dict(req.params))
    return _json(status, body)


async def records_route(req: func.HttpRequest) -> func.HttpResponse:
    """Function key: records whose Spotler status is `reason` (default: the error reasons), paged by `cursor`."""
    from sync_core.services.operations import list_records  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    status, body = await list_records(get_runtime(), dict(req.params))
    return _json(status, body)


async def ui_page(req: func.HttpRequest) -> func.HttpResponse:
    """Function key: the sync-health page (server-rendered HTML)."""
    from sync_core.services.operations import sync_health_page  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    status, html = await sync_health_page(get_runtime(), dict(req.params))
    return func.HttpResponse(html, status_code=status, mimetype="text/html", charset="utf-8")


async def ui_replay(req: func.HttpRequest) -> func.HttpResponse:
    """Function key: the page's replay button; redirects back to the page with the outcome."""
    from sync_core.services.operations import replay_from_page  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    location = await replay_from_page(
        get_runtime(), req.route_params.get("entity", ""), req.route_params.get("event_id", ""), dict(req.params)
    )
    return func.HttpResponse(status_code=303, headers={"Location": location})


app.queue_trigger(arg_name="msg", queue_name="%SYNC_QUEUE_NAME%-poison", connection=QUEUE_CONNECTION)(poison_worker)
app.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(health_details_route)
app.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(runs_route)
app.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(records_route)
app.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(ui_page)
app.route(route="ui/deadletters/{entity}/{event_id}/replay", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(
    ui_replay
)


# --- Bulk work: backfill, resync, reconcile (one engine; work items on the bulk queue) -------------------------


async def _bulk_request(req: func.HttpRequest, kind: str) -> RunRequest | func.HttpResponse:
    """The run an HTTP call asks for, or a 400 that says what is wrong (nothing is started then)."""
    from sync_core.services.bulk import RunRequest  # noqa: PLC0415
    from sync_core.services.bulk_runtime import get_bulk_engine  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    try:
        body = req.get_json() if req.get_body() else {}
    except ValueError:
        return _json(400, {"error": "body must be JSON"})
    if not isinstance(body, dict):
        return _json(400, {"error": "body must be a JSON object"})
    engine = get_bulk_engine(get_runtime())
    table = body.get("table")
    entity = as_entity(str(table)) if table is not None else None
    if table is not None and entity is None:
        return _json(400, {"error": f"table must be one of {', '.join(ENTITY_NAMES)}"})
    record_id = body.get("id")
    filter_expr = body.get("filter")
    if (record_id is not None or filter_expr is not None) and (kind != "resync" or entity is None):
        return _json(400, {"error": "id and filter apply to resync of one table"})
    try:
        entities = engine.mapped_entities(entity)
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    return RunRequest(
        kind,  # type: ignore[arg-type]
        entities,
        filter_expr=str(filter_expr) if filter_expr is not None else None,
        record_id=str(record_id).strip("{}").lower() if record_id is not None else None,
        dry_run=bool(body.get("dryRun", False)),
        allow_mass_changes=bool(body.get("allowMassChanges", False)),
    )


async def _start_bulk(req: func.HttpRequest, kind: str) -> func.HttpResponse:
    from sync_core.services.bulk_runtime import get_bulk_engine  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    request = await _bulk_request(req, kind)
    if isinstance(request, func.HttpResponse):
        return request
    doc = await get_bulk_engine(get_runtime()).start(request)
    return _json(202, {"run": doc["id"], "phase": doc["phase"], "status": f"/api/bulk/runs/{doc['id']}"})


async def bulk_backfill(req: func.HttpRequest) -> func.HttpResponse:
    """Start a backfill (body: optional table, dryRun, allowMassChanges); 202 with the run id."""
    return await _start_bulk(req, "backfill")


async def bulk_resync(req: func.HttpRequest) -> func.HttpResponse:
    """Start a resync: one record (table + id), a $filter (table + filter), or everything."""
    return await _start_bulk(req, "resync")


async def bulk_reconcile(req: func.HttpRequest) -> func.HttpResponse:
    """Start a reconciliation run now (Dataverse change tracking since the last sweep)."""
    return await _start_bulk(req, "reconcile")


async def bulk_run(req: func.HttpRequest) -> func.HttpResponse:
    """A bulk run's phase, the guard's verdict and its counts."""
    from sync_core.services.bulk import summary_of  # noqa: PLC0415
    from sync_core.services.bulk_runtime import get_bulk_engine  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    doc = await get_bulk_engine(get_runtime()).run_doc(req.route_params.get("run_id", ""))
    if doc is None:
        return _json(404, {"error": "no such run"})
    return _json(200, summary_of(doc))


async def bulk_worker(msg: func.QueueMessage) -> None:
    """One message of a bulk run (index page, scan page, work item, advance); raising lets the queue retry."""
    from sync_core.services.bulk_runtime import get_bulk_engine  # noqa: PLC0415
    from sync_core.services.operations import park_bulk_message  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    runtime = get_runtime()
    attempts = msg.dequeue_count or 1
    try:
        text = msg.get_body().decode("utf-8")
    except UnicodeDecodeError as exc:
        await park_bulk_message(runtime, msg.get_body(), "BulkMessageError", f"not UTF-8: {exc.reason}", attempts)
        return
    try:
        await get_bulk_engine(runtime).handle(text)
    except ValueError as exc:  # not a bulk message: parked where an operator sees it, never retried
        await park_bulk_message(runtime, msg.get_body(), "BulkMessageError", str(exc), attempts)


async def bulk_poison_worker(msg: func.QueueMessage) -> None:
    """`<bulk queue>-poison`: a bulk message that failed every delivery becomes a visible dead letter."""
    from sync_core.services.operations import park_bulk_message  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    reason = "moved to the poison queue by the Functions host after its last delivery failed"
    await park_bulk_message(get_runtime(), msg.get_body(), "BulkWorkFailed", reason, msg.dequeue_count or 1)


async def scheduled_reconcile(timer: func.TimerRequest) -> None:
    """RECONCILE_SCHEDULE (daily by default): repair changes whose webhook never arrived or never applied."""
    from sync_core.services.bulk import RunRequest  # noqa: PLC0415
    from sync_core.services.bulk_runtime import get_bulk_engine  # noqa: PLC0415
    from sync_core.services.runtime import get_runtime  # noqa: PLC0415

    engine = get_bulk_engine(get_runtime())
    doc = await engine.start(RunRequest("reconcile", engine.mapped_entities()))
    log.info("reconcile run started", extra={"run": doc["id"]})


app.route(route="bulk/backfill", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(bulk_backfill)
app.route(route="bulk/resync", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(bulk_resync)
app.route(route="bulk/reconcile", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)(bulk_reconcile)
app.route(route="bulk/runs/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)(bulk_run)
app.queue_trigger(arg_name="msg", queue_name="%BULK_QUEUE_NAME%", connection=QUEUE_CONNECTION)(bulk_worker)
app.queue_trigger(arg_name="msg", queue_name="%BULK_QUEUE_NAME%-poison", connection=QUEUE_CONNECTION)(
    bulk_poison_worker
)
app.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)(
    scheduled_reconcile
)
