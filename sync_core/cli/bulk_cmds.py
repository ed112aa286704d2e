"""Bulk commands: `backfill`, `resync contact ID`, `resync --filter …`, `reconcile`, `runs show ID`, `runs resume ID`.

Each starts the same run the HTTP routes start in Azure. Without `--no-wait` the command drives the bulk queue
itself (the same handlers the queue trigger calls, several work items at a time) until the run ends, with a
progress bar, then prints the summary. Exit codes: 0 done, 1 failed, 2 stopped by the mass-change guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sync_core.cli.app import EXIT_FAILED, EXIT_REFUSED, app, context, fail
from sync_core.domain.bulk_plan import Impact
from sync_core.domain.records import as_entity
from sync_core.services.bulk import LocalDriver, RunRequest, expected_items, impact_of, summary_of
from sync_core.services.bulk_runtime import build_bulk_engine
from sync_core.services.runtime import build_runtime
from sync_core.settings import Settings

out = Console()
log = logging.getLogger("sync_core.cli.bulk")

resync_app = typer.Typer(help="Bring records back in step with Spotler: one record, a $filter, or everything.")
runs_app = typer.Typer(help="Bulk runs: show one, or resume one that was stopped.")
app.add_typer(resync_app, name="resync")
app.add_typer(runs_app, name="runs")

DryRun = Annotated[bool, typer.Option("--dry-run", help="Write nothing; print what the run would do.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
AllowMass = Annotated[
    bool,
    typer.Option("--allow-mass-changes", help="Let the run anonymize or unsubscribe more than the guard allows."),
]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Start the run for the Functions host's workers and exit.")]


def _entities(engine: Any, entity: str | None) -> tuple[Any, ...]:
    if entity is None:
        return tuple(engine.mapped_entities())
    chosen = as_entity(entity)
    if chosen is None:
        raise fail(f"unknown table {entity!r}; use contact, lead or account", EXIT_REFUSED)
    try:
        return tuple(engine.mapped_entities(chosen))
    except ValueError as exc:
        raise fail(str(exc), EXIT_REFUSED) from None


async def _execute(settings: Settings, make: Any, *, as_json: bool, no_wait: bool, resume: str | None = None) -> int:
    runtime = build_runtime(settings)
    engine = build_bulk_engine(runtime, advance_poll_seconds=1)
    try:
        if resume is not None:
            doc = await engine.run_doc(resume)
            if doc is None:
                raise fail(f"no run {resume}", EXIT_REFUSED)
        else:
            request = make(engine)
            doc = await engine.start(request)
        if no_wait:
            _print(doc, as_json=as_json)
            return 0
        driver = LocalDriver(engine, concurrency=settings.bulk_concurrency)
        if as_json:
            doc = await driver.run_until_done(doc["id"])
        else:
            doc = await _with_progress(driver, doc["id"])
        _print(doc, as_json=as_json)
        if doc["phase"] == "stopped":
            return EXIT_REFUSED
        return 0 if doc["phase"] == "done" else EXIT_FAILED
    finally:
        await engine.tables.aclose()
        await engine.queue.aclose()
        await runtime.aclose()


async def _with_progress(driver: LocalDriver, run_id: str) -> dict[str, Any]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("work items"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("starting", total=None, rate="")

        def update(doc: dict[str, Any]) -> None:
            total = expected_items(doc)
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{driver.items_handled * 100 / elapsed:,.0f} records/s" if elapsed > 0 else ""
            progress.update(
                task,
                description=f"{doc['kind']} · {doc['phase']}",
                completed=driver.items_handled,
                total=max(total, driver.items_handled) or None,
                rate=rate,
            )

        return await driver.run_until_done(run_id, on_progress=update)


def _print(doc: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(summary_of(doc)))
        return
    out.print(f"run [bold]{doc['id']}[/] ({doc['kind']}{', dry run' if doc['dryRun'] else ''}): {doc['phase']}")
    verdict = doc.get("verdict")
    if verdict:
        style = "green" if verdict["allowed"] else "bold red"
        out.print(f"[{style}]mass-change guard:[/] {verdict['message']}", highlight=False)
    for phase, title in (("assess", "Impact (planned)"), ("apply", "Result (written)")):
        impact = impact_of(doc, phase)
        if impact is not None:
            out.print(_table(impact, title))
    applied = impact_of(doc, "apply")
    if applied is not None and doc["kind"] == "reconcile":
        out.print(f"repaired: {applied.writes} records brought back in step")


def _table(impact: Impact, title: str) -> Table:
    table = Table(title=f"{title}: {impact.records} records", title_justify="left")
    table.add_column("action")
    table.add_column("reason")
    table.add_column("records", justify="right")
    table.add_column("examples")
    for key, count in sorted(impact.outcomes.items()):
        action, reason = key.split("/", 1)
        table.add_row(action, reason, f"{count:,}", ", ".join(impact.examples.get(reason, [])))
    table.caption = f"anonymize/unsubscribe decisions: {impact.mass_changes}"
    return table


def _run(ctx: typer.Context, make: Any, *, as_json: bool, no_wait: bool, resume: str | None = None) -> None:
    settings = context(ctx).settings()
    code = asyncio.run(_execute(settings, make, as_json=as_json, no_wait=no_wait, resume=resume))
    if code:
        raise typer.Exit(code)


@app.command()
def backfill(
    ctx: typer.Context,
    entity: Annotated[str | None, typer.Option("--table", help="Only this table (contact, lead or account).")] = None,
    dry_run: DryRun = False,
    allow_mass_changes: AllowMass = False,
    as_json: AsJson = False,
    no_wait: NoWait = False,
) -> None:
    """Initial load: every record in scope (or one table) to Spotler, with a status per record."""
    _run(
        ctx,
        lambda engine: RunRequest(
            "backfill", _entities(engine, entity), dry_run=dry_run, allow_mass_changes=allow_mass_changes
        ),
        as_json=as_json,
        no_wait=no_wait,
    )


@resync_app.callback(invoke_without_command=True)
def resync(
    ctx: typer.Context,
    filter_expr: Annotated[
        str | None, typer.Option("--filter", help="OData $filter of the rows to resync (needs --table).")
    ] = None,
    entity: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    dry_run: DryRun = False,
    allow_mass_changes: AllowMass = False,
    as_json: AsJson = False,
    no_wait: NoWait = False,
) -> None:
    """Resync the rows of a $filter, or everything; `resync contact ID` resyncs one record."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"dry_run": dry_run, "json": as_json, "allow": allow_mass_changes, "no_wait": no_wait}
        return
    if filter_expr is not None and entity is None:
        raise fail("--filter needs --table (a $filter applies to one table)", EXIT_REFUSED)
    _run(
        ctx,
        lambda engine: RunRequest(
            "resync",
            _entities(engine, entity),
            filter_expr=filter_expr,
            dry_run=dry_run,
            allow_mass_changes=allow_mass_changes,
        ),
        as_json=as_json,
        no_wait=no_wait,
    )


