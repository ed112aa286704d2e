"""`mapping validate` and `mapping show`: the field mapping, checked and printed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sync_core.cli.app import EXIT_FAILED, app, context, fail
from sync_core.dataverse.metadata import DataverseMetadata
from sync_core.domain.mapping import MappingConfig, MappingError
from sync_core.domain.records import ENTITY_NAMES
from sync_core.services.clients import dataverse_client, spotler_client
from sync_core.services.mapping_check import (
    MappingCheckResult,
    check_mapping_live,
    configured_mapping,
    load_mapping_file,
)
from sync_core.settings import Settings

mapping_app = typer.Typer(help="The field mapping: check it against both systems, or print it.", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")
out = Console()

_ARROWS = {"to_spotler": "➡", "to_dynamics": "⬅", "both": "🔁"}

FileArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Mapping file (default: MAPPING_BLOB, MAPPING_FILE, else the shipped default).", dir_okay=False
    ),
]


def _load(settings: Settings | None, file: Path | None) -> MappingConfig:
    try:
        if file is None and settings is not None:
            return configured_mapping(settings)
        return load_mapping_file(file)
    except MappingError as exc:
        raise fail(str(exc)) from None


async def _live(settings: Settings, mapping: MappingConfig) -> MappingCheckResult:
    async with (
        spotler_client(settings) as spotler,
        dataverse_client(settings) as dataverse,
    ):
        return await check_mapping_live(mapping, spotler, DataverseMetadata(dataverse))


@mapping_app.command("validate")
def validate(
    ctx: typer.Context,
    file: FileArgument = None,
    offline: Annotated[bool, typer.Option("--offline", help="Only the schema check; ask neither system.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the mapping: the schema, then Spotler's property list and Dataverse's column definitions.

    Example: python -m sync_core mapping validate my_mapping.json
    """
    settings = None if offline and file is not None else context(ctx).settings()
    mapping = _load(settings, file)
    if offline or settings is None:
        result = MappingCheckResult(checked=False, error="offline: only the schema was checked")
    else:
        result = asyncio.run(_live(settings, mapping))
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
    else:
        for problem in result.problems:
            out.print(f"[red]✗[/] {problem.line()}", highlight=False, soft_wrap=True)
        if result.ok:
            out.print("[green]✓[/] the mapping fits Spotler and Dataverse")
        elif not result.problems:
            out.print(f"[yellow]![/] schema valid; {result.error}", highlight=False, soft_wrap=True)
    if result.problems or (not result.checked and not offline):
        raise typer.Exit(EXIT_FAILED)


@mapping_app.command("show")
def show(
    ctx: typer.Context,
    file: FileArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the effective mapping as JSON.")] = False,
) -> None:
    """Print the effective mapping: fields with directions, types and blank policies, and permissions.

    Example: python -m sync_core mapping show
    """
    settings = context(ctx).settings()
    mapping = _load(settings, file)
    default_blank = "clear" if settings.purge_existing_properties_when_not_set else "keep"
    if as_json:
        out.print_json(json.dumps(mapping.model_dump(mode="json", by_alias=True, exclude_none=True)))
        return
    for entity in ENTITY_NAMES:
        entity_mapping = mapping.for_entity(entity)
        if entity_mapping is None:
            out.print(f"{entity}: not synced")
            continue
        table = Table(title=f"{entity} (e-mail: {entity_mapping.email_attribute})")
        table.add_column("Dataverse")
        table.add_column("", min_width=2, no_wrap=True)
        table.add_column("Spotler")
        for column in ("Type", "Blank", "Create only"):
            table.add_column(column, no_wrap=True)
        for f in entity_mapping.fields:
            blank = f.blank or f"{default_blank} (default)"
            table.add_row(
                f.dataverse, _ARROWS[f.direction.value], f.spotler, f.type, blank, "yes" if f.create_only else ""
            )
        for p in entity_mapping.permissions:
            source = p.dataverse or "not donotbulkemail"
            table.add_row(source, _ARROWS[p.direction.value], f"permissions bit {p.bit}", "permission", "", "")
        out.print(table)
        for rule in entity_mapping.exclude:
            out.print(f"  excluded when {rule.attribute}: {rule.model_dump(exclude_none=True, exclude={'attribute'})}")
