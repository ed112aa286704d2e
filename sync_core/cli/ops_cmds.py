"""Day-two commands: `status ENTITY ID` (one record's Spotler status) and `health` (every health check).

They read what the function key routes `GET /api/status/{entity}/{id}` and `GET /api/health/details` serve, through
the same services, so an operator without the Functions host (or before it is deployed) sees the same answers.
Exit codes: 0 found / healthy or degraded, 1 unhealthy, 2 bad usage or no such record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sync_core.cli.app import EXIT_FAILED, EXIT_REFUSED, app, context, fail
from sync_core.domain.records import as_entity
from sync_core.services.operations import health_details
from sync_core.services.runtime import Runtime, build_runtime
from sync_core.services.status import record_status_view
from sync_core.settings import Settings

out = Console()
T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON, as the route serves it.")]
_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}


async def _with_runtime(settings: Settings, read: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run one read against the real adapters and close them again."""
    runtime = build_runtime(settings)
    try:
        return await read(runtime)
    finally:
        await runtime.aclose()


@app.command("status")
def status(
    ctx: typer.Context,
    entity: Annotated[str, typer.Argument(help="contact, lead or account")],
    record_id: Annotated[str, typer.Argument(metavar="ID", help="The Dataverse row id")],
    as_json: AsJson = False,
) -> None:
    """A record's Spotler status: why it is or is not synced, its Spotler externalId and recent outcomes."""
    chosen = as_entity(entity)
    if chosen is None:
        raise fail(f"unknown table {entity!r}; use contact, lead or account", EXIT_REFUSED)
    record_id = record_id.strip().lower()
    view = asyncio.run(_with_runtime(context(ctx).settings(), lambda r: record_status_view(r.state, chosen, record_id)))
    if view is None:
        raise fail(f"no Spotler status for {chosen} {record_id}: the connector has not seen this record", EXIT_REFUSED)
    if as_json:
        out.print_json(json.dumps(view))
        return
    out.print(f"[bold]{chosen} {view['id']}[/]: {view['reason'] or 'no outcome yet'}", highlight=False)
    if view["detail"]:
        out.print(f"  {view['detail']}", highlight=False)
    out.print(f"  Spotler externalId: {view['spotlerExternalId'] or '-'}", highlight=False)
    if view["anonymized"]:
        out.print("  the Spotler contact is anonymized", highlight=False)
    if view["failures"]:
        out.print(f"  failed attempts: {view['failures']}, next retry {view['nextRetry'] or '-'}", highlight=False)
    if view["history"]:
        table = Table(title="recent outcomes (newest first)", title_justify="left")
        for column in ("at", "action", "reason", "detail"):
            table.add_column(column)
        for entry in sorted(view["history"], key=lambda h: h["at"] or "", reverse=True):
            table.add_row(entry["at"] or "", entry["action"], entry["reason"], entry["detail"])
        out.print(table)


@app.command("health")
def health(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Every health check (storage, queues, Spotler, Dataverse, the mapping, the watermark, dead letters)."""
    code, body = asyncio.run(_with_runtime(context(ctx).settings(), health_details))
    if as_json:
        out.print_json(json.dumps(body))
    else:
        verdict = body["status"]
        out.print(f"[{_STYLE[verdict]}]{verdict}[/]", highlight=False)
        table = Table()
        for column in ("check", "status", "detail"):
            table.add_column(column)
        for check in body["checks"]:
            table.add_row(check["name"], f"[{_STYLE[check['status']]}]{check['status']}[/]", check["detail"])
        out.print(table)
    if code >= 500:
        raise typer.Exit(EXIT_FAILED)
