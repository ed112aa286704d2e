"""Wiring of the bulk engine from the settings and the process's runtime (the live adapters it shares)."""

from __future__ import annotations

from azure.data.tables.aio import TableServiceClient

from sync_core.dataverse.client import DataverseClient
from sync_core.dataverse.credentials import make_credential
from sync_core.services.bulk import BulkEngine, BulkOptions
from sync_core.services.bulk_tables import BulkTables
from sync_core.services.runtime import Runtime, push_options, status_columns
from sync_core.state.queue import EventQueue

_engines: dict[int, BulkEngine] = {}


def build_bulk_engine(runtime: Runtime, *, advance_poll_seconds: int = 1) -> BulkEngine:
    """A bulk engine on the runtime's state store, Spotler and Dataverse clients, with its own queue and tables."""
    settings = runtime.settings
    conn = settings.resolved_storage_connection_string
    if conn is not None:
        tables = BulkTables.from_connection_string(conn, prefix=settings.table_prefix)
        queue = EventQueue.from_connection_string(conn, settings.bulk_queue_name)
    else:
        assert settings.storage_account_name is not None
        credential = make_credential("default", client_id=settings.storage_client_id)
        endpoint = f"https://{settings.storage_account_name}.table.core.windows.net"
        tables = BulkTables(TableServiceClient(endpoint=endpoint, credential=credential), prefix=settings.table_prefix)
        queue = EventQueue.from_account(settings.storage_account_name, credential, settings.bulk_queue_name)
    if not isinstance(runtime.dataverse, DataverseClient):
        raise TypeError("bulk runs need the Dataverse Web API client")
    return BulkEngine(
        tables=tables,
        queue=queue,
        state=runtime.state,
        spotler=runtime.spotler,
        dataverse=runtime.dataverse,
        mapping=runtime.mapping,
        options=push_options(settings),
        bulk=BulkOptions(
            page_size=settings.bulk_page_size,
            mass_change_limit=settings.mass_change_limit,
            mass_change_share=settings.mass_change_share,
            advance_poll_seconds=advance_poll_seconds,
        ),
        clock=runtime.clock,
        history=runtime.reports,
        status_columns=status_columns(settings),
        live=runtime.push,
    )


def get_bulk_engine(runtime: Runtime) -> BulkEngine:
    """The bulk engine of this runtime (built once)."""
    engine = _engines.get(id(runtime))
    if engine is None:
        engine = build_bulk_engine(runtime)
        _engines.clear()
        _engines[id(runtime)] = engine
    return engine


async def close_bulk_engines() -> None:
    """Close the bulk engines' own clients (their tables and queue; the runtime closes the rest)."""
    engines = list(_engines.values())
    _engines.clear()
    for engine in engines:
        await engine.tables.aclose()
        await engine.queue.aclose()
