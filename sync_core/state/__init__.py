"""State adapters: Azure Table Storage and an in-memory fake, plus the durable event queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sync_core.state.memory import InMemoryStateStore
from sync_core.state.queue import EventQueue, InMemoryEventQueue, ReceivedMessage
from sync_core.state.tables import TableStateStore

if TYPE_CHECKING:
    from sync_core.domain.ports import StateStore

    def _conforms(table: TableStateStore, memory: InMemoryStateStore) -> tuple[StateStore, StateStore]:
        """Checked by mypy only: both stores implement the StateStore Protocol."""
        return table, memory


__all__ = [
    "EventQueue",
    "InMemoryEventQueue",
    "InMemoryStateStore",
    "ReceivedMessage",
    "TableStateStore",
]
