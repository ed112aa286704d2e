"""What the operations routes of function_app.py call: each takes the runtime and the request's parameters.

Kept apart from the sync services so that the entry points stay thin and the sync itself does not know about
run history, telemetry or the page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import as_entity
from sync_core.services.config_gate import mapping_health
from sync_core.services.health import Check, HealthChecker, Verdict
from sync_core.services.overview import BadQuery, Overview, parse_limit, parse_reasons
from sync_core.services.pull import PullReport
from sync_core.services.runs import new_run_id, pull_run
from sync_core.services.runtime import Runtime
from sync_core.state.queue import EventQueue
from sync_core.state.reports import RUN_KINDS, CursorError
from sync_core.telemetry import current
from sync_core.ui.page import link, render_page

log = logging.getLogger("sync_core.operations")

NOTICES = {
    "replayed": "The dead letter was replayed and applied.",
    "failed": "The replay failed again; the dead letter stays with its new error.",
    "missing": "There is no such dead letter (it may have been replayed already).",
}


async def configuration_check(runtime: Runtime) -> Check:
    """The live mapping check (cached): a mapping that does not fit pauses push and pull (`configuration_error`)."""
    result = await mapping_health(runtime)
    data = {k: v for k, v in result.as_dict().items() if k != "status"}  # the check's own status says it
    if result.problems:
        detail = "configuration_error: the mapping does not fit Spotler or Dataverse; push and pull are paused"
        return Check("mapping", "unhealthy", detail, {"reason": ReasonCode.CONFIGURATION_ERROR.value, **data})
    if not result.checked:
        return Check("mapping", "degraded", f"the mapping could not be checked: {result.error}", data)
    return Check("mapping", "healthy", "the mapping fits Spotler and Dataverse", data)


async def guard_check(runtime: Runtime) -> Check:
    """The live mass-change guard: degraded while it pauses anonymize / unsubscribe decisions."""
    guard = runtime.guard
    if guard is None:
        return Check("massChangeGuard", "healthy", "no live guard configured")
    count = await guard.count()
    data = {"lastHour": count, "limit": guard.limit}
    if count >= guard.limit:
        detail = (
            f"{count} anonymize/unsubscribe decisions in the last hour (limit {guard.limit}): further ones are "
            f"paused ({ReasonCode.PAUSED_BY_GUARD.value}) until the hour slides on; check for a mass edit in Dynamics"
        )
        return Check("massChangeGuard", "degraded", detail, data)
    return Check("massChangeGuard", "healthy", f"{count} of {guard.limit} decisions in the last hour", data)


def _checker(runtime: Runtime) -> HealthChecker:
    runtime.health_extra.setdefault("mapping", lambda: configuration_check(runtime))
    runtime.health_extra.setdefault("massChangeGuard", lambda: guard_check(runtime))
    return runtime.health_checker()


def health_verdict(runtime: Runtime) -> Callable[[], Awaitable[Verdict]]:
    async def compute() -> Verdict:
        return (await _checker(runtime).run()).status

    return compute


async def health_details(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    report = await _checker(runtime).run()
    return (503 if report.status == "unhealthy" else 200), report.view()


def _overview(runtime: Runtime) -> Overview:
    assert runtime.reports is not None, "the runtime has no storage account for its read models"
    return Overview(runtime.state, runtime.reports, runtime.clock)


async def list_runs(runtime: Runtime, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    kind = params.get("kind") or None
    if kind is not None and kind not in RUN_KINDS:
        return 400, {"error": f"kind must be one of {', '.join(RUN_KINDS)}"}
    try:
        limit = parse_limit(params.get("limit"), default=20)
    except BadQuery as exc:
        return 400, {"error": str(exc)}
    return 200, {"runs": await _overview(runtime).runs(kind=kind, limit=limit)}


async def list_records(runtime: Runtime, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    entity_param = params.get("entity")
    entity = as_entity(entity_param) if entity_param else None
    if entity_param and entity is None:
        return 400, {"error": "entity must be one of contact, lead, account"}
    try:
        reasons = parse_reasons(params.get("reason"))
        limit = parse_limit(params.get("limit"))
        body = await _overview(runtime).records(reasons, limit=limit, cursor=params.get("cursor"), entity=entity)
    except (BadQuery, CursorError) as exc:
        return 400, {"error": str(exc)}
    return 200, body


async def sync_health_page(runtime: Runtime, params: Mapping[str, str]) -> tuple[int, str]:
    code = params.get("code")
    try:
        reasons = parse_reasons(params.get("reason"))
        limit = parse_limit(params.get("limit"), default=25)
        data = await _overview(runtime).page(reasons, limit=limit, cursor=params.get("cursor"))
    except (BadQuery, CursorError) as exc:
        return 400, f"<!doctype html><title>Bad request</title><p>{_plain(str(exc))}</p>"
    notice = NOTICES.get(params.get("notice", ""))
    return 200, render_page(data, code=code, reason=params.get("reason"), message=notice)


def _plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def replay_from_page(runtime: Runtime, entity_name: str, event_id: str, params: Mapping[str, str]) -> str:
    """Replay one dead letter; the page's address to go back to, with the outcome as a notice."""
    entity = as_entity(entity_name)
    outcome = "missing"
    letter = await runtime.state.get_dead_letter(entity, event_id) if entity is not None else None
    if entity is not None and letter is not None:
        record_id = letter.event.get("id")
        with current().span(
            "sync.replay", entity=entity, record_id=str(record_id) if record_id else None, action="replay"
        ) as span:
            applied = await runtime.pull.replay(entity, event_id)
            span.set_attribute("sync.replayed", applied)
        outcome = "replayed" if applied else "failed"
    return link("ui", params.get("code"), notice=outcome)


