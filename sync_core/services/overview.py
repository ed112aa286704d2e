"""The operator's overview: counts per reason code, records in error, dead letters, runs and watermark age.

Served as JSON (`GET /api/status?reason=…`, `GET /api/runs`) and as the sync-health page (`GET /api/ui`).
Never an e-mail address: records are named by table and Dataverse id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sync_core.domain.ports import StateStore
from sync_core.domain.reasons import ReasonCode
from sync_core.domain.records import EntityName
from sync_core.domain.state_model import LinkState
from sync_core.services.pull import WATERMARK_NAME
from sync_core.services.runs import RunHistory, run_view
from sync_core.services.status import dead_letter_view
from sync_core.state.reports import RUN_KINDS, TableReports

ERROR_REASONS: tuple[str, ...] = tuple(code.value for code in ReasonCode if code.is_error)
MAX_PAGE = 200


class BadQuery(ValueError):
    """A query parameter the route cannot use (the message says which)."""


def parse_reasons(value: str | None) -> tuple[str, ...]:
    """`reason=a,b`: known reason codes only; empty means every error reason."""
    if not value:
        return ERROR_REASONS
    known = {code.value for code in ReasonCode}
    reasons = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [r for r in reasons if r not in known]
    if unknown or not reasons:
        raise BadQuery(f"reason must be one or more of {', '.join(sorted(known))}")
    return reasons


def parse_limit(value: str | None, default: int = 50) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def record_view(link: LinkState) -> dict[str, Any]:
    return {
        "entity": link.entity,
        "id": link.record_id,
        "reason": link.reason.value if link.reason else None,
        "detail": link.detail,
        "failures": link.failures,
        "lastAttempt": link.last_attempt.isoformat() if link.last_attempt else None,
        "nextRetry": link.next_retry.isoformat() if link.next_retry else None,
    }


@dataclass
class Overview:
    state: StateStore
    reports: TableReports
    clock: Callable[[], datetime]

    async def records(
        self,
        reasons: Sequence[str],
        *,
        limit: int = 50,
        cursor: str | None = None,
        entity: EntityName | None = None,
    ) -> dict[str, Any]:
        links, next_cursor = await self.reports.links_with_reason(reasons, limit=limit, cursor=cursor, entity=entity)
        return {"reasons": list(reasons), "records": [record_view(link) for link in links], "next": next_cursor}

    async def runs(self, *, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        history: RunHistory = self.reports
        return [run_view(run) for run in await history.list_runs(kind=kind, limit=limit)]

    async def watermark(self) -> dict[str, Any]:
        mark = await self.state.get_watermark(WATERMARK_NAME)
        value = mark.value if mark is not None else None
        age = (self.clock() - value).total_seconds() if value is not None else None
        return {
            "value": value.isoformat() if value else None,
            "ageSeconds": None if age is None else round(age),
            "runInProgress": bool(mark is not None and mark.run_started is not None),
            "resumes": bool(mark is not None and mark.in_progress and mark.run_started is None),
        }

    async def page(self, reasons: Sequence[str], *, limit: int, cursor: str | None) -> dict[str, Any]:
        """Everything the sync-health page shows."""
        letters = await self.state.list_dead_letters(limit=200)
        last_runs = {kind: await self.reports.last_run(kind, scan=20) for kind in RUN_KINDS}
        return {
            "counts": await self.reports.reason_counts(),
            "errors": await self.records(reasons, limit=limit, cursor=cursor),
            "deadLetters": [dead_letter_view(letter) for letter in letters],
            "lastRuns": {kind: run_view(run) if run else None for kind, run in last_runs.items()},
            "runs": await self.runs(limit=10),
            "watermark": await self.watermark(),
            "now": self.clock().isoformat(timespec="seconds"),
        }
