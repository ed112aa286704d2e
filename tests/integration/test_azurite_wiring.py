"""Proves the storage emulator is real and wired: entities round-trip and ETags are enforced."""

from __future__ import annotations

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables.aio import TableServiceClient

from tests.fixtures.azurite import AzuriteInstance


async def test_entity_round_trips_and_stale_etag_raises_412(azurite: AzuriteInstance, storage_prefix: str) -> None:
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = await service.create_table(f"{storage_prefix}wiring")
        created = await table.create_entity({"PartitionKey": "contact", "RowKey": "r1", "n": 1})
        stored = await table.get_entity("contact", "r1")
        assert stored["n"] == 1
        assert stored.metadata["etag"] == created["etag"]

        await table.update_entity(
            {"PartitionKey": "contact", "RowKey": "r1", "n": 2},
            etag=stored.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )
        with pytest.raises(ResourceModifiedError) as caught:
            await table.update_entity(
                {"PartitionKey": "contact", "RowKey": "r1", "n": 3},
                etag=stored.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        assert caught.value.status_code == 412
        assert (await table.get_entity("contact", "r1"))["n"] == 2
