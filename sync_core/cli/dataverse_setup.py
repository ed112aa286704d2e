"""`dataverse setup`: register the webhook, its steps and images, and create the status columns."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sync_core.cli.app import EXIT_FAILED, EXIT_REFUSED, app, context, fail
from sync_core.dataverse.metadata import DataverseMetadata
from sync_core.domain.errors import SyncError
from sync_core.domain.mapping import MappingError
from sync_core.services.clients import dataverse_client
from sync_core.services.dataverse_setup import SetupOptions, SetupReport, run_setup, steps_markdown
from sync_core.services.mapping_check import configured_mapping
from sync_core.settings import Settings

dataverse_app = typer.Typer(help="The Dynamics side: webhook registration and status columns.", no_args_is_help=True)
app.add_typer(dataverse_app, name="dataverse")
out = Console()

_DONE = {"create": "created", "update": "updated", "delete": "deleted"}
_ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "conflict": "bold red", "none": "dim"}


def _options(settings: Settings, url: str | None, prefix: str, next_secret: bool) -> SetupOptions:
    webhook_url = url or settings.webhook_public_url
    if not webhook_url:
        raise fail("no webhook URL: pass --url or set WEBHOOK_PUBLIC_URL (…/api/dynamics/webhook)", EXIT_REFUSED)
    if next_secret:
        if settings.webhook_secret_next is None or not settings.webhook_secret_next.get_secret_value():
            raise fail("--next-secret needs WEBHOOK_SECRET_NEXT", EXIT_REFUSED)
        secret = settings.webhook_secret_next.get_secret_value()
    else:
        secret = settings.webhook_secret.get_secret_value()
    return SetupOptions(
        webhook_url=webhook_url,
        secret=secret,
        auth_mode=settings.webhook_auth_mode,
        auth_name=settings.webhook_auth_name,
        prefix=prefix,
        write_key=next_secret,
    )


def _print(report: SetupReport) -> None:
    title = "Dataverse setup plan (dry run: nothing written)" if report.dry_run else "Dataverse setup"
    table = Table(title=title)
    for column in ("What", "Target", "Action", "Detail"):
        table.add_column(column)
    for item in report.items:
        style = _ACTION_STYLE[item.action]
        action = item.action if report.dry_run else _DONE.get(item.action, item.action)
        table.add_row(item.kind, item.target, f"[{style}]{action}[/]", item.detail)
    out.print(table)
    verb = "would change" if report.dry_run else "changed"
    out.print(f"{len(report.changes)} {verb}, {len(report.conflicts)} conflicts.")
    out.print(
        "\nApp settings to set afterwards (azd env set NAME VALUE, then azd provision; locally: local.settings.json):"
    )
    for name, value in report.app_settings.items():
        out.print(f"  {name}={value}", highlight=False)


@dataverse_app.command("setup")
def setup(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    url: Annotated[str | None, typer.Option(help="The connector's webhook URL (default: WEBHOOK_PUBLIC_URL).")] = None,
    prefix: Annotated[str, typer.Option(help="Publisher prefix of the status columns.")] = "sync",
    next_secret: Annotated[
        bool, typer.Option("--next-secret", help="Write WEBHOOK_SECRET_NEXT as the endpoint's key (rotation).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Create or update the webhook endpoint, its steps and images, and the status columns (idempotent).

    Example: python -m sync_core dataverse setup --dry-run --url https://my-app.azurewebsites.net/api/dynamics/webhook
    """
    settings = context(ctx).settings()
    options = _options(settings, url, prefix, next_secret)
    try:
        mapping = configured_mapping(settings)
    except MappingError as exc:
        raise fail(str(exc)) from None

    async def go() -> SetupReport:
        async with dataverse_client(settings) as client:
            return await run_setup(DataverseMetadata(client), mapping, options, dry_run=dry_run)

    try:
        report = asyncio.run(go())
    except ValueError as exc:
        raise fail(str(exc), EXIT_REFUSED) from None
    except SyncError as exc:
        raise fail(f"Dataverse: {exc}; check DATAVERSE_URL and the identity's security role") from None
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print(report)
    if report.conflicts:
        raise typer.Exit(EXIT_FAILED)


@dataverse_app.command("steps")
def steps(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Option(help="Publisher prefix of the status columns.")] = "sync",
) -> None:
    """Print, as Markdown, the steps, images and status columns `setup` registers for the configured mapping.

    Example: python -m sync_core dataverse steps > steps.md
    """
    settings = context(ctx).settings()
    try:
        mapping = configured_mapping(settings)
    except MappingError as exc:
        raise fail(str(exc)) from None
    typer.echo(steps_markdown(mapping, prefix), nl=False)