async def park_bulk_message(runtime: Runtime, body: bytes, error_class: str, message: str, attempts: int) -> None:
    """A bulk-queue message that cannot be handled (malformed, or moved to its poison queue): a visible dead letter.

    It holds the raw message; the run it belonged to is resumed with `python -m sync_core runs`, not by a replay.
    """
    assert runtime.worker is not None
    await runtime.worker.park_message(body, error_class, message, attempts=attempts)


async def process_poison(runtime: Runtime, body: bytes, *, dequeue_count: int | None) -> None:
    assert runtime.worker is not None
    await runtime.worker.deliver_poison(body, dequeue_count=dequeue_count)


async def record_pull_run(runtime: Runtime) -> PullReport:
    """Run the pull inside a `sync.pull` span, record it in the run history and publish the gauges."""
    telemetry = current()
    run_id = new_run_id()
    started = runtime.clock()
    report: PullReport | None = None
    error: BaseException | None = None
    try:
        with telemetry.span("sync.pull", action="pull") as span:
            report = await runtime.pull.run()
            span.set_attribute("sync.completed", report.completed)
            span.set_attribute("sync.contacts", report.contacts)
            span.set_attribute("sync.rows_updated", report.rows_updated)
            span.set_attribute("sync.replayed", report.replayed)
        for reason, count in report.reasons.items():
            telemetry.change(direction="pull", action="pull", reason=reason, count=count)
        return report
    except BaseException as exc:
        error = exc
        raise
    finally:
        await _after_pull(runtime, pull_run(report, run_id=run_id, started=started, ended=runtime.clock(), error=error))


async def _after_pull(runtime: Runtime, run: Any) -> None:
    """Best effort: the history entry and the gauges must not turn a good run into a failed one."""
    telemetry = current()
    try:
        if runtime.reports is not None:
            await runtime.reports.record_run(run)
        overview = _overview(runtime) if runtime.reports is not None else None
        if overview is not None:
            age = (await overview.watermark())["ageSeconds"]
            if age is not None:
                telemetry.watermark_age(float(age))
        telemetry.dead_letters_waiting(len(await runtime.state.list_dead_letters(limit=1000)))
        if isinstance(runtime.queue, EventQueue):
            oldest = await runtime.queue.oldest_age(runtime.clock())
            telemetry.backlog_age(oldest or 0.0)
    except Exception as exc:
        log.warning("run history or gauges not recorded", extra={"error.type": type(exc).__name__})
