"""The live push's mass-change guard: at most `limit` anonymize/unsubscribe decisions per sliding hour.

A bad bulk edit in Dynamics (a workflow that ticks Do Not Email on every contact) reaches the connector as a
burst of ordinary changes. The guard counts the decisions that destroy or narrow consent in Spotler —
anonymize and unsubscribe — in Table Storage, so every instance counts together. Once the last hour holds
`limit` of them, further ones are refused: the push records `paused_by_guard` (ReasonCode.PAUSED_BY_GUARD) and
writes nothing, until the hour slides on, or an operator raises MASS_CHANGE_LIMIT or carries the changes out
as a bulk run with `--allow-mass-changes`.

Each admitted decision is one row (partition = the hour, row = time + record + action); a redelivered event of
the same record and action within the hour is admitted again without counting twice. Workers that admit at
the same moment may each see the count just below the limit: the hour can end a few decisions (at most the
number of concurrent workers) above it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient, TableServiceClient

from sync_core.dataverse.credentials import make_credential
from sync_core.domain.records import EntityName
from sync_core.settings import Settings
from sync_core.state import codec

GuardedAction = Literal["anonymize", "unsubscribe"]
WINDOW = timedelta(hours=1)


class DecisionLog(Protocol):
    """Where admitted decisions are remembered."""

    async def record(self, at: datetime, key: str) -> None: ...

    async def admitted_since(self, since: datetime) -> dict[str, datetime]:
        """Every admitted decision at or after `since`: key -> time."""
        ...


class MassChangeGuard:
    """`await guard.admit(entity, record_id, action)`: may the live push anonymize / unsubscribe this record now?"""

    def __init__(self, log: DecisionLog, clock: Callable[[], datetime], *, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must not be negative")
        self._log = log
        self._clock = clock
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    async def aclose(self) -> None:
        closer = getattr(self._log, "aclose", None)
        if closer is not None:
            await closer()

    async def count(self) -> int:
        """Decisions admitted in the last hour."""
        return len(await self._log.admitted_since(self._clock() - WINDOW))

    async def admit(self, entity: EntityName, record_id: str, action: GuardedAction) -> bool:
        """True when the decision may be carried out (and is counted); False when the guard pauses it."""
        now = self._clock()
        key = f"{entity}|{record_id}|{action}"
        admitted = await self._log.admitted_since(now - WINDOW)
        if key in admitted:
            return True  # the same decision delivered again
        if len(admitted) >= self._limit:
            return False
        await self._log.record(now, key)
        return True


class InMemoryDecisionLog:
    """The decision log in memory (tests, one process)."""

    def __init__(self) -> None:
        self.rows: dict[str, datetime] = {}

    async def record(self, at: datetime, key: str) -> None:
        self.rows.setdefault(key, at)

    async def admitted_since(self, since: datetime) -> dict[str, datetime]:
        return {k: at for k, at in self.rows.items() if at >= since}


def _hour(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d%H")


class TableDecisionLog:
    """The decision log in Table Storage (`{prefix}guard`): partition = hour, row = time + decision."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "sync") -> None:
        self._service = service
        self._name = f"{prefix}guard"
        self._table: TableClient = service.get_table_client(self._name)
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            await self._service.create_table_if_not_exists(self._name)
            self._ready = True

    async def record(self, at: datetime, key: str) -> None:
        await self._ensure()
        row = {
            "PartitionKey": _hour(at),
            "RowKey": codec.safe_key(f"{at.astimezone(UTC).isoformat()}|{key}"),
            "key": key,
            "at": at.astimezone(UTC),
        }
        try:
            await self._table.create_entity(row)
        except ResourceExistsError:
            return

    async def admitted_since(self, since: datetime) -> dict[str, datetime]:
        await self._ensure()
        found: dict[str, datetime] = {}
        for hour in {_hour(since), _hour(since + WINDOW)}:
            async for row in self._table.query_entities("PartitionKey eq @pk", parameters={"pk": hour}):
                at = row["at"]
                if isinstance(at, datetime) and at >= since:
                    found.setdefault(str(row["key"]), at)
        return found

    async def aclose(self) -> None:
        await self._table.close()
        await self._service.close()


def live_guard(settings: Settings, clock: Callable[[], datetime]) -> MassChangeGuard:
    """The live push's sliding-hour guard, counted in Table Storage on the settings' storage account."""
    conn = settings.resolved_storage_connection_string
    if conn is not None:
        service = TableServiceClient.from_connection_string(conn)
    else:
        assert settings.storage_account_name is not None
        credential = make_credential("default", client_id=settings.storage_client_id)
        service = TableServiceClient(
            endpoint=f"https://{settings.storage_account_name}.table.core.windows.net", credential=credential
        )
    return MassChangeGuard(
        TableDecisionLog(service, prefix=settings.table_prefix), clock, limit=settings.mass_change_limit
    )
