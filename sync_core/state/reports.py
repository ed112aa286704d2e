"""Operator read models on Table Storage: run history, counts per reason code, records in a reason (paged).

| table  | PartitionKey                          | RowKey                                 |
|--------|---------------------------------------|----------------------------------------|
| runs   | run kind (`pull`, `bulk`, `reconciliation`) | inverted start time, then the run id (newest first) |

Counts and the records-in-a-reason list read the links table (`{prefix}links`), whose rows carry each record's
current reason code; they never read or return an e-mail address.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableServiceClient

from sync_core.domain.records import EntityName
from sync_core.domain.state_model import LinkState
from sync_core.state import codec
from sync_core.state.bounds import table_client_options

log = logging.getLogger("sync_core.reports")

RUN_KINDS = ("pull", "bulk", "reconciliation")
_MAX_TICKS = 10**19 - 1


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One pull, bulk or reconciliation run: when, how it ended and what it counted."""

    kind: str
    run_id: str
    started: datetime
    ended: datetime | None
    outcome: str  # completed / stopped / failed / skipped
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""


class CursorError(ValueError):
    """A paging cursor that this service did not hand out."""


def encode_cursor(token: dict[str, str] | None) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, str] | None:
    if not cursor:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise CursorError("cursor is not one this route handed out") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise CursorError("cursor is not one this route handed out")
    return data


def _inverted(at: datetime) -> str:
    ticks = int(at.astimezone(UTC).timestamp() * 1_000_000)
    return f"{_MAX_TICKS - ticks:019d}"


def run_to_entity(run: RunRecord) -> dict[str, Any]:
    return {
        "PartitionKey": run.kind,
        "RowKey": f"{_inverted(run.started)}-{codec.safe_key(run.run_id)}",
        "run_id": run.run_id,
        "started": run.started.astimezone(UTC),
        "ended": run.ended.astimezone(UTC) if run.ended else None,
        "outcome": run.outcome,
        "counts": json.dumps(run.counts, separators=(",", ":")),
        "note": run.note[:1000],
        "items": EntityProperty(sum(run.counts.values()), EdmType.INT64),
    }


def run_from_entity(entity: dict[str, Any]) -> RunRecord:
    counts = json.loads(entity.get("counts") or "{}")
    return RunRecord(
        kind=str(entity["PartitionKey"]),
        run_id=str(entity.get("run_id", "")),
        started=_dt(entity["started"]),
        ended=_dt(entity["ended"]) if entity.get("ended") else None,
        outcome=str(entity.get("outcome", "")),
        counts={str(k): int(v) for k, v in counts.items()},
        note=str(entity.get("note", "")),
    )


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value))


class TableReports:
    """Run history and the links table's read models, on the state store's storage account."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "sync") -> None:
        self._service = service
        self._runs = service.get_table_client(f"{prefix}runs")
        self._links = service.get_table_client(f"{prefix}links")
        self._ready = False

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "sync") -> TableReports:
        return cls(TableServiceClient.from_connection_string(conn, **table_client_options()), prefix=prefix)

    @classmethod
    def from_account(cls, account_name: str, credential: AsyncTokenCredential, *, prefix: str = "sync") -> TableReports:
        endpoint = f"https://{account_name}.table.core.windows.net"
        return cls(
            TableServiceClient(endpoint=endpoint, credential=credential, **table_client_options()), prefix=prefix
        )

    async def _ensure(self) -> None:
        if self._ready:
            return
        with contextlib.suppress(ResourceExistsError):
            await self._runs.create_table()
        self._ready = True

    async def aclose(self) -> None:
        await self._runs.close()
        await self._links.close()
        await self._service.close()

    # ------------------------------------------------------------------------------------------ runs

    async def record_run(self, run: RunRecord) -> None:
        await self._ensure()
        await self._runs.upsert_entity(run_to_entity(run), mode=UpdateMode.REPLACE)

    async def list_runs(self, *, kind: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The newest runs first (of one kind, or of every kind)."""
        await self._ensure()
        runs: list[RunRecord] = []
        for name in (kind,) if kind else RUN_KINDS:
            pages = self._runs.query_entities(
                "PartitionKey eq @kind", parameters={"kind": name}, results_per_page=limit
            )
            async for entity in pages:
                runs.append(run_from_entity(dict(entity)))
                if len(runs) >= limit * len(RUN_KINDS):
                    break
        runs.sort(key=lambda r: r.started, reverse=True)
        return runs[:limit]

    async def last_run(self, kind: str, *, outcome: str | None = None, scan: int = 200) -> RunRecord | None:
        """The newest run of `kind` (with `outcome`, when given), among the newest `scan` runs."""
        for run in await self.list_runs(kind=kind, limit=scan):
            if outcome is None or run.outcome == outcome:
                return run
        return None

    # ------------------------------------------------------------------------------------------ links

    async def reason_counts(self) -> dict[str, int]:
        """How many records hold each reason code now (a scan of the links table's `reason` column)."""
        counts: Counter[str] = Counter()
        try:
            async for entity in self._links.list_entities(select=["reason"]):
                counts[str(entity.get("reason") or "none")] += 1
        except Exception as exc:
            if getattr(exc, "status_code", None) == 404:
                return {}
            raise
        return dict(sorted(counts.items()))

    async def links_with_reason(
        self,
        reasons: Sequence[str],
        *,
        limit: int = 50,
        cursor: str | None = None,
        entity: EntityName | None = None,
    ) -> tuple[list[LinkState], str | None]:
        """One page of records whose current reason code is one of `reasons`, and the next page's cursor.

        A page can hold fewer than `limit` records (even none) while more follow: go on until the cursor is None.
        """
        token = decode_cursor(cursor)
        names = [f"r{i}" for i in range(len(reasons))]
        query = "( " + " or ".join(f"reason eq @{n}" for n in names) + " )"  # parameters need spaces around
        parameters: dict[str, Any] = dict(zip(names, reasons, strict=True))
        if entity is not None:
            query += " and PartitionKey eq @entity"
            parameters["entity"] = entity
        paged: Any = self._links.query_entities(query, parameters=parameters, results_per_page=limit)
        pages = paged.by_page(continuation_token=token)
        links: list[LinkState] = []
        next_token: dict[str, str] | None = None
        async for page in pages:
            async for row in page:
                links.append(codec.link_from_props(dict(row), None))
            next_token = pages.continuation_token
            break
        return links, encode_cursor(next_token)
