"""Run history: every pull (and bulk and reconciliation) run recorded with start, end, counts and outcome.

The caller records the run (the timer handler for the pull), from the report the run returns, so the run
services themselves stay unaware of the history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from sync_core.services.pull import PullReport
from sync_core.state.reports import RunRecord

PULL_COUNTS = (
    "pages",
    "contacts",
    "rows_updated",
    "spotler_fixes",
    "conflicts",
    "failed_rows",
    "replayed",
    "replay_failures",
)


class RunHistory(Protocol):
    async def record_run(self, run: RunRecord) -> None: ...

    async def list_runs(self, *, kind: str | None = None, limit: int = 20) -> list[RunRecord]: ...

    async def last_run(self, kind: str, *, outcome: str | None = None, scan: int = 200) -> RunRecord | None: ...


def new_run_id() -> str:
    return uuid.uuid4().hex


def pull_outcome(report: PullReport | None, error: BaseException | None) -> str:
    if error is not None or report is None:
        return "failed"
    if not report.started:
        return "skipped"
    return "completed" if report.completed else "stopped"


def pull_run(
    report: PullReport | None,
    *,
    run_id: str,
    started: datetime,
    ended: datetime,
    error: BaseException | None = None,
) -> RunRecord:
    """The history entry of one pull run (a failed run has no report: its error class is the note)."""
    counts = {name: int(getattr(report, name)) for name in PULL_COUNTS} if report is not None else {}
    note = report.note if report is not None else ""
    if error is not None:
        note = f"{type(error).__name__}: run failed" + (f"; {note}" if note else "")
    return RunRecord(
        kind="pull",
        run_id=run_id,
        started=started,
        ended=ended,
        outcome=pull_outcome(report, error),
        counts=counts,
        note=note,
    )


def bulk_run(doc: dict[str, Any]) -> RunRecord:
    """The history entry of a finished bulk run (a reconcile run is kind `reconciliation`)."""
    impact = doc.get("apply") or doc.get("assess") or {}
    counts = {
        "records": int(impact.get("records", 0)),
        "massChanges": int(impact.get("massChanges", 0)),
        "spotlerWrites": int(impact.get("spotlerWrites", 0)),
    }
    verdict = doc.get("verdict") or {}
    note = "dry run" if doc.get("dryRun") else str(verdict.get("message", "")) if doc["phase"] == "stopped" else ""
    started, finished = doc.get("started"), doc.get("finished")
    return RunRecord(
        kind="reconciliation" if doc["kind"] == "reconcile" else "bulk",
        run_id=str(doc["id"]),
        started=datetime.fromisoformat(started) if started else datetime.fromisoformat(str(finished)),
        ended=datetime.fromisoformat(finished) if finished else None,
        outcome="completed" if doc["phase"] == "done" else str(doc["phase"]),
        counts=counts,
        note=f"{doc['kind']}: {note}" if note else str(doc["kind"]),
    )


def run_view(run: RunRecord) -> dict[str, Any]:
    return {
        "kind": run.kind,
        "runId": run.run_id,
        "started": run.started.isoformat(),
        "ended": run.ended.isoformat() if run.ended else None,
        "outcome": run.outcome,
        "counts": dict(run.counts),
        "note": run.note,
    }
