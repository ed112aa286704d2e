"""The root command: settings loading, exit codes and the command groups.

Settings come from the process environment, overlaid on the `Values` of a Functions settings file
(`--settings`, by default `local.settings.json` in the working directory when it exists), so an operator can
run the same configuration the local Functions host uses. Exit codes scripts can trust: 0 done, 1 failed,
2 refused by a guard or bad usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from azure.core.exceptions import AzureError, ServiceRequestError
from rich.console import Console

from sync_core.settings import Settings, SettingsError, load_settings, settings_environ

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2

DEFAULT_SETTINGS_FILE = Path("local.settings.json")

app = typer.Typer(
    name="sync_core",
    help="Dynamics 365 ⇄ Spotler Mail+ contact sync: operator commands.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


@dataclass
class CliContext:
    """What every command gets: where its settings come from (loaded on first use)."""

    settings_file: Path | None
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_cli_settings(self.settings_file)
        return self._settings


def load_cli_settings(settings_file: Path | None) -> Settings:
    return load_settings(settings_environ(settings_file))


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print one line (no traceback) and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.callback()
def root(
    ctx: typer.Context,
    settings: Annotated[
        Path | None,
        typer.Option(
            "--settings",
            help="Functions settings file whose Values are used (the environment wins). "
            "Default: local.settings.json when it exists.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Dynamics 365 ⇄ Spotler Mail+ contact sync: operator commands."""
    chosen = settings if settings is not None else (DEFAULT_SETTINGS_FILE if DEFAULT_SETTINGS_FILE.is_file() else None)
    ctx.obj = CliContext(chosen)


def context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj


def run() -> None:
    """Run the root command (with every group registered by `sync_core.cli.main`)."""
    try:
        app()
    except SettingsError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except AzureError as exc:
        raise SystemExit(fail(service_error_message(exc)).exit_code) from None


def service_error_message(exc: AzureError) -> str:
    """One line for a storage or Azure SDK failure the command cannot go on after (no traceback, no secret)."""
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "not supported by Azurite" in first:
        return (
            "Azurite does not accept this storage SDK's API version: start it with --skipApiVersionCheck "
            "(npx azurite --silent --inMemoryPersistence --disableTelemetry --skipApiVersionCheck)"
        )
    if isinstance(exc, ServiceRequestError):
        return f"storage is not reachable ({type(exc).__name__}): is Azurite or the storage account up? {first}"
    return f"storage or Azure call failed ({type(exc).__name__}): {first}"
