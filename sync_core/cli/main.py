"""The full command line: the root command with every command group attached (one line per group)."""

from __future__ import annotations

from sync_core.cli import (
    bulk_cmds,  # noqa: F401
    ops_cmds,  # noqa: F401
)
from sync_core.cli.app import app, run

# Command groups register themselves on `app` when imported; add one import per group module here.
from sync_core.cli.dataverse_setup import dataverse_app  # noqa: F401
from sync_core.cli.mapping_cmds import mapping_app  # noqa: F401

__all__ = ["app", "main"]


def main() -> None:
    run()