def _resync_one(ctx: typer.Context, entity: str, record_id: str, dry_run: bool, as_json: bool) -> None:
    record = record_id.strip("{}").lower()
    _run(
        ctx,
        lambda engine: RunRequest("resync", _entities(engine, entity), record_id=record, dry_run=dry_run),
        as_json=as_json,
        no_wait=False,
    )


@resync_app.command("contact")
def resync_contact(ctx: typer.Context, record_id: str, dry_run: DryRun = False, as_json: AsJson = False) -> None:
    """Resync one contact."""
    _resync_one(ctx, "contact", record_id, dry_run, as_json)


@resync_app.command("lead")
def resync_lead(ctx: typer.Context, record_id: str, dry_run: DryRun = False, as_json: AsJson = False) -> None:
    """Resync one lead."""
    _resync_one(ctx, "lead", record_id, dry_run, as_json)


@resync_app.command("account")
def resync_account(ctx: typer.Context, record_id: str, dry_run: DryRun = False, as_json: AsJson = False) -> None:
    """Resync one account."""
    _resync_one(ctx, "account", record_id, dry_run, as_json)


@app.command()
def reconcile(
    ctx: typer.Context,
    dry_run: DryRun = False,
    allow_mass_changes: AllowMass = False,
    as_json: AsJson = False,
    no_wait: NoWait = False,
) -> None:
    """Repair what live changes missed: rows changed since the last sweep (Dataverse change tracking)."""
    _run(
        ctx,
        lambda engine: RunRequest(
            "reconcile", _entities(engine, None), dry_run=dry_run, allow_mass_changes=allow_mass_changes
        ),
        as_json=as_json,
        no_wait=no_wait,
    )


@runs_app.command("show")
def show_run(ctx: typer.Context, run_id: str, as_json: AsJson = False) -> None:
    """Show a run's phase, guard verdict and counts."""

    async def show() -> dict[str, Any] | None:
        runtime = build_runtime(context(ctx).settings())
        engine = build_bulk_engine(runtime)
        try:
            return await engine.run_doc(run_id)
        finally:
            await engine.tables.aclose()
            await engine.queue.aclose()
            await runtime.aclose()

    doc = asyncio.run(show())
    if doc is None:
        raise fail(f"no run {run_id}", EXIT_REFUSED)
    _print(doc, as_json=as_json)


@runs_app.command("resume")
def resume_run(ctx: typer.Context, run_id: str, as_json: AsJson = False) -> None:
    """Carry on with a run that was stopped (its finished work items are not sent again)."""
    _run(ctx, None, as_json=as_json, no_wait=False, resume=run_id)
